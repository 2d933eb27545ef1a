"""Throughput and latency of `workbench serve` under 1, 4 and 16 concurrent clients.

    flock /tmp/wb-model.lock python benchmarks/bench_serve.py [--model smollm2] [--requests-per-client 8]

Starts ``workbench serve`` as a subprocess on a free port, warms it up, then for each
concurrency level c runs c closed-loop clients (each sends its next request when the previous
answer arrives), every request a sampled completion of up to ``--max-tokens`` tokens
(temperature 0.7, distinct seeds, prompts as in bench_generation.py). Reports completion
tokens/s, requests/s, latency p50/p95 and the server's mean batch size (from ``/stats``), and
writes benchmarks/results/serve.json. The client side uses only httpx and threads, so nearly all
CPU goes to the server. Not a test: nothing here asserts a time.

    python benchmarks/bench_serve.py --load [--clients 300 --slow 200 --half-body 100 --duration 20]

The load mode measures the server, not a model: it serves a scripted backend (every generate call
sleeps ``--step-ms`` to stand in for a model step, then replies) in a subprocess on 127.0.0.1, and
a second subprocess runs, on one asyncio loop, ``--clients`` closed-loop clients (keep-alive POSTs;
a 503 waits its Retry-After), ``--slow`` slowloris connections (the headers one byte a second)
and ``--half-body`` ones (the headers and 10 of 1000 body bytes, then a byte a second), each
reconnecting when cut off, for ``--duration`` seconds. Meanwhile one normal client (httpx, one
request at a time) measures its latency, and the server's RSS and thread count are sampled from
/proc every 50 ms. Writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def body(i: int, model: str, max_tokens: int) -> dict:
    return {
        "model": model,
        "messages": [
            {"role": "user", "content": f"Explain step by step how to compute {7 * i + 3} + {13 * i + 5}."}
        ],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "seed": i,
    }


def run_level(url: str, model: str, clients: int, per_client: int, max_tokens: int, offset: int) -> dict:
    """``clients`` threads, each sending ``per_client`` requests one after another."""
    latencies: list[float] = []
    tokens: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(c: int) -> None:
        with httpx.Client(timeout=600) as http:
            barrier.wait()
            for k in range(per_client):
                i = offset + c * per_client + k
                t0 = time.perf_counter()
                resp = http.post(f"{url}/v1/chat/completions", json=body(i, model, max_tokens))
                dt = time.perf_counter() - t0
                with lock:
                    if resp.status_code != 200:
                        errors.append(resp.text[:200])
                        continue
                    latencies.append(dt)
                    tokens.append(resp.json()["usage"]["completion_tokens"])

    before = httpx.get(f"{url}/stats").json()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = httpx.get(f"{url}/stats").json()
    sizes = after["batch_sizes"][len(before["batch_sizes"]) :]
    return {
        "concurrency": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "completion_tokens": sum(tokens),
        "wall_s": round(wall, 2),
        "tokens_per_s": round(sum(tokens) / wall, 1),
        "requests_per_s": round(len(latencies) / wall, 2),
        "latency_p50_s": round(percentile(latencies, 50), 2),
        "latency_p95_s": round(percentile(latencies, 95), 2),
        "mean_tokens_per_request": round(sum(tokens) / max(1, len(tokens)), 1),
        "server_generate_calls": len(sizes),
        "server_mean_batch_size": round(sum(sizes) / len(sizes), 2) if sizes else 0.0,
    }


# ---- the load mode ----
def serve_scripted(port: int, step_ms: float, max_connections: int, request_timeout: float) -> None:
    """The server under load: a scripted backend whose every generate call takes ``step_ms``."""
    from workbench.models.scripted import ScriptedBackend
    from workbench.serve import ModelServer

    class Stepping(ScriptedBackend):
        def generate(self, requests):
            time.sleep(step_ms / 1000)
            self.calls.clear()  # the log would grow without bound
            return super().generate(requests)

    server = ModelServer(
        Stepping("Answer: 42"),
        "127.0.0.1",
        port,
        model_name="scripted",
        max_connections=max_connections,
        request_timeout_s=request_timeout,
    )
    server.serve_forever(0.1)


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers


async def _hammer(port: int, stop_at: float, counts: Counter, i: int) -> None:
    payload = json.dumps({"messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 8}).encode()
    req = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
    )
    while time.monotonic() < stop_at:
        writer = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            while time.monotonic() < stop_at:
                writer.write(req)
                await writer.drain()
                status, headers = await asyncio.wait_for(_response(reader), 30)
                counts[f"hammer_{status}"] += 1
                if status == 503:
                    await asyncio.sleep(float(headers.get("retry-after", "1")))
                if headers.get("connection", "").lower() == "close":
                    break
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            counts["hammer_dropped"] += 1
            await asyncio.sleep(0.2)
        finally:
            if writer is not None:
                writer.close()


async def _slow(port: int, stop_at: float, counts: Counter, held: list[float], half_body: bool) -> None:
    kind = "half_body" if half_body else "slowloris"
    start = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if half_body:
        start += b"Content-Length: 1000\r\n\r\n" + b'{"messages"'[:10]
    while time.monotonic() < stop_at:
        writer = None
        t0 = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(start)
            await writer.drain()
            while time.monotonic() < stop_at:
                try:
                    data = await asyncio.wait_for(reader.read(4096), 1.0)
                except TimeoutError:
                    writer.write(b"x")  # one more byte, a second later
                    await writer.drain()
                    continue
                status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "closed"
                counts[f"{kind}_{status}"] += 1
                held.append(time.monotonic() - t0)
                break
        except (OSError, asyncio.IncompleteReadError):
            counts[f"{kind}_reset"] += 1
            held.append(time.monotonic() - t0)
        finally:
            if writer is not None:
                writer.close()
        await asyncio.sleep(0.05)


async def _burst(port: int, n: int, counts: Counter) -> None:
    """``n`` connections opened at once (100 at a time), each sending GET /health, then held 2 s."""
    conns = []

    async def one() -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            conns.append(writer)
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            status, _ = await asyncio.wait_for(_response(reader), 10)
            counts[f"burst_{status}"] += 1
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            counts["burst_failed"] += 1

    for k in range(0, n, 100):
        await asyncio.gather(*(one() for _ in range(min(100, n - k))))
    await asyncio.sleep(2)
    for w in conns:
        w.close()


def attack(port: int, clients: int, slow: int, half: int, duration: float, burst: int = 0) -> None:
    """Runs in its own process; prints one JSON line of counts when done."""

    async def run() -> dict:
        counts: Counter = Counter()
        held: list[float] = []
        stop_at = time.monotonic() + duration
        if burst:
            await _burst(port, burst, counts)
        tasks = [_hammer(port, stop_at, counts, i) for i in range(clients)]
        tasks += [_slow(port, stop_at, counts, held, False) for _ in range(slow)]
        tasks += [_slow(port, stop_at, counts, held, True) for _ in range(half)]
        await asyncio.wait_for(asyncio.gather(*tasks), duration + 60)
        return {
            "counts": dict(sorted(counts.items())),
            "slow_connections_cut": len(held),
            "slow_held_s_p50": round(percentile(held, 50), 2) if held else None,
            "slow_held_s_max": round(max(held), 2) if held else None,
        }

    print(json.dumps(asyncio.run(run())))


def _proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def run_load(args) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    me = [sys.executable, __file__]
    server = subprocess.Popen(
        me
        + ["--serve-scripted", str(port), "--step-ms", str(args.step_ms)]
        + ["--max-connections", str(args.max_connections), "--request-timeout", str(args.request_timeout)],
        stderr=subprocess.DEVNULL,
    )
    samples: list[dict[str, int]] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            try:
                samples.append(_proc_status(server.pid))
            except (OSError, ValueError):
                return
            time.sleep(0.05)

    def normal(n: int | None, until: float | None) -> dict:
        """One well-behaved client: request after request; a 503 waits its Retry-After and retries."""
        attempts, done, refused, errors = [], [], 0, 0
        with httpx.Client(timeout=60) as http:
            while (n is None or len(done) < n) and (until is None or time.monotonic() < until):
                t_first = time.perf_counter()
                while True:
                    t0 = time.perf_counter()
                    try:
                        r = http.post(f"{url}/v1/chat/completions", json=body(len(done), "scripted", 8))
                    except httpx.HTTPError:
                        errors += 1
                        continue
                    attempts.append(time.perf_counter() - t0)
                    if r.status_code == 503:
                        refused += 1
                        time.sleep(float(r.headers.get("Retry-After", "1")))
                        continue
                    break
                if r.status_code != 200:
                    errors += 1
                done.append(time.perf_counter() - t_first)
        return {
            "requests": len(done),
            "latency_p50_s": round(percentile(done, 50), 4),
            "latency_p95_s": round(percentile(done, 95), 4),
            "latency_max_s": round(max(done), 4),
            "attempt_p50_s": round(percentile(attempts, 50), 4),
            "refused_503": refused,
            "errors": errors,
        }

    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                sys.exit(f"the scripted server exited with {server.returncode}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
            if time.monotonic() > deadline:
                sys.exit("the scripted server did not start")
        idle = _proc_status(server.pid)
        alone = normal(100, None)
        print(f"alone: {alone}", file=sys.stderr)
        threading.Thread(target=sample, daemon=True).start()
        attacker = subprocess.Popen(
            me
            + ["--attack", str(port), "--clients", str(args.clients), "--slow", str(args.slow)]
            + [
                "--half-body",
                str(args.half_body),
                "--duration",
                str(args.duration),
                "--burst",
                str(args.burst),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(2)  # let the attack ramp up
        loaded = normal(None, time.monotonic() + args.duration - 3)
        out, _ = attacker.communicate(timeout=args.duration + 120)
        sampling.set()
        attack_result = json.loads(out.strip().splitlines()[-1])
        stats = httpx.get(f"{url}/stats", timeout=10).json()
        after = normal(50, None)
    finally:
        sampling.set()
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    record = {
        "command": "python benchmarks/bench_serve.py --load " + " ".join(sys.argv[2:]),
        "backend": f"scripted (each generate call sleeps {args.step_ms} ms, then replies 'Answer: 42'): "
        "measures the server, not a model",
        "server": {
            "max_connections": args.max_connections,
            "max_threads": stats.get("max_threads"),
            "request_timeout_s": args.request_timeout,
        },
        "attack": {
            "clients": args.clients,
            "slowloris": args.slow,
            "half_body": args.half_body,
            "duration_s": args.duration,
            "burst_first": args.burst,
            **attack_result,
        },
        "normal_client_alone": alone,
        "normal_client_under_load": loaded,
        "normal_client_after": after,
        "server_rss_mb_idle": round(idle["VmRSS"] / 1024, 1),
        "server_rss_mb_peak": round(max(s["VmHWM"] for s in samples) / 1024, 1) if samples else None,
        "server_threads_idle": idle["Threads"],
        "server_threads_peak": max(s["Threads"] for s in samples) if samples else None,
        "server_stats": {k: v for k, v in stats.items() if k != "batch_sizes"},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("--load", "--serve-scripted", "--attack"):
        return load_main()
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--levels", default="1,4,16", help="concurrency levels, comma-separated")
    ap.add_argument("--requests-per-client", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-batch-size", type=int, default=64)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve.json"))
    args = ap.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "workbench", "serve", "--model", args.model, "--port", str(port)]
    cmd += ["--max-batch-size", str(args.max_batch_size)]
    server = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        t0 = time.perf_counter()
        while True:
            if server.poll() is not None:
                sys.exit(f"workbench serve exited with {server.returncode}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        startup = time.perf_counter() - t0
        print(f"server up in {startup:.1f}s at {url}", file=sys.stderr)
        run_level(url, args.model, 2, 1, 16, offset=10_000)  # warm-up (first calls are slower)
        results, offset = [], 0
        for c in (int(x) for x in args.levels.split(",")):
            r = run_level(url, args.model, c, args.requests_per_client, args.max_tokens, offset)
            offset += c * args.requests_per_client
            results.append(r)
            print(json.dumps(r), file=sys.stderr)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()

    record = {
        "command": " ".join(["flock /tmp/wb-model.lock python benchmarks/bench_serve.py", *sys.argv[1:]]),
        "model": args.model,
        "server": " ".join(cmd[1:]).replace(str(port), "PORT"),
        "requests_per_client": args.requests_per_client,
        "max_tokens": args.max_tokens,
        "temperature": 0.7,
        "server_startup_s": round(startup, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "levels": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    print(f"{'clients':>7} {'req/s':>7} {'tok/s':>7} {'p50 s':>7} {'p95 s':>7} {'batch':>6}")
    for r in results:
        print(
            f"{r['concurrency']:>7} {r['requests_per_s']:>7} {r['tokens_per_s']:>7} "
            f"{r['latency_p50_s']:>7} {r['latency_p95_s']:>7} {r['server_mean_batch_size']:>6}"
        )


def load_main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--load", action="store_true")
    ap.add_argument("--serve-scripted", type=int, metavar="PORT")
    ap.add_argument("--attack", type=int, metavar="PORT")
    ap.add_argument("--clients", type=int, default=300)
    ap.add_argument("--slow", type=int, default=200)
    ap.add_argument("--half-body", type=int, default=100)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--burst", type=int, default=0, help="first open this many connections at once")
    ap.add_argument("--step-ms", type=float, default=20.0)
    ap.add_argument("--max-connections", type=int, default=512)
    ap.add_argument("--request-timeout", type=float, default=10.0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve_load.json"))
    args = ap.parse_args()
    if args.serve_scripted is not None:
        return serve_scripted(args.serve_scripted, args.step_ms, args.max_connections, args.request_timeout)
    if args.attack is not None:
        return attack(args.attack, args.clients, args.slow, args.half_body, args.duration, args.burst)
    if (
        not 0 < args.clients + args.slow + args.half_body <= 2000
        or not 0 <= args.burst <= 10_000
        or not 5 <= args.duration <= 120
    ):
        sys.exit("keep the load bounded: at most 2000 clients, a burst of at most 10000, 5-120 s")
    run_load(args)


if __name__ == "__main__":
    main()
