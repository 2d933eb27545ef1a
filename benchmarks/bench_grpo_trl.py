"""One GRPO step of our trainer (workbench.rl) vs TRL's ``GRPOTrainer``: same model, prompts and lengths.

    flock /tmp/wb-model.lock .venv/bin/python benchmarks/bench_grpo_trl.py \\
        [--questions 8] [--group 8] [--max-tokens 64] [--micro-batch 16] [--steps 3] [--loss grpo] \\
        [--out benchmarks/results/grpo_trl.json]

Both sides train SmolLM2-135M-Instruct (the embedded model, bf16 weights where the CPU has native
bf16) with the same fresh LoRA adapter (r=16, alpha=32, attention + MLP projections, fp32 adapter
weights, no autocast), on the same chat-templated arithmetic train questions, G samples each at
temperature 1.0 (top-p 1, no top-k) up to the same completion cap, rewarded by the same verifier
(``task.extract`` + ``task.is_correct``), with beta = 0 (no reference model), one optimisation pass
per batch, micro-batches of the same size with gradient accumulation, clipping at 1.0 and one AdamW
step (constant lr) per step: one step = questions x group completions.

* ours: ``HFBackend.generate_from_ids`` (continuous batching, n = G per prompt) → reward →
  ``objectives.group_advantages`` → ``trainer._optimise`` (``completion_logprobs`` with grad per
  micro-batch, ``policy_loss``, backward, clip, AdamW) → scheduler step: what ``train_step`` does
  for an offline recipe, minus the recipe's prompt building and episode logging.
* TRL: ``GRPOTrainer.train()`` with ``max_steps = warm-up + steps``; ``gradient_accumulation_steps``
  = completions / micro-batch, so one optimiser step generates all completions once (TRL's
  ``steps_per_generation`` defaults to the accumulation count) and runs the loss over them in
  micro-batches. A callback times each optimiser step (``on_step_begin`` → ``on_step_end``);
  ``_generate`` and ``_generate_and_score_completions`` are wrapped with timers (they still run).

Each side runs in its own subprocess, one after the other, so memory is measured per side: RSS
after the model (and trainer) is built, the peak RSS during the steps (the kernel's high-water
mark, reset after loading via /proc/self/clear_refs) and ``ru_maxrss`` (the absolute peak, loading
included). The first step of each side is a warm-up; the median of the next ``--steps`` is
reported, with its split into sampling and the rest (scoring, loss, backward, optimiser). Results
go to a JSON file that docs/training.md quotes. Not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_generation import write_results  # noqa: E402

LORA = {"rank": 16, "alpha": 32}
LR = 1e-4
SEED = 0


# ---------------------------------------------------------------- memory
def _status_kb(field: str) -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def rss_mb() -> float:
    """Current resident set size of this process, MiB."""
    return round((_status_kb("VmRSS") or 0) / 1024, 1)


def reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS; False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """RSS high-water mark since the last ``reset_peak`` (or since the start), MiB."""
    return round((_status_kb("VmHWM") or 0) / 1024, 1)


def maxrss_mb() -> float:
    """``ru_maxrss``: the process's absolute peak RSS, loading included, MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ---------------------------------------------------------------- shared inputs
def bench_tasks(n: int):
    from workbench.tasks import TaskConfig, load_tasks

    return load_tasks(TaskConfig.from_flat({"name": "arithmetic", "split": "train", "limit": n})).tasks


def reward_of(task, text: str) -> float:
    """The verifier both sides use: 1.0 when the extracted answer is correct."""
    ext = task.extract(text)
    return float(ext is not None and task.is_correct(ext))


def step_summary(steps: list[dict], warmup: int) -> dict:
    """Median of the timed steps (the warm-up steps are kept in the list, not in the medians)."""
    timed = steps[warmup:]
    med = {k: round(statistics.median(s[k] for s in timed), 2) for k in timed[0] if k.endswith("_s")}
    return {
        "median": med,
        "completion_tokens_per_step": round(statistics.median(s["completion_tokens"] for s in timed), 1),
        "steps": steps,
    }


