"""The `workbench` command: bad input gives one line naming the input and the fix, exit 2, no files."""

import json
import signal
import subprocess
import sys

import pytest

from workbench.cli import main
from workbench.runs import read_episodes


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--task", "nope"], "unknown task 'nope'; available: aime24, amc23, arithmetic, bbh"),
        (["--protocol", "nope"], "unknown protocol 'nope'; available: single, vote"),
        (["--set", "task.digitz=2"], "unknown key 'task.digitz'; valid keys here: task.digits"),
        (["--set", "protocol.max_tokens=lots"], "protocol.max_tokens must be an integer, got 'lots'"),
        (["--set", "nonsense"], "--set expects key=value"),
        (["--limit", "0"], "task limit must be >= 1"),
        (["--split", "validation"], "arithmetic has splits train, dev, test; got 'validation'"),
        (["--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--task", "jsonl:/no/such/file.jsonl"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["eval", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("workbench: error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_malformed_jsonl_row_names_file_and_line(tmp_path, capsys):
    data = tmp_path / "mine.jsonl"
    data.write_text('{"question": "1+1?", "answer": 2}\n{"question": "2+2?"\n')
    assert main(["eval", "--task", f"jsonl:{data}", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "mine.jsonl:2: not valid JSON" in err and "on_bad_row=skip" in err
    assert not (tmp_path / "run").exists()


def test_exit_code_through_the_console_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "eval", "--task", "nope", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "unknown task 'nope'" in proc.stderr


@pytest.mark.slow
def test_eval_on_the_embedded_model_end_to_end(tmp_path):
    """The foundation's 'done when': 8 valid episodes and a summary, reproducible greedy answers."""
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "workbench",
                "eval",
                "--task",
                "arithmetic",
                "--protocol",
                "single",
                "--model",
                "smollm2",
                "--limit",
                "8",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "accuracy [95% CI]" in proc.stdout
        read = read_episodes(out)
        assert read.problems == [] and len(read.episodes) == 8
        summary = json.loads((out / "summary.json").read_text())
        assert summary["n"] == 8 and len(summary["ci95"]) == 2 and summary["usage"]["calls"] == 8
        outs.append(
            sorted((e["task_id"], e["final_answer"], e["messages"][0]["content"]) for e in read.episodes)
        )
    assert outs[0] == outs[1]


@pytest.mark.slow
def test_vote_and_gsm8k_on_the_embedded_model(tmp_path, shared_data, capsys):
    assert (
        main(
            [
                "eval",
                "--protocol",
                "vote",
                "--limit",
                "3",
                "--set",
                "protocol.n=3",
                "protocol.max_tokens=48",
                "--out",
                str(tmp_path / "vote"),
            ]
        )
        == 0
    )
    eps = read_episodes(tmp_path / "vote").episodes
    assert len(eps) == 3 and all(e["usage"]["calls"] == 3 and len(e["messages"]) == 4 for e in eps)
    assert (
        main(
            [
                "eval",
                "--task",
                "gsm8k",
                "--split",
                "dev",
                "--limit",
                "2",
                "--set",
                "protocol.max_tokens=64",
                "--out",
                str(tmp_path / "gsm8k"),
            ]
        )
        == 0
    )
    eps = read_episodes(tmp_path / "gsm8k").episodes
    assert {e["task_id"] for e in eps} == {"gsm8k-train-6973", "gsm8k-train-6974"}
    assert "gsm8k" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_runs_headless_to_its_table(tmp_path, capsys):
    assert main(["demo", "--no-app", "--limit", "3", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "accuracy [95% CI]" in out and "single" in out and "vote" in out and "McNemar" in out
    (demo,) = tmp_path.iterdir()
    for protocol in ("single", "vote"):
        assert len(read_episodes(demo / protocol).episodes) == 3
        assert json.loads((demo / protocol / "summary.json").read_text())["n"] == 3


def test_an_existing_run_folder_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import workbench.models

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "episodes.jsonl").write_text("")
    monkeypatch.setattr(workbench.models, "load_backend", lambda *a, **k: pytest.fail("model loaded"))
    assert main(["eval", "--out", str(tmp_path / "run")]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_an_inherited_ignored_sigint_is_restored(tmp_path):
    """`workbench ... &` from a script starts with SIGINT ignored; Ctrl-C and the viewer's Cancel
    (SIGINT) must still stop it, so main() puts Python's handler back."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert main(["app", "--runs", str(tmp_path / "missing")]) == 2  # fails fast: no such folder
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, old)
