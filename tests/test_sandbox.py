"""The sandbox's mechanics on each OS-level route this machine has (bubblewrap, and unshare with
bubblewrap forced off) and without one (refused unless the user opts in): how programs end, what
they see, limits, timeouts, the mode in force. The escape and forgery corpus is
tests/test_sandbox_escape.py.

These run real interpreters in real namespaces (no mocks); each takes tens of ms except the timeouts.
"""

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import child_pids

from workbench.tasks import sandbox
from workbench.tasks.sandbox import (
    Program,
    SandboxLimits,
    _probe,
    isolation_summary,
    require_sandbox,
    run_check,
    run_many,
    run_program,
    sandbox_mode,
)

LIMITS = SandboxLimits(timeout_s=2.0, memory_mb=512)
ROUTES = [
    pytest.param(m, marks=pytest.mark.skipif(_probe(m) is not None, reason=f"{m}: {_probe(m)}"))
    for m in ("bwrap", "unshare")
]


_CHILDREN_BEFORE: set[int] = set()


@pytest.fixture(autouse=True)
def _children_before():
    """The suite's own long-lived children (math-verify's helper), so that only new ones count."""
    global _CHILDREN_BEFORE
    _CHILDREN_BEFORE = child_pids()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fake HOME for this test process with a canary file: `rm -rf ~` must not reach it."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "canary.txt").write_text("alive")
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def sandbox_root(tmp_path) -> Path:
    root = tmp_path / "sandboxes"
    root.mkdir()
    return root


def run(code: str, root: Path, mode: str, **kw) -> sandbox.SandboxResult:
    return run_program(code, limits=kw.pop("limits", LIMITS), tmp_root=str(root), mode=mode, **kw)


def assert_unharmed(home: Path, root: Path, cwd: str) -> None:
    assert (home / "canary.txt").read_text() == "alive"
    assert sorted(home.iterdir()) == [home / "canary.txt"]
    assert os.getcwd() == cwd
    assert list(root.iterdir()) == []  # the parent's (already deleted) files are gone
    assert child_pids() <= _CHILDREN_BEFORE, "a sandbox process outlived its run"  # zombies count too


def destructive_programs(home: Path, outside: Path) -> dict[str, str]:
    """Programs that damage whatever they can reach. Under kernel isolation some of them run to
    their end (rm -rf ~ empties the sandbox's own /tmp): what matters is that nothing outside changes."""
    canary = home / "canary.txt"
    return {
        "subprocess rm -rf ~": "import subprocess\nsubprocess.run(['sh', '-c', 'rm -rf ~'])",
        "os.system rm -rf home by path": f"import os\nos.system('rm -rf {home}')",
        "shutil.rmtree home": f"import shutil\nshutil.rmtree({str(home)!r}, ignore_errors=True)",
        "os.remove canary": f"import os\nos.remove({str(canary)!r})",
        "overwrite canary": f"open({str(canary)!r}, 'w').write('pwned')",
        "write outside": f"open({str(outside)!r}, 'w').write('escaped')",
        "multiprocessing": "import multiprocessing\np = multiprocessing.Process(target=print)\np.start()\np.join()",
        "kill the parent": "import os\nos.kill(os.getppid(), 9)",
        "raise the memory limit": "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))",
    }


@pytest.mark.parametrize("mode", ROUTES)
def test_destructive_programs_change_nothing_outside(mode, home, sandbox_root, tmp_path):
    outside = tmp_path / "outside.txt"
    cwd = os.getcwd()
    for name, code in destructive_programs(home, outside).items():
        r = run(code, sandbox_root, mode)
        assert r.status in ("passed", "failed"), (name, r)
        assert_unharmed(home, sandbox_root, cwd)
        assert not outside.exists(), name


