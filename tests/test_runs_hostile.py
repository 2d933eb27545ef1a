"""Runs and resumes under hostile files and careless use (issue 15, items 4 and 6).

Every reader of a run skips and names a malformed line and goes on; folders are claimed
exclusively; whole files are replaced atomically; SIGTERM leaves a summary; compare resumes
with a token pilot; every run records a manifest. Models are scripted (no torch here).
"""

import hashlib
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.compare import CompareConfig, run_compare
from workbench.episode import Episode, EpisodeFormatError, Message, validate
from workbench.evaluate import EvalConfig, run_eval
from workbench.models.scripted import ScriptedBackend
from workbench.report import transcript
from workbench.runs import (
    DirLock,
    JsonlLog,
    RunDirError,
    RunWriter,
    atomic_write,
    claim_run_dir,
    model_fingerprint,
    new_run_dir,
    read_config,
    read_episodes,
    read_jsonl,
    summarize,
)

ROOT = Path(__file__).resolve().parents[1]


def episode(i=0, correct=True) -> dict:
    return Episode(
        episode_id=f"t{i}#0",
        task_id=f"t{i}",
        protocol="single",
        question="What is 1+1?",
        gold="2",
        final_answer="2" if correct else "3",
        correct=correct,
        reward=float(correct),
        messages=[Message(0, 0, "agent", ["answer"], "agent", "Answer: 2", 3)],
        events=[{"ts": 1.0, "type": "episode_started"}],
        graph={
            "nodes": [{"id": "task", "role": "task", "label": "task"}, {"id": "agent"}],
            "edges": [{"source": "task", "target": "agent", "round": 0, "message_id": None}],
        },
        index=i,
    ).to_dict()


def line(d) -> bytes:
    return (json.dumps(d) + "\n").encode()


def use_everything(rows: list[dict]) -> None:
    """What the readers downstream of read_episodes do with an episode: none may raise."""
    summarize(rows)
    for d in rows:
        Episode.from_dict(d).to_dict()  # compare's resume, the trainer's logs
        transcript(d)  # workbench.report


# ---------------------------------------------------------------- malformed lines, one by one
def _set(d, path, value):
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    return None


BAD_LINES = {
    "graph node not an object": lambda d: _set(d, ["graph", "nodes"], ["x"]),
    "usage number as a string": lambda d: _set(d, ["usage", "calls"], "3"),
    "usage number as a bool": lambda d: _set(d, ["usage", "prompt_tokens"], True),
    "message content not a string": lambda d: _set(d, ["messages", 0, "content"], {"a": 1}),
    "receivers not strings": lambda d: _set(d, ["messages", 0, "receivers"], [1]),
    "message id a float": lambda d: _set(d, ["messages", 0, "id"], 1.5),
    "event not an object": lambda d: _set(d, ["events"], ["started"]),
    "event ts a string": lambda d: _set(d, ["events", 0, "ts"], "now"),
    "edge without a target": lambda d: d["graph"]["edges"][0].pop("target"),
    "edge round a string": lambda d: _set(d, ["graph", "edges", 0, "round"], "0"),
    "meta a list": lambda d: _set(d, ["meta"], []),
    "index a bool": lambda d: _set(d, ["index"], False),
    "seed a string": lambda d: _set(d, ["seed"], "0"),
    "question a list": lambda d: _set(d, ["question"], ["q"]),
    "final answer a number": lambda d: _set(d, ["final_answer"], 2),
    "schema a number": lambda d: _set(d, ["schema"], 1),
    "meta nested 200 deep": lambda d: _set(d, ["meta"], json.loads('{"a":' * 200 + "1" + "}" * 200)),
}


@pytest.mark.parametrize("name", list(BAD_LINES))
def test_validate_rejects_wrong_nested_types(name):
    d = episode()
    BAD_LINES[name](d)
    with pytest.raises(EpisodeFormatError):
        validate(d)


RAW_BAD = {
    "deep nesting (RecursionError in json)": b"[" * 200_000 + b"\n",
    "deep object nesting": b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"\n",
    "binary": bytes(b for b in range(256) if b != 10) + b"\n",
    "not UTF-8": b'{"schema": "\xff\xfe"}\n',
    "NUL bytes": b"\x00" * 64 + b"\n",
    "a JSON list": b"[1, 2, 3]\n",
    "a huge integer": b'{"n": ' + b"9" * 5000 + b"}\n",
    "wrong types": line({**episode(), "usage": {"calls": "3"}}),
}


