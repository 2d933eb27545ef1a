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
        (["--limit", "0"], "task.limit must be >= 1"),
        (["--set", "protocol.options=5"], "protocol.options must be a section, got '5'"),
        (
            ["--protocol", "vote", "--set", "protocol.temperature=nan"],
            "protocol.temperature must be a finite",
        ),
        (
            ["--protocol", "vote", "--set", "protocol.n=10000000"],
            "protocol.n=10000000 is too large: the maximum",
        ),
        (["--set", "protocol.top_p=0"], "protocol.top_p must be > 0"),
        (["--limit", "99999999999"], "task.limit=99999999999 is too large: the maximum is 1000000"),
        (["--seed", "99999999999999999999999"], "seed=99999999999999999999999 is out of range"),
        (["--set", "a..b=1"], "empty part in the dotted key"),
        (["--protocol", "x\ny"], "unknown protocol 'x\\ny'"),  # a newline in the input stays on one line
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


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00", "mine.jsonl:1: not UTF-8 text"),
        (b'{"question": "q", "answer": ' + b"[" * 100_000 + b"\n", "mine.jsonl:1: JSON nested too deeply"),
        (b'{"question": "q", "answer": NaN}\n', "mine.jsonl:1: not valid JSON (NaN is not a JSON number)"),
        (b'{"question": "q", "answer": ' + b"9" * 5000 + b"}\n", "mine.jsonl:1: not valid JSON"),
        (b'{"question": ["q"], "answer": 1}\n', "field 'question' must be text or a number, got list"),
    ],
)
def test_a_hostile_jsonl_file_is_one_line_and_writes_nothing(tmp_path, capsys, content, message):
    data = tmp_path / "mine.jsonl"
    data.write_bytes(content)
    assert main(["eval", "--task", f"jsonl:{data}", "--out", str(tmp_path / "run")]) == 2
    err = _one_line_error(capsys)
    assert message in err and "on_bad_row=skip" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("train: {steps: 3\n", "not valid YAML"),
        ("- task\n- train\n", "the top level must be a mapping of sections"),
        ("3\n", "the top level must be a mapping"),
        ("a: &x [1]\nb: *x\n", "YAML aliases (*name) are not allowed"),
        ("train: " + "[" * 5000 + "\n", "recipe.yaml"),
        ("recipe: [leader]\n", "recipe must be a string"),
        ("train:\n  lr: .nan\n", "train.lr must be a finite number"),
        ("train:\n  steps: .inf\n", "train.steps must be an integer"),
        ("train: 5\n", "'train' is a section"),
        ("protocol:\n  options: 5\n", "protocol.options must be a section"),
    ],
)
def test_a_bad_recipe_file_is_one_line_and_writes_nothing(tmp_path, capsys, text, message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    out = tmp_path / "run"
    assert main(["train", "--recipe", str(recipe), "--out", str(out)]) == 2
    assert message in _one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "--seeds", "0,x"], "seeds must be an integer, got 'x'"),
        (["compare", "--seeds", "0,0"], "seeds listed twice"),
        (["compare", "--seeds", ","], "seeds must list at least one seed"),
        (["compare", "--protocols", "vote,single", "--set", "options.vote.n=nan"], "vote"),
        (["compare", "--set", "tolerance=nan"], "tolerance must be a finite number"),
        (["compare", "--set", "task=5"], "'task' is a section"),
        (["compare", "--set", "options.vote=5"], "options.vote"),
        (["eval", "--limit", "x"], "workbench eval: error: argument --limit: invalid int value: 'x'"),
        (["eval", "--bogus"], "workbench: error: unrecognized arguments: --bogus"),
        (["nope"], "workbench: error: argument command: invalid choice: 'nope'"),
        ([], "the following arguments are required: command"),
        (["analyze", "--replay", "-1", "x"], "--replay must be in 0..100000, got -1"),
        (["analyze", "--permutations", "10000000000", "x"], "--permutations must be in 1..100000"),
        (["analyze", "--replay", "3", "no-such-run"], "no-such-run: not a run folder"),
        (["train", "--set", "train.temperature=nan"], "train.temperature must be a finite number"),
        (["train", "--set", "train.steps=1e12"], "train.steps=1000000000000 is too large"),
        (["train", "--recipe", "nope"], "no recipe 'nope'"),
        (["train", "--set", "recipe=[x]"], "unknown recipe '[x]'"),
        (["demo", "--limit", "0"], "task.limit must be >= 1"),
    ],
)
def test_every_subcommand_rejects_bad_arguments_in_one_line(argv, message, tmp_path, capsys, monkeypatch):
    import workbench.models

    monkeypatch.setattr(workbench.models, "load_backend", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:  # argparse exits; our errors return 2
        raise SystemExit(main(argv))
    assert exit_.value.code == 2
    assert message in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []
