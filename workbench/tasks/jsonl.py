"""Bring your own data: ``--task jsonl:PATH`` with settable field names.

Each line is a JSON object with a question and a numeric answer (field names set with
``--set task.question_field=... task.answer_field=...``). A malformed line stops loading with
an error naming the file and line, unless ``--set task.on_bad_row=skip``, which skips it and
counts it in the run's summary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from workbench.tasks.base import Task, TaskError
from workbench.tasks.verify import normalise_number


@dataclass(frozen=True)
class JsonlOptions:
    question_field: str = "question"  # the field holding the question text
    answer_field: str = "answer"  # the field holding the gold answer (a number, or text ending in '#### N')
    id_field: str = ""  # optional field with a stable item id; default: the line number
    on_bad_row: str = "error"  # "error": stop with the line number; "skip": skip and count it

    def __post_init__(self) -> None:
        if self.on_bad_row not in ("error", "skip"):
            raise TaskError(f"task.on_bad_row must be 'error' or 'skip', got '{self.on_bad_row}'")


MAX_ANSWER_CHARS = 1000  # the part of a gold answer read as a number


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def iter_rows(path: Path):
    """Yield (line number, row dict or TaskError) for every non-empty line of a JSONL file.

    Total over any file content: bytes that are not UTF-8, invalid JSON, NaN/Infinity, numbers
    too long to read, nesting too deep to parse and non-object lines each give a TaskError for
    that line (the caller stops or skips); an unreadable file is a TaskError.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the with below; open errors are reported)
    except OSError as e:
        raise TaskError(f"{path}: cannot read ({e.strerror or e}); give a readable JSONL file") from None
    with f:
        lineno = 0
        while True:
            try:
                raw = f.readline()
            except OSError as e:
                raise TaskError(f"{path}:{lineno + 1}: read failed ({e.strerror or e})") from None
            if not raw:
                return
            lineno += 1
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield (
                    lineno,
                    TaskError(f"{path}:{lineno}: not UTF-8 text (byte {e.start}); is it a JSONL file?"),
                )
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line, parse_constant=_no_constants)
            except json.JSONDecodeError as e:
                yield lineno, TaskError(f"{path}:{lineno}: not valid JSON ({e.msg})")
                continue
            except RecursionError:
                yield lineno, TaskError(f"{path}:{lineno}: JSON nested too deeply to read")
                continue
            except ValueError as e:  # NaN/Infinity, an integer of more than 4300 digits
                yield lineno, TaskError(f"{path}:{lineno}: not valid JSON ({str(e)[:80]})")
                continue
            if not isinstance(row, dict):
                yield lineno, TaskError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
                continue
            yield lineno, row


def read_jsonl(path: Path) -> list[dict]:
    """Every line of a JSONL file as a dict; a bad line raises TaskError naming file and line."""
    rows = []
    for _, row in iter_rows(path):
        if isinstance(row, TaskError):
            raise TaskError(f"{row}; fix or remove that line")
        rows.append(row)
    return rows


def load(path: str, limit: int, options: JsonlOptions) -> tuple[list[Task], list[str]]:
    """Tasks from a JSONL file and the messages for rows that were skipped."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise TaskError(
            f"jsonl task file '{path}' does not exist; use --task jsonl:PATH with a readable file"
        )
    tasks, skipped = [], []
    seen: dict[str, int] = {}  # item id -> line: ids pair episodes across runs, so they must be unique
    for lineno, row in iter_rows(p):
        if len(tasks) >= limit:
            break
        try:
            if isinstance(row, TaskError):
                raise row
            task = _task_from_row(p, lineno, row, options)
            if task.id in seen:
                raise TaskError(
                    f"{p}:{lineno}: duplicate id '{task.id[:60]}' (first on line {seen[task.id]})"
                )
            seen[task.id] = lineno
            tasks.append(task)
        except TaskError as e:
            if options.on_bad_row == "error":
                raise TaskError(f"{e}; or pass --set task.on_bad_row=skip to skip such rows") from None
            skipped.append(str(e))
    return tasks, skipped


def _scalar_text(p: Path, lineno: int, row: dict, name: str) -> str:
    """A field that must hold text or a number, as text; a TaskError for lists, objects, null, bools."""
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TaskError(
            f"{p}:{lineno}: field '{name[:60]}' must be text or a number, got {type(value).__name__}"
        )
    return str(value)


def _task_from_row(p: Path, lineno: int, row: dict, o: JsonlOptions) -> Task:
    for name in (o.question_field, o.answer_field):
        if name not in row:
            fields = ", ".join(k[:40] for k in list(row)[:20])
            raise TaskError(
                f"{p}:{lineno}: missing field '{name}' (fields: {fields}); "
                "set the field names with --set task.question_field=... task.answer_field=..."
            )
    question = _scalar_text(p, lineno, row, o.question_field)
    if not question.strip():
        raise TaskError(f"{p}:{lineno}: the question field '{o.question_field}' is empty")
    raw = _scalar_text(p, lineno, row, o.answer_field)
    number = (raw.rpartition("####")[2] if "####" in raw else raw).strip()
    if len(number) > MAX_ANSWER_CHARS:
        raise TaskError(f"{p}:{lineno}: answer is {len(number)} characters, not a number we read")
    try:
        gold = normalise_number(number)
    except (ValueError, ArithmeticError):  # a number too large to read as one
        gold = None
    if gold is None:
        raise TaskError(f"{p}:{lineno}: answer {raw[:60]!r} is not a number")
    item_id = f"{p.stem}-{lineno}"
    if o.id_field and o.id_field in row:
        item_id = _scalar_text(p, lineno, row, o.id_field)
    return Task(item_id, question, gold, "numeric", {"source": str(p), "line": lineno})
