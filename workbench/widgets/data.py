"""What notebook 01 shows about data: splits, verifiers on real items, your own JSONL, difficulty.

Every function returns plain rows (or a figure) so that a notebook cell only calls and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.config import ConfigError
from workbench.stats import error_bars
from workbench.tasks import FAMILIES, TaskConfig, TaskError, load_tasks

SPLITS = ("train", "dev", "test")

# the presets of docs/tasks.md ("Presets"): options of the arithmetic family, easiest first
ARITHMETIC_PRESETS: dict[str, dict[str, Any]] = {
    "easy": {"ops": "+"},
    "default": {},
    "medium": {"style": "word", "ops": "+"},
    "hard": {"style": "word"},
    "harder": {"digits": 2},
    "very hard": {"steps": 2},
    "floor": {"digits": 2, "steps": 2, "ops": "+-*"},
}


def split_table(families: list[str], probe: int = 100_000) -> list[dict[str, Any]]:
    """Per family and split: how many items there are (up to ``probe``), the first id, or why not.

    ``dev`` is carved from train (GSM8K), is the benchmark's own (MMLU), or is the ~20% of items
    whose hashed id falls in one bucket (test-only benchmarks; docs/tasks.md, "Splits")."""
    rows = []
    for family in families:
        ids: dict[str, set[str]] = {}
        for split in SPLITS:
            row: dict[str, Any] = {"task": family, "split": split}
            try:
                limit = 5 if family == "arithmetic" else probe  # arithmetic is unlimited
                tasks = load_tasks(
                    TaskConfig.from_flat({"name": family, "split": split, "limit": limit})
                ).tasks
                ids[split] = {t.id for t in tasks}
                row.update(items="unlimited" if family == "arithmetic" else len(tasks), first_id=tasks[0].id)
            except (TaskError, ConfigError) as e:
                row.update(items=0, first_id="", note=str(e)[:140])
            rows.append(row)
        overlap = [(a, b) for a in ids for b in ids if a < b and ids[a] & ids[b]]
        rows.append(
            {"task": family, "split": "(disjoint?)", "items": "yes" if not overlap else f"NO: {overlap}"}
        )
    return rows


def verifier_examples(families: list[str], split: str = "dev") -> list[dict[str, Any]]:
    """For each family's first item: the verifier on the gold answer written out, on a wrong
    answer, and on a reply with no answer (a format failure): what it extracts and its verdict."""
    rows = []
    for family in families:
        task, error = None, ""
        for s in dict.fromkeys((split, "test")):  # test-only copies (AMC, AIME, offline MMLU) fall back
            try:
                task = load_tasks(TaskConfig.from_flat({"name": family, "split": s, "limit": 1})).tasks[0]
                break
            except (TaskError, ConfigError) as e:
                error = str(e)
        if task is None:
            rows.append({"task": family, "reply": "(not loaded)", "extracted": None, "verdict": error[:120]})
            continue
        wrong = _wrong_answer(task)
        for label, reply in (
            ("gold", f"Let me think. The answer is {task.answer}."),
            ("wrong", f"Let me think. The answer is {wrong}."),
            ("no answer", "I am not sure how to solve this."),
        ):
            extracted, correct = task.check(reply)
            verdict = "format failure" if extracted is None else ("accepted" if correct else "rejected")
            rows.append(
                {"task": family, "verifier": task.verifier, "gold": task.answer[:30], "case": label,
                 "reply": reply[:60], "extracted": extracted, "verdict": verdict}
            )  # fmt: skip
    return rows


def _wrong_answer(task) -> str:
    from workbench.tasks.verify import parse_number

    options = task.meta.get("options") or task.meta.get("labels")
    if task.verifier == "choice" and options:
        letters = [chr(ord("A") + i) for i in range(len(options))]
        return next(x for x in letters if x != task.answer)
    if task.verifier == "exact" and task.answer in ("True", "False"):
        return "False" if task.answer == "True" else "True"
    value = parse_number(task.answer) if task.verifier == "numeric" else None
    return str(value + 1) if value is not None else "\\frac{1}{7}"


def jsonl_examples(folder: str | Path) -> list[dict[str, Any]]:
    """Write a small JSONL with one good file and one with a bad row, load it both ways, and
    return what happened: the items, the one-line error, and the skipped-and-counted row."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.jsonl"
    good.write_text('{"q": "What is 2 + 2?", "a": 4}\n{"q": "What is 10 - 3?", "a": "7"}\n')
    bad = folder / "bad.jsonl"
    bad.write_text(
        '{"q": "What is 2 + 2?", "a": 4}\n{"q": "What is 5 + 5?"}\n{"q": "What is 1 + 1?", "a": 2}\n'
    )
    rows = []
    for path, mode in ((good, "error"), (bad, "error"), (bad, "skip")):
        cfg = TaskConfig.from_flat(
            {
                "name": f"jsonl:{path}",
                "limit": 10,
                "question_field": "q",
                "answer_field": "a",
                "on_bad_row": mode,
            }
        )
        try:
            loaded = load_tasks(cfg)
            rows.append(
                {"file": path.name, "on_bad_row": mode, "items": len(loaded.tasks),
                 "first": loaded.tasks[0].prompt, "message": "; ".join(loaded.skipped) or "ok"}
            )  # fmt: skip
        except (TaskError, ConfigError) as e:
            rows.append({"file": path.name, "on_bad_row": mode, "items": 0, "first": "", "message": str(e)})
    return rows


def preset_accuracy(
    backend, presets: dict[str, dict[str, Any]] | None = None, limit: int = 50, split: str = "dev", **kw: Any
) -> list[dict[str, Any]]:
    """Greedy single-agent accuracy per arithmetic preset on ``split`` (a run folder each)."""
    from workbench.evaluate import EvalConfig, run_eval

    rows = []
    for name, options in (presets or ARITHMETIC_PRESETS).items():
        cfg = EvalConfig.build(
            {"task": dict(options)}, task="arithmetic", protocol="single", split=split, limit=limit, **kw
        )
        s = run_eval(cfg, backend=backend, progress=False).summary
        rows.append(
            {"preset": name, "options": " ".join(f"task.{k}={v}" for k, v in options.items()) or "(none)",
             "n": s["n"], "accuracy": s["accuracy"], "ci95": s["ci95"], "format_failures": s["format_failures"]}
        )  # fmt: skip
    return rows


def preset_figure(rows: list[dict[str, Any]]):
    """Accuracy per preset with its 95% Wilson interval."""
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Bar(
            x=[r["preset"] for r in rows],
            y=[r["accuracy"] for r in rows],
            error_y=error_bars([r["accuracy"] for r in rows], [r["ci95"] for r in rows]),
            hovertext=[r["options"] for r in rows],
        )
    )
    n = rows[0]["n"] if rows else 0
    fig.update_layout(
        title=f"single-agent accuracy per arithmetic preset ({n} dev items each, 95% CI)",
        yaxis=dict(title="accuracy", range=[0, 1]),
        height=360,
    )
    return fig


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Rows as a fixed-width text table (what a notebook prints)."""
    if not rows:
        return "(nothing)"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _cell(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3f}"
    if isinstance(x, (list, tuple)) and all(isinstance(v, float) for v in x):
        return "[" + ", ".join(f"{v:.3f}" for v in x) + "]"
    return "" if x is None else str(x).replace("\n", " ")


__all__ = [
    "ARITHMETIC_PRESETS",
    "FAMILIES",
    "jsonl_examples",
    "preset_accuracy",
    "preset_figure",
    "split_table",
    "table",
    "verifier_examples",
]
