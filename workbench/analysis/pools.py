"""Every episode as rounds of a *pool* (what the agents proposed) and a *synthesis* (what was made of it).

All analyses read episodes through this one view:

    protocol   pool of round r                       synthesis of round r
    single     the agent's answer                    (none: the answer is the pool)
    vote       the n samples                         majority rule
    debate     the N debaters of round r             majority rule over round r
    moa        the proposers of layer l              the aggregator (last layer only)
    maestro    the N·K explorer samples of round r   the central agent's pick (or Central-Gen's answer)
    leader     the K peers of round t                the leader's answer of round t

**Schema 2** (workbench/episode.py): the protocol recorded each round's pool (``episode["pools"]``:
candidate message ids, agent positions, the synthesising message and rule, its answer and verdict)
and every message carries the task verifier's verdict (``message["correct"]``): ``rounds`` reads
them as they are, no node name is decoded and nothing is re-judged.

**Schema 1** (older runs): ``legacy_rounds`` decodes the rounds from roles and node names as before;
correctness comes from the protocol's own record where it has one (maestro's ``slate``, the
leader's ``round_summary``) and otherwise from a ``Judge``: the run's task verifier, reloaded from
the run's config (or, when the tasks cannot be reloaded, a verifier built from the episode's gold
answer).

A candidate's *agent* is its position without the round (``explorer-1``, ``peer-0``, ``sample-3``):
the unit of per-agent credit.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.episode import SCHEMA_1
from workbench.tasks.base import Task, data_dir

SYNTH_PROTOCOLS = ("vote", "debate", "moa", "maestro", "maestro_gen", "leader")
_NODE = re.compile(r"^(?P<agent>[a-z]+-\d+)(?:\.(?P<sample>\d+))?(?:@(?P<round>\d+))?$")

# task family -> verifier kind, for runs whose tasks cannot be reloaded (data missing)
FAMILY_VERIFIER = {
    "arithmetic": "numeric",
    "gsm8k": "numeric",
    "svamp": "numeric",
    "mawps": "numeric",
    "math500": "math",
    "amc23": "math",
    "aime24": "math",
    "mmlu": "choice",
    "gpqa": "choice",
}


class Judge:
    """Is an extracted answer to item ``task_id`` correct? The run's own verifier, answers cached.

    ``tasks`` maps task ids to the run's Task objects (from ``Judge.for_run``); an item that is
    not there is judged by its episode's gold answer with ``verifier`` (string equality for
    "exact", as the exact verifier does after normalisation; None for code: unknown).
    """

    def __init__(self, tasks: dict[str, Task] | None = None, verifier: str = "numeric"):
        self.tasks = tasks or {}
        self.verifier = verifier
        self._cache: dict[tuple[str, str], bool | None] = {}

    @classmethod
    def for_run(cls, run_dir: str | Path) -> Judge:
        """The judge of a run folder: its tasks reloaded from config.yaml where possible."""
        from workbench.config import ConfigError
        from workbench.tasks import TaskConfig, TaskError, load_tasks

        cfg_path = Path(run_dir) / "config.yaml"
        from workbench.runs import read_config

        cfg = read_config(cfg_path)
        if cfg is None:
            return cls()
        task = cfg.get("task") if isinstance(cfg.get("task"), dict) else {}
        family = str(task.get("name", "arithmetic")).split(":")[0]
        verifier = FAMILY_VERIFIER.get(family, "exact")
        if family in ("humaneval", "livecodebench", "jsonl"):
            return cls(verifier=verifier)  # code runs are not re-executed; jsonl paths may be gone
        if family != "arithmetic" and data_dir(family) is None:
            return cls(verifier=verifier)  # no local copy: never reach for the hub from an analysis
        try:
            tc = TaskConfig(
                name=task["name"],
                split=task.get("split", "test"),
                limit=int(task.get("limit", 8)),
                seed=int(task.get("seed", 0)),
                options=task.get("options") or {},
            )
            tasks = load_tasks(tc).tasks
        except (ConfigError, TaskError, KeyError, OSError, ValueError):
            return cls(verifier=verifier)
        return cls({t.id: t for t in tasks}, verifier)

    def task(self, episode: dict[str, Any]) -> Task:
        """The episode's Task (reloaded, or rebuilt from its question and gold answer)."""
        t = self.tasks.get(episode["task_id"])
        if t is not None:
            return t
        kind = "exact" if self.verifier == "choice" else self.verifier
        return Task(episode["task_id"], episode["question"], str(episode["gold"]), kind)

    def correct(self, episode: dict[str, Any], answer: str | None) -> bool | None:
        """The verdict on ``answer``: the one the episode recorded for it (its final answer; in
        schema 2 any message's or pool's answer), else the run's verifier (cached)."""
        if answer is None:
            return False
        if answer == episode.get("final_answer"):
            return bool(episode["correct"])
        recorded = recorded_answer_verdicts(episode).get(answer)
        if recorded is not None:
            return recorded
        key = (episode["task_id"], answer)
        if key not in self._cache:
            task = self.task(episode)
            if task.verifier == "code":
                self._cache[key] = None
            elif task.verifier == "exact" and task.id not in self.tasks:
                self._cache[key] = answer.strip().casefold() == str(episode["gold"]).strip().casefold()
            else:
                self._cache[key] = bool(task.is_correct(answer))
        return self._cache[key]


