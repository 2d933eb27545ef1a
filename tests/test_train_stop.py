"""train(should_stop=...): the stop hook a notebook's stop button uses (workbench.widgets.TrainMonitor)."""

import json
import threading

import pytest
from test_rl_train import TINY as SMALLEST  # tests/ is on sys.path under pytest

TINY = [*SMALLEST, "protocol.rounds=1", "train.objective=grpo", "train.checkpoint_every=10"]


@pytest.mark.slow
def test_should_stop_ends_after_the_step_with_a_checkpoint_adapter_and_interrupted_summary(tmp_path):
    from workbench.rl.checkpoint import latest_checkpoint
    from workbench.rl.config import TrainConfig
    from workbench.rl.trainer import train

    asked: list[int] = []

    def stop_after_two() -> bool:
        asked.append(1)
        return len(asked) >= 2

    cfg = TrainConfig.load("maestro", TINY + ["train.steps=5", f"out={tmp_path / 'run'}"])
    result = train(cfg, progress=False, should_stop=stop_after_two)
    run = result.run_dir
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2] and len(asked) == 2  # asked once per step, between steps
    s = json.loads((run / "summary.json").read_text())
    assert s["interrupted"] is True and s["stopped_at_step"] == 2 and s["stopped_by"] == "should_stop"
    assert s["after"]["step"] == 0  # no evaluation after the stop: 'after' is the last one made
    assert latest_checkpoint(run).name == "step-000002"  # checkpoint_every=10, yet step 2 is saved
    assert (run / "adapter" / "adapter_config.json").exists()
    # the stopped run continues where it stopped, to the planned end
    again = train(resume=run, progress=False)
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert "interrupted" not in again.summary and again.summary["after"]["step"] == 5


@pytest.mark.slow
def test_a_set_event_before_the_first_step_still_takes_one_step(tmp_path):
    from workbench.rl.config import TrainConfig
    from workbench.rl.trainer import train

    stop = threading.Event()
    stop.set()
    cfg = TrainConfig.load("maestro", TINY + ["train.steps=3", f"out={tmp_path / 'run'}"])
    result = train(cfg, progress=False, should_stop=stop.is_set)
    assert result.summary["stopped_at_step"] == 1
