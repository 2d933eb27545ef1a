"""Run untrusted Python (model-written code) where the kernel, not Python, enforces the limits.

``run_program(code)`` runs ``code`` in a fresh sandboxed interpreter and reports how it ended as a
`SandboxResult` (passed | failed | timeout | error). ``run_check(program, entry_point, tester)``
judges a function against a test (HumanEval's ``check(candidate)``) without letting the function
anywhere near the test: see "verdicts" below. ``run_many(programs)`` runs a batch on a small pool.
Everything a program can do wrong is a result, never an exception in the caller.

Isolation (docs/code_tasks.md has the threat model and what stays out of scope). One of three
modes is in force, chosen once per process (``sandbox_mode()``; ``$WORKBENCH_SANDBOX`` = auto |
bwrap | unshare | none forces one):

- ``bwrap``: bubblewrap. Fresh mount, PID, IPC, UTS, network (and cgroup) namespaces; a root
  made of read-only binds of /usr, the Python installation and the venv (nothing else of the
  host: no /home, /root, /work, /tmp, /etc beyond the loader's cache); a private size-limited
  tmpfs at /tmp as the only writable place (cwd, HOME, TMPDIR); a fresh /proc and a minimal /dev.
  Run as root, bwrap keeps every capability, so it starts ``setpriv``, which drops to a fresh
  unprivileged uid/gid (one per run, from 2e9 up), clears the supplementary groups, the bounding
  and inheritable capability sets and sets no_new_privs before the interpreter starts. Run as an
  ordinary user: a user namespace, ``--cap-drop ALL`` and ``--disable-userns``.
- ``unshare``: the same view built by a small trusted bootstrap (``_BOOT``) that util-linux's
  ``unshare --mount --pid --ipc --uts --net --fork`` starts (``--user --map-root-user`` as an
  ordinary user): tmpfs root, read-only binds, pivot_root, fresh /proc, then the same privilege
  drop (a fresh uid as root; as an ordinary user, securebits NOROOT and an empty bounding set, so
  that exec grants no capability). The bootstrap stays as the namespace's PID 1 with a parent-death
  SIGKILL: when the launcher is killed, the kernel kills everything in the namespace.
- ``none``: neither works. Code tasks are refused unless the user opts in
  (``task.allow_unsandboxed=true``); then only the old in-process layers apply (rlimits, an audit
  hook and a module blocklist, a process group), with a loud warning.

In every mode: resource limits (address space, CPU seconds, file size, open files, processes: the
per-run uid makes RLIMIT_NPROC count this run's processes alone, no core files), a wall-clock
timeout after which the launcher's process group is SIGKILLed (which takes the namespace with it),
an environment with nothing of the caller's, and the job (code, stdin) handed over as already
deleted files, so nothing of the parent is left on any disk the program can see.

Verdicts are decided where the program cannot reach. ``run_program``'s own status ("ran to its
end") is the program's account and is forgeable by it; no code task trusts it alone:

- stdio and functional tasks (LiveCodeBench) compare the program's output with the expected one in
  the parent (`workbench.tasks.code`); the expected output never enters the sandbox;
- ``run_check`` (HumanEval) starts two sandboxes. The *program* sandbox runs the model's code and
  then serves calls: it reads arguments from a pipe, calls the entry point and writes back the
  result encoded as plain builtin values only (an object of any other type, e.g. one whose
  ``__eq__`` is always true, is an error). The *tester* sandbox runs the problem's own test code
  (never the model's) with ``candidate`` bound to a stub that forwards each call to the program
  sandbox and decodes the reply into fresh builtin objects; its pass report goes to the parent on
  a pipe only it holds. The program never sees the test, its expected values, its names or its
  frames, so ``sys.exit(0)``, patching ``check``, frame walking, gc scans and forged reports have
  nothing to act on.
"""

from __future__ import annotations

import atexit
import collections
import functools
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

STATUSES = ("passed", "failed", "timeout", "error")
MODES = ("bwrap", "unshare", "none")
UID_BASE = 2_000_000_000  # per-run uids are drawn from [UID_BASE, UID_BASE + UID_SPAN): no real account
UID_SPAN = 100_000_000
ISSUED_UIDS: collections.deque[int] = collections.deque(
    maxlen=4096
)  # the latest per-run uids (tests check them)
NO_SANDBOX = (
    "sandbox: no OS-level sandbox works on this machine (neither bubblewrap nor unshare could start a "
    "namespace); install bubblewrap (apt-get install bubblewrap), or set task.allow_unsandboxed=true "
    "to run model code with in-process guards only (unsafe)"
)


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0  # wall clock, interpreter start included; the launcher's group is then killed
    memory_mb: int = 2048  # address space per process (RLIMIT_AS); allocating more raises MemoryError
    file_size_mb: int = 16  # largest file the program may write, stdout included (RLIMIT_FSIZE)
    tmp_mb: int = 64  # size of the private tmpfs at /tmp, the only writable folder (all files together)
    max_open_files: int = 256  # RLIMIT_NOFILE
    max_processes: int = 32  # RLIMIT_NPROC: processes + threads of the run's own uid
    max_files_written: int = 64  # mode none only: files it may open for writing (the audit hook counts)
    network_namespace: bool = True  # kept for compatibility: the namespaced modes always cut the network

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.memory_mb < 64 or self.file_size_mb < 1 or self.tmp_mb < 1:
            raise ValueError(
                f"sandbox limits out of range: timeout_s={self.timeout_s} (> 0), "
                f"memory_mb={self.memory_mb} (>= 64), file_size_mb={self.file_size_mb} (>= 1), "
                f"tmp_mb={self.tmp_mb} (>= 1)"
            )


