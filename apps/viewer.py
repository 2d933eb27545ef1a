"""The workbench viewer: a thin Gradio app over `workbench.viewer` (run with `workbench app`).

    workbench app [--runs DIR] [--host 127.0.0.1] [--port 7860]
    python apps/viewer.py --runs runs

Views: Live (the newest episode of a run as it is written), Runs (browse, filter, step through
episodes), Compare (runs on the same items), Analysis (the figures of `workbench analyze`),
Launch (start and cancel `workbench eval`). All logic lives in `workbench.viewer`; this file only
lays out widgets and wires their events. See docs/viewer.md.
"""

from __future__ import annotations

import argparse
import atexit
import ipaddress
import os
import secrets
import sys
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


def build_app(root: str | Path, launcher: Launcher | None = None) -> gr.Blocks:
    """The Blocks app for one runs root (nothing outside it can be read through the app)."""
    viewer = Viewer(RunsRoot(root))
    launcher = launcher or Launcher(viewer.root.root)
    names = viewer.run_names()
    newest = names[0] if names else None

    with gr.Blocks(title="workbench viewer") as app:
        gr.Markdown(f"## workbench viewer  \n<small>runs root: `{viewer.root.root}`</small>")
        url_notice = gr.HTML(elem_id="wb-url-notice", visible=False)  # a refused ?run= shows here
        with gr.Tabs():
            # ---------------- Live ----------------
            with gr.Tab("Live", id="live") as live_tab:
                with gr.Row():
                    live_run = gr.Dropdown(names, value=newest, label="run", scale=4, elem_id="wb-live-run")
                    follow = gr.Checkbox(True, label="follow the newest run", scale=1)
                live_counters = gr.HTML(elem_id="wb-live-counters")
                live_notices = gr.HTML(elem_id="wb-live-notices", visible=False)
                with gr.Row():
                    with gr.Column(scale=3):
                        live_fig = gr.Plot(label="topology of the newest episode", elem_id="wb-live-graph")
                        live_acc = gr.Plot(label="running accuracy", elem_id="wb-live-acc")
                    with gr.Column(scale=2):
                        live_transcript = gr.HTML(elem_id="wb-live-transcript")
                live_seen = gr.State(None)  # what the page shows now: redraw only what changed
                timer = gr.Timer(POLL_S)

            # ---------------- Runs ----------------
            with gr.Tab("Runs", id="runs") as runs_tab:
                runs_table = gr.Dataframe(
                    viewer.runs_table(), headers=RUN_COLUMNS, interactive=False, label="runs (click one to open it)",
                    elem_id="wb-runs-table", max_height=260, wrap=True,
                )  # fmt: skip
                with gr.Row():
                    open_run = gr.Dropdown(names, value=newest, label="run", scale=3, elem_id="wb-open-run")
                    outcome = gr.Radio(list(OUTCOMES), value="all", label="show", scale=2)
                    search = gr.Textbox(
                        label="search text", placeholder="in questions, answers and messages", scale=2
                    )
                    refresh = gr.Button("Refresh", scale=0)
                run_notices = gr.HTML(elem_id="wb-run-notices")
                episodes = gr.Dataframe(
                    headers=EPISODE_COLUMNS, interactive=False, label="episodes (click one; j/k or ←/→ step)",
                    elem_id="wb-episodes", max_height=300, wrap=True,
                )  # fmt: skip
                with gr.Row():
                    prev_btn = gr.Button("← previous", elem_id="wb-prev", scale=0)
                    position = gr.Markdown(elem_id="wb-position")
                    next_btn = gr.Button("next →", elem_id="wb-next", scale=0)
                with gr.Row():
                    with gr.Column(scale=3):
                        run_fig = gr.Plot(label="topology", elem_id="wb-run-graph")
                    with gr.Column(scale=2):
                        run_transcript = gr.HTML(elem_id="wb-transcript")
                shown = gr.State([])  # positions of the listed episodes, in order
                current = gr.State(None)  # the position shown

            # ---------------- Compare ----------------
            with gr.Tab("Compare", id="compare") as compare_tab:
                cmp_runs = gr.Dropdown(
                    names, value=names[:2], multiselect=True, label="runs to compare (same task and items)",
                    elem_id="wb-compare-runs",
                )  # fmt: skip
                cmp_notices = gr.HTML()
                cmp_summary = gr.Dataframe(
                    interactive=False, label="accuracy and budget", elem_id="wb-compare-summary"
                )
                cmp_grid = gr.Dataframe(
                    interactive=False, label="per item: ✓ right, ✗ wrong, ∅ format failure (click a row)",
                    elem_id="wb-compare-grid", max_height=320,
                )  # fmt: skip
                with gr.Row():
                    cmp_figs = [
                        gr.Plot(visible=i < 2, elem_id=f"wb-compare-graph-{i}") for i in range(MAX_COMPARE)
                    ]

            # ---------------- Analysis ----------------
            with gr.Tab("Analysis", id="analysis") as analysis_tab:
                with gr.Row():
                    an_run = gr.Dropdown(names, value=newest, label="run", scale=4, elem_id="wb-analysis-run")
                    an_refresh = gr.Button("Refresh", scale=0)
                an_head = gr.Markdown(elem_id="wb-analysis-head")
                an_notices = gr.HTML(elem_id="wb-analysis-notices")
                an_figs = [
                    gr.Plot(visible=False, elem_id=f"wb-analysis-fig-{i}") for i in range(MAX_ANALYSIS_FIGS)
                ]

            # ---------------- Launch ----------------
            with gr.Tab("Launch", id="launch") as launch_tab:
                with gr.Row():
                    l_task = gr.Dropdown(launch_tasks(), value="arithmetic", label="task")
                    l_protocol = gr.Dropdown(list(PROTOCOLS), value="single", label="protocol")
                    l_model = gr.Textbox("smollm2", label="model")
                    l_limit = gr.Number(8, precision=0, minimum=1, label="limit (items)")
                    l_split = gr.Dropdown(list(SPLITS), value="test", label="split")
                    l_seed = gr.Number(0, precision=0, label="seed")
                l_set = gr.Textbox(
                    label="--set (optional)", placeholder="protocol.n=5 protocol.temperature=0.5"
                )
                with gr.Row():
                    l_start = gr.Button("Start evaluation", variant="primary", elem_id="wb-launch-start")
                    l_cancel = gr.Button("Cancel", variant="stop", elem_id="wb-launch-cancel")
                l_status = gr.HTML(elem_id="wb-launch-status")
                l_log = gr.Textbox(label="output", lines=8, interactive=False, elem_classes="wb-small")

        # polling runs only while Live or Launch is on screen
        for tab, on in (
            (live_tab, True), (launch_tab, True), (runs_tab, False), (compare_tab, False), (analysis_tab, False),
        ):  # fmt: skip
            tab.select(lambda on=on: gr.Timer(active=on), None, timer)

        # ---------------- Live: poll ----------------
        def live_tick(run: str | None, follow_newest: bool, seen: Any):
            """Redraw only what changed since ``seen`` = (run list, (run, episodes, status, problems))."""
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
                return (
                    dd,
                    msg,
                    _shown(""),
                    empty_figure("no run"),
                    empty_figure("no run"),
                    "",
                    (choices, None),
                )
            try:
                snap = viewer.snapshot(run)
            except ConfigError as e:
                return (
                    dd,
                    "",
                    _shown(_error(e)),
                    empty_figure("refused"),
                    empty_figure(""),
                    "",
                    (choices, None),
                )
            key = (snap.name, snap.n, snap.info.status, len(snap.problems))
            if key == old_key:
                return dd, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), (choices, key)
            live = viewer.live(run)
            figs = (live["figure"], live["accuracy"], live["transcript"])
            return dd, live["counters"], _shown(live["notices"]), *figs, (choices, key)

        live_outputs = [live_run, live_counters, live_notices, live_fig, live_acc, live_transcript, live_seen]
        timer.tick(live_tick, [live_run, follow, live_seen], live_outputs, show_progress="hidden")

        def from_url(request: gr.Request):
            """Fresh run lists on every page load; ``?run=NAME`` opens that run in Live and Runs."""
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

        load_out = [live_run, open_run, cmp_runs, follow, url_notice, runs_table]
        app.load(from_url, None, load_out, api_name="open").then(
            live_tick, [live_run, follow, live_seen], live_outputs, show_progress="hidden"
        )
        live_run.input(lambda: False, None, follow).then(
            live_tick, [live_run, follow, gr.State(None)], live_outputs, show_progress="hidden"
        )

        # ---------------- Runs: browse ----------------
        def list_episodes(run: str | None, out: str, text: str):
            if not run:
                return (
                    notices_html(["No run selected."], "info"),
                    [],
                    [],
                    None,
                    "",
                    empty_figure("no run"),
                    "",
                )
            try:
                snap = viewer.snapshot(run)
                rows = viewer.episode_rows(run, out, text)
            except ConfigError as e:
                return _error(e), [], [], None, "", empty_figure("refused"), ""
            c = counters(snap.entries, snap.info.planned)
            acc = "–" if c["accuracy"] is None else f"{c['accuracy']:.3f}"
            head = f"{snap.name}: {snap.info.status}, {c['n']} episodes, accuracy {acc}; {len(rows)} listed"
            if len(rows) > TABLE_ROWS:
                head += f" (the table shows the first {TABLE_ROWS}; previous/next step through all)"
            notices = notices_html([head], "info") + notices_html(snap.problems)
            positions = [r[0] for r in rows]
            if not positions:
                return notices, rows, [], None, "no episode matches", empty_figure("no episode matches"), ""
            fig, transcript = viewer.episode_view(run, positions[0])
            first = _position(positions, positions[0])
            return notices, rows[:TABLE_ROWS], positions, positions[0], first, fig, transcript

        def show(run: str | None, positions: list[int], pos: int | None):
            if run is None or pos is None:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            pos = _as_pos(pos)
            if pos is None:  # a value sent by a client, not one the table listed
                return gr.skip(), "", empty_figure("refused"), _error(ConfigError("no such episode"))
            try:
                fig, transcript = viewer.episode_view(run, pos)
            except ConfigError as e:
                return pos, "", empty_figure("refused"), _error(e)
            return pos, _position(positions, pos), fig, transcript

        def step(run: str | None, positions: list[int], pos: int | None, delta: int):
            if not positions:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            i = positions.index(pos) if pos in positions else -1
            i = min(max(i + delta, 0), len(positions) - 1)
            return show(run, positions, positions[i])

        def pick_episode(run: str | None, positions: list[int], evt: gr.SelectData):
            row = evt.row_value or []
            return show(run, positions, row[0] if row else None)

        def pick_run(evt: gr.SelectData):
            row = evt.row_value or []
            return row[0] if row else gr.skip()

        list_out = [run_notices, episodes, shown, current, position, run_fig, run_transcript]
        list_in = [open_run, outcome, search]
        show_out = [current, position, run_fig, run_transcript]
        open_run.change(list_episodes, list_in, list_out, api_name="episodes")
        for trigger in (outcome.change, search.submit, refresh.click):
            trigger(list_episodes, list_in, list_out)
        refresh.click(lambda: gr.update(value=viewer.runs_table()), None, runs_table)
        refresh.click(lambda r: gr.update(choices=viewer.run_names(), value=r), open_run, open_run)
        runs_table.select(pick_run, None, open_run)
        episodes.select(pick_episode, [open_run, shown], show_out)
        prev_btn.click(lambda r, s, p: step(r, s, p, -1), [open_run, shown, current], show_out)
        next_btn.click(lambda r, s, p: step(r, s, p, +1), [open_run, shown, current], show_out)
        app.load(list_episodes, list_in, list_out)

        # ---------------- Compare ----------------
        def compare(selected: list[str] | None):
            selected = list(selected or [])
            hidden = [
                gr.update(visible=i < max(2, min(len(selected), MAX_COMPARE))) for i in range(MAX_COMPARE)
            ]
            if len(selected) < 2:
                return notices_html(["Pick two or more runs."], "info"), None, None, *hidden
            try:
                c = viewer.compare(selected)
            except ConfigError as e:
                return _error(e), None, None, *hidden
            summary = gr.update(value=c["summary"], headers=c["summary_header"])
            grid = gr.update(value=c["grid"], headers=c["grid_header"])
            if not c["grid"]:
                return c["notices"], summary, grid, *hidden
            # show the first item on which the runs differ (else the first item) side by side
            first = next((r for r in c["grid"] if r[-1] == "differ"), c["grid"][0])
            return c["notices"], summary, grid, *_item_figures(selected, str(first[0]))

        def _item_figures(selected: list[str], task_id: str) -> list[Any]:
            selected = selected[:MAX_COMPARE]
            try:
                figs = viewer.compare_item(selected, task_id)
            except ConfigError as e:
                figs = [empty_figure(str(e))] * len(selected)
            shown = [
                gr.update(value=f, visible=True, label=f"{task_id} in {name}")
                for f, name in zip(figs, selected, strict=True)
            ]
            return shown + [gr.update(visible=False)] * (MAX_COMPARE - len(figs))

        def compare_pick(selected: list[str] | None, evt: gr.SelectData):
            selected = list(selected or [])[:MAX_COMPARE]
            row = evt.row_value or []
            if not row or len(selected) < 2:
                return [gr.skip()] * MAX_COMPARE
            return _item_figures(selected, str(row[0]))

        cmp_runs.change(compare, cmp_runs, [cmp_notices, cmp_summary, cmp_grid, *cmp_figs])
        app.load(compare, cmp_runs, [cmp_notices, cmp_summary, cmp_grid, *cmp_figs])
        cmp_grid.select(compare_pick, cmp_runs, cmp_figs)

        # ---------------- Analysis ----------------
        def show_analysis(run: str | None):
            """The figures of the run's analysis.json (`workbench analyze RUN` writes it)."""
            hidden = [gr.update(visible=False)] * MAX_ANALYSIS_FIGS
            if not run:
                return "", notices_html(["No run selected."], "info"), *hidden
            try:
                out = viewer.analysis(run)
            except ConfigError as e:
                return "", _error(e), *hidden
            figs = list(out["figures"].items())[:MAX_ANALYSIS_FIGS]
            shown = [gr.update(value=f, visible=True, label=name) for name, f in figs]
            return out["headline"], out["notices"], *shown, *hidden[len(shown) :]

        an_out = [an_head, an_notices, *an_figs]
        an_run.change(show_analysis, an_run, an_out)
        an_refresh.click(show_analysis, an_run, an_out)
        analysis_tab.select(lambda r: gr.update(choices=viewer.run_names(), value=r), an_run, an_run)
        app.load(show_analysis, an_run, an_out)

        # ---------------- Launch ----------------
        def start(task, protocol, model, limit, split, seed, extra):
            job = launcher.latest
            if job is not None and job.returncode is None:
                return notices_html([f"{job.name} is still running; cancel it or wait."], "notice"), gr.skip()
            try:
                # the launcher checks every field (types included): the page's values go to it as sent
                job = launcher.start(
                    task, protocol, model, limit, split, 0 if seed is None else seed, extra or ""
                )
            except ConfigError as e:
                return _error(e), ""
            return launch_status(), ""

        def launch_status() -> str:
            job = launcher.latest
            if job is None:
                return notices_html(["No evaluation started from this page yet."], "info")
            done, planned = 0, None
            try:
                snap = viewer.snapshot(job.name)
                done, planned = snap.n, snap.info.planned
            except ConfigError:
                pass  # the run folder appears once the model is loaded
            bar = f'<progress max="{planned or 1}" value="{done}"></progress>' if planned else ""
            text = f"{job.name}: {job.state} · {done}" + (f"/{planned}" if planned else "") + " episodes"
            kind = "error" if job.state.startswith("failed") else "info"
            return notices_html([text], kind) + bar

        def launch_tick():
            job = launcher.latest
            return launch_status(), (job.log_tail() if job else "")

        l_start.click(
            start, [l_task, l_protocol, l_model, l_limit, l_split, l_seed, l_set], [l_status, l_log]
        )
        l_cancel.click(lambda: (launcher.cancel(), launch_status())[1], None, l_status)
        timer.tick(launch_tick, None, [l_status, l_log], show_progress="hidden")
    app.viewer = viewer  # type: ignore[attr-defined]
    app.launcher = launcher  # type: ignore[attr-defined]
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
