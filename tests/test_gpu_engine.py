"""The GPU path on a machine without one: the vLLM rollout engine against a fake `vllm` that enforces
the real contract (tests/fake_vllm.py), Unsloth's calls against its real signatures, and every
refusal (no CUDA, no package, a rank vLLM refuses, a GPU partly in use) as one line before any run
folder is written. What only a GPU can check is in benchmarks/gpu_check.py (docs/gpu.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import fake_vllm
import pytest
import torch
from tiny_llama import tiny_llama

from workbench.config import ConfigError
from workbench.models.base import Request, SamplingParams
from workbench.models.loading import ModelLoadError

API = json.loads((Path(__file__).parent / "data" / "gpu_api.json").read_text())


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A 1-layer Llama over characters, with a chat template, saved as a model folder."""
    model, tokenizer = tiny_llama(max_positions=96)
    path = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _policy(tiny_dir: Path):
    """The trained model: the tiny Llama with a random LoRA adapter (rank 4), fp32, CPU."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    return get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )


def _engine(tiny_dir, monkeypatch, sleep=False):
    from workbench.models.vllm import start_llm
    from workbench.rl.engine import VLLMRolloutEngine

    fake_vllm.install(monkeypatch)
    llm = start_llm(str(tiny_dir), dtype="fp32", max_lora_rank=8, enable_sleep_mode=sleep, max_model_len=64)
    model = _policy(tiny_dir)
    return VLLMRolloutEngine(llm, model, pad_id=0, name="tiny", sleep=sleep), llm, model


ASK = Request(
    [{"role": "user", "content": "2+3?"}],
    SamplingParams(temperature=1.0, max_tokens=6, seed=5, n=2, logprobs=True),
)


# ---------------------------------------------------------------- the fake holds the real contract
def test_the_fake_refuses_what_vllm_refuses(tiny_dir, monkeypatch):
    vllm = fake_vllm.install(monkeypatch)
    with pytest.raises(TypeError, match="unexpected keyword"):
        vllm.LLM(str(tiny_dir), enable_lora_adapters=True)  # not an EngineArgs field
    with pytest.raises(ValueError, match="max_lora_rank=48 is not one of"):
        vllm.LLM(str(tiny_dir), enable_lora=True, max_lora_rank=48)
    with pytest.raises(TypeError, match="unexpected keyword"):
        vllm.SamplingParams(n=1, logprob=0)
    from vllm.lora.request import LoRARequest

    with pytest.raises(ValueError, match="id must be > 0"):
        LoRARequest("a", 0, "/x")
    llm = vllm.LLM(str(tiny_dir), max_model_len=32)
    with pytest.raises(ValueError, match="LoRA is not enabled"):
        llm.generate(
            [{"prompt_token_ids": [3, 4]}],
            vllm.SamplingParams(),
            lora_request=LoRARequest("a", 1, str(tiny_dir)),
        )
    with pytest.raises(ValueError, match="longer than the maximum model length"):
        llm.generate([{"prompt_token_ids": [3] * 40}], vllm.SamplingParams())


def test_snapshot_is_the_pinned_versions():
    """tests/data/gpu_api.json was read from the wheels requirements-gpu.txt pins."""
    pins = dict(
        line.split("==")
        for line in (Path(__file__).parent.parent / "requirements-gpu.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert API["vllm"]["version"] == pins["vllm"]
    assert API["unsloth"]["version"] == pins["unsloth"]
    assert API["vllm"]["MaxLoRARanks"] == [1, 8, 16, 32, 64, 128, 256, 320, 512]


def test_vllm_ranks_are_vllms():
    from workbench.models.vllm import VLLM_LORA_RANKS, check_max_lora_rank, lora_rank_slot

    assert list(VLLM_LORA_RANKS) == API["vllm"]["MaxLoRARanks"]
    assert [lora_rank_slot(r) for r in (1, 2, 16, 17, 300, 512)] == [1, 8, 16, 32, 320, 512]
    with pytest.raises(ModelLoadError, match="not one vLLM accepts.*set model.max_lora_rank=64"):
        check_max_lora_rank(48)
    with pytest.raises(ModelLoadError, match="rank 32 > max_lora_rank=16; set model.max_lora_rank=32"):
        check_max_lora_rank(16, adapter_rank=32)
    with pytest.raises(ModelLoadError, match="above vLLM's largest"):
        lora_rank_slot(600)


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("vllm") is None, reason="vllm is not installed here (CPU machine)"
)
def test_live_vllm_signatures_match_the_snapshot():
    import inspect

    from vllm import LLM
    from vllm import SamplingParams as VSP
    from vllm.lora.request import LoRARequest

    assert [p for p in inspect.signature(LLM.generate).parameters if p != "self"] == API["vllm"][
        "LLM.generate"
    ]["params"]
    assert "lora_int_id" in LoRARequest.__struct_fields__ and "logprobs" in VSP.__struct_fields__


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("unsloth") is None,
    reason="unsloth is not installed here (CPU machine)",
)
def test_live_unsloth_signatures_match_the_snapshot():
    import inspect

    from unsloth import FastLanguageModel

    params = set(inspect.signature(FastLanguageModel.from_pretrained).parameters)
    assert {"model_name", "max_seq_length", "dtype", "load_in_4bit", "random_state"} <= params


# ---------------------------------------------------------------- the engine
def test_trained_role_gets_a_fresh_adapter_id_after_every_step_and_frozen_roles_none(tiny_dir, monkeypatch):
    engine, llm, model = _engine(tiny_dir, monkeypatch)
    first = engine.policy.generate([ASK])
    again = engine.policy.generate([ASK])  # no step in between: same version, same id
    base = engine.frozen.generate([ASK])
    with torch.no_grad():  # an optimiser step: the adapter changes in place
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn_like(p))
    after = engine.policy.generate([ASK])
    ids = [c[0] for c in llm.calls]
    assert ids[0] == ids[1] and ids[2] is None and ids[3] > ids[0]
    assert llm.removed == [ids[0]] and not Path(engine.folder / "v1").exists()  # the old version is gone
    assert llm.stale_served == 0
    assert [g.token_ids for g in first] == [g.token_ids for g in again]  # per-sample seeds reproduce
    assert [g.token_ids for g in after] != [g.token_ids for g in first]  # the new weights are served
    # frozen = the base model: the same tokens as the fake with no adapter at all
    plain = fake_vllm.LLM(str(tiny_dir), dtype="float32", max_model_len=64)
    from workbench.models.vllm import VLLMBackend

    assert [g.token_ids for g in VLLMBackend(plain, "base").generate([ASK])] == [g.token_ids for g in base]


def test_reusing_an_id_serves_stale_weights_on_the_fake_as_on_vllm(tiny_dir, monkeypatch):
    """What the fresh ids are for: the old code's fixed LoRARequest('adapter', 1, path)."""
    from workbench.models.vllm import VLLMBackend

    engine, llm, model = _engine(tiny_dir, monkeypatch)
    from vllm.lora.request import LoRARequest  # the fake, installed by _engine

    path = engine.folder / "fixed"
    model.save_pretrained(path)
    fixed = VLLMBackend(llm, "fixed", lora=LoRARequest("adapter", 10_000, str(path)))
    before = fixed.generate([ASK])
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn_like(p))
    model.save_pretrained(path)
    assert [g.token_ids for g in fixed.generate([ASK])] == [g.token_ids for g in before]
    assert llm.stale_served == 1


