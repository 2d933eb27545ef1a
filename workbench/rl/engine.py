"""The rollout engine the trainer samples from: our transformers loop (``hf``) or vLLM (``vllm``).

    train.rollout_engine=hf     # default; CPU or GPU: the decode loop of models/hf.py on the trained model
    train.rollout_engine=vllm   # CUDA: one vLLM engine on the same GPU as the trained model

Both give the trainer a `PolicyBackends`: ``policy`` samples the trained role (adapter on),
``frozen`` every other role (adapter off), ``model`` is the model the loss is computed on. With
``vllm``:

- One `vllm.LLM` with LoRA enabled and a memory share set by the preflight below (vLLM refuses
  to start unless that share is free, so the share is what is left after training's own peak).
- The trained role's requests carry a `LoRARequest` for the current adapter version; frozen
  roles' carry none (the base model). After every optimiser step, the first request for the
  trained role writes the adapter to a RAM folder (/dev/shm) under a fresh ``lora_int_id`` (vLLM
  caches adapters by id: a reused id would keep serving the old weights) and removes the
  previous version from the engine and the disk. A step is detected by the trainable tensors'
  version counters (torch bumps them on every in-place update: optimiser steps, checkpoint
  loads), so resume and warm-start steps sync too, without a call in the trainer.
- ``train.vllm_sleep``: the engine sleeps (level 1: weights to CPU, KV cache dropped) during the
  loss pass and wakes for the next rollout, so training can use the memory the KV cache held.
- Log-probs for the loss are always recomputed by the trainer (policy.completion_logprobs);
  `LogprobGap` logs the gap between the engine's sampling log-probs and the trainer's, every
  step (``logprob_gap_mean``, ``logprob_gap_max`` in metrics.jsonl), and stops the run when the
  mean exceeds ``train.max_logprob_gap``: the engine is then not sampling the policy being trained.

`check_engine` refuses, with one line naming the cause and the fix and before any run folder is
written: vllm or Unsloth on a machine without CUDA or without the package, Unsloth with the
transformers rollout loop (its patched forward is not one our decode loop can drive), a LoRA rank
vLLM cannot hold, a GPU too full for the engine.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.config import ConfigError
from workbench.models.base import Generation, Request, SamplingParams
from workbench.models.loading import ModelLoadError, ModelSpec

ENGINES = ("hf", "vllm")
GIB = 2**30


class LogprobGapError(ConfigError):
    """The rollout engine's sampling log-probs are too far from the trainer's: stop the run."""


# ---------------------------------------------------------------- checks before the run folder
def check_engine(cfg) -> None:
    """Refuse a training config this machine cannot run, in one line (cause and fix)."""
    t = cfg.train
    if t.use_unsloth and t.rollout_engine != "vllm":
        raise ConfigError(
            "train.use_unsloth=true: Unsloth replaces the model's forward with one our transformers "
            "decode loop cannot sample from; set train.rollout_engine=vllm (rollouts in vLLM, Unsloth for the loss)"
        )
    if t.use_unsloth:
        from workbench.models import vllm as V

        if V.cuda_memory() is None:
            raise ConfigError(
                "train.use_unsloth needs a CUDA GPU (Unsloth's kernels are CUDA-only) and torch sees none; "
                "on CPU set train.use_unsloth=false train.rollout_engine=hf: the same loop runs with transformers + peft"
            )
        import importlib.util

        if importlib.util.find_spec("unsloth") is None:
            raise ConfigError(
                "train.use_unsloth: the 'unsloth' package is not installed; make setup-gpu "
                "(or pip install -r requirements-gpu.txt), or set train.use_unsloth=false"
            )
    if t.rollout_engine == "vllm":
        from workbench.models import vllm as V

        if V.cuda_memory() is None:
            raise ConfigError(
                "train.rollout_engine=vllm needs a CUDA GPU and torch sees none; on CPU use "
                "train.rollout_engine=hf (the default)"
            )
        try:
            V.require_vllm()
            V.lora_rank_slot(cfg.lora.rank)
        except ModelLoadError as e:
            raise ConfigError(f"train.rollout_engine=vllm: {e}") from e
        spec = ModelSpec.parse(cfg.model.name)
        if spec.adapter or ":" in spec.base.split("/")[0]:
            raise ConfigError(
                f"train.rollout_engine=vllm trains an adapter on a base model; model.name={cfg.model.name!r} "
                "is not one (no +ADAPTER, openai: or vllm: prefix)"
            )
        # the GPU must hold two copies of the weights (trained model + engine) and vLLM's start-up
        weights = 2 * _weights_gib(spec.base)
        try:
            V.memory_share(cfg.model.gpu_memory_utilization, V.cuda_memory(), need_gib=weights)
        except ModelLoadError as e:
            raise ConfigError(f"train.rollout_engine=vllm: {e}") from e


def _weights_gib(base: str) -> float:
    """Size of a local model's weight files (GiB); 0 for a hub id (not known before download)."""
    from workbench.models.loading import EMBEDDED

    if base in EMBEDDED:
        return 0.3  # the embedded 135M model in bf16 and its converted fp32 copy: well under this
    path = Path(os.path.expanduser(base))
    if not path.is_dir():
        return 0.0
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) / GIB


