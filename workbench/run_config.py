"""The config types of a run, and the one builder that eval, compare and train share.

    cfg = EvalConfig.build({"team": {"calc": {"tool": "calculator", "description": "..."}}}, task="mix:...")

Sections every command reads the same way (the same ``--set`` key means the same thing in
``workbench eval``, ``compare`` and ``train``; `build_shared` builds them):

* ``task.*``: `TaskConfig` (flat keys are the family's options; ``mix:`` names a task mixture);
* ``model.*``: the ``default`` model (`ModelConfig`);
* ``models.NAME.*``: more models, by name (any ``--model`` spec: hub, local, ``+ADAPTER_DIR``,
  ``openai:URL#MODEL``, ``vllm:``);
* ``team.NAME.*``: the worker pool (`MemberConfig`): each member is a model with its own decoding
  and system prompt, or a tool worker (``tool=python|calculator``), and has a one-line
  ``description`` (what a Conductor's prompt shows); protocols bind roles to members by name;
* ``budget.*``: a per-episode cap (eval and compare).

Everything is validated when the config is built, before any model loads: an unknown member or
model, a duplicate name, a Conductor worker without a description, a tool worker on a machine
without an OS sandbox are each one ConfigError line. A command-line flag and a ``--set`` key that
set the same value are refused (`apply_flags`).

`workbench.evaluate` re-exports EvalConfig, ModelConfig, ProtocolConfig and MemberConfig.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from workbench.config import ConfigError, _show, from_dict, merge, split_options, to_dict
from workbench.models.base import Backend
from workbench.protocols import PROTOCOLS, Budget, Member, Team
from workbench.protocols.base import TOOLS, member_fields
from workbench.tasks import TaskConfig

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")  # model and member names
MAX_DESCRIPTION_CHARS = 200


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
    """A team member (``--set team.NAME.KEY=VALUE``): a model or a tool, with its own decoding and persona."""

    model: str = ""  # a key of `models` ("" or "default": the `model` section); none for a calculator
    tool: str = ""  # "" (the model answers) | python (the model writes a program; the OS sandbox runs it)
    # | calculator (no model: evaluates the instruction's arithmetic expression exactly)
    description: str = ""  # one line: what a Conductor's prompt says this worker is good at
    temperature: float | None = None  # overrides the protocol's temperature for this member's roles
    top_p: float | None = None
    max_tokens: int | None = None  # overrides the protocol's completion cap for this member's roles
    system: str | None = None  # a persona: put before the role's own instructions
    timeout_s: float = 10.0  # python tool: wall clock per program in the sandbox

    def __post_init__(self) -> None:
        if self.tool and self.tool not in TOOLS:
            raise ConfigError(
                f"tool must be one of {', '.join(TOOLS)} (or empty for a model), got {_show(self.tool)}"
            )
        if self.tool == "calculator" and self.model not in ("",):
            raise ConfigError("a calculator uses no model; drop its model key")
        if not self.description.isprintable() or len(self.description) > MAX_DESCRIPTION_CHARS:
            raise ConfigError(f"description must be one line of at most {MAX_DESCRIPTION_CHARS} characters")


# ---------------------------------------------------------------------------------------------
# the pool: models + team members, resolved and checked together
# ---------------------------------------------------------------------------------------------


def _check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(
            f"{kind} name {_show(name)} must start with a letter and hold only letters, digits, '_' and '-' "
            "(at most 40 characters)"
        )
    return name


def resolve_pool(
    model: ModelConfig, models: dict[str, Any], team: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``models`` and ``team`` as resolved dicts (every default filled in); ConfigError names a bad entry."""
    if not isinstance(models, dict) or not isinstance(team, dict):
        raise ConfigError(
            "'models' and 'team' are sections; set their keys, e.g. --set team.NAME.model=default"
        )
    resolved_models: dict[str, Any] = {}
    for name, spec in models.items():
        _check_name("models.NAME: a model", name)
        if name == "default":
            raise ConfigError("models.default is the `model` section; set model.* instead")
        resolved_models[name] = to_dict(
            from_dict(
                ModelConfig, spec if isinstance(spec, dict) else {"name": spec}, prefix=f"models.{name}."
            )
        )
    known = ("default", *resolved_models)
    members: dict[str, Any] = {}
    for name, spec in team.items():
        _check_name("team.NAME: a member", name)
        try:
            member = from_dict(MemberConfig, spec or {}, prefix=f"team.{name}.")
        except ConfigError as e:
            raise ConfigError(str(e) if f"team.{name}" in str(e) else f"team.{name}: {e}") from None
        if member.tool != "calculator":
            model_name = member.model or "default"
            if model_name not in known:
                raise ConfigError(
                    f"team.{name}.model='{model_name}' is not a model; have: {', '.join(known)} "
                    f"(add one with --set models.{model_name}.name=SPEC)"
                )
            member = MemberConfig(**{**to_dict(member), "model": model_name})
        if name == "default" and (member.tool or member.model != "default"):
            raise ConfigError(
                "team.default is the `model` section's member; it cannot be a tool or another model"
            )
        members[name] = to_dict(member)
    return resolved_models, members