def test_sleep_during_the_loss_pass_and_wake_for_the_next_rollout(tiny_dir, monkeypatch):
    engine, llm, _ = _engine(tiny_dir, monkeypatch, sleep=True)
    engine.policy.generate([ASK])
    engine.before_loss()
    assert llm.asleep
    engine.frozen.generate([ASK])  # wakes it
    assert not llm.asleep


def test_a_prompt_over_max_model_len_fails_alone(tiny_dir, monkeypatch):
    engine, llm, _ = _engine(tiny_dir, monkeypatch)
    long = Request([{"role": "user", "content": "x" * 80}], SamplingParams(max_tokens=4))
    gens = engine.frozen.generate([ASK, long, ASK])
    assert [g.finish_reason for g in gens][2] == "error" and "max_model_len=64" in gens[2].error
    assert gens[0].token_ids and gens[3].token_ids and len(gens) == 5  # n=2 twice + the long one
    near = Request([{"role": "user", "content": "x" * 40}], SamplingParams(max_tokens=50))
    (g,) = engine.frozen.generate([near])  # max_tokens capped at what the context leaves
    assert g.prompt_tokens + g.completion_tokens <= 64


def test_engine_start_failures_are_one_line(tiny_dir, monkeypatch):
    from workbench.models.vllm import memory_share, start_llm

    fake_vllm.install(monkeypatch)
    monkeypatch.setattr(fake_vllm.FakeGPU, "free", 30 * 2**30)
    share = memory_share(0.9, (30 * 2**30, 80 * 2**30))
    assert 0.3 < share < 0.37  # lowered to what is free
    llm = start_llm(str(tiny_dir), gpu_memory_utilization=0.9)
    assert llm.kwargs["gpu_memory_utilization"] == share
    monkeypatch.setattr(fake_vllm.FakeGPU, "free", int(0.5 * 2**30))
    with pytest.raises(ModelLoadError, match=r"0\.5 of 80\.0 GiB free .* free the GPU"):
        start_llm(str(tiny_dir))
    # the engine process dies for another reason: vLLM's RuntimeError becomes a ModelLoadError
    monkeypatch.setattr(fake_vllm.FakeGPU, "free", 70 * 2**30)
    monkeypatch.setattr(fake_vllm.FakeGPU, "total", 70 * 2**30)  # 100% free, but the fake asks for it all
    monkeypatch.setattr("workbench.models.vllm.memory_share", lambda requested, memory, need_gib=0: 1.01)
    with pytest.raises(
        ModelLoadError, match="vLLM's engine did not start .*Engine core initialization failed"
    ):
        start_llm(str(tiny_dir))


