"""The notebooks as shipped: numbered without gaps, thin, executed in full with their current code
(`make notebooks` records a hash of the code cells), under the size cap, and never rewritten by CI."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import nbformat
import pytest

from workbench.widgets.notebooks import MAX_BYTES, code_hash, problems

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
GPU_NOTEBOOK = 4  # 04_train_gpu.ipynb comes from the GPU work; the series may lack it until then


def _number(path: Path) -> int:
    match = re.fullmatch(r"(\d\d)_[a-z0-9_]+\.ipynb", path.name)
    assert match, f"{path.name}: name notebooks NN_topic.ipynb"
    return int(match.group(1))


def test_numbered_without_gaps():
    numbers = [_number(p) for p in NOTEBOOKS]
    assert len(set(numbers)) == len(numbers) and numbers[0] == 0
    assert set(range(max(numbers) + 1)) - set(numbers) <= {GPU_NOTEBOOK}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_shipped_with_the_outputs_of_a_full_run_of_its_code(path):
    if _number(path) == GPU_NOTEBOOK:
        pytest.skip("04_train_gpu is executed on a GPU machine, not by make notebooks")
    assert problems(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_thin_with_a_parameters_cell_and_a_smoke_switch(path):
    nb = nbformat.read(path, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert "WORKBENCH_SMOKE" in code[0], "the first code cell holds the parameters and the smoke switch"
    for src in code:
        assert not re.search(r"^\s*(def|class) ", src, re.M), (
            "no def/class in a notebook: move it to the library"
        )
        assert len(src.splitlines()) <= 20, "a code cell of at most ~15-20 lines: move logic to the library"
        assert "../shared" not in src and "/work/" not in src


def test_a_notebook_that_reads_anothers_runs_says_which():
    for name, other in (("05_evaluate", "03"), ("06_diversity", "02"), ("07_credit_assignment", "02")):
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        assert f"notebook **{other}" in nb.cells[0].source or f"notebook {other}" in nb.cells[0].source, name


def test_the_hash_follows_the_code_cells_only():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# x"), nbformat.v4.new_code_cell("print(1)")]
    before = code_hash(nb)
    nb.cells[0].source = "# y"
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    assert code_hash(nb) == before
    nb.cells[1].source = "print(2)"
    assert code_hash(nb) != before


def test_a_stale_or_smoke_or_oversized_notebook_is_reported(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", execution_count=1)]
    nb.metadata["workbench"] = {"code_sha256": code_hash(nb), "smoke": False}
    path = tmp_path / "00_x.ipynb"
    nbformat.write(nb, path)
    assert problems(path) == []
    nb.cells[0].source = "x = 2"
    nbformat.write(nb, path)
    assert "other code cells" in problems(path)[0]
    nb.metadata["workbench"] = {"code_sha256": code_hash(nb), "smoke": True}
    nbformat.write(nb, path)
    assert "smoke" in problems(path)[0]
    nb.metadata["workbench"]["smoke"] = False
    nb.cells.append(nbformat.v4.new_code_cell("y = 'x' * 10"))  # never executed
    nb.metadata["workbench"]["code_sha256"] = code_hash(nb)
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="x" * (MAX_BYTES + 10))]
    nbformat.write(nb, path)
    found = " ".join(problems(path))
    assert "over the cap" in found and "no outputs" in found


def test_ci_executes_the_notebooks_without_writing_them_back():
    opts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "notebooks" in opts["testpaths"] and "--nbmake" in opts["addopts"]
    assert "--overwrite" not in opts["addopts"]  # nbmake writes a notebook back only with --overwrite
    makefile = (ROOT / "Makefile").read_text()
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "WORKBENCH_SMOKE=1" in test_recipe and "--overwrite" not in test_recipe
    assert re.search(r"^notebooks: ", makefile, re.M) and "workbench.widgets.notebooks run" in makefile