@dataclass
class Candidate:
    agent: str  # position without round: explorer-1, peer-0, sample-3, agent-2, proposer-0
    node: str  # the graph node (explorer-1@2)
    text: str
    answer: str | None
    correct: bool | None


@dataclass
class Round:
    index: int  # the protocol's own round number
    candidates: list[Candidate]
    synth_answer: str | None = None  # what the synthesiser made of this pool (None: no synthesis)
    synth_correct: bool | None = None
    synth_node: str | None = None  # the synthesising message's node (central@2, leader@1) if a model
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. maestro's pick and parse

    @property
    def coverage(self) -> bool:
        return any(c.correct for c in self.candidates)

    @property
    def majority(self) -> str | None:
        from workbench.protocols.vote import majority

        return majority([c.answer for c in self.candidates])[0]


def agent_of(node: str) -> str:
    """explorer-1.0@2 -> explorer-1; peer-0@1 -> peer-0; sample-3 -> sample-3; agent -> agent."""
    hit = _NODE.match(node)
    return hit.group("agent") if hit else node.split("@")[0]


def _candidates(
    msgs: list[dict], episode: dict, judge: Judge, correct: list | None = None
) -> list[Candidate]:
    out = []
    for i, m in enumerate(msgs):
        ok = (
            correct[i] if correct is not None and i < len(correct) else judge.correct(episode, m["extracted"])
        )
        out.append(Candidate(agent_of(m["sender"]), m["sender"], m["content"], m["extracted"], ok))
    return out


def _events(episode: dict, type_: str) -> list[dict]:
    return [e for e in episode["events"] if e.get("type") == type_]


def is_legacy(episode: dict[str, Any]) -> bool:
    """Schema 1: no recorded pools or message verdicts (decoded from node names instead)."""
    return episode.get("schema") == SCHEMA_1


def recorded_answer_verdicts(episode: dict[str, Any]) -> dict[str, bool]:
    """Answer -> the verdict the episode recorded for it (schema 2: messages and pools; {} for schema 1)."""
    if is_legacy(episode):
        return {}
    out: dict[str, bool] = {}
    for m in episode.get("messages") or []:
        if isinstance(m.get("extracted"), str) and isinstance(m.get("correct"), bool):
            out.setdefault(m["extracted"], m["correct"])
    for p in episode.get("pools") or []:
        if isinstance(p, dict) and isinstance(p.get("answer"), str) and isinstance(p.get("correct"), bool):
            out.setdefault(p["answer"], p["correct"])
    return out


def message_verdicts(episode: dict[str, Any]) -> dict[Any, bool]:
    """Message id -> the task verifier's verdict recorded for it. Schema 2: every message that
    carries an answer. Schema 1: only what the protocol recorded (maestro's slates, the leader's
    round summaries: the candidates' verdicts by the task verifier); other messages have none."""
    msgs = episode.get("messages") or []
    if not is_legacy(episode):
        return {m.get("id"): m["correct"] for m in msgs if isinstance(m.get("correct"), bool)}
    out: dict[Any, bool] = {}
    try:  # a hostile schema-1 record (the viewer reads any file): no verdict rather than a crash
        judged = [r for r in legacy_rounds(episode, _NO_JUDGE) if r.candidates]
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return out
    by_node = {m.get("sender"): m.get("id") for m in msgs}
    for r in judged:
        for c in r.candidates:
            if isinstance(c.correct, bool) and c.node in by_node:
                out[by_node[c.node]] = c.correct
    return out


class _NoJudge(Judge):
    """Gives no verdict of its own (None): what only the episode's record says is kept."""

    def correct(self, episode: dict[str, Any], answer: str | None) -> bool | None:
        return None


_NO_JUDGE = _NoJudge()


