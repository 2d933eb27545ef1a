"""RL objectives as pure tensor functions: each docstring holds the equation and where it comes from.

Shapes: B = sequences (or episodes) in the micro-batch, T = padded completion length, m = candidates in a
slate. ``mask`` is 1 on the completion tokens that count (include the EOS token the model emitted) and 0 on
padding. Log-probs are those of the *sampled* tokens only, ``(B, T)``: nothing here needs the full
vocabulary.

Sources:
- GRPO: Shao et al. 2024, "DeepSeekMath" (arXiv 2402.03300), eq. 3 and the k3 KL estimator of eq. 4
  (from J. Schulman, "Approximating KL divergence", 2020).
- Dr. GRPO: Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective"
  (arXiv 2503.20783): no std scaling of the advantage, no per-sequence length normalisation.
- TRL 1.16 ``trl/trainer/grpo_trainer.py``: ``GRPOTrainer._generate_and_score_completions`` (advantages)
  and ``GRPOTrainer._compute_loss`` (loss types ``grpo``, ``bnpo``, ``dr_grpo``); our functions match them
  on identical tensors (tests/test_rl_objectives.py runs TRL's own code).
- ListMLE / Plackett-Luce: Xia et al. 2008, "Listwise Approach to Learning to Rank" (ICML).
- CLPO: Yang et al. 2025 (arXiv 2511.06134), as reconstructed in docs/methods.md (Maestro and CLPO).
- Conductor reward: Nielsen et al. 2025 (arXiv 2512.04388), METHODS.md section 2.

How these depart from TRL: the losses here are per micro-batch; dividing by the number of
gradient-accumulation steps (TRL does it inside ``_compute_loss``) is the training loop's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

LOSS_TYPES = ("grpo", "dr_grpo", "bnpo")
SCALES = ("group", "batch", "none")
TIES = ("exclude", "breslow", "index")
DEFAULT_TIES = "exclude"
STD_EPS = 1e-4  # added to the std before dividing, as TRL does


@dataclass(frozen=True)
class LossOutput:
    """A differentiable scalar loss and plain-float statistics for logging.

    ``stats`` always has ``loss``, ``kl`` (mean per-token k3 KL over the counted tokens, 0.0 without a
    reference) and ``clip_ratio`` (fraction of counted tokens where the clip was active, TRL's
    ``clip_ratio/region_mean``); ``entropy`` when an entropy was given; CLPO adds each term's value.
    """

    loss: Tensor
    stats: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- helpers


def _check_shape(name: str, tensor: Tensor, shape: tuple[int, ...], like: str) -> None:
    if not isinstance(tensor, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)} but must have shape {tuple(shape)} ({like})"
        )


def _check_ndim(name: str, tensor: Tensor, ndim: int, layout: str) -> None:
    if not isinstance(tensor, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() != ndim:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(tensor.shape)}")


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """sum(values * mask) / max(sum(mask), 1): one mean over every counted element."""
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def _seq_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Per-row mean over the counted tokens of the last dimension, (..., T) -> (...)."""
    return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def _clipped_pg(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, epsilon_low: float, epsilon_high: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-token PPO-clip surrogate (Schulman et al. 2017; GRPO eq. 3), advantages broadcast over T.

        ρ = exp(logp − old_logp),  ℓ = −min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A)

    Returns (ℓ, ρ, low-clipped, high-clipped); the clip is active where ρ < 1 − ε_low with A < 0 or
    ρ > 1 + ε_high with A > 0 (TRL's ``is_low_clipped`` / ``is_high_clipped``).
    """
    if epsilon_low < 0 or epsilon_low >= 1 or epsilon_high < 0:
        raise ValueError(
            f"epsilon_low must be in [0, 1) and epsilon_high >= 0, got {epsilon_low} and {epsilon_high}"
        )
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_token = -torch.min(ratio * advantages, clipped * advantages)
    low = (ratio < 1 - epsilon_low) & (advantages < 0)
    high = (ratio > 1 + epsilon_high) & (advantages > 0)
    return per_token, ratio, low, high


# ---------------------------------------------------------------------------------------------- pieces


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(π_θ ‖ π_ref) on tokens sampled from π_θ:

        k3 = exp(ref − logp) − (ref − logp) − 1     (≥ 0, unbiased, low variance)

    Source: J. Schulman, "Approximating KL divergence" (2020); DeepSeekMath (Shao et al. 2024) eq. 4;
    TRL ``GRPOTrainer._compute_loss`` (``per_token_kl``). Same shape in, same shape out.
    """
    _check_shape("ref_logp", ref_logp, tuple(logp.shape), "the shape of logp")
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def length_normalised_logprob(logp: Tensor, mask: Tensor) -> Tensor:
    """Mean log-prob of the counted tokens, (..., T) -> (...):

        ℓ = Σ_t logp_t · mask_t / Σ_t mask_t

    CLPO scores each justification by this (METHODS.md section 1), so long and short justifications are
    comparable. A row with no counted token gets 0 (include the EOS token in the mask so none is empty).
    """
    _check_shape("mask", mask, tuple(logp.shape), "the shape of logp")
    return _seq_mean(logp, mask.to(logp.dtype))


def group_advantages(rewards: Tensor, group_ids: Tensor, scale: str = "group") -> Tensor:
    """Group-relative advantages, (B,) -> (B,). Sequences sharing a ``group_ids`` value answer one prompt.

        A_i = r_i − mean_{j∈g(i)} r_j                      scale="none"   (Dr. GRPO, Liu et al. 2025)
        A_i = (r_i − mean_{g(i)} r) / (std_{g(i)} r + 1e-4)  scale="group"  (GRPO, DeepSeekMath section 4.1.2)
        A_i = (r_i − mean_{g(i)} r) / (std_batch r + 1e-4)   scale="batch"  (TRL's scale_rewards="batch")

    std is the unbiased (Bessel-corrected, n − 1) standard deviation, as TRL's ``nanstd`` computes it in
    ``GRPOTrainer._generate_and_score_completions``. Groups with fewer than two scored members get advantage
    0 (nothing to compare against). A NaN reward marks an unscorable sequence: it is left out of its group's
    mean and std and gets advantage 0 (TRL does the same for completions every reward function skipped).
    Group ids need not be contiguous or sorted.
    """
    _check_ndim("rewards", rewards, 1, "(B,): one reward per sequence")
    _check_shape("group_ids", group_ids, tuple(rewards.shape), "(B,), one group id per reward")
    if group_ids.dtype.is_floating_point or group_ids.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor, got dtype {group_ids.dtype}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    rewards = rewards.detach()
    if not rewards.dtype.is_floating_point:
        rewards = rewards.to(torch.get_default_dtype())
    if torch.isinf(rewards).any():
        raise ValueError(
            "rewards contain ±inf; rewards must be finite (use NaN to mark an unscorable sequence)"
        )

    scored = ~torch.isnan(rewards)
    r = torch.where(scored, rewards, torch.zeros_like(rewards))
    _, group = torch.unique(group_ids, return_inverse=True)  # (B,) in 0..G-1
    num_groups = int(group.max()) + 1 if group.numel() else 0
    zeros = torch.zeros(num_groups, dtype=r.dtype, device=r.device)
    count = zeros.index_add(0, group, scored.to(r.dtype))  # (G,)
    mean = zeros.index_add(0, group, r) / count.clamp(min=1.0)  # (G,)
    dev = torch.where(scored, r - mean[group], torch.zeros_like(r))  # (B,)

    if scale == "group":
        var = zeros.index_add(0, group, dev**2) / (count - 1).clamp(min=1.0)
        adv = dev / (var.sqrt()[group] + STD_EPS)
    elif scale == "batch":
        n = scored.sum()
        batch_var = dev.new_zeros(()) if n < 2 else ((r - r.sum() / n) ** 2 * scored).sum() / (n - 1)
        adv = dev / (batch_var.sqrt() + STD_EPS)
    else:
        adv = dev
    return torch.where(scored & (count[group] >= 2), adv, torch.zeros_like(adv))


# ---------------------------------------------------------------------------------------------- GRPO family


def policy_loss(
    logp: Tensor,
    old_logp: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    use_bias_correction_kl: bool = False,
    entropy: Tensor | None = None,
) -> LossOutput:
    """Clipped policy-gradient loss of the GRPO family (DeepSeekMath eq. 3; TRL ``_compute_loss``).

    Per token (ρ = exp(logp − old_logp), A broadcast over the sequence):

        ℓ_t = −min(ρ_t·A, clip(ρ_t, 1 − ε_low, 1 + ε_high)·A) + β·k3_t

    then, with M the mask, B sequences and L = ``max_completion_length``:

        "grpo"    L = (1/B) Σ_i (Σ_t ℓ_it M_it / Σ_t M_it)     GRPO as published (TRL loss_type="grpo")
        "dr_grpo" L = Σ_it ℓ_it M_it / (B · L)                  Dr. GRPO, Liu et al. 2025 (TRL "dr_grpo")
        "bnpo"    L = Σ_it ℓ_it M_it / Σ_it M_it                 TRL "bnpo" (token mean over the micro-batch)

    ``old_logp=None`` means on-policy (one update per sample): ρ = 1 in value, as TRL does with
    ``logp.detach()``. ``advantages`` is (B,) or per-token (B, T). ``use_bias_correction_kl`` multiplies
    k3 by ρ (DeepSeek-V3.2's unbiased KL gradient; TRL's ``use_bias_correction_kl``, default True there);
    our default False is the plain k3 of DeepSeekMath. ``entropy`` (B, T), if given, is only logged.
    With ``ref_logp`` but β = 0 the KL is logged and not added.
    """
    _check_ndim("logp", logp, 2, "(B, T): log-probs of the sampled completion tokens")
    shape = tuple(logp.shape)
    if shape[0] == 0:
        raise ValueError("logp holds no sequences (B = 0); call the loss on a non-empty micro-batch")
    _check_shape("mask", mask, shape, "the shape of logp, (B, T)")
    if old_logp is None:
        old_logp = logp.detach()
    _check_shape("old_logp", old_logp, shape, "the shape of logp, (B, T)")
    if advantages.dim() == 1:
        _check_shape("advantages", advantages, shape[:1], "(B,) or (B, T)")
        advantages = advantages.unsqueeze(1)
    else:
        _check_shape("advantages", advantages, shape, "(B,) or (B, T)")
    if ref_logp is not None:
        _check_shape("ref_logp", ref_logp, shape, "the shape of logp, (B, T)")
    if entropy is not None:
        _check_shape("entropy", entropy, shape, "the shape of logp, (B, T)")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logp is None:
        raise ValueError(f"beta={beta} needs ref_logp (reference-model log-probs); pass it or set beta=0")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    mask = mask.to(logp.dtype)

    per_token, ratio, low, high = _clipped_pg(logp, old_logp, advantages, epsilon_low, epsilon_high)  # (B, T)
    kl = None
    if ref_logp is not None:
        kl = k3_kl(logp, ref_logp)  # (B, T)
        if use_bias_correction_kl:
            kl = kl * ratio
        if beta != 0.0:
            per_token = per_token + beta * kl

    if loss_type == "grpo":
        loss = _seq_mean(per_token, mask).mean()
    elif loss_type == "dr_grpo":
        if max_completion_length is None or max_completion_length < 1:
            raise ValueError(
                "loss_type='dr_grpo' divides by B * max_completion_length: pass max_completion_length "
                f"(the generation cap), got {max_completion_length!r}"
            )
        loss = (per_token * mask).sum() / (shape[0] * max_completion_length)
    else:  # bnpo
        loss = _masked_mean(per_token, mask)

    with torch.no_grad():
        stats = {
            "loss": float(loss),
            "kl": float(_masked_mean(kl, mask)) if kl is not None else 0.0,
            "clip_ratio": float(_masked_mean((low | high).to(mask.dtype), mask)),
            "clip_ratio_low": float(_masked_mean(low.to(mask.dtype), mask)),
            "clip_ratio_high": float(_masked_mean(high.to(mask.dtype), mask)),
        }
        if entropy is not None:
            stats["entropy"] = float(_masked_mean(entropy, mask))
    return LossOutput(loss=loss, stats=stats)


def grpo(logp: Tensor, old_logp: Tensor | None, advantages: Tensor, mask: Tensor, **options) -> LossOutput:
    """GRPO (DeepSeekMath eq. 3): ``policy_loss`` with ``loss_type="grpo"`` (per-sequence token mean, then
    the mean over sequences). Pair it with ``group_advantages(..., scale="group")``. ``options``: the
    keyword arguments of ``policy_loss``."""
    return policy_loss(logp, old_logp, advantages, mask, loss_type="grpo", **options)


def dr_grpo(
    logp: Tensor,
    old_logp: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    max_completion_length: int,
    **options,
) -> LossOutput:
    """Dr. GRPO (Liu et al. 2025): ``policy_loss`` with ``loss_type="dr_grpo"`` (token sum divided by the
    constant B · max_completion_length, so no per-sequence length normalisation). Pair it with
    ``group_advantages(..., scale="none")`` (no std scaling). MLPO trains with this (METHODS.md section 3)."""
    return policy_loss(
        logp,
        old_logp,
        advantages,
        mask,
        loss_type="dr_grpo",
        max_completion_length=max_completion_length,
        **options,
    )


def sft_loss(logp: Tensor, mask: Tensor) -> LossOutput:
    """Supervised fine-tuning: the mean negative log-likelihood of the counted tokens, (B, T) -> scalar:

        L = −Σ_bt logp_bt · M_bt / Σ_bt M_bt

    (one token mean over the micro-batch, as TRL's ``SFTTrainer`` computes its cross-entropy). The trainer
    uses it for ``objective=sft`` (the central agent on its right picks) and for the warm-start stage.
    """
    _check_ndim("logp", logp, 2, "(B, T): log-probs of the target completion tokens")
    if logp.shape[0] == 0:
        raise ValueError("logp holds no sequences (B = 0); call the loss on a non-empty micro-batch")
    _check_shape("mask", mask, tuple(logp.shape), "the shape of logp, (B, T)")
    loss = -_masked_mean(logp, mask.to(logp.dtype))
    return LossOutput(loss=loss, stats={"loss": float(loss.detach()), "kl": 0.0, "clip_ratio": 0.0})


# ---------------------------------------------------------------------------------------------- ranking


def plackett_luce_loss(scores: Tensor, rewards: Tensor, ties: str = DEFAULT_TIES) -> Tensor:
    """ListMLE: negative Plackett-Luce log-likelihood of the reward order (Xia et al. 2008), (..., m) -> (...).

    Without ties, sort candidates by reward descending, s_(1) .. s_(m); then

        L = −Σ_i [ s_(i) − logsumexp_{j ≥ i} s_(j) ]

    i.e. each candidate must out-score every candidate ranked below it. With C_i the competitor set of
    candidate i this is L = −Σ_i [ s_i − logsumexp_{j ∈ C_i} s_j ], and ``ties`` (open in the CLPO paper,
    METHODS.md section 1) picks C_i among candidates of equal reward:

    - ``"exclude"`` (default): C_i = {i} ∪ {j : r_j < r_i}. A candidate competes only with those it strictly
      beats; tied candidates are neither pushed apart nor together. The loss does not depend on any order
      within a tie, is exactly 0 when all rewards are equal, and for 0/1 rewards reduces to "each correct
      candidate against all wrong ones". CLPO's rewards are mostly 0/1, so ties are the norm: the other two
      choices spend gradient on pairs the reward says nothing about.
    - ``"breslow"``: C_i = {j : r_j ≤ r_i}, Breslow's (1974) tie rule for partial likelihoods: tied
      candidates are in each other's competitor sets, which pulls tied scores towards each other.
    - ``"index"``: break ties by candidate index (a stable sort), i.e. plain ListMLE on one order consistent
      with the rewards. Biased towards low indices (in a slate: the first agents); kept for comparison.

    All three equal ListMLE when no rewards tie. The loss is a sum over the m candidates (not a mean).
    """
    _check_shape("rewards", rewards, tuple(scores.shape), "the shape of scores, (..., m)")
    if scores.dim() < 1 or scores.shape[-1] < 1:
        raise ValueError(f"scores must be (..., m) with m >= 1 candidates, got shape {tuple(scores.shape)}")
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    if torch.isnan(rewards).any():
        raise ValueError("rewards contain NaN; give every candidate a reward (a failed one scores lowest)")
    r_i = rewards.unsqueeze(-1)  # (..., m, 1): the candidate being placed
    r_j = rewards.unsqueeze(-2)  # (..., 1, m): its possible competitors
    m = scores.shape[-1]
    eye = torch.eye(m, dtype=torch.bool, device=scores.device)
    if ties == "exclude":
        competitors = (r_j < r_i) | eye
    elif ties == "breslow":
        competitors = r_j <= r_i
    else:  # index
        later = torch.ones(m, m, dtype=torch.bool, device=scores.device).triu()  # j >= i
        competitors = (r_j < r_i) | ((r_j == r_i) & later)
    s_j = scores.unsqueeze(-2).expand(*scores.shape[:-1], m, m)  # (..., m, m)
    denom = s_j.masked_fill(~competitors, float("-inf")).logsumexp(-1)  # (..., m)
    return -(scores - denom).sum(-1)


# ---------------------------------------------------------------------------------------------- CLPO


def clpo_loss(
    *,
    dec_logp: Tensor,
    dec_old_logp: Tensor | None,
    dec_mask: Tensor,
    slate_rewards: Tensor,
    chosen: Tensor,
    rationale_logp: Tensor,
    rationale_mask: Tensor,
    ref_logp: Tensor | None = None,
    ref_mask: Tensor | None = None,
    entropy: Tensor | None = None,
    entropy_mask: Tensor | None = None,
    w_dec: float = 1.0,
    w_rank: float = 1.0,
    beta: float = 0.04,
    w_ent: float = 1e-3,
    epsilon: float = 0.2,
    ties: str = DEFAULT_TIES,
) -> LossOutput:
    """CLPO's four-term objective for the central agent (Yang et al. 2025; METHODS.md section 1):

        L = w_dec·L_dec + w_rank·L_rank + β·KL − w_ent·H

    - L_dec: clipped policy gradient on the decision tokens (the ``<choice>k</choice>`` span, ``dec_mask``)
      with the slate-mean advantage A_b = r_b(chosen_b) − (1/m) Σ_k r_b(k); per-episode token mean, then the
      mean over the B episodes (as ``policy_loss(loss_type="grpo")``). ``dec_old_logp=None``: on-policy.
      ``chosen_b = -1`` is a format failure (no well-formed decision): its decision reward is 0, so
      A_b = −(1/m) Σ_k r_b(k) (the malformed output is pushed down when the slate held a right answer).
    - L_rank: ℓ_bk = ``length_normalised_logprob`` of the justification generated conditioned on endorsing
      candidate k (current policy, differentiable), L_rank = (1/B) Σ_b ``plackett_luce_loss(ℓ_b, r_b, ties)``.
      A slate whose rewards are all equal orders nothing: it contributes 0 (and still counts in the 1/B).
    - KL: mean k3 against the reference over the tokens ``ref_logp`` covers, independent of ``w_dec``. ``ref_logp`` is (B, T), paired
      with ``dec_logp`` (for example the whole sampled output, with ``ref_mask`` marking it; default
      ``dec_mask``), or (B, m, T2), paired with ``rationale_logp`` (default mask ``rationale_mask``).
    - H: mean of the given per-token entropy (any shape; ``entropy_mask`` of the same shape, default all
      counted). It must carry gradient for −w_ent·H to move the policy (``completion_logprobs(...,
      entropy_grad=True)``); ``None`` gives H = 0.

    Default weights (the paper's are not public; sweep them): w_dec = 1 (the reference scale); w_rank = 1,
    since at initialisation both terms move each token's log-prob by O(1/length) per episode; β = 0.04, the
    DeepSeekMath GRPO value; w_ent = 1e-3, a small bonus against entropy collapse across rounds (a reviewer
    concern). ``epsilon`` is the symmetric clip range of the decision term.
    """
    _check_ndim("dec_logp", dec_logp, 2, "(B, T): log-probs of the central agent's sampled tokens")
    batch, _ = dec_logp.shape
    if batch == 0:
        raise ValueError("dec_logp holds no episodes (B = 0); call the loss on a non-empty micro-batch")
    _check_shape("dec_mask", dec_mask, tuple(dec_logp.shape), "the shape of dec_logp, (B, T)")
    _check_ndim("slate_rewards", slate_rewards, 2, "(B, m): the reward of each candidate in each slate")
    if slate_rewards.shape[0] != batch:
        raise ValueError(
            f"slate_rewards has {slate_rewards.shape[0]} slates but dec_logp has {batch} episodes (B must match)"
        )
    m = slate_rewards.shape[1]
    if m < 1:
        raise ValueError("slate_rewards has no candidates (m = 0)")
    _check_shape("chosen", chosen, (batch,), "(B,): the endorsed candidate index per episode")
    if chosen.dtype.is_floating_point or chosen.dtype == torch.bool:
        raise ValueError(f"chosen must be an integer tensor of candidate indices, got dtype {chosen.dtype}")
    if int(chosen.min()) < -1 or int(chosen.max()) >= m:
        raise ValueError(
            f"chosen must hold indices in [0, {m}) (m = slate size) or -1 (no valid decision), "
            f"got {chosen.tolist()}"
        )
    _check_ndim("rationale_logp", rationale_logp, 3, "(B, m, T2): justification log-probs per candidate")
    if tuple(rationale_logp.shape[:2]) != (batch, m):
        raise ValueError(
            f"rationale_logp has shape {tuple(rationale_logp.shape)} but must start with (B, m) = {(batch, m)}"
        )
    _check_shape("rationale_mask", rationale_mask, tuple(rationale_logp.shape), "the shape of rationale_logp")
    for name, weight in (("w_dec", w_dec), ("w_rank", w_rank), ("beta", beta), ("w_ent", w_ent)):
        if weight < 0:
            raise ValueError(f"{name} must be >= 0, got {weight}")
    if torch.isnan(slate_rewards).any():
        raise ValueError("slate_rewards contain NaN; give every candidate a reward (a failed one scores 0)")

    # ---- decision term ----
    rewards = slate_rewards.detach().to(dec_logp.dtype)  # (B, m)
    valid = chosen >= 0  # (B,): -1 marks a format failure, whose decision reward is 0
    picked = rewards.gather(1, chosen.long().clamp(min=0).unsqueeze(1)).squeeze(1)  # (B,)
    adv = torch.where(valid, picked, torch.zeros_like(picked)) - rewards.mean(1)  # (B,)
    old = dec_logp.detach() if dec_old_logp is None else dec_old_logp
    _check_shape("dec_old_logp", old, tuple(dec_logp.shape), "the shape of dec_logp, (B, T)")
    dmask = dec_mask.to(dec_logp.dtype)
    per_token, _, low, high = _clipped_pg(dec_logp, old, adv.unsqueeze(1), epsilon, epsilon)  # (B, T)
    l_dec = _seq_mean(per_token, dmask).mean()

    # ---- ranking term ----
    scores = length_normalised_logprob(rationale_logp, rationale_mask)  # (B, m)
    informative = rewards.amax(1) > rewards.amin(1)  # (B,): some candidate strictly better than another
    per_slate = plackett_luce_loss(scores, rewards.to(scores.dtype), ties)  # (B,)
    l_rank = torch.where(informative, per_slate, torch.zeros_like(per_slate)).mean()

    # ---- KL to the reference ----
    if beta > 0 and ref_logp is None:
        raise ValueError(f"beta={beta} needs ref_logp (reference-model log-probs); pass it or set beta=0")
    kl = dec_logp.new_zeros(())
    if ref_logp is not None:
        if ref_logp.dim() == 2:
            policy, pair, default_mask = dec_logp, "dec_logp", dec_mask
        elif ref_logp.dim() == 3:
            policy, pair, default_mask = rationale_logp, "rationale_logp", rationale_mask
        else:
            raise ValueError(f"ref_logp must be (B, T) or (B, m, T2), got shape {tuple(ref_logp.shape)}")
        _check_shape("ref_logp", ref_logp, tuple(policy.shape), f"the shape of {pair}, which it pairs with")
        kmask = default_mask if ref_mask is None else ref_mask
        _check_shape("ref_mask", kmask, tuple(policy.shape), f"the shape of {pair}")
        kl = _masked_mean(k3_kl(policy, ref_logp), kmask.to(policy.dtype))

    # ---- entropy bonus ----
    ent = dec_logp.new_zeros(())
    if entropy is not None:
        emask = torch.ones_like(entropy) if entropy_mask is None else entropy_mask
        _check_shape("entropy_mask", emask, tuple(entropy.shape), "the shape of entropy")
        ent = _masked_mean(entropy, emask.to(entropy.dtype))

    loss = w_dec * l_dec + w_rank * l_rank + beta * kl - w_ent * ent
    with torch.no_grad():
        stats = {
            "loss": float(loss),
            "dec": float(l_dec),
            "rank": float(l_rank),
            "kl": float(kl),
            "entropy": float(ent),
            "clip_ratio": float(_masked_mean((low | high).to(dmask.dtype), dmask)),
            "adv_dec_mean": float(adv.mean()),
            "informative_slates": float(informative.to(dmask.dtype).mean()),
        }
    return LossOutput(loss=loss, stats=stats)


# ---------------------------------------------------------------------------------------------- Conductor


def conductor_reward(parsed: bool, correct: bool) -> float:
    """The Conductor's reward for one call (Nielsen et al. 2025; METHODS.md section 2):

    r = 0    if the call's workflow lists could not be parsed (whatever the answer)
    r = 1    if parsed and the final answer is correct
    r = 0.5  if parsed (well-formed) but the final answer is wrong or missing (no answer could be
             extracted from the last step: a prose last step is still a well-formed plan)
    """
    if not parsed:
        return 0.0
    return 1.0 if correct else 0.5


def conductor_call_rewards(
    parsed: list[bool], correct: list[bool], first_round_discount: float = 1.0
) -> list[float]:
    """One reward per Conductor call of an episode (the first call, then each recursive re-plan).

        r_c = d^[c < C−1] · conductor_reward(parsed_c, correct_c)

    ``correct_c``: the answer standing after call c is right (call c's own workflow's answer; after
    a re-plan of three empty lists, the kept answer; for the last call, the episode's final answer).
    A call whose plan does not parse gets 0 even when the episode keeps an earlier answer: a broken
    re-plan is rewarded as broken, not with the earlier workflow's reward. Every call followed by
    another call (a first round that was re-planned) is scaled by ``first_round_discount`` d (the
    paper's recursion fine-tune: 0.25), so the re-plan carries the final outcome.
    """
    if len(parsed) != len(correct):
        raise ValueError(
            f"one parse flag per call and one outcome per call: got {len(parsed)} and {len(correct)}"
        )
    if not 0.0 <= first_round_discount <= 1.0:
        raise ValueError(f"first_round_discount must be in [0, 1], got {first_round_discount}")
    last = len(parsed) - 1
    return [
        conductor_reward(p, c) * (first_round_discount if k < last else 1.0)
        for k, (p, c) in enumerate(zip(parsed, correct, strict=True))
    ]
