"""The GPU check: what only a CUDA machine can verify, in independent stages, into one JSON report.

    python benchmarks/gpu_check.py                                  # on the GPU machine (docs/gpu.md)
    python benchmarks/gpu_check.py --wheels wheels/                 # first install the carried wheels
    python benchmarks/gpu_check.py --device cpu                     # dry run here: CUDA-only stages skip

Needs only torch, transformers, peft and this package (run from the repository root); no internet,
no index. Unsloth comes from ``--wheels`` (make gpu-bundle). vLLM cannot be carried this way and is
not a stage. Each stage runs in its own process (importing Unsloth patches every transformers
model in a process, so it must not share one with the PEFT stage), with its own time limit; a
crash is recorded with the tail of its output and the next stage runs.

Stages:
- ``peft``: the embedded model + a random LoRA adapter on the device. Greedy decoding (our loop,
  KV cache) equals the argmax of one full forward pass at every completion token (a flip counts
  only where the top-2 margin is below bf16 resolution); sampled tokens' log-probs from the
  decode loop equal the trainer's (policy.completion_logprobs) within tolerance; one AdamW step
  on a GRPO loss changes the adapter and leaves adapter-off logits equal to the base model's.
- ``unsloth`` (CUDA + unsloth importable): Unsloth's model + LoRA from the embedded model's
  folder, seeded; one GRPO step through the trainer's code (policy.completion_logprobs,
  objectives.grpo); adapter-off logits equal the base's; the saved adapter, reloaded with plain
  transformers + peft in a fresh process, gives the same log-probs as Unsloth's model.
- ``train``: ``workbench train`` (leader recipe, embedded model) for two steps on the device;
  records each step's time, peak GPU memory and log-prob gap.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("peft", "unsloth", "train")
LIMITS = {"peft": 150, "unsloth": 240, "train": 240}  # seconds per stage
PROMPTS = ["What is 17 + 25?", "Name three colours.", "Is 91 a prime number? Answer briefly."]


# ---------------------------------------------------------------- stage: peft
def stage_peft(device: str) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from workbench.models import Request, SamplingParams, load_backend
    from workbench.models.hf import HFBackend
    from workbench.rl import objectives as obj
    from workbench.rl.policy import completion_logprobs

    dtype = "bf16" if device == "cuda" else "fp32"
    base = load_backend("smollm2", dtype=dtype, device=device)
    tok = base.tokenizer
    probe = torch.tensor([base.encode_chat([{"role": "user", "content": PROMPTS[0]}])], device=base.device)
    with torch.no_grad():
        base_logits = base.model(input_ids=probe).logits.float()
    torch.manual_seed(0)
    model = get_peft_model(
        base.model,
        LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                   init_lora_weights=False),
    )  # fmt: skip
    policy = HFBackend(model, tok, name="smollm2+lora", max_batch_size=64)
    out: dict = {"dtype": dtype}
    # ---- greedy decode = argmax of one full forward pass ----
    greedy = policy.generate(
        [Request([{"role": "user", "content": p}], SamplingParams(max_tokens=32)) for p in PROMPTS]
    )
    flips, close_flips, tokens = 0, 0, 0
    with torch.no_grad():
        for g in greedy:
            ids = torch.tensor([g.prompt_ids + g.token_ids], device=policy.device)
            logits = model(input_ids=ids).logits[0, len(g.prompt_ids) - 1 : -1].float()
            top2 = logits.topk(2, dim=-1)
            for j, t in enumerate(g.token_ids):
                tokens += 1
                if int(top2.indices[j, 0]) != t:
                    flips += 1
                    margin = float(top2.values[j, 0] - logits[j, t])
                    close_flips += margin <= 0.0625 * max(
                        1.0, float(top2.values[j, 0].abs())
                    )  # bf16 resolution
    out["greedy"] = {"tokens": tokens, "argmax_flips": flips, "flips_within_bf16_resolution": close_flips}
    greedy_ok = flips == close_flips
    # ---- sampling log-probs = the trainer's ----
    sampled = policy.generate(
        [Request([{"role": "user", "content": p}], SamplingParams(temperature=1.0, max_tokens=32, n=4, seed=i, logprobs=True))
         for i, p in enumerate(PROMPTS)]
    )  # fmt: skip
    with torch.no_grad():
        scores = completion_logprobs(
            model,
            [g.prompt_ids for g in sampled],
            [g.token_ids for g in sampled],
            temperature=1.0,
            pad_id=policy.pad_id,
        )
    gaps = torch.cat([
        (scores.logp[b, : len(g.token_ids)].float().cpu() - torch.tensor(g.logprobs)).abs() for b, g in enumerate(sampled)
    ])  # fmt: skip
    tol = 0.05 if dtype == "bf16" else 2e-3
    out["logprob_gap"] = {
        "mean": float(gaps.mean()),
        "max": float(gaps.max()),
        "tokens": int(gaps.numel()),
        "mean_tolerance": tol,
    }
    gap_ok = float(gaps.mean()) <= tol
    # ---- one optimiser step: the adapter moves, adapter-off = base ----
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    torch.cuda.reset_peak_memory_stats() if device == "cuda" else None
    t0 = time.perf_counter()
    s = completion_logprobs(
        model,
        [g.prompt_ids for g in sampled],
        [g.token_ids for g in sampled],
        temperature=1.0,
        pad_id=policy.pad_id,
    )
    rewards = torch.tensor([float(len(g.token_ids) % 2) for g in sampled])
    adv = obj.group_advantages(rewards, torch.arange(len(sampled)) // 4, scale="group").to(s.mask.device)
    loss = obj.grpo(s.logp, None, adv, s.mask).loss
    loss.backward()
    optim.step()
    model.eval()
    out["step_s"] = round(time.perf_counter() - t0, 3)
    if device == "cuda":
        out["step_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    moved = sum(int(not torch.equal(before[n], p)) for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad(), model.disable_adapter():
        off = model(input_ids=probe).logits.float()
    out["adapter"] = {
        "tensors_changed": moved,
        "tensors": len(before),
        "adapter_off_vs_base_max_abs": float((off - base_logits).abs().max()),
    }
    off_ok = moved == len(before) and float((off - base_logits).abs().max()) == 0.0
    out["ok"] = bool(greedy_ok and gap_ok and off_ok)
    return out


# ---------------------------------------------------------------- stage: unsloth
def stage_unsloth(device: str) -> dict:
    if device != "cuda":
        return {"skipped": "Unsloth's kernels need CUDA (--device cpu)"}
    try:
        import unsloth  # noqa: F401  (first, before transformers' models load: it patches them)
        from unsloth import FastLanguageModel
    except Exception as e:  # noqa: BLE001  (not installed, or its deps missing: say which)
        return {"skipped": f"unsloth is not importable: {type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    import torch

    from workbench.models.vllm import model_source
    from workbench.rl import objectives as obj
    from workbench.rl.policy import completion_logprobs

    source = model_source("smollm2")
    model, tok = FastLanguageModel.from_pretrained(
        model_name=source, max_seq_length=512, dtype=torch.bfloat16, load_in_4bit=False, random_state=0
    )
    probe_ids = tok.apply_chat_template(
        [{"role": "user", "content": PROMPTS[0]}], add_generation_prompt=True, tokenize=True
    )
    probe_ids = probe_ids["input_ids"] if isinstance(probe_ids, dict) else probe_ids
    probe = torch.tensor([list(probe_ids)], device="cuda")
    with torch.no_grad():
        base_logits = model(input_ids=probe).logits.float()
    model = FastLanguageModel.get_peft_model(
        model, r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        use_gradient_checkpointing="unsloth", random_state=0, max_seq_length=512,
    )  # fmt: skip
    answers = ["42", "It is 42.", "17 + 25 = 42", "43"]
    prompts = [list(probe_ids)] * len(answers)
    completions = [tok(a + tok.eos_token, add_special_tokens=False)["input_ids"] for a in answers]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out: dict = {"unsloth": getattr(unsloth, "__version__", "?")}
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    s = completion_logprobs(model, prompts, completions, temperature=1.0, pad_id=pad, share_prompts=False)
    adv = obj.group_advantages(
        torch.tensor([1.0, 1.0, 1.0, 0.0]), torch.zeros(4, dtype=torch.long), scale="group"
    )
    loss = obj.grpo(s.logp, None, adv.to(s.mask.device), s.mask).loss
    loss.backward()
    optim.step()
    model.eval()
    out["step_s"] = round(time.perf_counter() - t0, 3)
    out["step_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    moved = sum(int(not torch.equal(before[n], p)) for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        with model.disable_adapter():
            off = model(input_ids=probe).logits.float()
        after = completion_logprobs(
            model, prompts, completions, temperature=1.0, pad_id=pad, share_prompts=False
        )
    out["adapter"] = {"tensors_changed": moved, "tensors": len(before),
                      "adapter_off_vs_base_max_abs": float((off - base_logits).abs().max())}  # fmt: skip
    # ---- the saved adapter in plain transformers + peft (a fresh process: no Unsloth patches) ----
    folder = Path(tempfile.mkdtemp(prefix="unsloth-adapter-"))
    model.save_pretrained(folder)
    job = {"adapter": str(folder), "prompts": prompts, "completions": completions, "pad": pad}
    (folder / "job.json").write_text(json.dumps(job))
    proc = subprocess.run(
        [sys.executable, __file__, "--reload-adapter", str(folder / "job.json")],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=_env(),
    )  # fmt: skip
    if proc.returncode:
        out["reload"] = {"error": proc.stderr[-600:]}
        out["ok"] = False
        return out
    peft_logp = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
    mask = after.mask.cpu().bool()
    gap = (after.logp.float().cpu() - peft_logp).abs()[mask]
    out["reload"] = {"logprob_gap_mean": float(gap.mean()), "logprob_gap_max": float(gap.max())}
    off_gap = float((off - base_logits).abs().max())
    out["ok"] = bool(
        moved == len(before)
        and off_gap <= 0.05 * float(base_logits.abs().max())
        and float(gap.mean()) <= 0.05
    )
    return out


def reload_adapter(job_path: str) -> None:
    """In a process without Unsloth: base + saved adapter with transformers + peft; print log-probs."""
    import torch
    from peft import PeftModel

    from workbench.models import load_backend
    from workbench.rl.policy import completion_logprobs

    job = json.loads(Path(job_path).read_text())
    base = load_backend("smollm2", dtype="bf16", device="cuda")
    model = PeftModel.from_pretrained(base.model, job["adapter"]).eval()
    with torch.no_grad():
        s = completion_logprobs(model, job["prompts"], job["completions"], temperature=1.0, pad_id=job["pad"])
    print(json.dumps(s.logp.float().cpu().tolist()))


# ---------------------------------------------------------------- stage: train
def stage_train(device: str) -> dict:
    out_dir = Path(tempfile.mkdtemp(prefix="gpu-check-train-")) / "run"
    sets = [
        "task.limit=8", "eval.limit=4", "train.steps=2", "train.questions=2", "train.group=4", "train.max_tokens=48",
        "pool.size=3", "pool.max_tokens=64", "pool.threshold=1.0", "protocol.rounds=1", "protocol.peers=2",
        f"model.device={device}", f"model.dtype={'bf16' if device == 'cuda' else 'fp32'}",
    ]  # fmt: skip
    cmd = [
        sys.executable,
        "-m",
        "workbench",
        "train",
        "--recipe",
        "leader",
        "--out",
        str(out_dir),
        "--set",
        *sets,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=LIMITS["train"] - 10, cwd=ROOT, env=_env()
    )
    out: dict = {
        "command": " ".join(cmd[1:]),
        "wall_s": round(time.perf_counter() - t0, 1),
        "rc": proc.returncode,
    }
    if proc.returncode:
        out["stderr_tail"] = proc.stderr[-1500:]
        out["ok"] = False
        return out
    keep = (
        "step",
        "step_s",
        "rollout_s",
        "loss",
        "reward",
        "logprob_gap_mean",
        "logprob_gap_max",
        "gpu_peak_gb",
        "gpu_used_gb",
    )
    rows = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines()]
    out["steps"] = [{k: r.get(k) for k in keep if k in r} for r in rows]
    out["ok"] = len(rows) == 2 and all(r.get("logprob_gap_mean", 0) <= 0.5 for r in rows)
    return out


# ---------------------------------------------------------------- driver
def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(ROOT)
    return env


def install_wheels(folder: Path) -> dict:
    """Join cut wheels (X.whl.piece0, .piece1, ...) and install every wheel, --no-deps, no index."""
    for piece0 in sorted(folder.glob("*.whl.piece0")):
        name = piece0.name.removesuffix(".piece0")
        pieces = sorted(folder.glob(f"{name}.piece*"), key=lambda p: int(p.name.rsplit("piece", 1)[1]))
        with open(folder / name, "wb") as f:
            for p in pieces:
                f.write(p.read_bytes())
    wheels = [str(w) for w in sorted(folder.glob("*.whl")) if not w.name.startswith("workbench-")]
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "-q", *wheels],
                          capture_output=True, text=True)  # fmt: skip
    return {"wheels": len(wheels), "rc": proc.returncode, "stderr_tail": proc.stderr[-800:]}


def environment(device: str) -> dict:
    import importlib.metadata as md

    import torch

    versions = {}
    for dist in ("torch", "transformers", "peft", "unsloth", "unsloth_zoo", "vllm", "trl", "bitsandbytes"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    out = {"python": platform.python_version(), "device": device, "versions": versions}
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        out.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                   gpu_free_gib=round(free / 2**30, 1), gpu_total_gib=round(total / 2**30, 1))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated subset of {', '.join(STAGES)}"
    )
    ap.add_argument("--wheels", type=Path, help="install the wheels here first (make gpu-bundle)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    ap.add_argument("--run-stage", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--reload-adapter", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.reload_adapter:
        reload_adapter(args.reload_adapter)
        return 0
    if args.run_stage:  # a child: one stage, its result to --result
        result = {"peft": stage_peft, "unsloth": stage_unsloth, "train": stage_train}[args.run_stage](
            args.device
        )
        args.result.write_text(json.dumps(result))
        return 0
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        ap.error(f"unknown stage(s) {sorted(unknown)}; choose from {', '.join(STAGES)}")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA GPU here; use --device cpu for a dry run")
    report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "environment": environment(args.device)}
    if args.wheels:
        report["wheels"] = install_wheels(args.wheels)
    report["stages"] = {}
    for name in stages:
        t0 = time.perf_counter()
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            result_path = Path(f.name)
        cmd = [
            sys.executable,
            __file__,
            "--run-stage",
            name,
            "--device",
            args.device,
            "--result",
            str(result_path),
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=LIMITS[name], cwd=ROOT, env=_env()
            )
            if proc.returncode == 0 and result_path.stat().st_size:
                result = json.loads(result_path.read_text())
            else:
                result = {"ok": False, "rc": proc.returncode, "stderr_tail": proc.stderr[-1500:]}
        except subprocess.TimeoutExpired:
            result = {"ok": False, "error": f"timed out after {LIMITS[name]} s"}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        status = "skipped" if "skipped" in result else ("pass" if result.get("ok") else "FAIL")
        result["status"] = status
        report["stages"][name] = result
        print(f"[gpu_check] {name}: {status} ({result['seconds']} s){' - ' + result['skipped'] if 'skipped' in result else ''}",
              flush=True)  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(report, indent=1) + "\n"
        )  # after every stage: a cut-off run keeps what ran
    print(f"[gpu_check] report: {args.out}")
    return 0 if all(r["status"] != "FAIL" for r in report["stages"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
