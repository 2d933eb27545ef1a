"""Every episode as rounds of a *pool* (what the agents proposed) and a *synthesis* (what was made of it).

All analyses read episodes through this one view, so a protocol's recording format is decoded in
one place:

    protocol   pool of round r                       synthesis of round r
    single     the agent's answer                    (none: the answer is the pool)
    vote       the n samples                         majority rule
    debate     the N debaters of round r             majority rule over round r
    moa        the proposers of layer l              the aggregator (last layer only)
    maestro    the N·K explorer samples of round r   the central agent's pick (or Central-Gen's answer)
    leader     the K peers of round t                the leader's answer of round t

A candidate's *agent* is its position without the round (``explorer-1``, ``peer-0``, ``sample-3``):
the unit of per-agent credit. Correctness comes from the protocol's own record where it has one
(maestro's ``slate``, the leader's ``round_summary``) and otherwise from a ``Judge``: the run's task
verifier, reloaded from the run's config (or, when the tasks cannot be reloaded, a verifier built
from the episode's gold answer).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
        if answer is None:
            return False
        if answer == episode.get("final_answer"):
            return bool(episode["correct"])
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


def rounds(episode: dict[str, Any], judge: Judge | None = None) -> list[Round]:
    """The episode's rounds (pool + synthesis), in order; [] for protocols without a pool (conductor)."""
    judge = judge or Judge()
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
