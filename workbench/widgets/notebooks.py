"""Ship the notebooks with their outputs: execute them (``make notebooks``) and check what is committed.

    python -m workbench.widgets.notebooks run [NOTEBOOK ...]    # full run, outputs written in place
    python -m workbench.widgets.notebooks check [NOTEBOOK ...]  # exit 1 if an output is stale or missing

``run`` executes a notebook top to bottom in a fresh kernel (cwd notebooks/, WORKBENCH_SMOKE unset,
runs under ../runs) and records in its metadata the sha256 of its code cells, the time it took and
the date. ``check`` (and tests/test_notebooks_shipped.py) fails when a notebook's code cells no
longer hash to what was executed, a code cell has no execution count, or the file is over
MAX_BYTES. CI executes the notebooks in smoke mode with nbmake, which does not write them back.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
MAX_BYTES = 3 * 1024 * 1024  # the cap per committed notebook, outputs included
KEY = "workbench"
CELL_TIMEOUT_S = 1800


def code_hash(nb: Any) -> str:
    """sha256 of the code cells' sources (trailing whitespace ignored), in order."""
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            src = cell.source if isinstance(cell.source, str) else "".join(cell.source)
            h.update(src.rstrip().encode() + b"\n\x00")
    return h.hexdigest()


def problems(path: str | Path) -> list[str]:
    """Why the committed ``path`` is not a full run of its current code (empty when it is)."""
    import nbformat

    path = Path(path)
    size = path.stat().st_size
    out = [f"{path.name}: {size} bytes, over the cap of {MAX_BYTES}"] if size > MAX_BYTES else []
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get(KEY) or {}
    if meta.get("code_sha256") != code_hash(nb):
        out.append(f"{path.name}: its outputs come from other code cells (or none): run make notebooks")
    elif meta.get("smoke") is not False:
        out.append(f"{path.name}: executed in smoke mode; ship a full run (make notebooks)")
    unrun = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("execution_count") is None]
    if unrun:
        out.append(f"{path.name}: code cell(s) {unrun} have no outputs: run make notebooks")
    errors = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and any(o.get("output_type") == "error" for o in c.get("outputs", []))
    ]
    if errors:
        out.append(f"{path.name}: code cell(s) {errors} ended in an error")
    return out


def run(path: str | Path, smoke: bool = False) -> float:
    """Execute ``path`` in place; returns the seconds it took."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if not smoke:  # the fixed run folders of a full run (runs/notebooks/<name>/) are replaced
        shutil.rmtree(ROOT / "runs" / "notebooks" / path.stem, ignore_errors=True)
    env_smoke = os.environ.pop("WORKBENCH_SMOKE", None)
    os.environ["WORKBENCH_RUNS_DIR"] = (
        "../runs"  # the checkout's runs/ (cwd notebooks/); printed paths stay inside it
    )
    if smoke:
        os.environ["WORKBENCH_SMOKE"] = "1"
    t0 = time.perf_counter()
    try:
        client = NotebookClient(
            nb,
            timeout=CELL_TIMEOUT_S,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        )
        client.execute()
    finally:
        os.environ.pop("WORKBENCH_SMOKE", None)
        if env_smoke is not None:
            os.environ["WORKBENCH_SMOKE"] = env_smoke
    seconds = time.perf_counter() - t0
    nb.metadata[KEY] = {
        "code_sha256": code_hash(nb),
        "smoke": smoke,
        "seconds": round(seconds, 1),
        "executed": time.strftime("%Y-%m-%d", time.gmtime()),
        "cpu_cores": os.cpu_count(),
    }
    nbformat.write(nb, path)
    return seconds


def _paths(args: list[str]) -> list[Path]:
    return [Path(a) for a in args] if args else sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "check"):
        print("usage: python -m workbench.widgets.notebooks run|check [NOTEBOOK ...]", file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "check":
        found = [p for path in _paths(rest) for p in problems(path)]
        print("\n".join(found) or "every notebook holds the outputs of a full run of its code")
        return 1 if found else 0
    for path in _paths(rest):
        print(f"{path.name}: running …", flush=True)
        seconds = run(path)
        print(f"{path.name}: {seconds:.0f} s, {path.stat().st_size / 1024:.0f} KiB", flush=True)
        for p in problems(path):
            print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
