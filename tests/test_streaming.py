"""Continuous batching across callers: requests join the transformers backend's running decode.

The backend's `open`/`step` API and the scheduler's streaming path (workbench/scheduler.py) on
the real embedded model. Equivalence is checked in fp32, where batch composition must not
change a greedy token; sampled rows must not depend on their batch-mates.
"""

import asyncio

import pytest
import torch
from test_hf_backend import req  # tests/ is on sys.path under pytest

from workbench.evaluate import ProtocolConfig, run_episodes
from workbench.models import SamplingParams
from workbench.scheduler import BatchScheduler, run_all, streams
from workbench.tasks import TaskConfig, load_tasks

pytestmark = pytest.mark.slow

Q = [
    "What is 12 + 30?",
    "Name three fruits and say which one you like best, in two sentences.",
    "Solve: What is 9 - 4?\nEnd your reply with a line of the form 'Answer: <number>'.",
]


class NotStreaming:
    """The same backend seen through `generate` only: the scheduler's one-call-per-phase path."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name

    def generate(self, requests):
        return self.inner.generate(requests)


def test_a_request_joins_a_running_decode_and_gets_what_it_gets_alone(smollm2_fp32):
    be = smollm2_fp32
    long = req(Q[1], max_tokens=40)
    short = req(Q[0], max_tokens=6)
    sampled = req(Q[2], max_tokens=8, temperature=1.0, seed=5)
    alone_short = be.generate([short])[0]
    alone_sampled = be.generate([sampled])[0]
    a = be.open([long])
    for _ in range(3):
        be.step()
    b = be.open([short, sampled])  # arrives while the long one is mid-decode
    be.run_until(b)
    assert not a.done  # b joined the running batch and finished first: it did not wait for a
    got_short, got_sampled = b.result()
    assert got_short.token_ids == alone_short.token_ids
    assert got_sampled.token_ids == alone_sampled.token_ids  # its own random stream, whoever its batch-mates
    be.run_until(a)
    assert a.result()[0].token_ids == be.generate([long])[0].token_ids
    assert not be.busy


def test_streamed_protocol_run_equals_the_phase_by_phase_run(smollm2_fp32):
    # debate: round 2 depends on round 1. Streamed, one episode's round 2 joins the decode while
    # other episodes are still in round 1; greedy (fp32), every message must be what the old
    # phase-by-phase path (one generate call per flush) produces.
    tasks = load_tasks(TaskConfig.from_flat({"name": "arithmetic", "split": "dev", "limit": 3}))
    cfg = ProtocolConfig("debate", {"agents": 2, "rounds": 2, "max_tokens": 24, "temperature": 0.0})
    be = smollm2_fp32
    assert streams(be) and not streams(NotStreaming(be))
    streamed, err_s, stats = run_episodes(tasks, cfg, be)
    phased, err_p, _ = run_episodes(tasks, cfg, NotStreaming(be))
    assert err_s == err_p == []

    def messages(eps):
        return [[m.content for m in e.messages] for e in sorted(eps, key=lambda e: e.index)]

    assert messages(streamed) == messages(phased)
    assert stats["decode_steps"] > 0 and 0 < stats["mean_rows_per_step"] <= be.max_batch_size


def test_sampled_protocol_runs_are_the_same_streamed_or_phased_in_fp32(smollm2_fp32):
    # maestro: sampled explorers (seeded per call), a greedy central agent over their slate. In
    # fp32 a sampled row draws the same tokens whoever shares its batch, so streaming changes no
    # message (in bf16 a row's logits move slightly with its batch-mates and a path can diverge).
    tasks = load_tasks(TaskConfig.from_flat({"name": "arithmetic", "split": "dev", "limit": 2}))
    cfg = ProtocolConfig("maestro", {"explorers": 2, "rounds": 2, "max_tokens": 20, "central_max_tokens": 16})
    streamed, _, _ = run_episodes(tasks, cfg, smollm2_fp32)
    phased, _, _ = run_episodes(tasks, cfg, NotStreaming(smollm2_fp32))

    def messages(eps):
        return [[m.content for m in e.messages] for e in sorted(eps, key=lambda e: e.index)]

    assert messages(streamed) == messages(phased)
    assert any(m.content for e in streamed for m in e.messages)


def test_the_scheduler_hands_back_a_group_as_soon_as_it_finishes(smollm2_fp32):
    # episode "chain" makes three short calls in turn; episode "long" one long call. Streamed,
    # the chain's later calls run while the long call decodes, so the chain ends first.
    be = smollm2_fp32
    sched = BatchScheduler({"default": be})
    order = []

    async def chain():
        for _ in range(3):
            await sched.submit("default", [req(Q[0], max_tokens=4)])
        order.append("chain")

    async def long():
        await sched.submit("default", [req(Q[1], max_tokens=48)])
        order.append("long")

    asyncio.run(run_all([long, chain], sched, 2))
    assert order == ["chain", "long"]
    assert sched.stats.batch_sizes == [2, 1, 1]  # three admissions into one running decode
    assert not be.busy and not sched.has_work()


def test_bad_requests_fail_alone_and_long_ones_are_clamped(smollm2_fp32):
    be = smollm2_fp32
    good = req(Q[0], max_tokens=5)
    n = len(be.encode_chat(good.messages))
    saved = be.context_length
    be.context_length = n + 3
    try:
        too_long = req(Q[1] * 3, max_tokens=5)
        gens = be.generate([too_long, good])
        empty = be.generate_from_ids([([], SamplingParams(max_tokens=5))])[0]
    finally:
        be.context_length = saved
    bad, clamped = gens
    assert bad.finish_reason == "error" and "does not fit the model's context" in bad.error and bad.text == ""
    assert clamped.completion_tokens <= 3 and "clamped to 3" in clamped.warning
    assert empty.finish_reason == "error" and "empty prompt" in empty.error
    # a stop string that occurs in the prompt only looks at the completion
    (g,) = be.generate([req("Repeat the word user twice.", max_tokens=6, stop=("Repeat",))])
    assert g.completion_tokens > 0
    with pytest.raises(ValueError, match="non-empty"):
        SamplingParams(stop=("",))
    assert not be.busy


def test_a_clamp_is_recorded_in_the_episode(smollm2):
    tasks = load_tasks(TaskConfig.from_flat({"name": "arithmetic", "split": "dev", "limit": 1}))
    n = len(smollm2.encode_chat([{"role": "user", "content": tasks.tasks[0].prompt}]))
    saved = smollm2.context_length
    smollm2.context_length = n + 400  # the prompt gets a little more, never the default 256 + a system prompt
    try:
        eps, errors, _ = run_episodes(tasks, ProtocolConfig("single", {"max_tokens": 512}), smollm2)
    finally:
        smollm2.context_length = saved
    assert errors == []
    warnings = [e for e in eps[0].events if e["type"] == "generation_warning"]
    assert eps[0].meta["generation_warnings"] == 1 and "clamped" in warnings[0]["warning"]


def test_a_failed_decode_step_fails_its_rows_and_leaves_the_backend_usable(smollm2):
    be = smollm2
    boom = {"on": True}

    def hook(_module, _args):
        if boom["on"]:
            raise RuntimeError("simulated out of memory")

    handle = be.model.get_output_embeddings().register_forward_pre_hook(hook)
    try:
        t = be.open([req(Q[0], max_tokens=4)])
        with pytest.raises(RuntimeError, match="simulated"):
            be.step()
        assert t.done and t.result()[0].finish_reason == "error" and "simulated" in t.result()[0].error
        assert not be.busy
        # a failure mid-decode also fails the rows still waiting for a slot (none is decoded later
        # for nobody): one row decodes, then a ticket arrives, then the next step fails
        boom["on"] = False
        first = be.open([req(Q[0], max_tokens=30)])
        be.step()
        be.max_batch_size, size = 1, be.max_batch_size  # a full batch: the newcomer waits
        try:
            late = be.open([req(Q[1], max_tokens=4)])
            boom["on"] = True
            with pytest.raises(RuntimeError, match="simulated"):
                be.step()
        finally:
            be.max_batch_size = size
        assert first.done and late.done and not be.busy and be.rows_in_flight == 0
        assert [g.finish_reason for g in [*first.result(), *late.result()]] == ["error", "error"]
        boom["on"] = False
        assert be.generate([req(Q[0], max_tokens=4)])[0].completion_tokens == 4
    finally:
        handle.remove()


def test_each_row_keeps_its_sampling_stream_under_admission(smollm2_fp32):
    be = smollm2_fp32
    r = req(Q[1], max_tokens=12, temperature=0.9, top_p=0.9, seed=3, n=2, logprobs=True)
    alone = be.generate([r])
    other = be.open([req(Q[0], max_tokens=30, temperature=1.0, seed=1)])
    be.step()
    be.step()
    joined = be.open([r])
    be.run_until(joined)
    be.run_until(other)
    assert [g.token_ids for g in joined.result()] == [g.token_ids for g in alone]
    assert torch.allclose(
        torch.tensor(joined.result()[0].logprobs), torch.tensor(alone[0].logprobs), atol=1e-5
    )