@pytest.mark.parametrize("mode", ROUTES)
@pytest.mark.parametrize(
    "code, status",
    [
        ("while True:\n    pass", "timeout"),
        ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", "timeout"),
        ("x = bytearray(4 * 2**30)", "failed"),
        ("x = []\nwhile True:\n    x.append(' ' * 2**20)", "failed"),
        ("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", "failed"),
        ("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)", "failed"),
        ("open('/usr/wb-sandbox-test', 'w')", "failed"),
    ],
)
def test_limits_hold(mode, code, status, home, sandbox_root):
    r = run(code, sandbox_root, mode)
    # (on a loaded machine, filling 512 MiB can take longer than the 2 s timeout: still not a pass)
    assert (r.status == status or (status, r.status) == ("failed", "timeout")) and r.message, r
    assert len(r.stdout) <= LIMITS.file_size_mb * 2**20
    assert_unharmed(home, sandbox_root, os.getcwd())


@pytest.mark.parametrize("mode", ROUTES)
def test_timeouts_kill_the_whole_namespace(mode, sandbox_root, home):
    code = (
        "import os, threading\n"
        "if os.fork() == 0:\n    os.setsid()\n    while True: pass\n"
        "threading.Thread(target=lambda: [0 for _ in iter(int, 1)]).start()\nwhile True: pass"
    )
    r = run(code, sandbox_root, mode)
    assert r.status == "timeout" and "2 s" in r.message
    assert_unharmed(home, sandbox_root, os.getcwd())
    if os.geteuid() == 0:  # the per-run uid owns no process any more (the setsid child included)
        uid = sandbox.ISSUED_UIDS[-1]
        assert [p for p in os.listdir("/proc") if p.isdigit() and _uid_of(p) == uid] == []


def _uid_of(pid: str) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return -1


@pytest.mark.parametrize("mode", ROUTES)
@pytest.mark.parametrize(
    "code, fragment",
    [
        ("open('/etc/passwd_wb', 'w')", "Read-only file system"),
        ("x = bytearray(4 * 2**30)", "MemoryError"),
        ("import sys\nsys.exit(0)", "exited before its end"),
        ("import os\nos._exit(3)", "exited with code 3"),
        ("def f(:\n", "SyntaxError"),
        ("assert 1 == 2, 'nope'", "AssertionError: nope (line 1)"),
    ],
)
def test_failure_messages_say_why(mode, code, fragment, sandbox_root):
    r = run(code, sandbox_root, mode)
    assert r.status == "failed" and fragment in r.message, r


@pytest.mark.parametrize("mode", ROUTES)
def test_ordinary_programs_pass(mode, sandbox_root):
    code = textwrap.dedent(
        """
        import collections, json, os, subprocess, tempfile, threading
        from typing import List
        P = collections.namedtuple("P", "a b")
        with open("scratch.txt", "w") as f:          # the private /tmp is writable
            f.write("x")
        assert os.environ["HOME"] == os.getcwd() == tempfile.gettempdir() == "/tmp"
        assert "HF_TOKEN" not in os.environ and "PATH" in os.environ
        t = threading.Thread(target=print, args=("thread",)); t.start(); t.join()
        assert subprocess.run(["true"]).returncode == 0  # child processes work inside
        import numpy                                     # the venv's packages are importable
        print(json.dumps([P(1, 2).a, sorted(os.listdir("."))]))
        """
    )
    r = run(code, sandbox_root, mode)
    assert r.passed and r.status == "passed" and r.message == "", r
    # a read-only system path under /tmp (a venv in a checkout there) is bound at its own path, so
    # its first folder shows in the private /tmp too; nothing else of the host does
    shown = sorted({"scratch.txt"} | {p.split("/")[2] for p in sandbox._ro_paths() if p.startswith("/tmp/")})
    assert r.stdout == "thread\n" + json.dumps([1, shown]) + "\n"


