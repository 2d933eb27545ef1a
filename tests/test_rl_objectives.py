"""workbench.rl.objectives: hand-computed numbers, gradients, and parity with TRL's own GRPO code."""

import math

import pytest
import torch

from workbench.rl.objectives import (
    LossOutput,
    clpo_loss,
    conductor_reward,
    dr_grpo,
    group_advantages,
    grpo,
    k3_kl,
    length_normalised_logprob,
    plackett_luce_loss,
    policy_loss,
    sft_loss,
)

LN2 = math.log(2)


# ---------------------------------------------------------------------------------------------- advantages


def test_group_advantages_group_scale_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.0, 1.0, 2.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    adv = group_advantages(rewards, groups, scale="group")
    # group 0: mean 0.5, deviations (0.5, -0.5, 0); unbiased var (0.25 + 0.25 + 0) / 2 = 0.25, std 0.5
    #          -> 0.5 / (0.5 + 1e-4) = 0.99980004
    # group 1: mean 1/3, deviations (-1/3, -1/3, 2/3); var (1/9 + 1/9 + 4/9) / 2 = 1/3, std 0.57735027
    #          -> (-1/3) / 0.57745027 = -0.57725022, (2/3) / 0.57745027 = 1.15450045
    # group 2: a single member -> 0
    s1 = math.sqrt(1 / 3) + 1e-4
    expected = [0.5 / 0.5001, -0.5 / 0.5001, 0.0, -1 / 3 / s1, -1 / 3 / s1, 2 / 3 / s1, 0.0]
    assert adv.tolist() == pytest.approx(expected, abs=1e-6)


def test_group_advantages_no_scale_is_dr_grpo():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.0, 1.0, 2.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    adv = group_advantages(rewards, groups, scale="none")
    # r - group mean: (1 - .5, 0 - .5, .5 - .5), (0 - 1/3, 0 - 1/3, 1 - 1/3), single-member group -> 0
    assert adv.tolist() == pytest.approx([0.5, -0.5, 0.0, -1 / 3, -1 / 3, 2 / 3, 0.0], abs=1e-7)


def test_group_advantages_unsorted_ids_nan_and_batch_scale():
    # groups 7 -> (1, 0) and 3 -> (1, nan, 0): the NaN is left out of its group and gets 0
    rewards = torch.tensor([1.0, 1.0, float("nan"), 0.0, 0.0])
    groups = torch.tensor([7, 3, 3, 7, 3])
    # group 7: mean 0.5, std sqrt(0.5) = 0.70710678; group 3 (scored 1, 0): the same
    s = math.sqrt(0.5) + 1e-4
    expected = [0.5 / s, 0.5 / s, 0.0, -0.5 / s, -0.5 / s]
    assert group_advantages(rewards, groups).tolist() == pytest.approx(expected, abs=1e-6)
    # batch: std of the four scored rewards (1, 1, 0, 0): mean .5, var (4 * .25) / 3 = 1/3
    b = math.sqrt(1 / 3) + 1e-4
    expected = [0.5 / b, 0.5 / b, 0.0, -0.5 / b, -0.5 / b]
    assert group_advantages(rewards, groups, scale="batch").tolist() == pytest.approx(expected, abs=1e-6)


