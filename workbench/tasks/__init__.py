"""Tasks: one small module per benchmark family, loaded by name.

``load_tasks(TaskConfig(name="arithmetic", split="test", limit=8, options={"digits": 2}))``
Names: ``arithmetic`` (procedural), ``gsm8k``, ``math500``, ``amc23``, ``aime24``, ``bbh`` or
``bbh:<subtask>``, ``mmlu``, ``mmlu:stem`` or ``mmlu:<subject>``, ``svamp``, ``mawps``, ``gpqa`` or
``gpqa:main|extended`` (gated, online only), ``jsonl:PATH`` (your own data), ``mix:FAMILY,...`` (a
weighted mixture of the others, tasks/mix.py). Splits and sources of
each: its module's docstring and docs/tasks.md.
Family-specific options (``--set task.digits=2``) are validated against the family's options
dataclass, so a typo is an error that lists the valid keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workbench.config import ConfigError, from_dict, split_options, to_dict
from workbench.tasks import (
    aime24,
    amc23,
    arithmetic,
    bbh,
    code,
    gpqa,
    gsm8k,
    humaneval,
    jsonl,
    livecodebench,
    math500,
    mawps,
    mix,
    mmlu,
    svamp,
)
from workbench.tasks.base import Task, TaskError

__all__ = ["FAMILIES", "Task", "TaskConfig", "TaskError", "TaskSet", "load_tasks"]

# family -> options dataclass (None: the family takes no options)
FAMILIES: dict[str, type | None] = {
    "arithmetic": arithmetic.ArithmeticOptions,
    "gsm8k": None,
    "jsonl": jsonl.JsonlOptions,
    "math500": None,
    "amc23": None,
    "aime24": None,
    "bbh": None,
    "mmlu": None,
    "svamp": None,
    "mawps": None,
    "gpqa": None,
    "humaneval": None,
    "livecodebench": livecodebench.LiveCodeBenchOptions,
    "mix": mix.MixOptions,  # mix:FAMILY,FAMILY,... (tasks/mix.py)
}

# families named with a subset after a colon (bbh:date_understanding) -> the valid subsets
SUBSETS: dict[str, tuple[str, ...]] = {"bbh": bbh.SUBTASKS, "mmlu": mmlu.SUBSETS, "gpqa": gpqa.SUBSETS}
NO_SUBSET = (
    "arithmetic",
    "gsm8k",
    "math500",
    "amc23",
    "aime24",
    "svamp",
    "mawps",
    "humaneval",
    "livecodebench",
)


@dataclass(frozen=True)
class TaskConfig:
    name: str = "arithmetic"  # a family, e.g. arithmetic, gsm8k, bbh:date_understanding, jsonl:PATH
    split: str = "test"  # train | dev | test: tune on dev, report on test
    limit: int = 8  # number of items (the first `limit` of the split, in a fixed order)
    seed: int = 0  # arithmetic: which fresh items are generated (independent of the sampling seed)
    options: dict[str, Any] = field(default_factory=dict)  # family options, e.g. digits for arithmetic
    allow_unsandboxed: bool = False  # code tasks: run model code even where no OS sandbox works (unsafe)

    @property
    def family(self) -> str:
        return self.name.split(":", 1)[0]

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(
                f"unknown task '{self.name}'; available: {', '.join(sorted(FAMILIES))} (jsonl:PATH)"
            )
        if self.family == "jsonl" and not self.name.partition(":")[2]:
            raise ConfigError("the jsonl task needs a path: --task jsonl:PATH")
        subset = self.name.partition(":")[2]
        if self.family in SUBSETS and ":" in self.name and subset not in SUBSETS[self.family]:
            raise ConfigError(
                f"unknown {self.family} subset '{subset}'; available: {', '.join(SUBSETS[self.family])}"
            )
        if self.family in NO_SUBSET and ":" in self.name:
            raise ConfigError(f"{self.family} takes no subset, got '{self.name}'; use --task {self.family}")
        if self.limit < 1:
            raise ConfigError(f"task limit must be >= 1, got {self.limit}")
        if self.family == "mix":
            self._check_mix()
            return
        opts_cls = FAMILIES[self.family]
        if opts_cls is None and self.options:
            raise ConfigError(f"task '{self.family}' takes no options, got {', '.join(self.options)}")
        if opts_cls is not None:  # validate now, and store the resolved options (defaults included)
            try:
                resolved = from_dict(opts_cls, self.options, prefix="task.")
            except TaskError as e:
                raise ConfigError(str(e)) from None
            object.__setattr__(self, "options", to_dict(resolved))

    def _check_mix(self) -> None:
        """Every component is a valid task name of its own (at this split) with valid options of its
        own, the weights fit; stores the resolved options (each given component's defaults included)."""
        try:
            parts = mix.components(self.name)
            own, per = mix.component_options(parts, self.options)
            resolved = from_dict(mix.MixOptions, own, prefix="task.")
            mix.check_weights(parts, resolved.weights)
        except TaskError as e:
            raise ConfigError(str(e)) from None
        options = to_dict(resolved)
        for part in parts:
            try:
                one = TaskConfig(
                    name=part,
                    split=self.split,
                    seed=self.seed,
                    options=per.get(part, {}),
                    allow_unsandboxed=self.allow_unsandboxed,
                )
            except ConfigError as e:
                raise ConfigError(f"task mix, family {part[:60]!r}: {e}") from None
            if part in per:
                options[part] = one.options
        object.__setattr__(self, "options", options)

    @classmethod
    def from_flat(cls, data: dict[str, Any]) -> TaskConfig:
        """Accept ``{"name": ..., "digits": 2}``: keys that are not TaskConfig fields are family options."""
        own = ("name", "split", "limit", "seed", "allow_unsandboxed")
        return from_dict(cls, split_options(data, own, "task"), prefix="task.")


@dataclass
class TaskSet:
    tasks: list[Task]
    skipped: list[str]  # messages for malformed rows that were skipped (jsonl with on_bad_row=skip)


def load_tasks(cfg: TaskConfig) -> TaskSet:
    """The items of ``cfg``; a malformed data file or row is a TaskError naming it, never a traceback."""
    try:
        loaded = _load(cfg)
    except (TaskError, ConfigError):
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, RecursionError, OSError) as e:
        # a local copy whose rows lack a field or hold the wrong types (a partial download, an edit)
        what = f"{type(e).__name__}: {str(e)[:100]}"
        raise TaskError(
            f"task '{cfg.name}': a row of its {cfg.split} data is malformed ({what}); "
            "replace the data file with the public release (or fix the row)"
        ) from None
    for t in loaded.tasks:  # a field of the wrong type in a local copy would reach the prompt silently
        if not isinstance(t.prompt, str) or not t.prompt.strip() or not isinstance(t.answer, str):
            raise TaskError(
                f"task '{cfg.name}': item {str(t.id)[:60]} has a {type(t.prompt).__name__} question and a "
                f"{type(t.answer).__name__} answer (text expected); replace the data file with the public release"
            )
    return loaded


