"""Start `workbench eval` from the viewer as a subprocess, follow it, cancel it.

The job is the ordinary CLI (``python -m workbench eval ... --out=<runs root>/<name>``) in its own
process group, so a run started from the page is the same as one started from a shell. Cancel sends
SIGINT: `run_eval` catches it, writes the summary of the episodes so far (``interrupted: true``) and
exits with 130, leaving a valid, shorter run. Output goes to ``<runs root>/.launch/<name>.log``.

The form starts only what it shows (docs/viewer.md, "Security"):

* the task is a registered family other than ``jsonl`` (no path), the model is ``smollm2`` or a hub
  id ``org/name`` (no ``openai:``/``vllm:`` spec, no adapter, no local path), the run folder is always
  a new one under the runs root;
* the free-text ``--set`` field is parsed, never passed through: each item must be ``key=value`` with
  ``key`` on an allowlist (``settable_keys``: the chosen protocol's own options, ``budget.*``, the
  chosen task's options, ``task.seed``, ``model.dtype``, ``model.max_batch_size``, ``max_in_flight``).
  ``models.*``, ``team.*``, ``*.api_key_env``, ``model.name``, ``task.name``, ``out`` and every other
  key are refused because they are not on the list, not because they are on a list of bad ones;
* values hold no control, format or separator characters, are at most ``MAX_VALUE_CHARS`` long,
  keys are not repeated, numbers are finite and within ``_int_cap``; then the whole config is built
  in-process with the CLI's own ``EvalConfig.build`` (ConfigError before anything is started);
* the command line uses ``--opt=value`` for every option and puts the ``--set`` items last, each
  starting with a lowercase letter, so no item can be read as a flag.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import ConfigError, parse_overrides
from workbench.runs import new_run_dir


def launch_tasks() -> list[str]:
    """The task families the form offers: every registered one except ``jsonl`` (it takes a path)."""
    from workbench.tasks import FAMILIES

    return [name for name in FAMILIES if name != "jsonl"]


SPLITS = ("test", "dev", "train")
MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95})?$")
KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}(\.[a-z][a-z0-9_]{0,63}){0,2}$")
MAX_SET_CHARS = 8000  # the whole --set field
MAX_ITEMS = 32
MAX_VALUE_CHARS = 2000  # a system prompt fits; a megabyte does not
MAX_LIMIT = 100_000
# keys of the form's own fields: a --set item may not override them (the message says which field to use)
FORM_FIELDS = {"task.name": "task", "task.split": "split", "task.limit": "limit", "seed": "seed",
               "protocol.name": "protocol", "model.name": "model", "out": "the run folder (chosen for you)"}  # fmt: skip
FIXED_KEYS = ("budget.max_calls", "budget.max_tokens", "task.seed", "model.dtype", "model.max_batch_size",
              "max_in_flight")  # fmt: skip
DTYPES = ("auto", "bf16", "fp32", "fp16")


def settable_keys(task: str, protocol: str) -> tuple[str, ...]:
    """The --set keys the form accepts for this task and protocol (an allowlist; everything else is refused)."""
    from workbench.protocols import PROTOCOLS
    from workbench.tasks import FAMILIES

    keys = [f"protocol.{f.name}" for f in dataclasses.fields(PROTOCOLS[protocol].config) if f.init]
    opts = FAMILIES.get(task)
    if opts is not None and task != "jsonl":
        keys += [f"task.{f.name}" for f in dataclasses.fields(opts) if f.init]
    return (*keys, *FIXED_KEYS)


def _int_cap(key: str) -> int:
    """The largest integer the form accepts for ``key`` (a page may not start a run that never ends)."""
    if key.endswith("tokens"):
        return 32_768
    if key == "budget.max_calls":
        return 10_000
    return 256


def _bad_char(value: str) -> str | None:
    """The first control / format / separator / surrogate character in ``value`` (they hide text), if any."""
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            return ch
    return None


def _short(text: Any, n: int = 60) -> str:
    s = repr(text)
    return s if len(s) <= n else s[: n - 1] + "…"


def parse_set_field(text: Any, task: str, protocol: str) -> list[str]:
    """The form's --set text as checked ``key=value`` items (ConfigError naming the first bad one)."""
    if text is None or text == "":
        return []
    if not isinstance(text, str):
        raise ConfigError(f"the --set field must be text, got {type(text).__name__}")
    if len(text) > MAX_SET_CHARS:
        raise ConfigError(f"the --set field is {len(text)} characters; at most {MAX_SET_CHARS}")
    bad = _bad_char(text.replace("\n", " ").replace("\t", " ").replace("\r", " "))
    if bad is not None or "\x00" in text:
        raise ConfigError(
            f"the --set field holds the invisible or control character U+{ord(bad or chr(0)):04X}; "
            "type plain key=value items separated by spaces"
        )
    try:
        items = shlex.split(text)
    except ValueError as e:
        raise ConfigError(f"the --set field cannot be split into items ({e}); close your quotes") from None
    if len(items) > MAX_ITEMS:
        raise ConfigError(f"the --set field has {len(items)} items; at most {MAX_ITEMS}")
    allowed = settable_keys(task, protocol)
    seen: set[str] = set()
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set item {_short(item)} is not key=value (e.g. protocol.n=5)")
        if key in FORM_FIELDS:
            raise ConfigError(f"--set {key} is not allowed here; use the form's field: {FORM_FIELDS[key]}")
        if not KEY_RE.match(key) or key not in allowed:
            raise ConfigError(
                f"--set {_short(key)} cannot be set from the viewer; settable for {protocol} on {task}: "
                f"{', '.join(allowed)} (anything else: run workbench eval in a shell)"
            )
        if key in seen:
            raise ConfigError(f"--set {key} is given twice; keep one")
        seen.add(key)
        if len(value) > MAX_VALUE_CHARS:
            raise ConfigError(f"--set {key}: the value is {len(value)} characters; at most {MAX_VALUE_CHARS}")
        if _bad_char(value) is not None:
            raise ConfigError(f"--set {key}: the value holds a control or invisible character; remove it")
        out.append(f"{key}={value}")
    return out


