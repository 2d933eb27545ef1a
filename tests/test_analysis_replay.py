"""Counterfactual replay, decision-vs-rationale scoring and embeddings.

The replay must send the synthesiser exactly what the protocol sent: with the full pool, the
request built by `replay.synth_request` is compared with the one the protocol gave a scripted
backend when the episode ran. The slow tests use the real embedded model (a few generations).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workbench.analysis.credit import synth_round
from workbench.analysis.pools import Judge, rounds
from workbench.analysis.replay import ReplaySetup, replay_credit, synth_answer, synth_request
from workbench.evaluate import EvalConfig, run_eval
from workbench.models.scripted import ScriptedBackend
from workbench.runs import read_episodes


def reply(req, j: int) -> str:
    """Explorers/peers/proposers answer 5 or 6 by prompt length; the synthesisers answer in their formats."""
    text = req.messages[-1]["content"]
    if "<choice>" in text:
        n = len(re.findall(r"\[Candidate \d+\]", text))
        return f"<choice>{n}</choice><why>the last one</why>"
    if "You lead a team" in text:
        return "<think>checking</think><answer>5</answer>"
    return f"Let me add. Answer: {5 + len(text) % 2}"


def scripted_run(tmp: Path, protocol: str, limit: int = 2, **options) -> tuple[Path, ScriptedBackend]:
    backend = ScriptedBackend(reply)
    out = tmp / protocol
    cfg = EvalConfig.build(
        {"protocol": options}, task="arithmetic", protocol=protocol, limit=limit, out=str(out)
    )
    run_eval(cfg, backend=backend, progress=False)
    return out, backend


@pytest.mark.parametrize(
    "protocol,options",
    [
        ("maestro", {}),
        ("maestro", {"system": "Be careful.", "explorers": 2, "samples": 2}),
        ("maestro_gen", {}),
        ("leader", {"share": "answer"}),
        ("moa", {"layers": [2, 3]}),
    ],
)
def test_full_pool_replay_is_the_request_the_protocol_sent(tmp_path, protocol, options):
    run, backend = scripted_run(tmp_path, protocol, **options)
    sent = [r for batch in backend.calls for r in batch]
    setup, judge = ReplaySetup.for_run(run), Judge.for_run(run)
    for ep in read_episodes(run).episodes:
        rnd = synth_round(rounds(ep, judge))
        name, req = synth_request(setup, judge.task(ep), rnd.candidates)
        assert name == "default"
        assert any(list(r.messages) == list(req.messages) and r.sampling == req.sampling for r in sent)
        synth = next(m for m in ep["messages"] if m["sender"] == rnd.synth_node)
        assert synth_answer(setup, judge.task(ep), rnd.candidates, synth["content"]) == ep["final_answer"]


def test_replay_credit_batches_caches_and_refuses_majority_protocols(tmp_path):
    run, _ = scripted_run(tmp_path, "maestro", limit=3)
    eps = read_episodes(run).episodes
    model = ScriptedBackend(reply)
    cache = tmp_path / "cache.jsonl"
    first = replay_credit(run, eps, model, cache_path=cache)
    # 3 explorers: 2^3 − 2 = 6 coalitions per episode need the model (∅ and the full pool do not)
    assert first["episodes"] == 3 and first["new_generations"] <= 18 and len(model.calls) == 1
    assert all(len(g["shapley"]) == 3 for g in first["games"])
    for g in first["games"]:  # efficiency: Σφ = v(N) − v(∅)
        assert sum(g["shapley"]) == pytest.approx(g["values"][",".join(g["agents"])])
    again = replay_credit(run, eps, model, cache_path=cache)
    assert again["new_generations"] == 0 and len(model.calls) == 1
    assert [g["shapley"] for g in again["games"]] == [g["shapley"] for g in first["games"]]
    vote, _ = scripted_run(tmp_path, "vote", n=3)
    from workbench.config import ConfigError

    with pytest.raises(ConfigError, match="majority rule"):
        replay_credit(vote, read_episodes(vote).episodes, model)


# ---- the real model ----
@pytest.mark.slow
def test_replay_credit_with_the_real_central_agent(tmp_path, smollm2):
    run, _ = scripted_run(tmp_path, "maestro", limit=1, explorers=2, rounds=1, central_max_tokens=16)
    out = replay_credit(run, read_episodes(run).episodes, smollm2, cache_path=tmp_path / "c.jsonl")
    # the scripted explorers wrote the same text, so the two one-explorer slates are one and the same
    # request: generated once, read from the cache the second time
    assert out["new_generations"] == 1
    game = out["games"][0]
    assert set(game["values"]) == {"-", "explorer-0", "explorer-1", "explorer-0,explorer-1"}
    assert game["values"]["explorer-0"] == game["values"]["explorer-1"]
    assert sum(game["shapley"]) == pytest.approx(game["values"]["explorer-0,explorer-1"])


@pytest.mark.slow
def test_teacher_forced_scores_match_the_generation_log_probs(smollm2):
    from workbench.analysis.rationale import score_continuations
    from workbench.models.base import Request, SamplingParams

    (gen,) = smollm2.generate(
        [
            Request(
                [{"role": "user", "content": "What is 2 + 3?"}], SamplingParams(max_tokens=8, logprobs=True)
            )
        ]
    )
    ((total, n),) = score_continuations(smollm2, [gen.prompt_ids], [gen.token_ids])
    assert n == len(gen.token_ids) == len(gen.logprobs)
    assert total == pytest.approx(sum(gen.logprobs), abs=0.15 * n)


def mixed_reply():
    """Explorer 0 of each episode answers right, explorer 1 wrong (explorer calls come in node order)."""
    import itertools

    calls = itertools.count()

    def reply(req, j: int) -> str:
        text = req.messages[-1]["content"]
        if "<choice>" in text:
            return "<choice>1</choice><why>it is right</why>"
        a, op, b = re.search(r"What is (-?\d+)\s*([+\-])\s*(-?\d+)", text).groups()
        value = int(a) + int(b) if op == "+" else int(a) - int(b)
        return f"I add them. Answer: {value + next(calls) % 2}"

    return reply


def test_rationale_needs_a_transformers_backend(tmp_path):
    from workbench.analysis.rationale import rationale_analysis
    from workbench.config import ConfigError

    backend = ScriptedBackend(mixed_reply())
    run = tmp_path / "m"
    cfg = EvalConfig.build(
        {"protocol": {"explorers": 2, "rounds": 1}},
        task="arithmetic",
        protocol="maestro",
        limit=2,
        out=str(run),
    )
    run_eval(cfg, backend=backend, progress=False)
    with pytest.raises(ConfigError, match="transformers"):
        rationale_analysis(run, read_episodes(run).episodes, backend)


@pytest.mark.slow
def test_rationale_analysis_on_mixed_slates(tmp_path, smollm2):
    from workbench.analysis.rationale import rationale_analysis

    run = tmp_path / "m"
    cfg = EvalConfig.build(
        {"protocol": {"explorers": 2, "rounds": 1}},
        task="arithmetic",
        protocol="maestro",
        limit=2,
        out=str(run),
    )
    run_eval(cfg, backend=ScriptedBackend(mixed_reply()), progress=False)
    out = rationale_analysis(run, read_episodes(run).episodes, smollm2, limit=2, max_new_tokens=8)
    assert out["slates"] == 2 and out["generations"] == 4
    for s in out["detail"]:
        assert s["correct"] == [True, False] and s["chance"] == 0.5
        assert len(s["ell"]) == 2 and all(x <= 0 for x in s["ell"]) and s["auc"] in (0.0, 0.5, 1.0)


@pytest.mark.slow
def test_bundled_embeddings_offline():
    from workbench.analysis.diversity import Embedder, mean_pairwise_distance

    e = Embedder()
    same = mean_pairwise_distance(e.encode(["2 + 3 = 5. Answer: 5", "2 + 3 = 5. Answer: 5"]))
    close = mean_pairwise_distance(e.encode(["2 + 3 = 5. Answer: 5", "Adding 2 and 3 gives 5. Answer: 5"]))
    far = mean_pairwise_distance(e.encode(["2 + 3 = 5. Answer: 5", "Paris is the capital of France."]))
    assert same == pytest.approx(0.0, abs=1e-5) and close < far and far > 0.5
