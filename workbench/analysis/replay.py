"""Counterfactual replay of a synthesising role: what would it have said with only some agents' messages?

``ReplaySetup.for_run(run_dir)`` rebuilds the run's protocol config and team from its config.yaml;
``synth_request`` builds the exact request the protocol sends to its synthesiser (the central
agent of maestro, the leader's synthesis, the moa aggregator), from the prompts in
``workbench/prompts.py`` and the protocol's own agent/sampling rules, for a *subset* of the pool;
``synth_value`` scores the reply with the protocol's own parser (``maestro.parse_choice``,
``leader.leader_answer``, the task's extractor). tests/test_analysis_replay.py checks that with the
full pool the request equals, message for message, what the protocol sent when the episode ran.

``replay_credit`` computes Shapley and leave-one-out credit (workbench/analysis/credit.py) for a
run's episodes: every coalition's request of every episode goes to the backend in one batch;
replies are cached by request in ``replay_cache.jsonl`` (in the given folder), so a second
analysis of the same run spends no generation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from workbench.analysis.credit import (
    Coalition,
    aggregate_credit,
    coalition_plan,
    leave_one_out,
    players,
    shapley_values,
    subset,
    synth_round,
)
from workbench.analysis.pools import Candidate, Judge, Round, rounds
from workbench.config import ConfigError
from workbench.models.base import Backend, Request
from workbench.prompts import Shown, SynthState
from workbench.protocols import PROTOCOLS
from workbench.protocols.base import Member, Team, derive_seed
from workbench.tasks.base import Task

REPLAYABLE = ("maestro", "maestro_gen", "leader", "moa")


@dataclass
class ReplaySetup:
    protocol: str
    cfg: Any  # the protocol's config dataclass, as the run resolved it
    team: Team

    @classmethod
    def for_run(cls, run_dir: str | Path) -> ReplaySetup:
        from workbench.evaluate import ProtocolConfig

        path = Path(run_dir) / "config.yaml"
        from workbench.runs import read_config

        data = read_config(path)
        if data is None:
            raise ConfigError(f"cannot read {path} as a YAML mapping; replay needs the run's config.yaml")
        proto = data.get("protocol") if isinstance(data.get("protocol"), dict) else {}
        if proto.get("name") not in REPLAYABLE:
            raise ConfigError(
                f"{run_dir}: protocol {proto.get('name')!r} has no model synthesiser to replay "
                f"(replayable: {', '.join(REPLAYABLE)}; vote and debate use the majority rule)"
            )
        pc = ProtocolConfig(proto["name"], proto.get("options") or {})
        members = [Member("default")] + [
            Member(name, m.get("model", "default"), m.get("temperature"), m.get("top_p"), m.get("system"))
            for name, m in (data.get("team") or {}).items()
        ]
        return cls(pc.name, pc.resolved, Team(tuple(members)))

    def synth_agent(self):
        """The synthesising Agent exactly as the protocol builds it (config, member overrides, sampling)."""
        if self.protocol in ("maestro", "maestro_gen") and self.cfg.central_samples != 1:
            raise ConfigError("replay of Central-Gen+SC (protocol.central_samples > 1) is not supported")
        return PROTOCOLS[self.protocol].synthesiser.agent(self.team, self.cfg)


def synth_request(
    setup: ReplaySetup, task: Task, pool: list[Candidate], key: str = ""
) -> tuple[str, Request]:
    """(backend name, request) the synthesiser receives for ``pool``: the protocol's own prompt
    builder (``PROTOCOLS[protocol].synthesiser``) on the pool, with the member's system prompt."""
    agent = setup.synth_agent()
    shown = tuple(Shown(c.text, c.answer) for c in pool)
    state = SynthState(task.prompt, task.verifier, shown, system=agent.system)
    messages = PROTOCOLS[setup.protocol].synthesiser.messages(state, setup.cfg)
    sampling = agent.sampling
    if sampling.temperature > 0 and sampling.seed is None:
        sampling = replace(sampling, seed=derive_seed("replay", task.id, key))
    return agent.backend, Request(messages, sampling)


def synth_answer(setup: ReplaySetup, task: Task, pool: list[Candidate], text: str) -> str | None:
    """The answer the protocol would read from the synthesiser's reply ``text`` (None: none)."""
    from workbench.protocols.leader import leader_answer
    from workbench.protocols.maestro import parse_choice
    from workbench.protocols.vote import majority

    if setup.protocol in ("maestro", "maestro_gen") and setup.cfg.central == "select":
        pick, _ = parse_choice(text, len(pool), setup.cfg.lenient)  # the protocol's own reading
        return pool[pick].answer if pick is not None else None
    if setup.protocol == "leader":
        return leader_answer(text, task, setup.cfg.strict_format)[0]
    answer = task.extract(text)
    if answer is None and setup.protocol == "moa":  # the protocol's fallback: the last layer's majority
        answer = majority([c.answer for c in pool])[0]
    return answer


