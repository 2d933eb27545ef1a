"""The Episode: the one record that evaluation, training, analysis and the viewer all read.

One episode is one task attempted by one protocol. It serialises to one JSON line:

    schema          "workbench.episode/1" (bump the number on an incompatible change)
    episode_id      unique within a run ("<task_id>#<seed>")
    task_id, question, gold
    protocol        name of the protocol that produced it
    final_answer    the extracted answer (None when the protocol could not produce one)
    correct         bool; reward: float (1.0 / 0.0 for evaluation; RL may shape it)
    format_failure  True when no answer could be parsed from what the model wrote
    messages        [{id, round, sender, receivers, role, content, completion_tokens, ...}]
    events          [{ts, type, ...}]: generation_started/finished, message, decision, episode_*
    graph           {nodes: [{id, role, label}], edges: [{source, target, round, message_id}]}:
                    who informed whom; "task" is the source node and "answer" the sink
    usage           {calls, prompt_tokens, completion_tokens, wall_s}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = "workbench.episode/1"
REQUIRED = (
    "schema",
    "episode_id",
    "task_id",
    "protocol",
    "question",
    "gold",
    "final_answer",
    "correct",
    "reward",
    "format_failure",
    "messages",
    "events",
    "graph",
    "usage",
)
MESSAGE_FIELDS = ("id", "round", "sender", "receivers", "role", "content", "completion_tokens")
USAGE_FIELDS = ("calls", "prompt_tokens", "completion_tokens", "wall_s")


class EpisodeFormatError(ValueError):
    """An episode line that does not follow the schema."""


@dataclass
class Message:
    id: int
    round: int
    sender: str  # graph node id of the author
    receivers: list[str]  # graph node ids it was sent to
    role: str  # the sender's role: "agent", "sampler", "aggregator", ...
    content: str
    completion_tokens: int = 0
    prompt_tokens: int = 0
    extracted: str | None = None  # the answer parsed from content, when the protocol parses one
    finish_reason: str | None = None


@dataclass
class Usage:
    calls: int = 0  # generations (one per sample: a vote of 5 costs 5)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0  # episode start to end, as run (under batching, shared with other episodes)

    def add(self, other: Usage) -> None:
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.wall_s += other.wall_s


@dataclass
class Episode:
    episode_id: str
    task_id: str
    protocol: str
    question: str
    gold: str
    final_answer: str | None = None
    correct: bool = False
    reward: float = 0.0
    format_failure: bool = False
    messages: list[Message] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    graph: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"nodes": [], "edges": []})
    usage: Usage = field(default_factory=Usage)
    index: int = 0  # the item's position in the run's task list
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)  # protocol-specific facts (vote counts, ...)
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Episode:
        validate(d)
        d = dict(d)
        d["messages"] = [Message(**m) for m in d["messages"]]
        d["usage"] = Usage(**d["usage"])
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})


def validate(d: Any) -> None:
    """Raise EpisodeFormatError naming the first field that breaks the schema."""
    if not isinstance(d, dict):
        raise EpisodeFormatError(f"an episode is a JSON object, got {type(d).__name__}")
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise EpisodeFormatError(f"episode missing field(s): {', '.join(missing)}")
    if not str(d["schema"]).startswith("workbench.episode/"):
        raise EpisodeFormatError(f"unknown schema {d['schema']!r}")
    if d["schema"] != SCHEMA:
        raise EpisodeFormatError(f"schema {d['schema']!r} is not {SCHEMA!r}; this workbench cannot read it")
    if not isinstance(d["correct"], bool) or not isinstance(d["format_failure"], bool):
        raise EpisodeFormatError("'correct' and 'format_failure' must be booleans")
    if not isinstance(d["reward"], int | float):
        raise EpisodeFormatError("'reward' must be a number")
    for m in d["messages"]:
        if not isinstance(m, dict) or any(k not in m for k in MESSAGE_FIELDS):
            raise EpisodeFormatError(f"a message lacks one of {', '.join(MESSAGE_FIELDS)}")
    for e in d["events"]:
        if not isinstance(e, dict) or "ts" not in e or "type" not in e:
            raise EpisodeFormatError("every event needs 'ts' and 'type'")
    g = d["graph"]
    if (
        not isinstance(g, dict)
        or not isinstance(g.get("nodes"), list)
        or not isinstance(g.get("edges"), list)
    ):
        raise EpisodeFormatError("'graph' needs 'nodes' and 'edges' lists")
    if not isinstance(d["usage"], dict) or any(k not in d["usage"] for k in USAGE_FIELDS):
        raise EpisodeFormatError(f"'usage' needs {', '.join(USAGE_FIELDS)}")
