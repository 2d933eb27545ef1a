"""The Conductor's workflows: who is chosen for which step, how long the workflows are, what each step adds.

From each episode's ``meta.plans`` (the parsed lists, or ``{"error": ...}`` for a plan that could
not be parsed) and its worker messages (``step-k``; ``step-c.k`` after a recursion):

    workers_by_position   counts[k][w] = workflows whose step k ran on worker "Model w"
    length                distribution of the first workflow's number of steps
    format_failure_rate   episodes whose first plan could not be parsed (reward 0)
    failure_reasons       plans (every call) that could not be used, by ``reason`` (conductor.PLAN_ERRORS)
    per_step              for each step position k: the share of steps with a correct answer, and
                          Δ_k = acc_k − acc_{k−1} over workflows that reached step k (what step k added)
    by_train_step         the same rates per ``meta.train_step`` (training runs)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from workbench.analysis.pools import Judge
from workbench.analysis.stats import mean_ci


def _steps(episode: dict) -> list[dict]:
    """The first workflow's worker messages in step order."""
    steps = [m for m in episode["messages"] if m["role"] == "worker" and m["sender"].startswith("step-")]
    return [m for m in steps if "." not in m["sender"]]


def conductor_analysis(episodes: list[dict], judge: Judge | None = None) -> dict[str, Any] | None:
    judge = judge or Judge()
    eps = [e for e in episodes if e["protocol"] == "conductor"]
    if not eps:
        return None
    workers: dict[int, Counter] = defaultdict(Counter)
    lengths: Counter = Counter()
    failures = 0
    step_right: dict[int, list[float]] = defaultdict(list)
    step_gain: dict[int, list[float]] = defaultdict(list)
    recursed = 0
    reasons: Counter = Counter()
    for ep in eps:
        plans = _plans(ep)
        reasons.update(
            p["reason"] if isinstance(p.get("reason"), str) else "unrecorded" for p in plans if "error" in p
        )
        first = plans[0] if plans else {"error": "no plan recorded"}
        if "error" in first:
            failures += 1
            continue
        lengths[len(first["model_id"])] += 1
        recursed += sum(1 for p in plans[1:] if "error" not in p and p.get("model_id"))
        for k, w in enumerate(first["model_id"]):
            workers[k][w] += 1
        prev = None
        for k, m in enumerate(_steps(ep)):
            ok = float(bool(judge.correct(ep, m["extracted"])))
            step_right[k].append(ok)
            if prev is not None:
                step_gain[k].append(ok - prev)
            prev = ok
    n = len(eps)
    positions = sorted(workers)
    pool = max((w for c in workers.values() for w in c), default=-1) + 1
    return {
        "episodes": n,
        "format_failures": failures,
        "format_failure_rate": failures / n,
        "length": {str(k): lengths[k] for k in sorted(lengths)},
        "mean_length": sum(k * c for k, c in lengths.items()) / max(1, sum(lengths.values())),
        "recursions": recursed,
        "failure_reasons": dict(sorted(reasons.items())),
        "workers_by_position": [
            {"position": k, "counts": [workers[k].get(w, 0) for w in range(pool)]} for k in positions
        ],
        "per_step": [
            {"position": k, "accuracy": mean_ci(step_right[k]), "gain": mean_ci(step_gain.get(k, []))}
            for k in sorted(step_right)
        ],
        "by_train_step": _by_step(eps),
    }


def _plans(ep: dict) -> list[dict]:
    """An episode's ``meta.plans``; a plan of the wrong shape (a hostile or corrupted line) counts
    as a format failure, never a crash."""
    plans = ep["meta"].get("plans") if isinstance(ep.get("meta"), dict) else None
    if not isinstance(plans, list):
        return []
    out = []
    for p in plans:
        ids = p.get("model_id") if isinstance(p, dict) else None
        ok = isinstance(p, dict) and "error" not in p and isinstance(ids, list)
        ok = ok and all(isinstance(w, int) and not isinstance(w, bool) and 0 <= w < 10_000 for w in ids)
        out.append(
            p
            if ok
            else {
                "error": p.get("error", "malformed plan") if isinstance(p, dict) else "malformed plan",
                "reason": p.get("reason") if isinstance(p, dict) else None,
            }
        )
    return out


def _by_step(eps: list[dict]) -> list[dict] | None:
    groups: dict[int, list[dict]] = defaultdict(list)
    for ep in eps:
        step = (ep.get("meta") or {}).get("train_step")
        if isinstance(step, int) and not isinstance(step, bool):
            groups[step].append(ep)
    if not groups:
        return None
    out = []
    for step in sorted(groups):
        g = groups[step]
        plans = [(_plans(e) or [{"error": ""}])[0] for e in g]
        ok = [p for p in plans if "error" not in p]
        out.append(
            {
                "step": step,
                "n": len(g),
                "accuracy": sum(e["correct"] for e in g) / len(g),
                "format_failure_rate": 1 - len(ok) / len(g),
                "mean_length": sum(len(p["model_id"]) for p in ok) / len(ok) if ok else None,
            }
        )
    return out
