"""The trainer's loss is the tested objective's: on one batch, ``trainer._optimise`` (the code a training step
runs) and the functions of rl/objectives.py called on log-probs computed here by a plain forward pass give
the same loss and the same LoRA gradient, for CLPO (all four terms, format failures, micro-batches), GRPO,
Dr. GRPO and SFT. The model is a real, tiny, randomly initialised transformers Llama with a random LoRA
adapter (peft, init_lora_weights=False: the policy differs from the reference, so the KL has a gradient),
built from a config in the test: no download, fp32, CPU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from tiny_llama import tiny_llama

from workbench.rl import objectives as obj
from workbench.rl.config import TrainConfig
from workbench.rl.policy import PolicyBackends
from workbench.rl.rollouts import Sample, Slate, _score_offline
from workbench.rl.trainer import _optimise
from workbench.tasks import Task

TEMPERATURE = 0.9


@pytest.fixture(scope="module")
def tiny():
    """A 1-layer Llama over a character vocabulary, wrapped in a random LoRA adapter."""
    from peft import LoraConfig, get_peft_model

    base, tokenizer = tiny_llama(max_positions=128)
    model = get_peft_model(
        base,
        LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False
        ),
    )
    # the trainer's own PolicyBackends (no rollout engine), over the tiny model
    policy = SimpleNamespace(model=model, pad_id=0, tokenizer=tokenizer)
    return SimpleNamespace(model=model, tokenizer=tokenizer, backends=PolicyBackends(policy, frozen=None))


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------------------------------------- the batch
SLATES = [[True, False, False], [False, True, True]]  # two questions, m = 3 candidates each
# per sample: question, completion text, pick (None: format failure), decision tokens (None: whole text)
DECISIONS = [
    (0, "<choice>1</choice><why>a</why>", 0, 18),
    (0, "<choice>2</choice><why>bb</why>", 1, 18),
    (0, "the answer is 2", None, 16),  # never closed: the decision span is the length of <choice>3</choice>
    (1, "<choice>3</choice><why>c</why>", 2, 18),
    (1, "<choice>1</choice>", 0, 18),
    (1, "<choice>7</choice>x", None, 18),  # closed but out of range: a format failure
]


def _batch(tiny):
    tok = tiny.tokenizer
    prompts = [_ids(tok, "Q: 2+2? C1 4 C2 5 C3 6"), _ids(tok, "Q: 3*3? C1 6 C2 9 C3 9")]
    samples = []
    for q, text, pick, span in DECISIONS:
        correct = pick is not None and SLATES[q][pick]
        samples.append(
            Sample(
                q,
                None,
                prompts[q],
                _ids(tok, text) + [1],
                None,
                text,
                float(correct),
                correct,
                pick is None,
                decision_tokens=span,
                info={"pick": pick, "slate_correct": SLATES[q]},
            )
        )
    slates = []
    for q, right in enumerate(SLATES):
        why = ["it adds up", "no", "because 9"]
        slates.append(
            Slate(
                q,
                [prompts[q] + _ids(tok, f"<choice>{k + 1}</choice><why>") for k in range(3)],
                [_ids(tok, why[k][: 3 + q + k]) + [1] for k in range(3)],
                [float(c) for c in right],
            )
        )
    return samples, slates


def _scores(model, prompts, completions, reference=False):
    """(B, T) log-probs at TEMPERATURE, entropies, mask: one plain forward per sequence (not the trainer's
    batched, prompt-sharing path)."""
    T = max(len(c) for c in completions)
    logp = torch.zeros(len(prompts), T)
    ent = torch.zeros(len(prompts), T)
    mask = torch.zeros(len(prompts), T)
    rows_lp, rows_ent = [], []
    for p, c in zip(prompts, completions, strict=True):
        ids = torch.tensor([p + c])
        if reference:
            with model.disable_adapter(), torch.no_grad():
                logits = model(input_ids=ids).logits[0]
        else:
            logits = model(input_ids=ids).logits[0]
        logits = logits[len(p) - 1 : len(p) + len(c) - 1].float() / TEMPERATURE  # position t predicts t+1
        lsm = torch.log_softmax(logits, -1)
        rows_lp.append(lsm.gather(1, torch.tensor(c)[:, None]).squeeze(1))
        rows_ent.append(-(lsm.exp() * lsm).sum(-1))
    for b, c in enumerate(completions):
        mask[b, : len(c)] = 1
    logp = torch.stack([torch.nn.functional.pad(r, (0, T - len(r))) for r in rows_lp])
    ent = torch.stack([torch.nn.functional.pad(r, (0, T - len(r))) for r in rows_ent])
    return logp, ent, mask


def _cfg(objective="clpo", **train):
    settings = {
        "objective": objective,
        "temperature": TEMPERATURE,
        "micro_batch": 64,
        "max_grad_norm": 1e6,  # no clipping: the gradients compared are the loss's
        "max_tokens": 40,
        **train,
    }
    recipe = "leader" if objective == "dr_grpo" else "maestro"
    return TrainConfig.build({"recipe": recipe, "train": settings})


def _trainer_grads(tiny, cfg, samples, adv=None, slates=()):
    params = [p for p in tiny.model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.0)  # the step leaves the weights (and .grad) as they are
    stats = _optimise(cfg, tiny.backends, optimizer, samples, adv, list(slates))
    return stats, [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def _grads(tiny, loss):
    params = [p for p in tiny.model.parameters() if p.requires_grad]
    return [g if g is not None else torch.zeros_like(p) for g, p in
            zip(torch.autograd.grad(loss, params, allow_unused=True), params, strict=True)]  # fmt: skip


def _assert_same(ours, theirs):
    assert any(g.abs().sum() > 0 for g in theirs)  # a gradient to compare
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def _clpo_reference(tiny, cfg, samples, slates):
    """clpo_loss on one micro-batch, every input built here from the samples and slates."""
    t = cfg.train
    model = tiny.model
    logp, ent, mask = _scores(model, [s.prompt_ids for s in samples], [s.completion_ids for s in samples])
    ref = None
    if t.beta > 0:
        ref, _, _ = _scores(
            model, [s.prompt_ids for s in samples], [s.completion_ids for s in samples], reference=True
        )
    dec_mask = mask.clone()
    for b, s in enumerate(samples):
        dec_mask[b, s.decision_tokens :] = 0
    by_q = {sl.group: sl for sl in slates}
    rl, rm = [], []
    width = max(len(r) for sl in slates for r in sl.rationale_ids)
    for s in samples:
        sl = by_q[s.group]
        lp, _, mk = _scores(model, sl.prompt_ids, sl.rationale_ids)
        rl.append(torch.nn.functional.pad(lp, (0, width - lp.shape[1])))
        rm.append(torch.nn.functional.pad(mk, (0, width - mk.shape[1])))
    return obj.clpo_loss(
        dec_logp=logp,
        dec_old_logp=None,
        dec_mask=dec_mask,
        slate_rewards=torch.tensor([[float(c) for c in s.info["slate_correct"]] for s in samples]),
        chosen=torch.tensor([-1 if s.info["pick"] is None else s.info["pick"] for s in samples]),
        rationale_logp=torch.stack(rl),
        rationale_mask=torch.stack(rm),
        ref_logp=ref,
        ref_mask=mask if ref is not None else None,
        entropy=ent,
        entropy_mask=mask,
        w_dec=t.w_dec,
        w_rank=t.w_rank,
        beta=t.beta,
        w_ent=t.w_ent,
        epsilon=t.epsilon,
        ties=t.ties,
    )


# ---------------------------------------------------------------------------------------------- CLPO
@pytest.mark.parametrize("micro_batch", [64, 4])
@pytest.mark.parametrize("ties", ["exclude", "breslow"])
def test_trainer_clpo_loss_and_gradient_equal_clpo_loss(tiny, micro_batch, ties):
    """All four terms on (w_dec, w_rank, β, w_ent all > 0), a never-closed and an out-of-range decision in
    the batch; with micro-batches (a question's samples split across two) the step's loss and gradient are
    the share-weighted sum of clpo_loss on each micro-batch."""
    samples, slates = _batch(tiny)
    cfg = _cfg(w_dec=1.0, w_rank=0.5, beta=0.1, w_ent=0.05, micro_batch=micro_batch, ties=ties)
    stats, ours = _trainer_grads(tiny, cfg, samples, None, slates)
    loss = 0.0
    for s0 in range(0, len(samples), micro_batch):
        mb = samples[s0 : s0 + micro_batch]
        loss = loss + _clpo_reference(tiny, cfg, mb, slates).loss * (len(mb) / len(samples))
    assert stats["loss"] == pytest.approx(float(loss.detach()), abs=1e-6)
    assert stats["rank_loss"] > 0 and stats["kl"] > 0
    _assert_same(ours, _grads(tiny, loss))


@pytest.mark.parametrize(
    "weights",
    [
        {"w_dec": 0.0, "w_rank": 0.0, "beta": 0.0, "w_ent": 1.0},  # the entropy bonus alone
        {"w_dec": 0.0, "w_rank": 0.0, "beta": 0.5, "w_ent": 0.0},  # the KL alone: w_dec = 0 keeps it
        {"w_dec": 0.0, "w_rank": 1.0, "beta": 0.0, "w_ent": 0.0},  # the ranking term alone
        {"w_dec": 1.0, "w_rank": 0.0, "beta": 0.0, "w_ent": 0.0},  # the decision term alone
    ],
)
def test_each_clpo_term_alone_moves_the_policy_as_clpo_loss_says(tiny, weights):
    """Each term has a nonzero LoRA gradient on its own (before, the entropy came back detached and the KL
    was multiplied by w_dec) and it is clpo_loss's."""
    samples, slates = _batch(tiny)
    cfg = _cfg(**weights)
    stats, ours = _trainer_grads(tiny, cfg, samples, None, slates)
    assert sum(float(g.norm()) for g in ours) > 1e-6
    ref = _clpo_reference(tiny, cfg, samples, slates)
    assert stats["loss"] == pytest.approx(float(ref.loss), abs=1e-6)
    _assert_same(ours, _grads(tiny, ref.loss))


def test_a_format_failure_gets_decision_reward_0_on_its_decision_span_only(tiny):
    """A decision that never closes trains on the tokens a decision takes, not on the whole completion:
    its later tokens get no gradient from the decision term."""
    samples, slates = _batch(tiny)
    failed = samples[2]  # "the answer is 2", decision span 16 of 16 + 1 tokens
    long_text = "the answer is 2 and then a lot more words follow here"
    failed.completion_ids = _ids(tiny.tokenizer, long_text) + [1]
    cfg = _cfg(w_dec=1.0, w_rank=0.0, beta=0.0, w_ent=0.0)
    stats, ours = _trainer_grads(tiny, cfg, [failed], None, slates)
    # advantage: r = 0 for the failure, minus the slate mean 1/3; gradient of the decision tokens only
    logp, _, mask = _scores(tiny.model, [failed.prompt_ids], [failed.completion_ids])
    span = torch.zeros_like(mask)
    span[0, : failed.decision_tokens] = 1
    expected = (1 / 3) * (logp * span).sum() / span.sum()  # the gradient of −A·ρ (ρ = 1 in value), A = −1/3
    assert stats["dec_loss"] == pytest.approx(1 / 3, abs=1e-6)  # −A · ratio 1
    _assert_same(ours, _grads(tiny, expected))


# ---------------------------------------------------------------------------------------------- GRPO family, SFT
@pytest.mark.parametrize("objective", ["grpo", "dr_grpo"])
def test_trainer_grpo_and_dr_grpo_equal_the_objectives(tiny, objective):
    samples, _ = _batch(tiny)
    cfg = _cfg(objective, beta=0.1, micro_batch=4)
    adv = torch.tensor([0.5, -1.0, 0.25, 1.5, -0.5, -0.75])
    stats, ours = _trainer_grads(tiny, cfg, samples, adv)
    loss = 0.0
    for s0 in range(0, len(samples), 4):
        mb = samples[s0 : s0 + 4]
        prompts, comps = [s.prompt_ids for s in mb], [s.completion_ids for s in mb]
        logp, _, mask = _scores(tiny.model, prompts, comps)
        ref, _, _ = _scores(tiny.model, prompts, comps, reference=True)
        fn = obj.grpo if objective == "grpo" else obj.dr_grpo
        extra = {"max_completion_length": 40} if objective == "dr_grpo" else {}
        out = fn(logp, None, adv[s0 : s0 + 4], mask, ref_logp=ref, beta=0.1, **extra)
        loss = loss + out.loss * (len(mb) / len(samples))
    assert stats["loss"] == pytest.approx(float(loss.detach()), abs=1e-6)
    _assert_same(ours, _grads(tiny, loss))


def test_trainer_sft_equals_sft_loss_on_the_right_completions(tiny):
    samples, _ = _batch(tiny)
    cfg = _cfg("sft")
    stats, ours = _trainer_grads(tiny, cfg, samples)
    right = [s for s in samples if s.correct]
    assert 0 < len(right) < len(samples)
    params = [p for p in tiny.model.parameters() if p.requires_grad]
    # SFT scores at temperature 1 (the model's own distribution), as the trainer does
    lp = []
    for s in right:
        logits = tiny.model(input_ids=torch.tensor([s.prompt_ids + s.completion_ids])).logits[0]
        logits = logits[len(s.prompt_ids) - 1 : -1]
        lp.append(
            torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(s.completion_ids)[:, None])[:, 0]
        )
    width = max(len(x) for x in lp)
    logp = torch.stack([torch.nn.functional.pad(x, (0, width - len(x))) for x in lp])
    mask = torch.stack([torch.nn.functional.pad(torch.ones(len(x)), (0, width - len(x))) for x in lp])
    out = obj.sft_loss(logp, mask)
    assert stats["loss"] == pytest.approx(float(out.loss), abs=1e-6)
    _assert_same(ours, [g for g in torch.autograd.grad(out.loss, params)])


