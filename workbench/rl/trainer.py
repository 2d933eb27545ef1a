"""The training loop: sample with the current adapter → score → advantages → loss → step → checkpoint.

    result = train(TrainConfig.load("maestro", ["train.steps=20"]))

What a run folder holds (``runs/<time>-train-<recipe>/``)::

    config.yaml        the resolved TrainConfig
    manifest.json      versions, commit, seeds, model hash, the resolved config and its sha256,
                       config_changes applied on resume (workbench.runs.manifest)
    .lock              the folder's claim; flocked while a process trains in it
    pool.jsonl         offline rollouts: the frozen agents' answers (reusable: pool.path); with
                       pool.rounds > 1 also whole slates of every protocol round
    sft_traces.jsonl   leader SFT stage: the self-corrections sampling found (the SFT targets,
                       as sampled), with sft_sampling.json: the counts, also in summary.json
    metrics.jsonl      one line per step: reward, reward_std, frac_reward_zero_std, kl, entropy,
                       completion_length, clip_ratio, grad_norm, lr, accuracy, format_failure_rate,
                       groups, small_groups (later-round groups of one: advantage 0), and per
                       recipe coverage/identification (maestro)
    episodes.jsonl     the training episodes, with meta.train_step and meta.advantage (the viewer
                       shows them live), then the dev evaluations' episodes (meta.eval)
    evals.jsonl        dev-split evaluations at a fixed protocol budget: before, every
                       eval_every steps, after
    checkpoints/       adapter + optimiser + scheduler + RNG + cursor, atomically (see checkpoint.py)
    adapter/           the final adapter: workbench serve --model BASE+runs/.../adapter
    summary.json       before/after accuracy with CIs and the paired McNemar test

The loss of every step is a function of rl/objectives.py (``sft_loss``, ``grpo``, ``dr_grpo``,
``clpo_loss``; tests/test_rl_parity.py checks loss and gradient against them). How it departs
from the textbook algorithms: one optimisation pass per batch (ρ = 1 in value, as TRL with
num_iterations=1); losses are per micro-batch, weighted by the micro-batch's share of the
samples; CLPO's KL and entropy are token means within a micro-batch; decisions are read strictly
(only a closed ``<choice>j</choice>``; a failure has reward 0 and trains on a decision's length).

Resume (``train(..., resume=RUN_DIR)`` / ``workbench train --resume RUN_DIR``) restores the latest
checkpoint and continues the same run; metric and episode lines written after that checkpoint
(by the steps that are redone) are moved to ``*.after-step-N.jsonl``, never deleted. A run killed
before its first checkpoint rolls back to step 0 the same way (nothing is counted twice), and so
do the episodes of an evaluation that did not finish. The folder is locked (``.lock``, flock)
while a process trains in it: a second ``--resume`` is refused. ``manifest.json`` holds the
resolved config's hash: an edited config.yaml is refused with the list of differences, or, with
``allow_config_change``, applied in full (the optimiser's lr and weight decay and the schedule are
re-derived from it after the checkpoint's state is loaded, which would otherwise restore the old lr).
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.config import ConfigError, load_yaml, to_dict
from workbench.evaluate import ProtocolConfig, run_episodes
from workbench.rl import objectives as obj
from workbench.rl import warmstart
from workbench.rl.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from workbench.rl.config import TrainConfig
from workbench.rl.engine import LogprobGap, check_engine, gpu_memory_now, open_rollout_engine
from workbench.rl.policy import PolicyBackends, adapter_disabled, completion_logprobs, load_policy
from workbench.rl.rollouts import (
    Sample,
    Slate,
    build_pool,
    build_round_pool,
    check_groups,
    offline_episode,
    offline_samples,
    online_samples,
    pool_backends,
    read_pool,
    trainee_options,
)
from workbench.rl.warmstart import demonstrations
from workbench.runs import (
    DirLock,
    JsonlLog,
    RunDirError,
    atomic_write,
    claim_run_dir,
    config_hash,
    default_root,
    fsync_dir,
    fsync_tree,
    manifest,
    read_json,
    read_jsonl,
    write_json,
    write_yaml,
)
from workbench.stats import paired_outcomes, wilson_ci
from workbench.tasks import load_tasks


# ---------------------------------------------------------------- append-only logs (workbench.runs.JsonlLog)
def rollback(path: Path, step: int, step_of) -> int:
    """Move the lines of ``path`` whose step is > ``step`` to ``<path>.after-step-<step>.jsonl``.

    ``step_of(row)`` gives a line's step (None keeps it; math.inf always moves it). A torn,
    binary, too deeply nested or otherwise malformed line is moved too. Returns how many lines
    were moved. The aside file is made durable before the log is replaced without them.
    """
    if not path.exists():
        return 0
    keep, moved = [], []
    for raw in path.read_bytes().split(b"\n"):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
            s = step_of(row) if isinstance(row, dict) else math.inf
        except (ValueError, RecursionError, TypeError, AttributeError):
            s = math.inf
        (moved if s is not None and s > step else keep).append(raw)
    if moved:
        aside = path.with_name(f"{path.stem}.after-step-{step}.jsonl")
        with open(aside, "ab") as f:
            f.write(b"\n".join(moved) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        atomic_write(path, b"".join(k + b"\n" for k in keep))
    return len(moved)


def _int_step(value) -> float:
    """A log row's step, or math.inf (moved aside) when it is not an integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) else math.inf


