"""A stand-in for the `vllm` package on machines without CUDA, enforcing the real one's contract.

What it enforces, from vLLM 0.32.0's source (the signatures are read from tests/data/gpu_api.json,
which benchmarks/snapshot_gpu_api.py writes from the wheel):

- `LLM(**kwargs)`: every keyword is a parameter of `LLM.__init__` or a field of `EngineArgs`;
  ``max_lora_rank`` is one of `MaxLoRARanks`; ``logprobs_mode`` one of `LogprobsMode`; start-up
  fails like the real engine (``RuntimeError: Engine core initialization failed``) when the free
  GPU memory is below ``gpu_memory_utilization`` × total (vllm/v1/worker/utils.py).
- `LLM.generate(prompts, sampling_params, *, use_tqdm, lora_request, ...)`: a LoRA request
  without ``enable_lora`` is refused; an adapter of rank > ``max_lora_rank`` is refused; a
  prompt of ``max_model_len`` tokens or more fails the whole call (VLLMValidationError, a
  ValueError); a sleeping engine refuses to generate.
- LoRA adapters are cached by ``lora_int_id``, as in vLLM: a request with an id seen before is
  served the weights read the first time, whatever ``lora_path`` holds now. When that happens
  with changed files the fake counts it (``stale_served``) and still serves the old weights, so a
  caller that reuses ids samples from a stale policy, exactly as on the real engine.
- `SamplingParams` accepts only vLLM's fields; `LoRARequest` refuses an id < 1 or an empty path.

What it does instead of CUDA kernels: generation runs our transformers decode loop
(`workbench.models.hf.HFBackend`) on a copy of the model loaded from the folder it was given, the
adapter loaded from ``lora_path`` with peft, each request with its own seed. So the fake samples
what vLLM would sample only in distribution, and what the transformers path samples exactly:
that is what lets a test check that the vLLM engine path feeds the loss what the HF path feeds it.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import sys
import types
from pathlib import Path
from typing import Any

API = json.loads((Path(__file__).parent / "data" / "gpu_api.json").read_text())["vllm"]
DTYPES = {"auto": None, "bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}


class FakeGPU:
    """The GPU the fake engine sees: free and total bytes (tests set them)."""

    free = 80 * 2**30  # an idle 80 GB card
    total = 80 * 2**30


class LoRARequest:
    def __init__(
        self,
        lora_name: str,
        lora_int_id: int,
        lora_path: str = "",
        base_model_name: str | None = None,
        load_inplace: bool = False,
        is_3d_lora_weight: bool = False,
    ):
        if lora_int_id < 1:
            raise ValueError(f"id must be > 0, got {lora_int_id}")
        assert lora_path, "lora_path cannot be empty"
        self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path
        self.load_inplace = load_inplace

    def __eq__(self, other: object) -> bool:  # vLLM compares adapters by name
        return isinstance(other, LoRARequest) and self.lora_name == other.lora_name

    def __hash__(self) -> int:
        return hash(self.lora_name)


class SamplingParams:
    def __init__(self, **kwargs: Any):
        unknown = set(kwargs) - set(API["SamplingParams"])
        if unknown:
            raise TypeError(f"SamplingParams got unexpected keyword(s) {sorted(unknown)}")
        self.n, self.temperature, self.top_p, self.seed = 1, 1.0, 1.0, None
        self.stop, self.max_tokens, self.logprobs = None, 16, None
        for k, v in kwargs.items():
            setattr(self, k, v)


class _Logprob:
    def __init__(self, logprob: float):
        self.logprob = logprob


class _Completion:
    def __init__(self, text, token_ids, logprobs, finish_reason):
        self.text, self.token_ids, self.logprobs, self.finish_reason = (
            text,
            token_ids,
            logprobs,
            finish_reason,
        )


class _RequestOutput:
    def __init__(self, prompt_token_ids, outputs):
        self.prompt_token_ids, self.outputs = prompt_token_ids, outputs


class _Engine:
    """`LLM.llm_engine` (vLLM's v1 LLMEngine): model_config and the LoRA registry."""

    def __init__(self, llm: LLM, max_model_len: int):
        self.llm = llm
        self.model_config = types.SimpleNamespace(max_model_len=max_model_len)

    def remove_lora(self, lora_id: int) -> bool:
        self.llm.removed.append(lora_id)
        return self.llm.adapters.pop(lora_id, None) is not None

    def add_lora(self, lora_request: LoRARequest) -> bool:
        self.llm._adapter(lora_request)
        return True


def _files_hash(path: str) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(path).iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


class LLM:
    instances: list[LLM] = []

    def __init__(self, model: str, **kwargs: Any):
        allowed = set(API["LLM.__init__"]["params"]) | set(API["EngineArgs"])
        unknown = set(kwargs) - allowed
        if unknown:
            raise TypeError(f"LLM got unexpected keyword(s) {sorted(unknown)} (not EngineArgs fields)")
        if "max_lora_rank" in kwargs and kwargs["max_lora_rank"] not in API["MaxLoRARanks"]:
            raise ValueError(f"max_lora_rank={kwargs['max_lora_rank']} is not one of {API['MaxLoRARanks']}")
        if kwargs.get("logprobs_mode", "raw_logprobs") not in API["LogprobsMode"]:
            raise ValueError(f"logprobs_mode={kwargs['logprobs_mode']!r}")
        share = kwargs.get("gpu_memory_utilization", 0.92)
        if FakeGPU.free < share * FakeGPU.total:  # raised in the engine core process, re-raised as this
            raise RuntimeError(
                "Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore_DP0': 1}"
            )
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.kwargs = kwargs
        dtype = DTYPES[kwargs.get("dtype", "auto")]
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.base = AutoModelForCausalLM.from_pretrained(
            model, dtype=getattr(torch, dtype) if dtype else "auto"
        )
        self.peft = None  # the base wrapped with one adapter slot, on the first LoRA request
        self.adapters: dict[int, tuple[str, dict]] = {}  # lora_int_id -> (files hash, weights read then)
        self.calls: list[list[int | None]] = []  # per generate call: the LoRA id of each request
        self.removed: list[int] = []
        self.stale_served = 0
        self.asleep = False
        limit = kwargs.get("max_model_len") or self.base.config.max_position_embeddings
        self.llm_engine = _Engine(self, limit)
        LLM.instances.append(self)

    def get_tokenizer(self):
        return self.tokenizer

    def sleep(self, level: int = 1, mode: str = "abort") -> None:
        if not self.kwargs.get("enable_sleep_mode"):
            raise ValueError("Sleep mode is not enabled in the model config")
        self.asleep = True

    def wake_up(self, tags: list[str] | None = None) -> bool:
        self.asleep = False
        return True

    def _adapter(self, req: LoRARequest) -> dict:
        """The adapter weights for ``req``'s id: read at its first use, cached by id after that."""
        from peft import PeftModel, get_peft_model_state_dict
        from safetensors.torch import load_file

        if not self.kwargs.get("enable_lora"):
            raise ValueError("LoRA is not enabled! Start the engine with enable_lora=True")
        digest = _files_hash(req.lora_path)
        if req.lora_int_id in self.adapters and not req.load_inplace:
            seen, weights = self.adapters[req.lora_int_id]
            self.stale_served += seen != digest
            return weights
        rank = json.loads((Path(req.lora_path) / "adapter_config.json").read_text())["r"]
        if rank > self.kwargs.get("max_lora_rank", 16):
            raise ValueError(
                f"LoRA rank {rank} is greater than max_lora_rank {self.kwargs.get('max_lora_rank', 16)}"
            )
        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.base, req.lora_path)
            weights = {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.peft).items()}
        else:
            weights = load_file(str(Path(req.lora_path) / "adapter_model.safetensors"))
        self.adapters[req.lora_int_id] = (digest, weights)
        return weights

    def generate(
        self,
        prompts,
        sampling_params=None,
        *,
        use_tqdm=True,
        lora_request=None,
        priority=None,
        tokenization_kwargs=None,
        mm_processor_kwargs=None,
    ):
        import contextlib

        from peft import set_peft_model_state_dict

        from workbench.models.base import SamplingParams as Ours
        from workbench.models.hf import HFBackend

        if self.asleep:
            raise RuntimeError("the engine is sleeping; call wake_up() first")
        prompts = prompts if isinstance(prompts, list) else [prompts]
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        limit = self.llm_engine.model_config.max_model_len
        for p in prompts:
            if len(p["prompt_token_ids"]) >= limit:
                raise ValueError(
                    f"The decoder prompt (length {len(p['prompt_token_ids'])}) is longer than the maximum "
                    f"model length of {limit}."
                )
        if isinstance(lora_request, list):
            raise NotImplementedError("the fake takes one LoRARequest (or None) per call")
        self.calls.append([lora_request.lora_int_id if lora_request else None] * len(prompts))
        if lora_request is not None:
            weights = self._adapter(lora_request)  # wraps the base in an adapter slot on first use
            set_peft_model_state_dict(self.peft, weights)
            model, ctx = self.peft, contextlib.nullcontext()
        elif self.peft is not None:
            model, ctx = self.peft, self.peft.disable_adapter()
        else:
            model, ctx = self.base, contextlib.nullcontext()
        backend = HFBackend(model, self.tokenizer, name="fake-vllm", max_batch_size=64)
        ours = [
            (
                p["prompt_token_ids"],
                Ours(
                    temperature=s.temperature,
                    top_p=s.top_p,
                    max_tokens=s.max_tokens,
                    stop=tuple(s.stop or ()),
                    seed=s.seed,
                    logprobs=s.logprobs is not None,
                ),
            )
            for p, s in zip(prompts, params, strict=True)
        ]
        with ctx:
            gens = backend.generate_from_ids(ours)
        return [
            _RequestOutput(
                list(p["prompt_token_ids"]),
                [
                    _Completion(
                        g.text,
                        list(g.token_ids),
                        [{t: _Logprob(lp)} for t, lp in zip(g.token_ids, g.logprobs, strict=True)]
                        if g.logprobs is not None
                        else None,
                        g.finish_reason,
                    )
                ],
            )
            for p, g in zip(prompts, gens, strict=True)
        ]


def install(monkeypatch) -> types.ModuleType:
    """Put the fake `vllm` (vllm, vllm.lora, vllm.lora.request) in sys.modules for this test."""
    root = types.ModuleType("vllm")
    root.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    root.LLM, root.SamplingParams, root.__version__ = LLM, SamplingParams, API["version"] + "+fake"
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    root.lora, lora.request = lora, request
    for name, mod in (("vllm", root), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, mod)
    import workbench.models.vllm as V

    monkeypatch.setattr(V, "cuda_memory", lambda: (FakeGPU.free, FakeGPU.total))
    LLM.instances.clear()
    return root
