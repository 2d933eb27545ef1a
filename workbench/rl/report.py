"""Reading a training run back: metrics, learning curves (plotly), the before/after table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.runs import read_jsonl
from workbench.stats import error_bars

CURVES = (
    ("reward", "reward (mean over samples)"),
    ("accuracy", "trained role right"),
    ("identification", "identification q (maestro)"),
    ("format_failure_rate", "format failures"),
    ("frac_reward_zero_std", "groups with zero reward std"),
    ("entropy", "entropy (nats/token)"),
    ("completion_length", "completion tokens"),
    ("grad_norm", "grad norm (before clipping)"),
    ("loss", "loss (warm-start SFT, then the RL objective)"),
)


def _check_row(row: dict[str, Any]) -> None:
    step = row.get("step")
    if not isinstance(step, int) or isinstance(step, bool):
        raise ValueError("a row without an integer 'step'")
    bad = [k for k, _ in CURVES if row.get(k) is not None and not _is_number(row[k])]
    if bad:
        raise ValueError(f"'{bad[0]}' is not a number")


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _check_eval(row: dict[str, Any]) -> None:
    _check_row(row)
    ci = row.get("ci95")
    if not _is_number(row.get("accuracy")) or not (
        isinstance(ci, list) and len(ci) == 2 and all(_is_number(c) for c in ci)
    ):
        raise ValueError("an evaluation row needs a numeric 'accuracy' and 'ci95' [lo, hi]")


def read_metrics(run_dir: str | Path, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """metrics.jsonl as a list of rows; a torn or malformed line is skipped (and named in
    ``problems`` when given)."""
    read = read_jsonl(Path(run_dir) / "metrics.jsonl", check=_check_row, missing_ok=True)
    if problems is not None:
        problems += read.problems
    return read.rows


def read_evals(run_dir: str | Path, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """evals.jsonl as a list of rows (malformed lines skipped, as in read_metrics)."""
    read = read_jsonl(Path(run_dir) / "evals.jsonl", check=_check_eval, missing_ok=True)
    if problems is not None:
        problems += read.problems
    return read.rows


def curves_figure(run_dir: str | Path, smooth: int = 5):
    """Learning curves: one panel per metric (raw steps faint, a moving average bold), plus the
    dev-split accuracy of each evaluation with its 95% CI."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = read_metrics(run_dir)
    panels = [(k, t) for k, t in CURVES if any(r.get(k) is not None for r in rows)]
    evals = read_evals(run_dir)
    titles = [t for _, t in panels] + (["dev accuracy (protocol, fixed budget)"] if evals else [])
    cols = 3
    nrows = max(1, -(-len(titles) // cols))
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=titles)
    for i, (key, _) in enumerate(panels):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        avg = [
            sum(ys[max(0, j - smooth + 1) : j + 1]) / len(ys[max(0, j - smooth + 1) : j + 1])
            for j in range(len(ys))
        ]
        r, c = i // cols + 1, i % cols + 1
        fig.add_trace(
            go.Scatter(x=xs, y=ys, mode="lines", line=dict(width=1, color="#9bb"), showlegend=False), r, c
        )
        fig.add_trace(
            go.Scatter(
                x=xs, y=avg, mode="lines", line=dict(width=2.5, color="#136"), name=key, showlegend=False
            ),
            r,
            c,
        )
    if evals:
        i = len(panels)
        r, c = i // cols + 1, i % cols + 1
        fig.add_trace(
            go.Scatter(
                x=[e["step"] for e in evals],
                y=[e["accuracy"] for e in evals],
                error_y=error_bars([e["accuracy"] for e in evals], [e["ci95"] for e in evals]),
                mode="lines+markers",
                line=dict(color="#c40"),
                showlegend=False,
            ),
            r,
            c,
        )
    fig.update_layout(height=260 * nrows, margin=dict(l=40, r=20, t=50, b=30), title=str(Path(run_dir).name))
    return fig


def _row(name: str, e: dict[str, Any], lenient: bool) -> str:
    row = (
        f"{name:<10}{e['accuracy']:.3f}      [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]    "
        f"{e['format_failures']:<15}"
    )
    return (row + f"   {e.get('lenient_decisions', '-')}" if lenient else row).rstrip()


def format_summary(summary: dict[str, Any]) -> str:
    """The before/after table of a finished run, with the paired test."""
    b, a, p = summary["before"], summary["after"], summary["after_vs_before"]
    # Maestro: decisions without a well-formed <choice> that evaluation read leniently
    lenient = summary["recipe"] == "maestro"
    lines = [
        f"{summary['recipe']}: {summary['objective']}, {summary['rollout']} rollouts, {summary['steps']} steps"
        + (f" after {summary['warm_start']} warm-start SFT steps" if summary.get("warm_start") else ""),
        f"dev split, {a['n']} items, {a['generations_per_query']} generations/query, "
        f"~{a['tokens_per_query']:.0f} tokens/query (same protocol and budget before and after)",
        "",
        "          accuracy   95% CI            format failures" + ("   read leniently" if lenient else ""),
        _row("before", b, lenient),
        *(
            [_row("warm", w, lenient) + f"   (after {summary['warm_start']} warm-start SFT steps)"]
            if (w := summary.get("after_warm_start"))
            else []
        ),
        _row("after", a, lenient),
        "",
        f"paired: right only after {p['only_a_right']}, only before {p['only_b_right']}, "
        f"both {p['both_right']}, neither {p['neither']}; exact McNemar p = {p['mcnemar_p']}",
    ]
    return "\n".join(lines)
