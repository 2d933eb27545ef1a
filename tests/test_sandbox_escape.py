"""The escape and forgery corpus: every attempt below runs as a model's HumanEval-style answer
through `run_check`, on each OS-level route this machine has (bubblewrap, and unshare with
bubblewrap forced off). Each attempt tries to break out (native calls, fd-relative file calls,
/proc, signals, ptrace, links, mounts, privileges, floods) or to find or forge the verdict (the
expected value lives in the tester, in this process's environment and in a sentinel file). Every
one must fail, and leave the sentinel tree, the host's /tmp, HOME, venv and checkout, and the
process table exactly as they were.

Real sandboxes, no mocks; most attempts take tens of ms, the floods up to their 1.5 s timeout.
"""

import json
import os
import secrets
import socket
import sysconfig
import textwrap
from pathlib import Path

import pytest
from conftest import child_pids

from workbench.tasks.sandbox import (
    ISSUED_UIDS,
    UID_BASE,
    UID_SPAN,
    SandboxLimits,
    _probe,
    run_check,
    run_program,
)

ROUTES = [
    pytest.param(m, marks=pytest.mark.skipif(_probe(m) is not None, reason=f"{m}: {_probe(m)}"))
    for m in ("bwrap", "unshare")
]
LIMITS = SandboxLimits(timeout_s=1.5, memory_mb=256, file_size_mb=2, tmp_mb=8, max_processes=16)
SECRET = 10**12 + secrets.randbelow(10**12)  # the expected answer: only the tester holds it
TOKEN = secrets.token_hex(6)
VENV_FILE = Path(sysconfig.get_paths()["purelib"]) / "yaml" / "__init__.py"  # an installed file, read-only

TESTER = f"def check(candidate):\n    assert candidate(7) == {SECRET}\n"

# Prepended to every attempt: `hunt(text)` records any copy of the secret the attempt manages to
# read (the tester's source, this process's environment, the sentinel file), and `solve` answers
# with it, so an attempt that reads anything it must not passes, and fails the test.
PRELUDE = textwrap.dedent(
    r"""
    import os, re, sys
    _FOUND = []
    _RE = re.compile(r"candidate\(7\) == (\d+)|WB_ESCAPE_SECRET=(\d+)|secret:(\d+)")
    def hunt(text):
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("latin-1")
        for m in _RE.finditer(str(text)):
            _FOUND.append(int(next(g for g in m.groups() if g)))
    def attempt(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BaseException as e:
            return e
    def read(path):
        with open(path, "rb") as f:
            hunt(f.read(1 << 20))
    def solve(x):
        return _FOUND[0] if _FOUND else -1
    """
)


