"""Compare protocols at matched budgets on the same items: the path behind `workbench compare`.

    cmp = CompareConfig.build(task="arithmetic", protocols="single,vote,maestro", limit=50)
    result = run_compare(cmp)        # one run folder per (protocol, seed) + comparison.json
    print(result.table)

How budgets are matched (``match``):

* ``generations`` (default): the reference protocol (``reference``; default ``maestro`` when it is
  compared, else the protocol with the most generations at its defaults) sets the target number
  of generations per query. Every other protocol's size options are chosen by its ``match``
  function (vote: n; reflect: k; debate: agents at fixed rounds; moa: proposers per layer;
  maestro: explorers × samples at fixed rounds; leader: rounds at fixed peers). The conductor
  writes its own workflow: its steps are capped so that the worst case fits the target, and
  every conductor episode also gets ``budget.max_calls = target``. `single` is fixed at one
  generation and stays the unmatched floor. A protocol that cannot get within ``tolerance`` of
  the target is marked unmatched in the table.
* ``tokens``: as above, then a pilot on ``pilot_items`` items of the **dev** split (never test)
  measures each protocol's tokens per query (prompt + completion); each protocol's generation
  target is rescaled so that its estimated tokens per query equal the reference's, and the
  table reports the measured deviation.
* ``none``: every protocol at its own configured size (the table still states each budget).

Every protocol runs on the same items with the same seeds; the table reports accuracy with a
Wilson 95% CI over all (item, seed) episodes, generations, prompt and completion tokens and
wall time per query, format failures, and the exact McNemar test against the reference
(paired by item, first seed).
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from workbench.config import ConfigError, _show, from_dict, to_dict
from workbench.episode import Episode
from workbench.evaluate import EvalConfig, EvalResult, ModelConfig, ProtocolConfig, run_eval
from workbench.protocols import PROTOCOLS, Budget
from workbench.run_config import SHARED, PoolMixin, apply_flags, build_shared, check_roles, shortcut_flags
from workbench.runs import (
    DirLock,
    atomic_write,
    claim_run_dir,
    default_root,
    manifest,
    read_config,
    read_episodes,
    read_json,
    write_json,
)
from workbench.stats import error_bars, paired_outcomes, wilson_ci
from workbench.tasks import TaskConfig, load_tasks

MATCH_MODES = ("generations", "tokens", "none")


ENTRY_RE = re.compile(r"^([a-z_]+)(?:@([A-Za-z0-9][A-Za-z0-9_-]{0,39}))?$")
COMPARE_FLAGS = {  # keyword shortcut of CompareConfig.build -> (dotted key, command-line flag)
    "task": ("task.name", "--task"),
    "limit": ("task.limit", "--limit"),
    "split": ("task.split", "--split"),
    "model": ("model.name", "--model"),
    "protocols": ("protocols", "--protocols"),
    "match": ("match", "--match"),
    "reference": ("reference", "--reference"),
    "seeds": ("seeds", "--seeds"),
    "max_in_flight": ("max_in_flight", "--max-in-flight"),
    "out": ("out", "--out"),
}


def protocol_of(entry: str) -> str:
    """The protocol of a compared entry: ``conductor@trained`` -> ``conductor``."""
    return entry.partition("@")[0]


@dataclass(frozen=True)
class CompareConfig(PoolMixin):
    task: TaskConfig = field(default_factory=TaskConfig)
    # the compared entries: PROTOCOL or PROTOCOL@VARIANT (one protocol several times under different
    # options, e.g. conductor@trained,conductor@base); each entry's options: options.ENTRY.KEY
    protocols: tuple[str, ...] = ("single", "vote", "maestro")
    model: ModelConfig = field(default_factory=ModelConfig)  # the "default" model, as in eval
    models: dict[str, Any] = field(default_factory=dict)  # more models by name, as in eval
    team: dict[str, Any] = field(default_factory=dict)  # the team (worker pool), as in eval
    budget: Budget = field(default_factory=Budget)  # per-episode cap for every entry, as in eval
    # per-entry options before matching, e.g. {"maestro": {"rounds": 3}} (--set options.maestro.rounds=3)
    options: dict[str, Any] = field(default_factory=dict)
    match: str = "generations"  # generations | tokens | none
    reference: str = ""  # the entry whose budget the others match (default: maestro, else the largest)
    tolerance: float = 0.15  # relative budget difference still called matched
    seeds: tuple[int, ...] = (0,)  # sampling seeds; every protocol runs every seed on the same items
    pilot_items: int = 8  # tokens matching: dev-split items per protocol in the pilot
    max_in_flight: int = 256
    out: str = ""  # comparison folder (default runs/<time>-compare-<task>)

    def __post_init__(self) -> None:
        bad = [p for p in self.protocols if not ENTRY_RE.match(p) or protocol_of(p) not in PROTOCOLS]
        if bad or not self.protocols:
            raise ConfigError(
                f"unknown protocol(s) {', '.join(_show(p, 40) for p in bad) or '(none)'}; available: "
                f"{', '.join(PROTOCOLS)}, each optionally as PROTOCOL@VARIANT (e.g. conductor@trained)"
            )
        if len(set(self.protocols)) != len(self.protocols):
            raise ConfigError(
                f"protocols listed twice: {', '.join(self.protocols)}; "
                "name variants of one protocol apart (e.g. conductor@a,conductor@b)"
            )
        if self.match not in MATCH_MODES:
            raise ConfigError(f"match must be one of {', '.join(MATCH_MODES)}, got '{self.match}'")
        if self.reference and self.reference not in self.protocols:
            raise ConfigError(f"reference '{self.reference}' is not among the compared protocols")
        for name, opts in self.options.items():
            if name not in self.protocols:
                raise ConfigError(f"options.{name}: '{name}' is not among the compared protocols")
            if not isinstance(opts, dict):
                raise ConfigError(
                    f"options.{name} is a section; set its keys, e.g. --set options.{name}.KEY=VALUE"
                )
            try:
                ProtocolConfig(protocol_of(name), opts)  # validates the keys now
            except ConfigError as e:
                raise ConfigError(f"options.{name}: {e}") from None
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed (e.g. --seeds 0,1,2)")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds listed twice: {', '.join(map(str, self.seeds))}; list each seed once")
        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"tolerance must be in [0, 1), got {self.tolerance}")
        self._resolve_pool()
        team = self.build_team()
        for entry in self.protocols:
            check_roles(team, self.protocol_config(entry), where=f"options.{entry}")

    def protocol_config(self, entry: str) -> ProtocolConfig:
        """An entry's protocol at its configured options (before budget matching)."""
        return ProtocolConfig(protocol_of(entry), self.options.get(entry, {}))

    @classmethod
    def build(cls, overrides: dict[str, Any] | None = None, **top: Any) -> CompareConfig:
        """From keyword shortcuts (task=, limit=, split=, model=, protocols=, match=, reference=,
        seeds=, max_in_flight=, out=; None = not given) and nested overrides, as EvalConfig.build."""
        if isinstance(top.get("protocols"), str):
            top["protocols"] = [p.strip() for p in top["protocols"].split(",") if p.strip()]
        if isinstance(top.get("seeds"), int):
            top["seeds"] = [top["seeds"]]  # a string ("0,1,2") is split and checked by the loader
        data = apply_flags(overrides, shortcut_flags(top, COMPARE_FLAGS))
        if "protocol" in data:
            raise ConfigError(
                "compare has no 'protocol' section: set an entry's options with --set options.ENTRY.KEY=VALUE"
            )
        shared = build_shared(data)
        return _from_parts(cls, data, shared)

    @property
    def reference_protocol(self) -> str:
        if self.reference:
            return self.reference
        if "maestro" in self.protocols:
            return "maestro"
        return max(
            self.protocols,
            key=lambda p: PROTOCOLS[protocol_of(p)].generations(self.protocol_config(p).resolved),
        )