@dataclass(frozen=True)
class SandboxResult:
    passed: bool  # status == "passed"
    status: str  # passed | failed (exception, exit, killed, wrong) | timeout | error (the sandbox itself)
    message: str  # why it did not pass ("" when it passed)
    duration_s: float
    stdout: str = ""  # what the program printed (truncated at the file-size limit)


@dataclass(frozen=True)
class Program:
    """One program to run: its code, its standard input, and how its ending is judged."""

    code: str
    stdin: str = ""
    as_main: bool = False  # run with __name__ == "__main__" (scripts); False for code under test
    exit_ok: bool = False  # sys.exit(0) counts as finishing: only for programs judged by their stdout


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------


def run_many(
    programs: Sequence[Program],
    limits: SandboxLimits | None = None,
    workers: int | None = None,
    *,
    mode: str | None = None,
    allow_unsandboxed: bool = False,
) -> list[SandboxResult]:
    """Run programs in parallel (default: one worker per CPU core), results in input order."""
    limits = limits or SandboxLimits()
    workers = workers or max(1, os.cpu_count() or 1)

    def one(p: Program) -> SandboxResult:
        return run_program(
            p.code,
            stdin=p.stdin,
            as_main=p.as_main,
            exit_ok=p.exit_ok,
            limits=limits,
            mode=mode,
            allow_unsandboxed=allow_unsandboxed,
        )

    if len(programs) <= 1 or workers == 1:
        return [one(p) for p in programs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, programs))


def run_program(
    code: str,
    *,
    stdin: str = "",
    as_main: bool = False,
    exit_ok: bool = False,
    limits: SandboxLimits | None = None,
    tmp_root: str | None = None,
    mode: str | None = None,
    allow_unsandboxed: bool = False,
) -> SandboxResult:
    """Run ``code`` in a fresh sandboxed interpreter and say how it ended.

    ``status == "passed"`` means the program ran to its end (or exited 0 with ``exit_ok``) by its
    harness's account, which the program itself could forge: judge a program by what it printed
    (compared in the caller) or with `run_check`, never by this status alone. ``tmp_root`` is
    where the parent keeps the run's (already deleted) files; ``mode`` overrides `sandbox_mode()`.
    """
    limits = limits or SandboxLimits()
    t0 = time.perf_counter()
    mode, refusal = _resolve(mode, allow_unsandboxed)
    if refusal:
        return SandboxResult(False, "error", refusal, 0.0)
    job = {"role": "script", "code": code, "as_main": as_main, "exit_ok": exit_ok}
    try:
        run = _Run(mode, limits, tmp_root, job, stdin=stdin, result_pipe=True)
    except OSError as e:
        return SandboxResult(False, "error", f"sandbox: cannot create a temporary file ({e})", 0.0)
    with run:
        if run.start_error:
            return SandboxResult(False, "error", run.start_error, time.perf_counter() - t0)
        finished = run.wait(limits.timeout_s)
        run.kill()
        duration = time.perf_counter() - t0
        record, stdout = run.record(), run.stdout()
        if not finished:
            msg = f"timed out after {limits.timeout_s:g} s (process group killed)"
            return SandboxResult(False, "timeout", msg, duration, stdout)
        if record is not None:
            status = record.get("status")
            if status not in STATUSES:
                status, record["message"] = "error", f"sandbox: bad status {status!r} from the harness"
            return SandboxResult(status == "passed", status, str(record.get("message", "")), duration, stdout)
        return SandboxResult(False, "failed", run.death(), duration, stdout)


def run_check(
    program: str,
    entry_point: str,
    tester: str,
    *,
    limits: SandboxLimits | None = None,
    tmp_root: str | None = None,
    mode: str | None = None,
    allow_unsandboxed: bool = False,
) -> SandboxResult:
    """Judge ``program``'s function ``entry_point`` with ``tester``, trusted code that defines
    ``check(candidate)`` (HumanEval's form): passed iff ``check`` returns.

    The program and the tester run in two separate sandboxes joined by two pipes that carry only
    calls and plain results; the verdict comes from the tester's own report pipe (module docstring).
    """
    limits = limits or SandboxLimits()
    t0 = time.perf_counter()
    mode, refusal = _resolve(mode, allow_unsandboxed)
    if refusal:
        return SandboxResult(False, "error", refusal, 0.0)
    req_r, req_w = os.pipe()  # tester -> program: calls
    resp_r, resp_w = os.pipe()  # program -> tester: results
    try:
        try:
            prog = _Run(
                mode,
                limits,
                tmp_root,
                {"role": "server", "code": program, "entry_point": entry_point},
                fds={"req_fd": req_r, "resp_fd": resp_w},
            )
        except OSError as e:
            return SandboxResult(False, "error", f"sandbox: cannot create a temporary file ({e})", 0.0)
        with prog:
            try:
                test = _Run(
                    mode,
                    limits,
                    tmp_root,
                    {"role": "tester", "code": tester, "entry_point": entry_point},
                    fds={"req_fd": req_w, "resp_fd": resp_r},
                    result_pipe=True,
                )
            except OSError as e:
                return SandboxResult(False, "error", f"sandbox: cannot create a temporary file ({e})", 0.0)
            for fd in (req_r, req_w, resp_r, resp_w):  # only the two sandboxes hold them now
                os.close(fd)
            req_r = req_w = resp_r = resp_w = -1
            with test:
                error = prog.start_error or test.start_error
                if error:
                    return SandboxResult(False, "error", error, time.perf_counter() - t0)
                finished = test.wait(limits.timeout_s)
                test.kill()
                if finished:  # the tester is gone, so an idle program reads end-of-file and exits
                    prog.wait(0.5)
                prog.kill()
                duration = time.perf_counter() - t0
                record, stdout = test.record(), prog.stdout()
                if not finished:
                    msg = f"timed out after {limits.timeout_s:g} s (process groups killed)"
                    return SandboxResult(False, "timeout", msg, duration, stdout)
                if record is None:
                    return SandboxResult(
                        False, "error", "sandbox: the tester " + test.death(), duration, stdout
                    )
                status = record.get("status")
                if status not in STATUSES:
                    status, record["message"] = "error", f"sandbox: bad status {status!r} from the tester"
                message = str(record.get("message", ""))
                if status != "passed":
                    tail = prog.stderr_tail()
                    if tail and tail not in message:
                        message += f"; program stderr: {tail}"
                return SandboxResult(status == "passed", status, message, duration, stdout)
    finally:
        for fd in (req_r, req_w, resp_r, resp_w):
            if fd >= 0:
                os.close(fd)


