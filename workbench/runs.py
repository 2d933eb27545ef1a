"""The runs store: one folder per run, append-only and crash-tolerant.

    runs/<run-id>/
      config.yaml      the resolved config (written first, atomically)
      episodes.jsonl   one Episode per line, appended and flushed as each episode ends
      summary.json     n, accuracy, ci95, format_failures, usage totals (rewritten atomically)

A run killed mid-write leaves at worst a torn last line in episodes.jsonl; `read_episodes`
skips it and reports it, so everything before it stays readable.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench.analysis.stats import wilson_ci
from workbench.episode import Episode, EpisodeFormatError, validate


class RunDirError(ValueError):
    """A run folder that cannot be used (exists already, not writable)."""


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def default_root() -> Path:
    """Where runs go: $WORKBENCH_RUNS_DIR, else runs/ in the project checkout (found from the
    current folder upwards, so notebooks/ and the repo root share one store), else ./runs."""
    env = os.environ.get("WORKBENCH_RUNS_DIR")
    if env:
        return Path(env).expanduser()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() and (folder / "workbench").is_dir():
            return folder / "runs"
    return here / "runs"


def new_run_dir(root: Path, task: str, protocol: str) -> Path:
    """A fresh folder name under ``root``: <time>-<task>-<protocol>, with -2, -3 … if taken."""
    safe_task = "".join(c if c.isalnum() or c in "-_" else "_" for c in task.split(":")[0])
    base = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe_task}-{protocol}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


class RunWriter:
    """Writes one run folder. Create it only after the config has been validated."""

    def __init__(self, run_dir: str | Path, config: dict[str, Any]):
        self.dir = Path(run_dir)
        self.check_free(self.dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create run folder '{self.dir}': {e.strerror}") from None
        atomic_write(self.dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        self._episodes = open(self.dir / "episodes.jsonl", "a", encoding="utf-8")

    @staticmethod
    def check_free(run_dir: Path) -> None:
        """Refuse a folder that already holds a run (call it before expensive work, too)."""
        if (run_dir / "episodes.jsonl").exists() or (run_dir / "config.yaml").exists():
            raise RunDirError(f"run folder '{run_dir}' already holds a run; choose a new --out or delete it")

    def append(self, episode: Episode) -> None:
        self._episodes.write(json.dumps(episode.to_dict(), ensure_ascii=False) + "\n")
        self._episodes.flush()
        os.fsync(self._episodes.fileno())

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write(self.dir / "summary.json", json.dumps(summary, indent=2) + "\n")

    def close(self) -> None:
        self._episodes.close()


@dataclass
class ReadResult:
    episodes: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)  # lines that were skipped, and why


def read_episodes(path: str | Path) -> ReadResult:
    """Every valid episode line of a run's episodes.jsonl (or of a run folder).

    A torn or invalid line is skipped and named in ``problems``; it never hides the others.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "episodes.jsonl"
    if not path.exists():
        return ReadResult([], [f"{path} does not exist"])
    episodes, problems = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            validate(d)
        except json.JSONDecodeError:
            torn = lineno == len(lines)  # no newline after it: the writer died mid-line
            problems.append(
                f"{path}:{lineno}: {'torn last line (run interrupted?)' if torn else 'not valid JSON'}, skipped"
            )
            continue
        except EpisodeFormatError as e:
            problems.append(f"{path}:{lineno}: {e}, skipped")
            continue
        episodes.append(d)
    return ReadResult(episodes, problems)


def summarize(
    episodes: Iterable[dict[str, Any]], wall_s: float | None = None, **extra: Any
) -> dict[str, Any]:
    """Accuracy with a Wilson 95% CI, format failures and usage totals of a list of episode dicts.

    ``wall_s``: the run's wall time (episodes overlap under batching, so their own wall times do
    not add up to it); by default the sum of the episodes' wall times.
    """
    eps = list(episodes)
    n = len(eps)
    k = sum(e["correct"] for e in eps)
    lo, hi = wilson_ci(k, n)
    usage = {
        key: sum(e["usage"][key] for e in eps) for key in ("calls", "prompt_tokens", "completion_tokens")
    }
    per_query = {f"{key}_per_query": round(v / n, 2) if n else 0.0 for key, v in usage.items()}
    wall = sum(e["usage"]["wall_s"] for e in eps) if wall_s is None else wall_s
    usage["wall_s"] = round(wall, 3)
    per_query["wall_s_per_query"] = round(wall / n, 3) if n else 0.0
    return {
        "n": n,
        "correct": k,
        "accuracy": round(k / n, 4) if n else 0.0,
        "ci95": [round(lo, 4), round(hi, 4)],
        "format_failures": sum(e["format_failure"] for e in eps),
        "usage": usage,
        **per_query,
        **extra,
    }