def _load(cfg: TaskConfig) -> TaskSet:
    if cfg.family == "mix":  # each component loads as its own task, with its own options
        parts = mix.components(cfg.name)
        own, per = mix.component_options(parts, cfg.options)
        one = lambda part, split, k: _load(  # noqa: E731
            TaskConfig(part, split, k, cfg.seed, per.get(part, {}), cfg.allow_unsandboxed)
        )
        return TaskSet(
            *mix.load(cfg.name, cfg.split, cfg.limit, cfg.seed, from_dict(mix.MixOptions, own), one)
        )
    opts_cls = FAMILIES[cfg.family]
    options = from_dict(opts_cls, cfg.options) if opts_cls is not None else None
    if cfg.family == "arithmetic":
        return TaskSet(arithmetic.load(cfg.split, cfg.limit, cfg.seed, options), [])
    if cfg.family == "gsm8k":
        return TaskSet(gsm8k.load(cfg.split, cfg.limit), [])
    subset = cfg.name.partition(":")[2]
    if cfg.family == "math500":
        return TaskSet(math500.load(cfg.split, cfg.limit), [])
    if cfg.family == "amc23":
        return TaskSet(amc23.load(cfg.split, cfg.limit), [])
    if cfg.family == "aime24":
        return TaskSet(aime24.load(cfg.split, cfg.limit), [])
    if cfg.family == "bbh":
        return TaskSet(bbh.load(subset, cfg.split, cfg.limit), [])
    if cfg.family == "mmlu":
        return TaskSet(mmlu.load(subset, cfg.split, cfg.limit), [])
    if cfg.family == "svamp":
        return TaskSet(svamp.load(cfg.split, cfg.limit), [])
    if cfg.family == "mawps":
        return TaskSet(mawps.load(cfg.split, cfg.limit), [])
    if cfg.family == "gpqa":
        return TaskSet(gpqa.load(subset, cfg.split, cfg.limit), [])
    if cfg.family == "humaneval":  # code tasks: refused where no OS sandbox works (workbench/tasks/code.py)
        return TaskSet(code.gated(cfg.allow_unsandboxed, lambda: humaneval.load(cfg.split, cfg.limit)), [])
    if cfg.family == "livecodebench":
        load = lambda: livecodebench.load(cfg.split, cfg.limit, options)  # noqa: E731
        return TaskSet(code.gated(cfg.allow_unsandboxed, load), [])
    if cfg.family == "jsonl":
        tasks, skipped = jsonl.load(cfg.name.partition(":")[2], cfg.limit, options)
        if not tasks:
            raise TaskError(f"no usable rows in {cfg.name} ({len(skipped)} skipped)")
        return TaskSet(tasks, skipped)
    raise ValueError(f"unknown task family {cfg.family}")
