"""Evaluate a protocol on a task: the path behind `workbench eval`, the demo and the notebooks.

    cfg = EvalConfig.build(task="arithmetic", protocol="vote", overrides={"protocol": {"n": 5}})
    result = run_eval(cfg)               # loads the model, runs, writes runs/<id>/
    result.summary["accuracy"], result.run_dir

Everything a user can get wrong is checked before the run folder is created, so a bad
invocation writes nothing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import ConfigError, from_dict, merge, split_options, to_dict
from workbench.episode import Episode
from workbench.models.base import Backend
from workbench.protocols import PROTOCOLS, EpisodeContext, Team
from workbench.runs import RunWriter, default_root, new_run_dir, summarize
from workbench.scheduler import BatchScheduler, run_all, run_sync
from workbench.tasks import TaskConfig, TaskSet, load_tasks


@dataclass(frozen=True)
class ModelConfig:
    name: str = "smollm2"  # smollm2 (embedded) | org/name (hub) | local path; +ADAPTER_DIR adds a LoRA
    dtype: str = "auto"  # auto (bf16 where the CPU/GPU has it, else fp32) | bf16 | fp32 | fp16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_batch_size: int = 64  # rows per forward pass; lower it if memory is short

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError(f"model.max_batch_size must be >= 1, got {self.max_batch_size}")


@dataclass(frozen=True)
class ProtocolConfig:
    name: str = "single"
    options: dict[str, Any] = field(default_factory=dict)  # validated against the protocol's config class

    def __post_init__(self) -> None:
        if self.name not in PROTOCOLS:
            raise ConfigError(f"unknown protocol '{self.name}'; available: {', '.join(PROTOCOLS)}")
        resolved = from_dict(PROTOCOLS[self.name][1], self.options, prefix="protocol.")
        object.__setattr__(self, "options", to_dict(resolved))

    @classmethod
    def from_flat(cls, data: dict[str, Any]) -> ProtocolConfig:
        """Accept ``{"name": "vote", "n": 5}``: keys other than ``name`` are the protocol's options."""
        return from_dict(cls, split_options(data, ("name",)), prefix="protocol.")

    @property
    def resolved(self):
        return from_dict(PROTOCOLS[self.name][1], self.options)


@dataclass(frozen=True)
class EvalConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 0  # seeds every sampled generation (derived per task and call); items stay the same
    max_in_flight: int = 256  # episodes run concurrently; their ready generations go to the model together
    out: str = ""  # run folder; default runs/<time>-<task>-<protocol>

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be >= 1, got {self.max_in_flight}")

    @classmethod
    def build(cls, overrides: dict[str, Any] | None = None, **top: Any) -> EvalConfig:
        """From keyword shortcuts (task=, protocol=, model=, limit=, seed=, out=) and nested overrides.

        Sections accept flat keys: ``{"task": {"digits": 2}}`` sets an arithmetic option and
        ``{"protocol": {"n": 5}}`` a protocol option.
        """
        data: dict[str, Any] = {"task": {}, "protocol": {}, "model": {}}
        for key, section, name in (
            ("task", "task", "name"),
            ("protocol", "protocol", "name"),
            ("model", "model", "name"),
            ("limit", "task", "limit"),
            ("split", "task", "split"),
        ):
            if top.get(key) is not None:
                data[section][name] = top.pop(key)
        data.update({k: v for k, v in top.items() if v is not None})
        data = merge(data, overrides or {})
        for section in ("task", "protocol", "model"):
            if not isinstance(data[section], dict):
                raise ConfigError(f"'{section}' is a section; set its keys, e.g. --set {section}.name=...")
        # seed, max_in_flight, out; anything else at the top level is an unknown key
        top_level = from_dict(
            _TopLevel, {k: v for k, v in data.items() if k not in ("task", "protocol", "model")}
        )
        return cls(
            task=TaskConfig.from_flat(data["task"]),
            protocol=ProtocolConfig.from_flat(data["protocol"]),
            model=from_dict(ModelConfig, data["model"], prefix="model."),
            seed=top_level.seed,
            max_in_flight=top_level.max_in_flight,
            out=top_level.out,
        )


@dataclass(frozen=True)
class _TopLevel:
    """The top-level scalars of an EvalConfig, validated by the same strict loader."""

    seed: int = 0
    max_in_flight: int = 256
    out: str = ""


@dataclass
class EvalResult:
    run_dir: Path
    summary: dict[str, Any]
    episodes: list[Episode]


