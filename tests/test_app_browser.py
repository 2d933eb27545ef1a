"""The viewer app (workbench/viewer/app.py) in a real browser: Debian's chromium driven by Playwright.

The app runs in-process on a free port over a temporary runs root holding fixture runs written by
the real protocols and RunWriter (scripted model replies, see test_viewer.py). Without
/usr/bin/chromium the tests skip, except under CI, where `make test` installs it and they must run.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from test_viewer import HOSTILE, hostile_reply, make_run  # tests/ is on sys.path under pytest

from workbench.runs import RunWriter

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip(f"{CHROMIUM} not installed (make test installs it)", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api")
pytest.importorskip("gradio")

TIMEOUT_MS = 20_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _age(path: Path, seconds: float) -> None:
    """Make a run look older (its files' mtimes) so that 'newest' and 'running' are deterministic."""
    t = time.time() - seconds
    for f in path.iterdir():
        os.utime(f, (t, t))


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("viewer") / "runs"
    root.mkdir()
    make_run(root, "demo/vote", limit=4)  # task, 3 samples, vote, answer: 6 nodes
    make_run(root, "hostile", protocol="single", limit=2, reply=hostile_reply)
    torn = make_run(root, "torn", limit=3)
    text = (torn / "episodes.jsonl").read_text()
    (torn / "episodes.jsonl").write_text(text[:-25])  # killed mid-line
    (torn / "summary.json").unlink()
    RunWriter(root / "empty", {"task": {"name": "arithmetic", "limit": 5}}).close()
    for i, name in enumerate(["empty", "torn", "hostile", "demo/vote"]):
        _age(root / name, 600 + 100 * i)  # demo/vote oldest ... empty newest; none "running"
    return root


@pytest.fixture(scope="module")
def app_url(runs_root):
    from workbench.viewer import load_app

    module = load_app()
    app = module.build_app(runs_root)
    _, url, _ = app.launch(
        server_name="127.0.0.1",
        server_port=_free_port(),
        prevent_thread_lock=True,
        quiet=True,
        css=module.CSS,
        head=module.KEYS_JS,
    )
    try:
        yield url
    finally:
        app.launcher.shutdown()
        app.close()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    try:
        yield pg
    finally:
        context.close()


def _open(page, url: str, run: str | None = None) -> None:
    page.goto(url + (f"?run={run}" if run else ""))
    page.wait_for_selector("#wb-live-counters .wb-cards")


def _cell(page, table_id: str, row: int, col: int):
    """A body cell of a Gradio Dataframe (rows are virtualised divs, not a <tbody>)."""
    return page.locator(f"#{table_id} [data-testid='cell-{row}-{col}']")


def _node_count(page, plot_id: str) -> int:
    """Markers of the figure's node traces, read from the Plotly div the browser drew."""
    return page.evaluate(
        """(id) => { const gd = document.querySelector('#' + id + ' .js-plotly-plot');
                     if (!gd || !gd.data) return -1;
                     return gd.data.filter(t => t.meta === 'node').reduce((n, t) => n + t.x.length, 0); }""",
        plot_id,
    )


def test_live_draws_the_runs_graph_with_every_agent(page, app_url):
    _open(page, app_url, "demo/vote")
    page.wait_for_function("document.querySelectorAll('#wb-live-graph .scatterlayer .textpoint').length == 6")
    assert _node_count(page, "wb-live-graph") == 6  # task, sample-0..2, vote, answer
    assert page.locator("#wb-live-graph .textpoint").filter(has_text="sample-1").count() == 1
    counters = page.locator("#wb-live-counters").inner_text()
    assert "4 / 4" in counters and "1.000" in counters
    assert page.locator("#wb-live-transcript section.wb-agent").count() == 4  # 3 samplers + the vote


def test_clicking_an_episode_shows_its_transcript(page, app_url, runs_root):
    _open(page, app_url, "demo/vote")
    page.get_by_role("tab", name="Runs").click()
    _cell(page, "wb-episodes", 3, 0).wait_for()
    question = _cell(page, "wb-episodes", 2, 2).inner_text().strip()
    assert question.startswith("What is")
    _cell(page, "wb-episodes", 2, 2).click()
    page.wait_for_function(
        "(q) => document.querySelector('#wb-transcript .wb-q')?.innerText.includes(q)", arg=question
    )
    assert "#2" in page.locator("#wb-position").inner_text()
    page.locator("#wb-next").click()
    page.wait_for_function("document.querySelector('#wb-position')?.innerText.includes('#3')")


def test_a_run_being_written_appears_in_live_without_reloading(page, app_url, runs_root):
    source = (runs_root / "demo/vote/episodes.jsonl").read_text().splitlines(keepends=True)
    _open(page, app_url)
    writer = RunWriter(runs_root / "growing", {"task": {"name": "arithmetic", "limit": 3}})
    out = writer.dir / "episodes.jsonl"

    def append(k: int) -> None:
        with open(out, "a", encoding="utf-8") as f:
            f.write(source[k])

    try:
        # "follow the newest run" is on: the new run is picked up, then each appended episode
        page.wait_for_function(
            "document.querySelector('#wb-live-counters')?.innerText.includes('0 / 3')", timeout=TIMEOUT_MS
        )
        for k in range(3):
            threading.Thread(target=append, args=(k,)).start()
            page.wait_for_function(
                "(n) => document.querySelector('#wb-live-counters')?.innerText.includes(n + ' / 3')",
                arg=k + 1,
            )
        assert _node_count(page, "wb-live-graph") == 6
    finally:
        writer.close()
        shutil.rmtree(writer.dir)


def test_model_html_in_a_transcript_is_shown_as_text(page, app_url):
    _open(page, app_url, "hostile")
    page.wait_for_selector("#wb-live-transcript section.wb-agent")
    text = page.locator("#wb-live-transcript").inner_text()
    assert "<script>alert(1)</script>" in text and "<img src=x onerror=alert(1)>" in text
    page.get_by_role("tab", name="Runs").click()
    page.wait_for_selector("#wb-transcript section.wb-agent")
    _cell(page, "wb-episodes", 1, 2).click()
    page.wait_for_function("document.querySelector('#wb-position')?.innerText.includes('#1')")
    page.wait_for_timeout(500)
    assert page.locator("img[src='x']").count() == 0
    assert page.dialogs == []
    assert HOSTILE.split()[0] in page.locator("#wb-transcript").inner_text()


def test_a_path_traversal_attempt_is_refused(page, app_url):
    _open(page, app_url, "../../etc")
    page.wait_for_selector("#wb-url-notice .wb-error")
    assert "refused" in page.locator("#wb-url-notice").inner_text()
    assert page.locator("#wb-live-run input").input_value() != "../../etc"
    # the same name sent straight to the app's HTTP API (no page, no dropdown in the way) is refused:
    # Gradio checks it against the listed runs, and behind that RunsRoot.resolve (test_viewer.py)
    import httpx

    call = httpx.post(
        app_url + "gradio_api/call/episodes", json={"data": ["../../etc", "all", ""]}, timeout=20
    )
    answer = httpx.get(app_url + f"gradio_api/call/episodes/{call.json()['event_id']}", timeout=20).text
    assert "event: error" in answer and "root:" not in answer and "passwd" not in answer


def test_a_half_written_run_shows_what_is_valid_and_says_what_is_not(page, app_url):
    _open(page, app_url, "torn")
    page.get_by_role("tab", name="Runs").click()
    page.wait_for_function("document.querySelector('#wb-run-notices')?.innerText.includes('unterminated')")
    notices = page.locator("#wb-run-notices").inner_text()
    assert "summary.json is missing" in notices and "2 episodes" in notices
    assert page.locator("#wb-episodes .virtual-row").count() == 2
    _open(page, app_url, "empty")
    page.wait_for_function("document.querySelector('#wb-live-notices')?.innerText.includes('empty')")
    assert "0 / 5" in page.locator("#wb-live-counters").inner_text()