@pytest.mark.parametrize("mode", ROUTES)
def test_stdin_exit_ok_and_as_main(mode, sandbox_root):
    code = "import sys\nn = int(input())\nprint(sum(map(int, sys.stdin.read().split())) * n)\nsys.exit(0)"
    r = run(code, sandbox_root, mode, stdin="2\n1 2 3\n", as_main=True, exit_ok=True)
    assert r.passed and r.stdout == "12\n"
    assert not run(code, sandbox_root, mode, stdin="2\n1 2 3\n").passed  # exit_ok=False
    assert run("import sys\nsys.exit(1)", sandbox_root, mode, as_main=True, exit_ok=True).status == "failed"
    code = "if __name__ == '__main__':\n    print('main')\nelse:\n    print(__name__)"
    assert run(code, sandbox_root, mode, as_main=True).stdout == "main\n"
    assert run(code, sandbox_root, mode).stdout == "__solution__\n"


@pytest.mark.parametrize("mode", ROUTES)
def test_run_check_passes_plain_values_only(mode, sandbox_root):
    tester = (
        "def check(candidate):\n"
        "    assert candidate(2, k=3) == (2, 3)\n"
        "    assert candidate([1.5, None], k={'a': {1, 2}}) == ([1.5, None], {'a': {1, 2}})\n"
        "    assert candidate(10**5000, k=b'x') == (10**5000, b'x')\n"
    )
    kw = {"limits": LIMITS, "tmp_root": str(sandbox_root), "mode": mode}
    assert run_check("def f(x, k):\n    return (x, k)\n", "f", tester, **kw).passed
    wrong = run_check("def f(x, k):\n    return [x, k]\n", "f", tester, **kw)  # a list is not a tuple
    assert wrong.status == "failed" and "AssertionError" in wrong.message
    missing = run_check("def g(x, k):\n    return (x, k)\n", "f", tester, **kw)
    assert missing.status == "failed" and "does not define f" in missing.message
    crash = run_check("def f(x, k):\n    raise KeyError('boom')\n", "f", tester, **kw)
    assert crash.status == "failed" and "KeyError: 'boom'" in crash.message
    slow = run_check("def f(x, k):\n    while True: pass\n", "f", tester, **kw)
    assert slow.status == "timeout"
    assert list(sandbox_root.iterdir()) == []


def test_run_many_keeps_order():
    programs = [Program(f"print({i})") for i in range(4)]
    results = run_many(programs, LIMITS, workers=2)
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(4)]
    assert all(r.passed for r in results)


def test_sandbox_errors_are_results_not_exceptions(tmp_path):
    r = run_program("print(1)", tmp_root=str(tmp_path / "does-not-exist"))
    assert r.status == "error" and "temporary file" in r.message
    r = run_program("print(1)", mode="nonsense")
    assert r.status == "error" and "WORKBENCH_SANDBOX must be" in r.message


def test_limits_are_validated():
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxLimits(timeout_s=0)
    with pytest.raises(ValueError, match="tmp_mb"):
        SandboxLimits(tmp_mb=0)


def test_the_mode_in_force_is_recorded(monkeypatch):
    summary = isolation_summary()
    assert summary["mode"] == sandbox_mode() and summary["mode"] in ("bwrap", "unshare", "none")
    assert summary["kernel_isolation"] == (summary["mode"] != "none")
    if shutil.which("bwrap") and _probe("bwrap") is None:
        assert sandbox_mode() == "bwrap"  # preferred where it works
    monkeypatch.setenv("WORKBENCH_SANDBOX", "unshare")  # bubblewrap forced off
    assert isolation_summary()["mode"] == ("unshare" if _probe("unshare") is None else "none")
    monkeypatch.setenv("WORKBENCH_SANDBOX", "none")
    assert isolation_summary()["mode"] == "none" and isolation_summary()["audit_guard"] is True


