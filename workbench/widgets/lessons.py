"""Small helpers the analysis notebooks (06, 07) call: fallback runs, and the analysis as tables."""

from __future__ import annotations

from typing import Any


def small_comparison(model: str, protocols: str, limit: int, max_tokens: int, backend=None) -> list[str]:
    """``protocols`` on ``limit`` arithmetic items at matched generations (seed 0): the run folders."""
    from workbench.compare import CompareConfig, run_compare

    if backend is None:
        from workbench.models import load_backend

        backend = load_backend(model)
    options: dict[str, Any] = {p: {"max_tokens": max_tokens} for p in protocols.split(",")}
    if "leader" in options:
        options["leader"]["leader_max_tokens"] = max_tokens
    cmp = CompareConfig.build(
        {"options": options},
        task="arithmetic",
        protocols=protocols,
        limit=limit,
        match="generations",
        model=model,
    )
    result = run_compare(cmp, backend=backend, progress=False)
    return [row["run_dirs"][0] for row in result.rows]


def consensus_table(analysis: dict[str, Any]) -> str:
    """Premature consensus per multi-round run (docs/analysis.md, "Diversity")."""
    lines = [
        f"{'run':<14} {'collapse':>9} {'wrong consensus':>16} {'lost coverage':>14}  distinct answers first → last"
    ]
    for a in analysis["runs"]:
        c = (a.get("diversity") or {}).get("consensus")
        if c:
            lines.append(
                f"{a['protocol']:<14} {_num(c['collapse_rate']):>9} {_num(c['wrong_consensus_rate']):>16} "
                f"{_num(c['lost_coverage_rate']):>14}  {c['distinct_first_to_last']}"
            )
    return "\n".join(lines) if len(lines) > 1 else "no multi-round run: nothing can collapse"


def credit_table(analysis: dict[str, Any]) -> str:
    """How many coalitions each run's credit valued and how many new generations the replays cost."""
    lines = []
    for a in analysis["runs"]:
        cr = a.get("credit") or {}
        lines.append(
            f"{a['protocol']}: coalitions valued {cr.get('evaluations')}, new generations {cr.get('new_generations', 0)}"
        )
    return "\n".join(lines)


def overrides_table(analysis: dict[str, Any]) -> str:
    lines = [f"{a['protocol']}: {a['overrides']}" for a in analysis["runs"] if a.get("overrides")]
    return "\n".join(lines) or "no run has a model synthesiser that could override its pool"


def show_run_figures(analysis: dict[str, Any], names: tuple[str, ...]) -> None:
    """Each run's figures among ``names`` (those its analysis has), in order."""
    from workbench.analysis.figures import run_figures

    for a in analysis["runs"]:
        figs = run_figures(a)
        for name in names:
            if name in figs:
                figs[name].show()


def _num(x: Any) -> str:
    return "–" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)
