"""Tasks: one small module per benchmark family, loaded by name.

``load_tasks(TaskConfig(name="arithmetic", split="test", limit=8, options={"digits": 2}))``
Names: ``arithmetic`` (procedural), ``gsm8k``, ``jsonl:PATH`` (your own data).
Family-specific options (``--set task.digits=2``) are validated against the family's options
dataclass, so a typo is an error that lists the valid keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workbench.config import ConfigError, from_dict, split_options, to_dict
from workbench.tasks import arithmetic, gsm8k, jsonl
from workbench.tasks.base import Task, TaskError

__all__ = ["FAMILIES", "Task", "TaskConfig", "TaskError", "TaskSet", "load_tasks"]

# family -> options dataclass (None: the family takes no options)
FAMILIES: dict[str, type | None] = {
    "arithmetic": arithmetic.ArithmeticOptions,
    "gsm8k": None,
    "jsonl": jsonl.JsonlOptions,
}


@dataclass(frozen=True)
class TaskConfig:
    name: str = "arithmetic"  # arithmetic | gsm8k | jsonl:PATH
    split: str = "test"  # train | dev | test: tune on dev, report on test
    limit: int = 8  # number of items (the first `limit` of the split, in a fixed order)
    seed: int = 0  # arithmetic: which fresh items are generated (independent of the sampling seed)
    options: dict[str, Any] = field(default_factory=dict)  # family options, e.g. digits for arithmetic

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
        if self.limit < 1:
            raise ConfigError(f"task limit must be >= 1, got {self.limit}")
        opts_cls = FAMILIES[self.family]
        if opts_cls is None and self.options:
            raise ConfigError(f"task '{self.family}' takes no options, got {', '.join(self.options)}")
        if opts_cls is not None:  # validate now, and store the resolved options (defaults included)
            try:
                resolved = from_dict(opts_cls, self.options, prefix="task.")
            except TaskError as e:
                raise ConfigError(str(e)) from None
            object.__setattr__(self, "options", to_dict(resolved))

    @classmethod
    def from_flat(cls, data: dict[str, Any]) -> TaskConfig:
        """Accept ``{"name": ..., "digits": 2}``: keys that are not TaskConfig fields are family options."""
        return from_dict(cls, split_options(data, ("name", "split", "limit", "seed")), prefix="task.")


@dataclass
class TaskSet:
    tasks: list[Task]
    skipped: list[str]  # messages for malformed rows that were skipped (jsonl with on_bad_row=skip)


def load_tasks(cfg: TaskConfig) -> TaskSet:
    opts_cls = FAMILIES[cfg.family]
    options = from_dict(opts_cls, cfg.options) if opts_cls is not None else None
    if cfg.family == "arithmetic":
        return TaskSet(arithmetic.load(cfg.split, cfg.limit, cfg.seed, options), [])
    if cfg.family == "gsm8k":
        return TaskSet(gsm8k.load(cfg.split, cfg.limit), [])
    if cfg.family == "jsonl":
        tasks, skipped = jsonl.load(cfg.name.partition(":")[2], cfg.limit, options)
        if not tasks:
            raise TaskError(f"no usable rows in {cfg.name} ({len(skipped)} skipped)")
        return TaskSet(tasks, skipped)
    raise ValueError(f"unknown task family {cfg.family}")
