"""vLLM backend for CUDA machines: offline batched `LLM.generate`, LoRA adapters, sampled log-probs.

    backend = load_backend("vllm:Qwen/Qwen2.5-1.5B-Instruct")             # needs pip install -e ".[gpu]"
    backend = load_backend("vllm:Qwen/Qwen2.5-1.5B-Instruct+runs/leader/adapter")

`vllm` is imported only here, only when a ``vllm:`` spec is loaded or training asks for
``train.rollout_engine=vllm`` (workbench/rl/engine.py); on a machine without CUDA or without
vllm, loading raises `ModelLoadError` saying which and what to do.

Written against vLLM 0.32.0 (the pin of requirements-gpu.txt; tests/data/gpu_api.json holds the
signatures we call, read from its wheel, and tests/test_gpu_contract.py checks our calls against
them). How it matches the other backends:

- Prompts are templated with the model's own chat template (``tokenizer.apply_chat_template``)
  and passed as token ids, so prompt token ids are exactly what the transformers backend builds.
- A request with ``sampling.n = k`` becomes k vLLM requests with ``n = 1`` and seeds
  ``seed + j`` (the `SamplingParams.seed` contract); they share the prompt's KV blocks through
  vLLM's prefix cache, so this costs little.
- Log-probs: vLLM returns, by default, log-probs of the raw logits (before temperature). We start
  the engine with ``logprobs_mode="processed_logprobs"``, i.e. after temperature and top-p; with
  top_p = 1 that is our convention, log_softmax(logits / T) (the transformers backend's). With
  top_p < 1 vLLM renormalises over the kept tokens; the transformers backend does not.
- LoRA: vLLM caches an adapter by its integer id (`LoRARequest.lora_int_id`; "must be globally
  unique for a given adapter", not enforced by vLLM): a request with an id it has seen is served
  the weights loaded the first time, whatever ``lora_path`` holds now. Every adapter version
  therefore gets a fresh id (`fresh_lora_request`); requests without an adapter carry none.
- ``max_lora_rank`` must be one of vLLM's accepted values (`VLLM_LORA_RANKS`); an adapter of
  rank r needs ``max_lora_rank >= r``.
- A prompt longer than the engine's ``max_model_len`` fails vLLM's whole ``generate`` call; here
  it becomes one ``finish_reason="error"`` generation naming the lengths, and the others run.
  ``max_tokens`` is capped at what the context leaves after the prompt.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

from workbench.models.base import Generation, Request, SamplingParams
from workbench.models.loading import EMBEDDED, ModelLoadError, ModelSpec, embedded_model_dir

INSTALL = 'pip install -e ".[gpu]" on a machine with an NVIDIA GPU and CUDA'
VLLM_DTYPES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# vllm/config/lora.py: MaxLoRARanks = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512] (vLLM 0.32.0)
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
GIB = 2**30
# what vLLM needs beyond the share it is given to start at all (CUDA context, cuda graphs, sampler)
STARTUP_RESERVE_GIB = 1.0

_LORA_IDS = itertools.count(1)  # process-wide: no two adapter versions ever share an id


def cuda_memory() -> tuple[int, int] | None:
    """(free, total) bytes of the current CUDA device, or None when torch sees no CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return int(free), int(total)


def require_vllm() -> None:
    """Raise `ModelLoadError` unless this machine has a CUDA GPU and the vllm package."""
    if cuda_memory() is None:
        raise ModelLoadError(
            "the vLLM backend needs a CUDA GPU, and torch sees none on this machine "
            "(torch.cuda.is_available() is False); use the transformers backend (--model smollm2, "
            f"org/name or a path, without 'vllm:') here, or run on a GPU machine after {INSTALL}"
        )
    if importlib.util.find_spec("vllm") is None:
        raise ModelLoadError(f"the vLLM backend needs the 'vllm' package; install it with: {INSTALL}")


def check_max_lora_rank(max_lora_rank: int, adapter_rank: int | None = None) -> None:
    """``max_lora_rank`` must be one of vLLM's values and hold the adapter's rank."""
    if max_lora_rank not in VLLM_LORA_RANKS:
        fit = lora_rank_slot(max_lora_rank) if max_lora_rank <= VLLM_LORA_RANKS[-1] else None
        raise ModelLoadError(
            f"max_lora_rank={max_lora_rank} is not one vLLM accepts ({', '.join(map(str, VLLM_LORA_RANKS))})"
            + (f"; set model.max_lora_rank={fit}" if fit else "; use a LoRA rank <= 512")
        )
    if adapter_rank is not None and adapter_rank > max_lora_rank:
        raise ModelLoadError(
            f"the adapter has rank {adapter_rank} > max_lora_rank={max_lora_rank}; "
            f"set model.max_lora_rank={lora_rank_slot(adapter_rank)}"
        )


