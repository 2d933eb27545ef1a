"""Per-agent credit: leave-one-out and Shapley values of each agent for the episode's outcome.

A cooperative game per episode: the players are the agents of the synthesiser's last input pool
(``explorer-0..N-1``, ``peer-0..K-1``, ``sample-0..n-1``, ``agent-0..N-1``, ``proposer-…``), and
the value v(S) of a coalition S is 1 if the synthesiser, shown only S's messages, ends correct:

    vote, debate   the majority rule over S's answers (no model)
    maestro        the central agent replayed on the slate restricted to S (workbench/analysis/replay.py)
    leader         the leader's last synthesis replayed with only S's answers
    moa            the aggregator replayed with only S's responses

v(N) is the episode's recorded outcome and v(∅) = 0 (no team, no answer). The players and their
answers' verdicts are the ones the protocol recorded (episode schema 2: ``episode["pools"]``'s
agent positions, ``message["correct"]``; schema 1: decoded by ``pools.legacy_rounds``). Then

    Shapley   φ_i = Σ_{S ⊆ N∖{i}} |S|! (n−|S|−1)! / n! · (v(S ∪ {i}) − v(S))
    LOO       λ_i = v(N) − v(N ∖ {i})

Σ φ_i = v(N) − v(∅) (efficiency). Exact (2^n coalitions) for n ≤ ``max_exact`` (5); beyond,
the mean marginal contribution over ``permutations`` random orders (Castro et al. 2009), whose
coalitions, and the n leave-one-out ones, are the only ones evaluated; the count is reported.

Also here: accuracy bucketed by how many agents were right (MLPO's robustness view) and the
override analysis (a synthesiser that goes against its pool's strict majority: rightly or wrongly).
"""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from workbench.analysis.pools import Candidate, Round
from workbench.analysis.stats import mean_ci
from workbench.protocols.base import derive_seed

Coalition = frozenset[int]


# ---- the game ----
def coalition_plan(
    n: int, max_exact: int = 5, permutations: int = 64, seed: int = 0
) -> tuple[list[Coalition], list[tuple[int, ...]] | None]:
    """The coalitions whose value is needed, and the sampled permutations (None when exact)."""
    full = frozenset(range(n))
    if n <= max_exact:
        subsets = [frozenset(c) for k in range(n + 1) for c in itertools.combinations(range(n), k)]
        return subsets, None
    rng = random.Random(seed)
    perms = []
    for _ in range(permutations):
        p = list(range(n))
        rng.shuffle(p)
        perms.append(tuple(p))
    needed = {frozenset(), full} | {full - {i} for i in range(n)}
    for p in perms:
        for k in range(1, n):
            needed.add(frozenset(p[:k]))
    return sorted(needed, key=lambda s: (len(s), sorted(s))), perms


def shapley_values(
    n: int, v: dict[Coalition, float], perms: list[tuple[int, ...]] | None = None
) -> list[float]:
    """φ_i from the coalition values (exact formula, or the mean marginal over ``perms``)."""
    if perms is None:
        phi = [0.0] * n
        for i in range(n):
            others = [j for j in range(n) if j != i]
            for k in range(n):
                w = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
                for s in itertools.combinations(others, k):
                    s = frozenset(s)
                    phi[i] += w * (v[s | {i}] - v[s])
        return phi
    phi = [0.0] * n
    for p in perms:
        prefix: Coalition = frozenset()
        for i in p:
            nxt = prefix | {i}
            phi[i] += v[nxt] - v[prefix]
            prefix = nxt
    return [x / len(perms) for x in phi]


def leave_one_out(n: int, v: dict[Coalition, float]) -> list[float]:
    full = frozenset(range(n))
    return [v[full] - v[full - {i}] for i in range(n)]


def shapley(
    n: int, value: Callable[[Coalition], float], max_exact: int = 5, permutations: int = 64, seed: int = 0
) -> dict[str, Any]:
    """Shapley and leave-one-out values of an n-player game given as a function of coalitions."""
    coalitions, perms = coalition_plan(n, max_exact, permutations, seed)
    v = {s: float(value(s)) for s in coalitions}
    return {
        "shapley": shapley_values(n, v, perms),
        "loo": leave_one_out(n, v),
        "exact": perms is None,
        "evaluations": len(coalitions),
    }


# ---- the players of an episode ----
def players(rnd: Round) -> list[str]:
    """The agents of a pool, in order of first appearance."""
    return list(dict.fromkeys(c.agent for c in rnd.candidates))


def subset(rnd: Round, agents: list[str], coalition: Coalition) -> list[Candidate]:
    """The pool's candidates whose agent is in the coalition (original order kept)."""
    keep = {agents[i] for i in coalition}
    return [c for c in rnd.candidates if c.agent in keep]


def synth_round(rounds_: list[Round]) -> Round | None:
    """The last round whose synthesis made the episode's answer (the one credit is computed on)."""
    for r in reversed(rounds_):
        if r.synth_correct is not None and r.candidates:
            return r
    return None


def majority_value(candidates: list[Candidate], episode: dict, judge) -> float:
    """v(S) under the majority rule: 1 if the majority of S's parsed answers is correct."""
    from workbench.protocols.vote import majority

    winner = majority([c.answer for c in candidates])[0]
    return float(bool(judge.correct(episode, winner))) if winner is not None else 0.0