# ---------------------------------------------------------------------------------------------
# Which mode is in force
# ---------------------------------------------------------------------------------------------


def sandbox_mode(preferred: str | None = None) -> str:
    """The isolation in force: bwrap | unshare | none. ``preferred`` (or ``$WORKBENCH_SANDBOX``)
    = auto | bwrap | unshare | none; a forced mode that does not work here is reported as none."""
    preferred = preferred or os.environ.get("WORKBENCH_SANDBOX", "auto") or "auto"
    if preferred not in ("auto", *MODES):
        raise ValueError(f"WORKBENCH_SANDBOX must be auto, bwrap, unshare or none; got {preferred!r}")
    if preferred == "none":
        return "none"
    for mode in ("bwrap", "unshare") if preferred == "auto" else (preferred,):
        if _probe(mode) is None:
            return mode
    return "none"


def require_sandbox(allow_unsandboxed: bool = False) -> str:
    """The mode in force, or ValueError (naming the fix) when there is none and the user has not
    opted in; with the opt-in, a loud warning. Called when code tasks are loaded."""
    mode = sandbox_mode()
    if mode == "none":
        if not allow_unsandboxed:
            raise ValueError(_why_none())
        _warn_unsandboxed()
    return mode


def _why_none() -> str:
    """NO_SANDBOX, with what this machine said (one line)."""
    forced = os.environ.get("WORKBENCH_SANDBOX", "auto") or "auto"
    if forced == "none":
        return NO_SANDBOX.replace(
            "no OS-level sandbox works on this machine (neither bubblewrap nor unshare could start a namespace)",
            "WORKBENCH_SANDBOX=none turns the OS-level sandbox off (unset it to use bubblewrap or unshare)",
        )
    tried = ("bwrap", "unshare") if forced == "auto" else (forced,)
    probes = "; ".join(f"{m}: {' '.join(str(_probe(m)).split())[:200]}" for m in tried)
    return f"{NO_SANDBOX} ({probes})"


@functools.cache
def _warn_unsandboxed() -> None:
    msg = (
        "WARNING: task.allow_unsandboxed=true and no OS sandbox works here: model-written code runs "
        "as this user with in-process guards only; it can read your files and may escape them"
    )
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
    print(msg, file=sys.stderr, flush=True)


def _resolve(mode: str | None, allow_unsandboxed: bool) -> tuple[str, str]:
    try:
        mode = sandbox_mode(mode)
    except ValueError as e:
        return "none", f"sandbox: {e}"
    if mode == "none" and not allow_unsandboxed:
        return mode, _why_none()
    if mode == "none":
        _warn_unsandboxed()
    return mode, ""


_probe_lock = threading.Lock()
_probes: dict[str, str | None] = {}


def _probe(mode: str) -> str | None:
    """None if `mode` runs a program here (checked once per process by running one), else why not."""
    with _probe_lock:
        if mode not in _probes:
            _probes[mode] = _probe_now(mode)
        return _probes[mode]


def _probe_now(mode: str) -> str | None:
    tool = {"bwrap": "bwrap", "unshare": "unshare"}[mode]
    if shutil.which(tool) is None:
        return f"{tool} is not installed"
    if os.geteuid() == 0 and shutil.which("setpriv") is None and mode == "bwrap":
        return "setpriv (util-linux) is not installed"
    # as root, the program must run under another uid; as an ordinary user, as root of a user namespace
    probe = f"import os\nassert os.getuid() != 0 or not {os.geteuid() == 0}\nprint('ok')"
    limits = SandboxLimits(timeout_s=20, memory_mb=512)
    run = None
    try:
        run = _Run(mode, limits, None, {"role": "script", "code": probe, "as_main": True, "exit_ok": False})
        with run:
            if run.start_error:
                return run.start_error
            if not run.wait(limits.timeout_s):
                return "the probe timed out"
            run.kill()
            if run.stdout().strip() != "ok":
                return f"the probe failed ({run.death()})"[:500]
    except OSError as e:
        return f"cannot start ({e})"
    return None