def backend_of(name: str, member: dict[str, Any]) -> str:
    """The scheduler's backend key of a member: its model's name, or its tool's."""
    if member.get("tool") == "calculator":
        return "tool:calculator"
    if member.get("tool") == "python":
        return f"tool:python:{name}"
    return member.get("model") or "default"


def team_from(team: dict[str, Any]) -> Team:
    """The Team of a resolved ``team`` section (``default`` first; ``team.default.*`` refines it)."""
    default = team.get("default", {})
    members = [
        Member(
            name,
            backend_of(name, m),
            m.get("temperature"),
            m.get("top_p"),
            m.get("system"),
            m.get("description", ""),
            m.get("tool", ""),
            m.get("max_tokens"),
        )
        for name, m in {"default": default, **team}.items()
    ]
    return Team(tuple(members))


def check_roles(team: Team, protocol: ProtocolConfig, where: str = "protocol") -> None:
    """Every member a protocol names exists; tools only fill worker lists (or answer alone in
    `single`); a Conductor's pool of different workers describes each one."""
    cfg = protocol.resolved
    for key, names in member_fields(cfg).items():
        if not names:  # an empty list would fail inside every episode (i % 0)
            raise ConfigError(
                f"{where}.{key} must name at least one team member, e.g. --set {where}.{key}=default"
            )
        for name in names:
            member = team.member(name)  # raises ConfigError naming the missing member and the fix
            # a tool answers, so it may be `single`'s one answering member (a pool's single-member
            # baseline), never a role that reads or writes for others
            if member.tool and key.endswith("member") and protocol.name != "single":
                raise ConfigError(
                    f"{where}.{key}={name}: '{name}' is a {member.tool} tool; a tool answers, it cannot be the "
                    f"{key.removesuffix('_member')} (name a model member)"
                )
    if protocol.name == "conductor":
        workers = list(dict.fromkeys(cfg.worker_members))
        if len(workers) > 1 or any(team.member(w).tool for w in workers):
            for w in workers:
                if not team.member(w).description.strip():
                    raise ConfigError(
                        f"team.{w}.description is missing: the Conductor's prompt describes each worker of a "
                        f'mixed pool in one line (--set "team.{w}.description=...")'
                    )


def check_tools(team: dict[str, Any]) -> None:
    """A python tool worker needs a working OS sandbox: refused up front where there is none."""
    python = [name for name, m in team.items() if m.get("tool") == "python"]
    if python:
        from workbench.tasks.sandbox import require_sandbox

        try:
            require_sandbox(allow_unsandboxed=False)
        except ValueError as e:
            raise ConfigError(
                f"team.{python[0]}.tool=python: {e} (tool workers never run without it; "
                "task.allow_unsandboxed does not apply to them)"
            ) from None


def model_configs(model: ModelConfig, models: dict[str, Any], team: dict[str, Any]) -> dict[str, ModelConfig]:
    """Every model the team uses, by name ("default" is the `model` section, always used)."""
    used = {"default"} | {m["model"] for m in team.values() if m.get("tool") != "calculator"}
    configs = {"default": model} | {k: from_dict(ModelConfig, v) for k, v in models.items()}
    return {k: v for k, v in configs.items() if k in used}


