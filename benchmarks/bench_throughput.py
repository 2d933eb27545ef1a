"""Throughput of the embedded model: the raw engine against transformers' own `generate`, and each
protocol against the raw engine at the same concurrency, with the peak memory of every measurement.

    python benchmarks/bench_throughput.py [--out benchmarks/results/throughput.json]
    python benchmarks/bench_throughput.py --quick --out /tmp/throughput_quick.json   # ~2 minutes

Every measurement runs in its own child process (this script re-invoked with ``--one KIND:ARG``),
because peak RSS is process-wide and only grows; the child loads the model (timed apart, not
counted), warms it up, runs the one measurement and writes its numbers. The parent runs the
children one after another, computes the ratios and writes one JSON file:

1. ``raw``: our engine (``load_backend(model, max_batch_size=C)``, ``Backend.generate``) and
   ``model.generate`` of transformers on the same chat prompts, tokenized the same way, left
   padded, greedy, the same ``max_tokens``; completion tokens per second of wall time, at batch
   1, 16, 64 (quick: 1, 4). Greedy on both sides, so completions can be compared token by token
   (``identical_completions``); bf16 sums depend on the batch shape, so a few may differ. Each
   is timed ``--repeats`` times (default 3) in its child; the median is reported.
2. ``protocols``: vote, debate, maestro and leader on arithmetic test items through
   ``run_episodes`` (all episodes in flight), completion tokens / wall. Next to each, the raw
   engine at the same concurrency C (= the backend's ``max_batch_size``: at most C rows decode
   together, in the protocol and in the raw run alike), measured two ways: (a) the fixed raw
   prompts at batch C (``raw`` above, greedy), (b) the protocol's own first backend call (its
   requests recorded during the protocol run, then sent again alone to a fresh engine).
3. Memory of every child: its peak RSS up to the timed part (model load, warm-up), its RSS
   after them, and the peak RSS of the timed part alone (the kernel's mark reset when it began).

The full run takes ~16 minutes on 2 CPU cores (leader alone ~5); ``--protocols`` picks a subset.

Nothing here asserts a time. docs/foundation.md quotes the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = "benchmarks/results/throughput.json"
PROTOCOL_NAMES = ("vote", "debate", "maestro", "leader")
MAX_IN_FLIGHT = 256  # episodes the scheduler keeps in flight: every item at once here


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that decides what is measured; the full and the quick run differ only here."""

    model: str
    quick: bool
    batches: tuple[int, ...]
    items: int
    max_tokens: int
    protocols: tuple[str, ...]
    repeats: int  # timed repeats of each raw measurement (the median is reported)

    @property
    def concurrency(self) -> int:
        return max(self.batches)

    def protocol_options(self, name: str) -> dict:
        """The options each protocol runs with: its defaults, except completion caps (and leader's
        rounds, 2 instead of the paper's 5, which would take 2.5x as long)."""
        t = self.max_tokens
        return {
            "vote": {"n": 5, "max_tokens": t},
            "debate": {"agents": 3, "rounds": 2, "max_tokens": t},
            "maestro": {"explorers": 3, "samples": 1, "rounds": 2, "max_tokens": t, "central_max_tokens": t},
            "leader": {"peers": 3, "rounds": 2, "max_tokens": t, "leader_max_tokens": t},
        }[name]


def settings_from(args: argparse.Namespace) -> Settings:
    protocols = tuple(p.strip() for p in args.protocols.split(",") if p.strip())
    unknown = [p for p in protocols if p not in PROTOCOL_NAMES]
    if unknown:
        raise SystemExit(
            f"--protocols: unknown {', '.join(unknown)}; choose from {', '.join(PROTOCOL_NAMES)}"
        )
    for flag, value in (
        ("--items", args.items),
        ("--max-tokens", args.max_tokens),
        ("--repeats", args.repeats),
    ):
        if value is not None and value < 1:
            raise SystemExit(f"{flag} must be >= 1, got {value}")
    return Settings(
        model=args.model,
        quick=args.quick,
        batches=(1, 4) if args.quick else (1, 16, 64),
        items=args.items if args.items is not None else (8 if args.quick else 64),
        max_tokens=args.max_tokens if args.max_tokens is not None else (8 if args.quick else 128),
        protocols=protocols,
        repeats=args.repeats if args.repeats is not None else (1 if args.quick else 3),
    )