def _from_parts(cls, data: dict[str, Any], shared: dict[str, Any]) -> CompareConfig:
    """The CompareConfig of its own keys (strict loader) and the shared sections, built once."""
    names = [f.name for f in dataclasses.fields(_CompareOwn)]
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise ConfigError(
            f"unknown key '{_show(unknown[0])[1:-1]}'; valid keys here: {', '.join((*SHARED, *names))}"
        )
    own = from_dict(_CompareOwn, data)
    return cls(**shared, **{f.name: getattr(own, f.name) for f in dataclasses.fields(own)})


@dataclass(frozen=True)
class _CompareOwn:
    """CompareConfig's keys that are not shared sections, read by the strict loader."""

    protocols: tuple[str, ...] = ("single", "vote", "maestro")
    options: dict[str, Any] = field(default_factory=dict)
    match: str = "generations"
    reference: str = ""
    tolerance: float = 0.15
    seeds: tuple[int, ...] = (0,)
    pilot_items: int = 8
    max_in_flight: int = 256
    out: str = ""


@dataclass
class Plan:
    """How one protocol is sized for the comparison, and why."""

    protocol: str
    options: dict[str, Any]
    generations: int  # per query at these options (the most, for the conductor)
    target: int
    how: str  # the sentence that goes into the table's notes
    matched: bool
    max_calls: int | None = None  # a hard per-episode cap (the conductor)