def aggregate_credit(games: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean Shapley and LOO per agent position over episodes (bootstrap CIs), and who dominates.

    ``games``: per episode {"agents": [...], "shapley": [...], "loo": [...], "evaluations": int, ...}.
    ``top_share``: how often each position has the (strictly) largest Shapley value of its episode.
    """
    sh: dict[str, list[float]] = defaultdict(list)
    lo: dict[str, list[float]] = defaultdict(list)
    top: dict[str, int] = defaultdict(int)
    decided = 0
    for g in games:
        for a, s, x in zip(g["agents"], g["shapley"], g["loo"], strict=True):
            sh[a].append(s)
            lo[a].append(x)
        best = max(g["shapley"], default=0.0)
        winners = [a for a, s in zip(g["agents"], g["shapley"], strict=True) if s == best]
        if best > 0 and len(winners) == 1:
            top[winners[0]] += 1
            decided += 1
    agents = sorted(
        sh, key=lambda a: (a.rsplit("-", 1)[0], int(a.rsplit("-", 1)[1]) if a[-1].isdigit() else 0)
    )
    per_agent = [
        {
            "agent": a,
            "shapley": mean_ci(sh[a]),
            "loo": mean_ci(lo[a]),
            "top_share": top[a] / decided if decided else None,
        }
        for a in agents
    ]
    means = [p["shapley"]["mean"] or 0.0 for p in per_agent]
    total = sum(means)
    return {
        "episodes": len(games),
        "evaluations": sum(g["evaluations"] for g in games),
        "generations": sum(g.get("generations", 0) for g in games),
        "exact": all(g["exact"] for g in games),
        "per_agent": per_agent,
        # the largest position's share of the summed mean credit (1/n = even; near 1 = one agent carries the team)
        "max_share": max(means) / total if total > 0 else None,
    }


def majority_credit(
    episodes: list[dict], episode_rounds: list[list[Round]], judge, max_exact: int = 5, permutations: int = 64
) -> dict[str, Any] | None:
    """Credit for vote/debate episodes (majority rule over the last pool), no model needed."""
    games = []
    for ep, rounds_ in zip(episodes, episode_rounds, strict=True):
        rnd = synth_round(rounds_)
        if rnd is None:
            continue
        agents = players(rnd)
        full = frozenset(range(len(agents)))

        def value(s: Coalition, rnd=rnd, agents=agents, ep=ep, full=full) -> float:
            if not s:
                return 0.0
            if s == full:
                return float(ep["correct"])
            return majority_value(subset(rnd, agents, s), ep, judge)

        g = shapley(len(agents), value, max_exact, permutations, seed=derive_seed("credit", ep["task_id"]))
        games.append({"task_id": ep["task_id"], "agents": agents, **g})
    return aggregate_credit(games) | {"games": games} if games else None


# ---- MLPO's robustness view and overrides ----
def accuracy_by_agents_right(
    episode_rounds: list[list[Round]], finals: list[bool], which: str = "first"
) -> list[dict]:
    """Final accuracy bucketed by how many candidates of the first (or the synthesised) pool were right."""
    buckets: dict[tuple[int, int], list[float]] = defaultdict(list)
    for rounds_, final in zip(episode_rounds, finals, strict=True):
        pools = [r for r in rounds_ if r.candidates]
        rnd = (pools[0] if pools else None) if which == "first" else synth_round(rounds_)
        if rnd is None:
            continue
        k = sum(bool(c.correct) for c in rnd.candidates)
        buckets[(k, len(rnd.candidates))].append(float(final))
    return [{"right": k, "of": m, **mean_ci(vals)} for (k, m), vals in sorted(buckets.items())]


def overrides(episode_rounds: list[list[Round]]) -> dict[str, Any] | None:
    """How often a model synthesiser answered against its pool's strict majority, and with what result.

    Per synthesised round whose pool has a strict majority answer (more than half of the candidates):
    ``follows`` (same answer), ``overrides_right`` (different, synthesis right and majority wrong),
    ``overrides_wrong`` (different, synthesis wrong and majority right), ``overrides_neither``.
    """
    counts = defaultdict(int)
    follows_right = 0
    for rounds_ in episode_rounds:
        for r in rounds_:
            if r.synth_node is None or not r.candidates:
                continue
            answers = [c.answer for c in r.candidates]
            top = max(
                ((a, answers.count(a)) for a in set(answers) if a is not None),
                key=lambda x: x[1],
                default=None,
            )
            if top is None or top[1] * 2 <= len(answers):
                counts["no_majority"] += 1
                continue
            maj = top[0]
            maj_right = any(c.correct for c in r.candidates if c.answer == maj)
            if r.synth_answer == maj:
                counts["follows"] += 1
                follows_right += bool(r.synth_correct)
            elif r.synth_correct and not maj_right:
                counts["overrides_right"] += 1
            elif maj_right and not r.synth_correct:
                counts["overrides_wrong"] += 1
            else:
                counts["overrides_neither"] += 1
    if not counts:
        return None
    out = {
        k: counts.get(k, 0)
        for k in ("follows", "overrides_right", "overrides_wrong", "overrides_neither", "no_majority")
    }
    out["follows_accuracy"] = follows_right / out["follows"] if out["follows"] else None
    return out