def _resolved_value(resolved: dict[str, Any], key: str) -> Any:
    """The value ``key`` (an allowlisted --set key) has in the built config ``resolved`` (to_dict)."""
    head, _, rest = key.partition(".")
    if not rest:
        return resolved.get(head)
    section = resolved.get(head) or {}
    if head == "protocol" or (head == "task" and rest != "seed"):
        return (section.get("options") or {}).get(rest)
    return section.get(rest)


def _check_numbers(cfg: Any, items: list[str]) -> None:
    """Each set number finite and within its cap, read back from the built config (so the check sees
    what the run will use, whatever spelling the value had)."""
    from workbench.config import to_dict

    resolved = to_dict(cfg)
    for item in items:
        key = item.partition("=")[0]
        value = _resolved_value(resolved, key)
        for v in value if isinstance(value, list | tuple) else [value]:
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            if isinstance(v, float) and not (math.isfinite(v) and abs(v) <= 1e6):
                raise ConfigError(f"--set {key}={v}: use a finite number of at most 1e6 in size")
            if isinstance(v, int) and not 0 <= v <= _int_cap(key):
                raise ConfigError(f"--set {key}={v}: the viewer accepts 0 to {_int_cap(key)}")
    dtype = resolved.get("model", {}).get("dtype")
    if dtype not in DTYPES:
        raise ConfigError(f"--set model.dtype={_short(dtype)}: use one of {', '.join(DTYPES)}")


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    try:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name} must be an integer, got {_short(value)}") from None


def check_names(task: Any, protocol: Any) -> None:
    """ConfigError unless ``task`` is a launchable family and ``protocol`` a registered protocol."""
    from workbench.protocols import PROTOCOLS

    if not isinstance(task, str) or task not in launch_tasks():
        raise ConfigError(
            f"task {_short(task)} cannot be launched from the viewer; choose one of {', '.join(launch_tasks())}"
        )
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {_short(protocol)}; available: {', '.join(PROTOCOLS)}")