def run_episodes(
    tasks: TaskSet | list,
    protocol: ProtocolConfig,
    backend: Backend,
    seed: int = 0,
    max_in_flight: int = 256,
    on_episode=None,
    progress: bool = False,
) -> tuple[list[Episode], list[dict[str, str]], dict[str, Any]]:
    """Run a protocol over tasks with batching across episodes; no files. Returns (episodes, errors, batch stats).

    ``on_episode(episode)`` is called as each episode ends (the run writer appends it there).
    """
    task_list = tasks.tasks if isinstance(tasks, TaskSet) else tasks
    run_fn, _ = PROTOCOLS[protocol.name]
    cfg = protocol.resolved
    scheduler = BatchScheduler({"default": backend})
    team = Team(("default",))
    episodes: list[Episode] = []
    errors: list[dict[str, str]] = []
    n_correct = 0
    bar = _progress(len(task_list), protocol.name) if progress else None

    def job(i: int):
        async def go() -> Episode:
            ctx = EpisodeContext(task_list[i], protocol.name, scheduler, seed=seed, index=i)
            await run_fn(task_list[i], team, cfg, ctx)
            return ctx.episode

        return go

    def done(i: int, ep: Episode | None, err: BaseException | None) -> None:
        nonlocal n_correct
        if err is not None:
            errors.append({"task_id": task_list[i].id, "error": f"{type(err).__name__}: {err}"})
        else:
            episodes.append(ep)
            n_correct += ep.correct
            if on_episode is not None:
                on_episode(ep)
        if bar is not None:
            bar.set_postfix(acc=f"{n_correct / max(1, len(episodes)):.2f}", errors=len(errors), refresh=False)
            bar.update(1)

    try:
        run_sync(run_all([job(i) for i in range(len(task_list))], scheduler, max_in_flight, done))
    finally:
        if bar is not None:
            bar.close()
    sizes = scheduler.stats.batch_sizes
    stats = {
        "backend_calls": len(sizes),
        "mean_batch_size": round(sum(sizes) / len(sizes), 2) if sizes else 0.0,
    }
    return episodes, errors, stats


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ep", file=sys.stderr, dynamic_ncols=True)


def prepare(cfg: EvalConfig) -> TaskSet:
    """Everything that can fail on user input, before any file is written: the tasks load."""
    return load_tasks(cfg.task)


def run_eval(
    cfg: EvalConfig,
    backend: Backend | None = None,
    progress: bool = True,
    runs_root: str | Path | None = None,
    tasks: TaskSet | None = None,
) -> EvalResult:
    """Run ``cfg`` end to end and write its run folder. ``backend`` reuses an already loaded model."""
    tasks = tasks if tasks is not None else prepare(cfg)
    runs_root = Path(runs_root) if runs_root is not None else default_root()
    run_dir = Path(cfg.out) if cfg.out else new_run_dir(runs_root, cfg.task.name, cfg.protocol.name)
    RunWriter.check_free(run_dir)  # before the model loads, not after
    if backend is None:
        from workbench.models import load_backend

        backend = load_backend(cfg.model.name, cfg.model.dtype, cfg.model.device, cfg.model.max_batch_size)
    resolved = to_dict(cfg) | {"out": str(run_dir), "backend": backend.name}
    writer = RunWriter(run_dir, resolved)
    episodes: list[Episode] = []
    errors: list[dict[str, str]] = []
    stats: dict[str, Any] = {}

    def keep(ep: Episode) -> None:
        writer.append(ep)
        episodes.append(ep)

    t0 = time.perf_counter()
    interrupted = False
    try:
        _, errors, stats = run_episodes(
            tasks, cfg.protocol, backend, cfg.seed, cfg.max_in_flight, on_episode=keep, progress=progress
        )
    except KeyboardInterrupt:  # Ctrl-C: the episodes written so far get a summary, then we stop
        interrupted = True
    finally:
        writer.close()
    wall = time.perf_counter() - t0
    episodes.sort(key=lambda e: e.index)
    summary = summarize(
        (e.to_dict() for e in episodes),
        wall_s=wall,
        task=cfg.task.name,
        split=cfg.task.split,
        protocol=cfg.protocol.name,
        model=cfg.model.name,
        seed=cfg.seed,
        planned=len(tasks.tasks),
        interrupted=interrupted,
        completion_tokens_per_s=round(sum(e.usage.completion_tokens for e in episodes) / wall, 1)
        if wall
        else 0.0,
        errors=errors,
        skipped_rows=tasks.skipped,
        **stats,
    )
    writer.write_summary(summary)
    if interrupted:
        raise KeyboardInterrupt(f"interrupted; {len(episodes)} episodes and a summary are in {run_dir}")
    return EvalResult(run_dir, summary, episodes)