def raw_prompts(batch: int) -> list[list[dict[str, str]]]:
    """The fixed prompts of the raw measurement (those of bench_generation.py's raw part)."""
    return [
        [{"role": "user", "content": f"Explain step by step how to compute {7 * i + 3} + {13 * i + 5}."}]
        for i in range(batch)
    ]


# ---- the child: one measurement in its own process ----
def _rss_mib() -> float | None:
    """Resident set size now (Linux /proc), in MiB."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


_WINDOW: dict = {"open": False, "load_peak_mib": None}  # the peak-RSS reset at the timed part's start


def _start_timed_part() -> float:
    """Note the peak RSS so far (model load and warm-up), then reset the kernel's peak-RSS mark to
    the current RSS (Linux: clear_refs 5), so that VmHWM at the end is the peak of the timed part
    alone; returns the start time."""
    _WINDOW["load_peak_mib"] = _peak_rss_mib()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _WINDOW["open"] = True
    except OSError:
        _WINDOW["open"] = False
    return time.perf_counter()


def _timed_peak_mib() -> float | None:
    """Peak RSS since `_start_timed_part` (VmHWM), or None where it could not be reset."""
    if not _WINDOW["open"]:
        return None
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def _peak_rss_mib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return round(kib / 1024, 1)


def _digest(ids: list[int]) -> str:
    return hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()[:16]


def _rate(tokens: int, wall: float) -> float:
    return round(tokens / wall, 1) if wall > 0 else 0.0


def _repeated(tokens: int, walls: list[float]) -> dict:
    """The median of repeated timings (tokens per repeat the same), and every one of them."""
    wall = statistics.median(walls)
    return {
        "repeats": len(walls),
        "wall_s": round(wall, 3),
        "tokens_per_s": _rate(tokens, wall),
        "tokens_per_s_each": [_rate(tokens, w) for w in walls],
    }


def _load(s: Settings):
    """The backend, loaded and warmed up; returns it and what the load cost."""
    from workbench.models import Request, SamplingParams, load_backend

    t0 = time.perf_counter()
    backend = load_backend(s.model, max_batch_size=s.concurrency)
    load_s = time.perf_counter() - t0
    backend.generate([Request([{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=4))])
    dtype = getattr(getattr(backend, "model", None), "dtype", None)
    return backend, {"load_s": round(load_s, 2), "rss_after_load_mib": _rss_mib(), "dtype": str(dtype)}


def measure_raw(s: Settings, batch: int) -> dict:
    """Our engine on the fixed prompts, greedy."""
    from workbench.models import Request, SamplingParams

    backend, loaded = _load(s)
    reqs = [Request(m, SamplingParams(max_tokens=s.max_tokens)) for m in raw_prompts(batch)]
    walls, t0 = [], _start_timed_part()
    for _ in range(s.repeats):  # greedy: every repeat generates the same tokens
        gens = backend.generate(reqs)
        walls.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
    tokens = sum(g.completion_tokens for g in gens)
    return {
        **loaded,
        "batch": batch,
        "prompt_tokens": sum(g.prompt_tokens for g in gens),
        "completion_tokens": tokens,
        **_repeated(tokens, walls),
        "finished_by_length": sum(g.finish_reason == "length" for g in gens),
        "digests": [_digest(list(g.token_ids)) for g in gens],
    }


def measure_hf(s: Settings, batch: int) -> dict:
    """transformers' ``model.generate`` on the same weights and the same tokenized chat prompts:
    left padding, greedy, ``max_new_tokens`` = max_tokens, stopping at the same end-of-turn ids."""
    import torch

    backend, loaded = _load(s)
    model, tok = backend.model, backend.tokenizer
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tok.eos_token_id is not None:
        eos_ids.add(tok.eos_token_id)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else min(eos_ids)
    device = next(model.parameters()).device

    def encode(messages) -> list[int]:
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tok(text, add_special_tokens=False)["input_ids"]

    def run(prompts: list[list[int]], max_new: int):
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for b, p in enumerate(prompts):
            ids[b, width - len(p) :] = torch.tensor(p)
            mask[b, width - len(p) :] = 1
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=sorted(eos_ids),
        )
        return out[:, width:].tolist()

    run([encode([{"role": "user", "content": "Hi"}])], 4)  # warm-up of this path too
    prompts = [encode(m) for m in raw_prompts(batch)]
    walls, t0 = [], _start_timed_part()
    for _ in range(s.repeats):
        rows = run(prompts, s.max_tokens)
        walls.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
    completions = []
    for row in rows:  # up to and including the first end-of-turn id, as our engine counts
        end = next((i + 1 for i, t in enumerate(row) if t in eos_ids), len(row))
        completions.append(row[:end])
    tokens = sum(map(len, completions))
    return {
        **loaded,
        "batch": batch,
        "prompt_tokens": sum(map(len, prompts)),
        "completion_tokens": tokens,
        **_repeated(tokens, walls),
        "finished_by_length": sum(len(c) == s.max_tokens and c[-1] not in eos_ids for c in completions),
        "digests": [_digest(c) for c in completions],
    }


class FirstCallRecorder:
    """Passes every call to the backend; keeps the requests of the first call: the first
    ``generate``, or on a streaming backend the first admission into its running decode (``open``:
    the scheduler admits what every episode queued before its first turn, as it did in one call)."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.first: list | None = None
        self._turn: int | None = None  # the backend's step count at the first open()

    def generate(self, requests):
        if self.first is None:
            self.first = list(requests)
        return self.inner.generate(requests)

    def open(self, requests):
        steps = self.inner._steps  # decode steps so far: unchanged during the scheduler's first turn
        if self.first is None:
            self.first, self._turn = [], steps
        if steps == self._turn:
            self.first += list(requests)
        return self.inner.open(requests)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


