"""The workbench viewer's Gradio app (``workbench app``; ``apps/viewer.py`` is a thin entry point).

    workbench app [--runs DIR] [--host 127.0.0.1] [--port 7860]

Views: Live (the newest episode of a run as it is written), Runs (browse, filter, step through
episodes), Compare (runs on the same items), Analysis (the figures of `workbench analyze`),
Launch (start and cancel `workbench eval`). What each view shows is computed by `workbench.viewer`
(no Gradio there); this module lays out one tab per builder (``build_live`` ... ``build_launch``)
and answers events with the methods of ``Handlers`` (testable without a page). Gradio is imported
here only, and this module only when the app is asked for (``workbench.viewer.load_app``), so the
package stays importable without the ``app`` extra. See docs/viewer.md.
"""

from __future__ import annotations

import argparse
import atexit
import ipaddress
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local research tool

import gradio as gr  # noqa: E402

from workbench.config import ConfigError  # noqa: E402
from workbench.protocols import PROTOCOLS  # noqa: E402
from workbench.runs import default_root  # noqa: E402
from workbench.viewer import RunsRoot, Viewer, counters  # noqa: E402
from workbench.viewer.figures import empty_figure  # noqa: E402
from workbench.viewer.html import notices_html  # noqa: E402
from workbench.viewer.launch import SPLITS, Launcher, launch_tasks  # noqa: E402
from workbench.viewer.store import OUTCOMES  # noqa: E402
from workbench.viewer.views import EPISODE_COLUMNS, RUN_COLUMNS  # noqa: E402

POLL_S = 1.0  # how often Live and Launch look for new episodes
MAX_COMPARE = 4  # topologies shown side by side in Compare
MAX_ANALYSIS_FIGS = 8  # figure slots in Analysis (workbench/analysis/figures.py makes at most 7)
TABLE_ROWS = 500  # rows sent to a browser table: more makes every page update slow (measured: docs/viewer.md)

# Keyboard: j / → next episode, k / ← previous (in Runs), when no text field has the focus.
KEYS_JS = """
<script>
document.addEventListener('keydown', (ev) => {
  const t = ev.target;
  if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
  const id = {'j': 'wb-next', 'ArrowRight': 'wb-next', 'k': 'wb-prev', 'ArrowLeft': 'wb-prev'}[ev.key];
  const btn = id && document.getElementById(id);
  if (btn && btn.offsetParent !== null) { btn.click(); ev.preventDefault(); }
});
</script>
"""
CSS = """
#wb-transcript {max-height: 720px; overflow-y: auto;}
.wb-small textarea {font-family: ui-monospace, monospace; font-size: 12px;}
"""


def _error(e: Exception) -> str:
    return notices_html([str(e)], "error")


def _shown(html: str) -> dict:
    """An update for a notice block: visible only when it has something to say (no empty gap)."""
    return gr.update(value=html, visible=bool(html))


def _empty(message: str):
    return empty_figure(message)


