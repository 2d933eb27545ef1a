"""The project's plumbing stays consistent: environment.yml vs pyproject, README commands, CI."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    minimum = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert python.split("=")[1].startswith(minimum)
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    local = next(p for p in pip if p.startswith("-e ."))
    extras = re.search(r"\[(.*)\]", local).group(1).split(",")
    assert set(extras) == {"notebook", "app", "analysis"} and set(extras) <= set(
        PYPROJECT["project"]["optional-dependencies"]
    )
    torch_pin = next(p for p in pip if p.startswith("torch"))
    makefile_pin = re.search(r"^TORCH\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert torch_pin == makefile_pin == "torch==2.13.0"


def test_pyproject_declares_the_cli_and_extras():
    project = PYPROJECT["project"]
    assert project["scripts"]["workbench"] == "workbench.cli:main"
    extras = project["optional-dependencies"]
    assert {"unsloth", "vllm"} <= {re.split(r"[<>=\[ ]", d)[0] for d in extras["gpu"]}
    assert {"pytest>=8", "nbmake>=1.5"} <= set(extras["dev"])
    assert not any(d.startswith(("unsloth", "vllm")) for d in project["dependencies"])


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands[:2] == ["make demo", "make test"]
    assert text.index("make demo") < text.index("##")  # before any section


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", script, re.M)


def test_top_level_layout():
    for name in ("notebooks", "workbench", "apps", "tests", "environment.yml", "README.md", "Makefile"):
        assert (ROOT / name).exists(), name


def test_import_is_light_and_gpu_free():
    code = "import sys, workbench, workbench.cli; print(any(m in sys.modules for m in ('torch', 'unsloth', 'vllm')))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "False"


def test_cli_help():
    out = subprocess.run([sys.executable, "-m", "workbench", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "eval" in out.stdout and "demo" in out.stdout
