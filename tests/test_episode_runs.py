import json

import pytest

from workbench.analysis.stats import wilson_ci
from workbench.episode import SCHEMA, Episode, EpisodeFormatError, Message, validate
from workbench.runs import RunDirError, RunWriter, read_episodes, summarize


def make_episode(i=0, correct=True, ff=False, tokens=10):
    return Episode(
        episode_id=f"t{i}#0",
        task_id=f"t{i}",
        protocol="single",
        question="What is 1+1?",
        gold="2",
        final_answer=None if ff else ("2" if correct else "3"),
        correct=correct,
        reward=float(correct),
        format_failure=ff,
        messages=[Message(0, 0, "agent", ["answer"], "agent", "Answer: 2", tokens)],
        events=[{"ts": 1.0, "type": "episode_started"}],
        graph={
            "nodes": [{"id": "task"}, {"id": "agent"}, {"id": "answer"}],
            "edges": [{"source": "task", "target": "agent", "round": 0, "message_id": None}],
        },
        index=i,
    )


def test_episode_round_trips_through_json():
    ep = make_episode()
    d = json.loads(json.dumps(ep.to_dict()))
    assert d["schema"] == SCHEMA
    assert Episode.from_dict(d) == ep


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("gold"), "missing field"),
        (lambda d: d.update(schema="workbench.episode/99"), "cannot read it"),
        (lambda d: d.update(correct="yes"), "must be booleans"),
        (lambda d: d["messages"][0].pop("sender"), "a message lacks"),
        (lambda d: d["events"].append({"type": "x"}), "'ts' and 'type'"),
        (lambda d: d["usage"].pop("wall_s"), "'usage' needs"),
    ],
)
def test_validate_names_the_broken_field(mutate, message):
    d = make_episode().to_dict()
    mutate(d)
    with pytest.raises(EpisodeFormatError, match=message):
        validate(d)


def test_wilson_ci_against_hand_computed_values():
    # k=8, n=10: p=0.8, z=1.96 -> centre (0.8 + 0.1921) / 1.3841 = 0.7167, half 0.2266 -> [0.4902, 0.9433]
    lo, hi = wilson_ci(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_ci(0, 10)[0] == 0.0 and wilson_ci(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson_ci(10, 10)[1] == pytest.approx(1.0)
    assert wilson_ci(0, 0) == (0.0, 1.0)


def test_error_bars_run_from_each_value_to_its_interval_ends():
    from workbench.stats import error_bars

    bars = error_bars([0.8, 0.5], [wilson_ci(8, 10), (0.25, 0.5)])
    assert bars["type"] == "data" and bars["symmetric"] is False
    assert bars["array"] == pytest.approx([0.9433 - 0.8, 0.0], abs=1e-4)
    assert bars["arrayminus"] == pytest.approx([0.8 - 0.4902, 0.25], abs=1e-4)
    with pytest.raises(ValueError):
        error_bars([0.8], [])  # one interval per value


def test_summary_fields():
    eps = [make_episode(0), make_episode(1, correct=False), make_episode(2, correct=False, ff=True)]
    s = summarize([e.to_dict() for e in eps], wall_s=3.0)
    assert (s["n"], s["correct"], s["format_failures"]) == (3, 1, 1)
    assert s["accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["ci95"][0] < s["accuracy"] < s["ci95"][1]
    assert s["usage"] == {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "wall_s": 3.0}
    assert s["wall_s_per_query"] == 1.0


def test_run_folder_survives_a_torn_last_line(tmp_path):
    w = RunWriter(tmp_path / "run", {"task": {"name": "x"}})
    for i in range(3):
        w.append(make_episode(i))
    w.close()
    path = tmp_path / "run" / "episodes.jsonl"
    with open(path, "a") as f:  # a crash in the middle of writing the 4th episode
        f.write(json.dumps(make_episode(3).to_dict())[:57])
    r = read_episodes(tmp_path / "run")
    assert [e["task_id"] for e in r.episodes] == ["t0", "t1", "t2"]
    assert len(r.problems) == 1 and "torn last line" in r.problems[0]
    assert (tmp_path / "run" / "config.yaml").read_text().startswith("task:")


def test_invalid_line_in_the_middle_is_reported_not_fatal(tmp_path):
    path = tmp_path / "episodes.jsonl"
    good = json.dumps(make_episode().to_dict())
    path.write_text(good + "\n{broken\n" + json.dumps({"schema": SCHEMA}) + "\n" + good + "\n")
    r = read_episodes(path)
    assert len(r.episodes) == 2
    assert "not valid JSON" in r.problems[0] and "missing field" in r.problems[1]


def test_run_writer_refuses_to_overwrite_a_run(tmp_path):
    RunWriter(tmp_path / "run", {}).close()
    with pytest.raises(RunDirError, match="already holds a run"):
        RunWriter(tmp_path / "run", {})


def test_mcnemar_exact_against_hand_computed_values():
    from workbench.analysis.stats import mcnemar_exact

    # b=1, c=9: 2 * (C(10,0) + C(10,1)) / 2^10 = 2 * 11 / 1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)


def test_paired_outcomes_pairs_by_task_id():
    from workbench.analysis.stats import paired_outcomes

    a = [make_episode(i, correct=c).to_dict() for i, c in enumerate([True, True, False, False])]
    b = [make_episode(i, correct=c).to_dict() for i, c in enumerate([True, False, True, True, True])]
    p = paired_outcomes(a, b)
    assert (p["n_paired"], p["both_right"], p["only_a_right"], p["only_b_right"], p["neither"]) == (
        4,
        1,
        1,
        2,
        0,
    )
    assert p["mcnemar_p"] == 1.0