class Handlers:
    """Every event handler of the app, bound to one runs root (``viewer``) and ``launcher``.

    Method names are the app's API names (``/live_tick``, ``/compare``, ``/start``, ...)."""

    def __init__(self, viewer: Viewer, launcher: Launcher):
        self.viewer = viewer
        self.launcher = launcher

    # ---------------- Live ----------------
    def live_tick(self, run: str | None, follow_newest: bool, seen: Any):
        """Redraw only what changed since ``seen`` = (run list, (run, episodes, status, problems))."""
        viewer = self.viewer
        choices = viewer.run_names()
        if follow_newest and choices and run != choices[0]:
            run = choices[0]
        old_choices, old_key = seen or (None, None)
        # the run list is sent only when it changed (an update every second would close an open menu)
        dd = (
            gr.update(choices=choices, value=run)
            if (choices, run) != (old_choices, (old_key or [None])[0])
            else gr.skip()
        )
        if not run:
            msg = notices_html([f"No runs under {viewer.root.root} yet: start one in Launch."], "info")
            return dd, msg, _shown(""), _empty("no run"), _empty("no run"), "", (choices, None)
        try:
            snap = viewer.snapshot(run)
        except ConfigError as e:
            return dd, "", _shown(_error(e)), _empty("refused"), _empty(""), "", (choices, None)
        key = (snap.name, snap.n, snap.info.status, len(snap.problems))
        if key == old_key:
            return dd, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), (choices, key)
        live = viewer.live(run)
        figs = (live["figure"], live["accuracy"], live["transcript"])
        return dd, live["counters"], _shown(live["notices"]), *figs, (choices, key)

    def from_url(self, request: gr.Request):
        """Fresh run lists on every page load; ``?run=NAME`` opens that run in Live and Runs."""
        viewer = self.viewer
        choices = viewer.run_names()
        run = request.query_params.get("run") if request is not None else None
        lists = gr.update(choices=choices), gr.update(choices=choices), gr.update(choices=choices)
        table = viewer.runs_table()
        if not run:
            return *lists, gr.skip(), _shown(""), table
        try:
            name = viewer.snapshot(run).name
        except ConfigError as e:
            return *lists, gr.skip(), _shown(_error(e)), table
        picked = [gr.update(choices=choices, value=name) for _ in range(2)]  # one dict per output
        return *picked, lists[2], False, _shown(""), table

    # ---------------- Runs ----------------
    def list_episodes(self, run: str | None, out: str, text: str):
        viewer = self.viewer
        if not run:
            return notices_html(["No run selected."], "info"), [], [], None, "", _empty("no run"), ""
        try:
            snap = viewer.snapshot(run)
            rows = viewer.episode_rows(run, out, text)
        except ConfigError as e:
            return _error(e), [], [], None, "", _empty("refused"), ""
        c = counters(snap.entries, snap.info.planned)
        acc = "–" if c["accuracy"] is None else f"{c['accuracy']:.3f}"
        head = f"{snap.name}: {snap.info.status}, {c['n']} episodes, accuracy {acc}; {len(rows)} listed"
        if len(rows) > TABLE_ROWS:
            head += f" (the table shows the first {TABLE_ROWS}; previous/next step through all)"
        notices = notices_html([head], "info") + notices_html(snap.problems)
        positions = [r[0] for r in rows]
        if not positions:
            return notices, rows, [], None, "no episode matches", _empty("no episode matches"), ""
        fig, transcript = viewer.episode_view(run, positions[0])
        first = _position(positions, positions[0])
        return notices, rows[:TABLE_ROWS], positions, positions[0], first, fig, transcript

    def show(self, run: str | None, positions: list[int], pos: int | None):
        if run is None or pos is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        pos = _as_pos(pos)
        if pos is None:  # a value sent by a client, not one the table listed
            return gr.skip(), "", _empty("refused"), _error(ConfigError("no such episode"))
        try:
            fig, transcript = self.viewer.episode_view(run, pos)
        except ConfigError as e:
            return pos, "", _empty("refused"), _error(e)
        return pos, _position(positions, pos), fig, transcript

    def step(self, run: str | None, positions: list[int], pos: int | None, delta: int):
        if not positions:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        i = positions.index(pos) if pos in positions else -1
        i = min(max(i + delta, 0), len(positions) - 1)
        return self.show(run, positions, positions[i])

    def previous(self, run: str | None, positions: list[int], pos: int | None):
        return self.step(run, positions, pos, -1)

    def next(self, run: str | None, positions: list[int], pos: int | None):
        return self.step(run, positions, pos, +1)

    def pick_episode(self, run: str | None, positions: list[int], evt: gr.SelectData):
        row = evt.row_value or []
        return self.show(run, positions, row[0] if row else None)

    def pick_run(self, evt: gr.SelectData):
        row = evt.row_value or []
        return row[0] if row else gr.skip()

    def refresh_table(self):
        return gr.update(value=self.viewer.runs_table())

    def refresh_names(self, run: str | None):
        return gr.update(choices=self.viewer.run_names(), value=run)

    # ---------------- Compare ----------------
    def compare(self, selected: list[str] | None):
        selected = list(selected or [])
        hidden = [gr.update(visible=i < max(2, min(len(selected), MAX_COMPARE))) for i in range(MAX_COMPARE)]
        if len(selected) < 2:
            return notices_html(["Pick two or more runs."], "info"), None, None, *hidden
        try:
            c = self.viewer.compare(selected)
        except ConfigError as e:
            return _error(e), None, None, *hidden
        summary = gr.update(value=c["summary"], headers=c["summary_header"])
        grid = gr.update(value=c["grid"], headers=c["grid_header"])
        if not c["grid"]:
            return c["notices"], summary, grid, *hidden
        # show the first item on which the runs differ (else the first item) side by side
        first = next((r for r in c["grid"] if r[-1] == "differ"), c["grid"][0])
        return c["notices"], summary, grid, *self.item_figures(selected, str(first[0]))

    def item_figures(self, selected: list[str], task_id: str) -> list[Any]:
        selected = selected[:MAX_COMPARE]
        try:
            figs = self.viewer.compare_item(selected, task_id)
        except ConfigError as e:
            figs = [_empty(str(e))] * len(selected)
        shown = [
            gr.update(value=f, visible=True, label=f"{task_id} in {name}")
            for f, name in zip(figs, selected, strict=True)
        ]
        return shown + [gr.update(visible=False)] * (MAX_COMPARE - len(figs))

    def compare_pick(self, selected: list[str] | None, evt: gr.SelectData):
        selected = list(selected or [])[:MAX_COMPARE]
        row = evt.row_value or []
        if not row or len(selected) < 2:
            return [gr.skip()] * MAX_COMPARE
        return self.item_figures(selected, str(row[0]))

    # ---------------- Analysis ----------------
    def show_analysis(self, run: str | None):
        """The figures of the run's analysis.json (`workbench analyze RUN` writes it)."""
        hidden = [gr.update(visible=False)] * MAX_ANALYSIS_FIGS
        if not run:
            return "", notices_html(["No run selected."], "info"), *hidden
        try:
            out = self.viewer.analysis(run)
        except ConfigError as e:
            return "", _error(e), *hidden
        figs = list(out["figures"].items())[:MAX_ANALYSIS_FIGS]
        shown = [gr.update(value=f, visible=True, label=name) for name, f in figs]
        return out["headline"], out["notices"], *shown, *hidden[len(shown) :]

    # ---------------- Launch ----------------
    def start(self, task, protocol, model, limit, split, seed, extra):
        job = self.launcher.latest
        if job is not None and job.returncode is None:
            return notices_html([f"{job.name} is still running; cancel it or wait."], "notice"), gr.skip()
        try:
            # the launcher checks every field (types included): the page's values go to it as sent
            self.launcher.start(task, protocol, model, limit, split, 0 if seed is None else seed, extra or "")
        except ConfigError as e:
            return _error(e), ""
        return self.launch_status(), ""

    def launch_status(self) -> str:
        job = self.launcher.latest
        if job is None:
            return notices_html(["No evaluation started from this page yet."], "info")
        done, planned = 0, None
        try:
            snap = self.viewer.snapshot(job.name)
            done, planned = snap.n, snap.info.planned
        except ConfigError:
            pass  # the run folder appears once the model is loaded
        bar = f'<progress max="{planned or 1}" value="{done}"></progress>' if planned else ""
        text = f"{job.name}: {job.state} · {done}" + (f"/{planned}" if planned else "") + " episodes"
        kind = "error" if job.state.startswith("failed") else "info"
        return notices_html([text], kind) + bar

    def launch_tick(self):
        job = self.launcher.latest
        return self.launch_status(), (job.log_tail() if job else "")

    def cancel(self) -> str:
        self.launcher.cancel()
        return self.launch_status()


