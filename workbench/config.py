"""Configs as frozen dataclasses, built by one strict loader.

`from_dict(cls, data)` rejects unknown keys and wrongly typed values with a message that names
the key and the fix; `parse_overrides(["a.b=1"])` turns ``--set`` arguments into a nested dict;
`to_dict` gives the resolved config written into every run folder; `load_yaml` reads a recipe
file (bounded size and depth, no aliases).

Every conversion is total: any string (or YAML value) becomes a value or a ConfigError, never
another exception. Floats must be finite; ints fit in 64 bits; fields named in `BOUNDS` (counts,
temperatures, probabilities) must be in their range, and the message names the limit.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad config key or value; the message names it and says how to fix it."""


MAX_KEY_DEPTH = 8  # parts of a dotted key; the deepest real one is options.maestro.rounds
MAX_ITEMS = 1024  # items of a list value (seeds, layers, members)
MAX_INT = 2**63 - 1  # every int field fits in 64 bits (seeds go to torch)
MAX_YAML_BYTES = 1 << 20  # a recipe is a few hundred bytes
MAX_YAML_DEPTH = 16  # nesting of a recipe's mappings and lists

# Bounds by field name, for every config class (protocols, tasks, budgets, models, training):
# (lowest, highest), or (lowest, highest, "open") when the lowest is excluded. "Class.field"
# entries win over plain field names. Counts have caps that keep
# one invocation from asking for millions of generations or tokens by a typo.
WIDTH, ROUNDS, TOKENS = (1, 256), (1, 64), (1, 32768)
BOUNDS: dict[str, tuple] = {
    # protocol widths and depths (generations per query multiply these)
    "n": WIDTH,
    "samples": WIDTH,
    "central_samples": WIDTH,
    "agents": WIDTH,
    "explorers": WIDTH,
    "peers": WIDTH,
    "layers": WIDTH,  # each layer's proposers
    "rounds": ROUNDS,
    "k": (0, 64),
    "max_recursions": (0, 16),
    # completion caps per generation (the largest context of a supported model)
    "max_tokens": TOKENS,
    "leader_max_tokens": TOKENS,
    "central_max_tokens": TOKENS,
    "conductor_max_tokens": TOKENS,
    # per-episode budgets
    "Budget.max_calls": (1, 100_000),
    "Budget.max_tokens": (1, 100_000_000),
    "CompareConfig.max_calls": (1, 100_000),
    # items, concurrency, batches
    "limit": (1, 1_000_000),
    "pilot_items": (1, 100_000),
    "max_in_flight": (1, 65_536),
    "max_batch_size": (1, 4096),
    "max_concurrency": (1, 4096),
    "max_retries": (0, 100),
    "max_model_len": (0, 1 << 20),
    "max_lora_rank": (1, 1024),
    "timeout_s": (0, 86_400, "open"),
    "gpu_memory_utilization": (0, 1, "open"),
    # sampling
    "temperature": (0, 5),
    "top_p": (0, 1, "open"),
    "epsilon": (0, 1),
    "tolerance": (0, 1),
    "threshold": (0, 1),
    # training
    "steps": (0, 1_000_000),
    "warm_start": (0, 1_000_000),
    "questions": (1, 65_536),
    "group": WIDTH,
    "size": WIDTH,
    "micro_batch": (1, 4096),
    "checkpoint_every": (1, 1_000_000),
    "keep_checkpoints": (0, 10_000),
    "eval_every": (0, 1_000_000),
    "warmup_steps": (0, 1_000_000),
    "lr": (0, 1),
    "weight_decay": (0, 10),
    "max_grad_norm": (0, 1e6),
    "beta": (0, 1e3),
    "rank": (1, 1024),
    "alpha": (0, 1e4),
}


