"""`workbench train`: recipes, the sampled-token log-probs, rollouts, checkpoints and resume after SIGKILL.

The objectives themselves are tested against hand numbers and TRL in test_rl_objectives.py.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from recording_policy import RecordingPolicy

from workbench.config import ConfigError
from workbench.models.base import Request, SamplingParams
from workbench.rl.config import TrainConfig
from workbench.rl.report import format_summary
from workbench.rl.rollouts import draw_shown
from workbench.rl.trainer import rollback

# the smallest real run: one question per step, two samples, short completions, a 2-item dev set
TINY = [
    "task.limit=6",
    "eval.limit=2",
    "train.questions=1",
    "train.group=2",
    "train.max_tokens=16",
    "pool.size=3",
    "pool.max_tokens=48",
    "pool.threshold=1.0",
]


def test_built_in_recipes_load_and_validate():
    for recipe, role, objective in (
        ("maestro", "central", "clpo"),
        ("leader", "leader", "dr_grpo"),
        ("conductor", "conductor", "grpo"),
    ):
        cfg = TrainConfig.load(recipe)
        assert cfg.role == role and cfg.train.objective == objective and cfg.task.split == "train"
        assert cfg.eval.split == "dev"
    cfg = TrainConfig.load("maestro", ["train.objective=grpo", "train.steps=3", "protocol.rounds=1"])
    assert cfg.train.steps == 3 and cfg.protocol.options["rounds"] == 1


@pytest.mark.parametrize(
    "recipe, overrides, message",
    [
        ("maestro", ["train.stepz=3"], "train.stepz"),
        ("leader", ["train.objective=clpo"], "not available for recipe 'leader'"),
        ("maestro", ["eval.split=test"], "never tune on the test split"),
        ("maestro", ["train.rollout=online"], "clpo scores slates from the pool"),
        ("maestro", ["protocol.nope=1"], "protocol.nope"),
        ("maestro", ["train.temperature=0"], "needs sampled groups"),
        ("maestro", ["lora.rank=0"], "lora.rank"),
        ("maestro", ["train.warm_start=2", "protocol.central=gen"], "protocol.central=select"),
        ("leader", ["train.warm_start=-1"], "warm_start must be >= 0"),
        ("leader", ["train.steps=0", "train.warm_start=0"], "or 0 with train.warm_start > 0"),
        ("maestro", ["colour=red"], "unknown top-level key"),
        ("maestro", ["train.rationale_tokens=0"], "rationale_tokens must be >= 1"),
        ("maestro", ["train.rationale_tokens=-5"], "rationale_tokens must be >= 1"),
        ("maestro", ["train.ties=random"], "train.ties must be one of exclude, breslow, index"),
        ("maestro", ["train.w_ent=-0.1"], "train.w_ent must be >= 0"),
        ("maestro", ["train.w_dec=-1"], "train.w_dec must be >= 0"),
        (
            "maestro",
            ["train.w_dec=0", "train.w_rank=0", "train.beta=0", "train.w_ent=0"],
            "empty loss; set at least one of them > 0",
        ),
    ],
)
def test_recipe_errors_name_the_key(recipe, overrides, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.load(recipe, overrides)
    with pytest.raises(ConfigError, match="no recipe 'nope'"):
        TrainConfig.load("nope")
    with pytest.raises(ConfigError, match="online rollouts"):
        TrainConfig.load("conductor", ["train.rollout=offline"])
    sft_only = TrainConfig.load("leader", ["train.steps=0", "train.warm_start=3"])  # MLPO's SFT stage alone
    assert (sft_only.train.steps, sft_only.train.warm_start) == (0, 3)


def test_rollback_moves_later_lines_aside_and_keeps_them(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "tor')
    assert rollback(path, 2, lambda r: r["step"]) == 3  # steps 3, 4 and the torn line
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2]
    aside = (tmp_path / "metrics.after-step-2.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in aside[:2]] == [3, 4] and aside[2].startswith('{"step": 5')


def test_mixed_slates_show_a_right_and_a_wrong_answer_at_uniform_positions():
    answers = [{"text": str(i), "correct": i == 4} for i in range(6)]  # one right answer in six
    rng = random.Random(0)
    where = Counter()
    for _ in range(600):
        slate = draw_shown(answers, 3, rng, mixed=True)
        assert len(slate) == 3 and len({a["text"] for a in slate}) == 3
        assert [a["correct"] for a in slate].count(True) == 1
        where[next(i for i, a in enumerate(slate) if a["correct"])] += 1
    assert set(where) == {0, 1, 2} and min(where.values()) > 150  # the right answer's position is uniform
    # without mixed, or when the pool is all wrong: a plain random draw, which may miss the right one
    plain = [draw_shown(answers, 3, rng, mixed=False) for _ in range(200)]
    assert any(not any(a["correct"] for a in s) for s in plain)
    wrong = [{"text": str(i), "correct": False} for i in range(6)]
    assert len(draw_shown(wrong, 3, rng, mixed=True)) == 3
    assert len(draw_shown(answers[:2], 3, rng, mixed=True)) == 2  # fewer answers than slots: all of them


def test_conductor_warm_start_plans_are_well_formed():
    from workbench.protocols.conductor import parse_plan
    from workbench.rl.warmstart import conductor_plan

    rng = random.Random(0)
    shapes = Counter()
    for n in (1, 2, 3):
        for max_steps in (1, 2, 3, 5):
            for _ in range(20):
                plan = parse_plan(conductor_plan(n, max_steps, rng), n, max_steps)
                assert len(plan.model_id) <= max_steps and all(0 <= m < n for m in plan.model_id)
                shapes[len(plan.model_id)] += 1
    assert set(shapes) == {1, 2, 3}


def test_central_agent_warm_start_is_the_rl_prompt_and_a_random_well_formed_pick():
    """Maestro's format warm start: each demonstration's prompt is the one the RL steps build (the
    protocol's prompt builder on a slate drawn from the pool), its target a strict <choice> of a
    candidate drawn uniformly, whatever its correctness: it teaches the format, not the answer."""
    from workbench.protocols.maestro import MaestroConfig, parse_choice
    from workbench.rl.rollouts import PoolEntry, offline_messages
    from workbench.rl.warmstart import central_decision, demonstrations
    from workbench.tasks import Task

    cfg = MaestroConfig(explorers=3, samples=1, rounds=1)
    tasks = [Task(f"q{i}", f"What is {i} + 1?", str(i + 1)) for i in range(40)]
    pool = {
        t.id: PoolEntry(
            t.id,
            [
                {"text": f"so {t.id} is {v}", "extracted": str(v), "correct": v == int(t.answer) % 6}
                for v in range(6)
            ]
            + [{"text": "no idea", "extracted": None, "correct": False}],
        )
        for t in tasks
    }
    policy = RecordingPolicy()
    picks, right = Counter(), 0
    for step in (1, 2, 3):
        demos = demonstrations("maestro", tasks, pool, policy, cfg, seed=5, step=step, mixed=True)
        assert len(demos) == len(tasks)
        for d, chat in zip(demos, policy.seen[-len(tasks) :], strict=True):
            slate = [next(a for a in pool[d.task.id].answers if a["text"] == x) for x in d.shown]
            assert chat == offline_messages("maestro", d.task, slate, cfg)  # byte for byte the RL prompt
            assert len(slate) == 3 and sorted(d.shown_correct) == [False, False, True]  # mixed
            pick, how = parse_choice(d.text, 3, lenient=False)
            assert (pick, how) == (d.info["pick"], "strict")
            assert d.completion_ids == [ord(c) for c in d.text] + [0]  # the target ends in EOS
            assert d.correct and d.reward == 1.0  # imitated whatever the pick
            picks[pick] += 1
            right += d.info["pick_correct"]
    assert set(picks) == {0, 1, 2} and min(picks.values()) > 25  # uniform over positions
    assert 20 < right < 60  # about a third of 120 random picks are right: chance, not selection
    # same seed and step: the same demonstrations (a resumed warm start redoes them exactly)
    again = demonstrations("maestro", tasks[:5], pool, RecordingPolicy(), cfg, seed=5, step=1, mixed=True)
    first = demonstrations("maestro", tasks[:5], pool, RecordingPolicy(), cfg, seed=5, step=1, mixed=True)
    assert [d.text for d in again] == [d.text for d in first]
    # a candidate without an extracted answer is named as such, never as "None"
    _, text = central_decision([{"text": "?", "extracted": None, "correct": False}], random.Random(0))
    assert text == "<choice>1</choice><why>Candidate 1 gives no final answer.</why>"
    with pytest.raises(ValueError, match="no format warm start for recipe 'nope'"):
        demonstrations("nope", tasks, pool, policy, cfg, seed=5, step=1)


def test_leader_format_warm_start_copies_a_random_answered_peer_into_the_tags():
    """train.sft_targets=format: the leader's RL prompt on a drawn peer set, and a tagged answer
    copied from a peer drawn among those that answered (the strict reader reads it back)."""
    from workbench.protocols.leader import LeaderConfig, leader_answer
    from workbench.rl.rollouts import PoolEntry, offline_messages
    from workbench.rl.warmstart import demonstrations, leader_format
    from workbench.tasks import Task

    cfg = LeaderConfig(peers=3, rounds=1)
    tasks = [Task(f"q{i}", f"What is {i} + 2?", str(i + 2)) for i in range(30)]
    answers = [{"text": f"It is {v}.", "extracted": str(v), "correct": v == 4} for v in (3, 4, 5)]
    silent = [{"text": "hmm", "extracted": None, "correct": False}] * 3
    pool = {t.id: PoolEntry(t.id, answers + silent[:1]) for t in tasks}
    pool["q0"] = PoolEntry("q0", silent)  # no peer answered: no demonstration for q0
    policy = RecordingPolicy()
    demos = demonstrations("leader", tasks, pool, policy, cfg, seed=1, step=1, mixed=False)
    assert [d.task.id for d in demos] == [t.id for t in tasks[1:]]
    copied = Counter()
    for d, chat in zip(demos, policy.seen, strict=True):
        slate = [next(a for a in pool[d.task.id].answers if a["text"] == x) for x in d.shown]
        assert chat == offline_messages("leader", d.task, slate, cfg)  # the RL prompt, byte for byte
        answer, tagged = leader_answer(d.text, Task("t", "?", "0"), strict=True)
        assert tagged and answer == slate[d.info["pick"]]["extracted"] is not None
        assert d.info["pick_correct"] == (answer == "4") and d.correct
        copied[answer] += 1
    assert set(copied) == {"3", "4", "5"}  # any answered peer, right or wrong
    assert leader_format(silent, random.Random(0)) is None
    _, text = leader_format(answers[:1], random.Random(0))
    assert text == "<think>Agent 1 answered 3.</think>\n<answer>3</answer>"


def test_sft_targets_choose_the_leader_warm_start_and_are_validated():
    assert TrainConfig.load("leader", ["train.warm_start=2"]).sampled_traces  # MLPO's SFT stage
    assert not TrainConfig.load("leader", ["train.warm_start=2", "train.sft_targets=format"]).sampled_traces
    assert not TrainConfig.load("leader", ["train.warm_start=0"]).sampled_traces
    assert not TrainConfig.load("maestro", ["train.warm_start=2", "train.sft_targets=format"]).sampled_traces
    with pytest.raises(
        ConfigError, match="train.sft_targets must be one of '', 'self_corrections', 'format'"
    ):
        TrainConfig.load("leader", ["train.sft_targets=templates"])
    with pytest.raises(ConfigError, match="is the leader's SFT stage; recipe 'maestro'"):
        TrainConfig.load("maestro", ["train.warm_start=2", "train.sft_targets=self_corrections"])


def test_eligible_questions_threshold_and_mixed():
    from workbench.rl.rollouts import PoolEntry
    from workbench.rl.trainer import eligible_questions
    from workbench.tasks import Task

    tasks = [Task(f"q{k}", "?", "1") for k in range(4)]
    right, wrong = {"correct": True}, {"correct": False}
    pool = {  # pooled accuracies 0, 0.5, 0.75, 1
        "q0": PoolEntry("q0", [wrong] * 4),
        "q1": PoolEntry("q1", [right, right, wrong, wrong]),
        "q2": PoolEntry("q2", [right, right, right, wrong]),
        "q3": PoolEntry("q3", [right] * 4),
    }
    assert eligible_questions(tasks, pool, 0.75, mixed=False) == [0, 1]  # MLPO: drop accuracy >= 0.75
    assert eligible_questions(tasks, pool, 1.0, mixed=False) == [0, 1, 2, 3]  # 1.0 keeps every question
    assert eligible_questions(tasks, pool, 1.0, mixed=True) == [1, 2]  # a right and a wrong answer
    assert eligible_questions(tasks, {"q1": pool["q1"]}, 1.0, mixed=False) == [1]  # not pooled: not trained


@pytest.mark.slow
def test_loss_logprobs_equal_the_sampling_logprobs(smollm2_fp32):
    """The trainer's one-pass scores of sampled tokens equal the decode loop's log-probs (fp32)."""
    from workbench.rl.policy import completion_logprobs

    reqs = [
        Request(
            [{"role": "user", "content": q}],
            SamplingParams(temperature=0.8, max_tokens=12, seed=s, logprobs=True),
        )
        for s, q in enumerate(["What is 2 + 3?", "Name a colour.", "Count to three."])
    ]
    gens = smollm2_fp32.generate(reqs)
    with torch.no_grad():
        scores = completion_logprobs(
            smollm2_fp32.model,
            [g.prompt_ids for g in gens],
            [g.token_ids for g in gens],
            temperature=0.8,
            pad_id=smollm2_fp32.pad_id,
            with_entropy=True,
        )
    for b, g in enumerate(gens):
        n = len(g.token_ids)
        assert scores.mask[b].sum() == n
        assert torch.allclose(scores.logp[b, :n], torch.tensor(g.logprobs), atol=2e-3)
        assert (scores.entropy[b, :n] >= 0).all()


@pytest.mark.slow
def test_shared_prompt_pass_equals_the_padded_batch(smollm2_fp32):
    """A group's prompt run once (KV cache indexed out to its samples) gives the same log-probs and
    the same LoRA gradients as every sample padded into one batch (fp32, a random adapter)."""
    import copy

    from peft import LoraConfig, get_peft_model

    from workbench.rl.policy import completion_logprobs

    model = get_peft_model(
        copy.deepcopy(smollm2_fp32.model),
        LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False
        ),
    )
    tok = smollm2_fp32.tokenizer
    short = tok("What is 2 + 3?")["input_ids"]
    long = tok("Three friends share nine apples equally. How many apples does each friend get?")["input_ids"]
    prompts = [short, long, short, long, short, long]  # two groups, interleaved as micro-batches may be
    completions = [tok(t)["input_ids"] for t in ("5", "Each gets 3.", "It is 5, since 2 + 3 = 5.", "3")]
    completions += [[], tok(" three apples")["input_ids"]]  # an empty completion scores nothing
    scores, grads = [], []
    for share in (True, False):
        model.zero_grad()
        out = completion_logprobs(
            model, prompts, completions, temperature=0.9, pad_id=smollm2_fp32.pad_id, share_prompts=share
        )
        (out.logp * out.mask).sum().backward()
        scores.append(out)
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    shared, padded = scores
    assert torch.equal(shared.mask, padded.mask)
    assert torch.allclose(shared.logp, padded.logp, atol=1e-4)
    for a, b in zip(*grads, strict=True):
        assert torch.isfinite(a).all() and (a - b).norm() <= 1e-4 * b.norm()  # fp32 summation order only


def _train(tmp_path, recipe, extra):
    from workbench.rl.config import TrainConfig
    from workbench.rl.trainer import train

    cfg = TrainConfig.load(recipe, TINY + extra + [f"out={tmp_path / recipe}"])
    return train(cfg, progress=False)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.slow
def test_maestro_clpo_trains_and_writes_every_file(tmp_path):
    result = _train(
        tmp_path,
        "maestro",
        ["train.steps=2", "train.warm_start=1", "protocol.rounds=1", "train.checkpoint_every=1"],
    )
    run = result.run_dir
    for name in (
        "config.yaml",
        "pool.jsonl",
        "metrics.jsonl",
        "episodes.jsonl",
        "evals.jsonl",
        "summary.json",
    ):
        assert (run / name).exists(), name
    warm, *metrics = _lines(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [2, 3]
    # the format warm start: one supervised step on a well-formed random pick per question
    assert warm["phase"] == "warm_start" and warm["samples"] == 1 and 0 <= warm["demo_picks_right"] <= 1
    assert warm["loss"] > 0 and warm["grad_norm"] > 0
    for key in (
        "reward",
        "reward_std",
        "frac_reward_zero_std",
        "kl",
        "entropy",
        "completion_length",
        "clip_ratio",
        "grad_norm",
        "lr",
        "accuracy",
        "coverage",
        "identification",
        "rank_loss",
    ):
        assert key in metrics[0], key
    train_eps = [e for e in _lines(run / "episodes.jsonl") if "train_step" in e["meta"]]
    assert train_eps and all("advantage" in e["meta"] for e in train_eps)
    assert len({e["episode_id"] for e in train_eps}) == len(train_eps)  # one id per training sample
    evaluated = {e["meta"]["eval_step"] for e in _lines(run / "episodes.jsonl") if e["meta"].get("eval")}
    assert evaluated == {0, 1, 3}  # before, after the warm start, after
    s = result.summary
    assert s["before"]["step"] == 0 and s["after"]["step"] == 3 and "mcnemar_p" in s["after_vs_before"]
    assert s["after_warm_start"]["step"] == 1
    table = format_summary(s)
    assert "format failures   read leniently" in table and "(after 1 warm-start SFT steps)" in table
    assert f"   {s['after']['lenient_decisions']}\n" in table
    # the adapter serves like any model: BASE+ADAPTER
    from workbench.models import load_backend

    served = load_backend(f"smollm2+{run / 'adapter'}")
    assert served.generate([Request([{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=4))])[
        0
    ].text


@pytest.mark.slow
def test_leader_offline_and_conductor_online_take_a_step(tmp_path):
    leader = _train(
        tmp_path,
        "leader",
        ["train.steps=1", "train.warm_start=1", "protocol.rounds=1", "protocol.peers=2"]
        + ["train.sft_questions=2", "train.sft_samples=2"],
    )
    warm, rl = _lines(leader.run_dir / "metrics.jsonl")
    sampled = leader.summary["sft_sampling"]
    assert sampled["samples"] == 4 and sum(sampled["by_reason"].values()) == 4
    assert (leader.run_dir / "sft_traces.jsonl").exists() and warm["sft_traces"] == sampled["kept"]
    # the base 135M leader rarely corrects itself: too few traces is said, and the SFT step skips
    assert warm["phase"] == "warm_start" and (warm["samples"] == 1 or "sft_skipped" in warm)
    assert rl["phase"] == "rl" and rl["samples"] == 2
    assert [e["step"] for e in _lines(leader.run_dir / "evals.jsonl")] == [
        0,
        1,
        2,
    ]  # before, after SFT, after
    assert leader.summary["after_warm_start"]["step"] == 1
    # the leader's format warm start instead (train.sft_targets=format): tagged copies of random peers
    fmt = _train(
        tmp_path / "format",
        "leader",
        ["train.steps=0", "train.warm_start=1", "train.sft_targets=format", "protocol.rounds=1"]
        + ["protocol.peers=2"],
    )
    (row,) = _lines(fmt.run_dir / "metrics.jsonl")
    assert row["phase"] == "warm_start" and row["samples"] == 1 and row["loss"] > 0
    assert "demo_picks_right" in row and not (fmt.run_dir / "sft_traces.jsonl").exists()
    assert fmt.summary["sft_sampling"] is None and fmt.summary["after"]["step"] == 1
    conductor = _train(
        tmp_path,
        "conductor",
        [
            "train.steps=1",
            "train.warm_start=1",
            "protocol.max_steps=2",
            "protocol.max_tokens=16",
            "train.max_tokens=96",
        ],
    )
    row = _lines(conductor.run_dir / "metrics.jsonl")[-1]
    assert row["samples"] >= 2 and 0 <= row["format_failure_rate"] <= 1
    eps = [e for e in _lines(conductor.run_dir / "episodes.jsonl") if "train_step" in e["meta"]]
    assert eps and all(e["reward"] in (0.0, 0.5, 1.0) for e in eps)  # the Conductor's reward


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_and_loses_nothing(tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
        "--recipe",
        "maestro",
        "--out",
        str(out),
        "--set",
        *TINY,
        "train.steps=3",
        "train.checkpoint_every=1",
        "train.objective=grpo",
        "protocol.rounds=1",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while time.time() < deadline and not (out / "checkpoints" / "step-000001").exists():
        time.sleep(0.5)
        assert proc.poll() is None, "training ended before its first checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {
        e["episode_id"] + str(e["meta"].get("train_step"))
        for e in _lines(out / "episodes.jsonl")
        if e["meta"].get("train_step") == 1
    }
    assert before  # step 1's episodes were on disk when it died
    done = subprocess.run(
        [sys.executable, "-m", "workbench", "train", "--resume", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = _lines(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]  # each step exactly once
    eps = _lines(out / "episodes.jsonl")
    assert before <= {e["episode_id"] + str(e["meta"].get("train_step")) for e in eps}
    assert sorted({e["meta"]["train_step"] for e in eps if "train_step" in e["meta"]}) == [1, 2, 3]
    assert json.loads((out / "summary.json").read_text())["after"]["step"] == 3


# ---------------------------------------------------------------- resume: locks, config changes, rollback
def _new_run(tmp_path, extra=()):
    """A training run folder as train() opens it (config.yaml, manifest.json), without a model."""
    from workbench.rl.trainer import _open_run

    cfg = TrainConfig.load("maestro", TINY + list(extra) + [f"out={tmp_path / 'run'}"])
    run_dir, cfg, lock, _ = _open_run(cfg, None, None, False)
    lock.release()
    return run_dir


def _edit_config(run_dir, section, key, value):
    import yaml

    data = yaml.safe_load((run_dir / "config.yaml").read_text())
    data[section][key] = value
    (run_dir / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def test_resume_refuses_an_edited_config_listing_the_differences(tmp_path):
    from workbench.rl.trainer import _open_run, train

    run = _new_run(tmp_path)
    _edit_config(run, "train", "lr", 1e-3)
    _edit_config(run, "train", "steps", 7)
    with pytest.raises(ConfigError) as e:
        train(resume=run, progress=False)  # refused before any model loads
    msg = str(e.value)
    assert "train.lr: 0.0001 -> 0.001" in msg and "train.steps: 40 -> 7" in msg
    assert "--allow-config-change" in msg and "\n" not in msg
    _, cfg, lock, changed = _open_run(None, run, None, True)  # --allow-config-change
    lock.release()
    assert changed and cfg.train.lr == 1e-3
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["train"]["lr"] == 1e-3
    assert any("train.lr" in c for c in manifest["config_changes"][0]["changes"])
    _open_run(None, run, None, False)[2].release()  # the applied config is now the run's own


def test_resume_refuses_changes_that_a_checkpoint_cannot_take_even_when_allowed(tmp_path):
    from workbench.rl.trainer import _open_run

    run = _new_run(tmp_path)
    _edit_config(run, "lora", "rank", 64)
    with pytest.raises(ConfigError, match=r"lora\.rank: .* cannot change on resume"):
        _open_run(None, run, None, True)


def test_a_second_resume_on_the_same_folder_is_refused(tmp_path):
    from workbench.rl.trainer import train
    from workbench.runs import DirLock, RunDirError

    run = _new_run(tmp_path)
    held = DirLock(run, "training run")  # another process training in it
    with pytest.raises(RunDirError, match=r"in use by another workbench process \(pid \d+\)"):
        train(resume=run, progress=False)
    held.release()
    with pytest.raises(RunDirError, match="already holds a run: use --resume"):
        train(TrainConfig.load("maestro", [f"out={run}"]), progress=False)


def test_a_malformed_config_yaml_on_resume_is_one_line(tmp_path):
    from workbench.rl.trainer import train

    run = _new_run(tmp_path)
    for text in ("train: [\n", "- a list\n", "\xff"):
        (run / "config.yaml").write_text(text, encoding="latin-1")
        with pytest.raises(ConfigError, match="config.yaml"):
            train(resume=run, progress=False)


def _jl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_resume_without_a_checkpoint_rolls_every_log_back_to_step_0(tmp_path):
    from workbench.rl.trainer import _rollback_logs

    run = tmp_path
    ev = lambda step: {"meta": {"eval": True, "eval_step": step}, "task_id": f"e{step}"}  # noqa: E731
    tr = lambda step: {"meta": {"train_step": step}, "task_id": f"t{step}"}  # noqa: E731

    def row(step):
        return {
            "step": step,
            "n": 2,
            "accuracy": 0.5,
            "format_failures": 0,
            "ci95": [0, 1],
            "correct_by_task": {},
        }

    (run / "metrics.jsonl").write_text(_jl([{"step": 1}, {"step": 2}]) + '{"step": 3, "lo')
    (run / "evals.jsonl").write_text(_jl([row(0), {"step": 2, "accuracy": None}]))
    (run / "episodes.jsonl").write_text(_jl([ev(0), ev(0), tr(1), tr(2), ev(2)]) + "[" * 5000 + "\n")
    evals = _rollback_logs(run, 0)
    assert [e["step"] for e in evals] == [0]
    assert (run / "metrics.jsonl").read_text() == ""  # nothing of steps 1-3 is counted again
    kept = [json.loads(x) for x in (run / "episodes.jsonl").read_text().splitlines()]
    assert [e["task_id"] for e in kept] == ["e0", "e0"]
    aside = (run / "episodes.after-step-0.jsonl").read_text().splitlines()
    assert len(aside) == 4 and (run / "metrics.after-step-0.jsonl").exists()  # moved, never deleted


def test_episodes_of_an_evaluation_cut_short_are_moved_aside_and_it_is_due_again(tmp_path):
    from workbench.rl.trainer import _eval_due, _rollback_logs

    cfg = TrainConfig.load("maestro", TINY + ["train.steps=6", "train.eval_every=2"])
    row = {"step": 0, "n": 2, "accuracy": 0.5, "format_failures": 0, "ci95": [0, 1], "correct_by_task": {}}
    (tmp_path / "evals.jsonl").write_text(_jl([row]))
    (tmp_path / "episodes.jsonl").write_text(
        _jl(
            [{"meta": {"eval": True, "eval_step": 0}}, {"meta": {"train_step": 2}}]
            + [{"meta": {"eval": True, "eval_step": 2}}]
        )  # fmt: skip
    )  # killed during the evaluation after step 2's checkpoint
    evals = _rollback_logs(tmp_path, 2)
    assert [e["step"] for e in evals] == [0]
    assert len((tmp_path / "episodes.jsonl").read_text().splitlines()) == 2
    assert _eval_due(cfg.train, 2, 6) and not _eval_due(cfg.train, 3, 6) and not _eval_due(cfg.train, 6, 6)


def test_an_edited_lr_is_applied_after_the_checkpoint_state_is_loaded():
    from workbench.rl.trainer import _apply_hyperparameters, _schedule

    def build(cfg):
        model = torch.nn.Linear(2, 1)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        total = cfg.train.steps
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg.train, total)), total

    old = TrainConfig.load("maestro", ["train.lr=1e-4", "train.steps=10"])
    opt, sch, _ = build(old)
    for _ in range(4):
        opt.step()
        sch.step()
    saved = (opt.state_dict(), sch.state_dict())
    new = TrainConfig.load("maestro", ["train.lr=2e-5", "train.steps=20", "train.weight_decay=0.1"])
    opt2, sch2, total = build(new)
    opt2.load_state_dict(saved[0])
    sch2.load_state_dict(saved[1])
    assert sch2.base_lrs == [1e-4]  # what resuming did before: the old lr, silently restored
    _apply_hyperparameters(new, opt2, sch2, total)
    want = 2e-5 * _schedule(new.train, total)(4)
    assert opt2.param_groups[0]["lr"] == pytest.approx(want)
    assert opt2.param_groups[0]["weight_decay"] == 0.1
    opt2.step()
    sch2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(2e-5 * _schedule(new.train, total)(5))


def test_checkpoints_load_with_weights_only_and_an_old_pickle_needs_trust(tmp_path, monkeypatch):
    import numpy as np

    from workbench.rl.checkpoint import CheckpointError, latest_checkpoint, load_trainer_state, rng_state

    torch.save({"rng": rng_state(), "optimizer": {}, "scheduler": {}}, tmp_path / "new.pt")
    blob = load_trainer_state(tmp_path / "new.pt")  # weights_only=True
    assert blob["rng"]["numpy"]["key"].dtype == torch.int64
    torch.save({"rng": {"numpy": np.random.get_state()}}, tmp_path / "old.pt")  # pickled numpy
    monkeypatch.delenv("WORKBENCH_TRUST_CHECKPOINTS", raising=False)
    with pytest.raises(CheckpointError, match="WORKBENCH_TRUST_CHECKPOINTS=1"):
        load_trainer_state(tmp_path / "old.pt")
    monkeypatch.setenv("WORKBENCH_TRUST_CHECKPOINTS", "1")
    assert load_trainer_state(tmp_path / "old.pt")["rng"]["numpy"][0] == "MT19937"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("../../elsewhere")
    assert latest_checkpoint(tmp_path) is None  # never a path out of checkpoints/


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0_without_duplicates(tmp_path):
    from workbench.rl.trainer import train

    first = _train(tmp_path, "maestro", ["train.steps=1", "protocol.rounds=1", "train.objective=grpo"])
    run = first.run_dir
    n_train = sum("train_step" in e["meta"] for e in _lines(run / "episodes.jsonl"))
    import shutil

    for name in ("checkpoints", "adapter"):  # as if killed after step 1's lines, before its checkpoint
        shutil.rmtree(run / name)
    (run / "summary.json").unlink()
    again = train(resume=run, progress=False)
    assert [m["step"] for m in _lines(run / "metrics.jsonl")] == [1]
    assert [e["step"] for e in _lines(run / "evals.jsonl")] == [0, 1]
    eps = _lines(run / "episodes.jsonl")
    assert sum("train_step" in e["meta"] for e in eps) == n_train  # step 1 once, not twice
    assert sorted({e["meta"]["eval_step"] for e in eps if e["meta"].get("eval")}) == [0, 1]
    assert again.summary["after"]["step"] == 1 and (run / "adapter").is_dir()


def test_cli_resume_flags_give_one_line_errors(tmp_path, capsys):
    from workbench.cli import main

    run = _new_run(tmp_path)
    _edit_config(run, "train", "lr", 1e-3)
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.lr: 0.0001 -> 0.001" in err and "--allow-config-change" in err
    assert main(["train", "--allow-config-change"]) == 2
    assert "goes with --resume" in capsys.readouterr().err
    _edit_config(run, "task", "limit", 3)
    assert main(["train", "--resume", str(run), "--allow-config-change"]) == 2
    assert "task.limit: 6 -> 3 cannot change on resume" in capsys.readouterr().err


def test_a_new_run_with_a_bad_task_writes_nothing(tmp_path):
    from workbench.rl.trainer import train
    from workbench.tasks import TaskError

    cfg = TrainConfig.load(
        "maestro", [f"task.name=jsonl:{tmp_path / 'missing.jsonl'}", f"out={tmp_path / 'run'}"]
    )
    with pytest.raises((TaskError, ConfigError)):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- strict decisions (training) vs lenient (evaluation)
def test_clpo_weights_may_be_zero_one_at_a_time_and_rationale_length_is_read():
    cfg = TrainConfig.load("maestro", ["train.w_dec=0", "train.rationale_tokens=12", "train.ties=breslow"])
    assert (cfg.train.w_dec, cfg.train.rationale_tokens, cfg.train.ties) == (0.0, 12, "breslow")
    # an all-zero CLPO weight set is only refused for CLPO
    TrainConfig.load("maestro", ["train.objective=grpo", "train.w_dec=0", "train.w_rank=0"])


@pytest.mark.parametrize(
    "text, strict, lenient",
    [
        ("<choice>2</choice><why>x</why>", (1, "strict"), (1, "strict")),
        ("<choice> candidate 3 </choice>", (2, "strict"), (2, "strict")),
        ("the answer is 2", (None, "failed"), (1, "lenient")),
        ("Candidate 1. <choice>1", (None, "failed"), (0, "lenient")),  # never closed
        ("<choice>1</choice> or <choice>3</choice>", (None, "failed"), (0, "lenient")),  # two picks
        ("<choice>1</choice> <choice>1</choice>", (0, "strict"), (0, "strict")),  # the same pick twice
        ("<choice>4</choice> 2", (None, "failed"), (1, "lenient")),  # out of range, then a number
        ("<CHOICE>2</CHOICE>", (1, "strict"), (1, "strict")),
        ("nothing here", (None, "failed"), (None, "failed")),
    ],
)
def test_parse_choice_strict_and_lenient(text, strict, lenient):
    from workbench.protocols.maestro import parse_choice

    assert parse_choice(text, 3, lenient=False) == strict
    assert parse_choice(text, 3) == lenient


def test_strict_reading_is_the_lenient_one_restricted_to_well_formed_decisions():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from workbench.protocols.maestro import parse_choice

    pieces = st.sampled_from(
        ["<choice>", "</choice>", "<CHOICE>", "candidate", " ", "2", "7", "0", "x", "\n"]
    )

    @settings(max_examples=200, deadline=None)
    @given(st.lists(pieces, max_size=12).map("".join), st.integers(1, 8))
    def check(text, m):
        strict, lenient = parse_choice(text, m, lenient=False), parse_choice(text, m)
        assert strict[1] in ("strict", "failed") and lenient[1] in ("strict", "lenient", "failed")
        if strict[0] is not None:
            assert lenient == strict and 0 <= strict[0] < m and "</choice>" in text.lower()
        else:
            assert lenient[1] != "strict"
        if "<choice" not in text.lower():
            assert strict == (None, "failed")

    check()


@pytest.mark.parametrize("lenient", [True, False])
def test_maestro_counts_lenient_decisions_and_strict_mode_fails_them(lenient):
    """Evaluation keeps the lenient reading (the default) and counts it in meta.lenient_decisions; with
    lenient=false (training's reading) "Candidate 2 is right" is a failed decision."""
    import re

    from workbench.evaluate import ProtocolConfig, run_episodes
    from workbench.models.scripted import ScriptedBackend
    from workbench.tasks import TaskConfig, load_tasks

    def reply(req, j):
        text = req.messages[-1]["content"]
        if "<choice>NUMBER</choice>" in text:
            return "Candidate 2 is right."
        return f"Answer: {eval(re.findall(r'What is (.+?)[?]', text)[-1])}"

    tasks = load_tasks(TaskConfig.from_flat({"name": "arithmetic", "limit": 1}))
    options = {"rounds": 2} if lenient else {"rounds": 2, "lenient": False}
    (ep,), errors, _ = run_episodes(tasks, ProtocolConfig("maestro", options), ScriptedBackend(reply))
    assert errors == []
    from workbench.runs import summarize

    assert summarize([ep.to_dict()])["lenient_decisions"] == (2 if lenient else 0)  # summary.json counts them
    if lenient:
        assert ep.meta["lenient_decisions"] == 2 and ep.meta["central_format_failures"] == 0
        assert [s["parse"] for s in ep.meta["slates"]] == ["lenient", "lenient"] and ep.correct
    else:
        assert ep.meta["lenient_decisions"] == 0 and ep.meta["central_format_failures"] == 2
        assert ep.format_failure and ep.final_answer is None


def test_a_step_without_an_update_advances_the_schedule_silently():
    # an SFT stage with no traces makes no update; the lr schedule is step-indexed and still moves,
    # without torch's "lr_scheduler.step() before optimizer.step()" warning
    import warnings

    from workbench.rl.trainer import _advance

    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([w], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _advance(sched)
        _advance(sched)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.75) and torch.equal(w.detach(), torch.zeros(2))


def test_steps_without_a_reward_signal_are_named_and_counted():
    from workbench.rl.trainer import no_signal, no_signal_message

    failing = {"phase": "rl", "samples": 64, "format_failure_rate": 1.0, "frac_reward_zero_std": 1.0}
    flat = {"phase": "rl", "samples": 64, "format_failure_rate": 0.2, "frac_reward_zero_std": 1.0}
    fine = {"phase": "rl", "samples": 64, "format_failure_rate": 0.2, "frac_reward_zero_std": 0.5}
    assert "format failure" in no_signal("grpo", failing) and "format failure" in no_signal("clpo", failing)
    assert "same reward" in no_signal("grpo", flat) and no_signal("clpo", flat) is None  # CLPO still ranks
    assert no_signal("sft", {**fine, "accuracy": 0.0}) == "no sample was right (nothing to imitate)"
    assert no_signal("grpo", fine) is None and no_signal("grpo", {"phase": "rl", "samples": 0}) is None
    rows = [{**failing, "no_signal": no_signal("clpo", failing)}] * 3 + [fine, {"phase": "warm_start"}]
    msg = no_signal_message("clpo", rows)
    assert msg.startswith("3 of 4 RL steps had no reward signal (3 x every sample was a format failure")
    assert "only lowers the probability of what was sampled" in msg and "\n" not in msg
    assert no_signal_message("grpo", [fine]) is None


def test_mcnemar_p_keeps_significant_digits():
    from workbench.stats import paired_outcomes

    a = [{"task_id": i, "correct": i < 1} for i in range(22)] + [{"task_id": 99, "correct": True}]
    b = [{"task_id": i, "correct": i >= 1} for i in range(22)] + [{"task_id": 99, "correct": True}]
    p = paired_outcomes(a, b)
    assert (p["only_a_right"], p["only_b_right"]) == (1, 21) and p["mcnemar_p"] == 1.1e-05  # not 0.0


def test_the_summary_table_shows_lenient_reads_for_maestro_only():
    ev = {"accuracy": 0.42, "ci95": [0.354, 0.489], "format_failures": 24, "lenient_decisions": 176}
    summary = {
        "recipe": "leader",
        "objective": "dr_grpo",
        "rollout": "offline",
        "steps": 10,
        "warm_start": 2,
        "before": ev,
        "after_warm_start": {**ev, "accuracy": 0.5},
        "after": {**ev, "n": 200, "generations_per_query": 4.0, "tokens_per_query": 476.6},
        "after_vs_before": {
            "only_a_right": 1,
            "only_b_right": 2,
            "both_right": 3,
            "neither": 4,
            "mcnemar_p": 1.0,
        },
    }
    lines = format_summary(summary).splitlines()
    assert lines[3] == "          accuracy   95% CI            format failures"
    assert lines[4] == "before    0.420      [0.354, 0.489]    24"
    assert lines[5] == "warm      0.500      [0.354, 0.489]    24   (after 2 warm-start SFT steps)"
    lines = format_summary({**summary, "recipe": "maestro"}).splitlines()
    assert lines[3] == "          accuracy   95% CI            format failures   read leniently"
    assert lines[4] == "before    0.420      [0.354, 0.489]    24                176"
    assert lines[5].endswith("24                176   (after 2 warm-start SFT steps)")
