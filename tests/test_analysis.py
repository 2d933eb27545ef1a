"""workbench.analysis on hand-built episodes: each metric against numbers computed by hand.

Hand-built episodes are written as the protocols recorded them in episode schema 1 (messages,
slate / round_summary events, meta: no recorded pools); the analyses must decode them and get the
numbers in the comments. Schema 2 (recorded pools and verdicts) is checked against them in
tests/test_schema2.py. End-to-end checks run the real
protocols on a scripted backend through `run_eval` and `workbench analyze`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from workbench.analysis import credit, diversity
from workbench.analysis.analyze import AnalyzeOptions, analyze, analyze_run
from workbench.analysis.conductor import conductor_analysis
from workbench.analysis.coverage import by_train_step, coverage_identification
from workbench.analysis.pools import Judge, rounds
from workbench.analysis.rationale import auc
from workbench.analysis.stats import bootstrap_ci, mean_ci, paired_bootstrap, seed_aggregate
from workbench.episode import SCHEMA_1, Episode, Message


# ---- hand-built episodes ----
def _msg(i: int, sender: str, role: str, rnd: int, answer: str | None, text: str | None = None) -> Message:
    return Message(
        i, rnd, sender, ["x"], role, text or f"I think it is {answer}. Answer: {answer}", 5, 5, answer
    )


def _episode(
    protocol: str, msgs: list[Message], final: str | None, gold: str = "5", events=(), meta=None, tid="t"
):
    ep = Episode(
        f"{tid}#0", tid, protocol, "What is 2 + 3?", gold, final, final == gold, float(final == gold)
    )
    ep.messages = msgs
    ep.events = [{"ts": 0.0, **e} for e in events]
    ep.meta = meta or {}
    ep.format_failure = final is None
    ep.schema = SCHEMA_1  # recorded as before episode schema 2: rounds decoded from node names
    return ep.to_dict()


def vote_episode(answers: list[str | None], gold: str = "5", tid: str = "t") -> dict:
    from workbench.protocols.vote import majority

    msgs = [_msg(i, f"sample-{i}", "sampler", 0, a) for i, a in enumerate(answers)]
    win = majority(answers)[0]
    msgs.append(Message(len(msgs), 0, "vote", ["answer"], "aggregator", f"majority: {win}", 0, 0, win))
    return _episode("vote", msgs, win, gold, tid=tid)


def maestro_episode(slates: list[tuple[list[str], int | None]], gold: str = "5", tid: str = "t") -> dict:
    """slates: per round (candidate answers, 0-based pick or None for a failed decision)."""
    msgs, events, endorsed = [], [], None
    for r, (answers, pick) in enumerate(slates, 1):
        for i, a in enumerate(answers):
            msgs.append(_msg(len(msgs), f"explorer-{i}@{r}", "explorer", r, a))
        chosen = answers[pick] if pick is not None else None
        msgs.append(
            Message(len(msgs), r, f"central@{r}", ["x"], "central", f"<choice>{pick}</choice>", 5, 5, chosen)
        )
        correct = [a == gold for a in answers]
        endorsed = chosen if pick is not None else endorsed
        events.append(
            {
                "type": "slate", "round": r, "candidates": answers, "correct": correct, "coverage": any(correct),
                "pick": pick, "pick_correct": correct[pick] if pick is not None else None,
                "parse": "strict" if pick is not None else "failed",
            }
        )  # fmt: skip
    return _episode("maestro", msgs, endorsed, gold, events, tid=tid)


def leader_episode(
    peer_rounds: list[list[str]], leader_answers: list[str], gold: str = "5", tid: str = "t"
) -> dict:
    msgs, events = [], []
    for t, (peers, lead) in enumerate(zip(peer_rounds, leader_answers, strict=True)):
        for i, a in enumerate(peers):
            msgs.append(_msg(len(msgs), f"peer-{i}@{t}", "peer", t, a))
        msgs.append(_msg(len(msgs), f"leader@{t}", "leader", t, lead, f"<answer>{lead}</answer>"))
        events.append(
            {"type": "round_summary", "round": t, "peer_answers": peers, "peer_correct": [a == gold for a in peers],
             "leader_answer": lead, "leader_tagged": True}
        )  # fmt: skip
    return _episode("leader", msgs, leader_answers[-1], gold, events, tid=tid)


def debate_episode(round_answers: list[list[str]], gold: str = "5", tid: str = "t") -> dict:
    from workbench.protocols.vote import majority

    msgs = []
    for r, answers in enumerate(round_answers, 1):
        for i, a in enumerate(answers):
            msgs.append(_msg(len(msgs), f"agent-{i}@{r}", "debater", r, a))
    win = majority(round_answers[-1])[0]
    msgs.append(Message(len(msgs), len(round_answers), "vote", ["answer"], "aggregator", f"{win}", 0, 0, win))
    return _episode("debate", msgs, win, gold, tid=tid)


# ---- diversity ----
def test_answer_entropy_and_distinct_answers():
    answers = ["1", "1", "2", None]  # parsed: 1, 1, 2 -> p = (2/3, 1/3)
    assert diversity.distinct_answers(answers) == 2
    h = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert diversity.answer_entropy(answers) == pytest.approx(h) == pytest.approx(0.918296, abs=1e-6)
    assert diversity.answer_entropy(["3", "3"]) == 0.0
    assert diversity.answer_entropy([None, None]) == 0.0


def test_distinct_n():
    texts = ["a b a", "A b"]  # unigrams a b a a b: 2 unique of 5; bigrams (a b)(b a)(a b): 2 of 3
    assert diversity.distinct_n(texts, 1) == pytest.approx(2 / 5)
    assert diversity.distinct_n(texts, 2) == pytest.approx(2 / 3)
    assert diversity.distinct_n(["one"], 2) is None


def test_mean_pairwise_distance():
    # cosines: (1,0)·(0,1) = 0, (1,0)·(1,1)/√2 = (0,1)·(1,1)/√2 = 1/√2 -> distances 1, 1 − 1/√2 (twice)
    d = diversity.mean_pairwise_distance([[1, 0], [0, 1], [1, 1]])
    assert d == pytest.approx((1 + 2 * (1 - 1 / math.sqrt(2))) / 3)
    assert diversity.mean_pairwise_distance([[1, 2]]) is None


def test_premature_consensus_in_debate():
    collapse_wrong = debate_episode([["1", "2", "5"], ["2", "2", "2"]], tid="a")  # 3 -> 1 answers, wrong
    collapse_right = debate_episode([["1", "5", "5"], ["5", "5", "5"]], tid="b")  # 2 -> 1, right
    steady = debate_episode([["1", "2", "3"], ["1", "2", "3"]], tid="c")  # 3 -> 3
    eps = [collapse_wrong, collapse_right, steady]
    out = diversity.run_diversity([rounds(e) for e in eps], [e["correct"] for e in eps])
    c = out["consensus"]
    assert c["episodes"] == 3
    assert c["collapse_rate"] == pytest.approx(2 / 3)
    assert c["wrong_consensus_rate"] == pytest.approx(1 / 3)
    # the first episode had 5 in round 1, not in round 2
    assert c["lost_coverage_rate"] == pytest.approx(1 / 3)
    assert c["distinct_first_to_last"] == {"2->1": 1, "3->1": 1, "3->3": 1}
    # round 1 distinct answers: 3, 2, 3 -> mean 8/3; round 2: 1, 1, 3 -> 5/3
    assert out["per_round"][0]["distinct_answers"]["mean"] == pytest.approx(8 / 3)
    assert out["per_round"][1]["distinct_answers"]["mean"] == pytest.approx(5 / 3)


# ---- coverage and identification ----
def test_coverage_identification_by_hand():
    # a: covered, right; covered, right   b: covered, wrong; uncovered
    # c: uncovered; covered, wrong        d: uncovered, failed picks (twice)
    eps = [
        maestro_episode([(["5", "1", "2"], 0), (["5", "5", "1"], 1)], tid="a"),
        maestro_episode([(["5", "1", "2"], 1), (["1", "1", "2"], 0)], tid="b"),
        maestro_episode([(["3", "1", "2"], 0), (["5", "1", "2"], 2)], tid="c"),
        maestro_episode([(["3", "1", "2"], None), (["3", "1", "2"], None)], tid="d"),
    ]
    out = coverage_identification([rounds(e) for e in eps], [e["correct"] for e in eps])
    r1, r2 = out["per_round"]
    assert r1["p"]["mean"] == pytest.approx(2 / 4) and r1["q"]["mean"] == pytest.approx(1 / 2)
    assert r2["p"]["mean"] == pytest.approx(2 / 4) and r2["q"]["mean"] == pytest.approx(1 / 2)
    # p̄ = 0.5, q̄ = 0.5, R = 2: bound = 1 − (1 − 0.25)² = 0.4375
    assert out["bound"] == pytest.approx(0.4375)
    assert out["success_any"]["mean"] == pytest.approx(1 / 4)  # only episode a ever picked right
    assert out["accuracy"]["mean"] == pytest.approx(1 / 4)


def test_coverage_by_train_step():
    a = maestro_episode([(["5", "1"], 0)], tid="a")
    b = maestro_episode([(["1", "2"], 0)], tid="b")
    c = maestro_episode([(["5", "2"], 1)], tid="c")
    a["meta"]["train_step"], b["meta"]["train_step"], c["meta"]["train_step"] = 0, 0, 1
    rows = by_train_step([a, b, c], [rounds(e) for e in (a, b, c)])
    assert [(r["step"], r["n"], r["accuracy"], r["p"], r["q"]) for r in rows] == [
        (0, 2, 0.5, 0.5, 1.0),
        (1, 1, 0.0, 1.0, 0.0),
    ]


# ---- credit ----
def test_shapley_known_answer_exact():
    # player 0 is needed, with at least one of the two others: φ = (2/3, 1/6, 1/6); LOO = (1, 0, 0)
    out = credit.shapley(3, lambda s: float(0 in s and len(s) >= 2))
    assert out["shapley"] == pytest.approx([2 / 3, 1 / 6, 1 / 6])
    assert out["loo"] == pytest.approx([1.0, 0.0, 0.0])
    assert out["exact"] and out["evaluations"] == 8
    assert sum(out["shapley"]) == pytest.approx(1.0)  # efficiency: v(N) − v(∅)


def test_shapley_sampled_beyond_max_exact():
    # an additive game: every permutation gives each player its own weight exactly
    weights = [0.1, 0.2, 0.0, 0.3, 0.15, 0.05, 0.2]
    out = credit.shapley(7, lambda s: sum(weights[i] for i in s), max_exact=5, permutations=10)
    assert not out["exact"]
    assert out["shapley"] == pytest.approx(weights)
    assert 2 + 7 <= out["evaluations"] < 2**7  # ∅, N, the 7 leave-one-outs and the sampled prefixes only


def test_majority_credit_on_a_vote_episode():
    # answers 5, 5, 3 (gold 5). Pairs {0,2}, {1,2} tie 1-1 and the first to reach the top count (5) wins,
    # so sample 2 never changes the outcome: φ = (1/2, 1/2, 0); LOO = (0, 0, 0)
    ep = vote_episode(["5", "5", "3"])
    out = credit.majority_credit([ep], [rounds(ep)], Judge())
    game = out["games"][0]
    assert game["agents"] == ["sample-0", "sample-1", "sample-2"]
    assert game["shapley"] == pytest.approx([0.5, 0.5, 0.0])
    assert game["loo"] == pytest.approx([0.0, 0.0, 0.0])
    assert out["max_share"] == pytest.approx(0.5)


def test_accuracy_by_agents_right_and_overrides():
    eps = [
        leader_episode([["5", "1", "2"]], ["5"], tid="a"),  # 1 right; no majority
        leader_episode([["1", "1", "5"]], ["5"], tid="b"),  # 1 right; overrides a wrong majority, rightly
        leader_episode([["5", "5", "2"]], ["2"], tid="c"),  # 2 right; overrides a right majority, wrongly
        leader_episode([["5", "5", "5"]], ["5"], tid="d"),  # 3 right; follows
    ]
    rs = [rounds(e) for e in eps]
    buckets = credit.accuracy_by_agents_right(rs, [e["correct"] for e in eps])
    assert [(b["right"], b["n"], b["mean"]) for b in buckets] == [(1, 2, 1.0), (2, 1, 0.0), (3, 1, 1.0)]
    ov = credit.overrides(rs)
    assert ov == {
        "follows": 1, "overrides_right": 1, "overrides_wrong": 1, "overrides_neither": 0, "no_majority": 1,
        "follows_accuracy": 1.0,
    }  # fmt: skip


# ---- conductor ----
def test_conductor_analysis():
    def cond(plan_ids, step_answers, tid):
        msgs = [Message(0, 0, "conductor", [], "conductor", "plan", 5, 5, None)]
        for k, a in enumerate(step_answers):
            msgs.append(_msg(len(msgs), f"step-{k}", "worker", 0, a))
        plans = [
            {"model_id": plan_ids, "subtasks": ["s"] * len(plan_ids), "access_list": [[]] * len(plan_ids)}
        ]
        return _episode("conductor", msgs, step_answers[-1], meta={"plans": plans}, tid=tid)

    eps = [
        cond([0, 1], ["1", "5"], "a"),  # step 1 fixes it
        cond([1], ["5"], "b"),
        cond([0, 0], ["5", "5"], "c"),
        _episode("conductor", [], None, meta={"plans": [{"error": "no list"}]}, tid="d"),
    ]
    out = conductor_analysis(eps)
    assert out["format_failures"] == 1 and out["format_failure_rate"] == 0.25
    assert out["length"] == {"1": 1, "2": 2}
    assert out["workers_by_position"] == [
        {"position": 0, "counts": [2, 1]},
        {"position": 1, "counts": [1, 1]},
    ]
    s0, s1 = out["per_step"]
    assert s0["accuracy"]["mean"] == pytest.approx(2 / 3) and s1["accuracy"]["mean"] == 1.0
    assert s1["gain"]["mean"] == pytest.approx(0.5)  # +1 (episode a) and 0 (episode c)


# ---- statistics ----
def test_bootstrap_and_paired_statistics():
    lo, hi = bootstrap_ci([0, 1] * 50)
    assert lo < 0.5 < hi and bootstrap_ci([0, 1] * 50) == (lo, hi)  # deterministic
    assert bootstrap_ci([1.0]) == (1.0, 1.0)
    assert mean_ci([]) == {"mean": None, "ci95": [None, None], "n": 0}
    pb = paired_bootstrap({"a": 1, "b": 1, "c": 1}, {"a": 0, "b": 0, "c": 0, "d": 1})
    assert pb["n_paired"] == 3 and pb["mean_diff"] == 1.0 and pb["ci95"] == [1.0, 1.0] and pb["p"] == 0.0
    same = paired_bootstrap({"a": 1, "b": 0}, {"a": 1, "b": 0})
    assert same["p"] == 1.0 and same["mean_diff"] == 0.0
    agg = seed_aggregate([0.5, 0.7])
    assert agg["mean"] == pytest.approx(0.6) and agg["sd"] == pytest.approx(math.sqrt(0.02))
    assert seed_aggregate([0.5])["sd"] is None


def test_rationale_auc():
    assert auc([0.9, 0.1, 0.5], [True, False, False]) == 1.0
    assert auc([0.1, 0.9], [True, False]) == 0.0
    assert auc([0.5, 0.5], [True, False]) == 0.5
    assert auc([0.5], [True]) is None


# ---- end to end on runs written by the real protocols (scripted backend) ----
def _arith_reply(req, j: int) -> str:
    import re

    text = req.messages[-1]["content"]
    if "<choice>" in text:
        return "<choice>1</choice><why>it adds up</why>"
    hit = re.search(r"What is (-?\d+)\s*([+\-])\s*(-?\d+)", text)
    value = (int(hit.group(1)) + (1 if hit.group(2) == "+" else -1) * int(hit.group(3))) if hit else 0
    return f"Compute it. Answer: {value + (j % 2) + (len(text) % 2)}"


def _run(tmp: Path, protocol: str, limit: int = 4, **options) -> Path:
    from workbench.evaluate import EvalConfig, run_eval
    from workbench.models.scripted import ScriptedBackend

    out = tmp / protocol
    cfg = EvalConfig.build(
        {"protocol": options}, task="arithmetic", protocol=protocol, limit=limit, out=str(out)
    )
    run_eval(cfg, backend=ScriptedBackend(_arith_reply), progress=False)
    return out


def test_analyze_runs_end_to_end(tmp_path: Path):
    runs = [_run(tmp_path, "single"), _run(tmp_path, "vote", n=3), _run(tmp_path, "maestro")]
    result = analyze(runs, out=tmp_path / "cmp", options=AnalyzeOptions(embed=False, png=False))
    for r in runs:
        a = json.loads((r / "analysis.json").read_text())
        assert a["n"] == 4 and a["schema"] == "workbench.analysis/1"
        assert (r / "analysis.html").is_file()
    vote = result["runs"][1]
    assert vote["credit"]["episodes"] == 4 and len(vote["credit"]["per_agent"]) == 3
    maestro = result["runs"][2]
    assert len(maestro["coverage"]["per_round"]) == 2 and len(maestro["diversity"]["per_round"]) == 2
    comp = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert len(comp["paired"]) == 3 and all(p["n_paired"] == 4 for p in comp["paired"])
    assert "plotly" in (tmp_path / "cmp" / "comparison.html").read_text()[:20000].lower()


def test_judge_reloads_the_runs_tasks(tmp_path: Path):
    run = _run(tmp_path, "vote", limit=2, n=3)
    judge = Judge.for_run(run)
    assert len(judge.tasks) == 2
    ep = json.loads((run / "episodes.jsonl").read_text().splitlines()[0])
    assert judge.correct(ep, ep["gold"]) is True
    assert judge.correct(ep, "12345") is False and judge.correct(ep, None) is False


def test_analyze_cli_and_bad_input(tmp_path: Path, capsys):
    from workbench.cli import main

    run = _run(tmp_path, "debate", limit=3)
    assert main(["analyze", str(run), "--no-embed", "--no-png"]) == 0
    assert "credit debate" in capsys.readouterr().out
    assert main(["analyze", str(tmp_path / "nothing"), "--no-embed"]) == 2  # a user error, with a message
    assert "not a run folder" in capsys.readouterr().err


def test_analyze_run_skips_a_torn_line(tmp_path: Path):
    run = _run(tmp_path, "vote", limit=3, n=3)
    with open(run / "episodes.jsonl", "a") as f:
        f.write('{"schema": "workbench.episode/1", "episode_')
    a = analyze_run(run, AnalyzeOptions(embed=False, png=False))
    assert a["n"] == 3 and any("torn" in p for p in a["problems"])
