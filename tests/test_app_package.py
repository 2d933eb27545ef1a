"""The viewer app lives in the package: `workbench app` works from a wheel, not only from a checkout.

Builds a wheel of this checkout, installs it (--no-deps) into a throwaway venv under the test's tmp
folder that borrows this environment's dependencies (torch, gradio, ...) through a .pth line, and
imports and builds the app from there, outside any checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_does_not_import_gradio_until_the_app_is_asked_for():
    code = "import sys, workbench.viewer, workbench.widgets; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_apps_viewer_is_a_thin_entry_point():
    text = (ROOT / "apps" / "viewer.py").read_text()
    assert len(text.splitlines()) < 20 and "workbench.viewer" in text and "import gradio" not in text


@pytest.mark.slow
def test_the_app_imports_and_builds_from_a_non_editable_install(tmp_path):
    pytest.importorskip("gradio")
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in files.splitlines():
        if (ROOT / name).is_file() and not name.startswith(("notebooks/", "docs/images/")):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            wheels,
            src,
        ],
        check=True,
        timeout=300,
    )
    wheel = next(wheels.glob("workbench-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    # the dependencies of this environment, without its (editable) workbench
    Path(site, "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", py, "install", "--quiet", "--no-deps", wheel],
        check=True,
        timeout=300,
    )
    runs = tmp_path / "runs"
    runs.mkdir()
    code = (
        "import workbench, workbench.viewer as v\n"
        "m = v.load_app()\n"
        f"app = m.build_app({str(runs)!r})\n"
        "print(workbench.__file__)\nprint(m.__file__)\nprint(type(app).__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([py, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    pkg, app_file, kind = out.stdout.split()
    assert pkg.startswith(site) and app_file.startswith(site) and kind == "Blocks"
    assert str(ROOT) not in pkg
    # the console script of the wheel: a one-line error for a missing runs folder, no traceback
    cli = subprocess.run(
        [venv / "bin" / "workbench", "app", "--runs", str(tmp_path / "nope")], capture_output=True, text=True,
        cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 2 and "no such folder" in cli.stderr and "Traceback" not in cli.stderr
