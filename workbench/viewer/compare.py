"""Several runs on the same items: a per-item outcome grid, accuracy and budget, paired tests.

Items are paired by ``task_id`` (stable across runs of the same task, split and item seed). The
grid has one row per item seen in any run and one column per run: ``✓`` right, ``✗`` wrong,
``∅`` format failure, blank when that run has no episode for the item (yet).
"""

from __future__ import annotations

from typing import Any

from workbench.stats import paired_outcomes, wilson_ci

MARKS = {"correct": "✓", "wrong": "✗", "format failure": "∅"}


def outcome_grid(runs: dict[str, list[dict[str, Any]]]) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of the per-item grid; ``runs`` maps a run name to its episode index entries.

    Rows follow the first run's item order, then items only later runs have. A task seen twice in
    one run (several seeds appended) counts its last episode.
    """
    names = list(runs)
    order: list[str] = []
    question: dict[str, str] = {}
    cell: dict[str, dict[str, str]] = {name: {} for name in names}
    for name in names:
        for e in sorted(runs[name], key=lambda e: (e["index"], e["pos"])):
            if e["task_id"] not in question:
                order.append(e["task_id"])
                question[e["task_id"]] = e["question"]
            cell[name][e["task_id"]] = MARKS[e["outcome"]]
    header = ["item", "question", *names, "agree"]
    rows = []
    for t in order:
        marks = [cell[name].get(t, "") for name in names]
        present = [m for m in marks if m]
        agree = "" if len(present) < 2 else ("same" if len(set(present)) == 1 else "differ")
        rows.append([t, question[t][:80], *marks, agree])
    return header, rows


def summary_rows(runs: dict[str, list[dict[str, Any]]]) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): per run accuracy [95% CI], accuracy on the items every run has (the fair one when
    the runs differ in length), budget per query, and a paired test against the first run."""
    header = [
        "run",
        "n",
        "accuracy [95% CI]",
        "accuracy on common items",
        "format failures",
        "gens/q",
        "tokens/q",
        "paired with the first run: only first right / only this right (McNemar p)",
    ]
    names = list(runs)
    common = set.intersection(*(set(e["task_id"] for e in runs[name]) for name in names)) if names else set()
    rows = []
    for i, name in enumerate(names):
        es = runs[name]
        n = len(es)
        k = sum(e["correct"] for e in es)
        lo, hi = wilson_ci(k, n)
        acc = f"{k / n:.3f} [{lo:.3f}, {hi:.3f}]" if n else "–"
        on_common = {e["task_id"]: e["correct"] for e in es if e["task_id"] in common}
        acc_common = f"{sum(on_common.values()) / len(common):.3f} (n={len(common)})" if common else "–"
        paired = ""
        if i > 0:
            p = paired_outcomes(runs[names[0]], es)
            paired = (
                f"{p['only_a_right']} / {p['only_b_right']} (p = {p['mcnemar_p']:.3g}, {p['n_paired']} paired items)"
                if p["n_paired"]
                else "no common items"
            )
        rows.append(
            [
                name,
                n,
                acc,
                acc_common,
                sum(e["format_failure"] for e in es),
                round(sum(e["calls"] for e in es) / n, 2) if n else 0,
                round(sum(e["completion_tokens"] for e in es) / n, 1) if n else 0,
                paired,
            ]
        )
    return header, rows


def find_item(entries: list[dict[str, Any]], task_id: str) -> dict[str, Any] | None:
    """The (last) entry of a run for ``task_id``, or None when that run lacks the item."""
    hit = None
    for e in entries:
        if e["task_id"] == task_id:
            hit = e
    return hit
