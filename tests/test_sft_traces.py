"""The leader's SFT stage: its own self-corrections, found by sampling (rl/warmstart.py).

Selection is checked on scripted completions, kept and rejected case by case, with the task's
real verifier; the targets are the completions exactly as sampled (a gold answer appears in one
only where the "model" wrote it); too few traces is said, never replaced by templates.
"""

from __future__ import annotations

import json

import pytest

from workbench.models.base import Generation
from workbench.protocols.leader import LeaderConfig
from workbench.rl.config import TrainConfig
from workbench.rl.rollouts import PoolEntry, offline_messages
from workbench.rl.warmstart import (
    classify_trace,
    first_own_answer,
    read_traces,
    sample_leader_traces,
    too_few_message,
    trace_samples,
    write_traces,
)
from workbench.tasks import Task

TASK = Task("q", "What is 3 + 4?", "7")


def peers(*answers: str | None) -> list[dict]:
    return [{"text": f"Answer: {a}", "extracted": a, "correct": a == "7"} for a in answers]


CASES = [
    # (peer answers, completion, finish, expected reason)
    (
        ("6", "6", "7"),
        "<think>I check it myself: 3 + 4 = 7.</think><answer>7</answer>",
        "stop",
        "wrong_majority",
    ),
    (("6", "6", "6"), "<think>3 + 4 is 7, not 6.</think><answer>7</answer>", "stop", "wrong_majority"),
    (
        ("7", "7", "5"),
        "<think>First I get 3 + 4 = 8. Wait, that is a mistake: 3 + 4 = 7.</think><answer>7</answer>",
        "stop",
        "revised",
    ),
    # a right answer that follows a right majority and revises nothing: not a self-correction
    (("7", "7", "6"), "<think>3 + 4 = 7.</think><answer>7</answer>", "stop", "no_correction"),
    # no strict majority (1 / 1 / 1), no revision
    (("6", "5", "7"), "<think>3 + 4 = 7.</think><answer>7</answer>", "stop", "no_correction"),
    # "wait" without a wrong first answer of its own: quoting a peer is not the leader's answer
    (
        ("7", "7", "6"),
        "<think>Agent 3 says 6. Wait, agent 1 says 7 and 3 + 4 = 7.</think><answer>7</answer>",
        "stop",
        "no_correction",
    ),
    # revised into a wrong answer, or ends wrong after disagreeing: wrong
    (("6", "6", "7"), "<think>3 + 4 = 7. Wait, no: 8.</think><answer>8</answer>", "stop", "wrong"),
    (("6", "6", "7"), "I think the answer is 7.", "stop", "untagged"),  # strict: no tags, no trace
    (("6", "6", "7"), "<think>3 + 4 = 7.</think><answer>7</answer>", "length", "cut"),
]


@pytest.mark.parametrize("answers, text, finish, reason", CASES)
def test_trace_selection_kept_and_rejected(answers, text, finish, reason):
    assert classify_trace(TASK, peers(*answers), text, finish)["reason"] == reason


def test_first_own_answer_skips_sentences_that_quote_the_team():
    assert first_own_answer(TASK, "<think>Member 1 says 6. I get 8. Hmm, 7.</think><answer>7</answer>") == (
        "8",
        True,
    )
    assert first_own_answer(TASK, "<think>Agent 2 says 6.</think><answer>7</answer>") == (None, False)
    assert first_own_answer(TASK, "<think>It is 7.</think><answer>7</answer>") == ("7", False)


class ScriptedPolicy:
    """Stands in for the HF policy backend (sampling cannot be scripted on a real model), keeping
    its contract: ``generate_from_ids`` returns ``n`` generations per prompt, in order, with token
    ids ending in EOS when the completion stopped; ``encode_chat`` gives the prompt's ids."""

    eos = 0

    def __init__(self, completions):
        self.completions = completions  # f(prompt_text, j) -> (text, finish_reason)
        self.prompts: list[str] = []

    def encode_chat(self, messages):
        text = json.dumps(messages)
        self.prompts.append(text)
        return [ord(c) for c in text]

    def generate_from_ids(self, prompts):
        out = []
        for ids, sp in prompts:
            text_in = "".join(map(chr, ids))
            for j in range(sp.n):
                text, finish = self.completions(text_in, j)
                toks = [ord(c) for c in text] + ([self.eos] if finish == "stop" else [])
                out.append(Generation(text, toks, len(ids), len(toks), finish, 0.0, None, list(ids)))
        return out


class Train:  # the TrainSettings fields the sampler reads
    seed, temperature, max_tokens, questions = 0, 1.0, 64, 2

    def __init__(self, samples):
        self.sft_samples = samples


