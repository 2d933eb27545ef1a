"""benchmarks/bench_throughput.py: its quick mode end to end on the real model, and its refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_throughput.py"
PROTOCOLS = ("vote", "debate", "maestro", "leader")


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _positive(measure: dict, *keys: str) -> None:
    assert "error" not in measure, measure
    for key in keys:
        assert isinstance(measure[key], int | float) and measure[key] > 0, (
            measure["measure"],
            key,
            measure[key],
        )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--protocols", "vote,chess"], "--protocols: unknown chess"),
        (["--items", "0"], "--items must be >= 1, got 0"),
        (["--one", "gpu:1", "--work", ".", "--child-out", "x.json"], "--one gpu:1: KIND must be"),
    ],
)
def test_refuses_bad_options_with_one_line(args, message, tmp_path):
    out = tmp_path / "t.json"
    proc = _run(*args, "--out", str(out), timeout=120)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_quick_run_writes_every_measurement(tmp_path):
    out = tmp_path / "throughput.json"
    proc = _run("--quick", "--repeats", "2", "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["quick"] is True and r["errors"] == []
    assert r["git"]["commit"] and len(r["git"]["commit"]) == 40 and r["timestamp_utc"].endswith("Z")
    machine = r["machine"]
    assert machine["cpus"] >= 1 and machine["torch_threads"] >= 1 and machine["dtype"].startswith("torch.")
    assert machine["torch"] and machine["transformers"]
    assert r["concurrency"]["max_batch_size"] == 4 and "max_batch_size=4" in r["concurrency"]["definition"]

    memory = ("peak_rss_mib", "peak_rss_load_mib", "rss_after_load_mib", "peak_rss_timed_mib", "load_s")
    rows = r["raw"]["rows"]
    assert [row["batch"] for row in rows] == [1, 4]
    for row in rows:
        for side in (row["ours"], row["hf_generate"]):
            _positive(side, "tokens_per_s", "completion_tokens", "wall_s", *memory)
            assert side["completion_tokens"] <= 8 * row["batch"] and side["repeats"] == 2
            assert len(side["tokens_per_s_each"]) == 2 and min(side["tokens_per_s_each"]) > 0
            assert side["peak_rss_mib"] >= max(side["peak_rss_timed_mib"], side["peak_rss_load_mib"])
        assert row["same_prompt_tokens"] is True  # the same chat prompts, tokenized the same way
        assert row["ours_over_hf"] > 0 and 0 <= row["identical_completions"] <= row["batch"]
        assert "digests" not in row["ours"]

    rows = r["protocols"]["rows"]
    assert [row["protocol"] for row in rows] == list(PROTOCOLS) and r["protocols"]["items"] == 8
    for row in rows:
        run, replay = row["run"], row["raw_first_call"]
        _positive(run, "tokens_per_s", "completion_tokens", "generations", "first_call_requests", *memory)
        assert run["episodes"] == 8 and run["errors"] == 0
        assert run["options"]["max_tokens"] == 8 and run["generations_per_query"] * 8 == run["generations"]
        _positive(replay, "tokens_per_s", "completion_tokens", *memory)
        assert replay["requests"] == run["first_call_requests"] <= run["generations"]
        if "same_requests_as" in replay:  # measured once for an earlier protocol with the same first call
            assert replay["same_requests_as"] in PROTOCOLS[: PROTOCOLS.index(row["protocol"])]
        assert row["raw_fixed_prompts"] == {
            "batch": 4,
            "tokens_per_s": r["raw"]["rows"][1]["ours"]["tokens_per_s"],
        }
        assert row["protocol_over_raw_fixed"] > 0 and row["protocol_over_raw_first_call"] > 0
