"""The viewer against hostile input: the Launch form starts only what it shows, the app asks for a
token beyond loopback, and no run folder (wrong types, deep nesting, binary, torn lines, FIFOs,
link loops, links out of the root, names that are not text) stops the listing, the tail, the
figures, the compare view or the app's start-up.

Fixture runs come from the real protocols through `run_eval` with a scripted backend (see
test_viewer.py); the broken ones are the same files, damaged on disk.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_viewer import debate_episode, make_run  # tests/ is on sys.path under pytest

from workbench.cli import build_parser
from workbench.config import ConfigError, parse_overrides
from workbench.viewer import (
    RunAccessError,
    Viewer,
    counters,
    filter_entries,
    topology_figure,
    transcript_html,
)
from workbench.viewer.launch import Launcher, build_argv, settable_keys
from workbench.viewer.store import EpisodeTail, RunsRoot, coerce_episode

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---- the Launch form ----
def _parsed(argv: list[str]):
    """What the real CLI reads from the launcher's command line (python -m workbench eval ...)."""
    assert argv[1:4] == ["-m", "workbench", "eval"]
    return build_parser().parse_args(argv[3:])


HOSTILE_SETS = [
    "--task=jsonl:/etc/passwd --out=/elsewhere",
    "--out=/elsewhere",
    "-x",
    "protocol.n=3 --task jsonl:/etc/passwd",
    "'--task=jsonl:/etc/passwd'",
    "models.x.name=openai:http://HOST/v1#m models.x.api_key_env=HOME",
    "models.x.api_key_env=HOME",
    "model.api_key_env=HOME",
    "model.name=openai:http://HOST/v1#m",
    "team.a.model=x",
    "team.a.temperature=0.5",
    "task.name=jsonl:/etc/passwd",
    "task.limit=100000000",
    "task.question_field=q",
    "out=/elsewhere",
    "seed=3",
    "protocol.name=vote",
    "protocol.options=5",
    "protocol.members=default,evil",
    "protocol.n=3 protocol.n=4",
    "protocol.n=3\nout=/elsewhere",
    "protocol.n=3\x00",
    "protocol.n=3\r--out=/x",
    "protocol.system=a\u202eb",
    "protocol.system=a\u200bb",
    "protocol.n=3\u2028out=/x",
    "ｐrotocol.n=3",  # a full-width p
    "protocol.n\u0338=3",
    "PROTOCOL.N=3",
    "protocol..n=3",
    "protocol.n.x=3",
    "protocol.n",
    "=3",
    "protocol.n=10000000",
    "protocol.n=-1",
    "protocol.temperature=nan",
    "protocol.temperature=inf",
    "protocol.max_tokens=" + "9" * 5000,
    "protocol.system=" + "x" * 3000,
    "protocol.n=3 " * 40,
    "x" * 9000,
    "model.dtype=../../evil",
    "max_in_flight=0",
    "budget.max_calls=0",
    "protocol.n='3",
]


@pytest.mark.parametrize("extra", HOSTILE_SETS)
def test_launch_refuses_every_hostile_set_field_and_starts_nothing(tmp_path, extra):
    root = tmp_path / "runs"
    launcher = Launcher(root)
    with pytest.raises(ConfigError) as e:
        launcher.start("arithmetic", "vote", "smollm2", 3, extra_set=extra)
    assert "\n" not in str(e.value) and len(str(e.value)) < 1000
    assert launcher.jobs == [] and not root.exists()  # no folder, no log, no process


