"""`workbench analyze RUN [RUN ...]`: every analysis of a run, written next to it; runs compared.

Per run folder it writes

    analysis.json     diversity, coverage/identification, per-agent credit, accuracy by agents
                      right, overrides, conductor workflows and routing (per task family, before
                      vs after training: analysis/routing.py), decision vs rationale, training steps
    analysis.html     the figures (workbench/analysis/figures.py), plotly.js embedded: opens offline
    figures/*.png     the same figures as pictures, when kaleido can find a Chromium to render them
    replay_cache.jsonl  replies of counterfactual replays (only with a model), reused next time

and with several runs a comparison folder (``out``) with ``comparison.json``/``comparison.html``:
accuracy with bootstrap CIs, paired tests on shared items (exact McNemar and paired bootstrap),
seed aggregation per (task, protocol), first-round coverage next to single-agent accuracy, and the
Conductor's routing of each run side by side (``routing``: an untrained vs a trained conductor).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.analysis import coverage as cov
from workbench.analysis import credit
from workbench.analysis.conductor import conductor_analysis
from workbench.analysis.diversity import Embedder, run_diversity
from workbench.analysis.pools import Judge, rounds
from workbench.analysis.routing import routing_analysis
from workbench.analysis.stats import mean_ci, paired_bootstrap, paired_outcomes, seed_aggregate
from workbench.config import ConfigError
from workbench.runs import atomic_write, read_config, read_episodes

ANALYSIS_FILE = "analysis.json"


@dataclass
class AnalyzeOptions:
    embed: bool = True  # semantic diversity with sentence embeddings
    embed_model: str = "bundled"  # "bundled" (offline MiniLM) or a sentence-transformers name
    replay_limit: int = (
        0  # episodes per run whose synthesiser is replayed for credit (0: none; needs a backend)
    )
    max_exact: int = 5  # exact Shapley up to this many agents; sampled permutations beyond
    permutations: int = 64  # sampled permutations per episode beyond max_exact
    rationale_limit: int = 0  # maestro slates scored for decision vs rationale (0: none; needs a backend)
    png: bool = True  # also write PNG pictures of the figures (needs kaleido + Chromium)
    problems: list[str] = field(default_factory=list)


def _run_meta(run_dir: Path) -> dict[str, Any]:
    cfg = read_config(run_dir / "config.yaml") or {}
    section = lambda key: cfg[key] if isinstance(cfg.get(key), dict) else {}  # noqa: E731
    name = lambda key, default: str(section(key).get("name", default))  # noqa: E731
    seed = cfg.get("seed", 0)
    return {
        "task": name("task", "?"),
        "protocol": name("protocol", "?"),
        "seed": seed if isinstance(seed, int) and not isinstance(seed, bool) else 0,
        "model": section("model").get("name") if isinstance(section("model").get("name"), str) else None,
    }


def analyze_run(
    run_dir: str | Path,
    options: AnalyzeOptions | None = None,
    embedder: Embedder | None = None,
    backend=None,
    write: bool = True,
) -> dict[str, Any]:
    """All analyses of one run folder (see the module doc); written to ``run_dir`` when ``write``."""
    opts = options or AnalyzeOptions()
    run_dir = Path(run_dir)
    read = read_episodes(run_dir)
    if not read.episodes:
        raise ConfigError(
            f"{run_dir}: no episodes to analyse ({'; '.join(read.problems) or 'empty episodes.jsonl'})"
        )
    eps = read.episodes
    meta = _run_meta(run_dir)
    protocol = meta["protocol"] if meta["protocol"] != "?" else eps[0]["protocol"]
    judge = Judge.for_run(run_dir)
    ep_rounds = [rounds(e, judge) for e in eps]
    finals = [bool(e["correct"]) for e in eps]
    if opts.embed and embedder is None:
        embedder = Embedder(opts.embed_model)
    a: dict[str, Any] = {
        "schema": "workbench.analysis/1",
        "run": str(run_dir),
        **meta,
        "protocol": protocol,
        "n": len(eps),
        "accuracy": mean_ci([float(f) for f in finals]),
        "format_failures": sum(e["format_failure"] for e in eps),
        "problems": list(read.problems),
    }
    if any(len(r.candidates) > 1 for rs in ep_rounds for r in rs):  # a pool of one has no diversity
        a["diversity"] = run_diversity(ep_rounds, finals, embedder if opts.embed else None)
        a["coverage"] = cov.coverage_identification(ep_rounds, finals)
        a["coverage_by_train_step"] = cov.by_train_step(eps, ep_rounds)
        a["agents_right"] = credit.accuracy_by_agents_right(ep_rounds, finals) if protocol != "single" else []
        a["overrides"] = credit.overrides(ep_rounds)
    if protocol in ("vote", "debate"):
        a["credit"] = credit.majority_credit(eps, ep_rounds, judge, opts.max_exact, opts.permutations)
    elif protocol in ("maestro", "maestro_gen", "leader", "moa") and opts.replay_limit > 0:
        if backend is None:
            a["problems"].append("credit by replay was asked for but no model was given; skipped")
        else:
            from workbench.analysis.replay import replay_credit

            a["credit"] = replay_credit(
                run_dir, eps, backend, judge, opts.replay_limit, opts.max_exact, opts.permutations,
                cache_path=run_dir / "replay_cache.jsonl",
            )  # fmt: skip
    if protocol == "conductor":
        a["conductor"] = conductor_analysis(eps, judge)
        a["routing"] = routing_analysis(eps, meta["task"])  # per family, before vs after training
    if protocol == "maestro" and opts.rationale_limit > 0 and backend is not None:
        from workbench.analysis.rationale import rationale_analysis

        a["rationale"] = rationale_analysis(run_dir, eps, backend, judge, opts.rationale_limit)
    if write:
        atomic_write(run_dir / ANALYSIS_FILE, json.dumps(a, indent=1, default=_json_default) + "\n")
        write_figures(run_dir, "analysis", _figures(a, run=True), opts)
    return a


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):  # numpy scalars
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _figures(a: dict, run: bool) -> dict:
    from workbench.analysis.figures import comparison_figures, run_figures

    return run_figures(a) if run else comparison_figures(a)


def write_figures(folder: Path, stem: str, figs: dict, opts: AnalyzeOptions) -> list[str]:
    """``<stem>.html`` with every figure (plotly.js embedded once) and, if possible, ``figures/NAME.png``."""
    written = []
    parts = []
    for i, (_name, fig) in enumerate(figs.items()):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    html = "<!doctype html><html><head><meta charset='utf-8'><title>workbench analysis</title></head><body>"
    html += "\n".join(parts) or "<p>No figure: this run has nothing these analyses apply to.</p>"
    atomic_write(folder / f"{stem}.html", html + "</body></html>\n")
    written.append(str(folder / f"{stem}.html"))
    if opts.png and figs:
        (folder / "figures").mkdir(exist_ok=True)
        for name, fig in figs.items():
            try:
                fig.write_image(
                    folder / "figures" / f"{stem}-{name}.png", width=1100, height=fig.layout.height or 400
                )
            except Exception as e:  # kaleido missing, or no Chromium for it to drive: HTML is enough
                msg = f"PNG export skipped ({type(e).__name__}: {str(e).splitlines()[0][:160]}); the HTML has every figure"
                opts.problems.append(msg)
                print(f"workbench analyze: {msg}", file=sys.stderr)
                break
            written.append(str(folder / "figures" / f"{stem}-{name}.png"))
    return written


# ---- several runs ----
def compare_analyses(analyses: list[dict], episodes: dict[str, list[dict]]) -> dict[str, Any]:
    """Paired tests on shared items, seed aggregation, coverage next to single-agent accuracy."""
    labels = {}
    for a in analyses:
        label = f"{a['protocol']}·s{a.get('seed', 0)}"
        k = 2
        while label in labels.values():
            label = f"{a['protocol']}·s{a.get('seed', 0)}#{k}"
            k += 1
        labels[a["run"]] = label
    runs = []
    for a in analyses:
        c = a.get("coverage") or {}
        per = c.get("per_round") or []
        runs.append(
            {
                "run": a["run"], "label": labels[a["run"]], "task": a["task"], "protocol": a["protocol"],
                "seed": a.get("seed", 0), "n": a["n"], "accuracy": a["accuracy"],
                "p_first": per[0]["p"]["mean"] if per else None, "q_mean": c.get("q_mean"),
                "bound": c.get("bound"), "success_any": (c.get("success_any") or {}).get("mean"),
                "diversity_per_round": (a.get("diversity") or {}).get("per_round"),
                "collapse_rate": ((a.get("diversity") or {}).get("consensus") or {}).get("collapse_rate"),
            }
        )  # fmt: skip
    paired = []
    for i, a in enumerate(analyses):
        for b in analyses[i + 1 :]:
            ea, eb = episodes[a["run"]], episodes[b["run"]]
            po = paired_outcomes(ea, eb)
            if po["n_paired"] == 0:
                continue
            pb = paired_bootstrap(
                {e["task_id"]: float(e["correct"]) for e in ea},
                {e["task_id"]: float(e["correct"]) for e in eb},
            )
            paired.append({"a": labels[a["run"]], "b": labels[b["run"]], **po, "paired_bootstrap": pb})
    seeds = _seed_rows(analyses, labels)
    singles = {a["task"]: a["accuracy"]["mean"] for a in analyses if a["protocol"] == "single"}
    return {
        "schema": "workbench.analysis-comparison/1",
        "runs": runs,
        "paired": paired,
        "seeds": seeds,
        "routing": [
            {"label": labels[a["run"]], "rows": a["routing"]["rows"]} for a in analyses if a.get("routing")
        ],
        "coverage_vs_single": [
            {
                "label": r["label"],
                "p_first": r["p_first"],
                "q_mean": r["q_mean"],
                "accuracy": r["accuracy"]["mean"],
                "single_accuracy": singles.get(r["task"]),
            }
            for r in runs
            if r["p_first"] is not None
        ],  # fmt: skip
    }


def _seed_rows(analyses: list[dict], labels: dict[str, str]) -> list[dict[str, Any]]:
    """Seed aggregation: only runs whose configs differ in nothing but the seed are pooled
    (workbench/analysis/seeds.py); each group says which runs it pooled and, where one (task,
    protocol) has several groups, in what its config differs from the first group's."""
    from workbench.analysis.seeds import config_key, differences, seed_groups

    configs = [read_config(Path(a["run"]) / "config.yaml") for a in analyses]
    rows = []
    for group in seed_groups(configs):
        a0 = analyses[group[0]]
        first = next(
            i for i, a in enumerate(analyses) if (a["task"], a["protocol"]) == (a0["task"], a0["protocol"])
        )
        rows.append(
            {
                "task": a0["task"], "protocol": a0["protocol"], "config": config_key(configs[group[0]]),
                "runs": [labels[analyses[i]["run"]] for i in group],
                "differs_from_first": differences(configs[first], configs[group[0]]) if first not in group else [],
                **seed_aggregate([analyses[i]["accuracy"]["mean"] for i in group]),
            }
        )  # fmt: skip
    return sorted(rows, key=lambda r: (r["task"], r["protocol"], r["config"]))


