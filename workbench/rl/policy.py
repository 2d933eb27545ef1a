"""The trained policy: a base model with a LoRA adapter, served for rollouts and scored for the loss.

One model in memory plays every role. ``PolicyBackends.policy`` samples with the adapter (the
trained role); ``PolicyBackends.frozen`` samples with the adapter switched off, i.e. the base
model, for the frozen roles (peers, explorers, workers). Both are ordinary backends, so rollouts
are ordinary protocol episodes.

CPU: ``transformers`` + ``peft`` (bf16 where the CPU has it). GPU: the same, or Unsloth's
``FastLanguageModel`` when ``use_unsloth`` is set (imported here only, only then, in the training
process that asked for it: importing Unsloth patches every transformers model in the process).
Under Unsloth the model is for the loss pass only (its kernels, LoRA and gradient checkpointing):
its patched forward is not one our decode loop can drive, so rollouts go through the vLLM engine
(workbench/rl/engine.py, ``train.rollout_engine=vllm``); the loss code below is the same on both.
Frozen roles and the KL reference are the adapter switched off (``disable_adapter``), on either.

Log-probabilities for the loss are computed for the sampled tokens only: the decoder's hidden
states are gathered at the completion positions and only those rows go through the LM head, in
chunks, as ``logit[token] - logsumexp(logits)``; the full-vocabulary log-softmax is never
materialised for every position (in fp32 it dominated memory here).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.config import ConfigError
from workbench.models.base import Generation, Request
from workbench.models.hf import HFBackend


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    # attention and MLP projections of Llama/Qwen/SmolLM-style decoders
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha <= 0:
            raise ConfigError(f"lora.rank must be >= 1 and lora.alpha > 0, got {self.rank}, {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")


class FrozenBackend:
    """The base model behind a peft model: generation with the adapter disabled."""

    def __init__(self, policy: HFBackend):
        self.policy = policy
        self.name = f"{policy.name} (frozen base)"

    def generate(self, requests: list[Request]) -> list[Generation]:
        with self.policy.model.disable_adapter():
            return self.policy.generate(requests)


@dataclass
class PolicyBackends:
    policy: Any  # the adapter on: the trained role (HFBackend, or the vLLM engine's policy)
    frozen: Any  # the adapter off: every other role
    engine: Any = None  # the vLLM rollout engine (rl/engine.py), None for the transformers loop

    def before_loss(self) -> None:
        """The loss pass is next (the vLLM engine may sleep to free its memory)."""
        if self.engine is not None:
            self.engine.before_loss()

    @property
    def model(self):
        return self.policy.model

    @property
    def tokenizer(self):
        return self.policy.tokenizer


def load_policy(
    base: str,
    lora: LoraSettings,
    *,
    dtype: str = "auto",
    device: str = "auto",
    max_batch_size: int = 64,
    adapter: str | None = None,
    use_unsloth: bool = False,
    max_seq_length: int = 2048,
    seed: int = 0,
) -> PolicyBackends:
    """Load ``base`` and attach a trainable LoRA adapter (a fresh one, or ``adapter`` to continue).

    The fresh adapter's initial weights come from ``seed`` (the trainer's ``train.seed``).
    ``use_unsloth`` (CUDA only): Unsloth's ``FastLanguageModel.from_pretrained`` +
    ``get_peft_model`` instead of transformers + peft, for the loss pass only (see the module doc).
    """
    if use_unsloth:
        return _load_unsloth(base, lora, dtype, adapter, max_seq_length, seed)
    from peft import LoraConfig, PeftModel, get_peft_model

    from workbench.models.loading import load_hf_backend

    backend = load_hf_backend(base, dtype=dtype, device=device, max_batch_size=max_batch_size)
    model = backend.model
    if adapter:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
    else:
        config = LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)  # A's init from the torch seed the trainer set (train.seed)
    policy = HFBackend(model, backend.tokenizer, name=f"{base}+lora", max_batch_size=max_batch_size)
    return PolicyBackends(policy, FrozenBackend(policy))


class LossOnlyPolicy:
    """The trained model when it is for the loss pass only (Unsloth): what the trainer reads from
    ``backends.policy`` before the vLLM engine takes over sampling; sampling from it is refused."""

    def __init__(self, model, tokenizer, name: str):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        eos = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    def _refuse(self, *_a, **_k):
        raise ConfigError(
            f"{self.name}: Unsloth's model is for the loss pass only; rollouts need train.rollout_engine=vllm"
        )

    generate = generate_from_ids = encode_chat = _refuse


def _load_unsloth(base, lora, dtype, adapter, max_seq_length, seed) -> PolicyBackends:
    """Unsloth's model and LoRA (its kernels and gradient checkpointing), for the loss pass.

    Written against unsloth 2026.10.9 (tests/data/gpu_api.json): ``from_pretrained(model_name,
    max_seq_length, dtype, load_in_4bit, random_state, ...)``, ``get_peft_model(model, r,
    target_modules, lora_alpha, lora_dropout, use_gradient_checkpointing, random_state, ...)``;
    both default ``random_state`` to 3407, which would give every ``train.seed`` the same LoRA
    initialisation, so the seed is passed. Model names resolve as for every other backend
    (``smollm2`` is the embedded model's folder, not a hub id Unsloth would look up)."""
    if not torch.cuda.is_available():
        raise ConfigError(
            "train.use_unsloth needs a CUDA GPU (Unsloth's kernels are CUDA-only); on CPU leave it "
            "false: the same loop runs with transformers + peft"
        )
    try:
        import unsloth  # noqa: F401  (patches transformers/peft: only in the process that asked)
        from unsloth import FastLanguageModel
    except ImportError as e:
        raise ConfigError(f"train.use_unsloth: Unsloth is not installed ({e}); make setup-gpu") from e
    from workbench.models.loading import resolve_dtype
    from workbench.models.vllm import model_source

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=model_source(base),
        max_seq_length=max_seq_length,
        dtype=resolve_dtype(dtype, "cuda"),
        load_in_4bit=False,
        random_state=seed,
    )
    settings = lora
    if adapter:  # continue an adapter: its own shape, then its weights
        conf = json.loads((Path(adapter) / "adapter_config.json").read_text())
        settings = LoraSettings(
            rank=int(conf["r"]),
            alpha=int(conf["lora_alpha"]),
            dropout=float(conf.get("lora_dropout", 0.0)),
            target_modules=tuple(sorted(conf["target_modules"])),
        )
    model = FastLanguageModel.get_peft_model(
        model,
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        use_gradient_checkpointing="unsloth",
        random_state=seed,
        max_seq_length=max_seq_length,
    )
    if adapter:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(Path(adapter) / "adapter_model.safetensors")))
    policy = LossOnlyPolicy(model, tokenizer, name=f"{base}+lora (unsloth)")
    return PolicyBackends(policy, policy)


