"""The episode explorer: pick a run, filter right / wrong / format failure, step through episodes,
with the topology and the per-agent transcript side by side (the viewer's figures and HTML)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import ipywidgets as w

from workbench.config import ConfigError
from workbench.runs import default_root
from workbench.viewer import RunsRoot, Viewer
from workbench.viewer.figures import empty_figure
from workbench.viewer.html import notices_html
from workbench.viewer.store import OUTCOMES
from workbench.widgets.plots import show_figure


class EpisodeExplorer(w.VBox):
    """Runs under ``root`` (default: the checkout's runs/); ``runs`` limits the list to those names.

    Headless use (tests, scripts): ``select_run``, ``set_outcome``, ``next``, ``previous``, ``show``;
    the state is ``run``, ``positions`` (episodes the filter lets through) and ``current``."""

    def __init__(self, root: str | Path | None = None, runs: list[str] | None = None, run: str | None = None):
        self.viewer = Viewer(RunsRoot(root or default_root()))
        self.only = runs
        self.positions: list[int] = []
        self.current: int | None = None
        names = self.run_names()
        self.run_dropdown = w.Dropdown(
            options=names, value=None, description="run", layout=w.Layout(width="70%")
        )
        self.outcome = w.ToggleButtons(options=list(OUTCOMES), value="all", description="show")
        self.prev_button = w.Button(description="← previous", layout=w.Layout(width="110px"))
        self.next_button = w.Button(description="next →", layout=w.Layout(width="110px"))
        self.position = w.HTML()
        self.notices = w.HTML()
        self.graph = w.Output(layout=w.Layout(width="58%"))
        self.transcript = w.HTML(layout=w.Layout(width="42%", max_height="640px", overflow="auto"))
        self.prev_button.on_click(lambda _: self.previous())
        self.next_button.on_click(lambda _: self.next())
        self.run_dropdown.observe(lambda ch: self._load(), names="value")
        self.outcome.observe(lambda ch: self._load(), names="value")
        super().__init__(
            [
                self.run_dropdown,
                self.outcome,
                w.HBox([self.prev_button, self.position, self.next_button]),
                self.notices,
                w.HBox([self.graph, self.transcript]),
            ]
        )
        self.add_class("wb-explorer")
        first = run if run in names else (names[0] if names else None)
        if first is None:
            self.notices.value = notices_html([f"No runs under {self.viewer.root.root} yet."], "info")
            show_figure(self.graph, empty_figure("no run"))
        else:
            self.run_dropdown.value = first  # loads it

    @classmethod
    def for_runs(cls, run_dirs: list[str | Path], **kwargs: Any) -> EpisodeExplorer:
        """An explorer over these run folders (any places): the root is their common parent."""
        dirs = [Path(d).resolve() for d in run_dirs]
        if not dirs:
            return cls(**kwargs)
        root = Path(os.path.commonpath(dirs)) if len(dirs) > 1 else dirs[0].parent
        if root in dirs:  # one run inside another's folder: go one up
            root = root.parent
        return cls(root, runs=[d.relative_to(root).as_posix() for d in dirs], **kwargs)

    # ---- state ----
    def run_names(self) -> list[str]:
        names = self.viewer.run_names()
        if self.only is not None:
            order = {n: i for i, n in enumerate(self.only)}
            names = sorted((n for n in names if n in order), key=order.get)
        return names

    @property
    def run(self) -> str | None:
        return self.run_dropdown.value

    def select_run(self, name: str) -> None:
        if name not in self.run_dropdown.options:
            self.notices.value = notices_html([f"no run named {name!r} here"], "error")
            return
        self.run_dropdown.value = name

    def set_outcome(self, outcome: str) -> None:
        self.outcome.value = outcome

    def next(self) -> None:
        self._step(+1)

    def previous(self) -> None:
        self._step(-1)

    def _step(self, delta: int) -> None:
        if not self.positions:
            return
        i = self.positions.index(self.current) if self.current in self.positions else -1
        self.show(self.positions[min(max(i + delta, 0), len(self.positions) - 1)])

    def _load(self) -> None:
        run = self.run
        self.positions, self.current = [], None
        if run is None:
            return
        try:
            snap = self.viewer.snapshot(run)
            rows = self.viewer.episode_rows(run, self.outcome.value)
        except ConfigError as e:
            self.notices.value = notices_html([str(e)], "error")
            show_figure(self.graph, empty_figure("refused"))
            self.transcript.value = ""
            return
        self.positions = [r[0] for r in rows]
        self.notices.value = notices_html(snap.problems) if snap.problems else ""
        if not self.positions:
            self.position.value = f"<b>{html.escape(run)}</b>: no episode is {self.outcome.value}"
            show_figure(self.graph, empty_figure(f"no {self.outcome.value} episode"))
            self.transcript.value = ""
            return
        self.show(self.positions[0])

    def show(self, pos: int) -> None:
        try:
            fig, transcript = self.viewer.episode_view(self.run, pos)
        except ConfigError as e:
            self.notices.value = notices_html([str(e)], "error")
            return
        self.current = pos
        i = self.positions.index(pos) + 1 if pos in self.positions else 0
        self.position.value = (
            f"&nbsp;<b>{html.escape(self.run)}</b> · episode <b>#{pos}</b> "
            f"({i} of {len(self.positions)} {html.escape(self.outcome.value)})&nbsp;"
        )
        show_figure(self.graph, fig)
        self.transcript.value = transcript