def analyze(
    run_dirs: list[str | Path],
    out: str | Path | None = None,
    options: AnalyzeOptions | None = None,
    backend=None,
) -> dict[str, Any]:
    """Analyse each run (writing into it) and, for several, write the comparison into ``out``."""
    opts = options or AnalyzeOptions()
    paths = [Path(p) for p in run_dirs]
    for p in paths:
        if not (p / "episodes.jsonl").is_file():
            raise ConfigError(
                f"{p}: not a run folder (no episodes.jsonl); pass folders written by eval/compare"
            )
    embedder = Embedder(opts.embed_model) if opts.embed else None
    analyses, episodes = [], {}
    for p in paths:
        a = analyze_run(p, opts, embedder, backend)
        analyses.append(a)
        episodes[a["run"]] = read_episodes(p).episodes
    result: dict[str, Any] = {"runs": analyses}
    if len(paths) > 1:
        comp = compare_analyses(analyses, episodes)
        folder = Path(out) if out else _common_parent(paths) / "analysis"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "comparison.json", json.dumps(comp, indent=1, default=_json_default) + "\n")
        write_figures(folder, "comparison", _figures(comp, run=False), opts)
        result["comparison"] = comp
        result["comparison_dir"] = str(folder)
    result["embedded_texts"] = embedder.encoded if embedder is not None else 0
    result["problems"] = list(dict.fromkeys(opts.problems))
    return result


