"""Run discovery and safe, incremental reading of run folders under one runs root.

Everything the viewer reads goes through ``RunsRoot``: a run is named by its path relative to the
root (``20261122-044408-demo/vote``), and ``RunsRoot.resolve`` refuses any name that is absolute,
contains ``..``, or resolves (through a symlink) outside the root. No other input can name a file.

``EpisodeTail`` follows a growing ``episodes.jsonl``: each ``poll()`` parses only the bytes
appended since the last one, keeps a small index entry per episode (outcome, usage, training
fields, byte offset) and re-reads a full episode from its offset on demand, so a run of tens of
thousands of episodes costs little memory. A line that is not yet terminated by a newline is held
back until it is (the writer may be mid-line); when the run has finished and it is still
unterminated it is reported as a torn last line. Invalid lines are skipped and named in
``problems``, never hiding the others.

Nothing in a run folder can stop the viewer (docs/viewer.md, "Hostile and broken runs"): every
file is opened only if it is a regular file (a FIFO or device would block), read up to a size cap,
parsed with RecursionError, non-UTF-8 bytes and huge numbers caught; every field of an episode the
viewer reads is checked by ``coerce_episode`` where it is read, and a line whose fields have the
wrong types is skipped and counted like one that is not JSON ("3 malformed lines skipped").
A folder that cannot be read, or whose files are links out of the root, is listed as refused.
"""

from __future__ import annotations

import functools
import json
import math
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from workbench.config import ConfigError
from workbench.episode import EpisodeFormatError, validate
from workbench.stats import wilson_ci

RUN_FILES = ("episodes.jsonl", "config.yaml", "summary.json")
ANALYSIS_FILE = "analysis.json"  # written by `workbench analyze`; read by the Analysis view
RUNNING_WINDOW_S = 120.0  # a run without summary.json whose episodes file changed this recently is "running"
MAX_DEPTH = 4  # how deep under the root run folders are looked for (demo runs nest one level)
MAX_SMALL_FILE = 8 << 20  # summary.json, analysis.json larger than this are not parsed
MAX_CONFIG = 256 << 10  # config.yaml larger than this is not parsed (a resolved config is a few KB)
MAX_CONFIG_BRACKETS = 2000
MAX_LINE = 16 << 20  # an episode line longer than this is skipped unparsed
MAX_POLL = 64 << 20  # bytes of episodes.jsonl read per poll
MAX_DETAILS = 20  # skipped lines described one by one (the rest are counted)
ENTRY_TEXT = 1000  # characters of question / gold / answer kept in an episode's index entry

# Training fields (docs/viewer.md): written by the RL trainer into Episode.meta.
TRAIN_STEP, ADVANTAGE, NODE_ADVANTAGE = "train_step", "advantage", "node_advantage"


class RunAccessError(ConfigError):
    """A run name the viewer refuses: unknown, or a path outside the runs root."""


@dataclass(frozen=True)
class RunRef:
    name: str  # path relative to the runs root, with '/' separators
    path: Path  # resolved absolute folder
    mtime: float  # last change of the run's files (newest first in listings)


def _stat(path: Path) -> os.stat_result | None:
    """The file's stat (following links), None when it is missing or cannot be looked at."""
    try:
        return path.stat()
    except (OSError, ValueError):  # permission denied, link loop, name too long, NUL in name
        return None


