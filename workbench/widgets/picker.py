"""Run folders for a notebook: find and check them (kind, existence), and a run picker widget."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ipywidgets as w

from workbench.runs import default_root, read_config
from workbench.viewer import RunsRoot, Viewer

KINDS = ("eval", "train", "compare")


def run_kind(path: str | Path) -> str | None:
    """'compare' (comparison.json), 'train' (a training run: metrics.jsonl or a recipe in its
    config), 'eval' (config.yaml + episodes.jsonl of one protocol), or None (not a run)."""
    p = Path(path)
    if (p / "comparison.json").is_file():
        return "compare"
    if not (p / "config.yaml").is_file():
        return None
    cfg = read_config(p / "config.yaml") or {}
    if (p / "metrics.jsonl").exists() or "recipe" in cfg or "train" in cfg:
        return "train"
    return "eval" if (p / "episodes.jsonl").exists() else None


@dataclass
class FoundRuns:
    dirs: list[Path] = field(default_factory=list)  # usable run folders of the wanted kind
    problems: list[str] = field(default_factory=list)  # one line per refused input

    def report(self) -> str:
        return "\n".join(self.problems)


def _comparison_runs(path: Path) -> list[Path]:
    try:
        rows = json.loads((path / "comparison.json").read_text())["rows"]
        return [Path(d) for row in rows for d in row["run_dirs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def find_runs(paths: Any, kind: str = "eval") -> FoundRuns:
    """Check each folder of ``paths`` (a list, or one path): it must exist and hold a run of
    ``kind``; a comparison folder stands for its protocol runs. Never raises on a bad input: each
    one becomes a line in ``problems`` that names it and what to pass instead."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    items = [paths] if isinstance(paths, (str, Path)) else list(paths or [])
    found = FoundRuns()
    for item in items:
        p = Path(item).expanduser()
        got = run_kind(p) if p.is_dir() else None
        if not p.is_dir():
            found.problems.append(
                f"RUN_DIRS: {item} is not a folder; pass run folders that exist (see runs/)"
            )
        elif got == "compare" and kind == "eval":
            runs = [d for d in _comparison_runs(p) if run_kind(d) == "eval"]
            found.dirs += runs
            if not runs:
                found.problems.append(f"RUN_DIRS: {item} is a comparison whose run folders are gone")
        elif got == kind:
            found.dirs.append(p)
        elif got is None:
            found.problems.append(f"RUN_DIRS: {item} holds no run (no config.yaml); pass a {kind} run folder")
        else:
            found.problems.append(
                f"RUN_DIRS: {item} is a {got} run, not a{'n' if kind == 'eval' else ''} {kind} run; "
                f"pass a folder written by workbench {'eval or compare' if kind == 'eval' else kind}"
            )
    return found


class RunPicker(w.VBox):
    """A dropdown of the runs under a root (newest first, optionally one kind) with a one-line summary.

    ``picker.path`` is the chosen run folder; ``on_pick(callback)`` calls ``callback(path)`` on change."""

    def __init__(self, root: str | Path | None = None, kind: str | None = None, description: str = "run"):
        self.viewer = Viewer(RunsRoot(root or default_root()))
        self.kind = kind
        self._callbacks: list[Any] = []
        self.dropdown = w.Dropdown(description=description, layout=w.Layout(width="60%"))
        self.info = w.HTML()
        self.refresh_button = w.Button(description="Refresh", layout=w.Layout(width="90px"))
        self.refresh_button.on_click(lambda _: self.refresh())
        self.dropdown.observe(self._changed, names="value")
        super().__init__([w.HBox([self.dropdown, self.refresh_button]), self.info])
        self.refresh()

    def names(self) -> list[str]:
        names = self.viewer.run_names()
        if self.kind:
            names = [n for n in names if run_kind(self.viewer.root.root / n) == self.kind]
        return names

    def refresh(self) -> None:
        current = self.dropdown.value
        names = self.names()
        self.dropdown.options = names
        self.dropdown.value = current if current in names else (names[0] if names else None)
        if not names:
            where = html.escape(str(self.viewer.root.root))
            self.info.value = f"<i>No {self.kind or ''} runs under {where} yet.</i>"

    @property
    def path(self) -> Path | None:
        return None if self.dropdown.value is None else self.viewer.root.root / self.dropdown.value

    def on_pick(self, callback) -> None:
        self._callbacks.append(callback)

    def _changed(self, change: dict[str, Any]) -> None:
        name = change["new"]
        if name is None:
            return
        snap = self.viewer.snapshot(name)
        acc = snap.info.summary.get("accuracy") if isinstance(snap.info.summary, dict) else None
        self.info.value = (
            f"<code>{html.escape(snap.name)}</code>: {snap.info.status}, {snap.n} episodes, "
            f"task {html.escape(snap.info.describe('task'))}, protocol {html.escape(snap.info.describe('protocol'))}"
            + (f", accuracy {acc:.3f}" if isinstance(acc, (int, float)) and not isinstance(acc, bool) else "")
        )
        for cb in self._callbacks:
            cb(self.path)