def test_our_llm_call_uses_only_real_engine_args(tiny_dir, monkeypatch):
    from workbench.models.vllm import start_llm

    fake_vllm.install(monkeypatch)
    llm = start_llm(str(tiny_dir), max_lora_rank=16, enable_sleep_mode=True, max_model_len=64, seed=3)
    allowed = set(API["vllm"]["LLM.__init__"]["params"]) | set(API["vllm"]["EngineArgs"])
    assert set(llm.kwargs) <= allowed
    assert llm.kwargs["logprobs_mode"] == "processed_logprobs" and llm.kwargs["enable_lora"] is True
    assert {"lora_name", "lora_int_id", "lora_path"} <= set(API["vllm"]["LoRARequest"])
    assert {"n", "temperature", "top_p", "max_tokens", "stop", "seed", "logprobs"} <= set(
        API["vllm"]["SamplingParams"]
    )
    assert API["vllm"]["LLMEngine.remove_lora"]["params"] == ["lora_id"]
    assert API["vllm"]["LLM.sleep"]["params"][0] == "level"


def test_logprob_gap_is_logged_and_stops_the_run_when_too_large():
    from workbench.rl.engine import LogprobGap, LogprobGapError

    gap = LogprobGap()
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    gap.add(
        logp,
        mask,
        [
            [-1.1, -2.0],
            [-0.2],
        ],
    )
    assert gap.stats() == pytest.approx({"logprob_gap_mean": 0.4 / 3, "logprob_gap_max": 0.3})
    gap.check(0.5, "vllm")
    with pytest.raises(LogprobGapError, match=r"vllm rollout engine's .* 0\.133 nats .*\(max 0\.300\)"):
        gap.check(0.1, "vllm")
    empty = LogprobGap()
    empty.add(logp, mask, [None, [-0.1, -0.2]])  # no log-probs, or not one per token: skipped
    assert empty.stats() == {}