# Keys an edited config.yaml may not change on resume even with --allow-config-change: they
# decide what the checkpoint, the pool, the data order or the before/after evaluation mean.
FROZEN_ON_RESUME = (
    "recipe",
    "model.name",
    "lora.",
    "task.",
    "pool.",
    "protocol.",
    "eval.",
    "train.seed",
    "train.warm_start",
    "train.sft_targets",
    "train.rollout",
    "train.objective",
    "train.use_unsloth",
)


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs between two resolved configs."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _check_resume_config(run_dir: Path, cfg: TrainConfig, allow_change: bool) -> list[str]:
    """Compare the resumed config with the one the run started with (manifest.json); refuse a
    change unless ``allow_change``; record the change. Returns the differences."""
    resolved = to_dict(cfg)
    found = read_json(run_dir / "manifest.json")
    if not isinstance(found, dict) or not isinstance(found.get("config"), dict):
        found = manifest("train", {"train.seed": cfg.train.seed}, {"policy": cfg.model.name}, resolved)
        found["note"] = "written on resume: the run predates manifests, its starting config is not known"
        write_json(run_dir / "manifest.json", found)
        return []
    if found.get("config_sha256") == config_hash(resolved):
        return []
    diffs = [d for d in config_differences(found["config"], resolved) if not _added_at_default(d)]
    if not diffs:
        return []
    listed = "; ".join(diffs[:12]) + (f"; ... ({len(diffs)} in all)" if len(diffs) > 12 else "")
    if not allow_change:
        raise ConfigError(
            f"{run_dir / 'config.yaml'} changed since the run started ({listed}); restore it, or resume "
            "with --allow-config-change to apply the changes from the next step"
        )
    frozen = [d for d in diffs if any(d.startswith(k) if k.endswith(".") else d.split(":")[0] == k
                                      for k in FROZEN_ON_RESUME)]  # fmt: skip
    if frozen:
        raise ConfigError(
            f"{run_dir / 'config.yaml'}: {'; '.join(frozen[:6])} cannot change on resume (the checkpoint, "
            "pool, data order or evaluation depend on it); restore it, or start a new run"
        )
    found.setdefault("config_changes", []).append(
        {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "changes": diffs}
    )
    found["config"], found["config_sha256"] = resolved, config_hash(resolved)
    write_json(run_dir / "manifest.json", found)
    print(f"[train] resume applies the edited config: {listed}", file=sys.stderr)
    return diffs


def _added_at_default(diff: str) -> bool:
    """A field added to the config after the run started, at its default (``pool.rounds: '<unset>'
    -> 1``): the run is unchanged by it, so resuming a run written before the field is no change."""
    from dataclasses import MISSING, fields

    from workbench.rl.config import PoolSettings, TrainSettings

    key, _, change = diff.partition(": ")
    section, _, name = key.partition(".")
    cls = {"train": TrainSettings, "pool": PoolSettings}.get(section)
    if cls is None or not change.startswith("'<unset>' -> "):
        return False
    field = next((f for f in fields(cls) if f.name == name), None)
    return field is not None and field.default is not MISSING and change == f"'<unset>' -> {field.default!r}"


def _load_run_config(run_dir: Path) -> TrainConfig:
    return TrainConfig.build(load_yaml(run_dir / "config.yaml"))  # bounded; ConfigError names the file


