"""workbench.widgets headless: the widgets' state and callbacks, on runs written by the real protocols
and RunWriter (scripted model replies, as in test_viewer.py); the monitor on a real tiny training run.
A browser opens them in JupyterLab in test_notebooks_lab.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_viewer import _solve, make_run  # tests/ is on sys.path under pytest

pytest.importorskip("ipywidgets")

from workbench.widgets import EpisodeExplorer, RunPicker, TeamForm, find_runs, run_kind  # noqa: E402
from workbench.widgets.plots import PLOTLY_MIME  # noqa: E402


def mixed_reply(req, j: int) -> str:
    """Right, wrong or unparseable by the item's value: every outcome appears in a few items."""
    value = _solve(req.messages)
    return ["I am not sure.", f"Answer: {value}", f"Answer: {value + 1}"][value % 3]


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "runs"
    make_run(root, "mixed", protocol="single", limit=12, reply=mixed_reply)
    make_run(root, "vote", limit=3)
    return root


def _outcomes(explorer: EpisodeExplorer) -> set[str]:
    rows = explorer.viewer.episode_rows(explorer.run)
    return {r[5] for r in rows if r[0] in explorer.positions}


def test_explorer_filters_and_steps_with_graph_and_transcript(root):
    ex = EpisodeExplorer(root, run="mixed")
    assert ex.run == "mixed" and len(ex.positions) == 12 and ex.current == 0
    assert PLOTLY_MIME in ex.graph.outputs[0]["data"] and "wb-agent" in ex.transcript.value
    for outcome in ("correct", "wrong", "format failure"):
        ex.set_outcome(outcome)
        assert ex.positions and _outcomes(ex) == {outcome}, outcome
        assert ex.current == ex.positions[0]
    ex.set_outcome("all")
    ex.next_button.click()
    ex.next_button.click()
    assert ex.current == 2 and "#2" in ex.position.value
    ex.prev_button.click()
    assert ex.current == 1
    for _ in range(20):
        ex.next()
    assert ex.current == 11  # stays at the last one
    ex.select_run("vote")
    assert ex.run == "vote" and len(ex.positions) == 3
    nodes = [t for t in ex.graph.outputs[0]["data"][PLOTLY_MIME]["data"] if t.get("meta") == "node"]
    assert sum(len(t["x"]) for t in nodes) == 6  # task, 3 samples, vote, answer


def test_explorer_for_run_dirs_and_bad_inputs(root, tmp_path):
    ex = EpisodeExplorer.for_runs([root / "vote", root / "mixed"])
    assert ex.run_names() == ["vote", "mixed"]
    ex.select_run("../../etc")
    assert "no run named" in ex.notices.value and ex.run == "vote"
    empty = EpisodeExplorer(tmp_path / "nothing-here")
    assert empty.run is None and "No runs" in empty.notices.value
    (root / "mixed" / "episodes.jsonl").write_bytes(b"\x00\xff not json\n")
    ex = EpisodeExplorer(root, run="mixed")
    assert ex.positions == [] and "no episode" in ex.position.value


def test_find_runs_checks_kind_and_expands_comparisons(root, tmp_path):
    train = tmp_path / "train-run"
    train.mkdir()
    (train / "config.yaml").write_text("recipe: leader\n")
    (train / "metrics.jsonl").write_text("")
    cmp = tmp_path / "cmp"
    cmp.mkdir()
    (cmp / "comparison.json").write_text(json.dumps({"rows": [{"run_dirs": [str(root / "vote")]}]}))
    assert run_kind(train) == "train" and run_kind(cmp) == "compare" and run_kind(root / "mixed") == "eval"
    found = find_runs([root / "mixed", train, tmp_path / "missing", cmp, tmp_path], kind="eval")
    assert found.dirs == [root / "mixed", root / "vote"]
    lines = found.report().splitlines()
    assert len(lines) == 3
    assert "is a train run, not an eval run" in lines[0] and "is not a folder" in lines[1]
    assert "holds no run" in lines[2]
    assert find_runs(str(train), kind="train").dirs == [train]


def test_run_picker_lists_filters_and_calls_back(root):
    picked = []
    picker = RunPicker(root)
    picker.on_pick(picked.append)
    assert set(picker.dropdown.options) == {"mixed", "vote"}
    other = next(n for n in picker.dropdown.options if n != picker.dropdown.value)
    picker.dropdown.value = other
    assert picked == [root / other] and "episodes" in picker.info.value
    assert RunPicker(root, kind="train").dropdown.options == ()


def test_team_form_fills_a_validated_config():
    form = TeamForm(
        protocol="leader",
        options={"peers": 2, "peer_members": ["default", "tuned"]},
        members={"tuned": {"model": "openai:http://127.0.0.1:9/v1#smollm2", "temperature": 0.7}},
    )
    o = form.overrides()
    assert o["protocol"] == {"peers": 2, "peer_members": ["default", "tuned"]}
    assert o["models"] == {"tuned": {"name": "openai:http://127.0.0.1:9/v1#smollm2"}}
    assert o["team"] == {"tuned": {"model": "tuned", "temperature": 0.7}}
    cfg = form.config(task="arithmetic", limit=4)
    assert cfg is not None and cfg.protocol.options["peers"] == 2 and "tuned" in cfg.team
    assert form.status.value.startswith("ok")
    form.option_widgets["peer_members"].value = "default,nobody"
    assert form.config(task="arithmetic") is None and "nobody" in form.status.value
    form.protocol.value = "vote"  # the options follow the protocol
    assert "n" in form.option_widgets and "peers" not in form.option_widgets
    form.option_widgets["n"].value = 100000
    assert form.config(task="arithmetic") is None and "protocol.n" in form.status.value


@pytest.mark.slow
def test_train_monitor_stop_button_ends_the_run_with_a_checkpoint(tmp_path):
    from workbench.rl.config import TrainConfig
    from workbench.widgets import TrainMonitor

    tiny = ["task.limit=6", "eval.limit=2", "train.questions=1", "train.group=2", "train.max_tokens=16",
            "pool.size=3", "pool.max_tokens=48", "pool.threshold=1.0", "protocol.rounds=1",
            "train.objective=grpo", "train.steps=4"]  # fmt: skip
    monitor = TrainMonitor(TrainConfig.load("maestro", tiny), runs_root=tmp_path, poll_s=0.2).start()
    monitor.stop_button.click()  # before the first step ends: the run stops after step 1
    assert monitor.stop_button.disabled
    result = monitor.wait()
    assert result.summary["interrupted"] and result.summary["stopped_at_step"] == 1
    assert "stopped at step 1" in monitor.status.value and monitor.error is None
    assert PLOTLY_MIME in monitor.curves.outputs[0]["data"]
    assert (result.run_dir / "checkpoints" / "step-000001").is_dir()
    # a second monitor on the same folder: one line, no traceback
    again = TrainMonitor(TrainConfig.load("maestro", tiny + [f"out={result.run_dir}"])).start()
    assert again.wait() is None and "already holds a run" in again.error