# ---------------------------------------------------------------- the log-prob gap
class LogprobGap:
    """|sampling log-prob − trainer log-prob| over a step's sampled tokens: mean and max."""

    def __init__(self) -> None:
        self.total, self.count, self.max = 0.0, 0, 0.0

    def add(self, logp: torch.Tensor, mask: torch.Tensor, sampled: list[list[float] | None]) -> None:
        """``logp``/``mask``: the trainer's (B, T) scores; ``sampled``: each sample's engine log-probs."""
        with torch.no_grad():
            for b, lps in enumerate(sampled):
                n = int(mask[b].sum())
                if not lps or len(lps) != n:
                    continue
                gap = (logp[b, :n].detach().float().cpu() - torch.tensor(lps, dtype=torch.float32)).abs()
                self.total += float(gap.sum())
                self.count += n
                self.max = max(self.max, float(gap.max()))

    def stats(self) -> dict[str, float]:
        if not self.count:
            return {}
        return {"logprob_gap_mean": self.total / self.count, "logprob_gap_max": self.max}

    def check(self, limit: float, engine: str) -> None:
        """Raise `LogprobGapError` when the mean gap exceeds ``limit`` (0 disables the check)."""
        if limit and self.count and self.total / self.count > limit:
            raise LogprobGapError(
                f"the {engine} rollout engine's sampling log-probs differ from the trainer's by "
                f"{self.total / self.count:.3f} nats per token on average (max {self.max:.3f}) > "
                f"train.max_logprob_gap={limit}: the samples are not from the policy being trained "
                "(a stale adapter, another dtype or temperature); check the engine, or raise the limit"
            )


# ---------------------------------------------------------------- memory
@dataclass(frozen=True)
class MemoryEstimate:
    """GiB, estimated from the model's shape (not measured): see `estimate_memory`."""

    weights: float
    adapter_and_optimizer: float
    kv_cache: float
    activations: float

    @property
    def training(self) -> float:
        return self.weights + self.adapter_and_optimizer + self.activations

    def as_dict(self) -> dict[str, float]:
        return {
            "weights_gib": round(self.weights, 2),
            "adapter_and_optimizer_gib": round(self.adapter_and_optimizer, 2),
            "kv_cache_gib": round(self.kv_cache, 2),
            "activations_gib": round(self.activations, 2),
        }


def estimate_memory(
    config,
    n_params: int,
    lora_rank: int,
    target_modules: tuple[str, ...],
    *,
    seq_len: int,
    micro_batch: int,
    rollout_sequences: int,
    dtype_bytes: int = 2,
    checkpointing: bool = False,
    chunk_tokens: int = 1024,
) -> MemoryEstimate:
    """A first-order estimate, GiB, from a transformers config (hidden_size, layers, heads, vocab).

    weights: n_params × dtype bytes (vLLM holds a second copy). adapter_and_optimizer: LoRA
    parameters (r × (in + out) per target projection per layer) × 16 bytes (fp32 weight, grad,
    two AdamW moments). kv_cache: rollout_sequences × seq_len × 2 × layers × kv_heads × head_dim
    × bytes. activations (the loss pass of the longest micro-batch): per layer and token
    ~(16·hidden + 3·intermediate) × bytes kept for backward (one layer's worth plus a hidden
    state per layer with gradient checkpointing), plus the fp32 logits of one chunk (×3).
    """
    h, layers = config.hidden_size, config.num_hidden_layers
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    inter = getattr(config, "intermediate_size", 4 * h)
    sizes = {
        "q_proj": (h, heads * head_dim),
        "k_proj": (h, kv_heads * head_dim),
        "v_proj": (h, kv_heads * head_dim),
        "o_proj": (heads * head_dim, h),
        "gate_proj": (h, inter),
        "up_proj": (h, inter),
        "down_proj": (inter, h),
    }
    lora_params = layers * sum(lora_rank * sum(sizes.get(m, (h, h))) for m in target_modules)
    tokens = micro_batch * seq_len
    per_layer = tokens * (16 * h + 3 * inter) * dtype_bytes
    kept = per_layer + layers * tokens * h * dtype_bytes if checkpointing else layers * per_layer
    logits = 3 * min(chunk_tokens, tokens) * config.vocab_size * 4
    kv = rollout_sequences * seq_len * 2 * layers * kv_heads * head_dim * dtype_bytes
    return MemoryEstimate(
        weights=n_params * dtype_bytes / GIB,
        adapter_and_optimizer=lora_params * 16 / GIB,
        kv_cache=kv / GIB,
        activations=(kept + logits) / GIB,
    )


