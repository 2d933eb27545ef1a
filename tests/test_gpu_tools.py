"""The GPU tooling that runs here: the environment check, the pins' agreement, the benchmark's pieces."""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_env  # noqa: E402


def _report(tmp_path, **versions) -> Path:
    path = tmp_path / "report.json"
    install = [{"metadata": {"name": n, "version": v}} for n, v in versions.items()]
    path.write_text(json.dumps({"pip_version": "26.3", "install": install}))
    return path


def test_env_check_passes_the_pinned_set_and_fails_a_cpu_torch_or_a_moved_pin(tmp_path, capsys):
    pins = gpu_env._pins()
    assert gpu_env.check(_report(tmp_path, **pins)) == 0
    assert "vllm               0.32.0" in capsys.readouterr().out
    assert gpu_env.check(_report(tmp_path, **{**pins, "torch": "2.13.0+cpu"})) == 1
    assert "torch resolved to a CPU build" in capsys.readouterr().err
    assert gpu_env.check(_report(tmp_path, **{**pins, "trl": "1.16.0"})) == 1
    assert "trl==1.15.0 resolved to 1.16.0" in capsys.readouterr().err


def test_gpu_extra_environment_file_and_snapshot_agree_with_requirements_gpu():
    pins = gpu_env._pins()
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for dep in extra["gpu"]:
        name, version = re.split(r"==", dep)
        assert pins[name.replace("_", "-")] == version, dep
    assert not any(
        d.startswith("trl") for d in extra["dev"]
    )  # Unsloth caps trl at 1.15: dev must not ask 1.16
    env = (ROOT / "environment-gpu.yml").read_text()
    assert "-r requirements-gpu.txt" in env and "-e .[gpu,dev,notebook]" in env
    api = json.loads((ROOT / "tests" / "data" / "gpu_api.json").read_text())
    assert api["vllm"]["version"] == pins["vllm"] and api["unsloth"]["version"] == pins["unsloth"]


@pytest.mark.slow
def test_bench_pieces_on_cpu(smollm2_fp32):
    """The benchmark's batch has the asked length, and its timed loss step really trains."""
    import bench_gpu
    from peft import LoraConfig, get_peft_model

    prompts, completions = bench_gpu.synthetic_batch(smollm2_fp32.tokenizer, 3, 64)
    assert len(prompts) == 3 and all(len(p) + len(c) == 64 for p, c in zip(prompts, completions, strict=True))
    import copy

    model = get_peft_model(copy.deepcopy(smollm2_fp32.model), LoraConfig(r=4, target_modules=["q_proj"]))
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    times = bench_gpu.loss_step_seconds(model, prompts, completions, smollm2_fp32.pad_id, repeats=1)
    assert len(times) == 1 and times[0] > 0
    after = [p for p in model.parameters() if p.requires_grad]
    assert any(not a.equal(b) for a, b in zip(after, before, strict=True))
    out = bench_gpu.tokens_per_second(smollm2_fp32, 2, 8, repeats=1)
    assert out["tokens"] > 0 and out["tokens_per_s"] > 0