def load_model(mc: ModelConfig) -> Backend:
    """Load one model section (every ModelConfig field is a load_backend option of the same name)."""
    from workbench.models import load_backend

    options = to_dict(mc)
    return load_backend(options.pop("name"), **options)


def load_team_backends(
    model: ModelConfig,
    models: dict[str, Any],
    team: dict[str, Any],
    given: Backend | dict[str, Backend] | None = None,
) -> dict[str, Backend]:
    """The backends of the team, by backend key: each model it uses (loading the ones not ``given``)
    and each tool worker, built on its model's backend."""
    from workbench.models.tools import Calculator, PythonTool

    given = given if isinstance(given, dict) else ({"default": given} if given is not None else {})
    out = {name: given.get(name) or load_model(mc) for name, mc in model_configs(model, models, team).items()}
    for name, m in team.items():
        key = backend_of(name, m)
        if m.get("tool") == "calculator":
            out[key] = given.get(key) or Calculator()
        elif m.get("tool") == "python":
            out[key] = given.get(key) or PythonTool(out[m["model"]], timeout_s=m["timeout_s"])
    return out


# ---------------------------------------------------------------------------------------------
# the one builder
# ---------------------------------------------------------------------------------------------

SHARED = ("task", "model", "models", "team", "budget")


def apply_flags(overrides: dict[str, Any] | None, flags: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """``overrides`` (from --set / YAML) with each given flag set at its dotted key
    (``{"task.limit": ("--limit", 5)}``; a None value is a flag not given). A flag whose key the
    overrides also set is a ConfigError: the two would silently disagree."""
    data = dict(overrides or {})
    for key, (flag, value) in flags.items():
        if value is None:
            continue
        node: Any = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and parts[-1] in node:
            raise ConfigError(
                f"{flag} {_show(value, 40)} and --set {key}={_show(node[parts[-1]], 40)} both set {key}; "
                "give it once"
            )
        patch: Any = value
        for part in reversed(parts):
            patch = {part: patch}
        data = merge(data, patch)
    return data


def shortcut_flags(top: dict[str, Any], table: dict[str, tuple[str, str]]) -> dict[str, tuple[str, Any]]:
    """Keyword shortcuts of a ``build`` -> `apply_flags`' ``{dotted key: (flag, value)}`` (``table``:
    shortcut -> (dotted key, flag)); a keyword not in the table is a top-level key of that name."""
    out = {}
    for arg, value in top.items():
        key, flag = table.get(arg, (arg, f"{arg}="))
        out[key] = (flag, value)
    return out


def build_shared(
    data: dict[str, Any], task_defaults: dict[str, Any] | None = None, sections: tuple[str, ...] = SHARED
) -> dict[str, Any]:
    """Pop and build the shared sections of ``data`` (task, model, models, team, budget): the one
    place where their keys get their meaning. ``task_defaults`` (train: split=train) come first;
    ``sections``: the ones this command has (train has no budget)."""
    out: dict[str, Any] = {}
    for name in SHARED:
        if name not in sections and name in data:
            raise ConfigError(f"unknown section '{name}' here; sections: {', '.join(sections)}")
        value = data.pop(name, None)
        value = {} if value is None else value
        if not isinstance(value, dict):
            raise ConfigError(f"'{name}' is a section; set its keys, e.g. --set {name}.KEY=VALUE")
        out[name] = value
    out["task"] = TaskConfig.from_flat({**(task_defaults or {}), **out["task"]})
    out["model"] = from_dict(ModelConfig, out["model"], prefix="model.")
    out["budget"] = from_dict(Budget, out["budget"], prefix="budget.")
    out["models"], out["team"] = resolve_pool(out["model"], out["models"], out["team"])
    return {k: v for k, v in out.items() if k in sections}


class PoolMixin:
    """What every run config with a model/models/team section can do (eval, compare, train)."""

    model: ModelConfig
    models: dict[str, Any]
    team: dict[str, Any]

    def _resolve_pool(self) -> None:
        models, team = resolve_pool(self.model, self.models, self.team)
        object.__setattr__(self, "models", models)
        object.__setattr__(self, "team", team)
        check_tools(team)

    def build_team(self) -> Team:
        """The Team the protocols bind their roles to (``team.members[i].description`` included)."""
        return team_from(self.team)

    def model_configs(self) -> dict[str, ModelConfig]:
        """Every model the team uses, by name ("default" is the `model` section)."""
        return model_configs(self.model, self.models, self.team)

    def load_backends(self, given: Backend | dict[str, Backend] | None = None) -> dict[str, Backend]:
        return load_team_backends(self.model, self.models, self.team, given)


# ---------------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------------

EVAL_FLAGS = {  # keyword shortcut of EvalConfig.build -> (dotted key, command-line flag)
    "task": ("task.name", "--task"),
    "protocol": ("protocol.name", "--protocol"),
    "model": ("model.name", "--model"),
    "limit": ("task.limit", "--limit"),
    "split": ("task.split", "--split"),
    "seed": ("seed", "--seed"),
    "max_in_flight": ("max_in_flight", "--max-in-flight"),
    "out": ("out", "--out"),
}


@dataclass(frozen=True)
class EvalConfig(PoolMixin):
    task: TaskConfig = field(default_factory=TaskConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    model: ModelConfig = field(default_factory=ModelConfig)  # the "default" model
    # More models for heterogeneous teams, by name: --set models.big.name=org/model models.api.name=openai:URL#M
    models: dict[str, Any] = field(default_factory=dict)
    # Team members, by name: --set team.hot.temperature=0.9 team.api.model=api team.calc.tool=calculator;
    # protocols bind roles to members through their *_member(s) options (protocol.worker_members=[a,calc])
    team: dict[str, Any] = field(default_factory=dict)
    budget: Budget = field(default_factory=Budget)  # per-episode cap: budget.max_calls, budget.max_tokens
    seed: int = 0  # seeds every sampled generation (derived per task and call); items stay the same
    max_in_flight: int = 256  # episodes run concurrently; their ready generations go to the model together
    out: str = ""  # run folder; default runs/<time>-<task>-<protocol>

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        self._resolve_pool()
        check_roles(self.build_team(), self.protocol)

    @classmethod
    def build(cls, overrides: dict[str, Any] | None = None, **top: Any) -> EvalConfig:
        """From keyword shortcuts (task=, protocol=, model=, limit=, split=, seed=, max_in_flight=, out=;
        None = not given) and nested overrides. A shortcut and an override of the same key conflict.

        Sections accept flat keys: ``{"task": {"digits": 2}}`` sets an arithmetic option and
        ``{"protocol": {"n": 5}}`` a protocol option.
        """
        data = apply_flags(overrides, shortcut_flags(top, EVAL_FLAGS))
        shared = build_shared(data)
        protocol = data.pop("protocol", None)
        protocol = {} if protocol is None else protocol
        if not isinstance(protocol, dict):
            raise ConfigError("'protocol' is a section; set its keys, e.g. --set protocol.name=...")
        unknown = sorted(str(k) for k in data if k not in ("seed", "max_in_flight", "out"))
        if unknown:
            raise ConfigError(
                f"unknown key '{_show(unknown[0])[1:-1]}'; valid keys here: seed, max_in_flight, out "
                f"(and the sections {', '.join(SECTIONS)})"
            )
        top_level = from_dict(_TopLevel, data)
        return cls(
            protocol=ProtocolConfig.from_flat(protocol),
            seed=top_level.seed,
            max_in_flight=top_level.max_in_flight,
            out=top_level.out,
            **shared,
        )


SECTIONS = ("task", "protocol", "model", "models", "team", "budget")


@dataclass(frozen=True)
class _TopLevel:
    """The top-level scalars of an EvalConfig, validated by the same strict loader."""

    seed: int = 0
    max_in_flight: int = 256
    out: str = ""