def isolation_summary(limits: SandboxLimits | None = None) -> dict[str, object]:
    """Which sandbox is in force and what it gives (for the run manifest, logs and docs)."""
    limits = limits or SandboxLimits()
    mode = sandbox_mode()
    root = os.geteuid() == 0
    out: dict[str, object] = {"mode": mode, "forced": os.environ.get("WORKBENCH_SANDBOX", "auto")}
    if mode == "none":
        out.update(
            kernel_isolation=False,
            why=NO_SANDBOX,
            audit_guard=True,
            probes={m: _probe(m) for m in ("bwrap", "unshare")},
        )
    else:
        out.update(
            kernel_isolation=True,
            namespaces="mount, pid, ipc, uts, net" + (", cgroup" if mode == "bwrap" else ""),
            user="a fresh unprivileged uid per run, no capabilities, no_new_privs"
            if root
            else "the caller's uid in a user namespace, no capabilities",
            filesystem="read-only /usr, Python and venv; private tmpfs /tmp only",
            network="none (own namespace, loopback only)",
            audit_guard=False,
        )
    out.update(asdict(limits))
    return out


# ---------------------------------------------------------------------------------------------
# The parent side: one sandboxed process
# ---------------------------------------------------------------------------------------------

_ENV = {
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONIOENCODING": "utf-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "OMP_NUM_THREADS": "1",
}


def _tool(name: str) -> str:
    """A launcher's absolute path (the child's environment has only a minimal PATH)."""
    return os.path.realpath(shutil.which(name) or name)


def _python() -> str:
    return os.path.realpath(sys.executable)


@functools.cache  # the host's layout does not change within a process
def _ro_paths() -> tuple[str, ...]:
    """Host paths the sandbox sees read-only: the system's programs and libraries, the Python
    installation and the venv's packages. Everything else of the host is absent."""
    paths = ["/usr", sys.base_prefix, sys.prefix, os.path.dirname(_python())]
    paths += [
        sysconfig.get_paths()["stdlib"],
        sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["platlib"],
    ]
    paths += ["/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/alternatives"]
    for top in ("/bin", "/lib", "/lib32", "/lib64", "/libx32", "/sbin"):
        if os.path.exists(top) and not os.path.islink(top):
            paths.append(top)
    out: list[str] = []
    for p in sorted({os.path.realpath(p) for p in paths if os.path.exists(p)}, key=len):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return tuple(out)