def plan_generations(cmp: CompareConfig, targets: dict[str, int] | None = None) -> list[Plan]:
    """Size every entry to the reference's generations per query (or to ``targets[entry]``)."""
    ref = cmp.reference_protocol
    ref_gens = PROTOCOLS[protocol_of(ref)].generations(cmp.protocol_config(ref).resolved)
    plans = []
    for name in cmp.protocols:
        proto = protocol_of(name)
        spec, base = PROTOCOLS[proto], cmp.protocol_config(name)
        target = (targets or {}).get(name, ref_gens)
        if name == ref and not targets:
            plans.append(Plan(name, base.options, ref_gens, ref_gens, "reference", True))
            continue
        if cmp.match == "none":
            g = spec.generations(base.resolved)
            plans.append(Plan(name, base.options, g, ref_gens, "not matched (match=none)", g == ref_gens))
            continue
        if spec.match is None:
            g = spec.generations(base.resolved)
            plans.append(
                Plan(name, base.options, g, target, f"fixed at {g} generation(s): the unmatched floor", False)
            )
            continue
        sized = ProtocolConfig(proto, {**base.options, **spec.match(base.resolved, target)})
        g = spec.generations(sized.resolved)
        changed = {k: v for k, v in sized.options.items() if base.options.get(k) != v}
        knobs = ", ".join(f"{k}={v}" for k, v in changed.items()) or "defaults"
        if proto == "conductor":
            how = f"{knobs}: at most {g} generations (the plan decides), capped by budget.max_calls={target}"
            plans.append(Plan(name, sized.options, g, target, how, True, max_calls=target))
            continue
        ok = abs(g - target) <= cmp.tolerance * target
        how = f"{knobs} -> {g} generations" + (
            "" if ok else f" (UNMATCHED: outside {cmp.tolerance:.0%} of {target})"
        )
        plans.append(Plan(name, sized.options, g, target, how, ok))
    return plans


@dataclass
class CompareResult:
    out: Path
    rows: list[dict[str, Any]]
    table: str
    plans: list[Plan]


def _eval_config(cmp: CompareConfig, plan: Plan, seed: int, task: TaskConfig, out: Path) -> EvalConfig:
    """The eval run of one entry and seed: the comparison's shared sections, the entry's sized options."""
    budget = cmp.budget
    if plan.max_calls is not None:
        cap = plan.max_calls if budget.max_calls is None else min(plan.max_calls, budget.max_calls)
        budget = replace(budget, max_calls=cap)
    return EvalConfig(
        task=task,
        protocol=ProtocolConfig(protocol_of(plan.protocol), plan.options),
        model=cmp.model,
        models=cmp.models,
        team=cmp.team,
        budget=budget,
        seed=seed,
        max_in_flight=cmp.max_in_flight,
        out=str(out),
    )


