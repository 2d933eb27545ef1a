"""The viewer's library logic (workbench.viewer): run discovery, safe paths, tailing, figures, HTML.

Fixture runs are written by the real protocols, EpisodeContext and RunWriter through `run_eval`
with a scripted backend (the viewer is under test, not the model); graphs the current protocols do
not make yet (debate-like cycles, training fields) are written as Episode dicts by hand.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from workbench.episode import Episode, Message, Usage
from workbench.evaluate import EvalConfig, run_eval
from workbench.models.scripted import ScriptedBackend
from workbench.runs import RunWriter
from workbench.viewer import (
    EpisodeTail,
    RunAccessError,
    RunsRoot,
    Viewer,
    counters,
    filter_entries,
    layout,
    load_run_info,
    node_verdicts,
    outcome_grid,
    summary_rows,
    topology_figure,
    transcript_html,
)
from workbench.viewer.launch import Launcher, build_argv

HOSTILE = "<script>alert(1)</script> <img src=x onerror=alert(1)>"


# ---- fixture runs ----
def _solve(messages: list[dict]) -> int:
    """The value of the first 'a op b' in the prompt (the arithmetic task's question)."""
    for m in messages:
        hit = re.search(r"What is (-?\d+)\s*([+\-*])\s*(-?\d+)", m["content"])
        if hit:
            a, op, b = hit.groups()
            return {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
    return 0


def arithmetic_reply(req, j: int) -> str:
    """Samples 0 and 1 are right, later samples are off by one: the majority is right."""
    value = _solve(req.messages)
    return f"Let me compute. Answer: {value if j < 2 else value + 1}"


def make_run(
    root: Path, name: str, protocol: str = "vote", limit: int = 3, reply=arithmetic_reply, n: int = 3
) -> Path:
    overrides = {"protocol": {"n": n}} if protocol == "vote" else {}
    cfg = EvalConfig.build(overrides, task="arithmetic", protocol=protocol, limit=limit, out=str(root / name))
    calls = itertools.count()
    # vote sends each sample as its own request (n=1), an episode's n samples together in one batch:
    # the request counter modulo n tells which sample this is
    backend = ScriptedBackend(lambda req, j: reply(req, next(calls) % n if protocol == "vote" else j))
    return run_eval(cfg, backend=backend, progress=False).run_dir


def hostile_reply(req, j: int) -> str:
    return f"{HOSTILE}\nAnswer: {_solve(req.messages)}"


def episode_dict(
    task_id: str = "t-0",
    graph: dict | None = None,
    messages: list[Message] | None = None,
    meta: dict | None = None,
    correct: bool = True,
    question: str = "What is 1 + 1?",
) -> dict:
    ep = Episode(
        episode_id=f"{task_id}#0",
        task_id=task_id,
        protocol="debate",
        question=question,
        gold="2",
        final_answer="2",
        correct=correct,
        reward=1.0 if correct else 0.0,
        messages=messages or [],
        graph=graph or {"nodes": [], "edges": []},
        usage=Usage(calls=len(messages or []), completion_tokens=10),
        meta=meta or {},
    )
    return ep.to_dict()


def debate_episode(meta: dict | None = None) -> dict:
    """Two debaters that reuse their nodes across rounds (a cycle), then a judge."""
    nodes = [
        {"id": "task", "role": "task", "label": "Task"},
        {"id": "a", "role": "debater", "label": "Alice"},
        {"id": "b", "role": "debater", "label": "Bob"},
        {"id": "judge", "role": "judge", "label": "Judge"},
        {"id": "answer", "role": "answer", "label": "Answer"},
    ]
    edges = [
        {"source": "task", "target": "a", "round": 0, "message_id": None},
        {"source": "task", "target": "b", "round": 0, "message_id": None},
        {"source": "a", "target": "b", "round": 1, "message_id": 0},
        {"source": "b", "target": "a", "round": 1, "message_id": 1},
        {"source": "a", "target": "judge", "round": 2, "message_id": 2},
        {"source": "b", "target": "judge", "round": 2, "message_id": 3},
        {"source": "judge", "target": "answer", "round": 2, "message_id": 4},
    ]
    msgs = [
        # verdicts as the episode records them (schema 2): the viewer never judges an answer itself
        Message(0, 1, "a", ["b"], "debater", "I say 2. Answer: 2", extracted="2", correct=True),
        Message(1, 1, "b", ["a"], "debater", "I say 3. Answer: 3", extracted="3", correct=False),
        Message(2, 2, "a", ["judge"], "debater", "Still 2. Answer: 2", extracted="2", correct=True),
        Message(3, 2, "b", ["judge"], "debater", "Fine, no idea."),
        Message(4, 2, "judge", ["answer"], "judge", "Answer: 2", extracted="2", correct=True),
    ]
    return episode_dict(graph={"nodes": nodes, "edges": edges}, messages=msgs, meta=meta)


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "runs"
    r.mkdir()
    return r


# ---- discovery and safe paths ----
def test_list_runs_finds_nested_runs_newest_first_and_skips_hidden(root):
    make_run(root, "demo/single", protocol="single")
    make_run(root, "demo/vote")
    make_run(root, ".launch/hidden", protocol="single")
    os.utime(root / "demo/single/summary.json", (time.time() + 5, time.time() + 5))
    names = [r.name for r in RunsRoot(root).list_runs()]
    assert names == ["demo/single", "demo/vote"]


@pytest.mark.parametrize("bad", ["../../etc", "/etc", "demo/../../x", "..", "", "a\\..\\b", "x\x00"])
def test_resolve_refuses_anything_outside_the_root(root, bad):
    make_run(root, "demo/vote")
    with pytest.raises(RunAccessError):
        RunsRoot(root).resolve(bad)


def test_resolve_refuses_a_symlink_that_leads_out_and_an_unknown_run(root, tmp_path):
    outside = tmp_path / "outside"
    make_run(tmp_path, "outside", protocol="single")
    (root / "link").symlink_to(outside)
    rr = RunsRoot(root)
    with pytest.raises(RunAccessError, match="outside the runs root"):
        rr.resolve("link")
    with pytest.raises(RunAccessError, match="no run named"):
        rr.resolve("nope")
    assert rr.list_runs() == []  # links are not followed when listing either
    make_run(root, "ok", protocol="single")
    (root / "ok" / "summary.json").unlink()
    (root / "ok" / "summary.json").symlink_to(outside / "summary.json")
    with pytest.raises(RunAccessError, match="link to outside"):
        rr.file("ok", "summary.json")
    with pytest.raises(RunAccessError, match="reads only"):
        rr.file("ok", "../outside/summary.json")


# ---- reading runs as they grow ----
def test_tail_reads_only_new_lines_and_holds_back_a_partial_one(root):
    run = make_run(root, "r", limit=3)
    lines = (run / "episodes.jsonl").read_text().splitlines(keepends=True)
    path = run / "episodes.jsonl"
    path.write_text(lines[0])
    tail = EpisodeTail(RunsRoot(root), "r")
    assert len(tail.poll()) == 1
    with open(path, "a") as f:
        f.write(lines[1][:40])  # the writer is mid-line
    assert tail.poll() == [] and tail.torn_tail() is not None
    with open(path, "a") as f:
        f.write(lines[1][40:] + "{not json}\n" + lines[2])
    new = tail.poll()
    assert [e["pos"] for e in new] == [1, 2] and tail.torn_tail() is None
    assert tail.problems == ["line 3: not valid JSON, skipped"]
    assert tail.episode(2)["task_id"] == json.loads(lines[2])["task_id"]  # re-read from its offset
    path.write_text(lines[0])  # replaced by a shorter file: read again from the start
    assert len(tail.poll()) == 1 and len(tail.entries) == 1


def test_run_info_says_what_is_missing(root):
    make_run(root, "complete")
    assert load_run_info(RunsRoot(root), "complete").status == "complete"
    run = make_run(root, "killed")
    (run / "summary.json").unlink()
    old = time.time() - 3600
    os.utime(run / "episodes.jsonl", (old, old))
    info = load_run_info(RunsRoot(root), "killed")
    assert info.status == "incomplete" and any("summary.json is missing" in p for p in info.problems)
    RunWriter(root / "empty", {"task": {"name": "arithmetic", "limit": 4}}).close()
    info = load_run_info(RunsRoot(root), "empty")
    assert info.planned == 4 and info.status == "running"  # just created, nothing written yet
    (root / "cfg-only").mkdir()
    (root / "cfg-only" / "config.yaml").write_text("task: [unclosed")
    info = load_run_info(RunsRoot(root), "cfg-only")
    assert info.status == "empty" and any("config.yaml cannot be parsed" in p for p in info.problems)


def test_viewer_reports_a_torn_last_line_and_keeps_the_rest(root):
    run = make_run(root, "torn", limit=3)
    text = (run / "episodes.jsonl").read_text()
    (run / "episodes.jsonl").write_text(text[: len(text) - 30])  # cut inside the last line
    (run / "summary.json").unlink()
    old = time.time() - 3600
    os.utime(run / "episodes.jsonl", (old, old))
    snap = Viewer(root).snapshot("torn")
    assert snap.n == 2
    assert any("unterminated" in p for p in snap.problems)


# ---- counters, filters, search ----
def test_counters_filters_and_search(root):
    make_run(root, "v", limit=4)
    make_run(root, "h", protocol="single", limit=2, reply=hostile_reply)
    v = Viewer(root)
    snap = v.snapshot("v")
    c = counters(snap.entries, snap.info.planned)
    assert (c["n"], c["planned"], c["correct"], c["calls_per_query"]) == (4, 4, 4, 3.0)
    assert (
        len(filter_entries(snap.entries, "wrong")) == 0 and len(filter_entries(snap.entries, "correct")) == 4
    )
    assert [r[0] for r in v.episode_rows("h", "all", "ONERROR")] == [0, 1]  # found inside messages
    assert v.episode_rows("h", "all", "no such text") == []
    first_q = snap.entries[0]["question"]
    assert [r[0] for r in v.episode_rows("v", "all", first_q)] == [0]


def test_training_fields_are_counted_per_step():
    entries = []
    for pos, (step, reward, adv) in enumerate([(0, 0.0, -0.5), (0, 1.0, 0.5), (1, 1.0, 0.0), (1, 1.0, 0.0)]):
        d = debate_episode({"train_step": step, "advantage": adv})
        d["reward"] = reward
        from workbench.viewer.store import episode_entry

        entries.append(episode_entry(d, pos, 0, 0, pos + 1))
    c = counters(entries)
    assert c["train"] == {"step": 1, "episodes_at_step": 2, "mean_reward": 1.0, "mean_abs_advantage": 0.0}


# ---- figures ----
def test_layout_puts_task_first_answer_last_for_a_graph_with_cycles():
    ep = debate_episode()
    pos = layout(ep["graph"]["nodes"], ep["graph"]["edges"])
    xs = {k: v[0] for k, v in pos.items()}
    assert xs["task"] == min(xs.values()) and xs["answer"] == max(xs.values())
    assert sum(1 for x in xs.values() if x == xs["answer"]) == 1
    assert len(set(pos.values())) == len(pos)  # no two nodes on top of each other
    assert xs["a"] < xs["judge"] and xs["b"] < xs["judge"]


def test_layout_keeps_a_leader_right_of_the_agents_it_answers_in_later_rounds():
    nodes = [{"id": i} for i in ("task", "agent-0", "agent-1", "leader", "answer")]
    edges = [{"source": "task", "target": a, "round": 0} for a in ("agent-0", "agent-1")]
    for r in range(3):  # MLPO-style rounds: agents -> leader -> agents, reusing the nodes
        edges += [{"source": a, "target": "leader", "round": r} for a in ("agent-0", "agent-1")]
        edges += [{"source": "leader", "target": a, "round": r + 1} for a in ("agent-0", "agent-1")]
    edges.append({"source": "leader", "target": "answer", "round": 3})
    pos = layout(nodes, edges)
    assert pos["task"][0] < pos["agent-0"][0] == pos["agent-1"][0] < pos["leader"][0] < pos["answer"][0]


def test_topology_figure_has_one_marker_per_node_and_escapes_text(root):
    run = make_run(root, "h", protocol="single", limit=1, reply=hostile_reply)
    ep = json.loads((run / "episodes.jsonl").read_text().splitlines()[0])
    fig = topology_figure(ep)
    node_traces = [t for t in fig.data if t.meta == "node"]
    assert sum(len(t.x) for t in node_traces) == len(ep["graph"]["nodes"]) == 3
    dumped = fig.to_json()
    assert "&lt;script&gt;" in dumped and "<script>" not in dumped and "<img" not in dumped
    assert {t.name for t in fig.data if t.meta != "node"} == {"round 0", "round 0 messages"}


def test_vote_nodes_are_marked_right_and_wrong(root):
    run = make_run(root, "v", limit=1)
    ep = json.loads((run / "episodes.jsonl").read_text().splitlines()[0])
    verdict = node_verdicts(ep)
    assert verdict == {"sample-0": True, "sample-1": True, "sample-2": False, "vote": True, "answer": True}
    fig = topology_figure(ep)
    rings = [c for t in fig.data if t.meta == "node" for c in t.marker.line.color]
    assert rings.count("#dc2626") == 1 and rings.count("#16a34a") == 4


def test_training_episode_is_coloured_by_advantage_and_shows_the_step():
    ep = debate_episode({"train_step": 7, "advantage": 0.4, "node_advantage": {"b": -1.2}})
    fig = topology_figure(ep)
    assert "step 7" in fig.layout.title.text
    assert fig.layout.coloraxis.cmin == -1.2 and fig.layout.coloraxis.cmax == 1.2
    agents = [t for t in fig.data if t.meta == "node" and t.name not in ("task", "answer")]
    colours = {x: c for t in agents for x, c in zip(t.text, t.marker.color, strict=True)}
    assert colours == {"Alice ✓": 0.4, "Bob ✗": -1.2, "Judge ✓": 0.4}
    task = next(t for t in fig.data if t.name == "task")
    assert task.marker.color == "#6b7280" and task.marker.coloraxis is None  # task/answer keep their colour


# ---- transcripts ----
def test_transcript_keeps_agents_apart_and_shows_model_html_as_text(root):
    ep = debate_episode()
    ep["messages"][0]["content"] = HOSTILE
    page = transcript_html(ep)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    sections = re.findall(r'<section class="wb-agent" data-node="([^"]+)"', page)
    assert sections == ["a", "b", "judge"]  # each agent once, its messages inside
    alice = page.split('data-node="a"')[1].split("</section>")[0]
    assert alice.count('class="wb-msg"') == 2 and "Still 2" in alice and "I say 3" not in alice


# ---- compare ----
def test_compare_pairs_items_across_runs(root):
    make_run(root, "vote", limit=3)
    make_run(root, "single", protocol="single", limit=4, reply=lambda req, j: "Answer: 0")
    v = Viewer(root)
    runs = {name: v.snapshot(name).entries for name in ("vote", "single")}
    header, rows = outcome_grid(runs)
    assert header == ["item", "question", "vote", "single", "agree"]
    assert len(rows) == 4 and rows[3][2] == ""  # vote has only 3 items
    assert all(r[2] == "✓" for r in rows[:3])
    header, summary = summary_rows(runs)
    right_single = sum(r[3] == "✓" for r in rows[:3])
    assert summary[1][-1].startswith(f"{3 - right_single} / 0")
    common = header.index("accuracy on common items")
    assert summary[0][common] == "1.000 (n=3)" and summary[1][common] == f"{right_single / 3:.3f} (n=3)"
    figs = v.compare_item(["vote", "single"], rows[3][0])
    assert "no episode" in figs[0].layout.annotations[0].text


# ---- launch ----
def test_launch_form_refuses_paths_and_run_folder_overrides(tmp_path):
    out = tmp_path / "r"
    assert build_argv(out, "arithmetic", "vote", "smollm2", 3, extra_set="protocol.n=3")[-2:] == [
        "--set",
        "protocol.n=3",
    ]
    from workbench.config import ConfigError

    for kwargs in (
        dict(task="jsonl:/etc/passwd"),
        dict(model="../../secret"),
        dict(model="/abs/model"),
        dict(extra_set="out=/tmp/elsewhere"),
        dict(extra_set="task.name=jsonl:/etc/passwd"),
        dict(protocol="nope"),
        dict(limit=0),
    ):
        args = dict(task="arithmetic", protocol="single", model="smollm2", limit=3) | kwargs
        with pytest.raises(ConfigError):
            build_argv(out, **args)


@pytest.mark.slow
def test_launch_then_cancel_leaves_a_valid_shorter_run(tmp_path):
    """A real `workbench eval` subprocess (the embedded model), one episode at a time, cancelled."""
    root = tmp_path / "runs"
    launcher = Launcher(root)
    # long enough (~2 min at 3 episodes/s) that the cancel always lands mid-run, however slow the poll
    job = launcher.start(
        "arithmetic", "single", limit=400, extra_set="max_in_flight=1 protocol.max_tokens=16"
    )
    v = Viewer(root)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and job.returncode is None:
            if (job.run_dir / "episodes.jsonl").exists() and v.snapshot(job.name).n >= 2:
                break
            time.sleep(0.2)
        assert job.returncode is None, job.log_tail()
        assert launcher.cancel()
        job.proc.wait(timeout=60)
    finally:
        if job.returncode is None:
            os.killpg(job.proc.pid, signal.SIGKILL)
    assert job.state == "cancelled", job.log_tail()
    snap = v.snapshot(job.name)
    assert snap.info.status == "interrupted" and snap.info.summary["n"] == snap.n
    assert 2 <= snap.n < 400 and not any("skipped" in p for p in snap.problems)


def test_two_launches_in_one_second_get_two_folders_and_two_logs(tmp_path):
    """The folder is reserved when the job starts, not when its eval gets round to claiming it."""
    launcher = Launcher(tmp_path / "runs")
    jobs = [launcher.start("arithmetic", "single", limit=2) for _ in range(2)]
    try:
        assert jobs[0].run_dir != jobs[1].run_dir and jobs[0].log != jobs[1].log
        assert all(j.run_dir.is_dir() for j in jobs)
    finally:
        for j in jobs:
            if j.returncode is None:
                os.killpg(j.proc.pid, signal.SIGKILL)
                j.proc.wait(timeout=30)


# ---- the command ----
def test_workbench_app_serves_until_interrupted_and_refuses_a_missing_root(root, tmp_path):
    pytest.importorskip("gradio")
    import socket
    import subprocess
    import sys

    import httpx

    bad = subprocess.run(
        [sys.executable, "-m", "workbench", "app", "--runs", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "no such folder" in bad.stderr
    make_run(root, "r", protocol="single", limit=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", "app", "--runs", str(root), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line, line
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=20).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(
                f"the viewer did not stop within 90 s of SIGINT:\n{proc.stdout.read()[-2000:]}"
            ) from None


def test_every_registered_protocol_gets_a_readable_topology(root):
    """Each protocol in PROTOCOLS (new ones included) on scripted replies: task first, answer last
    and alone, no two nodes on one spot, one marker per node, one transcript box per sender."""
    from workbench.protocols import PROTOCOLS

    for name in PROTOCOLS:
        make_run(root, name, protocol=name, limit=1)
        snap = Viewer(root).snapshot(name)
        assert snap.n == 1, f"{name}: {snap.info.summary['errors']}"
        ep = Viewer(root).episode(name, 0)
        pos = layout(ep["graph"]["nodes"], ep["graph"]["edges"])
        xs = [p[0] for p in pos.values()]
        assert pos["task"][0] == min(xs), name
        if "answer" in pos:
            assert pos["answer"][0] == max(xs) and xs.count(max(xs)) == 1, name
        assert len(set(pos.values())) == len(pos), name
        fig = topology_figure(ep)
        assert sum(len(t.x) for t in fig.data if t.meta == "node") == len(pos), name
        senders = {m["sender"] for m in ep["messages"]}
        assert transcript_html(ep).count('<section class="wb-agent"') == len(senders), name


# ---- the Analysis view ----
def test_analysis_view_shows_the_figures_of_workbench_analyze(root):
    from workbench.analysis.analyze import AnalyzeOptions, analyze_run

    run = make_run(root, "demo/vote", limit=4)
    v = Viewer(root)
    before = v.analysis("demo/vote")
    assert before["figures"] == {} and "workbench analyze" in before["notices"]
    analyze_run(run, AnalyzeOptions(embed=False, png=False))
    out = v.analysis("demo/vote")
    assert {"diversity", "coverage", "credit", "agents_right"} <= set(out["figures"])
    assert "4 episodes" in out["headline"]
    (run / "analysis.json").write_text("{not json")
    assert "cannot be read" in v.analysis("demo/vote")["notices"]
    with pytest.raises(RunAccessError):
        v.analysis("../outside")