def test_sampling_keeps_self_corrections_and_targets_are_the_sampled_text(tmp_path):
    tasks = [Task(f"q{i}", f"What is {i} + 1?", str(i + 1)) for i in range(4)]
    pool = {  # every peer says gold + 1: a wrong majority
        t.id: PoolEntry(t.id, [{"text": f"Answer: {i + 2}", "extracted": str(i + 2), "correct": False}] * 3)
        for i, t in enumerate(tasks)
    }

    def completions(prompt, j):
        i = int(prompt.split("What is ")[1].split(" ")[0])
        if j == 0:
            return f"<think>{i} + 1 = {i + 1}, not {i + 2}.</think><answer>{i + 1}</answer>", "stop"
        if j == 1:
            return f"<think>They agree.</think><answer>{i + 2}</answer>", "stop"  # follows: wrong
        return "no tags at all", "stop"

    policy = ScriptedPolicy(completions)
    cfg = LeaderConfig(peers=3)
    traces, counts = sample_leader_traces(tasks, pool, policy, cfg, Train(3))
    assert counts["samples"] == 12 and counts["kept"] == 4 and not counts["too_few"]
    assert counts["by_reason"] == {
        "wrong_majority": 4, "revised": 0, "wrong": 4, "untagged": 4, "cut": 0, "no_correction": 0,
    }  # fmt: skip
    for t, task in zip(traces, tasks, strict=True):
        # the target is the completion exactly as sampled (+ its EOS), on the prompt the RL steps build
        assert t["completion_ids"] == [ord(c) for c in t["completion"]] + [0]
        chat = offline_messages("leader", task, t["shown"], cfg)
        assert t["prompt_ids"] == [ord(c) for c in json.dumps(chat)]
    write_traces(tmp_path, traces, counts)
    again, counts2 = read_traces(tmp_path)
    assert counts2 == counts and [t["completion"] for t in again] == [t["completion"] for t in traces]
    demos = trace_samples(again, {t.id: t for t in tasks}, seed=0, step=1, n=2)
    assert len(demos) == 2 and all(d.completion_ids[-1] == 0 for d in demos)


def test_no_gold_answer_in_a_target_unless_the_model_wrote_it():
    """A model that never writes the gold answer gives no target holding it: nothing is spliced in."""
    tasks = [Task(f"q{i}", f"What is {i} + 40?", str(i + 40)) for i in range(5)]
    pool = {
        t.id: PoolEntry(t.id, [{"text": "Answer: 1", "extracted": "1", "correct": False}] * 3) for t in tasks
    }
    policy = ScriptedPolicy(
        lambda p, j: ("<think>Wait, 1 is wrong. It is 2.</think><answer>2</answer>", "stop")
    )
    traces, counts = sample_leader_traces(tasks, pool, policy, LeaderConfig(peers=3), Train(4))
    assert traces == [] and counts["by_reason"]["wrong"] == 20 and counts["too_few"]
    assert counts["rejected_examples"] == {
        "wrong": "<think>Wait, 1 is wrong. It is 2.</think><answer>2</answer>"
    }
    message = too_few_message(counts)
    assert (
        "found 0 self-correction trace(s) in 20 leader samples" in message and "train.sft_samples" in message
    )
    assert "train.sft_targets=format" in message  # the other way out on a model that writes no tags
    assert trace_samples(traces, {}, seed=0, step=1, n=2) == []  # no step data: never a template


def test_the_leader_recipe_is_two_stages_and_the_sampling_budget_is_config():
    cfg = TrainConfig.load("leader")
    assert cfg.train.warm_start > 0 and cfg.train.objective == "dr_grpo"
    assert (cfg.train.sft_questions, cfg.train.sft_samples) == (64, 8)
    assert LeaderConfig().rounds == 5  # the paper's T; the recipe's CPU preset is 2
    assert cfg.protocol.resolved.rounds == 2
    from workbench.config import ConfigError

    with pytest.raises(ConfigError, match="train.sft_samples must be >= 1"):
        TrainConfig.load("leader", ["train.sft_samples=0"])


def test_a_run_written_before_the_new_fields_resumes_without_a_config_change():
    """A manifest from before pool.rounds / train.sft_* lacks them; at their defaults they are no change."""
    from workbench.config import to_dict
    from workbench.rl.trainer import _added_at_default, config_differences

    new = to_dict(TrainConfig.load("leader"))
    old = json.loads(json.dumps(new))
    for section, key in (("pool", "rounds"), ("train", "sft_samples"), ("train", "sft_questions")):
        old[section].pop(key)
    diffs = config_differences(old, new)
    assert sorted(diffs)[0].startswith("pool.rounds: '<unset>' -> 1")
    assert [d for d in diffs if not _added_at_default(d)] == ["train.sft_questions: '<unset>' -> 64"]
    assert not _added_at_default("train.lr: 0.0001 -> 0.001")