def test_every_malformed_line_is_skipped_named_and_the_rest_read(tmp_path):
    path = tmp_path / "episodes.jsonl"
    bad = []
    for mutate in BAD_LINES.values():
        d = episode(9)
        mutate(d)
        bad.append(line(d))
    bad += list(RAW_BAD.values())
    good = [line(episode(i)) for i in range(3)]
    path.write_bytes(good[0] + b"".join(bad) + good[1] + good[2] + b'{"schema": "workbench.ep')  # torn
    r = read_episodes(path)
    assert [e["task_id"] for e in r.episodes] == ["t0", "t1", "t2"]
    assert len(r.problems) == len(bad) + 1
    assert all(p.startswith(f"{path}:") and p.endswith("skipped") for p in r.problems)
    assert "torn last line" in r.problems[-1]
    assert any("nested too deeply" in p for p in r.problems)
    assert any("not UTF-8" in p for p in r.problems)
    use_everything(r.episodes)


# ---------------------------------------------------------------- fuzz: lines through every reader
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
PATHS = [
    ["schema"], ["episode_id"], ["task_id"], ["question"], ["gold"], ["final_answer"], ["correct"],
    ["reward"], ["format_failure"], ["messages"], ["messages", 0], ["messages", 0, "content"],
    ["messages", 0, "sender"], ["messages", 0, "receivers"], ["messages", 0, "receivers", 0],
    ["messages", 0, "round"], ["messages", 0, "completion_tokens"], ["messages", 0, "extracted"],
    ["messages", 0, "extra"], ["events"], ["events", 0], ["events", 0, "ts"], ["events", 0, "type"],
    ["graph"], ["graph", "nodes"], ["graph", "nodes", 0], ["graph", "nodes", 0, "id"],
    ["graph", "edges"], ["graph", "edges", 0, "source"], ["graph", "edges", 0, "message_id"],
    ["usage"], ["usage", "calls"], ["usage", "wall_s"], ["usage", "extra"], ["index"], ["seed"],
    ["meta"], ["meta", "votes"], ["extra_top_level"],
]  # fmt: skip


