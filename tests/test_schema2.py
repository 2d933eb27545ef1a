"""Episode schema 2: recorded verdicts and pools; schema 1 still read; seeds pooled by config.

* every message that carries an answer records the task verifier's own verdict on it, and each
  round's pool is recorded by the protocol (``ctx.record_pool``);
* ``analysis.pools.rounds`` reads the recorded pools, and gives what the schema-1 decoding gives
  on the same episode (node names, the protocol's events and the run's verifier);
* schema-1 runs made by the workbench before the change (tests/fixtures/schema1, see make.py)
  open in the viewer and in ``workbench analyze``; a schema the workbench does not know is one
  line naming it and the fix;
* the cross-run comparison pools runs as seeds only when their configs differ in the seed alone.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import shutil
from pathlib import Path

import pytest

from workbench.analysis.analyze import AnalyzeOptions, analyze, analyze_run, compare_analyses
from workbench.analysis.pools import Judge, legacy_rounds, message_verdicts, rounds
from workbench.analysis.seeds import differences, seed_groups
from workbench.episode import SCHEMA, SCHEMA_1, EpisodeFormatError, validate
from workbench.evaluate import EvalConfig, ProtocolConfig, run_episodes, run_eval
from workbench.models.scripted import ScriptedBackend
from workbench.runs import read_episodes
from workbench.tasks import Task, TaskConfig, load_tasks
from workbench.viewer import Viewer
from workbench.viewer.figures import node_verdicts, topology_figure
from workbench.viewer.html import transcript_html

FIXTURES = Path(__file__).parent / "fixtures" / "schema1"
PROTOCOLS = {
    "single": {},
    "vote": {"n": 3},
    "debate": {"agents": 3, "rounds": 2},
    "moa": {"layers": [2, 2]},
    "maestro": {"rounds": 2},
    "maestro_gen": {"rounds": 2},
    "leader": {"rounds": 2, "peers": 3},
}


def scripted():
    """Right, right, off-by-one answers in turn; central picks and leader answers vary."""
    n = itertools.count()

    def reply(req, j):
        k = next(n)
        text = req.messages[-1]["content"]
        if "<choice>" in text:
            m = len(re.findall(r"^\[Candidate \d+\]$", text, re.MULTILINE))
            return f"<choice>{1 + k % max(m, 1)}</choice><why>ref {k}</why>"
        q = re.search(r"What is (\d+) ([+-]) (\d+)", text)
        gold = (int(q[1]) + int(q[3]) if q[2] == "+" else int(q[1]) - int(q[3])) if q else 5
        if "<answer>" in text:
            return f"<think>ref {k}</think><answer>{gold + [0, 1, 0][k % 3]}</answer>"
        return f"I work it out [ref {k}].\nAnswer: {gold + [0, 0, 1][k % 3]}"

    return ScriptedBackend(reply)


def as_schema_1(ep: dict) -> dict:
    """The same episode as schema 1 recorded it: no pools, no message verdicts."""
    old = copy.deepcopy(ep)
    old["schema"] = SCHEMA_1
    old.pop("pools")
    for m in old["messages"]:
        m.pop("correct")
    return old


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_recorded_verdicts_are_the_task_verifiers_and_pools_read_as_the_old_decoding(tmp_path, protocol):
    cfg = EvalConfig.build(
        {"protocol": PROTOCOLS[protocol]},
        task="arithmetic",
        protocol=protocol,
        limit=4,
        out=str(tmp_path / "r"),
    )
    run = run_eval(cfg, backend=scripted(), progress=False).run_dir
    tasks = {t.id: t for t in load_tasks(TaskConfig(name="arithmetic", limit=4)).tasks}
    judge = Judge.for_run(run)
    for ep in read_episodes(run).episodes:
        validate(ep)
        assert ep["schema"] == SCHEMA and ep["pools"]
        task = tasks[ep["task_id"]]
        for m in ep["messages"]:
            if m["extracted"] is None:
                assert m["correct"] is None
            else:  # the task's verifier, freshly loaded, agrees with every recorded verdict
                assert m["correct"] is task.is_correct(m["extracted"]), (m["sender"], m["extracted"])
        new, old = rounds(ep, judge), legacy_rounds(as_schema_1(ep), judge)
        assert [r.index for r in new] == [r.index for r in old]
        for a, b in zip(new, old, strict=True):
            assert [(c.agent, c.node, c.answer, bool(c.correct)) for c in a.candidates] == [
                (c.agent, c.node, c.answer, bool(c.correct)) for c in b.candidates
            ]
            assert (a.synth_node, a.synth_correct) == (b.synth_node, b.synth_correct)
            if protocol != "maestro_gen":  # schema 1 read Central-Gen's first sample, not its vote
                assert a.synth_answer == b.synth_answer


def test_a_verdict_the_viewer_used_to_guess_is_the_verifiers_now():
    """A math answer written another way: the viewer's old string/number matcher said wrong; the
    recorded verdict is math-verify's (the task's verifier)."""
    task = Task("m", "What is one half?", "\\frac{1}{2}", "math")
    backend = ScriptedBackend(lambda req, j: "So it is $\\boxed{0.5}$.")
    episodes, errors, _ = run_episodes([task], ProtocolConfig("vote", {"n": 2}), backend)
    assert not errors
    ep = episodes[0].to_dict()
    assert [m["correct"] for m in ep["messages"]] == [True, True, True] and ep["correct"]
    assert node_verdicts(ep)["sample-0"] is True


# ---- schema 1: old runs still open ----
@pytest.mark.parametrize("protocol", ["vote", "debate", "moa", "maestro", "leader"])
def test_schema_1_runs_open_in_the_viewer_and_in_analyze(tmp_path, protocol):
    run = tmp_path / "runs" / protocol
    shutil.copytree(FIXTURES / protocol, run)
    eps = read_episodes(run).episodes
    assert eps and all(e["schema"] == SCHEMA_1 for e in eps) and not read_episodes(run).problems
    viewer = Viewer(tmp_path / "runs")
    snap = viewer.snapshot(protocol)
    assert snap.n == 3 and not [p for p in snap.problems if "skipped" in p]
    for pos in range(3):
        ep = viewer.episode(protocol, pos)
        verdicts = node_verdicts(ep)
        # schema 1 has verdicts only where its protocol recorded them (maestro, leader candidates)
        judged = {s for s, v in verdicts.items() if v is not None and s != "answer"}
        if protocol in ("maestro", "leader"):
            assert judged and all(s.split("-")[0] in ("explorer", "peer") for s in judged)
        else:
            assert not judged
        assert transcript_html(ep) and topology_figure(ep)
    a = analyze_run(run, AnalyzeOptions(embed=False, png=False))
    assert a["n"] == 3 and a["coverage"] is not None
    new_style = rounds(eps[0], Judge.for_run(run))  # decoded from node names, as before
    assert new_style and all(r.candidates for r in new_style)


def test_schema_1_message_verdicts_come_only_from_the_protocols_own_record():
    ep = read_episodes(FIXTURES / "maestro").episodes[0]
    verdicts = message_verdicts(ep)
    slate = next(e for e in ep["events"] if e["type"] == "slate" and e["round"] == 1)
    firsts = [m["id"] for m in ep["messages"] if m["role"] == "explorer" and m["round"] == 1]
    assert [verdicts[i] for i in firsts] == slate["correct"]
    assert not any(m["id"] in verdicts for m in ep["messages"] if m["role"] == "central")


def test_an_unknown_schema_is_one_line_naming_it_and_the_fix():
    ep = read_episodes(FIXTURES / "vote").episodes[0]
    with pytest.raises(
        EpisodeFormatError, match=r"'workbench.episode/7': this workbench cannot read it .*update"
    ):
        validate({**ep, "schema": "workbench.episode/7"})
    bad = json.loads(json.dumps(ep))
    bad["schema"] = SCHEMA  # schema 2 without its pools
    with pytest.raises(EpisodeFormatError, match="'pools' must be a list"):
        validate(bad)
    bad["pools"] = [{"round": 0, "candidates": [99], "agents": ["x"], "rule": None}]
    with pytest.raises(EpisodeFormatError, match="ids of the episode's messages"):
        validate(bad)


# ---- seeds pooled only across configs that differ in the seed ----
def test_seed_groups_pool_only_runs_that_differ_in_the_seed_alone():
    base = {"task": {"name": "arithmetic", "limit": 200}, "protocol": {"name": "leader", "options": {"rounds": 1}},
            "team": {}, "models": {}, "seed": 0, "out": "/tmp/a"}  # fmt: skip
    seed1 = {**base, "seed": 1, "out": "/tmp/b"}
    trained = {
        **base,
        "models": {"trained": {"name": "smollm2+adapter"}},
        "team": {"trainee": {"model": "trained"}},
    }
    train_a = {"recipe": "leader", "train": {"seed": 0, "lr": 1e-4}, "out": "x"}
    train_b = {"recipe": "leader", "train": {"seed": 3, "lr": 1e-4}, "out": "y"}
    train_c = {"recipe": "leader", "train": {"seed": 0, "lr": 2e-4}, "out": "z"}
    assert seed_groups([base, seed1, trained, train_a, train_b, train_c]) == [[0, 1], [2], [3, 4], [5]]
    assert differences(base, trained) == ["models.trained", "team.trainee"]
    assert differences(base, seed1) == []


def test_the_comparison_reports_an_untrained_and_a_trained_leader_as_two_experiments(tmp_path):
    """The case that was wrong: two leader runs on the same items, one with a trained adapter in
    the leader's seat, were pooled as two seeds of one protocol (mean ± sd over them)."""
    runs = []
    for name, extra, seed in (("base-s0", {}, 0), ("base-s1", {}, 1), ("trained-s0", {"trained": True}, 0)):
        opts = {"protocol": {"rounds": 1, "peers": 2}}
        if extra:
            opts |= {
                "models": {"trained": {"name": "scripted-trained"}},
                "team": {"trainee": {"model": "trained"}},
            }
            opts["protocol"]["leader_member"] = "trainee"
        cfg = EvalConfig.build(
            opts, task="arithmetic", protocol="leader", limit=3, seed=seed, out=str(tmp_path / name)
        )
        backend = scripted()
        run_eval(cfg, backend={"default": backend, "trained": backend} if extra else backend, progress=False)
        runs.append(tmp_path / name)
    result = analyze(runs, out=tmp_path / "cmp", options=AnalyzeOptions(embed=False, png=False))
    seeds = result["comparison"]["seeds"]
    assert len(seeds) == 2
    pooled = next(s for s in seeds if s["seeds"] == 2)
    alone = next(s for s in seeds if s["seeds"] == 1)
    assert pooled["runs"] == ["leader·s0", "leader·s1"] and alone["runs"] == ["leader·s0#2"]
    assert alone["sd"] is None and "team.trainee" in alone["differs_from_first"]
    # the pure function on the analyses gives the same
    analyses = result["runs"]
    episodes = {a["run"]: read_episodes(Path(a["run"])).episodes for a in analyses}
    assert compare_analyses(analyses, episodes)["seeds"] == seeds
