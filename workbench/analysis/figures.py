"""Plotly figures of an analysis (a run's analysis.json, or a comparison's): pure functions of the dict.

``run_figures(analysis)`` and ``comparison_figures(comparison)`` return ``{name: Figure}`` for what
the analysis holds; `workbench analyze` writes them as HTML (and PNG where kaleido can render) and
the viewer's Analysis view shows the same figures from the same analysis.json.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

BLUE, ORANGE, GREEN, RED, GREY = "#2563eb", "#d97706", "#16a34a", "#dc2626", "#6b7280"
LAYOUT = dict(plot_bgcolor="white", margin=dict(l=50, r=20, t=60, b=50), legend=dict(orientation="h", y=-0.2))


def _err(stat: dict) -> tuple[float | None, list[float], list[float]]:
    """(mean, [upper error], [lower error]) of a mean_ci dict, for error bars."""
    m = stat.get("mean")
    lo, hi = stat.get("ci95", [None, None])
    if m is None or lo is None:
        return m, [0.0], [0.0]
    return m, [hi - m], [m - lo]


def _bars(names: list[str], stats: list[dict], label: str, colour: str) -> go.Bar:
    means, up, down = [], [], []
    for s in stats:
        m, u, d = _err(s)
        means.append(m)
        up += u
        down += d
    return go.Bar(
        x=names, y=means, name=label, marker_color=colour,
        error_y=dict(type="data", array=up, arrayminus=down, visible=True),
    )  # fmt: skip


def _title(a: dict, what: str) -> str:
    return f"{what} · {a.get('protocol', '?')} on {a.get('task', '?')} ({a.get('n', '?')} episodes)"


def diversity_figure(a: dict) -> go.Figure | None:
    d = a.get("diversity") or {}
    per = d.get("per_round") or []
    if not per:
        return None
    metrics = [
        ("distinct_answers", "distinct answers"),
        ("entropy", "answer entropy (bits)"),
        ("distinct_2", "distinct-2"),
        ("semantic_distance", "semantic distance"),
    ]
    metrics = [(k, t) for k, t in metrics if k in per[0]]
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[t for _, t in metrics])
    rounds_ = [f"round {r['round']}" for r in per]
    for col, (key, title) in enumerate(metrics, 1):
        bar = _bars(rounds_, [r[key] for r in per], title, BLUE)
        bar.showlegend = False
        fig.add_trace(bar, row=1, col=col)
    fig.update_layout(
        title=_title(a, "Diversity of the pool per round (mean, 95% bootstrap CI)"), height=360, **LAYOUT
    )
    return fig


def coverage_figure(a: dict) -> go.Figure | None:
    c = a.get("coverage")
    if not c:
        return None
    rounds_ = [f"round {r['round']}" for r in c["per_round"]]
    fig = go.Figure()
    fig.add_trace(
        _bars(rounds_, [r["p"] for r in c["per_round"]], "coverage p (pool holds a correct answer)", BLUE)
    )
    fig.add_trace(
        _bars(
            rounds_, [r["q"] for r in c["per_round"]], "identification q (synthesis right | covered)", ORANGE
        )
    )
    lines = [
        (c["bound"], f"bound 1−(1−p̄q̄)^R = {c['bound']:.3f}", GREY),
        (c["success_any"]["mean"], f"some round right = {c['success_any']['mean']:.3f}", GREEN),
        (c["accuracy"]["mean"], f"final accuracy = {c['accuracy']['mean']:.3f}", RED),
    ]
    for y, text, colour in lines:
        if y is not None:
            fig.add_hline(
                y=y, line_dash="dash", line_color=colour, annotation_text=text, annotation_position="top left"
            )
    fig.update_layout(
        title=_title(a, "Coverage and identification"),
        yaxis=dict(range=[0, 1.05]),
        barmode="group",
        height=380,
        **LAYOUT,
    )
    return fig


def credit_figure(a: dict) -> go.Figure | None:
    cr = a.get("credit")
    if not cr or not cr.get("per_agent"):
        return None
    names = [p["agent"] for p in cr["per_agent"]]
    fig = go.Figure()
    fig.add_trace(_bars(names, [p["shapley"] for p in cr["per_agent"]], "Shapley φ", BLUE))
    fig.add_trace(_bars(names, [p["loo"] for p in cr["per_agent"]], "leave-one-out", ORANGE))
    how = "exact" if cr.get("exact") else "sampled permutations"
    spent = f"{cr['evaluations']} coalition values, {cr.get('new_generations', cr.get('generations', 0))} new generations"
    fig.update_layout(
        title=_title(a, f"Per-agent credit ({how}; {cr['episodes']} episodes; {spent})"),
        barmode="group",
        height=360,
        **LAYOUT,
    )
    return fig


def agents_right_figure(a: dict) -> go.Figure | None:
    rows = a.get("agents_right") or []
    if not rows:
        return None
    names = [f"{r['right']}/{r['of']} right (n={r['n']})" for r in rows]
    fig = go.Figure(_bars(names, rows, "final accuracy", GREEN))
    fig.update_layout(
        title=_title(a, "Accuracy by how many first-round agents were right"),
        yaxis=dict(range=[0, 1.05]),
        height=340,
        **LAYOUT,
    )
    return fig


def conductor_figure(a: dict) -> go.Figure | None:
    c = a.get("conductor")
    if not c or not c.get("workers_by_position"):
        return None
    z = [row["counts"] for row in c["workers_by_position"]]
    fig = make_subplots(
        rows=1, cols=3, subplot_titles=["worker per step position", "workflow length", "step accuracy"]
    )
    fig.add_trace(
        go.Heatmap(
            z=z, x=[f"Model {w}" for w in range(len(z[0]))], y=[f"step {r['position']}" for r in c["workers_by_position"]],
            colorscale="Blues", showscale=False, text=z, texttemplate="%{text}",
        ), row=1, col=1,
    )  # fmt: skip
    fig.add_trace(
        go.Bar(x=list(c["length"]), y=list(c["length"].values()), marker_color=BLUE, showlegend=False),
        row=1,
        col=2,
    )
    step = _bars(
        [f"step {s['position']}" for s in c["per_step"]],
        [s["accuracy"] for s in c["per_step"]],
        "step accuracy",
        GREEN,
    )
    step.showlegend = False
    fig.add_trace(step, row=1, col=3)
    fig.update_layout(
        title=_title(a, f"Conductor workflows (format failures {c['format_failures']}/{c['episodes']})"),
        height=360,
        **LAYOUT,
    )
    return fig


PALETTE = [BLUE, ORANGE, GREEN, RED, "#7c3aed", "#0891b2", "#db2777", "#65a30d", GREY, "#92400e"]


def routing_figure(a: dict) -> go.Figure | None:
    """The Conductor's routing per task family and phase (before / after training, or the run):
    stacked shares of steps per worker, of the answering step's worker, and of access-list shapes,
    and the mean length of the first workflow."""
    rows = [r for r in (a.get("routing") or {}).get("rows") or [] if r.get("planned")]
    if not rows:
        return None
    x = [f"{r['family']} · {r['phase']} (n={r['episodes']})" for r in rows]
    fig = make_subplots(
        rows=1,
        cols=4,
        subplot_titles=[
            "share of steps per worker",
            "worker of the answering step",
            "access-list shape",
            "mean steps",
        ],
    )
    workers = sorted({w for r in rows for key in ("worker_share", "final_worker") for w in r[key]})
    colour = {w: PALETTE[i % len(PALETTE)] for i, w in enumerate(workers)}
    for col, key in ((1, "worker_share"), (2, "final_worker")):
        for w in workers:
            fig.add_trace(
                go.Bar(
                    x=x, y=[r[key].get(w, 0.0) for r in rows], name=w, marker_color=colour[w],
                    legendgroup=w, showlegend=col == 1,
                ), row=1, col=col,
            )  # fmt: skip
    shapes = list(dict.fromkeys(s for r in rows for s in r["access"]))
    for i, shape in enumerate(shapes):
        fig.add_trace(
            go.Bar(
                x=x, y=[r["access"].get(shape, 0) / r["planned"] for r in rows], name=f"access {shape}",
                marker_color=PALETTE[-1 - i % len(PALETTE)], marker_pattern_shape="/", showlegend=True,
            ), row=1, col=3,
        )  # fmt: skip
    fig.add_trace(
        go.Bar(x=x, y=[r["mean_length"] for r in rows], marker_color=GREY, showlegend=False), row=1, col=4
    )
    fig.update_layout(
        title=_title(a, "Conductor routing per task family (shares of planned episodes)"),
        barmode="stack",
        height=420,
        **LAYOUT,
    )
    return fig


def train_step_figure(a: dict) -> go.Figure | None:
    rows = a.get("coverage_by_train_step") or (a.get("conductor") or {}).get("by_train_step")
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig = go.Figure()
    for key, colour in (
        ("accuracy", RED),
        ("p", BLUE),
        ("q", ORANGE),
        ("bound", GREY),
        ("format_failure_rate", GREY),
    ):
        if any(key in r for r in rows):
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=[r.get(key) for r in rows],
                    name=key,
                    mode="lines+markers",
                    line=dict(color=colour),
                )
            )
    fig.update_layout(
        title=_title(a, "Over training steps"),
        xaxis=dict(title="training step"),
        yaxis=dict(range=[0, 1.05]),
        height=340,
        **LAYOUT,
    )
    return fig


def rationale_figure(a: dict) -> go.Figure | None:
    r = a.get("rationale")
    if not r:
        return None
    names = ["AUC (ℓ correct > ℓ wrong)", "top-1 ℓ is correct", "chance top-1", "central's decision right"]
    stats = [r["auc"], r["top1"], r["chance"], r["decision_accuracy"]]
    fig = go.Figure(_bars(names, stats, "", BLUE))
    fig.update_layout(
        title=_title(a, f"Decision vs rationale ({r['slates']} mixed slates, {r['model']})"),
        yaxis=dict(range=[0, 1.05]),
        height=340,
        **LAYOUT,
    )
    return fig


RUN_FIGURES = {
    "diversity": diversity_figure,
    "coverage": coverage_figure,
    "credit": credit_figure,
    "agents_right": agents_right_figure,
    "conductor": conductor_figure,
    "routing": routing_figure,
    "train_steps": train_step_figure,
    "rationale": rationale_figure,
}


def run_figures(a: dict[str, Any]) -> dict[str, go.Figure]:
    """Every figure the run's analysis supports, by name."""
    out = {}
    for name, make in RUN_FIGURES.items():
        fig = make(a)
        if fig is not None:
            out[name] = fig
    return out