def _first_call_file(work: Path, name: str) -> Path:
    return work / f"{name}.first_call.json"


class GenerateOnly:
    """The backend seen through ``generate`` only: the scheduler then sends each turn's queued
    requests in one call and resolves them when it returns (phase by phase, the path every
    backend took before the transformers backend streamed)."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name

    def generate(self, requests):
        return self.inner.generate(requests)


def measure_protocol(s: Settings, name: str, work: Path, phased: bool = False) -> dict:
    """One protocol over the items with every episode in flight; its first call's requests are
    saved for ``measure_replay``. ``phased``: through `GenerateOnly` (no streaming)."""
    from workbench.evaluate import ProtocolConfig, run_episodes
    from workbench.protocols import PROTOCOLS
    from workbench.tasks import TaskConfig, load_tasks

    backend, loaded = _load(s)
    tasks = load_tasks(TaskConfig.from_flat({"name": "arithmetic", "split": "test", "limit": s.items}))
    protocol = ProtocolConfig(name, s.protocol_options(name))
    recorder = FirstCallRecorder(backend)
    target = GenerateOnly(recorder) if phased else recorder
    t0 = _start_timed_part()
    episodes, errors, stats = run_episodes(tasks, protocol, target, seed=0, max_in_flight=MAX_IN_FLIGHT)
    wall = time.perf_counter() - t0
    tokens = sum(e.usage.completion_tokens for e in episodes)
    first = recorder.first or []
    _first_call_file(work, name).write_text(
        json.dumps(
            [
                {"messages": [dict(m) for m in r.messages], "sampling": dataclasses.asdict(r.sampling)}
                for r in first
            ]
        )
    )
    return {
        **loaded,
        "options": protocol.options,
        "generations_per_query": PROTOCOLS[name].generations(protocol.resolved),
        "episodes": len(episodes),
        "errors": len(errors),
        "generations": sum(e.usage.calls for e in episodes),
        "prompt_tokens": sum(e.usage.prompt_tokens for e in episodes),
        "completion_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": _rate(tokens, wall),
        "accuracy": round(sum(e.correct for e in episodes) / max(1, len(episodes)), 3),
        "first_call_requests": len(first),
        **stats,
    }


def measure_replay(s: Settings, name: str, work: Path) -> dict:
    """The protocol's first backend call, sent alone to a fresh engine (same requests, seeds and
    sampling): the raw engine on the protocol's own prompts at the same concurrency."""
    from workbench.models import Request, SamplingParams

    path = _first_call_file(work, name)
    saved = json.loads(path.read_text()) if path.exists() else []
    if not saved:
        raise RuntimeError(
            f"no first-call requests recorded for {name} ({path}): the protocol's backend received no "
            f"generate() call; run protocol:{name} first"
        )
    backend, loaded = _load(s)
    reqs = [Request(r["messages"], SamplingParams(**r["sampling"])) for r in saved]
    t0 = _start_timed_part()
    gens = backend.generate(reqs)
    wall = time.perf_counter() - t0
    tokens = sum(g.completion_tokens for g in gens)
    return {
        **loaded,
        "requests": len(reqs),
        "generations": len(gens),
        "prompt_tokens": sum(g.prompt_tokens for g in gens),
        "completion_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": _rate(tokens, wall),
    }


