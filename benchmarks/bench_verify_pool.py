"""Verification off the event loop: what the verifier pool saves, and what a hop to it costs.

    python benchmarks/bench_verify_pool.py [--items 16] [--decode-s 0.2] [--workers 0 4]
                                           [--out benchmarks/results/verify_pool.json]

1. *Per check*: the median time of one check of each cheap verifier kind (numeric, choice, exact)
   and of math (math-verify's helper process), run inline, and of one round trip of a cheap check
   through the pool (`loop.run_in_executor`): why numeric/choice/exact stay on the loop.
2. *End to end*: the leader protocol (2 peers, 2 rounds: verdicts during the run and at the end) on
   the first ``--items`` HumanEval test problems, all episodes in flight, with a scripted backend
   that sleeps ``--decode-s`` per generate() call (a GPU decode step: the GIL is free meanwhile).
   The replies are fixed per request (by its sampling seed, else its text): the canonical solution,
   a wrong one, one that raises, one that hangs (sleeps past HumanEval's 4 s sandbox limit). Run
   once per ``--workers`` value (0: every check on the event loop, as before the pool), the
   sandbox's result cache cleared before each. Reported: wall time, backend calls, mean batch, the
   event loop thread's CPU time, and whether the episodes (verdicts, events, meta) are identical.

Not a test: nothing here asserts a time; the numbers go to a JSON file that docs/tasks.md quotes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import hashlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

from workbench.evaluate import ProtocolConfig, run_episodes
from workbench.models.scripted import ScriptedBackend
from workbench.tasks import Task
from workbench.tasks.code import _cached_check
from workbench.tasks.humaneval import load as load_humaneval
from workbench.tasks.sandbox import sandbox_mode
from workbench.tasks.verify import safe_check, safe_check_all, start_episode_budget, verifier_pool

FENCE = "```"


def per_check(runs: int) -> dict:
    cases = {
        "numeric": (Task("n", "q", "42", "numeric"), lambda i: "42"),
        "choice": (Task("c", "q", "B", "choice", {"options": ["a", "b", "c"]}), lambda i: "B"),
        "exact": (
            Task("e", "q", "True", "exact", {"format": "labels", "labels": ["True", "False"]}),
            lambda i: "true",
        ),
        # distinct answers (math_equal caches per answer): each one is a real helper round trip
        "math": (Task("m", "q", "\\frac{1}{2}", "math"), lambda i: f"\\frac{{{i + 1}}}{{{2 * i + 2}}}"),
    }
    out = {}
    for kind, (task, answer) in cases.items():
        safe_check(task, answer(-7))  # warm: the math helper starts
        times = []
        for i in range(runs):
            t0 = time.perf_counter()
            safe_check(task, answer(i))
            times.append(time.perf_counter() - t0)
        out[f"{kind}_inline_us"] = round(statistics.median(times) * 1e6, 1)

    async def hop() -> float:
        start_episode_budget()
        pool, loop = verifier_pool(), asyncio.get_running_loop()
        task = cases["numeric"][0]
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            await loop.run_in_executor(pool, contextvars.copy_context().run, safe_check_all, task, ["42"])
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    out["numeric_via_pool_us"] = round(asyncio.run(hop()) * 1e6, 1)
    return out


class Decoder(ScriptedBackend):
    """A scripted backend that takes ``decode_s`` per generate() call, as a decode step would."""

    def __init__(self, reply, decode_s: float):
        super().__init__(reply)
        self.decode_s = decode_s

    def generate(self, requests):
        time.sleep(self.decode_s)
        return super().generate(requests)


def code_reply(tasks: list[Task]):
    def variants(task: Task) -> list[str]:
        sig = task.meta["prompt"]
        return [
            f"{FENCE}python\n{task.answer}\n{FENCE}",
            f"{FENCE}python\n{sig}    return None\n{FENCE}",
            f"{FENCE}python\n{sig}    raise RuntimeError('no')\n{FENCE}",
            f"{FENCE}python\n{sig}    import time\n    time.sleep(60)\n{FENCE}",
        ]

    table = {t.prompt: variants(t) for t in tasks}

    def reply(req, j) -> str:
        text = "\n".join(m["content"] for m in req.messages)
        options = next(v for q, v in table.items() if q in text)
        key = req.sampling.seed if req.sampling.seed is not None else text
        h = int(hashlib.blake2b(f"{key}|{j}".encode(), digest_size=4).hexdigest(), 16)
        return options[h % len(options)]

    return reply


def comparable(ep) -> dict:
    d = ep.to_dict()
    d["events"] = [{k: v for k, v in e.items() if k not in ("ts", "latency_s")} for e in d["events"]]
    d["usage"] = {k: v for k, v in d["usage"].items() if k != "wall_s"}
    return d


def end_to_end(items: int, decode_s: float, workers: list[int]) -> dict:
    tasks = load_humaneval("test", items)
    protocol = ProtocolConfig("leader", {"peers": 2, "rounds": 2})
    runs, reference = [], None
    for w in workers:
        os.environ["WORKBENCH_VERIFY_WORKERS"] = str(w)
        _cached_check.cache_clear()
        backend = Decoder(code_reply(tasks), decode_s)
        cpu0, t0 = time.thread_time(), time.perf_counter()
        eps, errors, stats = run_episodes(tasks, protocol, backend, max_in_flight=len(tasks))
        wall, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
        eps = sorted(eps, key=lambda e: e.index)
        digest = [comparable(e) for e in eps]
        reference = digest if reference is None else reference
        checks = sum(1 for e in eps for m in e.messages if m.correct is not None)
        runs.append(
            {
                "workers": w,
                "wall_s": round(wall, 2),
                "loop_thread_cpu_s": round(cpu, 2),
                "backend_calls": stats["backend_calls"],
                "mean_batch_size": stats["mean_batch_size"],
                "accuracy": round(sum(e.correct for e in eps) / len(eps), 3),
                "answers_judged": checks,
                "episode_errors": len(errors),
                "identical_to_first_run": digest == reference,
            }
        )
        print(runs[-1], flush=True)
    return {
        "protocol": "leader peers=2 rounds=2",
        "items": len(tasks),
        "decode_s_per_call": decode_s,
        "replies": "per request: canonical / returns None / raises / sleeps 60 s (sandbox limit 4 s)",
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--decode-s", type=float, default=0.2)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 4])
    ap.add_argument("--check-runs", type=int, default=200)
    ap.add_argument("--out", default="benchmarks/results/verify_pool.json")
    args = ap.parse_args()
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "sandbox": sandbox_mode()},
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "per_check": per_check(args.check_runs),
        "end_to_end": end_to_end(args.items, args.decode_s, args.workers),
        "command": "python benchmarks/bench_verify_pool.py "
        + f"--items {args.items} --decode-s {args.decode_s} --workers {' '.join(map(str, args.workers))}",
    }
    print(json.dumps(result["per_check"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