def attempts(sentinel: Path, home: Path, port: int) -> dict[str, str]:
    s, a = sentinel, sentinel / "a.txt"
    markers = f"/tmp/wb-escape-{TOKEN} {home}/wb-escape-{TOKEN} /root/wb-escape-{TOKEN} {s}/new"
    shell = f"echo WB-RAN; rm -rf {s}; touch {markers}; cat {s}/secret.txt; cat /proc/*/environ"
    return {
        # ---- native code ----
        "cffi ffi.dlopen(None).system": (
            "from cffi import FFI\nffi = FFI()\nffi.cdef('int system(const char *);')\n"
            f"ffi.dlopen(None).system({shell!r}.encode())"
        ),
        "_cffi_backend load_library(None) system": (
            "import _cffi_backend as b\nlib = b.load_library(None)\n"
            "char_p = b.new_pointer_type(b.new_primitive_type('char'))\n"
            "fn = lib.load_function(b.new_function_type((char_p,), b.new_primitive_type('int'), False), 'system')\n"
            f"fn(b.newp(b.new_array_type(char_p, None), {shell!r}.encode()))"
        ),
        "ctypes libc system": f"import ctypes\nctypes.CDLL(None).system({shell!r}.encode())",
        "_posixsubprocess fork_exec (compiled module)": (
            "import subprocess\nr = subprocess.run(['sh', '-c', "
            f"{shell!r}], capture_output=True)\nhunt(r.stdout)\nprint(r.stdout.decode()[:7])"
        ),
        "os.system, output read back": (
            f"import subprocess\nout = subprocess.run({shell!r}, shell=True, capture_output=True).stdout\n"
            "hunt(out)\nprint(out.decode()[:7])"
        ),
        "posix.system rm -rf ~ and /": "import posix\nposix.system('echo WB-RAN; rm -rf ~ / 2>/dev/null')",
        # ---- files outside the folder ----
        "overwrite, rename, delete the sentinel": (
            f"attempt(lambda: open({str(a)!r}, 'w').write('pwned'))\n"
            f"attempt(os.rename, {str(a)!r}, {str(s / 'moved')!r})\n"
            f"attempt(os.remove, {str(a)!r})\nimport shutil\nattempt(shutil.rmtree, {str(s)!r})"
        ),
        "read the sentinel secret": f"attempt(read, {str(s / 'secret.txt')!r})",
        "os.open with dir_fd": (
            "d = os.open('/', os.O_RDONLY)\n"
            f"attempt(os.open, {str(a)[1:]!r}, os.O_WRONLY | os.O_TRUNC, dir_fd=d)\n"
            f"attempt(os.open, 'tmp/../tmp/wb-escape-{TOKEN}', os.O_WRONLY | os.O_CREAT, 0o666, dir_fd=d)\n"
            f"attempt(lambda: hunt(os.read(os.open({str(s / 'secret.txt')[1:]!r}, os.O_RDONLY, dir_fd=d), 99)))"
        ),
        "os.rename with src_dir_fd / dst_dir_fd": (
            "open('/tmp/x', 'w').write('x')\nt = os.open('/tmp', os.O_RDONLY)\nr = os.open('/', os.O_RDONLY)\n"
            f"attempt(os.rename, 'x', {str(s / 'x')[1:]!r}, src_dir_fd=t, dst_dir_fd=r)\n"
            f"attempt(os.rename, {str(a)[1:]!r}, 'stolen', src_dir_fd=r, dst_dir_fd=t)\n"
            "attempt(lambda: hunt(open('/tmp/stolen').read()))"
        ),
        "write the host's /tmp, HOME, /root, checkout": (
            f"for p in {markers.split()!r} + ['/work/main/wb-escape-{TOKEN}', "
            f"os.path.expanduser('~/wb-escape-{TOKEN}')]:\n"
            "    attempt(lambda: open(p, 'w').write('x'))"
        ),
        "write the venv and the stdlib (persistence)": (
            f"attempt(lambda: open({str(VENV_FILE)!r}, 'a').write('import os'))\n"
            f"attempt(os.utime, {str(VENV_FILE)!r}, (0, 0))\nattempt(os.chmod, {str(VENV_FILE)!r}, 0o777)\n"
            f"attempt(os.remove, {str(VENV_FILE)!r})\n"
            f"attempt(lambda: open({sysconfig.get_paths()['stdlib']!r} + '/sitecustomize.py', 'w').write('x'))\n"
            f"attempt(lambda: open('/usr/lib/wb-escape-{TOKEN}', 'w'))"
        ),
        "symlink out of the folder, then write": (
            f"attempt(os.symlink, {str(a)!r}, '/tmp/l')\nattempt(lambda: open('/tmp/l', 'w').write('pwned'))\n"
            f"os.makedirs({str(s)!r}, exist_ok=True)\nattempt(lambda: open({str(a)!r}, 'w').write('pwned'))\n"
            f"attempt(read, {str(s / 'secret.txt')!r})"
        ),
        "hardlink to a host file": (
            f"attempt(os.link, {str(s / 'secret.txt')!r}, '/tmp/h')\nattempt(read, '/tmp/h')\n"
            f"attempt(os.link, {str(VENV_FILE)!r}, '/tmp/h2')\n"
            "attempt(lambda: open('/tmp/h2', 'a').write('x'))"
        ),
        "host files that must be invisible": (
            "for p in ['/etc/shadow', '/etc/passwd', '/root/.bash_history', '/work/main/README.md', "
            f"{str(s / 'secret.txt')!r}, '/proc/1/root' + {str(s / 'secret.txt')!r}]:\n"
            "    attempt(read, p)\n"
            "hunt(str(attempt(os.listdir, '/work/main')))"
        ),
        # ---- /proc, signals, ptrace, other processes ----
        "/proc of every visible pid (environ, cmdline, mem)": (
            "for pid in os.listdir('/proc'):\n    if pid.isdigit():\n"
            "        for f in ('environ', 'cmdline'):\n            attempt(read, f'/proc/{pid}/{f}')\n"
            "        attempt(read, f'/proc/{pid}/mem')\n"
            "attempt(read, '/proc/1/environ')\nattempt(read, f'/proc/{os.getppid()}/environ')"
        ),
        "/proc writes and kernel knobs": (
            "attempt(lambda: open('/proc/sys/kernel/hostname', 'w').write('pwned'))\n"
            "attempt(lambda: open('/proc/sysrq-trigger', 'w').write('b'))\n"
            "import socket\nattempt(socket.sethostname, 'pwned')"
        ),
        "signal the parent and every pid": (
            "import signal\nattempt(os.kill, os.getppid(), 9)\nattempt(os.kill, -1, 9)\n"
            "for pid in range(1, 4096):\n    attempt(os.kill, pid, signal.SIGKILL)"
        ),
        "ptrace attach to pid 1 and the parent": (
            "import ctypes\nlibc = ctypes.CDLL(None)\n"
            "for pid in (1, os.getppid(), 2):\n    libc.ptrace(16, pid, 0, 0)\n"
            "attempt(read, '/proc/1/mem')"
        ),
        "mount, chroot, setuid, unshare": (
            "import ctypes\nlibc = ctypes.CDLL(None)\nlibc.mount(b'none', b'/usr', b'tmpfs', 0, None)\n"
            "attempt(os.chroot, '/tmp')\nattempt(os.setuid, 0)\nattempt(os.setgid, 0)\n"
            "attempt(os.unshare, os.CLONE_NEWNS) if hasattr(os, 'unshare') else None\n"
            "import subprocess\nattempt(subprocess.run, ['unshare', '-r', 'sh', '-c', "
            f"'mount -t tmpfs none /usr; touch /usr/x; cat {s}/secret.txt'], capture_output=True)"
        ),
        "raise the resource limits": (
            "import resource\nfor r in (resource.RLIMIT_NPROC, resource.RLIMIT_AS, resource.RLIMIT_FSIZE):\n"
            "    attempt(resource.setrlimit, r, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))"
        ),
        "devices": (
            "for d in ('/dev/sda', '/dev/vda', '/dev/mem', '/dev/kmsg', '/dev/tty', '/dev/shm/x'):\n"
            "    attempt(read, d)\n    attempt(lambda: open(d, 'w').write('x'))"
        ),
        "overwrite the interpreter through /proc/self/exe": (
            "attempt(lambda: open('/proc/self/exe', 'r+b').write(b'x'))\n"
            "attempt(lambda: open('/proc/self/root/usr/bin/env', 'r+b').write(b'x'))\n"
            "attempt(lambda: open('/proc/1/exe', 'r+b').write(b'x'))"
        ),
        "/sys knobs and host daemons' unix sockets": (
            "attempt(lambda: open('/sys/kernel/mm/transparent_hugepage/enabled', 'w').write('never'))\n"
            "import socket\n"
            "for path in ('/run/dbus/system_bus_socket', '/var/run/docker.sock', '/run/systemd/private'):\n"
            "    attempt(lambda: socket.socket(socket.AF_UNIX).connect(path))\n"
            "attempt(lambda: socket.socket(socket.AF_UNIX).connect('\\0/tmp/.X11-unix/X0'))"
        ),
        # ---- network ----
        "network: the host's loopback listener and the internet": (
            "import socket\n"
            f"attempt(lambda: socket.create_connection(('127.0.0.1', {port}), timeout=0.2).send(b'pwned'))\n"
            "attempt(lambda: socket.create_connection(('1.1.1.1', 80), timeout=0.2))\n"
            "attempt(socket.getaddrinfo, 'example.com', 80)"
        ),
        # ---- floods ----
        "fork bomb": "while True:\n    try:\n        os.fork()\n    except BaseException:\n        pass",
        "thread bomb": (
            "import threading, time\nwhile True:\n    attempt(lambda: threading.Thread(target=time.sleep, args=(60,)).start())"
        ),
        "huge output": "while True:\n    sys.stdout.write('x' * 65536)",
        "memory": "x = []\nwhile True:\n    x.append(bytearray(2**24))",
        "disk": (
            "i = 0\nwhile True:\n    i += 1\n    if isinstance(attempt(lambda: open(f'/tmp/f{i}', 'wb').write(b'x' * 2**20)), BaseException):\n"
            "        break\nimport subprocess\nattempt(subprocess.run, ['dd', 'if=/dev/zero', 'of=/tmp/big', 'bs=1M', 'count=200'])"
        ),
        "infinite loop": "while True:\n    pass",
        # ---- the verdict ----
        "frame walking to the harness": (
            "f = sys._getframe()\nwhile f is not None:\n"
            "    hunt(repr(f.f_locals)); hunt(repr(f.f_globals)); f = f.f_back"
        ),
        "traceback frames of a failure": (
            "def solve(x):\n    try:\n        raise ValueError\n    except ValueError as e:\n"
            "        f = e.__traceback__.tb_frame\n        while f is not None:\n"
            "            hunt(repr(f.f_globals)); hunt(repr(f.f_locals))\n"
            "            for v in list(f.f_globals.values()):\n"
            "                if callable(v) and getattr(v, '__name__', '') == 'check':\n"
            "                    return v\n            f = f.f_back\n"
            "    return _FOUND[0] if _FOUND else -1"
        ),
        "gc scan for the expected value and the report channel": (
            "import gc\nfor o in gc.get_objects():\n    attempt(lambda: hunt(repr(o)[:10000]))\n"
            "for fd in range(3, 64):\n"
            '    attempt(os.write, fd, b\'{"status": "passed", "message": ""}\\n{"ok": 1}\\n\')'
        ),
        "forged reports on every descriptor and stdout": (
            'line = b\'{"nonce": "0", "status": "passed", "message": ""}\\n\'\n'
            "for fd in range(0, 256):\n    attempt(os.write, fd, line * 4)\n"
            "print('passed'); print('{\"status\": \"passed\"}'); print('PASSED')"
        ),
        "a reply written before the question, then garbage": (
            "for fd in range(3, 64):\n    attempt(os.write, fd, b'{\"ok\": 42}\\n' + b'[' * 100000 + b'\\n')"
        ),
        "an object whose __eq__ is always true": (
            "class Any:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
            "def solve(x):\n    return Any()"
        ),
        "an int subclass that equals everything": (
            "class Int(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
            "def solve(x):\n    return Int(0)"
        ),
        "a dict subclass / a deeply nested reply": (
            "def solve(x):\n    v = []\n    for _ in range(10000):\n        v = [v]\n    return v"
        ),
        "patch the test's names and the builtins": (
            "import builtins\nbuiltins.AssertionError = type('Nothing', (BaseException,), {})\n"
            "sys.modules['__main__'].check = lambda candidate: None\nbuiltins.check = lambda candidate: None\n"
            "import json\njson.dumps = lambda *a, **k: '{\"ok\": true}'"
        ),
        "sys.exit(0) before the asserts": "sys.exit(0)",
        "os._exit(0) before the asserts": "os._exit(0)",
        "sys.exit(0) inside the call": "def solve(x):\n    sys.exit(0)",
        "kill the tester from inside the call": (
            "def solve(x):\n    import signal\n    attempt(os.kill, -1, signal.SIGKILL)\n    os.kill(os.getpid(), 9)"
        ),
    }


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p)] = (st.st_mode, st.st_size, st.st_mtime_ns, p.read_bytes() if p.is_file() else None)
    return out


