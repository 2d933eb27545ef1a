"""The notebooks' steps that take more than one call: finding the runs and adapter a notebook reads
(with a fallback that still teaches the step), and the adapter-against-baselines evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.runs import default_root, read_config
from workbench.widgets.picker import find_runs, run_kind


def notebook_out(name: str, smoke: bool) -> str | None:
    """The fixed folder a full run of notebook ``name`` writes (later notebooks read it), under
    runs/notebooks/; None in smoke mode (a fresh time-stamped folder each time)."""
    return None if smoke else str(default_root() / "notebooks" / name)


@dataclass
class Inputs:
    dirs: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        return "\n".join(self.notes) or f"reading {len(self.dirs)} run folder(s)"


def protocol_of(run_dir: str | Path) -> str | None:
    cfg = read_config(Path(run_dir) / "config.yaml") or {}
    protocol = cfg.get("protocol")
    return protocol.get("name") if isinstance(protocol, dict) else None


def runs_or_fallback(run_dirs: Any, protocols: str, make_small, seed0_only: bool = True) -> Inputs:
    """The evaluation runs of ``run_dirs`` (run or comparison folders) whose protocol is in
    ``protocols`` (comma-separated), one per protocol (the seed-0 run first); when none is usable,
    one line per problem and the runs ``make_small()`` creates (a list of run folders)."""
    wanted = [p.strip() for p in protocols.split(",") if p.strip()]
    found = find_runs(run_dirs, kind="eval")
    picked: dict[str, Path] = {}
    for d in found.dirs:
        p = protocol_of(d)
        if p in wanted and (p not in picked or not seed0_only):
            picked.setdefault(p, d)
    inputs = Inputs([picked[p] for p in wanted if p in picked], list(found.problems))
    missing = [p for p in wanted if p not in picked]
    if inputs.dirs and missing:
        inputs.notes.append(f"RUN_DIRS has no run of {', '.join(missing)}; analysing the others")
    if not inputs.dirs:
        if run_dirs:
            inputs.notes.append("no usable run in RUN_DIRS: making small runs here instead (fewer items)")
        else:
            inputs.notes.append("RUN_DIRS is empty: making small runs here instead")
        inputs.dirs = [Path(d) for d in make_small()]
    return inputs


def find_adapter(path: str | Path | None) -> tuple[Path | None, str]:
    """A LoRA adapter folder from an adapter folder or a training run folder; else (None, why)."""
    if not path:
        return None, "ADAPTER is empty"
    p = Path(path)
    if (p / "adapter_config.json").is_file():
        return p, f"adapter {p}"
    kind = run_kind(p) if p.is_dir() else None
    if kind == "train":
        if (p / "adapter" / "adapter_config.json").is_file():
            return p / "adapter", f"adapter of the training run {p}"
        return None, f"ADAPTER: the training run {p} has no adapter yet (it did not finish)"
    if not p.exists():
        return (
            None,
            f"ADAPTER: {p} does not exist; run notebook 03_train_cpu first, or pass an adapter folder",
        )
    if kind is not None:
        return (
            None,
            f"ADAPTER: {p} is a{'n' if kind == 'eval' else ''} {kind} run, not a training run; pass a training run folder",
        )
    return None, f"ADAPTER: {p} holds no adapter (no adapter_config.json)"


def tiny_adapter(runs_root: str | Path | None = None) -> Path:
    """A leader adapter from one warm-start (SFT) step on a few items: it teaches nothing, but it is
    a real adapter, so the evaluation and serving steps can be shown without notebook 03's run."""
    from workbench.rl.config import TrainConfig
    from workbench.rl.trainer import train

    cfg = TrainConfig.load(
        "leader",
        ["task.limit=4", "pool.size=2", "pool.max_tokens=32", "pool.threshold=1.0", "train.warm_start=1",
         "train.steps=0", "train.questions=2", "eval.limit=2", "protocol.rounds=1", "protocol.peers=2",
         "protocol.max_tokens=32", "protocol.leader_max_tokens=32"],
    )  # fmt: skip
    return train(cfg, progress=False, runs_root=runs_root).run_dir / "adapter"


FOLDERS = {
    "leader (trained)": "leader-trained",
    "leader (untrained)": "leader-untrained",
    "vote (n=4)": "vote",
    "single": "single",
}

# the leader team of docs/training.md's confirmatory evaluation: 3 peers, 1 round, greedy leader
LEADER_TEAM = {"peers": 3, "rounds": 1, "share": "full", "temperature": 0.3, "leader_temperature": 0.0}


def adapter_vs_baselines(
    backend, adapter: Path, model: str = "smollm2", limit: int = 50, seed: int = 0, max_tokens: int = 256,
    out: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """On the test split, the same items and seeds: the leader team with the trained leader, the
    same team with the untrained leader, vote at the same 4 generations per query, and a single
    agent (1 generation: the unmatched floor). Returns the summaries, the text table and the
    paired McNemar tests against the trained team."""
    from workbench.evaluate import EvalConfig, run_eval
    from workbench.report import format_table
    from workbench.stats import paired_outcomes

    leader = LEADER_TEAM | {"max_tokens": max_tokens, "leader_max_tokens": max_tokens}
    trained = {
        "models": {"trained": {"name": f"{model}+{adapter}"}},
        "team": {"trainee": {"model": "trained"}},
    }
    plans = {
        "leader (trained)": ("leader", leader | {"leader_member": "trainee"}, trained),
        "leader (untrained)": ("leader", leader, {}),
        "vote (n=4)": ("vote", {"n": 4, "temperature": 0.3, "max_tokens": max_tokens}, {}),
        "single": ("single", {"max_tokens": max_tokens}, {}),
    }
    results: dict[str, Any] = {}
    for label, (protocol, options, extra) in plans.items():
        folder = None if out is None else str(Path(out) / FOLDERS[label])
        cfg = EvalConfig.build(
            {"protocol": options, **extra}, task="arithmetic", protocol=protocol, model=model, split="test",
            limit=limit, seed=seed, out=folder,
        )  # fmt: skip
        results[label] = run_eval(cfg, backend=backend, progress=False)
    ref = [e.to_dict() for e in results["leader (trained)"].episodes]
    tests = {
        label: paired_outcomes(ref, [e.to_dict() for e in r.episodes])
        for label, r in results.items()
        if label != "leader (trained)"
    }
    summaries = [r.summary | {"protocol": label} for label, r in results.items()]
    lines = [format_table(summaries), "", "paired against leader (trained), same items and seeds:"]
    for label, t in tests.items():
        lines.append(
            f"  vs {label:<19} only trained right {t['only_a_right']:>3}, only {label} right "
            f"{t['only_b_right']:>3}, exact McNemar p = {t['mcnemar_p']}"
        )
    return {"results": results, "tests": tests, "table": "\n".join(lines)}