def run_longest_sample(
    model, pad_id: int, seq_len: int, micro_batch: int, temperature: float
) -> float | None:
    """Forward + backward of ``micro_batch`` sequences of ``seq_len`` tokens (half prompt, half
    completion) through the trainer's loss path before the first step: an OOM shows up now, not
    at step 37. Returns the peak GPU memory it took (GiB; None on CPU). Gradients are cleared."""
    from workbench.rl.policy import completion_logprobs

    device = next(model.parameters()).device
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats()
    half = max(1, seq_len // 2)
    prompts = [[pad_id + 1] * half for _ in range(micro_batch)]
    completions = [[pad_id + 1] * max(1, seq_len - half) for _ in range(micro_batch)]
    model.train()
    scores = completion_logprobs(
        model, prompts, completions, temperature=temperature, pad_id=pad_id, share_prompts=False
    )
    (scores.logp * scores.mask).sum().backward()
    model.zero_grad(set_to_none=True)
    model.eval()
    peak = torch.cuda.max_memory_allocated() / GIB
    del scores
    torch.cuda.empty_cache()
    return peak


# ---------------------------------------------------------------- the vLLM engine
def _ram_dir() -> Path:
    """A folder in RAM for adapter versions (/dev/shm when writable), removed at exit."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="workbench-lora-", dir=base))
    atexit.register(shutil.rmtree, path, True)
    return path


def _trainable_version(model) -> int:
    """Changes whenever a trainable tensor is updated in place (optimiser step, state-dict load)."""
    return sum(p._version for p in model.parameters() if p.requires_grad)


class _PolicyOnVLLM:
    """The trained role on vLLM: a `VLLMBackend` whose requests carry the current adapter, plus
    what the trainer reads from ``backends.policy`` (the model the loss runs on, pad id)."""

    def __init__(self, engine: VLLMRolloutEngine, backend, model, pad_id: int):
        self.engine, self.backend, self.model, self.pad_id = engine, backend, model, pad_id
        self.tokenizer = backend.tokenizer
        self.name = backend.name

    def encode_chat(self, messages) -> list[int]:
        return self.backend.encode_chat(messages)

    def generate(self, requests: list[Request]) -> list[Generation]:
        self.engine.ready()
        return self.backend.generate(requests)

    def generate_from_ids(self, prompts: list[tuple[list[int], SamplingParams]]) -> list[Generation]:
        self.engine.ready()
        return self.backend.generate_from_ids(prompts)


class _FrozenOnVLLM:
    """Every other role: the same engine, no LoRA request (the base model)."""

    def __init__(self, engine: VLLMRolloutEngine, backend):
        self.engine, self.backend = engine, backend
        self.name = f"{backend.name} (frozen base)"

    def generate(self, requests: list[Request]) -> list[Generation]:
        self.engine.ready(sync=False)
        return self.backend.generate(requests)


class VLLMRolloutEngine:
    """One `vllm.LLM` shared by the trained role (current adapter) and the frozen roles (none)."""

    def __init__(self, llm, model, pad_id: int, name: str, sleep: bool = False, folder: Path | None = None):
        from workbench.models.vllm import VLLMBackend

        self.llm, self.model, self.sleep_between = llm, model, sleep
        self.folder = folder or _ram_dir()
        self.current = None  # the LoRARequest of the adapter version the engine serves
        self.versions = 0
        self._synced_at: int | None = None
        self.asleep = False
        self.policy = _PolicyOnVLLM(self, VLLMBackend(llm, name, lora=lambda: self.current), model, pad_id)
        self.frozen = _FrozenOnVLLM(self, VLLMBackend(llm, name, lora=None))

    def ready(self, sync: bool = True) -> None:
        """Before sampling: awake, and (for the trained role) serving the model's current adapter."""
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False
        if sync and self._synced_at != _trainable_version(self.model):
            self.publish()

    def publish(self) -> None:
        """Write the adapter as a new version with a fresh id; drop the previous one."""
        from workbench.models.vllm import fresh_lora_request

        self.versions += 1
        path = self.folder / f"v{self.versions}"
        self.model.save_pretrained(path)
        previous, self.current = self.current, fresh_lora_request(f"policy-v{self.versions}", path)
        self._synced_at = _trainable_version(self.model)
        if previous is not None:
            self.llm.llm_engine.remove_lora(previous.lora_int_id)
            shutil.rmtree(previous.lora_path, ignore_errors=True)

    def before_loss(self) -> None:
        """The loss pass is next: free the engine's GPU memory if ``train.vllm_sleep``."""
        if self.sleep_between and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _vllm_dtype(model) -> str:
    dtype = next(model.parameters()).dtype
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]