@st.composite
def episode_lines(draw) -> bytes:
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "deleted", "raw", "truncated"]))
    d = episode(draw(st.integers(0, 5)), draw(st.booleans()))
    if kind == "raw":
        return draw(st.binary(max_size=64)).replace(b"\n", b" ") + b"\n"
    if kind == "truncated":
        text = line(d)
        return text[: draw(st.integers(0, len(text) - 2))] + b"\n"
    path = draw(st.sampled_from(PATHS))
    target = d
    for k in path[:-1]:
        target = target[k]
    if kind == "deleted":
        if isinstance(target, dict):
            target.pop(path[-1], None)
    else:
        target[path[-1]] = draw(json_values)
    return (json.dumps(d) + "\n").encode()  # NaN / Infinity included, as json.dumps writes them


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(episode_lines(), min_size=1, max_size=6))
def test_fuzz_episode_lines_never_raise_in_any_reader(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("fuzz") / "episodes.jsonl"
    good = line(episode(7))
    path.write_bytes(good + b"".join(lines) + good)
    r = read_episodes(path)
    assert len(r.episodes) + len(r.problems) == sum(bool(x.strip()) for x in lines) + 2  # blank: ignored
    assert sum(e["task_id"] == "t7" for e in r.episodes) >= 2
    use_everything(r.episodes)
    for e in r.episodes:
        validate(e)


# ---------------------------------------------------------------- other readers
def test_read_jsonl_of_a_missing_or_unreadable_file_is_a_problem_not_a_raise(tmp_path):
    assert read_jsonl(tmp_path / "none.jsonl").problems == [f"{tmp_path / 'none.jsonl'} does not exist"]
    assert read_jsonl(tmp_path / "none.jsonl", missing_ok=True).problems == []
    folder = tmp_path / "dir.jsonl"
    folder.mkdir()
    assert "cannot be read" in read_jsonl(folder).problems[0]


@pytest.mark.parametrize(
    "text",
    [b"- a list\n", b"a: [\n", b"\xff\xfe\x00", b"[" * 50_000, b"task: {name: [" * 2000, b"42"],
)
def test_read_config_of_a_malformed_config_yaml_is_none(tmp_path, text):
    (tmp_path / "config.yaml").write_bytes(text)
    assert read_config(tmp_path / "config.yaml") is None


def test_analyze_skips_and_reports_malformed_lines(tmp_path):
    from workbench.analysis.analyze import AnalyzeOptions, analyze_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes(b"- not: a mapping\n")
    (run / "episodes.jsonl").write_bytes(
        line(episode(0)) + RAW_BAD["deep nesting (RecursionError in json)"] + line(episode(1, False))
    )
    opts = AnalyzeOptions(embed=False, png=False)
    a = analyze_run(run, opts, write=False)
    assert a["n"] == 2 and a["protocol"] == "single"  # from the episodes: config.yaml is not a mapping
    assert len(a["problems"]) == 1 and "nested too deeply" in a["problems"][0]


def test_training_logs_with_malformed_lines_are_read_around(tmp_path):
    from workbench.rl.report import read_evals, read_metrics

    (tmp_path / "metrics.jsonl").write_bytes(
        line({"step": 1, "reward": 0.5})
        + b"[" * 100_000
        + b"\n"
        + line({"step": "2", "reward": 0.1})
        + line({"step": 3, "reward": "high"})
        + line({"step": 4, "reward": 0.2})
        + b'{"step": 5'
    )
    problems: list[str] = []
    assert [r["step"] for r in read_metrics(tmp_path, problems)] == [1, 4]
    assert len(problems) == 4
    (tmp_path / "evals.jsonl").write_bytes(
        line({"step": 0, "accuracy": 0.5, "ci95": [0.1, 0.9]}) + line({"step": 1, "accuracy": None})
    )
    assert [r["step"] for r in read_evals(tmp_path)] == [0]


# ---------------------------------------------------------------- writing
def test_atomic_write_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    atomic_write(target, "old\n")
    atomic_write(target, "new\n")
    assert target.read_text() == "new\n" and os.listdir(tmp_path) == ["summary.json"]

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write(target, "half\n")
    assert target.read_text() == "new\n" and os.listdir(tmp_path) == ["summary.json"]  # tmp removed


def test_a_log_appended_after_a_torn_line_keeps_every_new_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(line({"step": 1}) + b'{"step": 2, "rew')  # killed mid-line
    with JsonlLog(path) as log:
        log.append({"step": 2})
        log.append({"step": 3})
    r = read_jsonl(path)
    assert [x["step"] for x in r.rows] == [1, 2, 3] and len(r.problems) == 1


def _claim_in_process(base: str, start: float, q) -> None:
    while time.time() < start:
        pass
    try:
        q.put(str(claim_run_dir(Path(base), fresh_name=True)))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        q.put(f"error: {e}")


def test_same_second_default_names_never_share_a_folder(tmp_path):
    base = new_run_dir(tmp_path, "arithmetic", "single")
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    start = time.time() + 0.3
    procs = [ctx.Process(target=_claim_in_process, args=(str(base), start, q)) for _ in range(6)]
    for p in procs:
        p.start()
    got = [q.get(timeout=30) for _ in procs]
    for p in procs:
        p.join()
    assert len(set(got)) == 6 and not any(g.startswith("error") for g in got)
    assert sorted(got)[0] == str(base)


def test_an_explicit_out_is_refused_once_claimed(tmp_path):
    out = tmp_path / "run"
    claim_run_dir(out)
    with pytest.raises(RunDirError, match="already holds a run or is being written"):
        claim_run_dir(out)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert claim_run_dir(empty) == empty  # an empty folder given as --out is fine, once
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="not a folder"):
        claim_run_dir(tmp_path / "file")


QUESTION = re.compile(r"What is (.+?)\?")


def _solver(req, j):
    return f"<answer>{eval(QUESTION.findall(req.messages[-1]['content'])[-1])}</answer>"


def test_two_evals_with_the_same_out_the_second_is_refused_and_writes_nothing(tmp_path):
    cfg = EvalConfig.build(task="arithmetic", limit=2, out=str(tmp_path / "run"))
    run_eval(cfg, backend=ScriptedBackend(_solver), progress=False)
    before = sorted(os.listdir(tmp_path / "run"))
    with pytest.raises(RunDirError, match="already holds a run"):
        run_eval(cfg, backend=ScriptedBackend(_solver), progress=False)
    assert sorted(os.listdir(tmp_path / "run")) == before