# ---------------------------------------------------------------- ours
def run_ours(args) -> dict:
    import torch

    from workbench.models import SamplingParams
    from workbench.prompts import question_messages
    from workbench.rl import objectives as obj
    from workbench.rl.config import TrainConfig
    from workbench.rl.policy import LoraSettings, load_policy
    from workbench.rl.rollouts import Sample
    from workbench.rl.trainer import _optimise, _seed_everything

    cfg = TrainConfig.build(
        {
            "recipe": "leader",  # only cfg.train is read by _optimise; leader allows grpo and dr_grpo
            "model": {"name": args.model},
            "lora": LORA,
            "train": {
                "objective": args.loss,
                "questions": args.questions,
                "group": args.group,
                "temperature": 1.0,
                "max_tokens": args.max_tokens,
                "lr": LR,
                "warmup_steps": 0,
                "schedule": "constant",
                "micro_batch": args.micro_batch,
                "beta": 0.0,
                "seed": SEED,
            },
        }
    )
    t = cfg.train
    _seed_everything(SEED)
    t0 = time.perf_counter()
    backends = load_policy(
        args.model, LoraSettings(rank=LORA["rank"], alpha=LORA["alpha"]), max_batch_size=64
    )
    policy = backends.policy
    params = [p for p in backends.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    load_s = time.perf_counter() - t0
    tasks = bench_tasks(args.questions)
    prompt_ids = [policy.encode_chat(question_messages(task.prompt, task.verifier)) for task in tasks]
    info = {
        "model_dtype": str(backends.model.dtype),
        "adapter_dtype": str(params[0].dtype),
        "trainable_params": sum(p.numel() for p in params),
        "torch_threads": torch.get_num_threads(),
        "load_s": round(load_s, 2),
        "rss_after_load_mb": rss_mb(),
    }
    peak_reset = reset_peak()
    steps = []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        sampling = [
            (
                ids,
                SamplingParams(
                    temperature=1.0, max_tokens=t.max_tokens, n=t.group, seed=1000 * step + q, logprobs=True
                ),
            )
            for q, ids in enumerate(prompt_ids)
        ]
        gens = policy.generate_from_ids(sampling)
        t1 = time.perf_counter()
        samples = []
        for q, task in enumerate(tasks):
            for g in gens[q * t.group : (q + 1) * t.group]:
                r = reward_of(task, g.text)
                samples.append(
                    Sample(
                        q, task, list(g.prompt_ids), list(g.token_ids), g.logprobs, g.text, r, bool(r), False
                    )
                )
        rewards = torch.tensor([s.reward for s in samples])
        groups = torch.tensor([s.group for s in samples])
        adv = obj.group_advantages(rewards, groups, scale="none" if t.objective == "dr_grpo" else "group")
        t2 = time.perf_counter()
        stats = _optimise(cfg, backends, optimizer, samples, adv, [])
        scheduler.step()
        t3 = time.perf_counter()
        steps.append(
            {
                "step_s": round(t3 - t0, 3),
                "sampling_s": round(t1 - t0, 3),
                "reward_advantage_s": round(t2 - t1, 3),
                "loss_backward_optimizer_s": round(t3 - t2, 3),
                "completions": len(samples),
                "completion_tokens": sum(len(s.completion_ids) for s in samples),
                "prompt_tokens": sum(len(s.prompt_ids) for s in samples),
                "reward_mean": round(float(rewards.mean()), 4),
                "loss": round(stats["loss"], 6),
                "grad_norm": round(stats["grad_norm"], 6),
            }
        )
        print(f"[ours] step {step}: {steps[-1]}", file=sys.stderr, flush=True)
    return {
        **info,
        "peak_rss_steps_mb": peak_mb() if peak_reset else None,
        "ru_maxrss_mb": maxrss_mb(),
        **step_summary(steps, args.warmup),
    }


# ---------------------------------------------------------------- TRL
def run_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from workbench.models import load_backend
    from workbench.prompts import question_messages
    from workbench.rl.policy import LoraSettings

    completions_per_step = args.questions * args.group
    if completions_per_step % args.micro_batch:
        raise SystemExit(
            f"--micro-batch {args.micro_batch} must divide questions x group = {completions_per_step}"
        )
    tasks = bench_tasks(args.questions)
    by_id = {task.id: task for task in tasks}

    def verifier_reward(prompts, completions, task_id, **kwargs) -> list[float]:
        """TRL reward function: the same verifier as ours, on the completion text."""
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [reward_of(by_id[i], text) for i, text in zip(task_id, texts, strict=True)]

    timings: dict[str, list[float]] = {"generate": [], "generate_and_score": [], "step": []}
    tokens: list[dict] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            timings["step"].append(time.perf_counter() - self.t0)
            print(  # live progress: a slow or interrupted run still shows its finished steps
                f"[trl] step {len(timings['step']) - 1} done: {timings['step'][-1]:.1f} s, "
                f"generate {timings['generate'][-1]:.1f} s, {tokens[-1]}",
                file=sys.stderr,
                flush=True,
            )

    t0 = time.perf_counter()
    base = load_backend(args.model)  # the same weights and tokenizer as load_policy loads
    lora = LoraSettings(rank=LORA["rank"], alpha=LORA["alpha"])
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-grpo-trl-"),
        report_to="none",
        use_cpu=True,
        bf16=False,  # the weights are already bf16: no autocast, as in ours
        max_steps=args.warmup + args.steps,
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=completions_per_step // args.micro_batch,
        num_generations=args.group,
        max_completion_length=args.max_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        num_iterations=1,
        epsilon=0.2,
        loss_type=args.loss,
        scale_rewards="none" if args.loss == "dr_grpo" else "group",
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        optim="adamw_torch",
        max_grad_norm=1.0,
        gradient_checkpointing=args.trl_gc == "on",  # TRL's default is on; ours never checkpoints
        use_vllm=False,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=SEED,
    )
    data = Dataset.from_dict(
        {
            "prompt": [question_messages(task.prompt, task.verifier) for task in tasks],
            "task_id": [task.id for task in tasks],
        }
    )
    trainer = GRPOTrainer(
        model=base.model,
        reward_funcs=verifier_reward,
        args=config,
        train_dataset=data,
        processing_class=base.tokenizer,
        peft_config=LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        ),
        callbacks=[StepTimer()],
    )
    trainer.remove_callback(PrinterCallback)  # the per-step log dicts stay in trainer.state.log_history
    gen, gen_score = trainer._generate, trainer._generate_and_score_completions

    def timed_generate(prompts):
        s = time.perf_counter()
        out = gen(prompts)
        timings["generate"].append(time.perf_counter() - s)
        return out

    def timed_generate_and_score(inputs):
        s = time.perf_counter()
        out = gen_score(inputs)
        timings["generate_and_score"].append(time.perf_counter() - s)
        tokens.append(
            {
                "completions": int(out["completion_ids"].shape[0]),
                "completion_tokens": int(out["completion_mask"].sum()),
                "prompt_tokens": int(out["prompt_mask"].sum()),
            }
        )
        return out

    trainer._generate, trainer._generate_and_score_completions = timed_generate, timed_generate_and_score
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    info = {
        "model_dtype": str(next(trainer.model.parameters()).dtype),
        "adapter_dtype": str(params[0].dtype),
        "trainable_params": sum(p.numel() for p in params),
        "load_s": round(time.perf_counter() - t0, 2),
        "rss_after_load_mb": rss_mb(),
        "torch_threads": torch.get_num_threads(),
        "gradient_checkpointing": bool(config.gradient_checkpointing),
    }
    peak_reset = reset_peak()
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    n = args.warmup + args.steps
    if not (len(timings["step"]) == len(timings["generate_and_score"]) == len(tokens) == n):
        raise RuntimeError(f"expected {n} generations and steps, got {timings} (TRL's batching changed?)")
    history = [h for h in trainer.state.log_history if "loss" in h]
    steps = []
    for i in range(n):
        steps.append(
            {
                "step_s": round(timings["step"][i], 3),
                "sampling_s": round(timings["generate"][i], 3),
                "reward_advantage_s": round(timings["generate_and_score"][i] - timings["generate"][i], 3),
                "loss_backward_optimizer_s": round(timings["step"][i] - timings["generate_and_score"][i], 3),
                **tokens[i],
                "reward_mean": round(history[i].get("reward", float("nan")), 4) if i < len(history) else None,
                "loss": history[i].get("loss") if i < len(history) else None,
                "grad_norm": history[i].get("grad_norm") if i < len(history) else None,
            }
        )
        print(f"[trl] step {i}: {steps[-1]}", file=sys.stderr, flush=True)
    return {
        **info,
        "train_call_s": round(train_s, 2),
        "peak_rss_steps_mb": peak_mb() if peak_reset else None,
        "ru_maxrss_mb": maxrss_mb(),
        **step_summary(steps, args.warmup),
    }