def open_rollout_engine(cfg, backends):
    """``backends`` as loaded (transformers/peft or Unsloth), or, with ``train.rollout_engine=vllm``,
    the same model for the loss and a vLLM engine for every rollout."""
    from workbench.rl.policy import PolicyBackends

    t = cfg.train
    if t.rollout_engine == "hf":
        return backends
    from workbench.models import vllm as V

    model, pad_id = backends.model, backends.policy.pad_id
    seq_len = cfg.model.max_model_len or t.max_seq_length
    # ---- memory: estimate, run the longest micro-batch, give vLLM what is left ----
    n_params = sum(p.numel() for p in model.parameters())
    est = estimate_memory(
        model.config,
        n_params,
        cfg.lora.rank,
        cfg.lora.target_modules,
        seq_len=seq_len,
        micro_batch=t.micro_batch,
        rollout_sequences=t.questions * t.group,
        dtype_bytes=next(model.parameters()).element_size(),
        checkpointing=t.use_unsloth,
    )
    peak = run_longest_sample(model, pad_id, seq_len, t.micro_batch, t.temperature)
    memory = V.cuda_memory()
    requested = cfg.model.gpu_memory_utilization
    if memory is not None:
        free, total = memory
        training = (peak if peak is not None else est.training) * GIB
        held = 0 if t.vllm_sleep else training  # asleep during the loss pass, vLLM's memory is free
        requested = min(requested, max(0.01, (free - held) / total))
    need = est.weights + 0.25 + est.kv_cache / max(1, t.questions * t.group)  # weights + one sequence's KV
    print(
        f"[train] memory (estimated, GiB): {est.as_dict()}; longest micro-batch measured: "
        f"{'n/a (CPU)' if peak is None else f'{peak:.2f} GiB'}; vLLM share asked: {requested:.3f}",
        flush=True,
    )
    source = V.model_source(ModelSpec.parse(cfg.model.name).base)
    llm = V.start_llm(
        source,
        dtype=_vllm_dtype(model),
        gpu_memory_utilization=requested,
        max_model_len=seq_len,
        max_lora_rank=V.lora_rank_slot(cfg.lora.rank),
        enable_sleep_mode=t.vllm_sleep,
        seed=t.seed,
        need_gib=need,
    )
    engine = VLLMRolloutEngine(llm, model, pad_id, name=f"vllm:{cfg.model.name}+lora", sleep=t.vllm_sleep)
    return PolicyBackends(engine.policy, engine.frozen, engine=engine)


def gpu_memory_now() -> dict[str, float]:
    """This process's peak allocation since the last call and the device's memory in use (vLLM's
    engine process included), GiB; empty without CUDA."""
    if not torch.cuda.is_available():
        return {}
    free, total = torch.cuda.mem_get_info()
    out = {
        "gpu_peak_gb": round(torch.cuda.max_memory_allocated() / GIB, 2),
        "gpu_used_gb": round((total - free) / GIB, 2),
    }
    torch.cuda.reset_peak_memory_stats()
    return out