def rounds(episode: dict[str, Any], judge: Judge | None = None) -> list[Round]:
    """The episode's rounds (pool + synthesis), in order; [] for protocols without a pool (conductor).

    Schema 2: the pools the protocol recorded, with the verdicts recorded on its messages.
    Schema 1: ``legacy_rounds`` (decoded from node names; ``judge`` fills in verdicts)."""
    if is_legacy(episode):
        return legacy_rounds(episode, judge or Judge())
    msgs = {m["id"]: m for m in episode["messages"]}
    out = []
    for p in episode.get("pools") or []:
        cands = []
        for mid, agent in zip(p["candidates"], p["agents"], strict=True):
            m = msgs[mid]
            ok = m.get("correct")
            cands.append(
                Candidate(agent, m["sender"], m["content"], m["extracted"], False if ok is None else bool(ok))
            )
        rnd = Round(p["round"], cands, meta=dict(p.get("meta") or {}))
        if p.get("rule") is not None:
            rnd.synth_answer = p.get("answer")
            rnd.synth_correct = bool(p.get("correct"))
            if p["rule"] == "model" and p.get("synthesis") is not None:
                rnd.synth_node = msgs[p["synthesis"]]["sender"]
        out.append(rnd)
    return out


def legacy_rounds(episode: dict[str, Any], judge: Judge) -> list[Round]:
    """Schema 1: the rounds decoded from the messages' roles and node names (the recording format
    before pools were recorded), verdicts from the protocol's events or ``judge``."""
    proto = episode["protocol"]
    msgs = episode["messages"]
    if proto == "single":
        return [Round(0, _candidates([m for m in msgs if m["role"] == "agent"], episode, judge))]
    if proto == "vote":
        pool = [m for m in msgs if m["role"] == "sampler"]
        return [Round(0, _candidates(pool, episode, judge), episode["final_answer"], episode["correct"])]
    if proto == "debate":
        out = []
        for r in sorted({m["round"] for m in msgs if m["role"] == "debater"}):
            rnd = Round(
                r,
                _candidates([m for m in msgs if m["role"] == "debater" and m["round"] == r], episode, judge),
            )
            rnd.synth_answer = rnd.majority
            rnd.synth_correct = judge.correct(episode, rnd.synth_answer)
            out.append(rnd)
        return out
    if proto == "moa":
        layers = sorted({m["round"] for m in msgs if m["role"] == "proposer"})
        out = [
            Round(
                lay,
                _candidates(
                    [m for m in msgs if m["role"] == "proposer" and m["round"] == lay], episode, judge
                ),
            )
            for lay in layers
        ]
        agg = next((m for m in msgs if m["role"] == "aggregator"), None)
        if out and agg is not None:
            out[-1].synth_answer = episode["final_answer"]
            out[-1].synth_correct = episode["correct"]
            out[-1].synth_node = agg["sender"]
        return out
    if proto in ("maestro", "maestro_gen"):
        slates = {e["round"]: e for e in _events(episode, "slate")}
        out = []
        for r in sorted({m["round"] for m in msgs if m["role"] == "explorer"}):
            pool = [m for m in msgs if m["role"] == "explorer" and m["round"] == r]
            s = slates.get(r, {})
            rnd = Round(r, _candidates(pool, episode, judge, s.get("correct")))
            central = next((m for m in msgs if m["sender"] == f"central@{r}"), None)
            if central is not None:
                rnd.synth_node = central["sender"]
                rnd.synth_answer = central["extracted"]
                pc = s.get("pick_correct")
                rnd.synth_correct = bool(pc) if pc is not None else False
                rnd.meta = {"pick": s.get("pick"), "parse": s.get("parse")}
            out.append(rnd)
        return out
    if proto == "leader":
        summaries = {e["round"]: e for e in _events(episode, "round_summary")}
        out = []
        for t in sorted({m["round"] for m in msgs if m["role"] == "leader"}):
            s = summaries.get(t, {})
            pool = [m for m in msgs if m["role"] == "peer" and m["round"] == t]
            rnd = Round(t, _candidates(pool, episode, judge, s.get("peer_correct") or None))
            lead = next((m for m in msgs if m["sender"] == f"leader@{t}"), None)
            if lead is not None:
                rnd.synth_node = lead["sender"]
                rnd.synth_answer = lead["extracted"]
                rnd.synth_correct = judge.correct(episode, lead["extracted"])
            out.append(rnd)
        return out
    return []


def answer_counts(answers: list[str | None]) -> Counter:
    """How often each parsed answer occurs (None, i.e. no answer, is left out)."""
    return Counter(a for a in answers if a is not None)