def _common_parent(paths: list[Path]) -> Path:
    parts = [p.resolve().parent.parts for p in paths]
    common = []
    for xs in zip(*parts, strict=False):
        if len(set(xs)) != 1:
            break
        common.append(xs[0])
    return Path(*common) if common else Path(".")


def summary_table(result: dict[str, Any]) -> str:
    """A plain-text table of the headline numbers of each analysed run."""
    head = f"{'run':44} {'acc':>6} {'p1':>6} {'q':>6} {'bound':>6} {'D1':>5} {'Dlast':>6} {'H1':>5} {'sem1':>6} {'collapse':>8}"
    lines = [head]
    for a in result["runs"]:
        c = a.get("coverage") or {}
        d = (a.get("diversity") or {}).get("per_round") or []

        def f(x, w=6):
            return f"{x:>{w}.3f}" if isinstance(x, int | float) else f"{'–':>{w}}"

        p1 = c["per_round"][0]["p"]["mean"] if c.get("per_round") else None
        d1 = d[0]["distinct_answers"]["mean"] if d else None
        dl = d[-1]["distinct_answers"]["mean"] if d else None
        h1 = d[0]["entropy"]["mean"] if d else None
        s1 = (d[0].get("semantic_distance") or {}).get("mean") if d else None
        col = ((a.get("diversity") or {}).get("consensus") or {}).get("collapse_rate")
        name = str(a["run"])[-44:]
        lines.append(
            f"{name:44} {f(a['accuracy']['mean'])} {f(p1)} {f(c.get('q_mean'))} {f(c.get('bound'))} "
            f"{f(d1, 5)} {f(dl)} {f(h1, 5)} {f(s1)} {f(col, 8)}"
        )
    return "\n".join(lines)