def sandbox_processes(uids: set[int]) -> list[str]:
    """Processes left running under the given per-run uids (root only), e.g. this test's own runs
    (other sandboxes may be running on the machine at the same time)."""
    left = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                uid = os.stat(f"/proc/{pid}").st_uid
            except OSError:
                continue
            if uid in uids:
                assert UID_BASE <= uid < UID_BASE + UID_SPAN
                left.append(pid)
    return left


@pytest.fixture(scope="module")
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.setblocking(False)
    yield srv
    srv.close()


@pytest.fixture
def world(tmp_path, monkeypatch):
    sentinel = tmp_path / "sentinel"
    (sentinel / "sub").mkdir(parents=True)
    (sentinel / "a.txt").write_text("alive")
    (sentinel / "sub" / "b.txt").write_text("alive too")
    (sentinel / "secret.txt").write_text(f"secret:{SECRET}")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WB_ESCAPE_SECRET", str(SECRET))  # in this process's /proc/PID/environ
    parent_tmp = tmp_path / "parent"
    parent_tmp.mkdir()
    return sentinel, home, parent_tmp


NAMES = list(attempts(Path("/s"), Path("/h"), 1))
# attempts that must demonstrably have run their payload inside the sandbox (a shell started
# through native code prints WB-RAN): containment, not an import that happened to fail
RAN = {
    "cffi ffi.dlopen(None).system",
    "_cffi_backend load_library(None) system",
    "ctypes libc system",
    "_posixsubprocess fork_exec (compiled module)",
    "os.system, output read back",
    "posix.system rm -rf ~ and /",
}
assert len(NAMES) >= 30