def comparison_figures(c: dict[str, Any]) -> dict[str, go.Figure]:
    """Accuracy per run with CIs, coverage vs single-agent accuracy, and diversity per round by protocol."""
    out: dict[str, go.Figure] = {}
    runs = c.get("runs") or []
    if runs:
        fig = go.Figure(_bars([r["label"] for r in runs], [r["accuracy"] for r in runs], "accuracy", BLUE))
        cov = [r for r in runs if r.get("p_first") is not None]
        if cov:
            fig.add_trace(
                go.Scatter(
                    x=[r["label"] for r in cov],
                    y=[r["p_first"] for r in cov],
                    mode="markers",
                    name="first-round coverage p₁",
                    marker=dict(color=ORANGE, size=12, symbol="diamond"),
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=[r["label"] for r in cov],
                    y=[r["q_mean"] for r in cov],
                    mode="markers",
                    name="identification q̄",
                    marker=dict(color=GREEN, size=12, symbol="x"),
                )
            )
        for r in runs:
            if r["protocol"] == "single":
                fig.add_hline(
                    y=r["accuracy"]["mean"],
                    line_dash="dot",
                    line_color=GREY,
                    annotation_text=f"single: {r['accuracy']['mean']:.3f}",
                )
                break
        fig.update_layout(
            title="Accuracy (95% bootstrap CI), coverage and identification per run",
            yaxis=dict(range=[0, 1.05]),
            height=420,
            **LAYOUT,
        )
        out["accuracy"] = fig
    div = [r for r in runs if r.get("diversity_per_round")]
    if div:
        fig = make_subplots(
            rows=1, cols=3, subplot_titles=["distinct answers", "answer entropy (bits)", "semantic distance"]
        )
        for r in div:
            xs = [f"round {x['round']}" for x in r["diversity_per_round"]]
            for col, key in enumerate(("distinct_answers", "entropy", "semantic_distance"), 1):
                ys = [(x.get(key) or {}).get("mean") for x in r["diversity_per_round"]]
                fig.add_trace(
                    go.Scatter(
                        x=xs,
                        y=ys,
                        name=r["label"],
                        mode="lines+markers",
                        legendgroup=r["label"],
                        showlegend=col == 1,
                    ),
                    row=1,
                    col=col,
                )
        fig.update_layout(
            title="Diversity per round, by run (premature consensus: falling lines)", height=380, **LAYOUT
        )
        out["diversity"] = fig
    return out