def child(s: Settings, what: str, work: Path, out: Path) -> None:
    import torch

    kind, _, arg = what.partition(":")
    t0 = time.perf_counter()
    if kind == "raw":
        result = measure_raw(s, int(arg))
    elif kind == "hf":
        result = measure_hf(s, int(arg))
    elif kind == "protocol":
        name, _, variant = arg.partition(":")
        result = measure_protocol(s, name, work, phased=variant == "phased")
    elif kind == "replay":
        result = measure_replay(s, arg, work)
    else:
        raise SystemExit(
            f"--one {what}: KIND must be raw, hf, protocol or replay (e.g. raw:64, protocol:vote)"
        )
    import transformers

    result |= {
        "measure": what,
        "peak_rss_mib": max(_peak_rss_mib(), _WINDOW["load_peak_mib"] or 0.0),
        "peak_rss_load_mib": _WINDOW["load_peak_mib"],
        "peak_rss_timed_mib": _timed_peak_mib(),
        "child_s": round(time.perf_counter() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    out.write_text(json.dumps(result))


# ---- the parent: run the children, put the results together ----
def run_child(s: Settings, what: str, work: Path, timeout_s: float) -> dict:
    out = work / f"{what.replace(':', '_')}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--one",
        what,
        "--work",
        str(work),
        "--child-out",
        str(out),
    ]
    cmd += ["--model", s.model, "--items", str(s.items), "--max-tokens", str(s.max_tokens)]
    cmd += ["--protocols", ",".join(s.protocols), "--repeats", str(s.repeats)] + (
        ["--quick"] if s.quick else []
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    print(f"[bench] {what} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"measure": what, "error": f"timed out after {timeout_s:.0f} s"}
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"measure": what, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    result = json.loads(out.read_text())
    rate = result.get("tokens_per_s")
    print(
        f"[bench] {what}: {rate} tokens/s, peak RSS {result['peak_rss_mib']} MiB "
        f"({time.perf_counter() - t0:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return result


def _ratio(a: dict, b: dict) -> float | None:
    if "error" in a or "error" in b or not b.get("tokens_per_s"):
        return None
    return round(a["tokens_per_s"] / b["tokens_per_s"], 3)


def git_info() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD") or None,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _header(benchmark: str) -> dict:
    """What every results file of this script starts with: which run, when, at which commit."""
    return {
        "benchmark": benchmark,
        "command": " ".join(["python", "benchmarks/bench_throughput.py", *sys.argv[1:]]),
        "timestamp_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git": git_info(),
    }


def parent(s: Settings, out: str, work: Path, timeout_s: float) -> int:
    started = time.perf_counter()
    results: dict = {
        **_header("throughput"),
        "quick": s.quick,
        "model": s.model,
    }
    raw_rows, errors = [], []
    raw_by_batch: dict[int, dict] = {}
    for b in s.batches:
        ours, hf = run_child(s, f"raw:{b}", work, timeout_s), run_child(s, f"hf:{b}", work, timeout_s)
        errors += [r for r in (ours, hf) if "error" in r]
        row: dict = {"batch": b, "ours": ours, "hf_generate": hf, "ours_over_hf": _ratio(ours, hf)}
        if "error" not in ours and "error" not in hf:
            row["same_prompt_tokens"] = ours["prompt_tokens"] == hf["prompt_tokens"]
            row["identical_completions"] = sum(
                x == y for x, y in zip(ours.pop("digests"), hf.pop("digests"), strict=True)
            )
        raw_rows.append(row)
        raw_by_batch[b] = ours
    c = s.concurrency
    proto_rows = []
    replays: dict[str, tuple[str, dict]] = {}  # first-call file digest -> (protocol, its replay)
    for name in s.protocols:
        run = run_child(s, f"protocol:{name}", work, timeout_s)
        if "error" in run:
            replay = {"measure": f"replay:{name}", "error": "not run: the protocol run failed"}
        else:
            # debate, maestro and leader open with the same requests (the question to 3 agents,
            # same sampling and seeds): that replay is measured once and shared
            key = hashlib.sha1(_first_call_file(work, name).read_bytes()).hexdigest()
            if key in replays:
                replay = {**replays[key][1], "same_requests_as": replays[key][0]}
            else:
                replay = run_child(s, f"replay:{name}", work, timeout_s)
                replays[key] = (name, replay)
        errors += [r for r in (run, replay) if "error" in r]
        fixed = raw_by_batch[c]
        proto_rows.append(
            {
                "protocol": name,
                "options_set": s.protocol_options(name),
                "run": run,
                "raw_fixed_prompts": {"batch": c, "tokens_per_s": fixed.get("tokens_per_s")},
                "raw_first_call": replay,
                "protocol_over_raw_fixed": _ratio(run, fixed),
                "protocol_over_raw_first_call": _ratio(run, replay),
            }
        )
    first = next((x for row in raw_rows for x in (row["ours"], row["hf_generate"]) if "error" not in x), {})
    results["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": first.get("torch") or _version("torch"),
        "transformers": first.get("transformers") or _version("transformers"),
        "torch_threads": first.get("torch_threads"),
        "dtype": first.get("dtype"),
    }
    results["concurrency"] = {
        "max_batch_size": c,
        "max_in_flight": MAX_IN_FLIGHT,
        "definition": (
            f"the backend is loaded with max_batch_size={c}: at most {c} rows decode together. "
            f"Protocols run all {s.items} episodes in flight (run_episodes, max_in_flight={MAX_IN_FLIGHT}), "
            f"so the engine gets every phase's requests at once and decodes up to {c} of them at a time. "
            f"raw_fixed_prompts: the raw measurement at batch {c} (fixed prompts, greedy, "
            f"max_tokens={s.max_tokens}). raw_first_call: the requests of the protocol's first backend "
            "call (recorded during its run: same prompts, sampling and seeds) sent alone to a fresh "
            f"engine with max_batch_size={c}; where two protocols' first calls are the same requests, it is "
            "measured once (same_requests_as names the protocol whose replay is shown)."
        ),
    }
    results["raw"] = {
        "prompts": "bench_generation.py's raw prompts: 'Explain step by step how to compute {7i+3} + {13i+5}.', "
        "as a chat user turn; the first `batch` of them",
        "sampling": f"greedy, max_tokens={s.max_tokens}",
        "timing": f"{s.repeats} timed repeats in the same child after the warm-up; tokens_per_s is the "
        "median, tokens_per_s_each every repeat (protocol runs and replays are timed once)",
        "ours": f"load_backend('{s.model}', max_batch_size={c}).generate(requests)",
        "hf_generate": "model.generate(input_ids, attention_mask, max_new_tokens, do_sample=False) on the same "
        "model object and token ids, left padded; completion = tokens up to and including the first end-of-turn id",
        "rows": raw_rows,
    }
    results["protocols"] = {
        "task": "arithmetic, test split, default options",
        "items": s.items,
        "seed": 0,
        "tokens_per_s": "completion tokens of all episodes / wall time of run_episodes",
        "rows": proto_rows,
    }
    results["memory"] = (
        "each measurement runs in its own child process. peak_rss_load_mib: its peak RSS up to the "
        "timed part (ru_maxrss: model load and warm-up); rss_after_load_mib: its RSS when the load "
        "and warm-up are done; peak_rss_timed_mib: the peak RSS of the timed part alone (the kernel's "
        "high-water mark reset to the current RSS when it began, /proc/self/clear_refs; null where "
        "that is not possible); peak_rss_mib: the child's peak over both"
    )
    results["errors"] = [{"measure": r["measure"], "error": r["error"]} for r in errors]
    results["total_wall_s"] = round(time.perf_counter() - started, 1)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2) + "\n")
    print(summary_table(results))
    print(f"[bench] wrote {out}", file=sys.stderr)
    return 1 if errors else 0


def summary_table(results: dict) -> str:
    lines = ["batch | ours tok/s | hf tok/s | ours/hf | identical | timed peak MiB (ours, hf)"]
    for r in results["raw"]["rows"]:
        o, h = r["ours"], r["hf_generate"]
        lines.append(
            f"{r['batch']} | {o.get('tokens_per_s')} | {h.get('tokens_per_s')} | {r['ours_over_hf']} | "
            f"{r.get('identical_completions')}/{r['batch']} | {o.get('peak_rss_timed_mib')}, "
            f"{h.get('peak_rss_timed_mib')}"
        )
    lines.append("protocol | tok/s | raw fixed | ratio | raw first call | ratio | timed peak MiB")
    for r in results["protocols"]["rows"]:
        lines.append(
            f"{r['protocol']} | {r['run'].get('tokens_per_s')} | {r['raw_fixed_prompts']['tokens_per_s']} | "
            f"{r['protocol_over_raw_fixed']} | {r['raw_first_call'].get('tokens_per_s')} | "
            f"{r['protocol_over_raw_first_call']} | {r['run'].get('peak_rss_timed_mib')}"
        )
    return "\n".join(lines)


def parent_streaming_ab(s: Settings, out: str, work: Path, timeout_s: float) -> int:
    """Each protocol streamed (the scheduler admits requests into the running decode) and phased
    (`GenerateOnly`: one generate call per scheduler turn), one after the other, same engine,
    same items and seeds: what streaming alone changes, measured in one run."""
    results: dict = {
        **_header("throughput_streaming_ab"),
        "model": s.model,
        "items": s.items,
        "max_batch_size": s.concurrency,
        "max_in_flight": MAX_IN_FLIGHT,
        "order": "for each protocol: phased, then streamed (each in its own child process)",
        "rows": [],
    }
    failed = False
    keep = (
        "wall_s",
        "tokens_per_s",
        "completion_tokens",
        "generations",
        "accuracy",
        "backend_calls",
        "mean_batch_size",
        "decode_steps",
        "mean_rows_per_step",
        "peak_rss_timed_mib",
        "errors",
    )
    for name in s.protocols:
        phased = run_child(s, f"protocol:{name}:phased", work, timeout_s)
        streamed = run_child(s, f"protocol:{name}", work, timeout_s)
        failed |= "error" in phased or "error" in streamed
        results["rows"].append(
            {
                "protocol": name,
                "options_set": s.protocol_options(name),
                "phased": {k: phased.get(k) for k in (*keep, "error") if k in phased},
                "streamed": {k: streamed.get(k) for k in (*keep, "error") if k in streamed},
                "streamed_over_phased_tokens_per_s": _ratio(streamed, phased),
            }
        )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2) + "\n")
    for r in results["rows"]:
        p, q = r["phased"], r["streamed"]
        print(
            f"{r['protocol']:8s} phased {p.get('tokens_per_s')} tok/s ({p.get('wall_s')} s)  "
            f"streamed {q.get('tokens_per_s')} tok/s ({q.get('wall_s')} s)  x{r['streamed_over_phased_tokens_per_s']}"
        )
    return 1 if failed else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--quick", action="store_true", help="batch 1/4, 8 items, max_tokens 8: a smoke run")
    ap.add_argument("--items", type=int, default=None, help="arithmetic test items (default 64; quick 8)")
    ap.add_argument("--max-tokens", type=int, default=None, help="completion cap (default 128; quick 8)")
    ap.add_argument("--protocols", default=",".join(PROTOCOL_NAMES))
    ap.add_argument(
        "--repeats", type=int, default=None, help="timed repeats of each raw measurement (default 3; quick 1)"
    )
    ap.add_argument(
        "--streaming-ab",
        action="store_true",
        help="only the protocols, each streamed and phased (one generate call per turn), one after the other",
    )
    ap.add_argument("--child-timeout", type=float, default=900.0, help="seconds one measurement may take")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child's measurement
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    s = settings_from(args)
    if args.one:
        child(s, args.one, Path(args.work), Path(args.child_out))
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench_throughput_") as work:
        run = parent_streaming_ab if args.streaming_ab else parent
        sys.exit(run(s, args.out, Path(work), args.child_timeout))


if __name__ == "__main__":
    main()