def test_two_evals_in_the_same_second_get_two_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-000000")
    cfg = EvalConfig.build(task="arithmetic", limit=2)
    a = run_eval(cfg, backend=ScriptedBackend(_solver), progress=False, runs_root=tmp_path)
    b = run_eval(cfg, backend=ScriptedBackend(_solver), progress=False, runs_root=tmp_path)
    assert a.run_dir != b.run_dir and b.run_dir.name.endswith("-2")
    assert len(read_episodes(a.run_dir).episodes) == len(read_episodes(b.run_dir).episodes) == 2


def test_a_run_in_progress_is_locked(tmp_path):
    w = RunWriter(tmp_path / "run", {"task": {}})
    with pytest.raises(RunDirError, match=r"in use by another workbench process \(pid \d+\)"):
        DirLock(tmp_path / "run")
    w.close()
    DirLock(tmp_path / "run").release()  # free once the writer is done


# ---------------------------------------------------------------- the manifest
def test_every_eval_run_records_a_manifest(tmp_path):
    cfg = EvalConfig.build(task="arithmetic", limit=2, seed=3, out=str(tmp_path / "run"))
    run_eval(cfg, backend=ScriptedBackend(_solver), progress=False)
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["kind"] == "eval" and m["seeds"] == {"seed": 3, "task_seed": 0}
    assert m["packages"]["workbench"] and "torch" in m["packages"] and "peft" in m["packages"]
    if (ROOT / ".git").exists():
        assert len(m["git"]["commit"]) == 40
    model = m["models"]["default"]
    assert model["spec"] == "smollm2"
    assert m["sandbox"] == "not used"  # arithmetic runs no code


def test_model_fingerprints_hash_adapters_and_drop_url_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    base = tmp_path / "base"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"base weights")
    fp = model_fingerprint(f"{base}+{adapter}")
    (f,) = fp["adapter"]["files"]
    assert f["sha256"] == hashlib.sha256(b"weights").hexdigest()
    (b,) = fp["base_files"]
    assert b["sha256"] == hashlib.sha256(b"base weights").hexdigest() and not b["sha256_cached"]
    assert model_fingerprint(str(base))["base_files"][0]["sha256_cached"]  # hashed once, then cached
    remote = model_fingerprint("openai:https://user:secret@api.example.com:8443/v1#m")
    assert "secret" not in json.dumps(remote) and "user" not in json.dumps(remote)
    assert remote["spec"] == "openai:https://api.example.com:8443/v1#m"