# ---------------------------------------------------------------------------------------------- strict decisions
@pytest.mark.parametrize(
    "text, pick, closed",
    [
        ("<choice>2</choice><why>sums</why>", 1, True),
        ("the answer is 2", None, False),  # lenient evaluation would read candidate 2
        ("Candidate 1 is right. <choice>1", None, False),  # never closed
        ("<choice>1</choice> no, <choice>3</choice>", None, True),  # two different picks
        ("<choice>9</choice>", None, True),  # out of range
    ],
)
def test_training_rollouts_read_decisions_strictly(tiny, text, pick, closed):
    """rollouts._score_offline (what offline training scores): only a well-formed <choice> is a decision; a
    failure has reward 0 and its decision span is never the whole completion."""
    from workbench.models.base import Generation

    task = Task("t1", "2+2?", "4")
    slate = [{"text": t, "extracted": t, "correct": t == "4"} for t in ("5", "4", "6")]
    ids = _ids(tiny.tokenizer, text + " and more text after it")
    g = Generation(text, ids, 2, len(ids), "stop", 0.0, prompt_ids=[3, 4])
    s = _score_offline("maestro", 0, task, slate, g, tiny.tokenizer, None)
    assert s.info["pick"] == pick
    assert s.format_failure == (pick is None)
    assert s.reward == (1.0 if pick == 1 else 0.0)
    assert s.info["parse"] == ("strict" if pick is not None else "failed")
    assert 1 <= s.decision_tokens < len(ids)
    if not closed:
        assert s.decision_tokens == len(_ids(tiny.tokenizer, "<choice>3</choice>"))
