"""The widgets in a real JupyterLab: Debian's chromium (Playwright) opens a notebook, runs it, and
the episode explorer renders and responds to clicks. Also writes docs/images/notebook-explorer.png
when WORKBENCH_SCREENSHOT=1 (the README's picture of it).

Without /usr/bin/chromium the test skips, except under CI, where `make test` installs it."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nbformat
import pytest
from test_viewer import make_run  # tests/ is on sys.path under pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip(f"{CHROMIUM} not installed (make test installs it)", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api")
pytest.importorskip("jupyterlab")
pytest.importorskip("ipywidgets")

TIMEOUT_MS = 90_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def explorer_notebook(folder: Path, runs: Path, run: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            f"from workbench.widgets import EpisodeExplorer\nEpisodeExplorer({str(runs)!r}, run={run!r})"
        )
    ]
    path = folder / "explorer.ipynb"
    nbformat.write(nb, path)
    return path


class Lab:
    """A JupyterLab server on 127.0.0.1 and a free port, for one folder, stopped at the end."""

    def __init__(self, folder: Path):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        state = folder / ".jupyter-state"
        env = os.environ | {
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "JUPYTER_CONFIG_DIR": str(state / "config"),
            "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
            "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
            "IPYTHONDIR": str(state / "ipython"),
        }
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={folder}",
               "--ServerApp.open_browser=False", "--allow-root", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]  # fmt: skip
        self.log = open(folder / "lab.log", "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=folder)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/api/status?token={self.token}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        self.close()
        raise RuntimeError(f"JupyterLab did not start: {(folder / 'lab.log').read_text()[-2000:]}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, notebook: str) -> str:
        return f"{self.base}/lab/tree/{notebook}?token={self.token}"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def run_explorer_in_lab(folder: Path, runs: Path, run: str, screenshot: Path | None = None) -> dict:
    """Open the explorer notebook, run its cell, check it renders, click next; returns what it saw."""
    path = explorer_notebook(folder, runs, run)
    lab = Lab(folder)
    seen: dict = {}
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
            )  # fmt: skip
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1000})
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(lab.url(path.name))
                page.wait_for_selector(".jp-Notebook .jp-Cell")
                page.wait_for_selector(
                    ".jp-Notebook-ExecutionIndicator[data-status='idle']", state="attached"
                )
                explorer = page.locator(".wb-explorer")
                for _ in range(6):  # the kernel may still be connecting: run the cell until it shows
                    page.locator(".jp-Cell .jp-InputArea-editor").first.click()
                    page.keyboard.press("Shift+Enter")
                    try:
                        explorer.wait_for(timeout=20_000)
                        break
                    except playwright.Error:
                        page.keyboard.press("Escape")
                explorer.wait_for()
                page.wait_for_function(
                    "document.querySelector('.wb-explorer')?.innerText.includes('episode #0')"
                )
                seen["first"] = explorer.inner_text()
                seen["plot"] = page.locator(".wb-explorer .js-plotly-plot").count()
                seen["agents"] = page.locator(".wb-explorer section.wb-agent").count()
                page.get_by_role("button", name="next →").click()
                page.wait_for_function(
                    "document.querySelector('.wb-explorer')?.innerText.includes('episode #1')"
                )
                page.get_by_role("button", name="wrong").click()
                page.wait_for_timeout(1000)
                seen["after"] = explorer.inner_text()
                if screenshot is not None:
                    page.get_by_role("button", name="all", exact=True).click()
                    page.wait_for_function(
                        "document.querySelector('.wb-explorer')?.innerText.includes('episode #0')"
                    )
                    page.wait_for_timeout(1500)
                    page.screenshot(path=str(screenshot), full_page=False)
            finally:
                browser.close()
    finally:
        lab.close()
    return seen


def mixed(req, j: int) -> str:
    from test_widgets import mixed_reply

    return mixed_reply(req, j)


def test_the_explorer_renders_and_responds_in_jupyterlab(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "vote", limit=4)
    make_run(runs, "mixed", protocol="single", limit=6, reply=mixed)
    seen = run_explorer_in_lab(tmp_path, runs, "vote")
    assert "vote" in seen["first"] and "(1 of 4 all)" in seen["first"]
    assert seen["plot"] >= 1 and seen["agents"] == 4  # the topology drawn; 3 samplers and the vote
    assert "no episode is wrong" in seen["after"]  # the vote run's majority is always right


@pytest.mark.skipif(
    os.environ.get("WORKBENCH_SCREENSHOT") != "1", reason="WORKBENCH_SCREENSHOT=1 writes the docs image"
)
def test_screenshot_of_the_explorer_on_a_real_run(tmp_path):
    runs = ROOT / "runs" / "notebooks" / "02_protocols"
    run = next((p.relative_to(runs).as_posix() for p in sorted(runs.glob("debate*")) if p.is_dir()), None)
    if run is None:
        pytest.skip("run `make notebooks` first (it writes runs/notebooks/02_protocols)")
    shot = ROOT / "docs" / "images" / "notebook-explorer.png"
    run_explorer_in_lab(tmp_path, runs, run, screenshot=shot)
    assert shot.stat().st_size > 10_000