def _printable_name(name: str) -> bool:
    """Whether a folder name is UTF-8 text (os.scandir hands undecodable bytes over as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_run(folder: Path) -> bool:
    return any((st := _stat(folder / f)) is not None and stat.S_ISREG(st.st_mode) for f in RUN_FILES)


def _mtime(folder: Path) -> float:
    times = [st.st_mtime for f in RUN_FILES if (st := _stat(folder / f)) is not None]
    return max(times, default=0.0)


def _open_regular(path: Path, what: str):
    """A binary file object for ``path`` if it is a regular file; else RunAccessError saying what it is.
    O_NONBLOCK: opening a FIFO planted in a run folder must not hang the viewer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise RunAccessError(f"{what} cannot be opened ({getattr(e, 'strerror', None) or e})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RunAccessError(f"{what} is not a regular file; ignored")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_small(path: Path, what: str, limit: int = MAX_SMALL_FILE) -> tuple[str | None, str | None]:
    """(text, problem) of a small run file: (None, None) when missing; text None with a problem when
    it is not a regular file, unreadable or larger than ``limit``. Bytes that are not UTF-8 are replaced."""
    try:
        with _open_regular(path, what) as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        return None, None
    except RunAccessError as e:
        return None, str(e)
    except OSError as e:
        return None, f"{what} cannot be read ({e.strerror or e}); ignored"
    if len(data) > limit:
        return None, f"{what} is larger than {limit >> 20} MiB; ignored"
    return data.decode("utf-8", errors="replace"), None


def parse_json(text: str | bytes) -> Any:
    """json.loads that raises only ValueError: RecursionError (deep nesting) becomes one too."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


class RunsRoot:
    """The one folder the viewer may read: run discovery and name-to-path resolution."""

    def __init__(self, root: str | Path):
        try:
            self.root = Path(root).expanduser().resolve()
        except (OSError, RuntimeError, ValueError) as e:  # a link loop, a NUL in the name
            raise ConfigError(
                f"runs root {str(root)[:200]!r} cannot be opened ({e}); pass a folder"
            ) from None
        self.unlisted: list[str] = []  # folders skipped by the last listing (names that are not text)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"runs root '{self.root}' is a file; pass a folder with --runs DIR")

    def list_runs(self) -> list[RunRef]:
        """Every run folder under the root (not following symlinks, skipping hidden folders), newest first."""
        found: list[RunRef] = []
        self.unlisted = []
        if not self.root.is_dir():
            return found

        def walk(folder: Path, depth: int) -> None:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                return
            for entry in entries:
                try:
                    if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                        continue
                except OSError:
                    continue
                if not _printable_name(entry.name):
                    self.unlisted.append(f"{entry.path.encode('utf-8', 'backslashreplace')!r}")
                    continue  # a name that is not UTF-8 text cannot be sent to a browser
                sub = Path(entry.path)
                if _is_run(sub):
                    found.append(RunRef(sub.relative_to(self.root).as_posix(), sub, _mtime(sub)))
                elif depth < MAX_DEPTH:
                    walk(sub, depth + 1)

        walk(self.root, 1)
        return sorted(found, key=lambda r: (r.mtime, r.name), reverse=True)

    def resolve(self, name: Any) -> Path:
        """The folder of run ``name``; RunAccessError for anything that is not a run under the root."""
        if not isinstance(name, str) or not name.strip():
            raise RunAccessError("no run selected; pick one from the list")
        if "\x00" in name or "\\" in name or len(name) > 1000:
            raise RunAccessError(f"refused run name {name[:80]!r}: not a plain relative path")
        parts = PurePosixPath(name).parts
        if PurePosixPath(name).is_absolute() or any(p in ("..", ".") for p in parts):
            raise RunAccessError(
                f"refused run name {name[:80]!r}: only folders under the runs root {self.root} can be opened"
            )
        try:
            path = (self.root / name).resolve()
        except (OSError, RuntimeError) as e:  # a link loop
            raise RunAccessError(f"refused run name {name[:80]!r}: {e}") from None
        if not path.is_relative_to(self.root):
            raise RunAccessError(
                f"refused run name {name[:80]!r}: it leads outside the runs root {self.root}"
            )
        st = _stat(path)
        if st is None or not stat.S_ISDIR(st.st_mode) or not _is_run(path):
            raise RunAccessError(f"no run named {name[:80]!r} under {self.root}")
        return path

    def file(self, name: str, filename: str) -> Path:
        """A run file (one of RUN_FILES, or ANALYSIS_FILE), checked to lie under the root after resolving symlinks."""
        if filename not in (*RUN_FILES, ANALYSIS_FILE):
            raise RunAccessError(
                f"the viewer reads only {', '.join((*RUN_FILES, ANALYSIS_FILE))}, not {filename!r}"
            )
        try:
            path = (self.resolve(name) / filename).resolve()
        except (OSError, RuntimeError) as e:  # a link loop
            raise RunAccessError(f"refused {name}/{filename}: {e}") from None
        if not path.is_relative_to(self.root):
            raise RunAccessError(f"refused {name}/{filename}: it is a link to outside the runs root")
        return path


# ---- one run's config and summary ----
@dataclass
class RunInfo:
    name: str
    config: dict[str, Any] | None
    summary: dict[str, Any] | None
    status: str  # complete | interrupted | running | incomplete | empty
    problems: list[str] = field(default_factory=list)

    @property
    def planned(self) -> int | None:
        planned = (self.summary or {}).get("planned")
        if _count(planned) is not None:
            return planned
        task = (self.config or {}).get("task")
        limit = task.get("limit") if isinstance(task, dict) else None
        return limit if _count(limit) and limit > 0 else None

    def describe(self, key: str) -> str:
        """task / protocol / model of the run, from the summary or else the config ('?' if neither)."""
        value = (self.summary or {}).get(key)
        if isinstance(value, str):
            return value[:200]
        section = (self.config or {}).get(key)
        if isinstance(section, dict) and isinstance(section.get("name"), str):
            return section["name"][:200]
        return "?"


@functools.lru_cache(maxsize=256)
def _parse_config(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """(config, problem) of a config.yaml's text; cached, since every poll of a run reads it again.

    PyYAML's parser is recursive and slow on deep flow nesting (0.3 s per 900-deep ``[[[...]]]``), so a
    text with more brackets than any workbench config has is not parsed at all."""
    if text.count("[") + text.count("{") > MAX_CONFIG_BRACKETS:
        return None, f"config.yaml holds over {MAX_CONFIG_BRACKETS} brackets: not a workbench config; ignored"
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return None, f"config.yaml cannot be parsed ({str(e).splitlines()[0][:200]}); ignored"
    except (ValueError, TypeError, RecursionError, OverflowError) as e:  # e.g. a date 2026-13-45
        return None, f"config.yaml cannot be parsed ({type(e).__name__}); ignored"
    if not isinstance(config, dict):
        return None, "config.yaml is not a mapping; ignored"
    return config, None


def load_run_info(root: RunsRoot, name: str) -> RunInfo:
    """A run's config.yaml and summary.json, with what is missing or unreadable said in ``problems``."""
    problems: list[str] = []
    config = summary = None
    text, problem = read_small(root.file(name, "config.yaml"), "config.yaml", MAX_CONFIG)
    if problem:
        problems.append(problem)
    elif text is None:
        problems.append("config.yaml is missing")
    else:
        config, problem = _parse_config(text)
        if problem:
            problems.append(problem)
    text, problem = read_small(root.file(name, "summary.json"), "summary.json")
    if problem:
        problems.append(problem)
    episodes = root.file(name, "episodes.jsonl")
    if text is not None:
        try:
            summary = parse_json(text)
            if not isinstance(summary, dict):
                problems.append("summary.json is not an object; ignored")
                summary = None
        except ValueError as e:
            problems.append(f"summary.json is not valid JSON ({getattr(e, 'msg', e)}); ignored")
    st = _stat(episodes)
    if st is None or not stat.S_ISREG(st.st_mode):
        status = "empty"
        problems.append(
            "episodes.jsonl is missing: no episode was written"
            if st is None
            else "episodes.jsonl is not a regular file; ignored"
        )
    elif summary is not None:
        interrupted = summary.get("interrupted") is True
        status = "interrupted" if interrupted else "complete"
        if interrupted:
            n = summary.get("n")
            problems.append(f"the run was interrupted after {n if _count(n) is not None else '?'} episodes")
    elif time.time() - st.st_mtime < RUNNING_WINDOW_S:
        status = "running"
    else:
        status = "incomplete"
        problems.append("summary.json is missing: the run was killed before it finished")
    if status in ("complete", "interrupted", "incomplete") and st is not None and st.st_size == 0:
        problems.append("episodes.jsonl is empty")
    return RunInfo(name, config, summary, status, problems)


# ---- one episode, every field the viewer reads checked ----
def _count(x: Any) -> int | None:
    """``x`` if it is a non-negative int (not a bool) that fits 63 bits, else None."""
    return x if isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**63 else None


def _number(x: Any) -> float | None:
    """``x`` as a finite float if it is a (non-bool) number, else None."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    try:
        f = float(x)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _scalar_text(x: Any) -> str | None:
    """A str, or a short number as text; None for anything else (containers, None, huge ints)."""
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int) and abs(x) < 10**30 or isinstance(x, float):
        return repr(x)
    return None


class _Fields:
    """Reads fields out of untrusted dicts: each read returns the expected type (a default when the
    value has another) and notes the mismatch in ``problems``."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, where: str, x: Any, want: str) -> None:
        self.problems.append(f"{where} is {type(x).__name__}, not {want}")

    def text(self, x: Any, where: str, optional: bool = False) -> str | None:
        if x is None and optional:
            return None
        s = _scalar_text(x)
        if s is None:
            self.bad(where, x, "text")
            return None if optional else ""
        return s

    def count(self, x: Any, where: str, default: int = 0) -> int:
        c = _count(x)
        if c is None:
            self.bad(where, x, "a count (integer >= 0)")
            return default
        return c

    def number(self, x: Any, where: str, default: float = 0.0) -> float:
        f = _number(x)
        if f is None:
            self.bad(where, x, "a finite number")
            return default
        return f

    def flag(self, x: Any, where: str) -> bool:
        if not isinstance(x, bool):
            self.bad(where, x, "true/false")
            return x is True
        return x

    def ident(self, x: Any, where: str) -> int | str | None:
        """A message or node id: an int or a str (hashable, printable)."""
        if x is None or isinstance(x, str) or _count(x) is not None:
            return x
        self.bad(where, x, "an id")
        return None

    def mapping(self, x: Any, where: str, optional: bool = False) -> dict[str, Any]:
        if isinstance(x, dict):
            return x
        if not (optional and x is None):
            self.bad(where, x, "an object")
        return {}

    def items(self, x: Any, where: str) -> list[Any]:
        if isinstance(x, list):
            return x
        self.bad(where, x, "a list")
        return []


def coerce_episode(d: Any) -> tuple[dict[str, Any], list[str]]:
    """(episode, problems): a copy of ``d`` in which every field the viewer reads has its schema type.

    Fields with another type are replaced by a default (a message or graph element that is not an
    object is dropped) and named in ``problems``; the viewer skips a line with problems and draws
    whatever it is given without raising. Unknown fields are kept as they are."""
    f = _Fields()
    d = f.mapping(d, "the episode")
    out = dict(d)
    for key in ("episode_id", "task_id", "protocol", "question", "gold"):
        out[key] = f.text(d.get(key), key)
    out["final_answer"] = f.text(d.get("final_answer"), "final_answer", optional=True)
    out["correct"] = f.flag(d.get("correct"), "correct")
    out["format_failure"] = f.flag(d.get("format_failure"), "format_failure")
    out["reward"] = f.number(d.get("reward"), "reward")
    if "index" in d:
        out["index"] = f.count(d["index"], "index")
    messages = []
    for i, m in enumerate(f.items(d.get("messages"), "messages")):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            f.bad(where, m, "an object")
            continue
        clean = dict(m)
        clean["id"] = f.ident(m.get("id"), f"{where}.id")
        clean["round"] = f.count(m.get("round", 0), f"{where}.round")
        clean["sender"] = f.text(m.get("sender"), f"{where}.sender")
        clean["receivers"] = [
            f.text(r, f"{where}.receivers[]") for r in f.items(m.get("receivers", []), f"{where}.receivers")
        ]
        clean["role"] = f.text(m.get("role", "agent"), f"{where}.role")
        clean["content"] = f.text(m.get("content", ""), f"{where}.content")
        for key in ("completion_tokens", "prompt_tokens"):
            clean[key] = f.count(m.get(key, 0), f"{where}.{key}")
        for key in ("extracted", "finish_reason"):
            clean[key] = f.text(m.get(key), f"{where}.{key}", optional=True)
        if "correct" in m and not isinstance(m["correct"], bool | None):
            f.bad(f"{where}.correct", m["correct"], "true/false")
            clean.pop("correct")
        messages.append(clean)
    out["messages"] = messages
    g = f.mapping(d.get("graph"), "graph")
    nodes, edges = [], []
    for i, n in enumerate(f.items(g.get("nodes"), "graph.nodes")):
        where = f"graph.nodes[{i}]"
        if not isinstance(n, dict):
            f.bad(where, n, "an object")
            continue
        node = dict(n)
        node["id"] = f.text(n.get("id"), f"{where}.id")
        node["role"] = f.text(n.get("role"), f"{where}.role", optional=True)
        node["label"] = f.text(n.get("label"), f"{where}.label", optional=True)
        nodes.append(node)
    for i, e in enumerate(f.items(g.get("edges"), "graph.edges")):
        where = f"graph.edges[{i}]"
        if not isinstance(e, dict):
            f.bad(where, e, "an object")
            continue
        edge = dict(e)
        edge["source"] = f.text(e.get("source"), f"{where}.source")
        edge["target"] = f.text(e.get("target"), f"{where}.target")
        edge["round"] = None if e.get("round") is None else f.count(e["round"], f"{where}.round")
        edge["message_id"] = f.ident(e.get("message_id"), f"{where}.message_id")
        edges.append(edge)
    out["graph"] = {**g, "nodes": nodes, "edges": edges}
    u = f.mapping(d.get("usage"), "usage")
    out["usage"] = {
        **u,
        **{
            key: f.count(u.get(key), f"usage.{key}")
            for key in ("calls", "prompt_tokens", "completion_tokens")
        },
        "wall_s": f.number(u.get("wall_s"), "usage.wall_s"),
    }
    meta = dict(f.mapping(d.get("meta"), "meta", optional=True))
    if meta.get(TRAIN_STEP) is not None:
        meta[TRAIN_STEP] = f.count(meta[TRAIN_STEP], f"meta.{TRAIN_STEP}")
    if meta.get(ADVANTAGE) is not None:
        meta[ADVANTAGE] = f.number(meta[ADVANTAGE], f"meta.{ADVANTAGE}")
    if meta.get(NODE_ADVANTAGE) is not None:
        adv = f.mapping(meta[NODE_ADVANTAGE], f"meta.{NODE_ADVANTAGE}")
        meta[NODE_ADVANTAGE] = {
            str(k): f.number(v, f"meta.{NODE_ADVANTAGE}[{k!r:.40}]") for k, v in adv.items()
        }
    out["meta"] = meta
    return out, f.problems


# ---- episodes, incrementally ----
def _outcome(d: dict[str, Any]) -> str:
    return "format failure" if d["format_failure"] else ("correct" if d["correct"] else "wrong")


def episode_entry(d: dict[str, Any], pos: int, offset: int, length: int, line: int) -> dict[str, Any]:
    """The small index record kept per episode (the full one is re-read from ``offset``); ``d`` may be
    any dict: its fields are read through ``coerce_episode``."""
    d, _ = coerce_episode(d)
    meta, usage = d["meta"], d["usage"]
    return {
        "pos": pos,  # position in the file (0-based)
        "line": line,
        "offset": offset,
        "length": length,
        "episode_id": d["episode_id"],
        "task_id": d["task_id"],
        "index": d.get("index", pos),
        "protocol": d["protocol"],
        # the index keeps short text (tables show 90 characters); search reads the full episode
        "question": d["question"][:ENTRY_TEXT],
        "gold": d["gold"][:ENTRY_TEXT],
        "final_answer": None if d["final_answer"] is None else d["final_answer"][:ENTRY_TEXT],
        "correct": d["correct"],
        "format_failure": d["format_failure"],
        "outcome": _outcome(d),
        "reward": d["reward"],
        "calls": usage["calls"],
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "wall_s": usage["wall_s"],
        "n_agents": sum(1 for n in d["graph"]["nodes"] if n["id"] not in ("task", "answer")),
        TRAIN_STEP: meta.get(TRAIN_STEP),
        ADVANTAGE: meta.get(ADVANTAGE),
    }


def parse_episode_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(episode, None) for a good line, (None, why) for a malformed one; never raises."""
    if len(raw) > MAX_LINE:
        return None, f"longer than {MAX_LINE >> 20} MiB"
    try:
        d = parse_json(raw.decode("utf-8", errors="replace"))
    except ValueError:
        return None, "not valid JSON"
    try:
        validate(d)
    except EpisodeFormatError as e:
        return None, str(e)[:200]
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as e:
        return None, f"breaks the episode schema ({type(e).__name__})"
    d, problems = coerce_episode(d)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return None, problems[0][:200] + more
    return d, None


class EpisodeTail:
    """Follows one run's episodes.jsonl; ``poll()`` returns the entries appended since the last poll."""

    def __init__(self, root: RunsRoot, name: str):
        self.root, self.name = root, name
        self.path = root.file(name, "episodes.jsonl")
        self._reset()

    def _reset(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.problems: list[str] = []  # the first MAX_DETAILS skipped lines, one by one
        self.skipped = 0  # every malformed line skipped so far
        self.unreadable: str | None = None  # why the file cannot be read now, if it cannot
        self._offset = 0  # bytes consumed (always just after a newline)
        self._line = 0  # lines consumed
        self._pending = b""  # bytes after the last newline, seen at the last poll
        self._inode: tuple[int, int] | None = None

    def _skip(self, why: str) -> None:
        self.skipped += 1
        if len(self.problems) < MAX_DETAILS:
            self.problems.append(f"line {self._line}: {why}, skipped")

    def poll(self) -> list[dict[str, Any]]:
        try:
            f = _open_regular(self.path, "episodes.jsonl")
        except FileNotFoundError:
            return []
        except RunAccessError as e:
            self.unreadable = str(e)
            return []
        self.unreadable = None
        with f:
            st = os.fstat(f.fileno())
            inode = (st.st_dev, st.st_ino)
            if self._inode is not None and (inode != self._inode or st.st_size < self._offset):
                self._reset()  # the file was replaced or truncated: read it again from the start
            self._inode = inode
            try:
                f.seek(self._offset)
                chunk = f.read(MAX_POLL)
                if b"\n" not in chunk and len(chunk) == MAX_POLL:
                    return self._skip_long_line(f)
            except OSError as e:
                self.unreadable = f"episodes.jsonl cannot be read ({e.strerror or e})"
                return []
        end = chunk.rfind(b"\n")
        self._pending = chunk[end + 1 :]
        new: list[dict[str, Any]] = []
        if end < 0:
            return new
        start = 0
        for raw in chunk[: end + 1].split(b"\n")[:-1]:
            offset = self._offset + start
            start += len(raw) + 1
            self._line += 1
            if not raw.strip():
                continue
            d, why = parse_episode_line(raw)
            if d is None:
                self._skip(why or "malformed")
                continue
            entry = episode_entry(d, len(self.entries), offset, len(raw), self._line)
            self.entries.append(entry)
            new.append(entry)
        self._offset += end + 1
        return new

    def _skip_long_line(self, f) -> list[dict[str, Any]]:
        """A line longer than MAX_POLL: move past it (when it has ended) without keeping it."""
        pos = self._offset + MAX_POLL
        while block := f.read(1 << 20):
            cut = block.find(b"\n")
            if cut >= 0:
                self._line += 1
                self._skip(f"longer than {MAX_POLL >> 20} MiB")
                self._offset = pos + cut + 1
                self._pending = b""
                return []
            pos += len(block)
        self._pending = b"x"  # still unterminated: a torn line, or being written
        return []

    def torn_tail(self) -> str | None:
        """The message for an unterminated last line, if there is one (call after poll)."""
        if self._pending.strip():
            return (
                f"line {self._line + 1}: unterminated ({len(self._pending)} bytes); "
                "a torn last line if the run has stopped, else being written"
            )
        return None

    def summary_problems(self) -> list[str]:
        """What the run view says about the file: unreadable, and how many lines were skipped (with the first few)."""
        out = [self.unreadable] if self.unreadable else []
        if self.skipped:
            out.append(f"{self.skipped} malformed line{'s' if self.skipped != 1 else ''} skipped")
            out += self.problems[:5]
        return out

    def episode(self, pos: int) -> dict[str, Any]:
        """The full episode dict of entry ``pos`` (re-read from its byte offset, checked again)."""
        entry = self.entries[pos]
        try:
            with _open_regular(self.path, "episodes.jsonl") as f:
                f.seek(entry["offset"])
                raw = f.read(entry["length"])
        except (OSError, RunAccessError) as e:
            raise RunAccessError(f"{self.name}: episode #{pos} cannot be read again ({e})") from None
        d, why = parse_episode_line(raw)
        if d is None:
            raise RunAccessError(f"{self.name}: episode #{pos} changed on disk ({why}); refresh the view")
        return d

    def search(self, entries: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
        """The entries whose question, answers, task id or any message contains ``text`` (case-insensitive)."""
        needle = text.casefold().strip() if isinstance(text, str) else ""
        if not needle:
            return entries
        hits = []
        for entry in entries:
            try:
                d = self.episode(entry["pos"])
            except RunAccessError:
                continue
            hay = [d["task_id"], d["question"], d["gold"], str(d["final_answer"])]
            hay += [m["content"] for m in d["messages"]]
            if any(needle in h.casefold() for h in hay):
                hits.append(entry)
        return hits


OUTCOMES = ("all", "correct", "wrong", "format failure")


def filter_entries(entries: list[dict[str, Any]], outcome: str = "all") -> list[dict[str, Any]]:
    """Entries with the given outcome: all | correct | wrong (answered, not correct) | format failure."""
    if outcome not in OUTCOMES:
        raise ConfigError(f"unknown outcome filter {outcome!r}; use one of {', '.join(OUTCOMES)}")
    return entries if outcome == "all" else [e for e in entries if e["outcome"] == outcome]


def counters(entries: list[dict[str, Any]], planned: int | None = None) -> dict[str, Any]:
    """Running accuracy (Wilson 95% CI), format failures and budget of the episodes so far."""
    n = len(entries)
    k = sum(e["correct"] for e in entries)
    lo, hi = wilson_ci(k, n)
    out: dict[str, Any] = {
        "n": n,
        "planned": planned,
        "correct": k,
        "accuracy": k / n if n else None,
        "ci95": (lo, hi),
        "format_failures": sum(e["format_failure"] for e in entries),
        "calls": sum(e["calls"] for e in entries),
        "prompt_tokens": sum(e["prompt_tokens"] for e in entries),
        "completion_tokens": sum(e["completion_tokens"] for e in entries),
    }
    out["calls_per_query"] = out["calls"] / n if n else 0.0
    out["tokens_per_query"] = out["completion_tokens"] / n if n else 0.0
    steps = [e[TRAIN_STEP] for e in entries if e[TRAIN_STEP] is not None]
    if steps:
        last = max(steps)
        at_last = [e for e in entries if e[TRAIN_STEP] == last]
        advs = [e[ADVANTAGE] for e in at_last if e[ADVANTAGE] is not None]
        out["train"] = {
            "step": last,
            "episodes_at_step": len(at_last),
            "mean_reward": sum(e["reward"] for e in at_last) / len(at_last),
            "mean_abs_advantage": sum(abs(a) for a in advs) / len(advs) if advs else None,
        }
    return out