def test_without_an_os_sandbox_code_is_refused_unless_opted_in(monkeypatch, sandbox_root, home):
    monkeypatch.setenv("WORKBENCH_SANDBOX", "none")
    r = run("print(1)", sandbox_root, None)
    assert r.status == "error" and "task.allow_unsandboxed=true" in r.message and "bubblewrap" in r.message
    with pytest.raises(ValueError, match="allow_unsandboxed"):
        require_sandbox()
    with pytest.warns(RuntimeWarning, match="allow_unsandboxed"):
        sandbox._warn_unsandboxed.cache_clear()
        assert require_sandbox(allow_unsandboxed=True) == "none"
    # opted in: the in-process guard is the only layer left, and still refuses the obvious
    r = run("print(1)", sandbox_root, None, allow_unsandboxed=True)
    assert r.passed and r.stdout == "1\n"
    r = run("import os\nos.system('rm -rf ~')", sandbox_root, None, allow_unsandboxed=True)
    assert r.status == "failed" and "os.system" in r.message
    r = run(f"open({str(home / 'canary.txt')!r}, 'w')", sandbox_root, None, allow_unsandboxed=True)
    assert r.status == "failed" and "outside the working directory" in r.message
    assert (home / "canary.txt").read_text() == "alive"
    assert list(sandbox_root.iterdir()) == []


UNPRIVILEGED = textwrap.dedent(
    """
    import importlib.util, json, os, sys
    spec = importlib.util.spec_from_file_location("sandbox", sys.argv[1])  # stdlib only: no venv needed
    sandbox = sys.modules["sandbox"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sandbox)
    limits = sandbox.SandboxLimits(timeout_s=3, memory_mb=512)
    assert os.geteuid() != 0
    print("mode", sandbox.sandbox_mode())
    probe = "import os; s = open('/proc/self/status').read(); print(os.getuid(), s.split('CapEff:')[1].split()[0])"
    r = sandbox.run_program(probe, limits=limits)
    print("who", r.status, r.stdout.strip().replace(" ", ","))
    r = sandbox.run_program("import os\\nwhile True:\\n    os.fork()", limits=limits)
    print("forkbomb", r.status)
    r = sandbox.run_program("import socket\\nsocket.create_connection(('1.1.1.1', 80), timeout=1)", limits=limits)
    print("socket", r.status)
    r = sandbox.run_program("open('/tmp/x', 'w').write('x'); print(open('/tmp/x').read())", limits=limits)
    print("tmp", r.status)
    """
)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
@pytest.mark.parametrize("route", ["bwrap", "unshare"])
def test_as_an_unprivileged_user(route):
    """The same sandbox run by an ordinary user (nobody), on each route: a user namespace instead
    of a uid switch, no capabilities (securebits + an empty bounding set on the unshare route),
    hostile code still fails."""
    # The venv's interpreter may live where nobody cannot read it (here: under /root); the system
    # Python runs the stdlib-only sandbox module just as well.
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 for the unprivileged user")
    sandbox_py = Path(__file__).resolve().parents[1] / "workbench" / "tasks" / "sandbox.py"
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", UNPRIVILEGED]
    if shutil.which(route) is None:
        pytest.skip(f"{route} is not installed")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "WORKBENCH_SANDBOX": route}
    proc = subprocess.run(
        [*cmd, str(sandbox_py)], capture_output=True, text=True, timeout=60, env=env, cwd="/"
    )
    if proc.returncode != 0 and "Permission denied" in proc.stderr:
        pytest.skip(f"nobody cannot run this interpreter: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    if lines["mode"] == "none":
        pytest.skip(f"{route}: no user namespaces for ordinary users on this kernel")
    assert lines["mode"] == route
    status, who = lines["who"].split()
    # nobody outside; inside, bwrap keeps the uid and unshare's user namespace maps it to root
    assert status == "passed" and who == ("65534" if route == "bwrap" else "0") + ",0000000000000000"
    assert lines["forkbomb"] in ("failed", "timeout")
    assert lines["socket"] == "failed"
    assert lines["tmp"] == "passed"