def request_key(backend_name: str, req: Request) -> str:
    blob = json.dumps([backend_name, list(req.messages), asdict(req.sampling)], sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()


class ReplayCache:
    """Replies by request key, appended to a JSON-lines file (a torn last line is ignored)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.data: dict[str, str] = {}
        if self.path and self.path.is_file():
            from workbench.runs import read_jsonl

            for row in read_jsonl(self.path).rows:
                if isinstance(row.get("key"), str) and isinstance(row.get("text"), str):
                    self.data[row["key"]] = row["text"]

    def add(self, rows: dict[str, str]) -> None:
        self.data.update(rows)
        if self.path and rows:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            from workbench.runs import JsonlLog

            with JsonlLog(self.path) as log:
                for k, t in rows.items():
                    log.append({"key": k, "text": t})


def replay_credit(
    run_dir: str | Path,
    episodes: list[dict],
    backends: Backend | dict[str, Backend],
    judge: Judge | None = None,
    limit: int | None = None,
    max_exact: int = 5,
    permutations: int = 64,
    cache_path: str | Path | None = None,
) -> dict[str, Any] | None:
    """Shapley/LOO credit of each agent position by replaying the run's synthesiser on coalitions.

    ``limit``: the first ``limit`` episodes only (replays cost 2^n − 2 generations each for n
    agents). Returns ``aggregate_credit`` plus ``games`` and ``generations`` (new, not cached).
    """
    setup = ReplaySetup.for_run(run_dir)
    judge = judge or Judge.for_run(run_dir)
    if not isinstance(backends, dict):
        backends = {"default": backends}
    cache = ReplayCache(cache_path)
    plans = []  # (episode, round, agents, task, coalitions, perms)
    todo: dict[str, tuple[str, Request]] = {}
    for ep in episodes[: limit if limit is not None else len(episodes)]:
        rnd = synth_round(rounds(ep, judge))
        if rnd is None:
            continue
        agents = players(rnd)
        task = judge.task(ep)
        coalitions, perms = coalition_plan(
            len(agents), max_exact, permutations, derive_seed("credit", ep["task_id"])
        )
        reqs = {}
        for s in coalitions:
            if 0 < len(s) < len(agents):
                name, req = synth_request(setup, task, subset(rnd, agents, s), key=str(sorted(s)))
                if name not in backends:
                    raise ConfigError(
                        f"replay needs the model of team member backend '{name}'; pass it in backends"
                    )
                k = request_key(name, req)
                reqs[s] = k
                if k not in cache.data:
                    todo[k] = (name, req)
        plans.append((ep, rnd, agents, task, coalitions, perms, reqs))
    # ---- generate every missing reply, one batch per backend ----
    for name in dict.fromkeys(n for n, _ in todo.values()):
        keys = [k for k, (n, _) in todo.items() if n == name]
        gens = backends[name].generate([todo[k][1] for k in keys])
        cache.add({k: g.text for k, g in zip(keys, gens, strict=True)})
    # ---- value every coalition ----
    games = []
    for ep, rnd, agents, task, coalitions, perms, reqs in plans:
        n = len(agents)
        v: dict[Coalition, float] = {}
        for s in coalitions:
            if not s:
                v[s] = 0.0
            elif len(s) == n:
                v[s] = float(ep["correct"])
            else:
                pool = subset(rnd, agents, s)
                answer = synth_answer(setup, task, pool, cache.data[reqs[s]])
                v[s] = float(bool(judge.correct(ep, answer))) if answer is not None else 0.0
        games.append(
            {
                "task_id": ep["task_id"],
                "agents": agents,
                "shapley": shapley_values(n, v, perms),
                "loo": leave_one_out(n, v),
                "exact": perms is None,
                "evaluations": len(coalitions),
                "generations": sum(1 for k in reqs.values() if k in todo),
                "values": {",".join(agents[i] for i in sorted(s)) or "-": v[s] for s in coalitions},
            }
        )
    if not games:
        return None
    return aggregate_credit(games) | {"games": games, "new_generations": len(todo)}


def round_pool(episode: dict, judge: Judge | None = None) -> Round | None:
    """The pool the episode's last synthesis read (a convenience for notebooks)."""
    return synth_round(rounds(episode, judge))
