"""Speed on a GPU: Unsloth's loss step vs PEFT's, and vLLM's sampling vs our transformers loop.

    python benchmarks/bench_gpu.py                          # CUDA machine; results/bench_gpu.json
    python benchmarks/bench_gpu.py --model PATH_OR_HUB_ID --batch 16 --seq 512
    python benchmarks/bench_gpu.py --device cpu --parts peft,hf --repeats 1   # a dry run of the pieces here

Parts, each in its own process (Unsloth patches every transformers model in the process it is
imported in), all on the same model, batch and sequence length:

- ``peft``: one training step of the trainer's loss path (policy.completion_logprobs → GRPO loss →
  backward → AdamW) with transformers + peft; median time over ``--repeats`` after one warm-up,
  and peak GPU memory.
- ``unsloth``: the same step on Unsloth's model and LoRA (its gradient checkpointing on).
- ``hf``: tokens per second of our transformers decode loop (HFBackend) sampling ``--batch``
  completions of ``--new-tokens`` tokens (``min_tokens``-free: EOS ends a row early, so the
  tokens counted are the ones produced).
- ``vllm``: the same requests through `vllm.LLM` (workbench/models/vllm.py); where vllm is not
  installed the result says so instead of a number.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("peft", "unsloth", "hf", "vllm")
QUESTION = "A shop sells pencils at 3 for 45 cents. How much do 12 pencils cost? Think step by step."


def synthetic_batch(tokenizer, batch: int, seq: int) -> tuple[list[list[int]], list[list[int]]]:
    """``batch`` (prompt, completion) pairs of ``seq`` tokens in all: a real chat prompt, then a
    completion of repeated text, cut to length (the step's cost depends on lengths, not content)."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
    )
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"][: seq // 2]
    filler = tokenizer(
        " 12 pencils are 4 groups of 3, so 4 x 45 = 180 cents." * 64, add_special_tokens=False
    )["input_ids"]
    c = filler[: max(1, seq - len(p))]
    return [list(p)] * batch, [list(c)] * batch


def loss_step_seconds(model, prompts, completions, pad_id: int, repeats: int) -> list[float]:
    """Times of ``repeats`` trainer loss steps (forward, GRPO loss, backward, AdamW) after a warm-up."""
    import torch

    from workbench.rl import objectives as obj
    from workbench.rl.policy import completion_logprobs

    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    device = next(model.parameters()).device
    adv = torch.linspace(-1, 1, len(prompts), device=device)
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.train()
        s = completion_logprobs(
            model, prompts, completions, temperature=1.0, pad_id=pad_id, share_prompts=False
        )
        obj.grpo(s.logp, None, adv, s.mask).loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first is the warm-up
            times.append(time.perf_counter() - t0)
    model.eval()
    return times


def _summary(times: list[float], tokens: int | None = None) -> dict:
    out = {"median_s": round(statistics.median(times), 4), "times_s": [round(t, 4) for t in times]}
    if tokens is not None:
        out["tokens"] = tokens
    return out


def part_peft(args) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from workbench.models import load_backend

    backend = load_backend(args.model, dtype=args.dtype, device=args.device)
    model = get_peft_model(backend.model, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS))
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    prompts, completions = synthetic_batch(backend.tokenizer, args.batch, args.seq)
    out = _summary(loss_step_seconds(model, prompts, completions, backend.pad_id, args.repeats))
    if args.device == "cuda":
        out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out


def part_unsloth(args) -> dict:
    if args.device != "cuda":
        return {"skipped": "Unsloth needs CUDA"}
    try:
        import unsloth  # noqa: F401
        from unsloth import FastLanguageModel
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"unsloth is not importable: {type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    import torch

    from workbench.models.loading import resolve_dtype
    from workbench.models.vllm import model_source

    model, tok = FastLanguageModel.from_pretrained(
        model_name=model_source(args.model), max_seq_length=max(args.seq, 256),
        dtype=resolve_dtype(args.dtype, "cuda"), load_in_4bit=False, random_state=0,
    )  # fmt: skip
    model = FastLanguageModel.get_peft_model(
        model,
        r=16,
        lora_alpha=32,
        target_modules=list(TARGETS),
        use_gradient_checkpointing="unsloth",
        random_state=0,
    )
    torch.cuda.reset_peak_memory_stats()
    prompts, completions = synthetic_batch(tok, args.batch, args.seq)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = _summary(loss_step_seconds(model, prompts, completions, pad, args.repeats))
    out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out


