"""Write the call signatures of the vLLM and Unsloth APIs we use to tests/data/gpu_api.json.

    python benchmarks/snapshot_gpu_api.py /tmp/vllm-0.32.0-...whl /tmp/unsloth-2026.10.9-...whl

Reads the source files inside the wheels with `ast` (nothing is imported or installed), so it
runs on a machine without CUDA. tests/test_gpu_contract.py checks the fake vLLM engine and our
calls against this snapshot; when vllm/unsloth are importable it checks the live signatures too.
Regenerate it when the pins in requirements-gpu.txt move.
"""

from __future__ import annotations

import ast
import json
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "gpu_api.json"


def _source(whl: zipfile.ZipFile, path: str) -> ast.Module:
    return ast.parse(whl.read(path).decode("utf-8"))


def _class(tree: ast.Module, name: str) -> ast.ClassDef:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise KeyError(f"class {name} not found")


def _method(cls: ast.ClassDef, name: str) -> ast.FunctionDef:
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise KeyError(f"{cls.name}.{name} not found")


def _params(fn: ast.FunctionDef) -> dict:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
    return {"params": names, "var_keyword": a.kwarg is not None}


def _fields(cls: ast.ClassDef) -> list[str]:
    return [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]


def _literal(tree: ast.Module, name: str) -> list:
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if isinstance(node, ast.Assign | ast.AnnAssign) and any(
            isinstance(t, ast.Name) and t.id == name for t in targets
        ):
            sub = node.value
            if isinstance(sub, ast.Subscript):  # Literal[...]
                elts = sub.slice.elts if isinstance(sub.slice, ast.Tuple) else [sub.slice]
                return [ast.literal_eval(e) for e in elts]
    raise KeyError(name)


def vllm_api(path: str) -> dict:
    with zipfile.ZipFile(path) as whl:
        version = whl.read("vllm/_version.py").decode()
        llm = _class(_source(whl, "vllm/entrypoints/llm.py"), "LLM")
        engine = _class(_source(whl, "vllm/v1/engine/llm_engine.py"), "LLMEngine")
        args = _class(_source(whl, "vllm/engine/arg_utils.py"), "EngineArgs")
        lora_cfg = _source(whl, "vllm/config/lora.py")
        model_cfg = _source(whl, "vllm/config/model.py")
        req = _class(_source(whl, "vllm/lora/request.py"), "LoRARequest")
        sp = _class(_source(whl, "vllm/sampling_params.py"), "SamplingParams")
    return {
        "version": version.split("__version__ = version = ")[1].split("\n")[0].strip("'\""),
        "LLM.__init__": _params(_method(llm, "__init__")),
        "LLM.generate": _params(_method(llm, "generate")),
        "LLM.sleep": _params(_method(llm, "sleep")),
        "LLM.wake_up": _params(_method(llm, "wake_up")),
        "LLM.get_tokenizer": _params(_method(llm, "get_tokenizer")),
        "LLMEngine.remove_lora": _params(_method(engine, "remove_lora")),
        "LLMEngine.add_lora": _params(_method(engine, "add_lora")),
        "EngineArgs": _fields(args),
        "MaxLoRARanks": _literal(lora_cfg, "MaxLoRARanks"),
        "LogprobsMode": _literal(model_cfg, "LogprobsMode"),
        "LoRARequest": _fields(req),
        "SamplingParams": _fields(sp),
    }


def unsloth_api(path: str) -> dict:
    with zipfile.ZipFile(path) as whl:
        version = whl.read("unsloth/_version.py").decode()
        loader = _source(whl, "unsloth/models/loader.py")
        llama = _class(_source(whl, "unsloth/models/llama.py"), "FastLlamaModel")
    return {
        "version": version.split("__version__ = ")[1].split("\n")[0].strip("'\""),
        "FastLanguageModel.from_pretrained": _params(
            _method(_class(loader, "FastLanguageModel"), "from_pretrained")
        ),
        "FastLanguageModel.get_peft_model": _params(_method(llama, "get_peft_model")),
        "FastLanguageModel.for_training": _params(_method(llama, "for_training")),
        "FastLanguageModel.for_inference": _params(_method(llama, "for_inference")),
    }


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit("usage: snapshot_gpu_api.py VLLM_WHEEL UNSLOTH_WHEEL")
    api = {"vllm": vllm_api(argv[0]), "unsloth": unsloth_api(argv[1])}
    OUT.write_text(json.dumps(api, indent=1) + "\n")
    print(f"wrote {OUT}: vllm {api['vllm']['version']}, unsloth {api['unsloth']['version']}")


if __name__ == "__main__":
    main(sys.argv[1:])
