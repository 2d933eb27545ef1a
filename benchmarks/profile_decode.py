"""Where one decode step of the transformers backend spends its time, and what changing it buys.

    python benchmarks/profile_decode.py [--batch 64] [--steps 48] [--trials 3] [--compile]
        [--out benchmarks/results/decode_profile.json]

On the embedded model (bf16 where the CPU has it), a batch of ``--batch`` rows with an 80-token
prompt (seeded random ids, 8 rows left-padded) decodes ``--steps`` greedy steps the way
workbench/models/hf.py does (`_Batch.step`: explicit positions, a growing attention mask, a
transformers cache). It writes:

1. ``profile_4_steps``: torch.profiler's operators by self CPU time over 4 decode steps (after
   the prefill, which is not profiled);
2. ``variants``: ms per decode step for the loop as it is and for candidate changes, timed in
   interleaved trials (A, B, C, A, B, C, ...) so that the machine's drift hits all alike:
   - ``dynamic_cache+sdpa``: what the backend does (transformers' DynamicCache, SDPA attention);
   - ``slack_cache``: a cache whose keys/values are views of buffers with spare room, written in
     place instead of concatenated each step;
   - ``matmul_attention``: decode attention as two batched matmuls over the key/value heads
     (grouped queries packed), instead of SDPA's CPU flash kernel;
   - ``compiled`` (with ``--compile``): ``torch.compile(model, dynamic=True)``.
   Each variant's greedy tokens are compared with the first variant's (bf16: a different summation
   order may flip a near-tie, after which the continuations differ).

Not a test: nothing here asserts a time. docs/foundation.md quotes the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def slack_layer_class():
    from transformers.cache_utils import DynamicLayer

    class SlackLayer(DynamicLayer):
        """Keys/values are views of buffers with spare room on the time axis; a step writes in place."""

        def lazy_initialization(self, key_states, value_states):
            self.device, self.n, self.kbuf, self.vbuf = key_states.device, 0, None, None
            self.keys = self.values = None
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            t = key_states.shape[-2]
            if self.kbuf is None or self.n + t > self.kbuf.shape[-2]:
                b, h, _, d = key_states.shape
                kbuf = key_states.new_empty(b, h, self.n + t + 64, d)
                vbuf = value_states.new_empty(kbuf.shape)
                if self.n:
                    kbuf[..., : self.n, :] = self.kbuf[..., : self.n, :]
                    vbuf[..., : self.n, :] = self.vbuf[..., : self.n, :]
                self.kbuf, self.vbuf = kbuf, vbuf
            self.kbuf[..., self.n : self.n + t, :] = key_states
            self.vbuf[..., self.n : self.n + t, :] = value_states
            self.n += t
            self.keys, self.values = self.kbuf[..., : self.n, :], self.vbuf[..., : self.n, :]
            return self.keys, self.values

    return SlackLayer


def register_matmul_attention() -> str:
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        if query.shape[2] != 1:  # prefill: SDPA as before
            return sdpa_attention_forward(
                module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
            )
        b, hq, _, d = query.shape
        hk = key.shape[1]
        q = query.reshape(b, hk, hq // hk, d)  # (B, Hk, G, D): grouped queries packed per kv head
        w = torch.matmul(q, key.transpose(-1, -2)) * scaling  # (B, Hk, G, T)
        if attention_mask is not None:
            m = attention_mask
            w = w.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else w + m
        w = torch.softmax(w, -1, dtype=torch.float32).to(query.dtype)
        return torch.matmul(w, value).reshape(b, hq, 1, d).transpose(1, 2), None

    AttentionInterface.register("wb_matmul_decode", attention)
    AttentionMaskInterface.register("wb_matmul_decode", sdpa_mask)
    return "wb_matmul_decode"


def decode(model, prompt: torch.Tensor, steps: int, cache, prof=None) -> tuple[float, torch.Tensor]:
    """Prefill ``prompt`` (B, P), then ``steps`` greedy steps; returns (ms per step, tokens (steps, B)).
    ``prof``: a torch profiler started after the prefill and stopped after the last step."""
    b, p = prompt.shape
    mask = torch.ones(b, p, dtype=torch.long)
    mask[:8, :5] = 0  # 8 left-padded rows, as a mixed batch has
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        out = model(
            input_ids=prompt,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=torch.tensor([p - 1]),
        )
        tok, last, seq = out.logits[:, -1].argmax(-1), pos[:, -1], []
        if prof is not None:
            prof.start()
        t0 = time.perf_counter()
        for _ in range(steps):
            mask = torch.cat([mask, mask.new_ones(b, 1)], 1)
            last = last + 1
            out = model(
                input_ids=tok[:, None],
                attention_mask=mask,
                position_ids=last[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            tok = out.logits[:, -1].argmax(-1)
            seq.append(tok)
        if prof is not None:
            prof.stop()
        return (time.perf_counter() - t0) / steps * 1000, torch.stack(seq)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=48)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile(model, dynamic=True)")
    ap.add_argument("--out", default="benchmarks/results/decode_profile.json")
    args = ap.parse_args()

    from torch.profiler import ProfilerActivity, profile
    from transformers import DynamicCache
    from transformers.cache_utils import Cache

    from workbench.models import load_backend

    backend = load_backend("smollm2", max_batch_size=args.batch)
    model = backend.model
    prompt = torch.randint(100, 1000, (args.batch, 80), generator=torch.Generator().manual_seed(0))
    matmul = register_matmul_attention()
    slack = slack_layer_class()

    # ---- 1. the profile of the loop as it is ----
    decode(model, prompt, 4, DynamicCache())  # warm-up
    prof = profile(activities=[ProfilerActivity.CPU])
    decode(model, prompt, 4, DynamicCache(), prof=prof)  # the 4 decode steps only, not the prefill
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    profile_rows = [
        {
            "op": e.key,
            "calls_per_step": round(e.count / 4, 1),
            "self_ms_per_step": round(e.self_cpu_time_total / 1000 / 4, 2),
            "share": round(e.self_cpu_time_total / total, 3),
        }
        for e in ops[:12]
    ]

    # ---- 2. variants, interleaved ----
    def run(name):
        if name == "matmul_attention":
            model.config._attn_implementation = matmul
        try:
            cache = Cache(layer_class_to_replicate=slack) if name == "slack_cache" else DynamicCache()
            m = compiled if name == "compiled" else model
            return decode(m, prompt, args.steps, cache)
        finally:
            model.config._attn_implementation = "sdpa"

    names = ["dynamic_cache+sdpa", "slack_cache", "matmul_attention"]
    compiled, compile_s = None, None
    if args.compile:
        compiled = torch.compile(model, dynamic=True)
        t0 = time.perf_counter()
        decode(compiled, prompt, 4, DynamicCache())
        compile_s = round(time.perf_counter() - t0, 1)
        names.append("compiled")
    times: dict[str, list[float]] = {n: [] for n in names}
    tokens: dict[str, torch.Tensor] = {}
    for _ in range(args.trials):
        for n in names:
            ms, toks = run(n)
            times[n].append(round(ms, 1))
            tokens[n] = toks
    base = names[0]
    variants = {
        n: {
            "ms_per_step_each": times[n],
            "ms_per_step_median": statistics.median(times[n]),
            "tokens_per_s_median": round(args.batch / statistics.median(times[n]) * 1000, 1),
            "vs_current": round(statistics.median(times[base]) / statistics.median(times[n]), 3),
            "greedy_tokens_equal_to_current": round((tokens[n] == tokens[base]).float().mean().item(), 3),
        }
        for n in names
    }
    results = {
        "benchmark": "decode_profile",
        "command": "python benchmarks/profile_decode.py" + (" --compile" if args.compile else ""),
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": "smollm2",
        "dtype": str(model.dtype),
        "batch": args.batch,
        "prompt_tokens": 80,
        "steps": args.steps,
        "trials": args.trials,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
        },
        "profile_4_steps": profile_rows,
        "variants": variants,
        **({"compile_s": compile_s} if compile_s is not None else {}),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