# ---------------------------------------------------------------- SIGTERM
SIGTERM_CHILD = textwrap.dedent(
    """
    import re, sys, time
    import workbench.models as models
    from workbench.models.scripted import ScriptedBackend

    def slow(req, j):
        time.sleep(0.4)
        return "<answer>" + str(eval(re.findall(r"What is (.+?)\\?", req.messages[-1]["content"])[-1])) + "</answer>"

    models.load_backend = lambda spec, **kw: ScriptedBackend(slow)
    from workbench.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_sigterm_writes_the_summary_of_the_episodes_so_far_and_exits_143(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_CHILD, "eval", "--limit", "40", "--out", str(out), "--set",
         "max_in_flight=1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline and len(read_episodes(out).episodes) < 2:
        time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=60)
    err = proc.stderr.read()
    assert rc == 143, err
    assert "Traceback" not in err and "terminated (SIGTERM)" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["stopped_by"] == "SIGTERM"
    assert summary["n"] == len(read_episodes(out).episodes) >= 2 and summary["planned"] == 40


# ---------------------------------------------------------------- compare --match tokens --resume
def test_compare_match_tokens_resumes_and_reuses_its_pilot(tmp_path, capsys):
    out = tmp_path / "cmp"
    cmp = CompareConfig.build(protocols="single,vote", reference="vote", match="tokens", limit=2,
                              out=str(out), pilot_items=2)  # fmt: skip
    first = run_compare(cmp, backend=ScriptedBackend(_solver), progress=False)
    (out / "vote-seed0" / "summary.json").unlink()  # killed before vote finished
    calls = []
    backend = ScriptedBackend(lambda req, j: calls.append(req) or _solver(req, j))
    again = run_compare(cmp, backend=backend, progress=False, resume=True)
    assert [r["accuracy"] for r in again.rows] == [r["accuracy"] for r in first.rows]
    assert len(calls) == 2 * again.plans[1].generations  # only vote's 2 items ran again, not the pilot
    assert json.loads((out / "comparison.json").read_text())["pilot"]["items"] == 2
    assert (out / "manifest.json").exists()


def test_a_second_compare_on_a_locked_folder_is_refused(tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    lock = DirLock(out, "comparison")
    cmp = CompareConfig.build(protocols="single,vote", limit=1, out=str(out))
    with pytest.raises(RunDirError, match="in use"):
        run_compare(cmp, backend=ScriptedBackend(_solver), progress=False, resume=True)
    lock.release()


# ---------------------------------------------------------------- analysis over hostile meta
def _team_solver(req, j):
    text = "\n".join(m["content"] for m in req.messages)
    if "<choice>NUMBER</choice>" in req.messages[-1]["content"]:
        return "<choice>1</choice><why>fine</why>"
    if req.messages[0]["content"].startswith("You are the Conductor"):
        return 'model_id = [0, 1]\nsubtasks = ["Solve.", "Check."]\naccess_list = [[], ["all"]]'
    return f"<answer>{eval(QUESTION.findall(text)[-1])}</answer>"


HOSTILE_VALUES = [None, True, 0, -1, 1.5, float("nan"), "", "x", [], [1], {}, {"a": 1}, [{"error": 1}],
                  [[1, 2]], [{"model_id": ["a"]}], [{"model_id": [True, -5]}], {"x": [None]}]  # fmt: skip


@pytest.mark.parametrize("protocol", ["vote", "maestro", "conductor", "leader", "debate", "moa"])
def test_analysis_of_episodes_with_hostile_meta_never_raises(tmp_path, protocol):
    """Schema-valid episodes whose protocol-specific fields (meta.plans, meta.train_step, a
    message's extracted answer and role) hold any JSON: every analysis counts, none raises."""
    import random

    from workbench.analysis.analyze import AnalyzeOptions, analyze_run

    cfg = EvalConfig.build(task="arithmetic", protocol=protocol, limit=3, out=str(tmp_path / "run"))
    run_eval(cfg, backend=ScriptedBackend(_team_solver), progress=False)
    base = read_episodes(tmp_path / "run").episodes
    rng = random.Random(protocol)
    for trial in range(25):
        eps = json.loads(json.dumps(base))
        for e in eps:
            for _ in range(2):
                key = rng.choice([*e["meta"], "train_step", "plans", "votes", "eval"])
                e["meta"][key] = rng.choice(HOSTILE_VALUES)
            if e["messages"] and rng.random() < 0.5:
                m = rng.choice(e["messages"])
                m[rng.choice(["extracted", "finish_reason"])] = rng.choice([None, "", "zz", "1"])
                m["role"] = rng.choice([m["role"], "", "weird"])
        run = tmp_path / f"m{trial}"
        run.mkdir()
        (run / "config.yaml").write_bytes((tmp_path / "run" / "config.yaml").read_bytes())
        (run / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in eps))
        a = analyze_run(run, AnalyzeOptions(embed=False, png=False), write=False)
        assert a["n"] == len(eps) and not a["problems"]


@pytest.mark.parametrize(
    "summary", [b"[1, 2]", b"{}", b'{"n": 2, "accuracy": "high"}', b"\xff\xfe", b"[" * 100_000]
)
def test_compare_resume_reruns_a_run_whose_summary_is_corrupted(tmp_path, summary):
    out = tmp_path / "cmp"
    cmp = CompareConfig.build(protocols="single,vote", reference="vote", limit=2, out=str(out))
    first = run_compare(cmp, backend=ScriptedBackend(_solver), progress=False)
    (out / "vote-seed0" / "summary.json").write_bytes(summary)
    calls = []
    backend = ScriptedBackend(lambda req, j: calls.append(req) or _solver(req, j))
    again = run_compare(cmp, backend=backend, progress=False, resume=True)
    assert calls and [r["accuracy"] for r in again.rows] == [r["accuracy"] for r in first.rows]