def run_compare(
    cmp: CompareConfig,
    backend=None,
    runs_root: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
) -> CompareResult:
    """Plan the budgets, run every protocol × seed on the same items, write comparison.json.

    ``resume``: continue an interrupted comparison in ``cmp.out``: a protocol × seed run that
    finished with exactly the configuration it would get now is read back instead of re-run; an
    unfinished one is moved aside (``<dir>.unfinished-<time>``, nothing deleted) and run again;
    the same holds for the pilot runs of ``match=tokens``. The comparison folder is locked while
    a process writes it: a second compare (or resume) on it is refused.
    """
    tasks = load_tasks(cmp.task)
    root = Path(runs_root) if runs_root is not None else default_root()
    out = (
        Path(cmp.out)
        if cmp.out
        else root
        / f"{time.strftime('%Y%m%d-%H%M%S')}-compare-{cmp.task.name.replace(':', '_').replace('/', '_')}"
    )
    if out.exists() and any(out.iterdir()) and not resume:
        raise ConfigError(f"{out} already holds files; choose another --out, or --resume to continue it")
    backends = cmp.load_backends(backend)  # every model and tool worker of the team, loaded once
    if resume:
        out.mkdir(parents=True, exist_ok=True)
    else:
        out = claim_run_dir(out, fresh_name=not cmp.out)
    lock = DirLock(out, "comparison")
    try:
        write_json(
            out / "manifest.json",
            manifest(
                "compare",
                {"seeds": list(cmp.seeds), "task_seed": cmp.task.seed},
                {name: mc.name for name, mc in cmp.model_configs().items()},
                config=to_dict(cmp),
                code_tasks=any(t.verifier == "code" for t in tasks.tasks),
            ),
        )
        return _run_compare(cmp, tasks, backends, out, progress, resume)
    finally:
        lock.release()


def _run_compare(cmp, tasks, backends, out: Path, progress: bool, resume: bool) -> CompareResult:
    plans = plan_generations(cmp)
    pilot = {}
    if cmp.match == "tokens":
        plans, pilot = _match_tokens(cmp, plans, backends, out, progress, resume)
    by_protocol: dict[str, list] = {p.protocol: [] for p in plans}
    for plan in plans:
        for seed in cmp.seeds:
            cfg = _eval_config(cmp, plan, seed, cmp.task, out / f"{plan.protocol}-seed{seed}")
            done = _finished_run(cfg, len(tasks.tasks)) if resume else None
            print(
                f"compare: {plan.protocol} (seed {seed}): {plan.how}{' (finished before: reused)' if done else ''}",
                file=sys.stderr,
            )
            by_protocol[plan.protocol].append(
                done or run_eval(cfg, backend=backends, tasks=tasks, progress=progress)
            )
    ref = cmp.reference_protocol
    rows = [_row(plan, by_protocol[plan.protocol], by_protocol[ref], ref) for plan in plans]
    table = format_comparison(rows, cmp, pilot)
    report = {
        "task": to_dict(cmp.task),
        "model": to_dict(cmp.model),
        "models": cmp.models,
        "team": cmp.team,
        "match": cmp.match,
        "reference": ref,
        "tolerance": cmp.tolerance,
        "seeds": list(cmp.seeds),
        "n_items": len(tasks.tasks),
        "pilot": pilot,
        "rows": rows,
    }
    write_json(out / "comparison.json", report)
    atomic_write(out / "comparison.txt", table + "\n")
    return CompareResult(out, rows, table, plans)


