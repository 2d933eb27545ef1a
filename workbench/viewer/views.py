"""What each view of the viewer shows, computed without Gradio (the app only wires widgets to these).

``Viewer(root)`` is shared by every browser session: it keeps one ``EpisodeTail`` per opened run,
so polling a growing run parses only its new lines, whichever session asks. Every method takes run
names as the user gave them and resolves them through ``RunsRoot`` (RunAccessError when refused).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go

from workbench.viewer.compare import find_item, outcome_grid, summary_rows
from workbench.viewer.figures import accuracy_figure, empty_figure, esc, topology_figure
from workbench.viewer.html import counters_html, notices_html, transcript_html
from workbench.viewer.store import (
    ANALYSIS_FILE,
    EpisodeTail,
    RunAccessError,
    RunInfo,
    RunsRoot,
    _count,
    _number,
    counters,
    filter_entries,
    load_run_info,
    parse_json,
    read_small,
)

EPISODE_COLUMNS = ["#", "item", "question", "answer", "gold", "outcome", "gens", "tokens"]
RUN_COLUMNS = [
    "run",
    "status",
    "task",
    "protocol",
    "model",
    "episodes",
    "accuracy [95% CI]",
    "gens/q",
    "tokens/q",
]


@dataclass
class RunSnapshot:
    """One run as the viewer shows it at one moment."""

    name: str
    info: RunInfo
    entries: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)  # missing files, skipped lines, torn tail

    @property
    def n(self) -> int:
        return len(self.entries)


class Viewer:
    def __init__(self, root: RunsRoot | str):
        self.root = root if isinstance(root, RunsRoot) else RunsRoot(root)
        self._tails: dict[str, EpisodeTail] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    # ---- runs ----
    def run_names(self) -> list[str]:
        return [r.name for r in self.root.list_runs()]

    def snapshot(self, name: str) -> RunSnapshot:
        """The run's config/summary and every valid episode so far (new lines parsed incrementally)."""
        path = self.root.resolve(name)  # refuses anything outside the root
        key = path.relative_to(self.root.root).as_posix()
        with self._lock:
            tail = self._tails.get(key)
            if tail is None:
                tail = self._tails[key] = EpisodeTail(self.root, key)
                self._locks[key] = threading.Lock()
            lock = self._locks[key]
        info = load_run_info(self.root, key)
        with lock:
            tail.poll()
            entries = list(tail.entries)
            problems = list(info.problems) + [f"episodes.jsonl: {p}" for p in tail.summary_problems()]
            torn = tail.torn_tail()
        if torn and info.status != "running":
            problems.append(f"episodes.jsonl {torn}")
        return RunSnapshot(key, info, entries, problems)

    def episode(self, name: str, pos: int) -> dict[str, Any]:
        snap = self.snapshot(name)
        if _count(pos) is None or not pos < snap.n:
            raise RunAccessError(f"run {name} has no episode #{pos} (it has {snap.n})")
        return self._tails[snap.name].episode(pos)

    def runs_table(self) -> list[list[Any]]:
        """One row per run (RUN_COLUMNS), newest first; a run that cannot be read says so in its status."""
        rows = []
        for ref in self.root.list_runs():
            try:
                snap = self.snapshot(ref.name)
                c = counters(snap.entries, snap.info.planned)
            except RunAccessError as e:  # e.g. a link that leads outside the root
                rows.append([ref.name, f"refused: {e}", "", "", "", 0, "", "", ""])
                continue
            except (OSError, ValueError, TypeError, KeyError, RecursionError) as e:
                # one run that cannot be read never hides the others (nor stops the app's start-up)
                rows.append(
                    [ref.name, f"unreadable: {type(e).__name__}: {str(e)[:200]}", "", "", "", 0, "", "", ""]
                )
                continue
            acc = f"{c['accuracy']:.3f} [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]" if c["n"] else "–"
            done = f"{c['n']}" + (f"/{c['planned']}" if c["planned"] and c["planned"] != c["n"] else "")
            status = snap.info.status + (f" ({len(snap.problems)} problem(s))" if snap.problems else "")
            rows.append(
                [
                    ref.name,
                    status,
                    snap.info.describe("task"),
                    snap.info.describe("protocol"),
                    snap.info.describe("model"),
                    done,
                    acc,
                    round(c["calls_per_query"], 2),
                    round(c["tokens_per_query"], 1),
                ]
            )
        return rows

    # ---- live ----
    def live(self, name: str) -> dict[str, Any]:
        """Counters, the newest episode's topology and transcript, running accuracy, notices."""
        snap = self.snapshot(name)
        c = counters(snap.entries, snap.info.planned)
        latest = None
        if snap.n:
            try:
                latest = self._tails[snap.name].episode(snap.n - 1)
            except RunAccessError as e:
                snap.problems.append(str(e))
        title = None
        if latest is not None:
            verdict = (
                "format failure"
                if latest["format_failure"]
                else ("correct" if latest["correct"] else "wrong")
            )
            title = f"newest episode (#{snap.n - 1}): {latest['task_id']} · {verdict}"
        return {
            "n": snap.n,
            "status": snap.info.status,
            "counters": counters_html(c, snap.info.status),
            "figure": topology_figure(latest, title=_escape_title(title)),
            "transcript": transcript_html(latest),
            "accuracy": accuracy_figure(snap.entries),
            "notices": notices_html(snap.problems),
        }

    # ---- browsing ----
    def episode_rows(self, name: str, outcome: str = "all", text: str = "") -> list[list[Any]]:
        """The run's episodes (EPISODE_COLUMNS) with an outcome filter and a case-insensitive text search."""
        snap = self.snapshot(name)
        entries = filter_entries(snap.entries, outcome)
        if text and text.strip():
            entries = self._tails[snap.name].search(entries, text)
        return [
            [
                e["pos"],
                e["task_id"],
                e["question"][:90],
                "" if e["final_answer"] is None else e["final_answer"][:30],
                e["gold"][:30],
                e["outcome"],
                e["calls"],
                e["completion_tokens"],
            ]
            for e in entries
        ]

    def episode_view(self, name: str, pos: int) -> tuple[go.Figure, str]:
        ep = self.episode(name, pos)
        return topology_figure(ep), transcript_html(ep)

    # ---- compare ----
    def compare(self, names: list[str]) -> dict[str, Any]:
        runs = {}
        problems = []
        for name in names:
            snap = self.snapshot(name)
            runs[snap.name] = snap.entries
            problems += [f"{snap.name}: {p}" for p in snap.problems]
        summary_header, summary = summary_rows(runs)
        grid_header, grid = outcome_grid(runs)
        return {
            "summary_header": summary_header,
            "summary": summary,
            "grid_header": grid_header,
            "grid": grid,
            "notices": notices_html(problems),
        }

    def compare_item(self, names: list[str], task_id: str) -> list[go.Figure]:
        """The same item's topology in each run (an empty figure that says so where a run lacks it)."""
        figs = []
        for name in names:
            snap = self.snapshot(name)
            entry = find_item(snap.entries, task_id)
            if entry is None:
                figs.append(empty_figure(f"{name} has no episode for {task_id}"))
            else:
                ep = self._tails[snap.name].episode(entry["pos"])
                verdict = (
                    "format failure" if ep["format_failure"] else ("correct" if ep["correct"] else "wrong")
                )
                figs.append(topology_figure(ep, title=_escape_title(f"{name} · {verdict}")))
        return figs

    # ---- analysis ----
    def analysis(self, name: str) -> dict[str, Any]:
        """The figures of the run's analysis.json (written by `workbench analyze`), the same ones
        analysis.html holds, and notices; an info notice says how to make it when there is none."""
        from workbench.analysis.figures import run_figures

        snap = self.snapshot(name)
        path = self.root.file(snap.name, ANALYSIS_FILE)
        text, problem = read_small(path, ANALYSIS_FILE)
        if text is None and problem is None:
            msg = f"No analysis yet for {snap.name}: run  workbench analyze {path.parent}  and refresh."
            return {"figures": {}, "notices": notices_html([msg], "info"), "headline": ""}
        try:
            if problem:
                raise ValueError(problem)
            data = parse_json(text)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            figures = run_figures(data)
        except (
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            IndexError,
            RecursionError,
            ZeroDivisionError,
        ) as e:
            msg = f"{snap.name}/{ANALYSIS_FILE} cannot be read ({type(e).__name__}: {str(e)[:200]}); run workbench analyze again"
            return {"figures": {}, "notices": notices_html([msg], "error"), "headline": ""}
        problems = data.get("problems")
        notes = (
            [str(p)[:400] for p in problems[:50] if isinstance(p, str)] if isinstance(problems, list) else []
        )
        n = data.get("n") if _count(data.get("n")) is not None else "?"
        if snap.n != n:
            notes.append(f"the analysis covers {n} episodes; the run now has {snap.n}: analyse it again")
        accuracy = data.get("accuracy")
        acc = _number(accuracy.get("mean")) if isinstance(accuracy, dict) else None
        head = f"{esc(data.get('protocol'), 80)} on {esc(data.get('task'), 80)}: {n} episodes"
        head += f", accuracy {acc:.3f}" if acc is not None else ""
        return {"figures": figures, "notices": notices_html(notes), "headline": head}


def _escape_title(title: str | None) -> str | None:
    return None if title is None else esc(title)
