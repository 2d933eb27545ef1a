"""Hugging Face `transformers` backend: batched generation with our own decode loop.

Why not `model.generate`: it takes one sampling configuration and one random stream per call,
so a batch that mixes greedy and sampled requests, different `max_tokens`, stop strings and
per-request seeds would need one call per combination (small batches), and a sample would depend
on which other requests shared its batch. The loop below gives every row its own temperature,
top_p, length cap, stop strings and random generator, drops finished rows from the KV cache and
prefills waiting rows into the freed slots as it goes (continuous batching), and returns the sampled tokens' log-probabilities without materialising a full-vocabulary
log-softmax for every position (only the last position's logits are ever computed).

The decode loop is also open to callers that add work while it runs (`open`, `step`): the batch
scheduler (workbench/scheduler.py) admits an episode's next requests into the running batch as
soon as the episode makes them, so no episode waits for another episode's phase to end.

Bad requests fail alone: an empty prompt, a prompt that does not fit the model's context or a
chat template that cannot render the messages give that request a generation with
``finish_reason="error"`` and the reason; a ``max_tokens`` beyond the context is clamped to what
fits, with a ``warning`` on the generation. The rest of the batch decodes as if it were absent.

Log-probabilities are those of the distribution sampled from: log_softmax(logits / T) before
top-p truncation, with T = 1 for greedy rows (the convention TRL uses for GRPO).
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from workbench.models.base import Generation, Request, SamplingParams


@dataclass
class _Row:
    """One sample to generate: a prompt, its sampling parameters and its own random stream."""

    index: int  # position in the flattened output
    prompt_ids: list[int]
    sampling: SamplingParams
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    text: str | None = None  # set when the row is finished
    t_start: float = 0.0
    t_end: float = 0.0
    max_tokens: int = 0  # the completion cap: sampling.max_tokens, clamped to the context
    error: str | None = None  # why the request was refused (finish_reason "error")
    warning: str | None = None  # e.g. max_tokens clamped to the context
    queued_at: int = 0  # the backend's step count when the row was admitted


class Ticket:
    """The rows of one `HFBackend.open` call, decoded as part of the backend's running batch.

    ``done`` once every row has finished; ``result()`` then gives the generations in request order
    (each request's ``n`` samples in turn), exactly what ``generate`` returns for the same requests.
    """

    def __init__(self, backend: HFBackend, rows: list[_Row]):
        self.backend, self.rows = backend, rows

    @property
    def done(self) -> bool:
        return all(r.text is not None for r in self.rows)

    def result(self) -> list[Generation]:
        if not self.done:
            raise RuntimeError(
                "Ticket.result() before every row finished: call the backend's step() until done"
            )
        return [self.backend._generation(r) for r in self.rows]


@dataclass
class _Batch:
    """The rows being decoded together, with their KV cache, attention mask and positions."""

    rows: list[_Row]
    cache: Any  # transformers DynamicCache, layers of (B, H, T, D) keys and values
    mask: torch.Tensor  # (B, T): 1 for real tokens, 0 for left padding
    last_pos: torch.Tensor  # (B,): position id of each row's last token
    logits: torch.Tensor  # (B, V): next-token logits

    @property
    def can_merge(self) -> bool:
        """Merging needs plain per-layer key/value tensors (not sliding-window or quantized caches)."""
        return all(type(layer).__name__ == "DynamicLayer" for layer in self.cache.layers)

    def select(self, keep: list[int]) -> None:
        """Keep only rows ``keep``; drop leading cache columns that are now padding for every row."""
        if len(keep) < len(self.rows):
            idx = torch.tensor(keep, device=self.mask.device)
            self.cache.batch_select_indices(idx)
            self.rows = [self.rows[b] for b in keep]
            self.mask, self.last_pos = self.mask[idx], self.last_pos[idx]
        pad = int((self.mask.sum(0) == 0).long().cumprod(0).sum())  # all-padding columns on the left
        if pad and self.can_merge:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., pad:, :], layer.values[..., pad:, :]
            self.mask = self.mask[:, pad:]

    def merge(self, other: _Batch) -> _Batch:
        """Append ``other``'s rows: both caches are left-padded to the same width, then stacked."""
        width = max(self.mask.shape[1], other.mask.shape[1])

        def pad(t: torch.Tensor, n: int) -> torch.Tensor:  # left-pad the time axis (dim -2)
            return torch.nn.functional.pad(t, (0, 0, n, 0)) if n else t

        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            a, b = width - self.mask.shape[1], width - other.mask.shape[1]
            mine.keys = torch.cat([pad(mine.keys, a), pad(theirs.keys, b)], dim=0)
            mine.values = torch.cat([pad(mine.values, a), pad(theirs.values, b)], dim=0)
        self.mask = torch.cat(
            [
                torch.nn.functional.pad(self.mask, (width - self.mask.shape[1], 0)),
                torch.nn.functional.pad(other.mask, (width - other.mask.shape[1], 0)),
            ],
        )
        self.rows = self.rows + other.rows
        self.last_pos = torch.cat([self.last_pos, other.last_pos])
        self.logits = torch.cat([self.logits, other.logits])
        return self

    def step(self, model, tokens: torch.Tensor) -> None:
        """Feed one token per row (B,) and compute the next logits."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        self.last_pos = self.last_pos + 1
        out = model(
            input_ids=tokens.unsqueeze(1),
            attention_mask=self.mask,
            position_ids=self.last_pos.unsqueeze(1),
            past_key_values=self.cache,
            use_cache=True,
        )
        self.logits = out.logits[:, -1, :]


class HFBackend:
    """A causal LM (optionally with a `peft` adapter) answering chat requests in batches."""

    #: steps a few waiting rows may wait for companions before they are prefilled anyway (`_admit_now`)
    max_wait_steps = 8

    def __init__(self, model, tokenizer, name: str, max_batch_size: int = 32):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.max_batch_size = max_batch_size
        self.prefill_tokens = 4096  # padded prompt tokens per prefill forward pass (see _chunks)
        self.device = next(model.parameters()).device
        n = getattr(model.config, "max_position_embeddings", None)
        self.context_length: int | None = n if isinstance(n, int) and n > 0 else None
        # the running decode: rows waiting for a slot, the batch being decoded, steps taken
        self._waiting: deque[_Row] = deque()
        self._batch: _Batch | None = None
        self._steps = 0
        self._in_prefill: list[_Row] = []  # rows taken from the queue, not yet in the batch
        self._lock = threading.RLock()  # one decode at a time (a notebook thread and the app may share us)
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self.eos_ids = eos_ids
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids)
        self._seed_rng = random.Random(0)  # seeds for requests that carry none

    # ---- public API ----
    def encode_chat(self, messages) -> list[int]:
        prompt = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=False
        )
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def generate(self, requests: list[Request]) -> list[Generation]:
        ticket = self.open(requests)
        self.run_until(ticket)
        return ticket.result()

    def generate_from_ids(self, prompts: list[tuple[list[int], SamplingParams]]) -> list[Generation]:
        """Like ``generate``, from token ids: e.g. a chat prompt plus a forced start of the reply
        (training scores a justification written after a given ``<choice>k</choice>``)."""
        ticket = self.open_ids(prompts)
        self.run_until(ticket)
        return ticket.result()

    # ---- the running decode, open to new work (continuous batching across callers) ----
    def open(self, requests: list[Request]) -> Ticket:
        """Admit ``requests`` into the running decode; `step` advances it, the ticket says when done.
        A request whose messages cannot be rendered fails alone (finish_reason "error")."""
        prompts: list[tuple[list[int] | str, SamplingParams]] = []
        for req in requests:
            try:
                prompts.append((self.encode_chat(req.messages), req.sampling))
            except Exception as e:  # a template that rejects these messages: this request only
                prompts.append(
                    (
                        f"the chat template could not render the messages ({type(e).__name__}: {e})",
                        req.sampling,
                    )
                )
        return self.open_ids(prompts)

    def open_ids(self, prompts: list[tuple[list[int] | str, SamplingParams]]) -> Ticket:
        """Like `open`, from token ids (a str in place of the ids: that request's error)."""
        rows: list[_Row] = []
        for prompt_ids, s in prompts:
            for j in range(s.n):
                gen = None
                if s.temperature > 0:
                    seed = (s.seed + j) if s.seed is not None else self._seed_rng.getrandbits(63)
                    gen = torch.Generator().manual_seed(seed)
                ids = prompt_ids if isinstance(prompt_ids, list) else []
                row = _Row(len(rows), ids, s, gen, max_tokens=s.max_tokens)
                self._check(row, prompt_ids if isinstance(prompt_ids, str) else None)
                rows.append(row)
        with self._lock:
            # prompts of similar lengths next to each other: prefill chunks carry little padding
            for r in sorted((r for r in rows if r.text is None), key=lambda r: len(r.prompt_ids)):
                r.queued_at = self._steps
                self._waiting.append(r)
        return Ticket(self, rows)

    @property
    def busy(self) -> bool:
        """Rows are waiting or being decoded."""
        return bool(self._waiting) or self._batch is not None

    @property
    def rows_in_flight(self) -> int:
        """Rows being decoded plus rows waiting for a slot."""
        return len(self._waiting) + (len(self._batch.rows) if self._batch is not None else 0)

    @property
    def rows_decoding(self) -> int:
        """Rows in the running batch (its occupancy; at most `max_batch_size`)."""
        return len(self._batch.rows) if self._batch is not None else 0

    def run_until(self, ticket: Ticket) -> None:
        """Step the running decode until ``ticket``'s rows are finished (other rows advance too)."""
        while not ticket.done:
            self.step()

    def _check(self, r: _Row, error: str | None) -> None:
        """Refuse a row that cannot run (it finishes at once, with its reason) or clamp its length."""
        n, ctx = len(r.prompt_ids), self.context_length
        if error is None and n == 0:
            error = "empty prompt: the request has no tokens to continue from"
        elif error is None and ctx is not None and n >= ctx:
            error = (
                f"prompt of {n} tokens does not fit the model's context of {ctx} tokens: "
                "shorten the prompt (fewer rounds, shorter peers' answers or few-shot examples)"
            )
        if error is not None:
            r.error, r.finish_reason, r.text = error, "error", ""
            r.t_start = r.t_end = time.perf_counter()
        elif ctx is not None and n + r.max_tokens > ctx:
            r.max_tokens = ctx - n
            r.warning = (
                f"max_tokens {r.sampling.max_tokens} clamped to {r.max_tokens}: "
                f"the prompt's {n} tokens and the completion must fit the context of {ctx}"
            )

    def _generation(self, r: _Row) -> Generation:
        return Generation(
            text=r.text or "",
            token_ids=r.tokens,
            prompt_tokens=len(r.prompt_ids),
            completion_tokens=len(r.tokens),
            finish_reason=r.finish_reason,
            latency_s=r.t_end - r.t_start,
            logprobs=r.logprobs if r.sampling.logprobs else None,
            prompt_ids=r.prompt_ids,
            error=r.error,
            warning=r.warning,
        )

    # ---- the decode loop (continuous batching) ----
    @torch.inference_mode()
    def step(self) -> None:
        """One decode step of the running batch, after admitting waiting rows into free slots.

        When rows finish, they leave the batch and the KV cache; waiting rows are prefilled and
        merged in (their cache left-padded to the batch's width) in chunks (`_admit_now`), so one
        long completion never leaves the batch running at size 1 while others wait, and a trickle
        of new requests does not cost a merge per step.
        """
        with self._lock:
            if self._batch is None and not self._waiting:
                return
            try:
                self._step()
            except BaseException as e:  # a failed forward (out of memory, Ctrl-C): no row is left half-done
                # rows still waiting fail too: their tickets' callers see the exception, and rows left
                # queued would later be decoded for nobody
                for r in [*(self._batch.rows if self._batch else []), *self._in_prefill, *self._waiting]:
                    if r.text is None:
                        r.error, r.finish_reason, r.text = (
                            f"the decode step failed: {type(e).__name__}: {e}",
                            "error",
                            "",
                        )
                        r.t_end = time.perf_counter()
                self._batch, self._in_prefill = None, []
                self._waiting.clear()
                raise

    def _step(self) -> None:
        """`step` without the lock and the failure handling."""
        batch, waiting = self._batch, self._waiting
        free = self.max_batch_size - (len(batch.rows) if batch else 0)
        if waiting and free > 0 and self._admit_now(batch, free):
            take = sorted(
                (waiting.popleft() for _ in range(min(free, len(waiting)))), key=lambda r: len(r.prompt_ids)
            )
            self._in_prefill = take
            for chunk in self._chunks(take):
                new = self._prefill(chunk)
                batch = self._batch = new if batch is None else batch.merge(new)
            self._in_prefill = []
        self._steps += 1
        # ---- choose one token per row ----
        tokens = self._choose(batch.logits.float(), batch.rows)
        keep = []
        for b, (r, tok) in enumerate(zip(batch.rows, tokens, strict=True)):
            r.tokens.append(tok)
            if tok in self.eos_ids:
                r.finish_reason = "stop"
            elif r.sampling.stop and self._cut_at_stop(r):
                r.finish_reason = "stop"
            elif len(r.tokens) >= r.max_tokens:
                r.finish_reason = "length"
            else:
                keep.append(b)
                continue
            r.t_end = time.perf_counter()
            if r.text is None:
                r.text = self.tokenizer.decode(r.tokens, skip_special_tokens=True)
        if not keep:
            self._batch = None
            return
        batch.select(keep)
        # ---- one decode step for the rows still running ----
        batch.step(self.model, torch.tensor([tokens[b] for b in keep], device=self.device))
        self._batch = batch

    def _admit_now(self, batch: _Batch | None, free: int) -> bool:
        """Whether to prefill waiting rows into the ``free`` slots now. A merge copies the whole
        KV cache, so rows join in chunks: at least a quarter of the batch at once; fewer only when
        every waiting row fits and it has waited `max_wait_steps` for companions (or the batch is
        small, when a step costs little more for more rows)."""
        waiting = self._waiting
        if batch is None:
            return True
        if not batch.can_merge:
            return False
        refill_at = max(1, self.max_batch_size // 4)
        if min(free, len(waiting)) >= refill_at:
            return True
        aged = self._steps - waiting[0].queued_at >= self.max_wait_steps
        return len(waiting) <= free and (aged or len(batch.rows) < refill_at)

    def _chunks(self, rows: list[_Row]) -> list[list[_Row]]:
        """Split rows (sorted by prompt length) into prefill chunks of at most ``prefill_tokens``
        padded tokens, so that one long prompt does not pad every short one to its length (an
        aggregator's prompts range from 100 to 1000 tokens: prefilled together, 4x the work)."""
        chunks: list[list[_Row]] = []
        for r in rows:
            if chunks and (len(chunks[-1]) + 1) * len(r.prompt_ids) <= self.prefill_tokens:
                chunks[-1].append(r)
            else:
                chunks.append([r])
        return chunks

    def _prefill(self, rows: list[_Row]) -> _Batch:
        from transformers import DynamicCache

        width = max(len(r.prompt_ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, r in enumerate(rows):  # left padding
            ids[b, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
            mask[b, width - len(r.prompt_ids) :] = 1
            r.t_start = time.perf_counter()
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, P)
        cache = DynamicCache()
        # Only the last position's logits are computed. On CPU it is kept by an index tensor, not
        # by `logits_to_keep=1`: that slices the hidden states to a non-contiguous (B, 1, H) view,
        # on which torch's CPU `linear` (bf16, torch 2.13) expands the (V, H) lm_head weight per
        # row: 3.5 GB and 3.8 s for 64 rows of SmolLM2, against 7 MB and 6 ms on a contiguous copy.
        # Elsewhere the plain int, which every forward (Unsloth's patched ones too) understands.
        keep = torch.tensor([width - 1], device=self.device) if self.device.type == "cpu" else 1
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=keep,
        )
        return _Batch(list(rows), cache, mask, pos[:, -1], out.logits[:, -1, :])

    def _choose(self, logits: torch.Tensor, rows: list[_Row]) -> list[int]:
        """Pick the next token of each row; record its log-prob where asked. logits: (B, V) fp32.

        Vectorised over the batch: one device-to-host copy per step, never one per row (per-row
        `sort`, `multinomial` and `float()` calls made a step cost ~0.5 s at batch 256 on a GPU).
        Each sampled row still draws from its own generator, so a sample never depends on which
        other requests share the batch: one uniform u per row, then inverse-CDF sampling, i.e.
        the first token whose cumulative probability exceeds u (over the top-p nucleus in
        descending-probability order where top_p < 1, over the vocabulary order otherwise).
        """
        chosen = logits.argmax(dim=-1)
        # log-softmax only for the rows that sample or report log-probs (row-wise, so a row's values
        # do not depend on its batch-mates); an all-greedy batch skips the full-vocabulary pass
        need = [b for b, r in enumerate(rows) if r.sampling.temperature > 0 or r.sampling.logprobs]
        if not need:
            return chosen.tolist()
        at = {b: i for i, b in enumerate(need)}  # batch row -> row of logp
        need_idx = torch.tensor(need, device=logits.device)
        temps = torch.tensor([rows[b].sampling.temperature or 1.0 for b in need], device=logits.device)
        logp = torch.log_softmax(logits[need_idx] / temps.unsqueeze(1), dim=-1)  # (len(need), V)
        nucleus = [b for b in need if rows[b].sampling.temperature > 0 and rows[b].sampling.top_p < 1.0]
        plain = [b for b in need if rows[b].sampling.temperature > 0 and rows[b].sampling.top_p >= 1.0]
        for group in (plain, nucleus):
            if not group:
                continue
            idx = torch.tensor(group, device=logits.device)
            probs = logp[torch.tensor([at[b] for b in group], device=logits.device)].exp()  # (S, V)
            order = None
            if group is nucleus:
                top_p = torch.tensor([rows[b].sampling.top_p for b in group], device=logits.device)
                probs, order = probs.sort(dim=-1, descending=True)
                # drop tokens whose preceding mass already reaches top_p (the crossing token stays)
                probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_p.unsqueeze(1), 0.0)
            cdf = probs.cumsum(-1)
            u = torch.cat([torch.rand(1, generator=rows[b].generator) for b in group]).to(logits.device)
            k = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True)
            k = k.clamp(max=cdf.shape[1] - 1)
            chosen[idx] = (order.gather(1, k) if order is not None else k).squeeze(1)
        want = [b for b in need if rows[b].sampling.logprobs]
        picked = chosen.tolist()
        if want:
            lp = logp.gather(1, chosen[need_idx].unsqueeze(1)).squeeze(1).tolist()
            for b in want:
                rows[b].logprobs.append(lp[at[b]])
        return picked

    def _cut_at_stop(self, r: _Row) -> bool:
        # a stop string of L characters ends within the last L + 2 tokens (one spare for a leading space): decode only those each
        # step, and the whole completion once one of them appears
        tail = self.tokenizer.decode(
            r.tokens[-(max(map(len, r.sampling.stop)) + 2) :], skip_special_tokens=True
        )
        if not any(s in tail for s in r.sampling.stop):
            return False
        text = self.tokenizer.decode(r.tokens, skip_special_tokens=True)
        cuts = [text.find(s) for s in r.sampling.stop if s in text]
        if cuts:
            r.text = text[: min(cuts)]
            return True
        return False