def test_group_advantages_rejects_bad_input():
    with pytest.raises(ValueError, match="group_ids"):
        group_advantages(torch.zeros(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.zeros(2), torch.zeros(2, dtype=torch.long), scale="std")
    with pytest.raises(ValueError, match="inf"):
        group_advantages(torch.tensor([1.0, float("inf")]), torch.zeros(2, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- GRPO family


def _tiny_batch():
    """B = 2, T = 3. Old log-probs -1; current log-probs -1 + ln(ratio) for the ratios below."""
    ratios = torch.tensor([[1.0, 1.5, 0.5], [1.0, 0.5, 1.5]])
    old = torch.full((2, 3), -1.0)
    logp = (old + ratios.log()).requires_grad_()
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    # ref - logp per token: ln2 on (0, 0), -ln2 on (1, 1), 0 elsewhere
    ref = logp.detach() + torch.tensor([[LN2, 0.0, 0.0], [0.0, -LN2, 0.0]])
    return logp, old, adv, mask, ref


# Per-token surrogate, eps = 0.2, clip range [0.8, 1.2], l = -min(r*A, clip(r)*A):
#  seq 0 (A = +1): r=1   -> -1;  r=1.5 -> -min(1.5, 1.2) = -1.2 (high clip);  r=0.5 -> -min(.5, .8) = -0.5
#  seq 1 (A = -2): r=1   -> +2;  r=0.5 -> -min(-1, -1.6) = 1.6 (low clip);    r=1.5 -> masked out
# Sums: seq 0 = -2.7 over 3 tokens, seq 1 = 3.6 over 2 tokens; 5 counted tokens, 2 of them clipped.
def test_policy_loss_grpo_dr_grpo_bnpo_by_hand():
    logp, old, adv, mask, _ = _tiny_batch()
    out = policy_loss(logp, old, adv, mask, loss_type="grpo")
    assert isinstance(out, LossOutput)
    assert out.loss.item() == pytest.approx((-2.7 / 3 + 3.6 / 2) / 2, abs=1e-6)  # (-0.9 + 1.8) / 2 = 0.45
    assert out.stats["clip_ratio"] == pytest.approx(2 / 5)
    assert out.stats["clip_ratio_low"] == pytest.approx(1 / 5)
    assert out.stats["clip_ratio_high"] == pytest.approx(1 / 5)
    assert out.stats["kl"] == 0.0
    out = policy_loss(logp, old, adv, mask, loss_type="dr_grpo", max_completion_length=4)
    assert out.loss.item() == pytest.approx(0.9 / (2 * 4), abs=1e-6)  # (-2.7 + 3.6) / (B * L) = 0.1125
    out = policy_loss(logp, old, adv, mask, loss_type="bnpo")
    assert out.loss.item() == pytest.approx(0.9 / 5, abs=1e-6)  # 0.18
    # the named wrappers are the same functions
    assert grpo(logp, old, adv, mask).loss.item() == pytest.approx(0.45, abs=1e-6)
    assert dr_grpo(logp, old, adv, mask, max_completion_length=4).loss.item() == pytest.approx(
        0.1125, abs=1e-6
    )


def test_policy_loss_with_kl_by_hand():
    logp, old, adv, mask, ref = _tiny_batch()
    # k3 with d = ref - logp: d = ln2 -> 2 - ln2 - 1 = 0.30685282; d = -ln2 -> 0.5 + ln2 - 1 = 0.19314718
    # grpo adds beta * (0.30685282 / 3 + 0.19314718 / 2) / 2 = 0.1 * 0.09942877 to 0.45
    out = policy_loss(logp, old, adv, mask, ref_logp=ref, beta=0.1, loss_type="grpo")
    assert out.loss.item() == pytest.approx(0.45 + 0.1 * (0.30685282 / 3 + 0.19314718 / 2) / 2, abs=1e-6)
    assert out.stats["kl"] == pytest.approx(0.5 / 5, abs=1e-6)  # (0.30685282 + 0.19314718) / 5 tokens
    # beta = 0 with a reference: the KL is logged, not added
    out = policy_loss(logp, old, adv, mask, ref_logp=ref, beta=0.0)
    assert out.loss.item() == pytest.approx(0.45, abs=1e-6) and out.stats["kl"] == pytest.approx(
        0.1, abs=1e-6
    )


def test_k3_kl_by_hand():
    logp = torch.tensor([-1.0, -1.0, -1.0])
    ref = torch.tensor([-1.0, -1.0 + LN2, -1.0 - LN2])
    # d = 0 -> 1 - 0 - 1 = 0; d = ln2 -> 2 - ln2 - 1; d = -ln2 -> 0.5 + ln2 - 1
    assert k3_kl(logp, ref).tolist() == pytest.approx([0.0, 1 - LN2, LN2 - 0.5], abs=1e-7)
    with pytest.raises(ValueError, match="ref_logp"):
        k3_kl(logp, ref[:2])


def test_policy_loss_gradients_flow_and_on_policy_default():
    logp, old, adv, mask, ref = _tiny_batch()
    out = policy_loss(logp, None, adv, mask, ref_logp=ref, beta=0.1)
    out.loss.backward()
    # on-policy (ratio 1, no clip): d loss / d logp_t = -A * mask_t / n_i / B plus the k3 gradient
    # beta * (1 - exp(ref - logp)) * mask_t / n_i / B; for token (0, 1), d = 0: -1 / 3 / 2
    assert torch.isfinite(logp.grad).all()
    assert float(logp.grad[0, 1]) == pytest.approx(-1 / 6, abs=1e-6)
    assert float(logp.grad[1, 2]) == 0.0  # masked


def test_policy_loss_rejects_bad_input():
    logp, old, adv, mask, ref = _tiny_batch()
    with pytest.raises(ValueError, match="mask"):
        policy_loss(logp, old, adv, mask[:, :2])
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(logp, old, adv[:1], mask)
    with pytest.raises(ValueError, match="old_logp"):
        policy_loss(logp, old[:1], adv, mask)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, old, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="max_completion_length"):
        policy_loss(logp, old, adv, mask, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="loss_type"):
        policy_loss(logp, old, adv, mask, loss_type="dapo")


# ---------------------------------------------------------------------------------------------- ranking


def test_plackett_luce_without_ties_by_hand():
    scores = torch.log(torch.tensor([1.0, 2.0, 3.0]))
    # order by reward: candidate 0, 1, 2 -> -[ln1 - ln(1+2+3)] - [ln2 - ln(2+3)] - [ln3 - ln3] = ln6 + ln2.5
    for ties in ("exclude", "breslow", "index"):
        assert float(plackett_luce_loss(scores, torch.tensor([3.0, 2.0, 1.0]), ties)) == pytest.approx(
            math.log(15), abs=1e-6
        )
    # reversed rewards: order 2, 1, 0 -> -[ln3 - ln6] - [ln2 - ln3] - 0 = ln6 - ln3 + ln3 - ln2 = ln3
    assert float(plackett_luce_loss(scores, torch.tensor([0.0, 1.0, 2.0]))) == pytest.approx(
        math.log(3), abs=1e-6
    )


def test_plackett_luce_ties_by_hand():
    scores = torch.log(torch.tensor([1.0, 2.0, 3.0]))
    rewards = torch.tensor([1.0, 1.0, 0.0])  # candidates 0 and 1 tie above candidate 2
    # exclude: 0 vs {0, 2}: -(ln1 - ln4); 1 vs {1, 2}: -(ln2 - ln5); 2 vs {2}: 0  -> ln4 + ln2.5 = ln10
    assert float(plackett_luce_loss(scores, rewards, "exclude")) == pytest.approx(math.log(10), abs=1e-6)
    # breslow: 0 and 1 vs {0, 1, 2}: -(ln1 - ln6) - (ln2 - ln6); 2 vs {2}: 0 -> ln6 + ln3 = ln18
    assert float(plackett_luce_loss(scores, rewards, "breslow")) == pytest.approx(math.log(18), abs=1e-6)
    # index: order 0, 1, 2 -> ln6 + ln2.5 = ln15 (as if candidate 0 beat candidate 1)
    assert float(plackett_luce_loss(scores, rewards, "index")) == pytest.approx(math.log(15), abs=1e-6)
    # all tied: exclude 0; breslow 3 ln6 - (ln1 + ln2 + ln3) = ln(216 / 6) = ln36
    flat = torch.ones(3)
    assert float(plackett_luce_loss(scores, flat, "exclude")) == pytest.approx(0.0, abs=1e-7)
    assert float(plackett_luce_loss(scores, flat, "breslow")) == pytest.approx(math.log(36), abs=1e-6)
    # exclude does not depend on the order inside a tie
    swapped = torch.log(torch.tensor([2.0, 1.0, 3.0]))
    assert float(plackett_luce_loss(swapped, rewards)) == pytest.approx(math.log(10), abs=1e-6)


def test_plackett_luce_batched_and_rejects_bad_input():
    scores = torch.log(torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
    rewards = torch.tensor([[3.0, 2.0, 1.0], [1.0, 1.0, 0.0]])
    assert plackett_luce_loss(scores, rewards).tolist() == pytest.approx(
        [math.log(15), math.log(10)], abs=1e-6
    )
    with pytest.raises(ValueError, match="rewards"):
        plackett_luce_loss(scores, rewards[:, :2])
    with pytest.raises(ValueError, match="ties"):
        plackett_luce_loss(scores, rewards, ties="average")


def test_length_normalised_logprob():
    logp = torch.tensor([[-1.0, -3.0, -9.0], [-2.0, -9.0, -9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # (-1 - 3) / 2 = -2 and -2 / 1 = -2
    assert length_normalised_logprob(logp, mask).tolist() == [-2.0, -2.0]


# ---------------------------------------------------------------------------------------------- CLPO


def _clpo_inputs():
    """B = 2 slates of m = 3 candidates; decision spans of 2 tokens; justifications of up to 2 tokens."""
    dec_logp = torch.tensor([[-0.5, -0.2], [-0.1, -0.3]], requires_grad=True)
    rationale_logp = torch.tensor(
        [
            [[-1.0, -3.0], [-1.0, -7.0], [-2.0, -4.0]],  # scores -2, -1 (second token masked), -3
            [[-1.0, -1.0], [-2.0, -2.0], [-3.0, -3.0]],
        ],
        requires_grad=True,
    )
    rationale_mask = torch.tensor([[[1, 1], [1, 0], [1, 1]], [[1, 1], [1, 1], [1, 1]]])
    return dict(
        dec_logp=dec_logp,
        dec_old_logp=None,
        dec_mask=torch.ones(2, 2),
        slate_rewards=torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]),
        chosen=torch.tensor([0, 1]),
        rationale_logp=rationale_logp,
        rationale_mask=rationale_mask,
    )


def test_clpo_loss_terms_by_hand():
    x = _clpo_inputs()
    # KL on the decision tokens: ref - logp = ln2 on token (0, 0), 0 elsewhere -> k3 mean = (1 - ln2) / 4
    ref = x["dec_logp"].detach() + torch.tensor([[LN2, 0.0], [0.0, 0.0]])
    entropy = torch.tensor([[0.5, 1.5], [2.0, 9.0]])
    entropy_mask = torch.tensor([[1, 1], [1, 0]])  # mean (0.5 + 1.5 + 2) / 3 = 4/3
    out = clpo_loss(
        **x,
        ref_logp=ref,
        entropy=entropy,
        entropy_mask=entropy_mask,
        w_dec=1.0,
        w_rank=0.5,
        beta=0.1,
        w_ent=0.01,
    )
    # decision: A = r(chosen) - mean r: slate 0: 1 - 1/3 = 2/3; slate 1: 1 - 1 = 0. On-policy ratio 1,
    # so each decision token costs -A: L_dec = (-2/3 + 0) / 2 = -1/3
    assert out.stats["dec"] == pytest.approx(-1 / 3, abs=1e-6)
    # ranking: slate 0 scores (-2, -1, -3), rewards (1, 0, 0): candidate 0 vs {0, 1, 2}; the tied 1 and 2
    # compete with nobody below them -> -( -2 - logsumexp(-2, -1, -3) ). Slate 1 is all ties -> 0.
    lse = -1 + math.log(1 + math.exp(-1) + math.exp(-2))  # = -0.59239403
    l_rank = (-(-2 - lse) + 0.0) / 2  # = 0.70380299
    assert out.stats["rank"] == pytest.approx(l_rank, abs=1e-6)
    assert out.stats["kl"] == pytest.approx((1 - LN2) / 4, abs=1e-6)
    assert out.stats["entropy"] == pytest.approx(4 / 3, abs=1e-6)
    total = -1 / 3 + 0.5 * l_rank + 0.1 * (1 - LN2) / 4 - 0.01 * 4 / 3
    assert out.loss.item() == pytest.approx(total, abs=1e-6)
    assert out.stats["informative_slates"] == 0.5
    out.loss.backward()
    assert torch.isfinite(x["dec_logp"].grad).all() and torch.isfinite(x["rationale_logp"].grad).all()
    # the justification gradient reaches slate 0 only (slate 1 has no ordering to learn)
    assert x["rationale_logp"].grad[0].abs().sum() > 0 and x["rationale_logp"].grad[1].abs().sum() == 0
    # d L_rank / d s_0 = -(1 - softmax_0) = -(1 - e^-2 / (e^-2 + e^-1 + e^-3)); each of its 2 tokens gets half,
    # times w_rank / B = 0.5 / 2
    p0 = math.exp(-2) / (math.exp(-2) + math.exp(-1) + math.exp(-3))
    assert float(x["rationale_logp"].grad[0, 0, 0]) == pytest.approx(-(1 - p0) / 2 * 0.25, abs=1e-6)


def test_clpo_kl_on_rationales_and_breslow_tie_rule():
    x = _clpo_inputs()
    ref = x["rationale_logp"].detach().clone()
    ref[0, 0, 0] += LN2  # k3 = 1 - ln2 on one of the 11 counted justification tokens
    out = clpo_loss(**x, ref_logp=ref, beta=1.0, w_ent=0.0)
    assert out.stats["kl"] == pytest.approx((1 - LN2) / 11, abs=1e-6)
    # breslow: slate 0 candidates 1, 2 tie at the bottom: -( -1 - lse(-1, -3) ) - ( -3 - lse(-1, -3) ) adds to
    # candidate 0's term; slate 1 still contributes 0 (all rewards equal)
    out_b = clpo_loss(**x, beta=0.0, ties="breslow")
    lse_all = -1 + math.log(1 + math.exp(-1) + math.exp(-2))
    lse_low = -1 + math.log(1 + math.exp(-2))
    expected = (-(-2 - lse_all) - (-1 - lse_low) - (-3 - lse_low)) / 2
    assert out_b.stats["rank"] == pytest.approx(expected, abs=1e-6)


def test_clpo_format_failure_has_decision_reward_0():
    """chosen = -1 (no well-formed decision): r = 0 for the decision term, A = -mean r of the slate."""
    x = _clpo_inputs()
    out = clpo_loss(**{**x, "chosen": torch.tensor([-1, -1])}, w_rank=0.0, beta=0.0, w_ent=0.0)
    # slate 0: A = 0 - 1/3; slate 1: A = 0 - 1. Each decision token costs -A: L_dec = (1/3 + 1) / 2 = 2/3
    assert out.stats["dec"] == pytest.approx(2 / 3, abs=1e-6)
    assert out.stats["adv_dec_mean"] == pytest.approx(-2 / 3, abs=1e-6)
    out.loss.backward()
    # d L / d logp = -A / (2 tokens · 2 episodes): a failure is pushed down
    torch.testing.assert_close(x["dec_logp"].grad, torch.tensor([[1 / 12, 1 / 12], [0.25, 0.25]]))


def test_clpo_entropy_term_carries_the_entropy_gradient():
    x = _clpo_inputs()
    entropy = torch.tensor([[0.5, 1.5], [2.0, 9.0]], requires_grad=True)
    out = clpo_loss(**x, entropy=entropy, w_dec=0.0, w_rank=0.0, beta=0.0, w_ent=0.4)
    out.loss.backward()
    torch.testing.assert_close(entropy.grad, torch.full((2, 2), -0.1))  # -w_ent / 4 tokens


def test_sft_loss_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -5.0], [-0.5, -7.0, -7.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    out = sft_loss(logp, mask)
    assert out.loss.item() == pytest.approx((1 + 2 + 0.5) / 3, abs=1e-6)  # one mean over counted tokens
    out.loss.backward()
    torch.testing.assert_close(logp.grad, -mask / 3.0)
    with pytest.raises(ValueError, match="mask"):
        sft_loss(logp, mask[:, :2])
    with pytest.raises(ValueError, match="B = 0"):
        sft_loss(torch.zeros(0, 3), torch.zeros(0, 3))


def test_clpo_rejects_bad_input():
    x = _clpo_inputs()
    with pytest.raises(ValueError, match="chosen"):
        clpo_loss(**{**x, "chosen": torch.tensor([0, 3])}, beta=0.0)
    with pytest.raises(ValueError, match="chosen"):
        clpo_loss(**{**x, "chosen": torch.tensor([0, -2])}, beta=0.0)
    with pytest.raises(ValueError, match="rationale_logp"):
        clpo_loss(**{**x, "rationale_logp": x["rationale_logp"][:, :2]}, beta=0.0)
    with pytest.raises(ValueError, match="slate_rewards"):
        clpo_loss(**{**x, "slate_rewards": torch.ones(3, 3)}, beta=0.0)
    with pytest.raises(ValueError, match="ref_logp"):
        clpo_loss(**x, beta=0.04)
    with pytest.raises(ValueError, match="ref_logp"):
        clpo_loss(**x, ref_logp=torch.zeros(2, 5), beta=0.04)


# ---------------------------------------------------------------------------------------------- Conductor


@pytest.mark.parametrize(
    "parsed, correct, reward",
    [(False, False, 0.0), (False, True, 0.0), (True, False, 0.5), (True, True, 1.0)],
)
def test_conductor_reward_table(parsed, correct, reward):
    assert conductor_reward(parsed, correct) == reward


# ---------------------------------------------------------------------------------------------- TRL parity
#
# TRL's own code runs on a real (tiny, randomly initialised) Llama saved to disk with a word-level tokenizer:
# GRPOTrainer is built the ordinary way (model path, reward function, GRPOConfig, dataset), nothing in it is
# replaced. The model is in eval mode, where TRL's _compute_loss divides by 1 instead of the
# gradient-accumulation count (the only thing our per-micro-batch loss leaves to the loop).


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    pytest.importorskip(
        "trl", minversion="1.16", reason="the TRL parity tests need trl>=1.16 (pip install -e '.[parity]')"
    )
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-llama")
    words = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(29)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _reward_from_column(prompts, completions, reward, **kwargs):
    """A real TRL reward function: the dataset's ``reward`` column, so the test chooses the rewards."""
    return list(reward)


def _trainer(model_dir, tmp_path, **config):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        report_to="none",
        use_cpu=True,
        bf16=False,
        num_generations=3,
        per_device_train_batch_size=6,
        **config,
    )
    data = Dataset.from_dict({"prompt": ["w1 w2", "w3"], "reward": [0.0, 0.0]})
    trainer = GRPOTrainer(
        model=str(model_dir), reward_funcs=_reward_from_column, args=args, train_dataset=data
    )
    trainer.model.eval()
    return trainer


@pytest.mark.parametrize("scale", ["group", "none", "batch"])
def test_group_advantages_match_trl(tiny_model_dir, tmp_path, scale):
    """TRL runs ``GRPOTrainer._generate_and_score_completions`` end to end (it generates completions with the
    tiny model, calls the reward function, and computes advantages); we compare its ``advantages``."""
    trainer = _trainer(tiny_model_dir, tmp_path, scale_rewards=scale, max_completion_length=3)
    rewards = [1.0, 0.0, 0.5, 0.0, 0.0, 1.0, 0.25, None, 1.0, 0.7, 0.7, 0.7]  # None: unscorable
    prompts = ["w1 w2"] * 3 + ["w3"] * 3 + ["w4 w5 w6"] * 3 + ["w7"] * 3  # 4 groups of num_generations = 3
    out = trainer._generate_and_score_completions(
        [{"prompt": p, "reward": r} for p, r in zip(prompts, rewards, strict=True)]
    )
    ours = group_advantages(
        torch.tensor([float("nan") if r is None else r for r in rewards]),
        torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]),
        scale=scale,
    )
    torch.testing.assert_close(ours, out["advantages"].float(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "bnpo"])
@pytest.mark.parametrize("beta, bias_correction", [(0.0, False), (0.1, False), (0.1, True)])
def test_policy_loss_matches_trl(tiny_model_dir, tmp_path, loss_type, beta, bias_correction):
    """TRL runs ``GRPOTrainer._compute_loss`` (which calls ``_get_per_token_logps_and_entropies`` on the tiny
    model); ours gets the log-probs from that same TRL method. Old and reference log-probs are the current ones
    shifted by fixed offsets so that the clip is active on some tokens. Loss, gradients on every model
    parameter, and the KL / clip-ratio / entropy metrics must agree within 1e-6."""
    length = 5
    trainer = _trainer(
        tiny_model_dir,
        tmp_path,
        loss_type=loss_type,
        beta=beta,
        use_bias_correction_kl=bias_correction,
        max_completion_length=length + 2,
    )
    model = trainer.model
    gen = torch.Generator().manual_seed(1)
    prompt_ids = torch.randint(3, 32, (4, 3), generator=gen)
    completion_ids = torch.randint(3, 32, (4, length), generator=gen)
    completion_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0]])
    completion_ids = completion_ids.masked_fill(completion_mask == 0, 0)
    input_ids = torch.cat([prompt_ids, completion_ids], 1)
    attention_mask = torch.cat([torch.ones_like(prompt_ids), completion_mask], 1)

    with torch.no_grad():
        base, _, _ = trainer._get_per_token_logps_and_entropies(model, input_ids, attention_mask, length)
    old = base + (torch.rand(base.shape, generator=gen) - 0.5) * 0.8  # ratios from e^-0.4 to e^0.4
    ref = base + (torch.rand(base.shape, generator=gen) - 0.5)
    advantages = torch.tensor([1.2, -0.7, 0.3, -1.5])
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": advantages,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
    }
    params = [p for p in model.parameters() if p.requires_grad]

    trl_loss = trainer._compute_loss(model, inputs)
    trl_grads = torch.autograd.grad(trl_loss, params)
    metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}

    logp, entropy, _ = trainer._get_per_token_logps_and_entropies(
        model, input_ids, attention_mask, length, compute_entropy=True
    )
    out = policy_loss(
        logp,
        old,
        advantages,
        completion_mask,
        ref_logp=ref if beta else None,
        beta=beta,
        loss_type=loss_type,
        max_completion_length=length + 2,
        use_bias_correction_kl=bias_correction,
        entropy=entropy,
    )
    our_grads = torch.autograd.grad(out.loss, params)

    assert metrics["clip_ratio/region_mean"] > 0  # the clip is active on some tokens
    assert out.loss.item() == pytest.approx(trl_loss.item(), abs=1e-6)
    for ours, theirs in zip(our_grads, trl_grads, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
    assert out.stats["clip_ratio"] == pytest.approx(metrics["clip_ratio/region_mean"], abs=1e-6)
    assert out.stats["clip_ratio_low"] == pytest.approx(metrics["clip_ratio/low_mean"], abs=1e-6)
    assert out.stats["clip_ratio_high"] == pytest.approx(metrics["clip_ratio/high_mean"], abs=1e-6)
    assert out.stats["entropy"] == pytest.approx(metrics["entropy"], abs=1e-6)
    if beta:
        assert out.stats["kl"] == pytest.approx(metrics["kl"], abs=1e-6)