def build_argv(
    run_dir: Path,
    task: str,
    protocol: str,
    model: str,
    limit: int,
    split: str = "test",
    seed: int = 0,
    extra_set: str = "",
) -> list[str]:
    """The `workbench eval` command line for the form's fields; ConfigError names a refused field.

    The config is built here with the CLI's own code, so a value the CLI would refuse is refused
    before anything starts."""
    from workbench.evaluate import EvalConfig

    check_names(task, protocol)
    model = model.strip() if isinstance(model, str) else model
    if not isinstance(model, str) or not MODEL_RE.match(model) or ".." in model or os.path.exists(model):
        raise ConfigError(
            f"model {_short(model)} cannot be launched from the viewer: use smollm2 or a hub id org/name "
            "(local folders, adapters and openai:/vllm: specs only from a shell)"
        )
    if not isinstance(split, str) or split not in SPLITS:
        raise ConfigError(f"split {_short(split)}: use one of {', '.join(SPLITS)}")
    limit, seed = _as_int(limit, "limit"), _as_int(seed, "seed")
    if not 1 <= limit <= MAX_LIMIT:
        raise ConfigError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if not 0 <= seed < 2**63:
        raise ConfigError(f"seed must be between 0 and 2**63-1, got {seed}")
    sets = parse_set_field(extra_set, task, protocol)
    try:
        cfg = EvalConfig.build(
            parse_overrides(sets), task=task, protocol=protocol, model=model, limit=limit, split=split,
            seed=seed, out=str(run_dir),
        )  # fmt: skip
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, RecursionError) as e:
        raise ConfigError(f"--set {' '.join(sets)[:120]}: not a valid config ({type(e).__name__})") from None
    _check_numbers(cfg, sets)
    argv = [sys.executable, "-m", "workbench", "eval", f"--task={task}", f"--protocol={protocol}"]
    argv += [f"--model={model}", f"--limit={limit}", f"--split={split}", f"--seed={seed}", f"--out={run_dir}"]
    assert all(re.match(r"^[a-z]", s) for s in sets)  # parse_set_field guarantees it: no item is a flag
    if sets:
        argv += ["--set", *sets]  # last: every item after it is a KEY=VALUE, none starts with '-'
    return argv


@dataclass
class Job:
    name: str  # run name under the runs root
    run_dir: Path
    argv: list[str]
    log: Path
    proc: subprocess.Popen
    started: float = field(default_factory=time.time)
    cancelled: bool = False

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    @property
    def state(self) -> str:
        rc = self.returncode
        if rc is None:
            return "cancelling" if self.cancelled else "running"
        if rc == 0:
            return "finished"
        if rc == 130 or self.cancelled:
            return "cancelled"
        return f"failed (exit {rc})"

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        # tqdm redraws with carriage returns: keep the last state of each line
        cleaned = [line.split("\r")[-1] for line in text.splitlines()]
        return "\n".join(cleaned[-lines:])


class Launcher:
    """The evaluations started from the viewer (newest last). Thread-safe; one process per job."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.jobs: list[Job] = []
        self._lock = threading.Lock()

    def start(
        self,
        task: str,
        protocol: str,
        model: str = "smollm2",
        limit: int = 8,
        split: str = "test",
        seed: int = 0,
        extra_set: str = "",
    ) -> Job:
        check_names(task, protocol)  # before they name a folder
        with self._lock:
            run_dir = new_run_dir(self.root, task, protocol)
            argv = build_argv(run_dir, task, protocol, model, limit, split, seed, extra_set)
            while True:  # reserve the folder now: a second launch in the same second gets the next name
                try:
                    run_dir.mkdir(parents=True)  # the eval claims an existing empty --out folder
                    break
                except FileExistsError:
                    run_dir = new_run_dir(self.root, task, protocol)
                    argv = build_argv(run_dir, task, protocol, model, limit, split, seed, extra_set)
            logs = self.root / ".launch"
            logs.mkdir(parents=True, exist_ok=True)
            log = logs / f"{run_dir.name}.log"
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            with open(log, "w", encoding="utf-8") as out:
                proc = subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,  # its own process group: cancel reaches it alone
                )
            job = Job(run_dir.relative_to(self.root).as_posix(), run_dir, argv, log, proc)
            self.jobs.append(job)
            return job

    @property
    def latest(self) -> Job | None:
        return self.jobs[-1] if self.jobs else None

    def cancel(self, job: Job | None = None) -> bool:
        """SIGINT to a running job (default: the latest); False when there is nothing to cancel."""
        job = job or self.latest
        if job is None or job.returncode is not None:
            return False
        job.cancelled = True
        try:
            os.killpg(job.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            return False
        return True

    def shutdown(self, timeout: float = 20.0) -> None:
        """Cancel every running job and wait for it (then kill what is left), e.g. when the app stops."""
        for job in self.jobs:
            self.cancel(job)
        deadline = time.time() + timeout
        for job in self.jobs:
            try:
                job.proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(job.proc.pid, signal.SIGKILL)
                job.proc.wait()
