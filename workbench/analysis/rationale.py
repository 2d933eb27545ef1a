"""Decision vs rationale (CLPO's claim): do the central agent's justifications rank the candidates right?

CLPO trains the central agent with a listwise loss over ℓ_k, the length-normalised log-probability
of a justification written *conditioned on endorsing candidate k*. If the model's rationales carry
the decision's knowledge, ℓ_k should be higher for correct candidates. For one maestro slate:

    1. prompt = the central agent's request (replay.synth_request: the protocol's own prompt)
    2. for each candidate k: prefix_k = "<choice>k</choice><why>" (the decision format), and the
       justification j_k = the model's greedy continuation of prompt + prefix_k up to "</why>"
    3. ℓ_k = (1/|j_k|) Σ_t log π(j_k,t | prompt, prefix_k, j_k,<t)     (teacher-forced scoring)

and over slates that hold both correct and wrong candidates:

    AUC  = P(ℓ_c > ℓ_w) over pairs (c correct, w wrong) (+½ for ties): 0.5 = no signal
    top1 = share of slates whose argmax_k ℓ_k is a correct candidate (chance: #correct / m)

Run it on the same slates with the base model and with the trained one (an adapter) for "before
and after training". Needs a transformers backend (``HFBackend``: the model's log-probabilities).
"""

from __future__ import annotations

from typing import Any

from workbench.analysis.pools import Judge, rounds
from workbench.analysis.replay import ReplaySetup, synth_request
from workbench.analysis.stats import mean_ci
from workbench.config import ConfigError

STOP = "</why>"


def _need_hf(backend) -> None:
    if not all(hasattr(backend, a) for a in ("model", "tokenizer", "encode_chat")):
        raise ConfigError(
            f"decision-vs-rationale scoring needs a transformers model's log-probabilities; backend "
            f"{getattr(backend, 'name', backend)!r} is not one (use --model smollm2 or a local/hub model)"
        )


def score_continuations(
    backend, prompts: list[list[int]], continuations: list[list[int]], batch: int = 16
) -> list[tuple[float, int]]:
    """(Σ log-prob, number of tokens) of each continuation given its prompt, teacher-forced.

    Rows are right-padded into batches; position t's logits score token t+1. A (B, T) forward per batch.
    """
    import torch

    _need_hf(backend)
    model, pad = backend.model, backend.pad_id
    out: list[tuple[float, int]] = []
    for b0 in range(0, len(prompts), batch):
        rows = [p + c for p, c in zip(prompts[b0 : b0 + batch], continuations[b0 : b0 + batch], strict=True)]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(backend.device), attention_mask=mask.to(backend.device)).logits
        logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
        for i, (p, c) in enumerate(
            zip(prompts[b0 : b0 + batch], continuations[b0 : b0 + batch], strict=True)
        ):
            if not c:
                out.append((0.0, 0))
                continue
            pos = torch.arange(len(p) - 1, len(p) + len(c) - 1)
            tok = torch.tensor(c)
            out.append((float(logp[i, pos, tok].sum()), len(c)))
    return out


def greedy_continue(
    backend, prefixes: list[list[int]], max_new_tokens: int = 48, stop: str = STOP
) -> list[str]:
    """Greedy continuations of raw token prefixes (left-padded batch), cut at ``stop``."""
    import torch

    _need_hf(backend)
    width = max(len(p) for p in prefixes)
    ids = torch.full((len(prefixes), width), backend.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prefixes):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    with torch.inference_mode():
        out = backend.model.generate(
            input_ids=ids.to(backend.device),
            attention_mask=mask.to(backend.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=backend.pad_id,
        )
    texts = backend.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return [t.split(stop)[0].strip() for t in texts]


def auc(scores: list[float], labels: list[bool]) -> float | None:
    """P(score of a positive > score of a negative), ties ½; None without both kinds."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def rationale_analysis(
    run_dir,
    episodes: list[dict],
    backend,
    judge: Judge | None = None,
    limit: int = 20,
    max_new_tokens: int = 40,
) -> dict[str, Any] | None:
    """ℓ_k for every candidate of the last slate of up to ``limit`` mixed maestro slates; AUC and top-1.

    Only slates with both correct and wrong candidates are informative, so those are taken first.
    """
    setup = ReplaySetup.for_run(run_dir)
    if setup.protocol != "maestro" or setup.cfg.central != "select":
        raise ConfigError(f"{run_dir}: decision-vs-rationale needs a maestro run with central=select")
    _need_hf(backend)
    judge = judge or Judge.for_run(run_dir)
    chosen = []
    for ep in episodes:
        rs = [r for r in rounds(ep, judge) if r.synth_node is not None]
        if not rs:
            continue
        rnd = rs[-1]
        labels = [bool(c.correct) for c in rnd.candidates]
        if any(labels) and not all(labels):
            chosen.append((ep, rnd, labels))
        if len(chosen) >= limit:
            break
    if not chosen:
        return None
    tok = backend.tokenizer
    prefixes, index = [], []
    for e_i, (ep, rnd, _) in enumerate(chosen):
        _, req = synth_request(setup, judge.task(ep), rnd.candidates)
        prompt_ids = backend.encode_chat(req.messages)
        for k in range(len(rnd.candidates)):
            pre = prompt_ids + tok(f"<choice>{k + 1}</choice><why>", add_special_tokens=False)["input_ids"]
            prefixes.append(pre)
            index.append((e_i, k))
    justifications = greedy_continue(backend, prefixes, max_new_tokens)
    conts = [tok(j, add_special_tokens=False)["input_ids"] for j in justifications]
    scored = score_continuations(backend, prefixes, conts)
    per: dict[int, list[float]] = {}
    for (e_i, _k), (lp, n) in zip(index, scored, strict=True):
        per.setdefault(e_i, []).append(lp / n if n else float("-inf"))
    slates = []
    for e_i, (ep, rnd, labels) in enumerate(chosen):
        ell = per[e_i]
        best = max(range(len(ell)), key=lambda k: ell[k])
        slates.append(
            {
                "task_id": ep["task_id"],
                "ell": ell,
                "correct": labels,
                "auc": auc(ell, labels),
                "top1": labels[best],
                "chance": sum(labels) / len(labels),
                "decision_correct": bool(rnd.synth_correct),
            }
        )
    return {
        "model": backend.name,
        "slates": len(slates),
        "generations": len(prefixes),
        "auc": mean_ci([s["auc"] for s in slates]),
        "top1": mean_ci([float(s["top1"]) for s in slates]),
        "chance": mean_ci([s["chance"] for s in slates]),
        "decision_accuracy": mean_ci([float(s["decision_correct"]) for s in slates]),
        "detail": slates,
    }
