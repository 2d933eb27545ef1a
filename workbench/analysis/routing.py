"""Where the Conductor routes work, per task family, before vs after training.

From each conductor episode's ``meta.plans`` (the parsed workflows in call order, ``{"error",
"reason"}`` for one that could not be parsed) and ``meta.workers`` (a stable name per offered
"Model i": the member's name, ``name#k`` when the pool holds a member more than once; older runs:
"Model i"), per (family, phase):

    worker_share     share of executed steps sent to each worker (every workflow of the episode)
    final_worker     share of episodes whose answering step (the last workflow's last step) ran on it
    length           first workflows by number of steps, and their mean
    access           first workflows by access-list shape ("[] [] all": per step [] or ["all"])
    failure_reasons  plans that could not be used, by reason (``conductor.PLAN_ERRORS``)

**Family**: ``meta.family`` or ``meta.task_family`` of the episode when present (every episode
of a mixture item records it), else, in a run of a mixture (``mix:a,b:c``), the component its task
id starts with (mixture ids are ``COMPONENT/ID``, e.g. ``bbh:hyperbaton/17``; the longest
matching component), else the run's task name.

**Phase**: a training run's dev evaluations (episodes with ``meta.eval``) give ``before`` (the
first evaluation step) and ``after`` (the last); the sampled training episodes are left out. Any
other run is one phase, ``run``; compare an untrained and a trained run with
``workbench analyze RUN_A RUN_B`` (comparison.json holds each run's routing).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

SHAPES_SHOWN = 6  # access-list shapes listed by name; the rest are "other"


def episode_family(ep: dict, run_task: str) -> str:
    """The task family an episode's item belongs to (see the module doc)."""
    meta = ep.get("meta") if isinstance(ep.get("meta"), dict) else {}
    for key in ("family", "task_family"):
        if isinstance(meta.get(key), str) and meta[key]:
            return meta[key][:60]
    if run_task.startswith("mix:"):
        task_id = str(ep.get("task_id", "")).rsplit("~g", 1)[0]
        parts = [p.strip() for p in run_task.partition(":")[2].split(",") if p.strip()]
        matching = [p for p in parts if task_id.startswith(f"{p}/")]
        if matching:
            return max(matching, key=len)[:60]
    return run_task


def _phase(ep: dict, first: int | None, last: int | None) -> str | None:
    meta = ep.get("meta") if isinstance(ep.get("meta"), dict) else {}
    if first is None:
        return "run"
    if not meta.get("eval"):
        return None  # a sampled training episode
    step = meta.get("eval_step")
    if step == first:
        return "before"
    return "after" if step == last else None


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _workflows(ep: dict) -> tuple[list[dict], Counter]:
    """The usable plans of an episode, in call order, and its unusable ones by reason. A plan of
    the wrong shape (a hostile or corrupted line) counts as a failure, never a crash."""
    plans = ep["meta"].get("plans") if isinstance(ep.get("meta"), dict) else None
    good, bad = [], Counter()
    for p in plans if isinstance(plans, list) else []:
        ids = p.get("model_id") if isinstance(p, dict) else None
        acc = p.get("access_list") if isinstance(p, dict) else None
        ok = isinstance(p, dict) and "error" not in p and isinstance(ids, list) and isinstance(acc, list)
        ok = ok and len(ids) == len(acc) and all(_int(w) and 0 <= w < 10_000 for w in ids)
        if ok:
            good.append(p)
        else:
            reason = p.get("reason") if isinstance(p, dict) else None
            bad[reason if isinstance(reason, str) else "unrecorded"] += 1
    return good, bad


def _label(ep: dict, mid: int) -> str:
    workers = ep["meta"].get("workers")
    if isinstance(workers, list) and mid < len(workers) and isinstance(workers[mid], str):
        return workers[mid][:60]
    return f"Model {mid}"


def _shape(access: list) -> str:
    return " ".join("all" if a in (["all"], "all") else "[]" for a in access)


def _shares(counter: Counter) -> dict[str, float]:
    total = sum(counter.values())
    return {k: round(v / total, 4) for k, v in sorted(counter.items())} if total else {}


def routing_analysis(episodes: list[dict], run_task: str = "?") -> dict[str, Any] | None:
    """Routing per (family, phase) of a run's conductor episodes (see the module doc); None without any."""
    eps = [e for e in episodes if e.get("protocol") == "conductor"]
    if not eps:
        return None
    steps = sorted(
        {
            e["meta"]["eval_step"]
            for e in eps
            if isinstance(e.get("meta"), dict) and e["meta"].get("eval") and _int(e["meta"].get("eval_step"))
        }
    )
    first, last = (steps[0], steps[-1]) if steps else (None, None)
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for ep in eps:
        phase = _phase(ep, first, last)
        if phase is not None:
            cells[(episode_family(ep, run_task), phase)].append(ep)
    order = {"before": 0, "run": 1, "after": 2}
    rows = []
    for (family, phase), group in sorted(cells.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
        share, final, lengths, shapes, reasons = Counter(), Counter(), Counter(), Counter(), Counter()
        planned = 0
        for ep in group:
            plans, bad = _workflows(ep)
            reasons.update(bad)
            ran = [p for p in plans if p["model_id"]]
            if not ran:
                continue
            planned += 1
            lengths[len(ran[0]["model_id"])] += 1
            shapes[_shape(ran[0]["access_list"])] += 1
            for p in ran:
                share.update(_label(ep, w) for w in p["model_id"])
            final[_label(ep, ran[-1]["model_id"][-1])] += 1
        top = [s for s, _ in shapes.most_common(SHAPES_SHOWN)]
        access = {s: shapes[s] for s in top}
        if len(shapes) > len(top):
            access["other"] = sum(v for s, v in shapes.items() if s not in top)
        rows.append(
            {
                "family": family,
                "phase": phase,
                "episodes": len(group),
                "planned": planned,
                "accuracy": round(sum(bool(e.get("correct")) for e in group) / len(group), 4),
                "worker_share": _shares(share),
                "final_worker": _shares(final),
                "length": {str(k): lengths[k] for k in sorted(lengths)},
                "mean_length": round(sum(k * c for k, c in lengths.items()) / planned, 3)
                if planned
                else None,
                "access": access,
                "failure_reasons": dict(sorted(reasons.items())),
            }
        )
    return {
        "phases": "before/after (training run evaluations)" if first is not None else "run",
        "eval_steps": [first, last] if first is not None else None,
        "rows": rows,
    }