def _requests(n: int, new_tokens: int):
    from workbench.models import Request, SamplingParams

    return [Request([{"role": "user", "content": QUESTION}], SamplingParams(temperature=1.0, max_tokens=new_tokens, seed=i))
            for i in range(n)]  # fmt: skip


def tokens_per_second(backend, n: int, new_tokens: int, repeats: int) -> dict:
    """Sampling throughput of any backend: completion tokens / wall time, median over repeats."""
    times, tokens = [], []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        gens = backend.generate(_requests(n, new_tokens))
        if i:
            times.append(time.perf_counter() - t0)
            tokens.append(sum(g.completion_tokens for g in gens))
    out = _summary(times, tokens=int(statistics.median(tokens)))
    out["tokens_per_s"] = round(statistics.median(t / s for t, s in zip(tokens, times, strict=True)), 1)
    return out


def part_hf(args) -> dict:
    from workbench.models import load_backend

    backend = load_backend(
        args.model, dtype=args.dtype, device=args.device, max_batch_size=max(64, args.batch)
    )
    return tokens_per_second(backend, args.batch, args.new_tokens, args.repeats)


def part_vllm(args) -> dict:
    import importlib.util

    if args.device != "cuda":
        return {"skipped": "vLLM needs CUDA"}
    if importlib.util.find_spec("vllm") is None:
        return {"skipped": "vllm is not installed on this machine (its wheel is 311 MiB and pins its own torch: "
                           "it cannot be carried to a bare GPU machine; run this in the make setup-gpu environment)"}  # fmt: skip
    from workbench.models import load_backend

    backend = load_backend(
        f"vllm:{args.model}", dtype=args.dtype, gpu_memory_utilization=0.5, max_model_len=2048
    )
    return tokens_per_second(backend, args.batch, args.new_tokens, args.repeats)


TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RUN = {"peft": part_peft, "unsloth": part_unsloth, "hf": part_hf, "vllm": part_vllm}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--batch", type=int, default=16, help="sequences per loss step; completions sampled")
    ap.add_argument("--seq", type=int, default=512, help="tokens per training sequence (prompt + completion)")
    ap.add_argument("--new-tokens", type=int, default=128, help="tokens per sampled completion (at most)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_gpu.json")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.part:
        args.result.write_text(json.dumps(RUN[args.part](args)))
        return 0
    parts = [p for p in args.parts.split(",") if p]
    if set(parts) - set(PARTS):
        ap.error(f"--parts: choose from {', '.join(PARTS)}")
    results: dict = {
        "config": {
            k: getattr(args, k) for k in ("model", "device", "dtype", "batch", "seq", "new_tokens", "repeats")
        }
    }
    from gpu_check import _env, environment  # the same versions/device block as the GPU check

    results["environment"] = environment(args.device)
    for part in parts:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            res_path = Path(f.name)
        cmd = [
            sys.executable,
            __file__,
            *(argv if argv is not None else sys.argv[1:]),
            "--part",
            part,
            "--result",
            str(res_path),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=_env())
        if proc.returncode == 0 and res_path.stat().st_size:
            results[part] = json.loads(res_path.read_text())
        else:
            results[part] = {"error": proc.stderr[-1200:]}
        print(f"[bench_gpu] {part}: {json.dumps(results[part])[:300]}", flush=True)
    if "peft" in results and "unsloth" in results and "median_s" in results["unsloth"]:
        results["unsloth_vs_peft_step"] = round(
            results["unsloth"]["median_s"] / results["peft"]["median_s"], 3
        )
    if "hf" in results and "vllm" in results and "tokens_per_s" in results["vllm"]:
        results["vllm_vs_hf_tokens_per_s"] = round(
            results["vllm"]["tokens_per_s"] / results["hf"]["tokens_per_s"], 2
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"[bench_gpu] {args.out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