# ---------------- the tabs: one builder each (layout, then its own events) ----------------
@dataclass
class LiveTab:
    tab: Any
    run: Any
    follow: Any
    counters: Any
    notices: Any
    fig: Any
    acc: Any
    transcript: Any
    seen: Any
    timer: Any

    @property
    def outputs(self) -> list[Any]:
        return [self.run, self.counters, self.notices, self.fig, self.acc, self.transcript, self.seen]


def build_live(h: Handlers, names: list[str], newest: str | None) -> LiveTab:
    with gr.Tab("Live", id="live") as tab:
        with gr.Row():
            run = gr.Dropdown(names, value=newest, label="run", scale=4, elem_id="wb-live-run")
            follow = gr.Checkbox(True, label="follow the newest run", scale=1)
        counters_ = gr.HTML(elem_id="wb-live-counters")
        notices = gr.HTML(elem_id="wb-live-notices", visible=False)
        with gr.Row():
            with gr.Column(scale=3):
                fig = gr.Plot(label="topology of the newest episode", elem_id="wb-live-graph")
                acc = gr.Plot(label="running accuracy", elem_id="wb-live-acc")
            with gr.Column(scale=2):
                transcript = gr.HTML(elem_id="wb-live-transcript")
        seen = gr.State(None)  # what the page shows now: redraw only what changed
        timer = gr.Timer(POLL_S)
    live = LiveTab(tab, run, follow, counters_, notices, fig, acc, transcript, seen, timer)
    timer.tick(h.live_tick, [run, follow, seen], live.outputs, show_progress="hidden")
    return live