def _finished_run(cfg: EvalConfig, n_items: int) -> EvalResult | None:
    """The run in ``cfg.out`` if it finished all ``n_items`` with the same configuration, else None
    (an unfinished or different run there is moved aside so that the protocol runs again)."""
    run_dir = Path(cfg.out)
    if not run_dir.exists():
        return None
    saved = read_config(run_dir / "config.yaml")
    summary = read_json(run_dir / "summary.json")
    summary = summary if isinstance(summary, dict) else {}
    from workbench.redact import redact_secrets  # config.yaml is written redacted (runs.write_yaml)

    same = isinstance(saved, dict) and {k: v for k, v in saved.items() if k != "backends"} == redact_secrets(
        to_dict(cfg)
    )
    read = read_episodes(run_dir)
    for problem in read.problems[:5]:
        print(f"compare: {problem}", file=sys.stderr)
    episodes = [Episode.from_dict(d) for d in read.episodes]
    if same and _usable(summary) and len(episodes) == summary.get("n") == n_items:
        return EvalResult(run_dir, summary, sorted(episodes, key=lambda e: e.index))
    aside = run_dir.with_name(f"{run_dir.name}.unfinished-{time.strftime('%Y%m%d-%H%M%S')}")
    reason = "a different configuration" if saved is not None and not same else "unfinished"
    print(f"compare: {run_dir} is {reason}: moved to {aside.name}, running it again", file=sys.stderr)
    run_dir.rename(aside)
    return None


def _usable(summary: dict[str, Any]) -> bool:
    """A finished run's summary.json with what the comparison reads from it (a hand-edited or
    corrupted one makes the run count as unfinished, so it runs again)."""
    usage = summary.get("usage")
    number = lambda x: isinstance(x, int | float) and not isinstance(x, bool)  # noqa: E731
    return (
        not summary.get("interrupted")
        and isinstance(usage, dict)
        and number(usage.get("wall_s"))
        and isinstance(summary.get("errors"), list)
        and all(number(summary.get(k)) for k in ("accuracy", "n", "calls_per_query"))
        and all(number(summary.get(k)) for k in ("prompt_tokens_per_query", "completion_tokens_per_query"))
    )


def _match_tokens(cmp, plans, backends, out, progress, resume=False):
    """Pilot on dev items: measure tokens/query at the generations match, rescale each target
    (``resume``: a pilot run that finished with the same configuration is read back)."""
    pilot_task = replace(cmp.task, split="dev", limit=cmp.pilot_items)
    tasks = load_tasks(pilot_task)
    measured = {}
    for plan in plans:
        cfg = _eval_config(cmp, plan, cmp.seeds[0], pilot_task, out / "pilot" / plan.protocol)
        done = _finished_run(cfg, len(tasks.tasks)) if resume else None
        s = (done or run_eval(cfg, backend=backends, tasks=tasks, progress=progress)).summary
        measured[plan.protocol] = {
            "generations_per_query": s["calls_per_query"],
            "tokens_per_query": s["prompt_tokens_per_query"] + s["completion_tokens_per_query"],
        }
    ref = cmp.reference_protocol
    ref_tokens = measured[ref]["tokens_per_query"]
    targets = {}
    for plan in plans:
        m = measured[plan.protocol]
        per_gen = m["tokens_per_query"] / max(m["generations_per_query"], 1e-9)
        targets[plan.protocol] = max(1, round(ref_tokens / per_gen)) if per_gen else plan.target
    targets[ref] = plans[[p.protocol for p in plans].index(ref)].generations
    new = plan_generations(cmp, targets)
    for plan in new:
        est = (
            measured[plan.protocol]["tokens_per_query"]
            / max(measured[plan.protocol]["generations_per_query"], 1e-9)
            * plan.generations
        )
        plan.how = f"{plan.how}; pilot: ~{est:.0f} tokens/query vs reference {ref_tokens:.0f}"
    return new, {
        "split": "dev",
        "items": cmp.pilot_items,
        "measured": measured,
        "generation_targets": targets,
    }