def _ancestors(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


@functools.cache  # the host's layout does not change within a process
def _symlinks() -> dict[str, str]:
    return {
        top: os.readlink(top)
        for top in ("/bin", "/lib", "/lib32", "/lib64", "/libx32", "/sbin")
        if os.path.islink(top)
    }


@functools.cache  # the host's layout does not change within a process
def _site_paths() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(dict.fromkeys(os.path.realpath(paths[k]) for k in ("purelib", "platlib")))


@functools.cache
def _mountpoint() -> str:
    """An empty host folder the unshare bootstrap mounts its new root on (inside its own private
    mount namespace, so the host never sees what is mounted there)."""
    path = tempfile.mkdtemp(prefix="wb-sandbox-mnt-")
    atexit.register(os.rmdir, path)  # it stays empty on the host
    return path


def _user_tasks() -> int:
    """This (non-root) user's running tasks: RLIMIT_NPROC counts them all, so the limit is them + margin."""
    tasks, uid = 0, os.getuid()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat("/proc/" + pid).st_uid == uid:
                    tasks += len(os.listdir("/proc/" + pid + "/task"))
            except OSError:
                pass
    return tasks


def _uid_processes(uid: int) -> bool:
    """Is any process of `uid` (a run's own uid) still alive?"""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat("/proc/" + pid).st_uid == uid:
                    return True
            except OSError:
                pass
    return False


class _Run:
    """One sandboxed interpreter running the harness with `job`; started on construction."""

    def __init__(
        self,
        mode: str,
        limits: SandboxLimits,
        tmp_root: str | None,
        job: dict,
        *,
        stdin: str = "",
        fds: dict[str, int] | None = None,
        result_pipe: bool = False,
    ) -> None:
        self.limits, self.proc, self.start_error = limits, None, ""
        self.read_fd = -1
        self.nonce = secrets.token_hex(16)
        self._files = []
        job_file, in_file = self._tmp(tmp_root), self._tmp(tmp_root)
        self.out_file, self.err_file = self._tmp(tmp_root), self._tmp(tmp_root)
        fds = dict(fds or {})
        write_fd = -1
        if result_pipe:
            self.read_fd, write_fd = os.pipe()
            fds["result_fd"] = write_fd
        root = os.geteuid() == 0
        uid = UID_BASE + secrets.randbelow(UID_SPAN) if root and mode != "none" else None
        self.uid = uid
        if uid is not None:
            ISSUED_UIDS.append(uid)
        job = dict(
            job,
            nonce=self.nonce,
            limits=asdict(limits),
            nproc=limits.max_processes if uid is not None else _user_tasks() + limits.max_processes,
            guard=mode == "none",
            site_paths=_site_paths(),
            **fds,
        )
        job_file.write(json.dumps(job).encode())
        in_file.write(stdin.encode("utf-8", "surrogatepass"))
        for f in (job_file, in_file):
            f.flush()
            f.seek(0)
        inner = [_python(), "-I", "-S", "-B", "-c", _HARNESS, str(job_file.fileno())]
        pass_fds = (job_file.fileno(), *fds.values())
        argv, env, cwd = self._argv(mode, inner, uid, limits), dict(_ENV), "/"
        if mode == "none":
            env["HOME"] = env["TMPDIR"] = cwd = self._scratch(tmp_root)
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=in_file,
                stdout=self.out_file,
                stderr=self.err_file,
                cwd=cwd,
                env=env,
                pass_fds=pass_fds,
                start_new_session=True,  # its own process group: killed as a whole
                umask=0o022,  # the folders bwrap / the bootstrap create for the binds must be searchable
            )
        except OSError as e:
            self.start_error = f"sandbox: cannot start {argv[0]} ({e})"
        finally:
            if write_fd >= 0:
                os.close(write_fd)
            job_file.close()
            in_file.close()

    # ---- the command line of each mode ----
    @staticmethod
    def _argv(mode: str, inner: list[str], uid: int | None, limits: SandboxLimits) -> list[str]:
        if mode == "none":
            return inner
        drop = []
        if uid is not None:  # root: setpriv drops to a fresh uid, no groups, no capabilities
            drop = ["--reuid", str(uid), "--regid", str(uid), "--clear-groups"]
        if mode == "bwrap":
            argv = [_tool("bwrap"), "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
            argv += ["--unshare-cgroup-try", "--die-with-parent", "--new-session"]
            if uid is None:
                argv += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
            # /tmp first: a Python or venv that lives under /tmp is then bound on top of it, not hidden
            argv += ["--perms", "01777", "--size", str(limits.tmp_mb * 2**20), "--tmpfs", "/tmp"]
            parents = sorted({a for p in _ro_paths() for a in _ancestors(p)} - {"/tmp"})
            for a in parents:  # bwrap would create them 0700: unreachable for the unprivileged uid
                argv += ["--perms", "0755", "--dir", a]
            for p in _ro_paths():
                argv += ["--ro-bind", p, p]
            for link, target in _symlinks().items():
                argv += ["--symlink", target, link]
            argv += ["--proc", "/proc", "--dev", "/dev"]
            argv += ["--remount-ro", "/", "--chdir", "/tmp", "--"]
            if uid is not None:
                argv += [_tool("setpriv"), *drop, "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs"]
            return argv + inner
        spec = {
            "root": _mountpoint(),
            "ro": _ro_paths(),
            "symlinks": _symlinks(),
            "tmp_bytes": limits.tmp_mb * 2**20,
            "uid": uid,
            "harness": inner[-2],
            "job_fd": inner[-1],
            "env": _ENV,
        }
        argv = [_tool("unshare"), "--mount", "--pid", "--ipc", "--uts", "--net", "--fork", "--kill-child"]
        argv += ["--propagation", "private"]
        if uid is None:
            argv += ["--user", "--map-root-user"]
        return argv + [_python(), "-I", "-S", "-B", "-c", _BOOT, json.dumps(spec)]

    def _tmp(self, tmp_root: str | None):
        f = tempfile.TemporaryFile(prefix="wb-sandbox-", dir=tmp_root)
        self._files.append(f)
        return f

    def _scratch(self, tmp_root: str | None) -> str:
        self.scratch = tempfile.mkdtemp(prefix="wb-sandbox-", dir=tmp_root)
        return self.scratch

    # ---- waiting and killing ----
    def wait(self, timeout: float) -> bool:
        """True when the launcher exited within `timeout`, without reaping it (its pid stays ours)."""
        assert self.proc is not None
        pid = self.proc.pid
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # no pidfd (old kernel): poll
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return True
                time.sleep(0.005)
            return False
        try:
            ready, _, _ = select.select([pidfd], [], [], timeout)
            return bool(ready)
        finally:
            os.close(pidfd)

    def kill(self) -> None:
        """SIGKILL the launcher's group (the namespace dies with its PID 1), then reap it."""
        if self.proc is None or self.proc.returncode is not None:
            return
        pid = self.proc.pid
        try:  # exited by itself? (not reaped yet, so its pid and group cannot have been reused)
            exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            exited = True
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        # A launcher that exited by itself did so after the namespace's PID 1 (and so everything in
        # the namespace) was gone. A killed one leaves the namespace dying asynchronously: wait for it.
        if self.uid is not None and not exited:
            deadline = time.monotonic() + 5.0
            while _uid_processes(self.uid) and time.monotonic() < deadline:
                time.sleep(0.002)

    # ---- what came back ----
    def record(self) -> dict | None:
        """The harness's report: the first line of the result pipe that carries this run's token."""
        if self.read_fd < 0:
            return None
        fd, self.read_fd = self.read_fd, -1
        os.set_blocking(fd, False)
        chunks, size = [], 0
        try:
            while size < 2**20:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
        for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(record, dict) and record.get("nonce") == self.nonce:
                return record
        return None

    def stdout(self) -> str:
        return self._text(self.out_file, self.limits.file_size_mb * 2**20)

    def stderr_tail(self) -> str:
        return self._text(self.err_file, 64 * 2**10)[-500:].strip()

    @staticmethod
    def _text(f, limit: int) -> str:
        try:
            f.seek(0)
            return f.read(limit).decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def death(self) -> str:
        """Why the process ended without a report (os._exit, a signal, a crash)."""
        code = self.proc.returncode if self.proc is not None else None
        if code is None:
            why = "did not finish"
        else:
            sig = -code if code < 0 else code - 128 if code > 128 else 0
            if sig and sig in signal.valid_signals():
                name = signal.Signals(sig).name
                why = f"killed by {name}"
                if name in ("SIGKILL", "SIGSEGV", "SIGABRT"):
                    why += " (memory limit, stack overflow or a crash)"
                elif name == "SIGXCPU":
                    why += " (CPU time limit)"
            else:
                why = f"exited with code {code} before the program finished"
        tail = self.stderr_tail()
        return why + (f"; stderr: {tail}" if tail else "")

    def __enter__(self) -> _Run:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1
        for f in self._files:
            f.close()
        if getattr(self, "scratch", None):
            _remove_tree(self.scratch)


def _remove_tree(path: str) -> None:
    """Remove a folder even if the program made parts of it unreadable."""

    def make_writable_and_retry(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)


# ---------------------------------------------------------------------------------------------
# The unshare bootstrap: trusted code run as the new namespaces' PID 1 (root there). It builds the
# sandbox's root on a tmpfs, pivots into it, forks, drops every privilege in the child and execs the
# harness; it stays as PID 1 (reaping, with a parent-death SIGKILL) until the harness exits.
# ---------------------------------------------------------------------------------------------

_BOOT = r"""
import ctypes, json, os, sys
spec = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_SET_SECUREBITS = 1, 38, 24, 28
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4

def check(ret, what):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")

def mount(src, dst, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    check(libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {dst}")

def locked_flags(path):
    f = os.statvfs(path).f_flag  # a user namespace may not clear the flags the host mount has
    out = 0
    for st, ms in ((2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME), (2048, MS_NODIRATIME), (4096, MS_RELATIME)):
        if f & st:
            out |= ms
    return out

def bind_ro(src, dst):
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    mount(src, dst, None, MS_BIND | MS_REC)
    mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | locked_flags(src))

os.umask(0o022)
try:
    check(libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0), "pdeathsig")  # (unshare --kill-child set it too)
    root = spec["root"]
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
    os.mkdir(root + "/tmp")  # first: binds of paths under /tmp (a venv there) then land on top of it
    mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={spec['tmp_bytes']},nr_inodes=4096")
    for path in spec["ro"]:
        bind_ro(path, root + path)
    for link, target in spec["symlinks"].items():
        os.symlink(target, root + link)
    os.mkdir(root + "/proc")
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.mkdir(root + "/dev")
    mount("tmpfs", root + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k")
    for dev in ("null", "zero", "full", "random", "urandom"):
        open(root + "/dev/" + dev, "w").close()
        mount("/dev/" + dev, root + "/dev/" + dev, None, MS_BIND)
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        os.symlink(f"/proc/self/fd/{fd}", root + "/dev/" + name)
    os.chdir(root)
    check(libc.syscall({"x86_64": 155, "aarch64": 41}[os.uname().machine], b".", b"."), "pivot_root")
    check(libc.umount2(b".", 2), "umount old root")
    os.chdir("/")
    mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
except BaseException as e:
    print(f"sandbox bootstrap: {type(e).__name__}: {e}", file=sys.stderr)
    os._exit(125)

pid = os.fork()
if pid == 0:
    try:
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        for cap in range(64):
            libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
        libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        uid = spec["uid"]
        if uid is not None:  # root outside: a fresh uid (setuid from 0 clears every capability)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        else:  # root of a user namespace: no capability now, and none granted by a later exec
            check(libc.prctl(PR_SET_SECUREBITS, 0xEF, 0, 0, 0), "securebits")
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
        check(libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()), "capset")
        os.chdir("/tmp")
        os.environ.clear()
        os.environ.update(spec["env"])
        sys.argv = ["-c", spec["job_fd"]]
        harness = spec["harness"]
    except BaseException as e:
        print(f"sandbox bootstrap: {type(e).__name__}: {e}", file=sys.stderr)
        os._exit(125)
    del spec, libc
    exec(compile(harness, "<harness>", "exec"), {"__name__": "__main__"})  # this interpreter, unprivileged
    os._exit(0)
for fd in range(3, 1024):  # PID 1 keeps no descriptor of the job's pipes open
    try:
        os.close(fd)
    except OSError:
        pass
while True:
    try:
        done, status = os.wait()
    except ChildProcessError:
        os._exit(0)
    if done == pid:
        os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
"""


# ---------------------------------------------------------------------------------------------
# The harness: `python -I -S -c _HARNESS JOB_FD`, the first code in the sandboxed interpreter. It
# reads the job, sets the limits, then plays one role: script (run the program, report how it
# ended), server (run the program, then answer calls to its entry point with plain values) or
# tester (run the trusted test with a stub candidate that calls the server). A string, so that
# the child imports nothing of the parent.
# ---------------------------------------------------------------------------------------------

_HARNESS = r"""
import sys

def set_limits(lim, nproc):
    import resource, signal

    def cap(res, value):
        _, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(res, (value, value))

    cap(resource.RLIMIT_AS, lim["memory_mb"] * 2**20)
    cap(resource.RLIMIT_FSIZE, lim["file_size_mb"] * 2**20)
    cap(resource.RLIMIT_CPU, int(lim["timeout_s"]) + 2)
    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_NOFILE, lim["max_open_files"])
    cap(resource.RLIMIT_NPROC, nproc)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too-large writes raise OSError instead of killing


# ---- plain values: the only thing that crosses between the program and the tester ----
MAX_LINE = 32 * 2**20
MAX_DEPTH = 100

def encode(x, depth=0):
    if depth > MAX_DEPTH:
        raise ValueError("the value is nested too deeply")
    t = type(x)
    if x is None or t is bool or t is str:
        return x
    if t is int:
        return x if -2**53 < x < 2**53 else {"i": hex(x)}
    if t is float:
        return {"f": x.hex()}
    if t is list:
        return [encode(v, depth + 1) for v in x]
    if t is tuple:
        return {"t": [encode(v, depth + 1) for v in x]}
    if t is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in x.items()]}
    if t is set or t is frozenset:
        return {"s" if t is set else "fs": [encode(v, depth + 1) for v in x]}
    if t is bytes:
        return {"b": x.hex()}
    if t is complex:
        return {"c": [x.real.hex(), x.imag.hex()]}
    raise TypeError(f"a {t.__module__}.{t.__qualname__} is not a plain value (None, bool, int, float, str, bytes, complex, list, tuple, dict, set)")

def decode(x):
    t = type(x)
    if x is None or t is bool or t is str or t is int:
        return x
    if t is list:
        return [decode(v) for v in x]
    if t is dict and len(x) == 1:
        (tag, v), = x.items()
        if tag == "i" and type(v) is str:
            return int(v, 16)
        if tag == "f" and type(v) is str:
            return float.fromhex(v)
        if tag == "t" and type(v) is list:
            return tuple(decode(e) for e in v)
        if tag == "d" and type(v) is list:
            return {decode(k): decode(e) for k, e in v}
        if tag == "s" and type(v) is list:
            return {decode(e) for e in v}
        if tag == "fs" and type(v) is list:
            return frozenset(decode(e) for e in v)
        if tag == "b" and type(v) is str:
            return bytes.fromhex(v)
        if tag == "c" and type(v) is list and len(v) == 2:
            return complex(float.fromhex(v[0]), float.fromhex(v[1]))
    raise ValueError("not an encoded plain value")


def describe(e):
    try:
        line, tb = "", e.__traceback__
        while tb is not None:  # the last line of the program's own code in the traceback
            if tb.tb_frame.f_code.co_filename == "solution.py":
                line = f" (line {tb.tb_lineno})"
            tb = tb.tb_next
        return f"{type(e).__name__}: {e}{line}"[:2000]
    except BaseException:
        return "an exception whose message could not be formatted"


def install_guard(workdir, max_files):
    # mode none only (no kernel isolation, the user opted in): the old in-process layers
    import builtins, os, signal
    blocked_events = {
        "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "subprocess.Popen",
        "os.kill", "os.killpg", "signal.pthread_kill", "pty.spawn", "socket.__new__", "socket.connect",
        "socket.bind", "socket.getaddrinfo", "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function",
        "sys.settrace", "sys.setprofile", "sys._current_frames", "gc.get_objects", "gc.get_referrers",
        "resource.setrlimit", "resource.prlimit", "os.chroot",
    }
    blocked_modules = {"ctypes", "_ctypes", "cffi", "_cffi_backend", "subprocess", "_posixsubprocess",
                       "multiprocessing", "_multiprocessing", "socket", "_socket", "ssl", "_ssl", "pty"}
    path_events = {"os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "os.truncate": (0,),
                   "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,), "os.mkdir": (0,), "os.link": (0, 1),
                   "os.symlink": (1,), "shutil.rmtree": (0,), "shutil.move": (0, 1), "os.chdir": (0,)}
    realpath, fsdecode, sep = os.path.realpath, os.fsdecode, os.sep
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    written = [0]

    def inside(path):
        if isinstance(path, int):
            return False
        p = realpath(fsdecode(path))
        return p == workdir or p.startswith(workdir + sep)

    def hook(event, args):
        if event in blocked_events:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import":
            if args[0].split(".")[0] in blocked_modules:
                raise ImportError(f"sandbox: import of {args[0]} is not allowed")
        elif event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            p = fsdecode(path)
            if p.startswith("/proc/") and not p.startswith(("/proc/self/", "/proc/thread-self/")):
                raise PermissionError(f"sandbox: opening {p} is not allowed")
            if isinstance(flags, int) and flags & write_flags or any(c in (mode or "") for c in "wax+"):
                if p != "/dev/null" and not inside(p):
                    raise PermissionError(f"sandbox: writing {p} (outside the working directory) is not allowed")
                written[0] += 1
                if written[0] > max_files:
                    raise PermissionError(f"sandbox: more than {max_files} files opened for writing")
        elif event in path_events:
            for i in path_events[event]:
                if not inside(args[i]):
                    raise PermissionError(f"sandbox: {event} on {args[i]!r} (outside the working directory) is not allowed")
            if isinstance(args[-1], int) and args[-1] != -1:
                raise PermissionError(f"sandbox: {event} relative to a directory descriptor is not allowed")

    def disabled(name):
        def refuse(*args, **kwargs):
            raise PermissionError(f"sandbox: {name} is disabled")

        return refuse

    sys.addaudithook(hook)
    for name in ("kill", "killpg", "system", "fork", "forkpty", "execv", "execve", "posix_spawn",
                 "posix_spawnp", "popen", "setuid", "chroot", "fchdir", "fchmod", "fchown"):
        if hasattr(os, name):
            setattr(os, name, disabled("os." + name))
    builtins.help = None


def writer(fd):
    import os
    write = os.write

    def send(data):
        data = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        while data:
            data = data[write(fd, data):]

    return send


def _main():
    import json, os, types

    fd = int(sys.argv[1])
    with os.fdopen(fd, "rb") as f:
        job = json.loads(f.read())
    sys.argv = ["solution.py"]
    sys.path.extend(job["site_paths"])  # -S skips site: the venv's packages, without its .pth hooks
    import builtins

    class Quitter:  # what site would install: exit() and quit() in scripts
        def __init__(self, name):
            self.name = name

        def __repr__(self):
            return f"Use {self.name}() to exit"

        def __call__(self, code=None):
            raise SystemExit(code)

    builtins.exit, builtins.quit = Quitter("exit"), Quitter("quit")
    role, code, lim = job["role"], job["code"], job["limits"]
    exit_now = os._exit
    nonce = job.get("nonce")
    report_fd = job.get("result_fd")
    send_report = writer(report_fd) if report_fd is not None else None

    def report(status, message):
        if send_report is not None:
            send_report(json.dumps({"nonce": nonce, "status": status, "message": message[:2000]}) + "\n")

    try:
        set_limits(lim, job["nproc"])
        if job["guard"] and role != "tester":
            install_guard(os.path.realpath(os.getcwd()), lim["max_files_written"])
    except BaseException as e:
        report("error", f"sandbox: setting up the limits failed ({type(e).__name__}: {e})")
        exit_now(0)

    if role == "tester":
        tester(job, report, json)
        exit_now(0)

    as_main, exit_ok = bool(job.get("as_main")), bool(job.get("exit_ok"))
    job_fds = (job.get("req_fd"), job.get("resp_fd"))
    entry = job.get("entry_point")
    del job
    module = types.ModuleType("__main__" if role == "script" and as_main else "__solution__")
    sys.modules["__main__"] = module
    try:
        exec(compile(code, "solution.py", "exec"), module.__dict__)
        outcome = ("passed", "")
    except SystemExit as e:
        if exit_ok and e.code in (None, 0):
            outcome = ("passed", "")
        else:
            outcome = ("failed", f"the program exited before its end (SystemExit: {e.code!r})")
    except BaseException as e:
        outcome = ("failed", describe(e))
    if role == "server":
        serve(module, entry, job_fds, outcome, json)
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass
    if role == "server":
        exit_now(0)
    report(*outcome)
    exit_now(0)  # skip atexit handlers and threads the program left behind


def serve(module, entry, fds, outcome, json):
    # the program side of run_check: answer each call with a plain value or an error, one JSON line each
    import os
    req_fd, resp_fd = fds
    send = writer(resp_fd)
    requests = os.fdopen(req_fd, "rb")
    fn = module.__dict__.get(entry) if outcome[0] == "passed" else None
    if outcome[0] != "passed":
        fatal = "the program failed before the tests: " + outcome[1]
    elif not callable(fn):
        fatal = f"the program does not define {entry}"
    else:
        fatal = ""
    while True:
        line = requests.readline(MAX_LINE)
        if not line:
            return
        if fatal:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:
                    pass
            send(json.dumps({"error": fatal}) + "\n")
            continue
        try:
            call = json.loads(line)
            args, kwargs = decode(call["args"]), decode(call["kwargs"])
            value = fn(*args, **kwargs)
            reply = json.dumps({"ok": encode(value)})
        except SystemExit as e:
            reply = json.dumps({"error": f"the program exited during a call (SystemExit: {e.code!r})"})
        except BaseException as e:
            try:
                reply = json.dumps({"error": "the program raised " + describe(e)})
            except BaseException:
                reply = '{"error": "the program raised an exception"}'
        for stream in (sys.stdout, sys.stderr):  # what it printed so far survives the kill that follows
            try:
                stream.flush()
            except BaseException:
                pass
        send(reply + "\n")


def tester(job, report, json):
    # the trusted side of run_check: the problem's own test code, with a stub for the candidate
    import os
    send = writer(job["req_fd"])
    replies = os.fdopen(job["resp_fd"], "rb")

    class CandidateError(Exception):
        pass

    def candidate(*args, **kwargs):
        try:
            send(json.dumps({"args": encode(list(args)), "kwargs": encode(kwargs)}) + "\n")
        except OSError:
            raise CandidateError("the program ended before it answered") from None
        line = replies.readline(MAX_LINE)
        if not line:
            raise CandidateError("the program ended before it answered")
        if not line.endswith(b"\n"):
            raise CandidateError("the program's reply is too long or cut off")
        try:
            reply = json.loads(line)
            if type(reply) is not dict or len(reply) != 1:
                raise ValueError("not a reply")
            if "ok" in reply:
                return decode(reply["ok"])
            message = reply["error"]
        except CandidateError:
            raise
        except BaseException as e:
            raise CandidateError(f"the program's reply is malformed ({type(e).__name__})") from None
        raise CandidateError(str(message)[:2000])

    ns = {"__name__": "__tester__"}
    try:
        exec(compile(job["code"], "test.py", "exec"), ns)
        ns[job["entry_point"]] = candidate
        ns["check"](candidate)
    except BaseException as e:
        line, tb = "", e.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == "test.py":
                line = f" (test line {tb.tb_lineno})"
            tb = tb.tb_next
        report("failed", f"{type(e).__name__}: {str(e)[:1500]}{line}")
        return
    report("passed", "")

"""

_HARNESS += "\n_main()\n"