@dataclass
class RunsTab:
    tab: Any
    table: Any
    run: Any
    outcome: Any
    search: Any
    refresh: Any
    notices: Any
    episodes: Any
    prev: Any
    position: Any
    next: Any
    fig: Any
    transcript: Any
    shown: Any
    current: Any

    @property
    def list_in(self) -> list[Any]:
        return [self.run, self.outcome, self.search]

    @property
    def list_out(self) -> list[Any]:
        return [
            self.notices,
            self.episodes,
            self.shown,
            self.current,
            self.position,
            self.fig,
            self.transcript,
        ]


def build_runs(h: Handlers, names: list[str], newest: str | None) -> RunsTab:
    with gr.Tab("Runs", id="runs") as tab:
        table = gr.Dataframe(
            h.viewer.runs_table(), headers=RUN_COLUMNS, interactive=False, label="runs (click one to open it)",
            elem_id="wb-runs-table", max_height=260, wrap=True,
        )  # fmt: skip
        with gr.Row():
            run = gr.Dropdown(names, value=newest, label="run", scale=3, elem_id="wb-open-run")
            outcome = gr.Radio(list(OUTCOMES), value="all", label="show", scale=2)
            search = gr.Textbox(
                label="search text", placeholder="in questions, answers and messages", scale=2
            )
            refresh = gr.Button("Refresh", scale=0)
        notices = gr.HTML(elem_id="wb-run-notices")
        episodes = gr.Dataframe(
            headers=EPISODE_COLUMNS, interactive=False, label="episodes (click one; j/k or ←/→ step)",
            elem_id="wb-episodes", max_height=300, wrap=True,
        )  # fmt: skip
        with gr.Row():
            prev = gr.Button("← previous", elem_id="wb-prev", scale=0)
            position = gr.Markdown(elem_id="wb-position")
            nxt = gr.Button("next →", elem_id="wb-next", scale=0)
        with gr.Row():
            with gr.Column(scale=3):
                fig = gr.Plot(label="topology", elem_id="wb-run-graph")
            with gr.Column(scale=2):
                transcript = gr.HTML(elem_id="wb-transcript")
        shown = gr.State([])  # positions of the listed episodes, in order
        current = gr.State(None)  # the position shown
    t = RunsTab(tab, table, run, outcome, search, refresh, notices, episodes, prev, position, nxt, fig,
                transcript, shown, current)  # fmt: skip
    show_out = [current, position, fig, transcript]
    run.change(h.list_episodes, t.list_in, t.list_out, api_name="episodes")
    for trigger in (outcome.change, search.submit, refresh.click):
        trigger(h.list_episodes, t.list_in, t.list_out)
    refresh.click(h.refresh_table, None, table)
    refresh.click(h.refresh_names, run, run)
    table.select(h.pick_run, None, run)
    episodes.select(h.pick_episode, [run, shown], show_out)
    prev.click(h.previous, [run, shown, current], show_out)
    nxt.click(h.next, [run, shown, current], show_out)
    return t


@dataclass
class CompareTab:
    tab: Any
    runs: Any
    outputs: list[Any]


