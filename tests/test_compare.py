"""`workbench compare`: budget planning, the same items for every protocol, the comparison table."""

import json
import re

import pytest

from workbench.compare import CompareConfig, plan_generations, run_compare
from workbench.config import ConfigError
from workbench.models.scripted import ScriptedBackend


def solver(req, j):
    text = "\n".join(m["content"] for m in req.messages)
    if "<choice>NUMBER</choice>" in req.messages[-1]["content"]:
        return "<choice>1</choice><why>fine</why>"
    if req.messages[0]["content"].startswith("You are the Conductor"):
        return 'model_id = [0, 1]\nsubtasks = ["Solve.", "Check."]\naccess_list = [[], ["all"]]'
    value = eval(re.findall(r"What is (.+?)\?", text)[-1])
    return f"<answer>{value}</answer>"


ALL = "single,vote,reflect,debate,moa,maestro,maestro_gen,leader,conductor"


def test_plan_matches_every_protocol_to_the_reference():
    cmp = CompareConfig.build(protocols=ALL, limit=4)
    plans = {p.protocol: p for p in plan_generations(cmp)}
    assert plans["maestro"].how == "reference" and plans["maestro"].generations == 8
    assert plans["vote"].options["n"] == 8 and plans["vote"].generations == 8
    assert plans["debate"].generations == 8 and plans["leader"].generations == 8
    assert plans["moa"].generations == 8 and plans["maestro_gen"].generations == 8
    assert plans["reflect"].generations in (7, 9) and plans["reflect"].matched
    assert not plans["single"].matched and "unmatched floor" in plans["single"].how
    assert plans["conductor"].max_calls == 8 and plans["conductor"].generations <= 8


def test_plan_flags_what_cannot_be_matched():
    cmp = CompareConfig.build(
        {"options": {"leader": {"peers": 5}}}, protocols="vote,leader", reference="vote"
    )
    plans = {p.protocol: p for p in plan_generations(cmp)}
    assert plans["leader"].generations == 6 and plans["leader"].matched is False
    assert "UNMATCHED" in plans["leader"].how


def test_compare_config_errors_name_the_input():
    with pytest.raises(ConfigError, match="unknown protocol"):
        CompareConfig.build(protocols="single,nope")
    with pytest.raises(ConfigError, match="reference 'debate'"):
        CompareConfig.build(protocols="single,vote", reference="debate")
    with pytest.raises(ConfigError, match="protocol.nope"):
        CompareConfig.build({"options": {"vote": {"nope": 1}}}, protocols="single,vote")
    with pytest.raises(ConfigError, match="match must be"):
        CompareConfig.build(protocols="single", match="vibes")


def test_compare_runs_every_protocol_on_the_same_items_and_writes_the_table(tmp_path):
    cmp = CompareConfig.build(protocols=ALL, limit=3, seeds="0,1", out=str(tmp_path / "cmp"))
    result = run_compare(cmp, backend=ScriptedBackend(solver), progress=False)
    report = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [r["protocol"] for r in report["rows"]] == ALL.split(",")
    for row in report["rows"]:
        assert row["n_episodes"] == 6 and len(row["run_dirs"]) == 2 and row["errors"] == 0
        ids = {json.loads(line)["task_id"] for d in row["run_dirs"] for line in open(f"{d}/episodes.jsonl")}
        assert len(ids) == 3
    rows = {r["protocol"]: r for r in report["rows"]}
    assert rows["vote"]["generations_per_query"] == 8 and rows["conductor"]["generations_per_query"] == 3
    assert rows["maestro"]["vs_reference"] is None and rows["vote"]["vs_reference"]["n_paired"] == 3
    assert (
        "Budgets matched by generations to maestro" in result.table and "single: fixed at 1" in result.table
    )
    assert (tmp_path / "cmp" / "comparison.txt").read_text().strip() == result.table.strip()
    with pytest.raises(ConfigError, match="already holds files"):
        run_compare(cmp, backend=ScriptedBackend(solver), progress=False)


def test_tokens_matching_pilots_on_dev_and_rescales(tmp_path):
    cmp = CompareConfig.build(
        {"pilot_items": 2},
        protocols="vote,debate",
        reference="vote",
        limit=2,
        match="tokens",
        out=str(tmp_path / "c"),
    )
    result = run_compare(cmp, backend=ScriptedBackend(solver), progress=False)
    report = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert report["pilot"]["split"] == "dev" and set(report["pilot"]["measured"]) == {"vote", "debate"}
    pilot_cfg = (tmp_path / "c" / "pilot" / "debate" / "config.yaml").read_text()
    assert "split: dev" in pilot_cfg
    # debate prompts carry the other agents' solutions: more tokens per generation, so fewer generations
    rows = {r["protocol"]: r for r in report["rows"]}
    assert rows["debate"]["generations_per_query"] < rows["vote"]["generations_per_query"]
    assert "pilot:" in result.table


def test_budget_figure_has_one_point_per_protocol_with_its_ci(tmp_path):
    from workbench.compare import budget_figure

    cmp = CompareConfig.build(protocols="single,vote", reference="vote", limit=2, out=str(tmp_path / "c"))
    rows = run_compare(cmp, backend=ScriptedBackend(solver), progress=False).rows
    fig = budget_figure(rows)
    (trace,) = fig.data
    assert list(trace.text) == ["single *", "vote"] and len(trace.x) == 2
    assert trace.x[1] == rows[1]["prompt_tokens_per_query"] + rows[1]["completion_tokens_per_query"]
    assert trace.error_y.arrayminus[0] == pytest.approx(rows[0]["accuracy"] - rows[0]["ci95"][0])
    assert list(budget_figure(rows, x="generations").data[0].x) == [1, 5]


def test_resume_reuses_finished_runs_and_reruns_the_unfinished(tmp_path, capsys):
    out = tmp_path / "cmp"
    cmp = CompareConfig.build(protocols="single,vote,maestro", limit=3, out=str(out))
    first = run_compare(cmp, backend=ScriptedBackend(solver), progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        run_compare(cmp, backend=ScriptedBackend(solver), progress=False)
    (out / "vote-seed0" / "summary.json").unlink()  # as if killed before vote finished
    calls = []
    backend = ScriptedBackend(lambda req, j: calls.append(req) or solver(req, j))
    again = run_compare(cmp, backend=backend, progress=False, resume=True)
    assert len(calls) == 3 * 8  # only vote ran again: 3 items x 8 generations
    assert [r["accuracy"] for r in again.rows] == [r["accuracy"] for r in first.rows]
    assert any(p.name.startswith("vote-seed0.unfinished-") for p in out.iterdir())  # kept, not deleted
    assert "finished before: reused" in capsys.readouterr().err
    # a different configuration in the same folder is never mistaken for a finished run
    other = CompareConfig.build(
        {"options": {"maestro": {"rounds": 1}}}, protocols="single,maestro", limit=3, out=str(out)
    )
    calls.clear()
    run_compare(other, backend=backend, progress=False, resume=True)
    err = capsys.readouterr().err
    assert calls and "single (seed 0): fixed at 1 generation(s): the unmatched floor (finished before" in err
    assert "maestro-seed0 is a different configuration" in err
    assert len([p for p in out.iterdir() if p.name.startswith("maestro-seed0.unfinished-")]) == 1
