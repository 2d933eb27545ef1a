"""Which runs are seeds of one experiment: the rule the cross-run comparison pools by.

Runs are pooled as seeds (mean ± sd over them, ``stats.seed_aggregate``) only when their resolved
configs (config.yaml) differ in nothing but the seed: ``seed`` (evaluation), ``train.seed``
(training) and the run folder (``out``) are set aside, everything else (task, protocol options,
models, team, budget, training settings) must be equal. An untrained and a trained leader on the
same items are two experiments, not two seeds of one: before this rule they were pooled by (task,
protocol) alone and reported as one protocol's mean 0.485 ± 0.085.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

SEED_KEYS = (("seed",), ("train", "seed"), ("out",))


def without_seed(config: dict[str, Any] | None) -> dict[str, Any]:
    """The config with the seed keys (and the run folder) removed."""
    out = json.loads(json.dumps(config or {}, default=str))  # a deep copy of plain values
    for path in SEED_KEYS:
        node = out
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return out


def config_key(config: dict[str, Any] | None) -> str:
    """A short hash of the config without its seed: equal for runs that are seeds of one experiment."""
    blob = json.dumps(without_seed(config), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def differences(a: dict[str, Any] | None, b: dict[str, Any] | None, prefix: str = "") -> list[str]:
    """The dotted keys in which two configs (seeds set aside) differ."""
    a, b = (without_seed(a), without_seed(b)) if not prefix else (a or {}, b or {})
    out = []
    for key in sorted(set(a) | set(b), key=str):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}")
    return out


def seed_groups(configs: list[dict[str, Any] | None]) -> list[list[int]]:
    """Indices of the runs, grouped: runs in one group differ only in the seed (first-seen order)."""
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(config_key(cfg), []).append(i)
    return list(groups.values())