def test_memory_estimate_of_a_1_5b_model_is_plausible():
    from workbench.rl.engine import estimate_memory

    qwen15 = types.SimpleNamespace(
        hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
        intermediate_size=8960, vocab_size=151936,
    )  # fmt: skip
    est = estimate_memory(
        qwen15, 1_543_714_304, 16, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        seq_len=1024, micro_batch=4, rollout_sequences=64, checkpointing=True,
    )  # fmt: skip
    assert 2.8 < est.weights < 2.9  # 1.54e9 × 2 bytes
    assert 0.25 < est.adapter_and_optimizer < 0.3  # 18.5M LoRA parameters × 16 bytes
    assert 1.7 < est.kv_cache < 1.8  # 64 × 1024 tokens × 28 KiB
    assert 0 < est.activations < 10 and est.training > est.weights


# ---------------------------------------------------------------- refusals before the run folder
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.rollout_engine=vllm"], "train.rollout_engine=vllm needs a CUDA GPU and torch sees none"),
        (["train.use_unsloth=true"], "set train.rollout_engine=vllm"),
        (["train.use_unsloth=true", "train.rollout_engine=vllm"], "train.use_unsloth needs a CUDA GPU"),
        (["train.rollout_engine=tpu"], "train.rollout_engine must be 'hf' or 'vllm'"),
    ],
)
def test_cpu_refusals_write_no_run_folder(tmp_path, overrides, message):
    from workbench.rl.config import TrainConfig
    from workbench.rl.trainer import train

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        train(TrainConfig.load("leader", overrides + [f"out={out}"]), progress=False)
    assert not out.exists()


@pytest.mark.parametrize(
    "overrides, free_gib, message",
    [
        (["lora.rank=600"], 80, "LoRA rank 600 is above vLLM's largest max_lora_rank"),
        ([], 0.6, r"GPU has 0\.6 of 80\.0 GiB free .* free the GPU"),
        (["model.name=smollm2+/tmp/adapter"], 80, "trains an adapter on a base model"),
    ],
)
def test_gpu_refusals_write_no_run_folder(tmp_path, monkeypatch, overrides, free_gib, message):
    from workbench.rl.config import TrainConfig
    from workbench.rl.trainer import train

    fake_vllm.install(monkeypatch)
    monkeypatch.setattr(fake_vllm.FakeGPU, "free", int(free_gib * 2**30))
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        train(
            TrainConfig.load("leader", ["train.rollout_engine=vllm", f"out={out}", *overrides]),
            progress=False,
        )
    assert not out.exists()


