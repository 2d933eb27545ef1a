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
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from workbench.analysis.stats import wilson_ci
from workbench.config import ConfigError
from workbench.episode import EpisodeFormatError, validate

RUN_FILES = ("episodes.jsonl", "config.yaml", "summary.json")
ANALYSIS_FILE = "analysis.json"  # written by `workbench analyze`; read by the Analysis view
RUNNING_WINDOW_S = 120.0  # a run without summary.json whose episodes file changed this recently is "running"
MAX_DEPTH = 4  # how deep under the root run folders are looked for (demo runs nest one level)

# Training fields (docs/viewer.md): written by the RL trainer into Episode.meta.
TRAIN_STEP, ADVANTAGE, NODE_ADVANTAGE = "train_step", "advantage", "node_advantage"


class RunAccessError(ConfigError):
    """A run name the viewer refuses: unknown, or a path outside the runs root."""


@dataclass(frozen=True)
class RunRef:
    name: str  # path relative to the runs root, with '/' separators
    path: Path  # resolved absolute folder
    mtime: float  # last change of the run's files (newest first in listings)


def _is_run(folder: Path) -> bool:
    return any((folder / f).is_file() for f in RUN_FILES)


def _mtime(folder: Path) -> float:
    times = [(folder / f).stat().st_mtime for f in RUN_FILES if (folder / f).is_file()]
    return max(times, default=0.0)


class RunsRoot:
    """The one folder the viewer may read: run discovery and name-to-path resolution."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"runs root '{self.root}' is a file; pass a folder with --runs DIR")

    def list_runs(self) -> list[RunRef]:
        """Every run folder under the root (not following symlinks, skipping hidden folders), newest first."""
        found: list[RunRef] = []
        if not self.root.is_dir():
            return found

        def walk(folder: Path, depth: int) -> None:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                return
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                    continue
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
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root):
            raise RunAccessError(
                f"refused run name {name[:80]!r}: it leads outside the runs root {self.root}"
            )
        if not path.is_dir() or not _is_run(path):
            raise RunAccessError(f"no run named {name[:80]!r} under {self.root}")
        return path

    def file(self, name: str, filename: str) -> Path:
        """A run file (one of RUN_FILES, or ANALYSIS_FILE), checked to lie under the root after resolving symlinks."""
        if filename not in (*RUN_FILES, ANALYSIS_FILE):
            raise RunAccessError(
                f"the viewer reads only {', '.join((*RUN_FILES, ANALYSIS_FILE))}, not {filename!r}"
            )
        path = (self.resolve(name) / filename).resolve()
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
        if self.summary and isinstance(self.summary.get("planned"), int):
            return self.summary["planned"]
        task = (self.config or {}).get("task")
        limit = task.get("limit") if isinstance(task, dict) else None
        return limit if isinstance(limit, int) and limit > 0 else None

    def describe(self, key: str) -> str:
        """task / protocol / model of the run, from the summary or else the config ('?' if neither)."""
        if self.summary and self.summary.get(key) is not None:
            return str(self.summary[key])
        section = (self.config or {}).get(key)
        if isinstance(section, dict) and section.get("name") is not None:
            return str(section["name"])
        return "?"


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None


def load_run_info(root: RunsRoot, name: str) -> RunInfo:
    """A run's config.yaml and summary.json, with what is missing or unreadable said in ``problems``."""
    problems: list[str] = []
    config = summary = None
    text = _read_text(root.file(name, "config.yaml"))
    if text is None:
        problems.append("config.yaml is missing")
    else:
        try:
            config = yaml.safe_load(text)
            if not isinstance(config, dict):
                problems.append("config.yaml is not a mapping; ignored")
                config = None
        except yaml.YAMLError as e:
            problems.append(f"config.yaml cannot be parsed ({str(e).splitlines()[0]}); ignored")
    text = _read_text(root.file(name, "summary.json"))
    episodes = root.file(name, "episodes.jsonl")
    if text is not None:
        try:
            summary = json.loads(text)
            if not isinstance(summary, dict):
                problems.append("summary.json is not an object; ignored")
                summary = None
        except json.JSONDecodeError as e:
            problems.append(f"summary.json is not valid JSON ({e.msg}); ignored")
    if not episodes.is_file():
        status = "empty"
        problems.append("episodes.jsonl is missing: no episode was written")
    elif summary is not None:
        status = "interrupted" if summary.get("interrupted") else "complete"
        if summary.get("interrupted"):
            problems.append(f"the run was interrupted after {summary.get('n', '?')} episodes")
    elif time.time() - episodes.stat().st_mtime < RUNNING_WINDOW_S:
        status = "running"
    else:
        status = "incomplete"
        problems.append("summary.json is missing: the run was killed before it finished")
    if (
        status in ("complete", "interrupted", "incomplete")
        and episodes.is_file()
        and episodes.stat().st_size == 0
    ):
        problems.append("episodes.jsonl is empty")
    return RunInfo(name, config, summary, status, problems)


