"""Task mixtures: ``mix:FAMILY,FAMILY,...`` with weights, so that which worker is right depends on the item.

    --task mix:arithmetic,bbh:date_understanding,mmlu:stem --set task.weights=2,1,1 task.limit=40

* Each component is any task name except another mixture (``bbh:SUBTASK``, ``mmlu:stem``,
  ``jsonl:PATH``, ...). ``task.weights`` (default: equal) splits ``task.limit`` items between them
  by largest remainders; each component contributes the first items of its own split in its own
  fixed order, exactly as ``--task COMPONENT --limit K`` would load them.
* Splits are per family: ``task.split=dev`` takes every component's dev split; a component without
  that split is a one-line error naming it.
* Each item keeps its own verifier and metadata; its id is prefixed ``COMPONENT/`` and
  ``meta["family"]`` names the component (episodes record it as ``meta.family``), so analysis can
  split results by family.
* The order of the items is shuffled with ``task.seed``: the same seed gives the same items in the
  same order.
* A component takes its own family's options as ``task.COMPONENT.KEY=VALUE``
  (``--set task.arithmetic.digits=2``: the arithmetic items of the mix are two-digit, as
  ``--task arithmetic --set task.digits=2`` would load them); a key that is neither ``weights`` nor a
  listed component is a one-line error.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from workbench.tasks.base import Task, TaskError

MAX_COMPONENTS = 32
MIX_KEYS = ("weights",)  # the mixture's own options (MixOptions); any other key names a component


@dataclass(frozen=True)
class MixOptions:
    weights: tuple[float, ...] = ()  # one per component, > 0 (default: equal)


def components(name: str) -> list[str]:
    """``mix:a,b:c`` -> ``["a", "b:c"]``; TaskError when empty, repeated or nested."""
    parts = [p.strip() for p in name.partition(":")[2].split(",")]
    if not name.partition(":")[2].strip() or not all(parts):
        raise TaskError(
            f"task {name[:80]!r}: list the families after mix:, e.g. mix:arithmetic,bbh:date_understanding"
        )
    if len(parts) > MAX_COMPONENTS:
        raise TaskError(f"task mix: {len(parts)} families, at most {MAX_COMPONENTS}")
    for p in parts:
        if p.split(":", 1)[0] == "mix":
            raise TaskError(f"task mix: component {p[:60]!r} is a mixture; list its families directly")
    twice = sorted({p for p in parts if parts.count(p) > 1})
    if twice:
        raise TaskError(
            f"task mix: family {twice[0][:60]!r} is listed twice; give it a larger weight instead"
        )
    return parts


def component_options(parts: list[str], options: dict) -> tuple[dict, dict[str, dict]]:
    """The mixture's own options (``weights``) and each component's: ``{COMPONENT: {KEY: VALUE}}``
    from ``task.COMPONENT.KEY=VALUE``. TaskError for a key that is neither, or a component given a
    value instead of options."""
    own = {k: v for k, v in options.items() if k in MIX_KEYS}
    per: dict[str, dict] = {}
    for key, value in options.items():
        if key in MIX_KEYS:
            continue
        if key not in parts:
            raise TaskError(
                f"task mix: option {str(key)[:60]!r} is neither the mixture's (weights) nor a listed "
                f"component's; give a component its options as task.COMPONENT.KEY=VALUE, e.g. "
                f"task.{parts[0]}.KEY=VALUE"
            )
        if not isinstance(value, dict):
            raise TaskError(
                f"task mix: task.{key} is the options of component {key!r}: set them as "
                f"task.{key}.KEY=VALUE, got {str(value)[:60]!r}"
            )
        per[key] = value
    return own, per


def check_weights(parts: list[str], weights: tuple[float, ...]) -> list[float]:
    """The weights of ``parts`` (equal when none given); TaskError for a wrong count or value."""
    if not weights:
        return [1.0] * len(parts)
    if len(weights) != len(parts):
        raise TaskError(
            f"task.weights has {len(weights)} values for {len(parts)} families ({', '.join(parts)}); give one each"
        )
    for p, w in zip(parts, weights, strict=True):
        if not (math.isfinite(w) and w > 0):
            raise TaskError(f"task.weights: the weight of {p[:60]!r} must be a number > 0, got {w!r}")
    return list(weights)


def counts(limit: int, weights: list[float]) -> list[int]:
    """``limit`` items split by weight (largest remainders; ties to the earlier component)."""
    total = sum(weights)
    exact = [limit * w / total for w in weights]
    out = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: limit - sum(out)]:
        out[i] += 1
    return out


def load(
    name: str, split: str, limit: int, seed: int, options: MixOptions, load_one
) -> tuple[list[Task], list[str]]:
    """The mixture's items. ``load_one(component, split, limit)`` -> TaskSet loads one family."""
    parts = components(name)
    weights = check_weights(parts, options.weights)
    tasks: list[Task] = []
    skipped: list[str] = []
    for part, k in zip(parts, counts(limit, weights), strict=True):
        if k == 0:
            continue
        try:
            loaded = load_one(part, split, k)
        except TaskError as e:
            raise TaskError(f"task mix, family {part[:60]!r}: {e}") from None
        if len(loaded.tasks) < k:
            raise TaskError(
                f"task mix: family {part[:60]!r} has {len(loaded.tasks)} items in its {split} split and the mix "
                f"asks for {k}; lower task.limit or its weight"
            )
        skipped += [f"{part}: {m}" for m in loaded.skipped]
        tasks += [replace(t, id=f"{part}/{t.id}", meta={**t.meta, "family": part}) for t in loaded.tasks[:k]]
    random.Random(f"mix|{seed}").shuffle(tasks)
    return tasks, skipped