def build_compare(h: Handlers, names: list[str]) -> CompareTab:
    with gr.Tab("Compare", id="compare") as tab:
        runs = gr.Dropdown(
            names, value=names[:2], multiselect=True, label="runs to compare (same task and items)",
            elem_id="wb-compare-runs",
        )  # fmt: skip
        notices = gr.HTML()
        summary = gr.Dataframe(interactive=False, label="accuracy and budget", elem_id="wb-compare-summary")
        grid = gr.Dataframe(
            interactive=False, label="per item: ✓ right, ✗ wrong, ∅ format failure (click a row)",
            elem_id="wb-compare-grid", max_height=320,
        )  # fmt: skip
        with gr.Row():
            figs = [gr.Plot(visible=i < 2, elem_id=f"wb-compare-graph-{i}") for i in range(MAX_COMPARE)]
    outputs = [notices, summary, grid, *figs]
    runs.change(h.compare, runs, outputs)
    grid.select(h.compare_pick, runs, figs)
    return CompareTab(tab, runs, outputs)


@dataclass
class AnalysisTab:
    tab: Any
    run: Any
    outputs: list[Any]


def build_analysis(h: Handlers, names: list[str], newest: str | None) -> AnalysisTab:
    with gr.Tab("Analysis", id="analysis") as tab:
        with gr.Row():
            run = gr.Dropdown(names, value=newest, label="run", scale=4, elem_id="wb-analysis-run")
            refresh = gr.Button("Refresh", scale=0)
        head = gr.Markdown(elem_id="wb-analysis-head")
        notices = gr.HTML(elem_id="wb-analysis-notices")
        figs = [gr.Plot(visible=False, elem_id=f"wb-analysis-fig-{i}") for i in range(MAX_ANALYSIS_FIGS)]
    outputs = [head, notices, *figs]
    run.change(h.show_analysis, run, outputs)
    refresh.click(h.show_analysis, run, outputs)
    tab.select(h.refresh_names, run, run)
    return AnalysisTab(tab, run, outputs)


@dataclass
class LaunchTab:
    tab: Any
    status: Any
    log: Any


def build_launch(h: Handlers) -> LaunchTab:
    with gr.Tab("Launch", id="launch") as tab:
        with gr.Row():
            task = gr.Dropdown(launch_tasks(), value="arithmetic", label="task")
            protocol = gr.Dropdown(list(PROTOCOLS), value="single", label="protocol")
            model = gr.Textbox("smollm2", label="model")
            limit = gr.Number(8, precision=0, minimum=1, label="limit (items)")
            split = gr.Dropdown(list(SPLITS), value="test", label="split")
            seed = gr.Number(0, precision=0, label="seed")
        extra = gr.Textbox(label="--set (optional)", placeholder="protocol.n=5 protocol.temperature=0.5")
        with gr.Row():
            start = gr.Button("Start evaluation", variant="primary", elem_id="wb-launch-start")
            cancel = gr.Button("Cancel", variant="stop", elem_id="wb-launch-cancel")
        status = gr.HTML(elem_id="wb-launch-status")
        log = gr.Textbox(label="output", lines=8, interactive=False, elem_classes="wb-small")
    start.click(h.start, [task, protocol, model, limit, split, seed, extra], [status, log])
    cancel.click(h.cancel, None, status)
    return LaunchTab(tab, status, log)


def _timer_switch(on: bool):
    return lambda: gr.Timer(active=on)


def build_app(root: str | Path, launcher: Launcher | None = None) -> gr.Blocks:
    """The Blocks app for one runs root (nothing outside it can be read through the app)."""
    viewer = Viewer(RunsRoot(root))
    h = Handlers(viewer, launcher or Launcher(viewer.root.root))
    names = viewer.run_names()
    newest = names[0] if names else None

    with gr.Blocks(title="workbench viewer") as app:
        gr.Markdown(f"## workbench viewer  \n<small>runs root: `{viewer.root.root}`</small>")
        url_notice = gr.HTML(elem_id="wb-url-notice", visible=False)  # a refused ?run= shows here
        with gr.Tabs():
            live = build_live(h, names, newest)
            runs = build_runs(h, names, newest)
            cmp = build_compare(h, names)
            analysis = build_analysis(h, names, newest)
            launch = build_launch(h)

        # polling runs only while Live or Launch is on screen
        for tab, on in (
            (live.tab, True),
            (launch.tab, True),
            (runs.tab, False),
            (cmp.tab, False),
            (analysis.tab, False),
        ):
            tab.select(_timer_switch(on), None, live.timer)
        live.timer.tick(h.launch_tick, None, [launch.status, launch.log], show_progress="hidden")

        # page load: fresh run lists, ?run=NAME, then every tab's first content
        load_out = [live.run, runs.run, cmp.runs, live.follow, url_notice, runs.table]
        app.load(h.from_url, None, load_out, api_name="open").then(
            h.live_tick, [live.run, live.follow, live.seen], live.outputs, show_progress="hidden"
        )
        live.run.input(lambda: False, None, live.follow).then(
            h.live_tick, [live.run, live.follow, gr.State(None)], live.outputs, show_progress="hidden"
        )
        app.load(h.list_episodes, runs.list_in, runs.list_out)
        app.load(h.compare, cmp.runs, cmp.outputs)
        app.load(h.show_analysis, analysis.run, analysis.outputs)
    app.viewer = viewer  # type: ignore[attr-defined]
    app.launcher = h.launcher  # type: ignore[attr-defined]
    app.handlers = h  # type: ignore[attr-defined]
    return app