# ---- episodes, incrementally ----
def _outcome(d: dict[str, Any]) -> str:
    return "format failure" if d["format_failure"] else ("correct" if d["correct"] else "wrong")


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def episode_entry(d: dict[str, Any], pos: int, offset: int, length: int, line: int) -> dict[str, Any]:
    """The small index record kept per episode (the full one is re-read from ``offset``)."""
    meta = d.get("meta") if isinstance(d.get("meta"), dict) else {}
    usage = d["usage"]
    return {
        "pos": pos,  # position in the file (0-based)
        "line": line,
        "offset": offset,
        "length": length,
        "episode_id": str(d["episode_id"]),
        "task_id": str(d["task_id"]),
        "index": d.get("index", pos),
        "protocol": str(d["protocol"]),
        "question": str(d["question"]),
        "gold": str(d["gold"]),
        "final_answer": None if d["final_answer"] is None else str(d["final_answer"]),
        "correct": d["correct"],
        "format_failure": d["format_failure"],
        "outcome": _outcome(d),
        "reward": float(d["reward"]),
        "calls": usage["calls"],
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "wall_s": usage["wall_s"],
        "n_agents": sum(1 for n in d["graph"]["nodes"] if n.get("id") not in ("task", "answer")),
        TRAIN_STEP: meta.get(TRAIN_STEP) if isinstance(meta.get(TRAIN_STEP), int) else None,
        ADVANTAGE: _number(meta.get(ADVANTAGE)),
    }


class EpisodeTail:
    """Follows one run's episodes.jsonl; ``poll()`` returns the entries appended since the last poll."""

    def __init__(self, root: RunsRoot, name: str):
        self.root, self.name = root, name
        self.path = root.file(name, "episodes.jsonl")
        self._reset()

    def _reset(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self._offset = 0  # bytes consumed (always just after a newline)
        self._line = 0  # lines consumed
        self._pending = b""  # bytes after the last newline, seen at the last poll
        self._inode: tuple[int, int] | None = None

    def poll(self) -> list[dict[str, Any]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        inode = (st.st_dev, st.st_ino)
        if self._inode is not None and (inode != self._inode or st.st_size < self._offset):
            self._reset()  # the file was replaced or truncated: read it again from the start
        self._inode = inode
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
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
            try:
                d = json.loads(raw.decode("utf-8", errors="replace"))
                validate(d)
            except json.JSONDecodeError:
                self.problems.append(f"line {self._line}: not valid JSON, skipped")
                continue
            except EpisodeFormatError as e:
                self.problems.append(f"line {self._line}: {e}, skipped")
                continue
            entry = episode_entry(d, len(self.entries), offset, len(raw), self._line)
            self.entries.append(entry)
            new.append(entry)
        self._offset += end + 1
        return new

    def torn_tail(self) -> str | None:
        """The message for an unterminated last line, if there is one (call after poll)."""
        if self._pending.strip():
            return (
                f"line {self._line + 1}: unterminated ({len(self._pending)} bytes); "
                "a torn last line if the run has stopped, else being written"
            )
        return None

    def episode(self, pos: int) -> dict[str, Any]:
        """The full episode dict of entry ``pos`` (re-read from its byte offset)."""
        entry = self.entries[pos]
        with open(self.path, "rb") as f:
            f.seek(entry["offset"])
            raw = f.read(entry["length"])
        return json.loads(raw.decode("utf-8", errors="replace"))

    def search(self, entries: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
        """The entries whose question, answers, task id or any message contains ``text`` (case-insensitive)."""
        needle = text.casefold().strip()
        if not needle:
            return entries
        hits = []
        for entry in entries:
            d = self.episode(entry["pos"])
            hay = [d["task_id"], d["question"], str(d["gold"]), str(d["final_answer"])]
            hay += [str(m.get("content", "")) for m in d["messages"]]
            if any(needle in str(h).casefold() for h in hay):
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