# ---------------------------------------------------------------- driver
def ratios(ours: dict, theirs: dict) -> dict:
    """Ours / theirs for the median step, its parts, and memory (< 1: ours is faster / smaller)."""
    o, t = ours["median"], theirs["median"]

    def per_token(side: dict) -> float:
        return side["median"]["step_s"] / side["completion_tokens_per_step"]

    both_peaks = ours["peak_rss_steps_mb"] and theirs["peak_rss_steps_mb"]
    return {
        **{k: round(o[k] / t[k], 3) for k in ("step_s", "sampling_s", "loss_backward_optimizer_s")},
        "step_s_per_completion_token": round(per_token(ours) / per_token(theirs), 3),
        "peak_rss_steps_mb": round(ours["peak_rss_steps_mb"] / theirs["peak_rss_steps_mb"], 3)
        if both_peaks
        else None,
        "step_peak_over_load_mb": round(ours["step_peak_over_load_mb"] / theirs["step_peak_over_load_mb"], 3)
        if both_peaks
        else None,
        "ru_maxrss_mb": round(ours["ru_maxrss_mb"] / theirs["ru_maxrss_mb"], 3),
    }


def run_side(side: str, args, trl_gc: str = "on") -> dict:
    """Run one side in a fresh subprocess (so its memory is its own) and return its results."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, __file__, "--side", side, "--side-out", out, "--trl-gc", trl_gc]
    for name in ("model", "questions", "group", "max_tokens", "micro_batch", "steps", "warmup", "loss"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    print(f"[bench] {side}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)
    result = json.loads(Path(out).read_text())
    os.unlink(out)
    return result


LABELS = {
    "ours": "ours (workbench.rl)",
    "trl": "TRL GRPOTrainer (its defaults: gradient checkpointing on)",
    "trl_no_gc": "TRL GRPOTrainer, gradient checkpointing off",
}


def markdown_table(results: dict) -> str:
    """The docs/training.md table of a results file."""
    lines = [
        "| | step (s) | sampling (s) | reward + advantages (s) | loss + backward + AdamW (s) "
        "| completion tokens / step | RSS after load (MiB) | peak RSS in the steps (MiB) | ru_maxrss (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in LABELS.items():
        if key not in results:
            continue
        side, m = results[key], results[key]["median"]
        peak = "n/a" if side["peak_rss_steps_mb"] is None else f"{side['peak_rss_steps_mb']:.0f}"
        if side["peak_rss_steps_mb"] is not None:
            peak += f" (+{side['step_peak_over_load_mb']:.0f})"
        lines.append(
            f"| {label} | {m['step_s']} | {m['sampling_s']} | {m['reward_advantage_s']} "
            f"| {m['loss_backward_optimizer_s']} | {side['completion_tokens_per_step']:.0f} "
            f"| {side['rss_after_load_mb']:.0f} | {peak} | {side['ru_maxrss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2", help="any load_backend spec without an adapter")
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--loss", choices=("grpo", "dr_grpo"), default="grpo")
    ap.add_argument("--out", default="benchmarks/results/grpo_trl.json")
    ap.add_argument("--table", metavar="RESULTS.json", help="print the docs table of a results file and exit")
    ap.add_argument(
        "--trl-gc",
        choices=("both", "on", "off"),
        default="both",
        help="TRL with its default gradient checkpointing (on), without it (off, as ours), or both",
    )
    ap.add_argument("--side", choices=("ours", "trl"), help=argparse.SUPPRESS)
    ap.add_argument("--side-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.table:
        print(markdown_table(json.loads(Path(args.table).read_text())))
        return
    if args.side:
        result = run_ours(args) if args.side == "ours" else run_trl(args)
        Path(args.side_out).write_text(json.dumps(result))
        return

    import peft
    import torch
    import transformers
    import trl

    sides = {"ours": run_side("ours", args)}
    for gc in ("on", "off") if args.trl_gc == "both" else (args.trl_gc,):
        sides["trl" if gc == "on" else "trl_no_gc"] = run_side("trl", args, gc)
    ours = sides["ours"]
    for side in sides.values():
        side["ru_maxrss_over_load_mb"] = round(side["ru_maxrss_mb"] - side["rss_after_load_mb"], 1)
        peak = side["peak_rss_steps_mb"]
        side["step_peak_over_load_mb"] = None if peak is None else round(peak - side["rss_after_load_mb"], 1)
    results = {
        "what": "one GRPO optimiser step (sampling + reward + advantages + loss + backward + AdamW), ours vs TRL",
        "command": "flock /tmp/wb-model.lock .venv/bin/python benchmarks/bench_grpo_trl.py "
        + " ".join(a for a in sys.argv[1:]),
        "setup": {
            "model": "smollm2 (SmolLM2-135M-Instruct, embedded)" if args.model == "smollm2" else args.model,
            "dtype": ours["model_dtype"] + " weights, " + ours["adapter_dtype"] + " LoRA, no autocast",
            "lora": {**LORA, "dropout": 0.0, "targets": "q,k,v,o,gate,up,down proj"},
            "task": "arithmetic (train split), chat template, question_messages",
            "questions": args.questions,
            "group": args.group,
            "completions_per_step": args.questions * args.group,
            "max_completion_tokens": args.max_tokens,
            "temperature": 1.0,
            "loss": args.loss,
            "beta": 0.0,
            "micro_batch": args.micro_batch,
            "gradient_accumulation": args.questions * args.group // args.micro_batch,
            "optimizer": f"AdamW lr={LR} constant, clip 1.0",
            "warmup_steps": args.warmup,
            "timed_steps": args.steps,
            "trl": "GRPOTrainer, use_vllm=False (transformers generate), bf16=False (weights already bf16); "
            "'trl' keeps TRL's default gradient_checkpointing=True, 'trl_no_gc' turns it off as ours is",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": ours.get("torch_threads"),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "peft": peft.__version__,
        },
        **sides,
    }
    for name in (k for k in sides if k != "ours"):
        results[f"ratio_ours_over_{name}"] = ratios(ours, sides[name])
    results["target"] = "step time <= 0.5x TRL's at <= TRL's peak memory (TRL at its defaults: 'trl')"
    if "trl" in sides:
        r = results["ratio_ours_over_trl"]
        mem = r["peak_rss_steps_mb"] if r["peak_rss_steps_mb"] is not None else r["ru_maxrss_mb"]
        results["target_met"] = bool(r["step_s"] <= 0.5 and mem <= 1.0)
    write_results(results, args.out)
    print(markdown_table(results))


if __name__ == "__main__":
    main()