def lora_rank_slot(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds an adapter of rank ``rank``."""
    for slot in VLLM_LORA_RANKS:
        if slot >= rank:
            return slot
    raise ModelLoadError(
        f"LoRA rank {rank} is above vLLM's largest max_lora_rank ({VLLM_LORA_RANKS[-1]}); use lora.rank <= 512"
    )


def fresh_lora_request(name: str, path: str | Path):
    """A `LoRARequest` for the adapter in ``path`` with an id no earlier adapter had."""
    from vllm.lora.request import LoRARequest

    return LoRARequest(lora_name=name, lora_int_id=next(_LORA_IDS), lora_path=str(path))


def memory_share(requested: float, memory: tuple[int, int], need_gib: float = 0.0) -> float:
    """The share of the GPU vLLM may reserve: ``requested``, or less when the GPU is partly in use.

    vLLM refuses to start unless free memory >= share × total (vllm/v1/worker/utils.py). ``need_gib``:
    what vLLM needs at least (weights + a little KV cache). Raises `ModelLoadError` naming the free
    memory and the fix when even that does not fit.
    """
    free, total = memory
    available = (free - STARTUP_RESERVE_GIB * GIB) / total
    share = min(requested, round(available - 0.005, 3))
    if share <= 0 or share * total < need_gib * GIB:
        raise ModelLoadError(
            f"the GPU has {free / GIB:.1f} of {total / GIB:.1f} GiB free (another process holds the rest), "
            f"too little for vLLM (needs ~{need_gib + STARTUP_RESERVE_GIB:.1f} GiB): free the GPU "
            "(nvidia-smi shows who holds it) or use a smaller model / model.max_model_len"
        )
    return share


def start_llm(
    source: str,
    *,
    dtype: str = "auto",
    gpu_memory_utilization: float = 0.9,
    max_model_len: int = 0,
    max_lora_rank: int = 0,
    enable_sleep_mode: bool = False,
    seed: int = 0,
    need_gib: float = 0.0,
):
    """A `vllm.LLM` for ``source`` (a local folder or hub id), LoRA enabled when ``max_lora_rank``.

    Every failure to start is a `ModelLoadError` with the cause and the fix: the share is checked
    against the GPU's free memory first (`memory_share`); vLLM's own start-up failures (raised as
    ``RuntimeError: Engine core initialization failed`` from its engine process) are translated.
    """
    require_vllm()
    if dtype not in VLLM_DTYPES:
        raise ModelLoadError(f"unknown dtype '{dtype}'; use one of {', '.join(VLLM_DTYPES)}")
    if not 0 < gpu_memory_utilization <= 1:
        raise ModelLoadError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    if max_lora_rank:
        check_max_lora_rank(max_lora_rank)
    memory = cuda_memory()
    assert memory is not None  # require_vllm checked
    share = memory_share(gpu_memory_utilization, memory, need_gib)
    from vllm import LLM

    kwargs: dict[str, Any] = {
        "model": source,
        "dtype": VLLM_DTYPES[dtype],
        "gpu_memory_utilization": share,
        "logprobs_mode": "processed_logprobs",
        "seed": seed,
    }
    if max_model_len:
        kwargs["max_model_len"] = max_model_len
    if max_lora_rank:
        kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=1)
    if enable_sleep_mode:
        kwargs["enable_sleep_mode"] = True
    try:
        return LLM(**kwargs)
    except (OSError, ValueError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Engine core initialization failed" in first or "memory" in first.lower():
            free, total = cuda_memory() or memory
            raise ModelLoadError(
                f"vLLM's engine did not start for '{source}' ({first[:160]}); with "
                f"gpu_memory_utilization={share} and {free / GIB:.1f} of {total / GIB:.1f} GiB free, the "
                "usual causes are a GPU partly in use (free it) or a KV cache that does not fit "
                "(lower model.max_model_len); vLLM's log above names the root cause"
            ) from e
        raise ModelLoadError(f"vLLM could not load '{source}': {first}") from e


def engine_max_model_len(llm) -> int | None:
    """The context length the engine was started with (vLLM's LLMEngine.model_config)."""
    try:
        return int(llm.llm_engine.model_config.max_model_len)
    except (AttributeError, TypeError, ValueError):
        return None


class VLLMBackend:
    """A `vllm.LLM` answering chat requests in one offline batch per `generate` call.

    llm: a `vllm.LLM` (started with LoRA enabled when an adapter is used).
    lora: the `LoRARequest` every request carries, a callable giving the current one (training:
    a new adapter version after each optimiser step), or None (the base model).
    """

    def __init__(self, llm: Any, name: str, lora: Any = None):
        self.llm = llm
        self.name = name
        self.tokenizer = llm.get_tokenizer()
        self._lora = lora
        self.max_model_len = engine_max_model_len(llm)

    @property
    def lora(self):
        return self._lora() if callable(self._lora) else self._lora

    def encode_chat(self, messages) -> list[int]:
        prompt = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=False
        )
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def generate(self, requests: list[Request]) -> list[Generation]:
        return self.generate_from_ids([(self.encode_chat(req.messages), req.sampling) for req in requests])

    def generate_from_ids(self, prompts: list[tuple[list[int], SamplingParams]]) -> list[Generation]:
        """Like ``generate``, from token ids (the trainer's forced starts of a reply)."""
        from vllm import SamplingParams as VSamplingParams

        # ---- one vLLM request per sample: (prompt ids, sampling params); too-long prompts set aside ----
        limit = self.max_model_len
        gens: list[Generation | None] = []
        send, params, where = [], [], []
        for ids, s in prompts:
            for j in range(s.n):
                if limit is not None and len(ids) >= limit:
                    gens.append(_too_long(ids, limit))
                    continue
                where.append(len(gens))
                gens.append(None)
                send.append({"prompt_token_ids": list(ids)})
                params.append(
                    VSamplingParams(
                        n=1,
                        temperature=s.temperature,
                        top_p=s.top_p,
                        max_tokens=min(s.max_tokens, limit - len(ids)) if limit else s.max_tokens,
                        stop=list(s.stop) or None,
                        seed=(s.seed + j) % 2**63 if s.seed is not None else None,
                        logprobs=0 if s.logprobs else None,  # 0: only the sampled token's log-prob
                    )
                )
        if not send:
            return [g for g in gens if g is not None]
        # ---- generate all of them in one engine run ----
        lora = self.lora
        t0 = time.perf_counter()
        outputs = self.llm.generate(send, params, use_tqdm=False, lora_request=lora)
        latency = time.perf_counter() - t0
        # ---- back to Generations, in order ----
        for at, out, p in zip(where, outputs, params, strict=True):
            c = out.outputs[0]
            token_ids = list(c.token_ids)
            logprobs = None
            if p.logprobs is not None and c.logprobs is not None:
                logprobs = [
                    float(step[tok].logprob) for step, tok in zip(c.logprobs, token_ids, strict=False)
                ]
            gens[at] = Generation(
                text=c.text,
                token_ids=token_ids,
                prompt_tokens=len(out.prompt_token_ids),
                completion_tokens=len(token_ids),
                finish_reason=c.finish_reason or "stop",
                latency_s=latency,
                logprobs=logprobs,
                prompt_ids=list(out.prompt_token_ids),
            )
        return [g for g in gens if g is not None]


def _too_long(ids: list[int], limit: int) -> Generation:
    return Generation(
        text="",
        token_ids=[],
        prompt_tokens=len(ids),
        completion_tokens=0,
        finish_reason="error",
        latency_s=0.0,
        prompt_ids=list(ids),
        error=f"prompt of {len(ids)} tokens does not fit max_model_len={limit}; raise model.max_model_len",
    )


def _adapter_rank(adapter: str) -> int | None:
    try:
        return int(json.loads((Path(adapter) / "adapter_config.json").read_text())["r"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def model_source(base: str) -> str:
    """What vLLM (or Unsloth) loads for a model name: the embedded model's converted folder, a
    local folder, or a hub id, resolved as the transformers backend resolves it."""
    if base in EMBEDDED:
        return str(embedded_model_dir(base))
    path = os.path.expanduser(base)
    if os.path.isdir(path):
        return path
    if base.count("/") == 1 and not base.startswith((".", "/")):
        return base
    raise ModelLoadError(
        f"unknown model '{base}': not an embedded model ({', '.join(EMBEDDED)}), an existing directory, "
        "or a Hugging Face id of the form org/name"
    )


def load_vllm_backend(
    spec: str,
    dtype: str = "auto",
    gpu_memory_utilization: float = 0.9,
    max_model_len: int = 0,
    max_lora_rank: int = 64,
) -> VLLMBackend:
    """Load ``vllm:MODEL[+ADAPTER_DIR]`` (MODEL: ``smollm2``, a hub id or a local path) into vLLM.

    gpu_memory_utilization: share of the GPU's memory vLLM may take (weights + KV cache); lowered
    to what is free when the GPU is partly in use.
    max_model_len: context length cap; 0 = the model's own (lower it if the KV cache does not fit).
    max_lora_rank: the largest adapter rank vLLM reserves room for: one of `VLLM_LORA_RANKS`,
    >= the adapter's ``r``.
    """
    ms = ModelSpec.parse(spec.removeprefix("vllm:"))
    if dtype not in VLLM_DTYPES:
        raise ModelLoadError(f"unknown dtype '{dtype}'; use one of {', '.join(VLLM_DTYPES)}")
    if not 0 < gpu_memory_utilization <= 1:
        raise ModelLoadError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    adapter = os.path.expanduser(ms.adapter) if ms.adapter else None
    if adapter is not None:
        if not os.path.isdir(adapter):
            raise ModelLoadError(
                f"LoRA adapter directory '{ms.adapter}' does not exist (spec: vllm:BASE+ADAPTER_DIR)"
            )
        check_max_lora_rank(max_lora_rank, _adapter_rank(adapter))
    require_vllm()
    source = model_source(ms.base)
    llm = start_llm(
        source,
        dtype=dtype,
        gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len,
        max_lora_rank=max_lora_rank if adapter else 0,
    )
    lora = fresh_lora_request("adapter", adapter) if adapter else None
    return VLLMBackend(llm, name=spec, lora=lora)