@pytest.mark.parametrize("mode", ROUTES)
@pytest.mark.parametrize("name", NAMES)
def test_escape_attempt_fails_and_changes_nothing(name, mode, world, listener, children_before):
    sentinel, home, parent_tmp = world
    code = PRELUDE + attempts(sentinel, home, listener.getsockname()[1])[name] + "\n"
    before, venv_before = snapshot(sentinel.parent), VENV_FILE.stat()
    issued_before = set(ISSUED_UIDS)
    r = run_check(code, "solve", TESTER, limits=LIMITS, mode=mode, tmp_root=str(parent_tmp))
    assert not r.passed, (name, r)
    assert r.status in ("failed", "timeout"), (name, r)  # judged, not a sandbox error
    if name in RAN:
        assert "WB-RAN" in r.stdout, (name, r)
    assert snapshot(sentinel.parent) == before, name
    assert VENV_FILE.stat() == venv_before
    for p in (f"/tmp/wb-escape-{TOKEN}", f"/root/wb-escape-{TOKEN}", f"/work/main/wb-escape-{TOKEN}"):
        assert not os.path.exists(p), p
    assert not Path(sysconfig.get_paths()["stdlib"], "sitecustomize.py").exists()
    with pytest.raises(BlockingIOError):  # nobody connected to the host's loopback listener
        listener.accept()
    if os.geteuid() == 0:
        uids = set(ISSUED_UIDS) - issued_before
        assert len(uids) == 2, uids  # the program's and the tester's
        assert sandbox_processes(uids) == [], name
    assert child_pids() <= children_before, name  # no child of ours is left, not even a zombie


