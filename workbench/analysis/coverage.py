"""Coverage and identification (Maestro's lens; also the leader, debate and vote).

Per round t over the episodes of a run (the pools and verdicts the protocol recorded, read by
``pools.rounds``):

    p_t = P(the pool of round t holds a correct candidate)                        coverage
    q_t = P(the synthesis of round t is correct | the pool of round t is covered)  identification

With p̄, q̄ the means over rounds, a protocol that succeeds in a round with probability p·q,
independently across R rounds, succeeds in at least one of them with probability

    bound = 1 − (1 − p̄·q̄)^R

(Maestro's argument; rounds are not independent in practice: herding makes them correlated). It
is reported next to the observed success: ``success_any`` (some round's synthesis was correct,
what the bound speaks of) and ``accuracy`` (the final answer was correct). Where episodes carry
``meta.train_step`` (training runs) the same numbers are given per step.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from workbench.analysis.pools import Round
from workbench.analysis.stats import mean_ci


def coverage_identification(episode_rounds: list[list[Round]], finals: list[bool]) -> dict[str, Any] | None:
    """p_t, q_t per round with bootstrap CIs, the bound, observed success. None without syntheses."""
    by_round: dict[int, list[Round]] = defaultdict(list)
    any_success = []
    for rounds_ in episode_rounds:
        synth = [r for r in rounds_ if r.synth_answer is not None or r.synth_node is not None]
        if not synth and not any(r.synth_correct is not None for r in rounds_):
            continue
        for pos, r in enumerate(rounds_):
            if r.synth_correct is not None:
                by_round[pos].append(r)
        any_success.append(any(bool(r.synth_correct) for r in rounds_ if r.synth_correct is not None))
    if not by_round:
        return None
    per_round = []
    for pos in sorted(by_round):
        rs = by_round[pos]
        covered = [r for r in rs if r.coverage]
        per_round.append(
            {
                "round": pos + 1,
                "n": len(rs),
                "p": mean_ci([float(r.coverage) for r in rs]),
                "q": mean_ci([float(bool(r.synth_correct)) for r in covered]),
                "synth_accuracy": mean_ci([float(bool(r.synth_correct)) for r in rs]),
                # the synthesis was right although no candidate was (Central-Gen, a leader that solves it)
                "beyond_pool": sum(bool(r.synth_correct) and not r.coverage for r in rs),
            }
        )
    ps = [r["p"]["mean"] for r in per_round if r["p"]["mean"] is not None]
    qs = [r["q"]["mean"] for r in per_round if r["q"]["mean"] is not None]
    p_bar = sum(ps) / len(ps) if ps else 0.0
    q_bar = sum(qs) / len(qs) if qs else 0.0
    rounds_n = len(per_round)
    return {
        "per_round": per_round,
        "p_mean": p_bar,
        "q_mean": q_bar,
        "rounds": rounds_n,
        "bound": 1 - (1 - p_bar * q_bar) ** rounds_n,
        "success_any": mean_ci([float(s) for s in any_success]),
        "accuracy": mean_ci([float(f) for f in finals]),
    }


def by_train_step(
    episodes: list[dict[str, Any]], episode_rounds: list[list[Round]]
) -> list[dict[str, Any]] | None:
    """Coverage/identification per training step (episodes with an integer ``meta.train_step``)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, ep in enumerate(episodes):
        step = (ep.get("meta") or {}).get("train_step")
        if isinstance(step, int) and not isinstance(step, bool):
            groups[step].append(i)
    if not groups:
        return None
    out = []
    for step in sorted(groups):
        idx = groups[step]
        ci = coverage_identification([episode_rounds[i] for i in idx], [episodes[i]["correct"] for i in idx])
        row = {"step": step, "n": len(idx), "accuracy": sum(episodes[i]["correct"] for i in idx) / len(idx)}
        if ci is not None:
            row |= {"p": ci["p_mean"], "q": ci["q_mean"], "bound": ci["bound"]}
        out.append(row)
    return out