def _decoder_and_head(model):
    """The decoder stack (returns hidden states) and the LM head of a (peft-wrapped) causal LM."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.model, inner.lm_head


def _shared_prompt_states(decoder, prompts, completions, pad_id: int, device) -> torch.Tensor:
    """(B, longest completion, H): at [b, j] the hidden state that predicts completion token j of
    sample b, with one decoder pass per *distinct* prompt.

    The distinct prompts run once, left-padded (explicit position ids, so positions start at 0
    after the padding); their KV cache is indexed out to the samples (an autograd op: the
    gradient of every sample flows back into the shared prompt pass); then the completions run on
    it. The prompt's last position predicts completion token 0; completion position j predicts
    token j + 1. A GRPO group of G samples pays for its prompt once instead of G times.
    """
    uniq: dict[tuple, int] = {}
    owner = torch.tensor([uniq.setdefault(tuple(p), len(uniq)) for p in prompts], device=device)
    width = max(len(p) for p in uniq)
    ids_p = torch.full((len(uniq), width), pad_id, dtype=torch.long)
    mask_p = torch.zeros((len(uniq), width), dtype=torch.long)
    for u, p in enumerate(uniq):
        ids_p[u, width - len(p) :] = torch.tensor(p)
        mask_p[u, width - len(p) :] = 1
    ids_p, mask_p = ids_p.to(device), mask_p.to(device)
    out = decoder(
        input_ids=ids_p,
        attention_mask=mask_p,
        position_ids=(mask_p.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
    )
    first = out.last_hidden_state[:, -1][owner]  # (B, H): predicts completion token 0
    longest = max(len(c) for c in completions)
    if longest > 1:  # completion tokens 0..len-2 are inputs; the last one predicts nothing we score
        cache = out.past_key_values
        cache.batch_select_indices(owner)
        ids_c = torch.full((len(prompts), longest - 1), pad_id, dtype=torch.long)
        mask_c = torch.zeros((len(prompts), longest - 1), dtype=torch.long)
        for b, c in enumerate(completions):
            if len(c) > 1:
                ids_c[b, : len(c) - 1] = torch.tensor(c[:-1])
                mask_c[b, : len(c) - 1] = 1
        start = torch.tensor([len(p) for p in prompts], device=device)[:, None]
        rest = decoder(
            input_ids=ids_c.to(device),
            attention_mask=torch.cat([mask_p[owner], mask_c.to(device)], dim=1),
            position_ids=start + torch.arange(longest - 1, device=device)[None, :],
            past_key_values=cache,
        ).last_hidden_state  # (B, longest - 1, H)
        return torch.cat([first[:, None], rest], dim=1)
    return first[:, None]


@dataclass
class TokenScores:
    """Per-token scores of completions, right-padded to (B, T)."""

    logp: torch.Tensor  # log-prob of each completion token (differentiable when grad is on)
    mask: torch.Tensor  # 1 on real completion tokens
    entropy: torch.Tensor | None  # exact entropy of the next-token distribution there (detached unless asked)


def completion_logprobs(
    model,
    prompts: list[list[int]],
    completions: list[list[int]],
    *,
    temperature: float = 1.0,
    pad_id: int = 0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    chunk_tokens: int = 1024,
    share_prompts: bool = True,
) -> TokenScores:
    """Log-probs (at ``temperature``) of each completion token given its prompt, one forward pass.

    Sequences are right-padded into one batch; the decoder runs once; only the hidden states at
    the positions that predict completion tokens go through the LM head, ``chunk_tokens`` rows
    at a time: memory ~ chunk_tokens × vocabulary, not batch × length × vocabulary.
    ``share_prompts``: samples with the same prompt (a GRPO group) share one pass over it
    (`_shared_prompt_states`); the numbers are the same, the prompt's cost is paid once per group.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    device = next(model.parameters()).device
    decoder, head = _decoder_and_head(model)
    # completion token j of sample r, for every token of every completion (sample-major order)
    r = torch.tensor([b for b, c in enumerate(completions) for _ in c], device=device, dtype=torch.long)
    j = torch.tensor([j for c in completions for j in range(len(c))], device=device, dtype=torch.long)
    targets = torch.tensor([t for c in completions for t in c], device=device)
    distinct = len({tuple(p) for p in prompts})
    if share_prompts and distinct < len(prompts) and len(r):
        h = _shared_prompt_states(decoder, prompts, completions, pad_id, device)[r, j]  # (N, H)
    else:
        width = max(len(p) + len(c) for p, c in zip(prompts, completions, strict=True))
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(prompts), width), dtype=torch.long)
        for b, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            ids[b, : len(p) + len(c)] = torch.tensor(p + c)
            attn[b, : len(p) + len(c)] = 1
        hidden = decoder(input_ids=ids.to(device), attention_mask=attn.to(device)).last_hidden_state
        # position t predicts token t+1: completion token j of sample r is predicted at len(p)+j-1
        prompt_len = torch.tensor([len(p) for p in prompts], device=device)
        h = hidden[r, prompt_len[r] - 1 + j]  # (N, H)
    logps, ents = [], []
    for s in range(0, len(r), chunk_tokens):
        logits = head(h[s : s + chunk_tokens]).float() / temperature  # (n, V)
        lse = torch.logsumexp(logits, dim=-1)
        logps.append(logits.gather(1, targets[s : s + chunk_tokens, None]).squeeze(1) - lse)
        if with_entropy:
            with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
                p = torch.softmax(logits, dim=-1)
                ents.append(lse - (p * logits).sum(-1))
    flat = torch.cat(logps) if logps else torch.zeros(0, device=device)
    T = max((len(c) for c in completions), default=0)
    logp = torch.zeros((len(completions), max(T, 1)), device=device)
    mask = torch.zeros_like(logp)
    if len(r):
        logp = logp.index_put((r, j), flat)
        mask[r, j] = 1.0
    entropy = None
    if with_entropy:
        entropy = torch.zeros_like(mask)
        if len(r):
            entropy = entropy.index_put((r, j), torch.cat(ents))
    return TokenScores(logp, mask, entropy)


@contextlib.contextmanager
def adapter_disabled(model):
    """The reference policy (for KL): the base model, adapter off, no gradients."""
    with model.disable_adapter(), torch.no_grad():
        yield