def _apply_hyperparameters(cfg: TrainConfig, optimizer, scheduler, total: int) -> None:
    """After a checkpoint is loaded: lr, weight decay and the schedule come from ``cfg`` (the
    saved state holds the lr the run started with, and the schedule its old length)."""
    t = cfg.train
    factor = _schedule(t, total)
    scheduler.base_lrs = [t.lr for _ in optimizer.param_groups]
    scheduler.lr_lambdas = [factor for _ in optimizer.param_groups]
    for g in optimizer.param_groups:
        g["initial_lr"], g["weight_decay"] = t.lr, t.weight_decay
        g["lr"] = t.lr * factor(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


# ---------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    run_dir: Path
    summary: dict[str, Any]


def _schedule(train, total: int):
    def factor(step: int) -> float:  # step counts optimiser steps done
        if step < train.warmup_steps:
            return (step + 1) / (train.warmup_steps + 1)
        if train.schedule == "constant":
            return 1.0
        progress = (step - train.warmup_steps) / max(1, total - train.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(
    cfg: TrainConfig | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    runs_root: str | Path | None = None,
    policy: PolicyBackends | None = None,
    allow_config_change: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``cfg``'s role (or continue the run in ``resume``); returns the run folder and summary.

    ``allow_config_change`` (with ``resume``): apply an edited config.yaml instead of refusing it.
    ``should_stop``: asked after every step (e.g. ``threading.Event().is_set``, a notebook's stop
    button); when it says yes the run ends there: a checkpoint of that step, the adapter, and a
    summary with ``interrupted: true`` and ``stopped_at_step`` (its ``after`` is the last
    evaluation made); ``workbench train --resume RUN_DIR`` continues it."""
    if cfg is not None:
        check_engine(cfg)  # no CUDA / no vllm or unsloth / a rank vLLM refuses: one line, no folder
    # a new run's items load before its folder is made: a bad task or data file writes nothing
    tasks = _task_sets(cfg) if resume is None and cfg is not None else None
    run_dir, cfg, lock, _ = _open_run(cfg, resume, runs_root, allow_config_change)
    try:
        return _train(
            cfg, run_dir, resume is not None, progress, policy, tasks or _task_sets(cfg), should_stop
        )
    finally:
        lock.release()


def _open_run(cfg, resume, runs_root, allow_config_change):
    """The run folder, claimed (a new run) or locked (a resume), and its config checked."""
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").exists():
            raise RunDirError(f"{run_dir} holds no training run (no config.yaml) to resume")
        lock = DirLock(run_dir, "training run")  # a second --resume on this folder is refused here
        try:
            cfg = _load_run_config(run_dir)
            changed = _check_resume_config(run_dir, cfg, allow_config_change)
        except BaseException:
            lock.release()
            raise
        return run_dir, cfg, lock, bool(changed)
    if cfg is None:
        raise ValueError("train() needs a TrainConfig or resume=RUN_DIR")
    root = Path(runs_root) if runs_root is not None else default_root()
    run_dir = Path(cfg.out) if cfg.out else root / f"{time.strftime('%Y%m%d-%H%M%S')}-train-{cfg.recipe}"
    if (run_dir / "config.yaml").exists():
        raise RunDirError(f"{run_dir} already holds a run: use --resume {run_dir}, or another --out")
    run_dir = claim_run_dir(run_dir, fresh_name=not cfg.out)
    lock = DirLock(run_dir, "training run")
    cfg = replace(cfg, out=str(run_dir))
    resolved = to_dict(cfg)
    write_json(
        run_dir / "manifest.json",
        manifest(
            "train",
            {"train.seed": cfg.train.seed, "task.seed": cfg.task.seed},
            {"policy": cfg.model.name},
            config=resolved,
            code_tasks=cfg.task.family in ("humaneval", "livecodebench"),
        ),
    )
    write_yaml(run_dir / "config.yaml", resolved)
    return run_dir, cfg, lock, False


def _task_sets(cfg: TrainConfig) -> tuple[list, list]:
    """The training items and the dev items of the before/after evaluation."""
    train_tasks = load_tasks(cfg.task).tasks
    return train_tasks, load_tasks(replace(cfg.task, split=cfg.eval.split, limit=cfg.eval.limit)).tasks


def _train(cfg: TrainConfig, run_dir: Path, resuming: bool, progress: bool, policy, tasks, should_stop=None):
    t = cfg.train
    _seed_everything(t.seed)
    backends = policy or load_policy(
        cfg.model.name,
        cfg.lora,
        dtype=cfg.model.dtype,
        device=cfg.model.device,
        max_batch_size=cfg.model.max_batch_size,
        use_unsloth=t.use_unsloth,
        max_seq_length=t.max_seq_length,
        seed=t.seed,
    )
    backends = open_rollout_engine(cfg, backends)  # train.rollout_engine: hf (as loaded) | vllm
    model = backends.model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    total = t.warm_start + t.steps  # warm-start (SFT) steps come first, numbered 1..warm_start
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(t, total))

    train_tasks, dev_tasks = tasks
    pool, eligible = {}, list(range(len(train_tasks)))
    # the leader's traces and the central agent's format demonstrations draw from the pool too
    if t.rollout == "offline" or (t.warm_start and cfg.recipe in ("leader", "maestro")):
        pool_path = Path(cfg.pool.path) if cfg.pool.path else run_dir / "pool.jsonl"
        if cfg.pool.path:
            pool = read_pool(pool_path)
            if cfg.pool.rounds > 1 and pool and not any(e.slates for e in pool.values()):
                raise ConfigError(
                    f"pool.path={pool_path} holds answers of round 1 only, but pool.rounds={cfg.pool.rounds} "
                    "draws slates from later rounds; leave pool.path empty to build a pool with rounds, "
                    "or set pool.rounds=1"
                )
        elif cfg.pool.rounds > 1:  # whole slates of every round, as the protocol produces them
            pool = build_round_pool(
                train_tasks, backends.frozen, cfg.recipe, cfg.protocol, cfg.pool.rounds, cfg.pool.size,
                t.seed, pool_path, progress,
            )  # fmt: skip
        else:
            pool = build_pool(
                train_tasks, backends.frozen, cfg.pool.size, cfg.pool.temperature, cfg.pool.max_tokens,
                t.seed, pool_path, progress,
            )  # fmt: skip
        eligible = eligible_questions(train_tasks, pool, cfg.pool.threshold, cfg.pool.mixed)
        if not eligible:
            raise ConfigError(
                f"no training question left: every pooled accuracy is >= pool.threshold={cfg.pool.threshold}"
                + (
                    " or the pool has no question with both a right and a wrong answer (pool.mixed=true)"
                    if cfg.pool.mixed
                    else ""
                )
                + "; raise the threshold (1.0 keeps every question), set pool.mixed=false or train on other items"
            )

    state: dict[str, Any] = {"cursor": 0, "epoch": 0, "pool_questions": len(pool), "eligible": len(eligible)}
    start = 0
    ckpt = latest_checkpoint(run_dir) if resuming else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, optimizer, scheduler)
        start = state["step"]
        _apply_hyperparameters(cfg, optimizer, scheduler, total)  # the lr of config.yaml, not the saved one
    traces: list[dict[str, Any]] = []
    if cfg.sampled_traces:  # MLPO's SFT stage: the leader's own self-corrections
        traces = _sft_traces(cfg, backends, run_dir, train_tasks, pool, eligible, progress)
    evals = _rollback_logs(run_dir, start) if resuming else []
    metrics_log, episodes_log = JsonlLog(run_dir / "metrics.jsonl"), JsonlLog(run_dir / "episodes.jsonl")
    evals_log = JsonlLog(run_dir / "evals.jsonl")
    rows: list[dict[str, Any]] = []  # this process's metrics rows
    try:
        # the evaluation due at ``start`` (before training; after the warm start or an eval_every
        # step whose evaluation the kill cut short)
        if _eval_due(t, start, total) and start not in {e["step"] for e in evals}:
            evals.append(evaluate(cfg, backends, dev_tasks, start, episodes_log, evals_log))
        order = _order(eligible, t.seed, state["epoch"])
        bar, stopped_at = None, None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=start, desc=f"train {cfg.recipe}", unit="step", file=sys.stderr)
        for step in range(start + 1, total + 1):
            batch = []
            while len(batch) < t.questions:
                if state["cursor"] >= len(order):
                    state["epoch"] += 1
                    state["cursor"] = 0
                    order = _order(eligible, t.seed, state["epoch"])
                batch.append(train_tasks[order[state["cursor"]]])
                state["cursor"] += 1
            if step <= t.warm_start:
                row = warm_start_step(
                    cfg,
                    backends,
                    optimizer,
                    scheduler,
                    batch,
                    pool,
                    step,
                    traces,
                    {x.id: x for x in train_tasks},
                )
            else:
                row = train_step(cfg, backends, optimizer, scheduler, batch, pool, step, episodes_log)
            metrics_log.append(row)
            if row.get("no_signal") and not any(r.get("no_signal") for r in rows):
                print(
                    f"[train] step {step}: {row['no_signal']}: this step cannot teach the policy what is "
                    "right (the run summary counts such steps)",
                    file=sys.stderr,
                )
            rows.append(row)
            if step % t.checkpoint_every == 0 or step in (t.warm_start, total):
                save_checkpoint(run_dir, step, model, optimizer, scheduler, state, keep=t.keep_checkpoints)
            # evaluations: every eval_every steps, and after the warm start (what SFT alone did)
            if _eval_due(t, step, total):
                evals.append(evaluate(cfg, backends, dev_tasks, step, episodes_log, evals_log))
            if bar is not None:
                bar.set_postfix(
                    {"reward": f"{row['reward']:.2f}"} if "reward" in row else {"phase": "warm start"},
                    loss=f"{row['loss']:.3f}",
                    refresh=False,
                )
                bar.update(1)
            if should_stop is not None and step < total and should_stop():
                stopped_at = step
                if not (step % t.checkpoint_every == 0 or step == t.warm_start):
                    save_checkpoint(
                        run_dir, step, model, optimizer, scheduler, state, keep=t.keep_checkpoints
                    )
                break
        if bar is not None:
            bar.close()
        if stopped_at is None and (not evals or evals[-1]["step"] != total):
            evals.append(evaluate(cfg, backends, dev_tasks, total, episodes_log, evals_log))
    finally:
        metrics_log.close()
        episodes_log.close()
        evals_log.close()
    _save_adapter(model, run_dir / "adapter")
    summary = _summary(cfg, evals, run_dir)
    if stopped_at is not None:
        summary.update(interrupted=True, stopped_by="should_stop", stopped_at_step=stopped_at)
    write_json(run_dir / "summary.json", summary)
    return TrainResult(run_dir, summary)


def _eval_due(t, step: int, total: int) -> bool:
    """Whether an evaluation belongs at ``step`` before the loop goes on: before training, after
    the warm start, every eval_every steps (the one after the last step comes at the end)."""
    return step == 0 or (
        step != total and (step == t.warm_start or bool(t.eval_every and step % t.eval_every == 0))
    )


def _rollback_logs(run_dir: Path, start: int) -> list[dict[str, Any]]:
    """On resume: move aside every log line written after step ``start`` (the latest checkpoint,
    0 when none was written): metrics, evaluations, training episodes, and the episodes of an
    evaluation whose row never reached evals.jsonl. Returns the evaluations kept, in order."""
    moved = {"metrics.jsonl": rollback(run_dir / "metrics.jsonl", start, lambda r: _int_step(r.get("step")))}
    moved["evals.jsonl"] = rollback(run_dir / "evals.jsonl", start, lambda r: _eval_row_step(r))
    read = read_jsonl(run_dir / "evals.jsonl", missing_ok=True)
    evals = sorted(read.rows, key=lambda r: r["step"])
    done = {r["step"] for r in evals}

    def episode_step(r: dict[str, Any]) -> float | None:
        meta = r.get("meta")
        if not isinstance(meta, dict):
            return math.inf
        if "train_step" in meta:
            return _int_step(meta["train_step"])
        if meta.get("eval"):
            s = meta.get("eval_step")
            return s if s in done and _int_step(s) != math.inf else math.inf
        return None

    moved["episodes.jsonl"] = rollback(run_dir / "episodes.jsonl", start, episode_step)
    for name, n in moved.items():
        if n:
            print(
                f"[train] resume at step {start}: {n} line(s) of {name} from later steps moved aside",
                file=sys.stderr,
            )
    return evals


def _eval_row_step(r: dict[str, Any]) -> float:
    """An evals.jsonl row's step; a row without what the summary reads is moved aside."""
    ok = (
        isinstance(r.get("correct_by_task"), dict)
        and all(isinstance(r.get(k), (int, float)) for k in ("n", "accuracy", "format_failures"))
        and isinstance(r.get("ci95"), list)
    )
    return _int_step(r.get("step")) if ok else math.inf


def _save_adapter(model, target: Path) -> None:
    """The final adapter, written beside its place and renamed in (a kill leaves the old one or the new)."""
    import shutil

    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    fsync_tree(tmp)
    old = target.with_name(f".{target.name}.old{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _order(eligible: list[int], seed: int, epoch: int) -> list[int]:
    order = list(eligible)
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def eligible_questions(tasks, pool: dict, threshold: float, mixed: bool) -> list[int]:
    """Indices of the training questions: pooled accuracy below ``threshold`` (MLPO drops what the
    pool already gets right; ``threshold >= 1`` keeps every question) and, with ``mixed``, a pool
    holding both a right and a wrong answer."""
    return [
        i
        for i, task in enumerate(tasks)
        if task.id in pool
        and (threshold >= 1.0 or pool[task.id].accuracy < threshold)
        and (not mixed or 0.0 < pool[task.id].accuracy < 1.0)
    ]


def _sft_traces(cfg, backends, run_dir: Path, train_tasks, pool, eligible, progress) -> list[dict[str, Any]]:
    """The leader's SFT targets: its own self-corrections, sampled once per run (rl/warmstart.py)
    and kept in ``sft_traces.jsonl`` (+ counts in ``sft_sampling.json``); a resumed run reads them."""
    t = cfg.train
    found = warmstart.read_traces(run_dir)
    if found is None:
        order = _order(eligible, t.seed, 0)
        chosen = [train_tasks[i] for i in (order[: t.sft_questions] if t.sft_questions else order)]
        traces, counts = warmstart.sample_leader_traces(
            chosen, pool, backends.policy, cfg.protocol.resolved, t, cfg.pool.mixed, progress
        )
        warmstart.write_traces(run_dir, traces, counts)
    else:
        traces, counts = found
    by = counts["by_reason"]
    print(
        f"[train] SFT sampling: {counts['kept']} self-correction traces in {counts['samples']} leader samples "
        f"(wrong majority {by['wrong_majority']}, revised {by['revised']}; rejected: wrong {by['wrong']}, "
        f"untagged {by['untagged']}, cut {by['cut']}, no correction {by['no_correction']}) -> "
        f"{run_dir / warmstart.TRACES_FILE}",
        file=sys.stderr,
    )
    if counts["too_few"]:
        print(f"[train] {warmstart.too_few_message(counts)}", file=sys.stderr)
    return traces


def _advance(scheduler) -> None:
    """The learning-rate schedule is indexed by step: it advances on every step, also one that made
    no update (no usable sample, an SFT stage without traces), so that a step's lr never depends on
    how many updates came before it. torch warns about a schedule step before any optimiser step;
    here that is intended, so that one warning is silenced (any other still shows)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
        scheduler.step()


def warm_start_step(
    cfg, backends, optimizer, scheduler, batch, pool, step: int, traces=None, tasks_by_id=None
) -> dict[str, Any]:
    """One supervised step (rl/warmstart.py): the leader's sampled self-corrections, the Conductor's
    and the central agent's format demonstrations; returns the metrics row."""
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    if cfg.sampled_traces:
        demos = warmstart.trace_samples(
            traces or [], tasks_by_id or {}, cfg.train.seed, step, cfg.train.questions
        )
        extra["sft_traces"] = len(traces or [])
        if not demos:
            extra["sft_skipped"] = "too few self-correction traces (summary.json: sft_sampling)"
    else:
        demos = demonstrations(
            cfg.recipe,
            batch,
            pool,
            backends.policy,
            cfg.protocol.resolved,
            cfg.train.seed,
            step,
            cfg.pool.mixed,
            team=cfg.build_team(),
        )
        if cfg.recipe in ("maestro", "leader") and demos:  # the random picks' share of right answers: chance
            extra["demo_picks_right"] = round(float(np.mean([s.info["pick_correct"] for s in demos])), 4)
    stats = _optimise(cfg, backends, optimizer, demos, None, [], sft=True)
    _advance(scheduler)
    _release_memory()
    return {
        "step": step,
        "phase": "warm_start",
        "lr": optimizer.param_groups[0]["lr"],
        "samples": len(demos),
        "completion_length": float(np.mean([len(s.completion_ids) for s in demos])) if demos else 0.0,
        **{k: round(v, 6) for k, v in stats.items() if k in ("loss", "entropy", "grad_norm")},
        **extra,
        "step_s": round(time.perf_counter() - t0, 2),
        **_memory(),
    }


def train_step(cfg, backends, optimizer, scheduler, batch, pool, step: int, episodes_log) -> dict[str, Any]:
    """One optimiser step on ``batch`` questions; returns the step's metrics row."""
    t, recipe, role = cfg.train, cfg.recipe, cfg.role
    t0 = time.perf_counter()
    slates: list[Slate] = []
    errors: list[dict] = []
    if t.rollout == "offline":
        samples, slates = offline_samples(
            recipe,
            batch,
            pool,
            backends.policy,
            cfg.protocol.resolved,
            t,
            step,
            with_slates=t.objective == "clpo" and t.w_rank > 0,
            mixed=cfg.pool.mixed,
        )
    else:
        strict = {"lenient": False} if recipe == "maestro" else {}  # training reads decisions strictly
        protocol = ProtocolConfig(
            recipe, {**cfg.protocol.options, **trainee_options(recipe, role, t.max_tokens), **strict}
        )
        samples, errors = online_samples(
            recipe, role, batch, backends, protocol, t, step, cfg.build_team(), pool_backends(cfg, backends)
        )
    if t.objective != "sft":
        check_groups(samples, step, errors)  # a group of fewer than two stops the run, with the reason
    t_roll = time.perf_counter() - t0
    rewards = torch.tensor([s.reward for s in samples], dtype=torch.float32)
    groups = torch.tensor([s.group for s in samples], dtype=torch.long)
    scale = "none" if t.objective == "dr_grpo" else "group"
    adv = obj.group_advantages(rewards, groups, scale=scale) if samples else rewards
    if t.objective == "clpo":  # logged: CLPO's decision advantage r(chosen) - mean_k r(c_k), r = 0 on a
        # format failure (objectives.clpo_loss computes the same from the slate and the pick)
        adv = torch.tensor([s.reward - float(np.mean(s.info["slate_correct"])) for s in samples])
    stats = _optimise(cfg, backends, optimizer, samples, adv, slates)
    _advance(scheduler)
    # ---- the episodes, with their advantage (the viewer colours training episodes by it) ----
    logged, within = set(), Counter()
    for s, a in zip(samples, adv.tolist(), strict=True):
        ep = s.episode
        if ep is None:  # a fresh episode per offline sample (never deduplicated: once logged and
            # freed, its id() can be reused by the next one, which was then skipped)
            ep = offline_episode(recipe, role, s, step, within[s.group])
            within[s.group] += 1
        elif id(ep) in logged:  # online: samples of one episode share it (kept alive by `samples`)
            continue
        else:
            logged.add(id(ep))
        ep.meta["advantage"] = round(a, 4)
        ep.reward = s.reward
        episodes_log.append(ep.to_dict())
    row = _metrics(cfg, samples, rewards, groups, stats, step, optimizer)
    _release_memory()
    row.update(
        phase="rl",
        rollout_s=round(t_roll, 2),
        step_s=round(time.perf_counter() - t0, 2),
        rollout_errors=len(errors),
        **_memory(),
    )
    if errors:
        print(
            f"[train] step {step}: {len(errors)} rollout episode(s) failed, e.g. {errors[0]}", file=sys.stderr
        )
    why = no_signal(t.objective, row)
    if why:
        row["no_signal"] = why
    return row


def no_signal(objective: str, row: dict[str, Any]) -> str | None:
    """Why an RL step's samples could not teach the policy what is right, or None.

    Every sample a format failure: every reward is 0, so GRPO's and Dr. GRPO's advantages are all
    zero, SFT has nothing to imitate, and CLPO's decision term can only push down what was sampled
    (its advantage is -mean(slate) for a failure). Every group with one reward: zero advantages."""
    if not row.get("samples"):
        return None
    if row.get("format_failure_rate") == 1.0:
        return "every sample was a format failure (reward 0)"
    if objective in ("grpo", "dr_grpo") and row.get("frac_reward_zero_std") == 1.0:
        return "every group's samples had the same reward (zero advantages)"
    if objective == "sft" and row.get("accuracy") == 0.0:
        return "no sample was right (nothing to imitate)"
    return None


def no_signal_message(objective: str, rows: list[dict[str, Any]]) -> str | None:
    """One line when RL steps had no signal (``no_signal``), with what to do; None when all had."""
    rl = [r for r in rows if r.get("phase") == "rl"]
    silent = [r for r in rl if r.get("no_signal")]
    if not silent:
        return None
    reasons = Counter(r["no_signal"] for r in silent)
    what = "; ".join(f"{n} x {why}" for why, n in reasons.most_common())
    hint = (
        "the untrained role may not write the format its reward reads (strict <choice>j</choice> for "
        "the central agent, <answer> tags for the leader, a parseable plan for the Conductor): check the evaluation's format failures; a "
        "larger base model, or a warm start on the format, gives the reward something to see"
        if any("format failure" in w for w in reasons)
        else "raise train.group or train.temperature, or use questions the policy sometimes gets right"
    )
    tail = (
        " CLPO's decision term then only lowers the probability of what was sampled."
        if objective == "clpo" and any("format failure" in w for w in reasons)
        else " Those steps did not move the policy toward anything."
    )
    return f"{len(silent)} of {len(rl)} RL steps had no reward signal ({what}).{tail} Likely cause: {hint}."


def _optimise(
    cfg, backends, optimizer, samples: list[Sample], adv, slates, sft: bool = False
) -> dict[str, float]:
    """Loss over micro-batches (gradients accumulate), clipping, one optimiser step.

    Every loss is a function of rl/objectives.py, the ones its tests check: ``sft_loss`` (``sft``
    or ``objective=sft``: the completions that are right), ``grpo`` / ``dr_grpo`` (``adv``: the
    group advantages), ``clpo_loss`` (its four terms, with ``slates``' justifications). A
    micro-batch's loss is weighted by its share of the samples (``len(mb) / n``), as TRL divides by
    the number of accumulation steps; with one micro-batch the step's loss is the objective's."""
    t = cfg.train
    sft = sft or t.objective == "sft"
    clpo = t.objective == "clpo" and not sft
    model, pad = backends.model, backends.policy.pad_id
    backends.before_loss()  # the vLLM engine may sleep through the loss pass
    gap = LogprobGap()  # the rollout engine's sampling log-probs vs the scores below
    model.train()
    optimizer.zero_grad(set_to_none=True)
    totals = {"loss": 0.0, "kl": 0.0, "clip_ratio": 0.0, "entropy": 0.0, "rank_loss": 0.0, "dec_loss": 0.0}
    n = len(samples)
    # a GRPO group's prompt runs once (policy._shared_prompt_states); not under Unsloth, whose
    # patched training forward is not known to take a KV cache with gradients (unverified: no GPU)
    shared = not t.use_unsloth
    if sft:
        keep = [i for i, s in enumerate(samples) if s.correct]
        samples, n = [samples[i] for i in keep], len(keep)
    slate_of = {s.group: s for s in slates}
    for s0 in range(0, n, t.micro_batch):
        mb = samples[s0 : s0 + t.micro_batch]
        share = len(mb) / n
        prompts, completions = [s.prompt_ids for s in mb], [s.completion_ids for s in mb]
        # SFT fits the model's own distribution (T = 1, what greedy decoding reads); the policy
        # gradient scores the tokens under the distribution they were sampled from (train.temperature)
        temperature = 1.0 if sft else t.temperature
        scores = completion_logprobs(
            model,
            prompts,
            completions,
            temperature=temperature,
            pad_id=pad,
            with_entropy=True,
            entropy_grad=clpo and t.w_ent > 0,  # −w_ent·H must carry gradient to move the policy
            share_prompts=shared,
        )  # logp, mask, entropy: (B, T)
        if not sft:
            gap.add(scores.logp, scores.mask, [s.sample_logprobs for s in mb])
        ref = None
        if not sft and t.beta > 0:
            with adapter_disabled(model):  # the reference policy: the base model
                ref = completion_logprobs(
                    model, prompts, completions, temperature=t.temperature, pad_id=pad, share_prompts=shared
                ).logp  # (B, T)
        if sft:
            out = obj.sft_loss(scores.logp, scores.mask)
        elif clpo:
            out = obj.clpo_loss(**_clpo_batch(cfg, model, pad, mb, scores, ref, slate_of, shared))
        else:
            loss_fn = obj.dr_grpo if t.objective == "dr_grpo" else obj.grpo
            extra = {"max_completion_length": t.max_tokens} if t.objective == "dr_grpo" else {}
            out = loss_fn(
                scores.logp,
                None,  # on-policy: one update per sample, ρ = 1 in value
                adv[s0 : s0 + len(mb)].to(scores.mask.device),
                scores.mask,
                ref_logp=ref,
                beta=t.beta,
                epsilon_low=t.epsilon,
                epsilon_high=t.epsilon,
                **extra,
            )
        (out.loss * share).backward()
        totals["loss"] += float(out.loss.detach()) * share
        totals["kl"] += out.stats.get("kl", 0.0) * share
        totals["clip_ratio"] += out.stats.get("clip_ratio", 0.0) * share
        totals["rank_loss"] += out.stats.get("rank", 0.0) * share
        totals["dec_loss"] += out.stats.get("dec", 0.0) * share
        with torch.no_grad():
            ent = (scores.entropy * scores.mask).sum() / scores.mask.sum().clamp(min=1)
        totals["entropy"] += float(ent) * share
    totals.update(gap.stats())
    gap.check(t.max_logprob_gap, t.rollout_engine)
    grad_norm = (
        float(
            torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.requires_grad], t.max_grad_norm
            )
        )
        if n
        else 0.0
    )
    if n:
        optimizer.step()
    model.eval()
    totals["grad_norm"] = grad_norm
    return totals


def _clpo_batch(cfg, model, pad, mb: list[Sample], scores, ref, slate_of: dict, shared: bool) -> dict:
    """``clpo_loss``'s arguments for a micro-batch of the central agent's samples.

    Decision term on the decision tokens (up to ``</choice>``; a decision that never closes: the
    tokens a decision takes, see rollouts._decision_length); KL on every sampled token, whatever
    w_dec is; entropy over every sampled token; the justifications of each sample's slate
    (scored once per slate in the micro-batch, then indexed out to its samples). A format failure
    is ``chosen = -1``: reward 0 for the decision term."""
    t = cfg.train
    dec_mask = _decision_mask(mb, scores.mask)  # (B, T)
    slate_rewards = torch.tensor([[float(c) for c in s.info["slate_correct"]] for s in mb])  # (B, m)
    chosen = torch.tensor([-1 if s.info.get("pick") is None else s.info["pick"] for s in mb])  # (B,)
    m = slate_rewards.shape[1]
    groups = sorted({s.group for s in mb})
    if t.w_rank > 0:
        sl = [slate_of[g] for g in groups]  # offline_samples(with_slates=True) gave one per question
        sc = completion_logprobs(
            model,
            [p for s in sl for p in s.prompt_ids],
            [r for s in sl for r in s.rationale_ids],
            temperature=t.temperature,
            pad_id=pad,
            share_prompts=shared,
        )  # (S·m, T2)
        row = torch.tensor([groups.index(s.group) for s in mb])
        rationale_logp = sc.logp.view(len(sl), m, -1)[row]  # (B, m, T2)
        rationale_mask = sc.mask.view(len(sl), m, -1)[row]
    else:  # w_rank = 0: no justification is sampled, the ranking term is 0
        rationale_logp = scores.logp.new_zeros((len(mb), m, 1))
        rationale_mask = torch.zeros_like(rationale_logp)
    device = scores.logp.device
    return dict(
        dec_logp=scores.logp,
        dec_old_logp=None,
        dec_mask=dec_mask,
        slate_rewards=slate_rewards.to(device),
        chosen=chosen.to(device),
        rationale_logp=rationale_logp,
        rationale_mask=rationale_mask,
        ref_logp=ref,
        ref_mask=scores.mask if ref is not None else None,
        entropy=scores.entropy if t.w_ent > 0 else None,
        entropy_mask=scores.mask,
        w_dec=t.w_dec,
        w_rank=t.w_rank,
        beta=t.beta,
        w_ent=t.w_ent,
        epsilon=t.epsilon,
        ties=t.ties,
    )


def _release_memory() -> None:
    """Hand freed memory back to the system after a step. Training on CPU allocates large
    tensors of a different shape every step (prompt and completion lengths vary); glibc keeps the
    freed blocks in arenas. A 30-step run's resident size grew to 24 GB by step 14 and the kernel
    killed it; returning freed blocks with ``malloc_trim`` after each step is the suspected fix,
    not yet confirmed by a long run: ``rss_gb`` in metrics.jsonl shows whether it holds."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def _memory() -> dict[str, float]:
    """Resident memory now and at its peak (GiB), and the GPU's peak where there is one."""
    import resource

    out = {"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    try:
        with open("/proc/self/statm") as f:
            out["rss_gb"] = round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30, 2)
    except (OSError, ValueError):
        pass
    out.update(gpu_memory_now())  # this step's GPU peak (then reset) and the device's use, vLLM's included
    return out


def _decision_mask(mb: list[Sample], mask: torch.Tensor) -> torch.Tensor:
    """CLPO: only the decision tokens carry the decision term: up to ``</choice>``, or, for a decision
    that never closes, the first tokens a decision takes (rollouts set ``decision_tokens``); never the
    whole completion."""
    out = mask.clone()
    for b, s in enumerate(mb):
        if s.decision_tokens is not None:
            out[b, s.decision_tokens :] = 0
    return out


def _metrics(cfg, samples, rewards, groups, stats, step, optimizer) -> dict[str, Any]:
    row: dict[str, Any] = {"step": step, "lr": optimizer.param_groups[0]["lr"]}
    if samples:
        stds = [float(rewards[groups == g].std(unbiased=False)) for g in groups.unique()]
        row.update(
            reward=float(rewards.mean()),
            reward_std=float(np.mean(stds)),
            frac_reward_zero_std=float(np.mean([s == 0 for s in stds])),
            accuracy=float(np.mean([s.correct for s in samples])),
            format_failure_rate=float(np.mean([s.format_failure for s in samples])),
            completion_length=float(np.mean([len(s.completion_ids) for s in samples])),
            samples=len(samples),
            groups=len(stds),
            # later-round groups (recursion) with one sample: advantage 0 (rollouts.check_groups)
            small_groups=int(sum(int((groups == g).sum()) < 2 for g in groups.unique())),
        )
        with_lp = [s for s in samples if s.sample_logprobs]
        if with_lp:
            row["sampled_logprob"] = float(np.mean([np.mean(s.sample_logprobs) for s in with_lp]))
    else:
        row.update(reward=0.0, reward_std=0.0, frac_reward_zero_std=1.0, accuracy=0.0, samples=0)
    if cfg.recipe == "maestro" and cfg.train.rollout == "offline" and samples:
        covered = [s for s in samples if s.info.get("coverage")]
        row["coverage"] = len(covered) / len(samples)
        row["identification"] = float(np.mean([s.correct for s in covered])) if covered else None
    row.update({k: round(v, 6) for k, v in stats.items()})
    return row


# ---------------------------------------------------------------- evaluation
def evaluate(
    cfg: TrainConfig, backends: PolicyBackends, tasks, step: int, episodes_log, evals_log
) -> dict[str, Any]:
    """The protocol on the dev split, the trained role on the current policy at its configured
    (eval) sampling, every other role frozen: a fixed inference budget, before and after."""
    protocol = ProtocolConfig(cfg.recipe, {**cfg.protocol.options, **trainee_options(cfg.recipe, cfg.role)})
    t0 = time.perf_counter()
    episodes, errors, _ = run_episodes(
        tasks,
        protocol,
        {**pool_backends(cfg, backends), "policy": backends.policy},
        seed=cfg.train.seed,
        max_in_flight=cfg.eval.max_in_flight,
        team=cfg.training_team(),
    )
    episodes.sort(key=lambda e: e.index)
    for ep in episodes:
        ep.meta.update(eval=True, eval_step=step)
        episodes_log.append(ep.to_dict())
    k, n = sum(e.correct for e in episodes), len(episodes)
    lo, hi = wilson_ci(k, n)
    row = {
        "step": step,
        "split": cfg.eval.split,
        "n": n,
        "accuracy": round(k / n, 4) if n else 0.0,
        "ci95": [round(lo, 4), round(hi, 4)],
        "format_failures": sum(e.format_failure for e in episodes),
        # maestro: central decisions read leniently (no well-formed <choice>; evaluation's reading)
        "lenient_decisions": sum(int(e.meta.get("lenient_decisions", 0)) for e in episodes),
        "generations_per_query": round(sum(e.usage.calls for e in episodes) / max(n, 1), 2),
        "tokens_per_query": round(
            sum(e.usage.prompt_tokens + e.usage.completion_tokens for e in episodes) / max(n, 1), 1
        ),
        "errors": len(errors),
        "wall_s": round(time.perf_counter() - t0, 1),
        "correct_by_task": {e.task_id: bool(e.correct) for e in episodes},
    }
    evals_log.append(row)
    return row


def _summary(cfg: TrainConfig, evals: list[dict[str, Any]], run_dir: Path) -> dict[str, Any]:
    before, after = evals[0], evals[-1]
    pair = paired_outcomes(
        [{"task_id": k, "correct": v} for k, v in after["correct_by_task"].items()],
        [{"task_id": k, "correct": v} for k, v in before["correct_by_task"].items()],
    )
    strip = lambda e: {k: v for k, v in e.items() if k != "correct_by_task"}  # noqa: E731
    sft = read_json(run_dir / warmstart.SAMPLING_FILE) if cfg.sampled_traces else None
    if isinstance(sft, dict) and sft.get("too_few"):
        sft = {**sft, "message": warmstart.too_few_message(sft)}
    metrics = read_jsonl(run_dir / "metrics.jsonl", missing_ok=True).rows  # a resumed run's too
    return {
        "recipe": cfg.recipe,
        "objective": cfg.train.objective,
        "rollout": cfg.train.rollout,
        "steps": cfg.train.steps,
        "warm_start": cfg.train.warm_start,
        "before": strip(before),
        "after_warm_start": next(
            (strip(e) for e in evals if cfg.train.warm_start and e["step"] == cfg.train.warm_start), None
        ),
        "after": strip(after),
        "after_vs_before": pair,  # only_a_right = right after training only
        # the leader's SFT stage: how many self-corrections sampling found, by reason (sft_traces.jsonl)
        "sft_sampling": sft if isinstance(sft, dict) else None,
        # RL steps whose samples could not teach the policy what is right (format failures, ...)
        "no_signal_steps": sum(1 for r in metrics if r.get("phase") == "rl" and r.get("no_signal")),
        "no_signal": no_signal_message(cfg.train.objective, metrics),
        "adapter": str(run_dir / "adapter"),
        "serve": f"workbench serve --model {cfg.model.name}+{run_dir / 'adapter'}",
    }