def _as_pos(x: Any) -> int | None:
    """An episode position from a table cell or a client: an int, an integral float or a digit string."""
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    if isinstance(x, float) and x.is_integer() and abs(x) < 2**53:
        return int(x)
    if isinstance(x, str) and x.isascii() and x.isdigit() and len(x) < 19:
        return int(x)
    return None


def _position(positions: list[int], pos: int) -> str:
    i = positions.index(pos) + 1 if pos in positions else 0
    return f"episode **#{pos}** ({i} of {len(positions)} listed)"


TOKEN_ENV = "WORKBENCH_APP_TOKEN"  # the token the app asks for beyond loopback (default: a fresh secret)
TOKEN_USER = "workbench"
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or 0.0.0.0-like address: assume others can reach it


def access_token(host: str) -> str | None:
    """None on loopback; else $WORKBENCH_APP_TOKEN (at least 16 characters) or a fresh random secret."""
    if is_loopback(host):
        return None
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        return secrets.token_urlsafe(24)
    if len(token) < MIN_TOKEN_CHARS or not token.isprintable() or token != token.strip():
        raise ConfigError(
            f"${TOKEN_ENV} must be at least {MIN_TOKEN_CHARS} printable characters without spaces at the ends; "
            f"unset it to get a generated token"
        )
    return token


def serve(
    root: str | Path, host: str = "127.0.0.1", port: int = 7860, block: bool = True
) -> tuple[gr.Blocks, str]:
    """Start the app; returns (app, url). ``block=False`` returns at once (tests, `workbench demo`).

    Bound beyond loopback the app asks for a login: user ``workbench``, password the token
    (``access_token``), printed at start and kept as ``app.token``; on loopback it asks for nothing."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ConfigError(f"--port {port}: use a port number between 1 and 65535")
    token = access_token(host)
    app = build_app(root)
    app.token = token  # type: ignore[attr-defined]
    atexit.register(app.launcher.shutdown)  # type: ignore[attr-defined]
    auth = None if token is None else [(TOKEN_USER, token)]
    message = (
        None
        if token is None
        else "user <b>workbench</b>, password: the token printed where the app was started"
    )
    try:
        _, url, _ = app.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=True,
            quiet=True,
            share=False,
            css=CSS,
            head=KEYS_JS,
            footer_links=[],
            auth=auth,
            auth_message=message,
        )
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"cannot serve the viewer on {host}:{port} ({e}); choose another --host or --port"
        ) from None
    if block:
        print(f"workbench viewer: {url}  (runs root {app.viewer.root.root}; Ctrl-C stops it)", flush=True)  # type: ignore[attr-defined]
        if token is not None:
            print(f"workbench viewer: {host} is reachable from other machines, so the page asks for a login: "
                  f"user {TOKEN_USER}, token {token}  (set ${TOKEN_ENV} to choose it)", flush=True)  # fmt: skip
        try:
            app.block_thread()
        finally:
            app.launcher.shutdown()  # type: ignore[attr-defined]
    return app, url


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the workbench viewer (Gradio)")
    p.add_argument("--runs", default=None, help="runs root (default: runs/ in the checkout)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only; any other asks for a token)",
    )
    p.add_argument("--port", type=int, default=7860)
    args = p.parse_args(argv)
    serve(args.runs or default_root(), args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