@pytest.mark.parametrize(
    "field",
    [
        dict(task="jsonl:/etc/passwd"),
        dict(task="arithmetic --out=/x"),
        dict(task=None),
        dict(protocol="../../x"),
        dict(protocol="vote\x00"),
        dict(model="openai:http://HOST/v1#m"),
        dict(model="vllm:x"),
        dict(model="smollm2+/tmp/adapter"),
        dict(model="--task=jsonl:/etc/passwd"),
        dict(model="/etc"),
        dict(model="../../secret"),
        dict(model="localmodel"),  # a local folder (made below, in the working directory)
        dict(model="a" * 300),
        dict(limit=float("inf")),
        dict(limit=float("nan")),
        dict(limit="3; rm -rf /"),
        dict(limit=10**12),
        dict(limit=0),
        dict(limit=True),
        dict(seed=-1),
        dict(seed=2.5),
        dict(split="../test"),
        dict(extra_set=["protocol.n=3"]),
    ],
)
def test_launch_refuses_hostile_form_fields(tmp_path, monkeypatch, field):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "localmodel").mkdir()
    args = dict(task="arithmetic", protocol="single", model="smollm2", limit=3) | field
    root = tmp_path / "runs"
    launcher = Launcher(root)
    with pytest.raises(ConfigError):
        launcher.start(**args)
    assert launcher.jobs == [] and not root.exists()


def test_an_accepted_form_parses_back_to_exactly_what_it_shows(tmp_path):
    out = tmp_path / "runs" / "r"
    extra = "protocol.n=3 'protocol.system=-x --out=/elsewhere --task=jsonl:/etc/passwd' budget.max_calls=9"
    argv = build_argv(
        out, "arithmetic", "vote", "HuggingFaceTB/SmolLM2-135M", 3, "dev", 7, extra + " task.digits=2"
    )
    args = _parsed(argv)
    assert (args.task, args.protocol, args.model, args.limit, args.split, args.seed, args.out) == (
        "arithmetic", "vote", "HuggingFaceTB/SmolLM2-135M", 3, "dev", 7, str(out)
    )  # fmt: skip
    sets = parse_overrides(args.set)
    assert sets["protocol"]["system"] == "-x --out=/elsewhere --task=jsonl:/etc/passwd"  # a value, not flags
    assert set(sets) == {"protocol", "budget", "task"}


@FUZZ
@given(
    text=st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "protocol.n=3",
                    "protocol.temperature=0.5",
                    "budget.max_calls=4",
                    "--out=/x",
                    "--task=jsonl:/x",
                    "models.m.name=openai:h#m",
                    "team.t.model=m",
                    "model.api_key_env=HOME",
                    "out=/x",
                    "'",
                    '"',
                    "\n",
                    "\x00",
                    "\u202e",
                    "=",
                    "--",
                    "-",
                    "protocol.system=",
                    " ",
                    "task.digits=2",
                    "protocol.n=3",
                ]
            ),  # fmt: skip
            st.text(max_size=12),
        ),
        max_size=8,
    ).map("".join),
    protocol=st.sampled_from(["single", "vote", "leader", "conductor"]),
)
def test_fuzz_set_field_starts_only_allowlisted_keys(tmp_path, text, protocol):
    """Any text in the --set field: a one-line ConfigError, or a command line whose parse has the form's
    task, model and run folder and only allowlisted keys."""
    out = tmp_path / "r"
    try:
        argv = build_argv(out, "arithmetic", protocol, "smollm2", 2, extra_set=text)
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    args = _parsed(argv)
    assert (args.task, args.model, args.out, args.limit) == ("arithmetic", "smollm2", str(out), 2)
    allowed = set(settable_keys("arithmetic", protocol))
    assert all(item.partition("=")[0] in allowed for item in args.set or [])
    assert all(not a.startswith("-") for a in args.set or [])


