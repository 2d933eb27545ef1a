"""Per-program cost of the code sandbox: before (the in-process audit-hook sandbox of commit
0ce17c5) and after (kernel namespaces: bubblewrap, and unshare with bubblewrap forced off).

    python benchmarks/bench_sandbox.py [--runs 40] [--out benchmarks/results/sandbox.json]

For each: the median (and p90) wall time of N runs, one at a time, of
  1. a trivial program (`print(1)`), through `run_program`;
  2. a HumanEval canonical solution (HumanEval/0 with its tests): before, OpenAI's single check
     program in one sandbox; after, `run_check` (the program sandbox and the tester sandbox);
plus the bare interpreter (`python -I -S -c pass`) for reference. Not a test: nothing here
asserts a time; the numbers go to a JSON file that docs/code_tasks.md quotes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from workbench.tasks import sandbox as new
from workbench.tasks.code import humaneval_program, humaneval_solution, humaneval_tester
from workbench.tasks.humaneval import problems, task_from_problem

BEFORE_COMMIT = "0ce17c5"  # the audit-hook sandbox, as it was before kernel isolation


def load_before(repo: Path):
    """Today's code before the change, loaded from git (stdlib only, like the new module)."""
    src = subprocess.run(
        ["git", "-C", str(repo), "show", f"{BEFORE_COMMIT}:workbench/tasks/sandbox.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "sandbox_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("sandbox_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sandbox_before"] = module
    spec.loader.exec_module(module)
    return module


def timed(fn, runs: int) -> dict:
    fn()  # warm: probes, caches
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        ok = fn()
        times.append(time.perf_counter() - t0)
        assert ok, "the benchmark's program must pass"
    times.sort()
    return {
        "median_ms": round(1000 * statistics.median(times), 1),
        "p90_ms": round(1000 * times[int(0.9 * (len(times) - 1))], 1),
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--out", default="benchmarks/results/sandbox.json")
    args = ap.parse_args()
    repo = Path(__file__).resolve().parents[1]
    before = load_before(repo)
    problem = problems()[0]
    meta = task_from_problem(problem, "test").meta
    canonical = problem["canonical_solution"]
    limits = new.SandboxLimits(timeout_s=10)
    py = os.path.realpath(sys.executable)

    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
        "uid": os.geteuid(),
        "before_commit": BEFORE_COMMIT,
        "bare_interpreter": timed(
            lambda: subprocess.run([py, "-I", "-S", "-c", "pass"]).returncode == 0, args.runs
        ),
        "before": {
            "trivial": timed(lambda: before.run_program("print(1)").passed, args.runs),
            "humaneval_canonical": timed(
                lambda: before.run_program(humaneval_program(canonical, meta)).passed, args.runs
            ),
        },
    }
    for mode in ("bwrap", "unshare"):
        why = new._probe(mode)
        if why is not None:
            results[mode] = {"unavailable": why}
            continue
        results[mode] = {
            "trivial": timed(lambda m=mode: new.run_program("print(1)", mode=m).passed, args.runs),
            "humaneval_canonical": timed(
                lambda m=mode: (
                    new.run_check(
                        humaneval_solution(canonical, meta),
                        meta["entry_point"],
                        humaneval_tester(meta),
                        limits=limits,
                        mode=m,
                    ).passed
                ),
                args.runs,
            ),
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