def _show(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut to ``width`` characters: an error message stays one short line."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["task.digits=2", "seed=3"]`` -> ``{"task": {"digits": "2"}, "seed": "3"}`` (values stay strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {_show(item)} (e.g. --set protocol.n=5)")
        parts = [p.strip() for p in key.split(".")]
        if not all(parts):
            raise ConfigError(f"--set {_show(key)}: empty part in the dotted key (e.g. --set protocol.n=5)")
        if len(parts) > MAX_KEY_DEPTH:
            raise ConfigError(
                f"--set {_show(key)}: {len(parts)} dotted parts, at most {MAX_KEY_DEPTH} (e.g. protocol.n=5)"
            )
        node = out
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"--set {_show(key)}: '{where}' was set to a value, not a section")
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError(f"--set {_show(key)}: '{key}' is a section; set its keys ({key}.KEY=VALUE)")
        node[parts[-1]] = value
    return out


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a --set string) to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        ):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {_show(value)}")
    if origin is tuple:
        if isinstance(value, str):
            items = value.strip().strip("[]()").split(",")  # "a,b" or "[a,b]" from the command line
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise ConfigError(f"{key} must be a comma-separated list (a,b,c), got {_show(value)}")
        if len(items) > MAX_ITEMS:
            raise ConfigError(f"{key}: {len(items)} items, at most {MAX_ITEMS}")
        (inner, *_rest) = typing.get_args(tp) or (str,)
        items = [v.strip() if isinstance(v, str) else v for v in items]
        return tuple(_coerce(v, inner, key) for v in items if v != "")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.strip().lower() in ("true", "1", "yes")
        raise ConfigError(f"{key} must be true or false, got {_show(value)}")
    if tp is int:
        return _to_int(value, key)
    if tp is float:
        return _to_float(value, key)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{key} must be a string (quote it in YAML), got {_show(value)}")
        return str(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a section (key: value pairs), got {_show(value)}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a section, got {_show(value)}")
        return dict(value)
    return value


def _to_int(value: Any, key: str) -> int:
    given = value
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        if len(text) > 30:  # 2**63 has 19 digits
            raise ConfigError(f"{key} must be an integer of at most 19 digits, got {_show(value)}")
        try:
            value = int(text)
        except ValueError:
            try:  # "1e3", "5.0"
                as_float = float(text)
            except ValueError:
                raise ConfigError(f"{key} must be an integer, got {_show(value)}") from None
            value = as_float
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {_show(given)}")
    if abs(value) > MAX_INT:
        raise ConfigError(f"{key}={_show(value)} is out of range: the maximum is {MAX_INT}")
    return value


def _to_float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{key} must be a number, got {_show(value)}")
    try:
        out = float(value.strip().replace("_", "") if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        raise ConfigError(f"{key} must be a number, got {_show(value)}") from None
    if not math.isfinite(out):
        raise ConfigError(f"{key} must be a finite number, got {_show(value)}")
    return out


def _check_bounds(cls: type, name: str, value: Any, key: str) -> None:
    """Raise ConfigError when a numeric field is outside its range in BOUNDS."""
    bounds = BOUNDS.get(f"{cls.__name__}.{name}") or BOUNDS.get(name)
    if bounds is None:
        return
    lo, hi, *open_low = bounds
    for v in value if isinstance(value, tuple) else (value,):
        if not isinstance(v, int | float) or isinstance(v, bool):
            continue
        allowed = f"({lo}, {hi}]" if open_low else f"{lo}..{hi}"
        if v > hi:
            raise ConfigError(f"{key}={_show(v)} is too large: the maximum is {hi} (allowed {allowed})")
        if v < lo or (open_low and v == lo):
            rule = f"> {lo}" if open_low else f">= {lo}"
            raise ConfigError(f"{key} must be {rule}, got {_show(v)} (allowed {allowed})")


def from_dict(cls: type, data: dict[str, Any] | None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``: unknown keys and type mismatches raise ConfigError."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or cls.__name__
        raise ConfigError(f"'{where}' is a section (KEY: VALUE pairs), got {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise ConfigError(
            f"unknown key '{prefix}{_show(unknown[0])[1:-1]}'; "
            f"valid keys here: {', '.join(prefix + k for k in fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], prefix + name)
        _check_bounds(cls, name, kwargs[name], prefix + name)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as e:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from None


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) as plain dicts/lists, ready for YAML or JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def split_options(data: dict[str, Any], own: tuple[str, ...], section: str = "") -> dict[str, Any]:
    """``{"name": "vote", "n": 5}`` -> ``{"name": "vote", "options": {"n": 5}}``.

    Keys that are not in ``own`` are options; an explicit ``options`` section is merged in.
    ``section`` (e.g. "protocol") names the section in errors.
    """
    where = section or "this section"
    if not isinstance(data, dict):
        raise ConfigError(
            f"'{where}' is a section; set its keys, e.g. --set {section or 'SECTION'}.KEY=VALUE"
        )
    if not isinstance(data.get("options") or {}, dict):
        raise ConfigError(
            f"{section + '.' if section else ''}options must be a section, got {_show(data['options'])}; "
            f"set an option directly, e.g. --set {section or 'SECTION'}.KEY=VALUE"
        )
    options = {
        **(data.get("options") or {}),
        **{k: v for k, v in data.items() if k not in own and k != "options"},
    }
    return {**{k: v for k, v in data.items() if k in own}, "options": options}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of two nested dicts; ``override`` wins."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _RecipeLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses aliases (no billion-laughs expansion) and deep nesting."""

    def compose_node(self, parent, index):  # noqa: ANN001 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(
                f"line {event.start_mark.line + 1}: YAML aliases (*name) are not allowed; write the value out"
            )
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(f"line {mark.line + 1}: nested deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


    def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN201 (PyYAML's signature)
        """A key given twice in one mapping (two team members of one name) is refused, not overwritten."""
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    twice = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: PyYAML reports it below
                    continue
                if twice:
                    raise ConfigError(
                        f"line {key_node.start_mark.line + 1}: key {_show(key, 40)} is given twice in one mapping; "
                        "keep one (each team member and model needs its own name)"
                    )
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file that must hold one mapping (a recipe, a config.yaml); ConfigError names the fix."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: {size} bytes, larger than {MAX_YAML_BYTES} for a YAML config file")
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; give a YAML file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e}); give a readable YAML file") from None
    try:
        data = yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"{path}: not valid YAML ({problem}{where}); fix the file") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply; fix the file") from None
    except ConfigError as e:  # an alias or deep nesting, refused by the loader
        raise ConfigError(f"{path}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections (task:, train:, ...), "
            f"got a {type(data).__name__}"
        )
    return data