# ---- the token beyond loopback ----
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_asks_for_a_token_beyond_loopback_and_not_on_it(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    import httpx

    from workbench.viewer import load_app

    module = load_app()
    assert module.is_loopback("127.0.0.1") and module.is_loopback("::1") and module.is_loopback("localhost")
    assert not any(module.is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.org", ""))
    monkeypatch.setenv(module.TOKEN_ENV, "short")
    with pytest.raises(ConfigError, match=module.TOKEN_ENV):
        module.access_token("0.0.0.0")
    monkeypatch.delenv(module.TOKEN_ENV)
    assert module.access_token("127.0.0.1") is None
    assert module.access_token("0.0.0.0") != module.access_token("0.0.0.0")  # a fresh secret each start
    with pytest.raises(ConfigError, match="--port"):
        module.serve(tmp_path, "127.0.0.1", 70000, block=False)
    make_run(tmp_path, "r", protocol="single", limit=1)
    apps = []
    try:
        port = _free_port()
        app, _ = module.serve(tmp_path, "0.0.0.0", port, block=False)
        apps.append(app)
        base = f"http://127.0.0.1:{port}"
        assert app.token and len(app.token) >= 16
        for path in ("/config", "/gradio_api/info", "/gradio_api/file=/etc/passwd"):
            assert httpx.get(base + path, timeout=20).status_code == 401, path
        assert (
            httpx.post(base + "/gradio_api/call/episodes", json={"data": ["r"]}, timeout=20).status_code
            == 401
        )
        with httpx.Client(base_url=base, timeout=20) as c:
            assert (
                c.post("/login", data={"username": "workbench", "password": app.token + "x"}).status_code
                != 200
            )
            assert c.get("/config").status_code == 401
            assert c.post("/login", data={"username": "workbench", "password": app.token}).status_code == 200
            assert c.get("/config").status_code == 200
        port = _free_port()
        app, _ = module.serve(tmp_path, "127.0.0.1", port, block=False)
        apps.append(app)
        assert app.token is None
        assert httpx.get(f"http://127.0.0.1:{port}/config", timeout=20).status_code == 200
    finally:
        for app in apps:
            app.close()


# ---- a corpus of broken runs ----
BAD_LINES: list[tuple[str, bytes]] = [
    ("graph.nodes of strings", {"graph": {"nodes": ["x"], "edges": []}}),
    ("usage.calls a string", {"usage": {"calls": "3", "prompt_tokens": 1, "completion_tokens": 1, "wall_s": 0}}),
    ("a message that is a string", {"messages": ["hello"]}),
    ("a message sender that is a list", {"messages": [{"id": 0, "round": 0, "sender": ["a"], "receivers": [],
                                                       "role": "agent", "content": "x", "completion_tokens": 1}]}),
    ("question a number-list", {"question": [1, 2]}),
    ("gold null", {"gold": None}),
    ("reward a string", {"reward": "1.0"}),
    ("completion_tokens huge", {"usage": {"calls": 1, "prompt_tokens": 1, "completion_tokens": 10**30, "wall_s": 0}}),
    ("edges of numbers", {"graph": {"nodes": [], "edges": [1, 2]}}),
    ("edge source a dict", {"graph": {"nodes": [], "edges": [{"source": {}, "target": "answer", "round": 0}]}}),
    ("node id a list", {"graph": {"nodes": [{"id": ["a"]}], "edges": []}}),
    ("meta a list", {"meta": [1]}),
    ("advantage a string", {"meta": {"train_step": 1, "advantage": "big"}}),
    ("train_step a float", {"meta": {"train_step": 1.5}}),
    ("wall_s infinite", {"usage": {"calls": 1, "prompt_tokens": 1, "completion_tokens": 1, "wall_s": 1e400}}),
    ("index a string", {"index": "0"}),
    ("correct a string", {"correct": "yes"}),
    ("messages an object", {"messages": {"a": 1}}),
    ("usage a list", {"usage": [1, 2, 3, 4]}),
]  # fmt: skip
RAW_LINES = [
    b"[" * 100_000 + b"]" * 100_000,  # deep nesting: RecursionError in json.loads
    b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
    b"\x00\xff\xfe binary \x80\x81 garbage",
    b"\xff" * 64,
    b'{"schema": "workbench.episode/1", "n": ' + b"9" * 5000 + b"}",  # an int over Python's digit limit
    b"NaN",
    b"[]",
    b"null",
    b'"a string"',
    b'{"schema": 5}',
    b'{"torn": ',
]


def _good_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()]


def broken_root(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """A runs root holding one good run and every kind of broken one; returns (root, expected good episodes)."""
    root = tmp_path / "runs"
    root.mkdir()
    good = make_run(root, "good", limit=3)
    base = _good_lines(good)[0]
    expect = {"good": 3}
    # wrong types, line by line, between good lines
    typed = make_run(root, "wrong-types", limit=2)
    lines = [json.dumps(line).encode() for line in _good_lines(typed)]
    for _, patch in BAD_LINES:
        lines.insert(1, json.dumps(base | patch).encode())
    lines += RAW_LINES[:-1]
    (typed / "episodes.jsonl").write_bytes(b"\n".join(lines) + b"\n" + RAW_LINES[-1])
    expect["wrong-types"] = 2
    # config.yaml / summary.json broken in every way
    for i, (config, summary) in enumerate(
        [
            (b"task: [unclosed", b"{not json"),
            (b"- a list\n- at the top", b"[1, 2]"),
            (b"date: 2026-13-45\n", b'{"planned": "3", "interrupted": "yes", "n": [1]}'),
            (b"[" * 10_000, b"[" * 100_000),
            (
                b"".join(b"k%d: " % i + b"[" * 900 + b"]" * 900 + b"\n" for i in range(40)),
                b"{}",
            ),  # slow to parse
            (b"\xff\xfe\x00binary", b"\xff\xfe\x00binary"),
            (b"task: {limit: 1e999, name: [1]}", b'{"task": {"x": 1}, "protocol": 5, "planned": true}'),
        ]
    ):
        run = make_run(root, f"files-{i}", limit=1)
        (run / "config.yaml").write_bytes(config)
        (run / "summary.json").write_bytes(summary)
        expect[f"files-{i}"] = 1
    # special files and links
    fifo = make_run(root, "fifo", limit=1)
    (fifo / "summary.json").unlink()
    os.mkfifo(fifo / "summary.json")  # opening it for reading would block
    (fifo / "config.yaml").unlink()
    os.mkfifo(fifo / "config.yaml")
    expect["fifo"] = 1
    fifo_eps = make_run(root, "fifo-episodes", limit=1)
    (fifo_eps / "episodes.jsonl").unlink()
    os.mkfifo(fifo_eps / "episodes.jsonl")
    expect["fifo-episodes"] = 0
    loop = make_run(root, "loop", limit=1)
    (loop / "episodes.jsonl").unlink()
    (loop / "episodes.jsonl").symlink_to("episodes.jsonl")  # a link loop: listed as refused
    dir_eps = make_run(root, "dir-episodes", limit=1)
    (dir_eps / "episodes.jsonl").unlink()
    (dir_eps / "episodes.jsonl").mkdir()
    expect["dir-episodes"] = 0
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    leak = make_run(root, "leak", limit=1)
    (leak / "episodes.jsonl").unlink()
    (leak / "episodes.jsonl").symlink_to(outside / "secret.txt")
    (root / "linked-run").symlink_to(good)  # folder links are not followed
    (root / "linked-out").symlink_to(outside)
    (root / "a-file").write_text("not a folder")
    os.makedirs(os.path.join(os.fsencode(root), b"name-\xff-not-utf8"))
    make_run(Path(os.fsdecode(os.path.join(os.fsencode(root), b"name-\xff-not-utf8"))), "r", limit=1)
    only_summary = root / "only-summary"
    only_summary.mkdir()
    (only_summary / "summary.json").write_text('{"n": 3}')
    expect["only-summary"] = 0
    analysis = make_run(root, "bad-analysis", limit=1)
    (analysis / "analysis.json").write_bytes(b'{"problems": 5, "accuracy": [1], "n": "x"}')
    expect["bad-analysis"] = 1
    return root, expect


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """One corpus of broken runs for the tests below (they only read it)."""
    return broken_root(tmp_path_factory.mktemp("broken"))


def test_no_broken_run_stops_the_listing_tail_figures_or_compare(broken):
    root, expect = broken
    v = Viewer(root)
    names = v.run_names()
    assert set(expect) <= set(names) and "leak" in names
    assert not any("linked" in n or "not-utf8" in n for n in names)
    assert v.root.unlisted  # the folder whose name is not text is named as skipped
    rows = {r[0]: r for r in v.runs_table()}
    assert rows["leak"][1].startswith("refused") and rows["loop"][1].startswith("refused")
    for name, n in expect.items():
        snap = v.snapshot(name)
        assert snap.n == n, (name, snap.problems)
        v.live(name)
        assert len(v.episode_rows(name, "all", "answer")) <= n
        for outcome in ("all", "correct", "wrong", "format failure"):
            v.episode_rows(name, outcome)
        for pos in range(n):
            v.episode_view(name, pos)
        v.analysis(name)
    skipped = len(BAD_LINES) + len(RAW_LINES) - 1
    snap = v.snapshot("wrong-types")
    assert f"episodes.jsonl: {skipped} malformed lines skipped" in snap.problems
    assert any("unterminated" in p for p in snap.problems)  # the torn last line
    details = v._tails["wrong-types"].problems  # the first 20 skipped lines, one by one
    assert len(details) == 20 and all("\n" not in p and p.endswith("skipped") for p in details)
    assert any("node" in p for p in details) and any("usage" in p for p in details)
    assert any("not a regular file" in p for p in v.snapshot("fifo").info.problems)
    assert "cannot be read" in v.analysis("bad-analysis")["notices"] or v.analysis("bad-analysis")["headline"]
    c = v.compare(list(expect))
    assert c["summary"][0][0] == "good"
    v.compare_item(list(expect)[:4], c["grid"][0][0])
    for name in ("leak", "loop"):
        with pytest.raises(RunAccessError):
            v.snapshot(name)
    with pytest.raises(RunAccessError):
        v.snapshot("linked-out")


def test_the_app_starts_on_a_root_of_broken_runs(broken):
    pytest.importorskip("gradio")
    from workbench.viewer import load_app

    root, expect = broken
    app = load_app().build_app(root)
    assert {r[0] for r in app.viewer.runs_table()} >= set(expect)


def test_a_file_as_root_and_a_growing_torn_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        RunsRoot(tmp_path / "f")
    root, _ = tmp_path / "runs", None
    run = make_run(root, "r", limit=2)
    path = run / "episodes.jsonl"
    good = path.read_bytes()
    path.write_bytes(good + b'{"half": ')
    tail = EpisodeTail(RunsRoot(root), "r")
    assert len(tail.poll()) == 2 and tail.torn_tail()
    with open(path, "ab") as f:
        f.write(b"1}\n" + good.splitlines(keepends=True)[0])
    assert len(tail.poll()) == 1 and tail.skipped == 1 and tail.torn_tail() is None
    path.write_bytes(b"\xff\n" * 3)  # replaced by a shorter file: read again from the start
    assert tail.poll() == [] and tail.skipped == 3 and tail.entries == []


# ---- fuzz: episode lines of any shape ----
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
EPISODE = debate_episode(meta={"train_step": 1, "advantage": 0.5, "node_advantage": {"a": 1.0}})
FIELDS = sorted(set(EPISODE) | {"index"})


def _mutate(base: dict, draws: list) -> dict:
    d = json.loads(json.dumps(base))
    for path, value in draws:
        node = d
        for key in path[:-1]:
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and node and isinstance(key, int):
                node = node[key % len(node)]
        last = path[-1]
        if isinstance(node, dict):
            node[last if isinstance(last, str) else str(last)] = value
        elif isinstance(node, list) and node:
            node[last % len(node) if isinstance(last, int) else 0] = value
    return d


paths = st.lists(
    st.one_of(st.sampled_from(FIELDS), st.sampled_from(["nodes", "edges", "id", "sender", "round", "calls",
                                                        "source", "target", "content", "extracted", "label",
                                                        "receivers", "node_advantage", "advantage"]),
              st.integers(0, 6)),
    min_size=1, max_size=4,
)  # fmt: skip


@settings(FUZZ, max_examples=100)
@given(draws=st.lists(st.tuples(paths, json_values), min_size=1, max_size=5))
def test_fuzz_episode_lines_never_raise_in_the_viewer(tmp_path, draws):
    """A valid episode with random fields replaced by random JSON: the tail keeps or skips the line,
    and the figures, transcript and counters draw whatever they are given."""
    d = _mutate(EPISODE, draws)
    clean, problems = coerce_episode(d)
    topology_figure(d)
    transcript_html(d)
    topology_figure(clean)
    root = tmp_path / "runs"
    run = root / "r"
    run.mkdir(parents=True, exist_ok=True)
    line = json.dumps(d, allow_nan=True).encode()
    (run / "episodes.jsonl").write_bytes(json.dumps(EPISODE).encode() + b"\n" + line + b"\n")
    v = Viewer(root)
    snap = v.snapshot("r")
    assert snap.n in (1, 2) and snap.n + v._tails["r"].skipped == 2
    counters(snap.entries, snap.info.planned)
    filter_entries(snap.entries, "wrong")
    v.live("r")
    v.runs_table()
    v.episode_rows("r", "all", "2")
    for pos in range(snap.n):
        v.episode_view("r", pos)
    v.compare(["r", "r"])


@FUZZ
@given(lines=st.lists(st.binary(max_size=60), min_size=1, max_size=6))
def test_fuzz_raw_bytes_never_raise_in_the_tail(tmp_path, lines):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True, exist_ok=True)
    (run / "episodes.jsonl").write_bytes(b"\n".join(lines))
    (run / "summary.json").write_bytes(lines[0])
    (run / "config.yaml").write_bytes(lines[-1])
    v = Viewer(tmp_path / "runs")
    snap = v.snapshot("r")
    assert snap.n == 0
    v.live("r")
    v.runs_table()


def test_the_served_app_answers_every_view_of_broken_runs_and_refuses_a_hostile_launch(broken):
    """Through the running app's own HTTP API (gradio_client, as a page or a script would call it)."""
    pytest.importorskip("gradio")
    gradio_client = pytest.importorskip("gradio_client")
    from workbench.viewer import load_app

    root, expect = broken
    port = _free_port()
    app, _ = load_app().serve(root, "127.0.0.1", port, block=False)
    try:
        c = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        for name in [*expect, "leak", "loop"]:
            notices = c.predict(name, "all", "", api_name="/episodes")[0]
            assert ("refused" in notices) == (name in ("leak", "loop")), name
            c.predict(name, False, api_name="/live_tick")
            c.predict(name, api_name="/show_analysis")
        assert "malformed lines skipped" in c.predict("wrong-types", "all", "", api_name="/episodes")[0]
        c.predict(list(expect), api_name="/compare")
        before = sorted(p.name for p in root.iterdir())
        status, _ = c.predict(
            "arithmetic", "single", "smollm2", 2, "test", 0, "--task=jsonl:/etc/passwd --out=/elsewhere",
            api_name="/start",
        )  # fmt: skip
        assert "cannot be set from the viewer" in status
        assert sorted(p.name for p in root.iterdir()) == before and app.launcher.jobs == []
    finally:
        app.close()


def test_workbench_app_beyond_loopback_prints_the_token_it_asks_for(tmp_path):
    pytest.importorskip("gradio")
    import signal
    import subprocess
    import sys

    import httpx

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_APP_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", "app", "--runs", str(tmp_path), "--host", "0.0.0.0", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        assert f":{port}" in proc.stdout.readline()
        notice = proc.stdout.readline()
        assert "asks for a login" in notice and "user workbench" in notice, notice
        token = notice.split("token ")[1].split()[0]
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/config", timeout=20).status_code == 401
        with httpx.Client(base_url=base, timeout=20) as c:
            assert c.post("/login", data={"username": "workbench", "password": token}).status_code == 200
            assert c.get("/config").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