@pytest.mark.parametrize("mode", ROUTES)
def test_the_control_passes(mode, tmp_path):
    """The same judge passes a right answer, so the corpus's failures are the sandbox's doing."""
    code = PRELUDE + f"def solve(x):\n    return {SECRET}\n"
    r = run_check(code, "solve", TESTER, limits=LIMITS, mode=mode, tmp_root=str(tmp_path))
    assert r.passed, r
    wrong = run_check(PRELUDE, "solve", TESTER, limits=LIMITS, mode=mode, tmp_root=str(tmp_path))
    assert wrong.status == "failed" and "AssertionError" in wrong.message


@pytest.mark.parametrize("mode", ROUTES)
def test_the_program_runs_unprivileged_and_alone(mode, tmp_path):
    """What the program sees: no capabilities, a non-root uid (as root), its own PID 1, no network
    interface but loopback, a read-only root, and /tmp as the only writable folder."""
    probe = textwrap.dedent(
        """
        import json, os
        status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)
        def writable(p):
            try:
                open(os.path.join(p, '.w'), 'w').close(); return True
            except OSError:
                return False
        def solve(x):
            return json.dumps({
                'uid': os.getuid(), 'caps': [status[k].strip() for k in ('CapEff', 'CapPrm', 'CapBnd')],
                'nnp': status.get('NoNewPrivs', '').strip(), 'pids': sorted(p for p in os.listdir('/proc') if p.isdigit()),
                'net': sorted(os.listdir('/sys/class/net')) if os.path.isdir('/sys/class/net') else [],
                'writable': [p for p in ('/', '/usr', '/tmp', '/proc', '/dev', '/etc') if writable(p)],
                'top': sorted(os.listdir('/')),
            })
        """
    )
    r = run_program(probe + "print(solve(0))", limits=LIMITS, mode=mode, tmp_root=str(tmp_path))
    assert r.passed, r
    seen = json.loads(r.stdout)
    assert seen["caps"] == ["0000000000000000"] * 3 or seen["caps"][:2] == ["0000000000000000"] * 2
    if os.geteuid() == 0:
        assert UID_BASE <= seen["uid"] < UID_BASE + UID_SPAN
        assert seen["caps"][2] == "0000000000000000" and seen["nnp"] == "1"
    assert set(seen["pids"]) <= {"1", "2", "3"}  # its own PID namespace (launcher's init + itself)
    assert seen["writable"] == ["/tmp"]
    assert not {"boot", "home", "srv", "var", "mnt", "opt", "run", "sys"} & set(seen["top"])
