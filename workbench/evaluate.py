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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.config import ConfigError, to_dict
from workbench.episode import Episode
from workbench.models.base import Backend
from workbench.protocols import PROTOCOLS, Budget, EpisodeContext, Team
from workbench.protocols.base import play
from workbench.run_config import (  # the config types live in workbench/run_config.py; re-exported here
    EvalConfig,
    MemberConfig,
    ModelConfig,
    ProtocolConfig,
    load_model,
)
from workbench.runs import RunWriter, Terminated, default_root, manifest, new_run_dir, summarize
from workbench.scheduler import BatchScheduler, run_all, run_sync
from workbench.tasks import TaskSet, load_tasks
from workbench.tasks.verify import verify_workers

__all__ = [
    "EvalConfig",
    "EvalResult",
    "MemberConfig",
    "ModelConfig",
    "ProtocolConfig",
    "load_model",
    "load_models",
    "prepare",
    "run_episodes",
    "run_eval",
]


@dataclass
class EvalResult:
    run_dir: Path
    summary: dict[str, Any]
    episodes: list[Episode]


def run_episodes(
    tasks: TaskSet | list,
    protocol: ProtocolConfig,
    backend: Backend | dict[str, Backend],
    seed: int = 0,
    max_in_flight: int = 256,
    on_episode=None,
    progress: bool = False,
    team: Team | None = None,
    budget: Budget | None = None,
    context: type[EpisodeContext] = EpisodeContext,
) -> tuple[list[Episode], list[dict[str, str]], dict[str, Any]]:
    """Run a protocol over tasks with batching across episodes; no files. Returns (episodes, errors, batch stats).

    ``backend`` is one backend (the team's "default" model) or a dict of backends by model name;
    ``team`` defaults to the one-member team on "default". ``on_episode(episode)`` is called as
    each episode ends (the run writer appends it there). ``context``: the EpisodeContext class
    (training rollouts pass a subclass that also keeps the trained role's token ids).
    """
    task_list = tasks.tasks if isinstance(tasks, TaskSet) else tasks
    spec = PROTOCOLS[protocol.name]
    cfg = protocol.resolved
    backends = backend if isinstance(backend, dict) else {"default": backend}
    team = team or Team()
    missing = [b for b in team.backends if b not in backends]
    if missing:
        raise ConfigError(f"no backend for model(s) {', '.join(missing)} (have: {', '.join(backends)})")
    verify_workers()  # a bad $WORKBENCH_VERIFY_WORKERS is one ConfigError here, not one per episode
    scheduler = BatchScheduler(backends)
    episodes: list[Episode] = []
    errors: list[dict[str, str]] = []
    n_correct = 0
    bar = _progress(len(task_list), protocol.name) if progress else None

    def job(i: int):
        async def go() -> Episode:
            ctx = context(task_list[i], protocol.name, scheduler, seed=seed, index=i, budget=budget)
            return await play(spec.run, task_list[i], team, cfg, ctx)

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
        "backend_calls": len(sizes),  # generate() calls, or admissions into a running decode
        "mean_batch_size": round(sum(sizes) / len(sizes), 2) if sizes else 0.0,
    }
    if scheduler.stats.decode_steps:  # a streaming backend: how full its running batch stayed
        rows = scheduler.stats.rows_per_step
        stats |= {
            "decode_steps": scheduler.stats.decode_steps,
            "mean_rows_per_step": round(sum(rows) / len(rows), 2),
        }
    return episodes, errors, stats


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ep", file=sys.stderr, dynamic_ncols=True)


def load_models(cfg, given: Backend | dict[str, Backend] | None = None) -> dict[str, Backend]:
    """The backends of every model and tool worker the team uses, loading the models not ``given``
    (``cfg``: any run config with model/models/team sections)."""
    return cfg.load_backends(given)


def prepare(cfg: EvalConfig) -> TaskSet:
    """Everything that can fail on user input, before any file is written: the tasks load (and
    the verifier pool's size, ``$WORKBENCH_VERIFY_WORKERS``, is valid)."""
    verify_workers()
    return load_tasks(cfg.task)


def run_eval(
    cfg: EvalConfig,
    backend: Backend | dict[str, Backend] | None = None,
    progress: bool = True,
    runs_root: str | Path | None = None,
    tasks: TaskSet | None = None,
) -> EvalResult:
    """Run ``cfg`` end to end and write its run folder.

    ``backend`` reuses already loaded models: one backend (the "default" model) or a dict by model
    name; models of the team that are not given are loaded.
    """
    tasks = tasks if tasks is not None else prepare(cfg)
    runs_root = Path(runs_root) if runs_root is not None else default_root()
    run_dir = Path(cfg.out) if cfg.out else new_run_dir(runs_root, cfg.task.name, cfg.protocol.name)
    RunWriter.check_free(run_dir)  # before the model loads, not after
    backends = load_models(cfg, backend)
    resolved = to_dict(cfg) | {"out": str(run_dir), "backends": {k: b.name for k, b in backends.items()}}
    # the folder is claimed exclusively now: a default name taken meanwhile moves on to the next one
    writer = RunWriter(run_dir, resolved, fresh_name=not cfg.out, manifest=run_manifest(cfg, tasks))
    run_dir = writer.dir
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
            tasks,
            cfg.protocol,
            backends,
            cfg.seed,
            cfg.max_in_flight,
            on_episode=keep,
            progress=progress,
            team=cfg.build_team(),
            budget=cfg.budget,
        )
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the episodes so far get a summary, then we stop
        interrupted = "SIGTERM" if isinstance(e, Terminated) else "SIGINT"
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
        interrupted=bool(interrupted),
        **({"stopped_by": interrupted} if interrupted else {}),
        completion_tokens_per_s=round(sum(e.usage.completion_tokens for e in episodes) / wall, 1)
        if wall
        else 0.0,
        errors=errors,
        skipped_rows=tasks.skipped,
        **stats,
    )
    writer.write_summary(summary)
    if interrupted:
        stop = Terminated if interrupted == "SIGTERM" else KeyboardInterrupt
        raise stop(f"interrupted; {len(episodes)} episodes and a summary are in {run_dir}")
    return EvalResult(run_dir, summary, episodes)


def run_manifest(cfg: EvalConfig, tasks: TaskSet) -> dict[str, Any]:
    """manifest.json of an eval run (workbench.runs.manifest): versions, commit, seeds, model hashes."""
    code = any(t.verifier == "code" for t in tasks.tasks)
    seeds = {"seed": cfg.seed, "task_seed": cfg.task.seed}
    models = {name: mc.name for name, mc in cfg.model_configs().items()}
    return manifest("eval", seeds, models, code_tasks=code)