def _row(plan: Plan, results: list, ref_results: list, ref: str) -> dict[str, Any]:
    episodes = [e for r in results for e in r.episodes]
    n, k = len(episodes), sum(e.correct for e in episodes)
    lo, hi = wilson_ci(k, n)
    wall = sum(r.summary["usage"]["wall_s"] for r in results)
    per_q = lambda key: round(sum(getattr(e.usage, key) for e in episodes) / n, 2) if n else 0.0  # noqa: E731
    paired = paired_outcomes(
        [e.to_dict() for e in results[0].episodes], [e.to_dict() for e in ref_results[0].episodes]
    )
    return {
        "protocol": plan.protocol,  # the entry: PROTOCOL or PROTOCOL@VARIANT
        "protocol_name": protocol_of(plan.protocol),
        "options": plan.options,
        "how_matched": plan.how,
        "matched": plan.matched,
        "target_generations": plan.target,
        "n_episodes": n,
        "accuracy": round(k / n, 4) if n else 0.0,
        "ci95": [round(lo, 4), round(hi, 4)],
        "accuracy_per_seed": [r.summary["accuracy"] for r in results],
        "generations_per_query": per_q("calls"),
        "prompt_tokens_per_query": per_q("prompt_tokens"),
        "completion_tokens_per_query": per_q("completion_tokens"),
        "wall_s_per_query": round(wall / n, 3) if n else 0.0,
        "format_failures": sum(e.format_failure for e in episodes),
        "budget_exhausted": sum(bool(e.meta.get("budget_exhausted")) for e in episodes),
        "errors": sum(len(r.summary["errors"]) for r in results),
        "vs_reference": None if plan.protocol == ref else paired,
        "run_dirs": [str(r.run_dir) for r in results],
    }


def format_comparison(rows: list[dict[str, Any]], cmp: CompareConfig, pilot: dict | None = None) -> str:
    header = (
        "protocol",
        "accuracy [95% CI]",
        "gens/q",
        "prompt tok/q",
        "compl tok/q",
        "wall s/q",
        "fmt fail",
        f"vs {cmp.reference_protocol} (McNemar p)",
    )
    lines = []
    for r in rows:
        v = r["vs_reference"]
        lines.append(
            (
                r["protocol"] + ("" if r["matched"] else " *"),
                f"{r['accuracy']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]",
                f"{r['generations_per_query']:g}",
                f"{r['prompt_tokens_per_query']:.0f}",
                f"{r['completion_tokens_per_query']:.0f}",
                f"{r['wall_s_per_query']:.2f}",
                str(r["format_failures"]),
                "reference"
                if v is None
                else f"+{v['only_a_right']}/-{v['only_b_right']} (p={v['mcnemar_p']})",
            )
        )
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    text = [fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*x) for x in lines)]
    n_items = rows[0]["n_episodes"] // max(1, len(rows[0]["accuracy_per_seed"])) if rows else 0
    text += [
        "",
        f"{cmp.task.name} ({cmp.task.split} split), {n_items} items x seeds {list(cmp.seeds)}; model {cmp.model.name}.",
        f"Budgets matched by {cmp.match} to {cmp.reference_protocol} (tolerance {cmp.tolerance:.0%}); * = not matched:",
    ]
    text += [f"  {r['protocol']}: {r['how_matched']}" for r in rows]
    text.append(
        "CI: Wilson 95% over all (item, seed) episodes. McNemar: paired by item on the first seed; +a/-b = items only this protocol / only the reference got right."
    )
    return "\n".join(text)


def budget_figure(rows: list[dict[str, Any]], x: str = "tokens"):
    """Accuracy (with its 95% CI) against budget per query, one point per protocol (plotly).

    ``x``: ``tokens`` (prompt + completion per query) or ``generations``.
    """
    import plotly.graph_objects as go

    if x not in ("tokens", "generations"):
        raise ValueError(f"x must be 'tokens' or 'generations', got '{x}'")
    xs = [
        r["prompt_tokens_per_query"] + r["completion_tokens_per_query"]
        if x == "tokens"
        else r["generations_per_query"]
        for r in rows
    ]
    acc = [r["accuracy"] for r in rows]
    fig = go.Figure(
        go.Scatter(
            x=xs,
            y=acc,
            mode="markers+text",
            text=[r["protocol"] + ("" if r["matched"] else " *") for r in rows],
            textposition="top center",
            error_y=error_bars(acc, [r["ci95"] for r in rows]),
            marker={"size": 11},
        )
    )
    fig.update_layout(
        title="Accuracy vs budget per query (95% Wilson CI; * = budget not matched)",
        xaxis_title="prompt + completion tokens per query" if x == "tokens" else "generations per query",
        yaxis_title="accuracy",
        yaxis_range=[0, 1.05],
        height=420,
        template="plotly_white",
    )
    return fig
