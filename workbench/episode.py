"""The Episode: the one record that evaluation, training, analysis and the viewer all read.

One episode is one task attempted by one protocol. It serialises to one JSON line:

    schema          "workbench.episode/2" (bump the number on an incompatible change; /1 is
                    still read: see SCHEMA_1 below)
    episode_id      unique within a run ("<task_id>#<seed>")
    task_id, question, gold
    protocol        name of the protocol that produced it
    final_answer    the extracted answer (None when the protocol could not produce one)
    correct         bool; reward: float (1.0 / 0.0 for evaluation; RL may shape it)
    format_failure  True when no answer could be parsed from what the model wrote
    messages        [{id, round, sender, receivers, role, content, completion_tokens, ...,
                      extracted, correct}]: ``correct`` is the task verifier's verdict on
                      ``extracted`` (None when the message carries no answer)
    events          [{ts, type, ...}]: generation_started/finished, message, decision, episode_*
    graph           {nodes: [{id, role, label}], edges: [{source, target, round, message_id}]}:
                    who informed whom; "task" is the source node and "answer" the sink
    usage           {calls, prompt_tokens, completion_tokens, wall_s}
    pools           [{round, candidates, agents, synthesis, rule, answer, correct, meta}]: each
                    round's pool as the protocol recorded it (``EpisodeContext.record_pool``):
                    the candidates' message ids and agent positions, the synthesising message's
                    id (or None), how the synthesis was made ("model", "majority", or None: no
                    synthesis), its answer and verdict, protocol facts (maestro's pick)

Schema 1 (before 2026-12-07) has no ``pools`` and no per-message ``correct``; it is still read
(``validate`` accepts it, ``Episode.from_dict`` keeps its schema string), and the analyses and the
viewer decode its rounds from node names as before (workbench/analysis/pools.py, ``legacy_rounds``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = "workbench.episode/2"
SCHEMA_1 = "workbench.episode/1"  # no pools, no message verdicts: still read
READABLE = (SCHEMA_1, SCHEMA)
POOL_RULES = ("model", "majority", None)  # how a pool's synthesis was made (None: no synthesis)
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
    correct: bool | None = None  # the task verifier's verdict on ``extracted`` (None: no answer)


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
    pools: list[dict[str, Any]] = field(default_factory=list)  # each round's pool (schema 2)
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Episode:
        validate(d)
        d = dict(d)
        d["messages"] = [Message(**_known(Message, m)) for m in d["messages"]]
        d["usage"] = Usage(**_known(Usage, d["usage"]))
        return cls(**_known(cls, d))


def _known(cls, d: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``d`` that are fields of ``cls`` (a newer writer may add fields)."""
    return {k: v for k, v in d.items() if k in cls.__dataclass_fields__}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _is_opt_str(x: Any) -> bool:
    return x is None or isinstance(x, str)


def validate(d: Any) -> None:
    """Raise EpisodeFormatError naming the first field that breaks the schema.

    Types are checked all the way down (what a reader then indexes, sums or prints is what the
    schema says), so a line that passes never raises in summarize, the viewer or the analyses."""
    if not isinstance(d, dict):
        raise EpisodeFormatError(f"an episode is a JSON object, got {type(d).__name__}")
    _check_depth(d)
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise EpisodeFormatError(f"episode missing field(s): {', '.join(missing)}")
    if not isinstance(d["schema"], str) or not d["schema"].startswith("workbench.episode/"):
        raise EpisodeFormatError(f"unknown schema {str(d['schema'])[:80]!r}")
    if d["schema"] not in READABLE:
        raise EpisodeFormatError(
            f"schema {d['schema'][:80]!r}: this workbench cannot read it (it reads "
            f"{', '.join(READABLE)}); update workbench"
        )
    for key in ("episode_id", "task_id", "protocol", "question"):
        if not isinstance(d[key], str):
            raise EpisodeFormatError(f"'{key}' must be a string, got {type(d[key]).__name__}")
    if not (_is_opt_str(d["gold"]) or _is_number(d["gold"])):
        raise EpisodeFormatError(f"'gold' must be a string, got {type(d['gold']).__name__}")
    if not _is_opt_str(d["final_answer"]):
        raise EpisodeFormatError(
            f"'final_answer' must be a string or null, got {type(d['final_answer']).__name__}"
        )
    if not isinstance(d["correct"], bool) or not isinstance(d["format_failure"], bool):
        raise EpisodeFormatError("'correct' and 'format_failure' must be booleans")
    if not _is_number(d["reward"]):
        raise EpisodeFormatError("'reward' must be a number")
    for key in ("index", "seed"):
        if key in d and not _is_int(d[key]):
            raise EpisodeFormatError(f"'{key}' must be an integer, got {type(d[key]).__name__}")
    if "meta" in d and not isinstance(d["meta"], dict):
        raise EpisodeFormatError(f"'meta' must be an object, got {type(d['meta']).__name__}")
    _validate_messages(d["messages"])
    if not isinstance(d["events"], list):
        raise EpisodeFormatError("'events' must be a list")
    for e in d["events"]:
        if not isinstance(e, dict) or "ts" not in e or "type" not in e:
            raise EpisodeFormatError("every event needs 'ts' and 'type'")
        if not _is_number(e["ts"]) or not isinstance(e["type"], str):
            raise EpisodeFormatError("an event's 'ts' must be a number and its 'type' a string")
    _validate_graph(d["graph"])
    if d["schema"] != SCHEMA_1:
        _validate_pools(d.get("pools"), {m["id"] for m in d["messages"]})
    u = d["usage"]
    if not isinstance(u, dict) or any(k not in u for k in USAGE_FIELDS):
        raise EpisodeFormatError(f"'usage' needs {', '.join(USAGE_FIELDS)}")
    for k in USAGE_FIELDS:
        if not _is_number(u[k]):
            raise EpisodeFormatError(f"'usage.{k}' must be a number, got {type(u[k]).__name__}")


