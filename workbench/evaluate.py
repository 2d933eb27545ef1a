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
from workbench.protocols import PROTOCOLS, Budget, EpisodeContext, Member, Team
from workbench.protocols.base import member_fields, play
from workbench.runs import RunWriter, Terminated, default_root, manifest, new_run_dir, summarize
from workbench.scheduler import BatchScheduler, run_all, run_sync
from workbench.tasks import TaskConfig, TaskSet, load_tasks


@dataclass(frozen=True)
class ModelConfig:
    name: str = "smollm2"  # smollm2 (embedded) | org/name (hub) | local path; +ADAPTER_DIR adds a LoRA
    # | openai:URL#MODEL (an OpenAI-compatible server) | vllm:MODEL[+ADAPTER_DIR] (CUDA GPU)
    dtype: str = "auto"  # auto (bf16 where the CPU/GPU has it, else fp32) | bf16 | fp32 | fp16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_batch_size: int = 64  # rows per forward pass; lower it if memory is short
    # openai: the NAME of the env variable holding the API key ("" = OPENAI_API_KEY for a remote URL,
    # none for localhost; "none" = never send one). The key itself is never written anywhere.
    api_key_env: str = ""
    timeout_s: float = 120.0  # openai: per HTTP request; timed-out requests are retried
    max_concurrency: int = 32  # openai: requests in flight at once (server batch / provider rate limit)
    max_retries: int = 4  # openai: retries on 429, 5xx, timeouts, connection errors (exponential backoff)
    gpu_memory_utilization: float = 0.9  # vllm: share of GPU memory for weights + KV cache
    max_model_len: int = 0  # vllm: context cap (0 = the model's); lower it if the KV cache does not fit
    max_lora_rank: int = 64  # vllm: must be >= the adapter's rank r

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError(f"model.max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.timeout_s <= 0 or self.max_concurrency < 1 or self.max_retries < 0:
            raise ConfigError(
                "model.timeout_s must be > 0, model.max_concurrency >= 1 and model.max_retries >= 0; got "
                f"{self.timeout_s}, {self.max_concurrency}, {self.max_retries}"
            )


@dataclass(frozen=True)
class ProtocolConfig:
    name: str = "single"
    options: dict[str, Any] = field(default_factory=dict)  # validated against the protocol's config class

    def __post_init__(self) -> None:
        if self.name not in PROTOCOLS:
            raise ConfigError(f"unknown protocol '{self.name}'; available: {', '.join(PROTOCOLS)}")
        resolved = from_dict(PROTOCOLS[self.name].config, self.options, prefix="protocol.")
        object.__setattr__(self, "options", to_dict(resolved))

    @classmethod
    def from_flat(cls, data: dict[str, Any]) -> ProtocolConfig:
        """Accept ``{"name": "vote", "n": 5}``: keys other than ``name`` are the protocol's options."""
        return from_dict(cls, split_options(data, ("name",), "protocol"), prefix="protocol.")

    @property
    def resolved(self):
        return from_dict(PROTOCOLS[self.name].config, self.options)


@dataclass(frozen=True)
class MemberConfig:
    """A team member (``--set team.NAME.KEY=VALUE``): a model plus sampling/persona overrides."""

    model: str = "default"  # a key of `models` ("default" is the `model` section)
    temperature: float | None = None  # overrides the protocol's temperature for this member's roles
    top_p: float | None = None
    system: str | None = None  # a persona: overrides the protocol's system prompt


@dataclass(frozen=True)
class EvalConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    model: ModelConfig = field(default_factory=ModelConfig)  # the "default" model
    # More models for heterogeneous teams, by name: --set models.big.name=org/model models.api.name=openai:URL#M
    models: dict[str, Any] = field(default_factory=dict)
    # Team members, by name: --set team.hot.temperature=0.9 team.api.model=api; protocols bind roles to
    # members through their *_member(s) options (e.g. protocol.explorer_members=[default,hot])
    team: dict[str, Any] = field(default_factory=dict)
    budget: Budget = field(default_factory=Budget)  # per-episode cap: budget.max_calls, budget.max_tokens
    seed: int = 0  # seeds every sampled generation (derived per task and call); items stay the same
    max_in_flight: int = 256  # episodes run concurrently; their ready generations go to the model together
    out: str = ""  # run folder; default runs/<time>-<task>-<protocol>

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        models = {"default": self.model} | {
            name: from_dict(
                ModelConfig, spec if isinstance(spec, dict) else {"name": spec}, prefix=f"models.{name}."
            )
            for name, spec in self.models.items()
        }
        object.__setattr__(self, "models", {k: to_dict(v) for k, v in models.items() if k != "default"})
        members = {
            name: from_dict(MemberConfig, spec or {}, prefix=f"team.{name}.")
            for name, spec in self.team.items()
        }
        for name, member in members.items():
            if member.model not in models:
                raise ConfigError(
                    f"team.{name}.model='{member.model}' is not a model; have: {', '.join(models)} "
                    f"(add one with --set models.{member.model}.name=SPEC)"
                )
        object.__setattr__(self, "team", {k: to_dict(v) for k, v in members.items()})
        team = self.build_team()
        for key, names in member_fields(self.protocol.resolved).items():
            if not names:  # an empty list would fail inside every episode (i % 0)
                raise ConfigError(
                    f"protocol.{key} must name at least one team member, e.g. --set protocol.{key}=default"
                )
            for name in names:
                team.member(name)  # raises ConfigError naming the missing member and the fix

    def build_team(self) -> Team:
        """The Team the protocol binds its roles to; a member's backend is its model's name."""
        members = [Member("default")] + [
            Member(name, m["model"], m["temperature"], m["top_p"], m["system"])
            for name, m in self.team.items()
        ]
        return Team(tuple(members))

    def model_configs(self) -> dict[str, ModelConfig]:
        """Every model the team uses, by backend name ("default" is the `model` section)."""
        used = set(self.build_team().backends)
        configs = {"default": self.model} | {k: from_dict(ModelConfig, v) for k, v in self.models.items()}
        return {k: v for k, v in configs.items() if k in used}

    @classmethod
    def build(cls, overrides: dict[str, Any] | None = None, **top: Any) -> EvalConfig:
        """From keyword shortcuts (task=, protocol=, model=, limit=, seed=, out=) and nested overrides.

        Sections accept flat keys: ``{"task": {"digits": 2}}`` sets an arithmetic option and
        ``{"protocol": {"n": 5}}`` a protocol option.
        """
        data: dict[str, Any] = {
            "task": {},
            "protocol": {},
            "model": {},
            "models": {},
            "team": {},
            "budget": {},
        }
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
        for section in SECTIONS:
            if not isinstance(data[section], dict):
                raise ConfigError(f"'{section}' is a section; set its keys, e.g. --set {section}.name=...")
        # seed, max_in_flight, out; anything else at the top level is an unknown key
        top_level = from_dict(_TopLevel, {k: v for k, v in data.items() if k not in SECTIONS})
        return cls(
            task=TaskConfig.from_flat(data["task"]),
            protocol=ProtocolConfig.from_flat(data["protocol"]),
            model=from_dict(ModelConfig, data["model"], prefix="model."),
            models=data["models"],
            team=data["team"],
            budget=from_dict(Budget, data["budget"], prefix="budget."),
            seed=top_level.seed,
            max_in_flight=top_level.max_in_flight,
            out=top_level.out,
        )


SECTIONS = ("task", "protocol", "model", "models", "team", "budget")


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
        "backend_calls": len(sizes),
        "mean_batch_size": round(sum(sizes) / len(sizes), 2) if sizes else 0.0,
    }
    return episodes, errors, stats


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ep", file=sys.stderr, dynamic_ncols=True)


def load_model(mc: ModelConfig) -> Backend:
    """Load one model section (every ModelConfig field is a load_backend option of the same name)."""
    from workbench.models import load_backend

    options = to_dict(mc)
    return load_backend(options.pop("name"), **options)


def load_models(cfg: EvalConfig, given: Backend | dict[str, Backend] | None = None) -> dict[str, Backend]:
    """The backends of every model the team uses, loading the ones not ``given``."""
    given = given if isinstance(given, dict) else ({"default": given} if given is not None else {})
    return {name: given.get(name) or load_model(mc) for name, mc in cfg.model_configs().items()}


def prepare(cfg: EvalConfig) -> TaskSet:
    """Everything that can fail on user input, before any file is written: the tasks load."""
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