def test_cli_refusal_is_one_line_without_a_traceback(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "train", "--recipe", "leader-gpu", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "train.use_unsloth needs a CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def test_neither_unsloth_nor_vllm_is_imported_on_the_cpu_path():
    code = (
        "import sys, workbench.rl.trainer, workbench.rl.engine, workbench.models.vllm\n"
        "from workbench.rl.config import TrainConfig\n"
        "TrainConfig.load('leader-gpu')\n"
        "print(sorted(m for m in ('unsloth', 'unsloth_zoo', 'vllm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- Unsloth's calls
def test_unsloth_gets_the_resolved_name_the_seed_and_max_seq_length(tiny_dir, monkeypatch):
    """_load_unsloth against a stand-in `unsloth` whose two functions check their keywords against
    the real signatures (tests/data/gpu_api.json) and record them."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.rl.policy import LoraSettings, load_policy

    seen = {}

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(**kw):
            assert set(kw) <= set(API["unsloth"]["FastLanguageModel.from_pretrained"]["params"])
            seen["load"] = kw
            return AutoModelForCausalLM.from_pretrained(kw["model_name"]), AutoTokenizer.from_pretrained(
                kw["model_name"]
            )

        @staticmethod
        def get_peft_model(model, **kw):
            assert set(kw) <= set(API["unsloth"]["FastLanguageModel.get_peft_model"]["params"])
            seen["peft"] = kw
            return get_peft_model(
                model, LoraConfig(r=kw["r"], lora_alpha=kw["lora_alpha"], target_modules=kw["target_modules"])
            )

    mod = types.ModuleType("unsloth")
    mod.FastLanguageModel = FastLanguageModel
    monkeypatch.setitem(sys.modules, "unsloth", mod)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    backends = load_policy(
        str(tiny_dir), LoraSettings(rank=4, alpha=8, target_modules=("q_proj", "v_proj")),
        dtype="fp32", use_unsloth=True, max_seq_length=512, seed=17,
    )  # fmt: skip
    assert seen["load"]["model_name"] == str(tiny_dir) and seen["load"]["max_seq_length"] == 512
    assert seen["load"]["random_state"] == 17 and seen["peft"]["random_state"] == 17
    assert seen["peft"]["use_gradient_checkpointing"] == "unsloth" and seen["peft"]["r"] == 4
    assert backends.policy.pad_id == 0 and backends.model is not None
    with pytest.raises(ConfigError, match="rollouts need train.rollout_engine=vllm"):
        backends.policy.generate([ASK])  # never our decode loop on Unsloth's model


def test_model_names_resolve_as_for_every_backend(tiny_dir):
    from workbench.models.loading import embedded_model_dir
    from workbench.models.vllm import model_source

    assert model_source(str(tiny_dir)) == str(tiny_dir)
    assert model_source("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert model_source("smollm2") == str(embedded_model_dir("smollm2"))
    with pytest.raises(ModelLoadError, match="unknown model 'nope'"):
        model_source("nope")


# ---------------------------------------------------------------- the trainer: vLLM path = HF path
@pytest.mark.slow
def test_vllm_engine_path_feeds_the_loss_what_the_hf_path_feeds_it(tmp_path, monkeypatch):
    """Two steps of the leader recipe on the embedded model, once with the transformers loop and
    once through the vLLM engine (the fake: same decode loop, the adapter written to disk after
    every step and read back under a fresh id, frozen roles without LoRA): the same samples,
    rewards, losses, gradients' norms and evaluations; the log-prob gap is logged."""
    from workbench.rl.config import TrainConfig
    from workbench.rl.trainer import train

    tiny = [
        "task.limit=2", "eval.limit=1", "train.questions=1", "train.group=2", "train.max_tokens=8",
        "pool.size=2", "pool.max_tokens=16", "pool.threshold=1.0", "protocol.rounds=1", "protocol.peers=2",
        "train.steps=2", "train.checkpoint_every=1", "model.dtype=fp32", "train.warm_start=0",
    ]  # fmt: skip
    runs = {}
    for engine in ("hf", "vllm"):
        if engine == "vllm":
            fake_vllm.install(monkeypatch)
        cfg = TrainConfig.load(
            "leader", tiny + [f"train.rollout_engine={engine}", f"out={tmp_path / engine}"]
        )
        runs[engine] = train(cfg, progress=False).run_dir
    timing = {"step_s", "rollout_s", "rss_gb", "peak_rss_gb", "wall_s", "latency_s"}

    def lines(run, name):
        rows = [json.loads(x) for x in (run / name).read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in timing} for r in rows]

    hf, vl = runs["hf"], runs["vllm"]
    assert lines(hf, "metrics.jsonl") == lines(vl, "metrics.jsonl")
    assert all("logprob_gap_mean" in r and r["logprob_gap_mean"] < 1e-3 for r in lines(hf, "metrics.jsonl"))
    assert [r["accuracy"] for r in lines(hf, "evals.jsonl")] == [
        r["accuracy"] for r in lines(vl, "evals.jsonl")
    ]

    def episodes(run):  # every message and answer of every episode, training and evaluation
        return [json.dumps([[m["content"] for m in e["messages"]], e["final_answer"], e["correct"], e["reward"], e["meta"]])
                for e in lines(run, "episodes.jsonl")]  # fmt: skip

    assert len(episodes(hf)) == 2 + 2 * 2  # two evaluations of one item, two steps of a group of 2
    assert episodes(hf) == episodes(vl)
    (llm,) = fake_vllm.LLM.instances
    assert llm.stale_served == 0
    ids = [i for call in llm.calls for i in call if i is not None]
    assert len(set(ids)) >= 3  # the initial adapter and one version per optimiser step
    assert any(i is None for call in llm.calls for i in call)  # the frozen peers: no LoRA