MAX_DEPTH = (
    64  # nesting an episode may have (real ones stay under 10); deeper would overflow recursive readers
)


def _check_depth(d: Any) -> None:
    """Iteratively (no recursion) refuse nesting deeper than MAX_DEPTH: the dataclass, YAML and
    viewer code that walks an episode recursively must never meet a RecursionError."""
    stack = [(d, 1)]
    while stack:
        x, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise EpisodeFormatError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(x, dict):
            stack.extend((v, depth + 1) for v in x.values())
        elif isinstance(x, list):
            stack.extend((v, depth + 1) for v in x)


def _validate_messages(messages: Any) -> None:
    if not isinstance(messages, list):
        raise EpisodeFormatError("'messages' must be a list")
    for m in messages:
        if not isinstance(m, dict) or any(k not in m for k in MESSAGE_FIELDS):
            raise EpisodeFormatError(f"a message lacks one of {', '.join(MESSAGE_FIELDS)}")
        for k in ("id", "round", "completion_tokens"):
            if not _is_int(m[k]):
                raise EpisodeFormatError(f"a message's '{k}' must be an integer, got {type(m[k]).__name__}")
        if "prompt_tokens" in m and not _is_int(m["prompt_tokens"]):
            raise EpisodeFormatError("a message's 'prompt_tokens' must be an integer")
        for k in ("sender", "role", "content"):
            if not isinstance(m[k], str):
                raise EpisodeFormatError(f"a message's '{k}' must be a string, got {type(m[k]).__name__}")
        if not isinstance(m["receivers"], list) or not all(isinstance(r, str) for r in m["receivers"]):
            raise EpisodeFormatError("a message's 'receivers' must be a list of strings")
        for k in ("extracted", "finish_reason"):
            if not _is_opt_str(m.get(k)):
                raise EpisodeFormatError(f"a message's '{k}' must be a string or null")
        if m.get("correct") is not None and not isinstance(m["correct"], bool):
            raise EpisodeFormatError("a message's 'correct' must be true, false or null")


def _validate_pools(pools: Any, message_ids: set[int]) -> None:
    """Schema 2's ``pools``: every id names a message of the episode, types as documented."""
    if not isinstance(pools, list):
        raise EpisodeFormatError("'pools' must be a list (schema 2 records each round's pool)")
    for p in pools:
        if not isinstance(p, dict) or not _is_int(p.get("round")):
            raise EpisodeFormatError("every pool must be an object with an integer 'round'")
        cands, agents = p.get("candidates"), p.get("agents")
        if not isinstance(cands, list) or not all(_is_int(c) and c in message_ids for c in cands):
            raise EpisodeFormatError("a pool's 'candidates' must be the ids of the episode's messages")
        if (
            not isinstance(agents, list)
            or len(agents) != len(cands)
            or not all(isinstance(a, str) for a in agents)
        ):
            raise EpisodeFormatError("a pool's 'agents' must be one string per candidate")
        syn = p.get("synthesis")
        if syn is not None and not (_is_int(syn) and syn in message_ids):
            raise EpisodeFormatError("a pool's 'synthesis' must be a message id or null")
        if p.get("rule") not in POOL_RULES:
            raise EpisodeFormatError(f"a pool's 'rule' must be one of {POOL_RULES}")
        if not _is_opt_str(p.get("answer")):
            raise EpisodeFormatError("a pool's 'answer' must be a string or null")
        if p.get("correct") is not None and not isinstance(p["correct"], bool):
            raise EpisodeFormatError("a pool's 'correct' must be true, false or null")
        if "meta" in p and not isinstance(p["meta"], dict):
            raise EpisodeFormatError("a pool's 'meta' must be an object")


def _validate_graph(g: Any) -> None:
    if (
        not isinstance(g, dict)
        or not isinstance(g.get("nodes"), list)
        or not isinstance(g.get("edges"), list)
    ):
        raise EpisodeFormatError("'graph' needs 'nodes' and 'edges' lists")
    for n in g["nodes"]:
        if not isinstance(n, dict) or not isinstance(n.get("id"), str):
            raise EpisodeFormatError("every graph node must be an object with a string 'id'")
        if not (_is_opt_str(n.get("role")) and _is_opt_str(n.get("label"))):
            raise EpisodeFormatError("a graph node's 'role' and 'label' must be strings")
    for e in g["edges"]:
        if (
            not isinstance(e, dict)
            or not isinstance(e.get("source"), str)
            or not isinstance(e.get("target"), str)
        ):
            raise EpisodeFormatError("every graph edge must be an object with string 'source' and 'target'")
        if "round" in e and not _is_int(e["round"]):
            raise EpisodeFormatError("a graph edge's 'round' must be an integer")
        if e.get("message_id") is not None and not _is_int(e["message_id"]):
            raise EpisodeFormatError("a graph edge's 'message_id' must be an integer or null")
