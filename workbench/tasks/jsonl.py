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


def iter_rows(path: Path):
    """Yield (line number, row dict or TaskError) for every non-empty line of a JSONL file."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, TaskError(f"{path}:{lineno}: not valid JSON ({e.msg})")
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
    for lineno, row in iter_rows(p):
        if len(tasks) >= limit:
            break
        try:
            if isinstance(row, TaskError):
                raise row
            tasks.append(_task_from_row(p, lineno, row, options))
        except TaskError as e:
            if options.on_bad_row == "error":
                raise TaskError(f"{e}; or pass --set task.on_bad_row=skip to skip such rows") from None
            skipped.append(str(e))
    return tasks, skipped


def _task_from_row(p: Path, lineno: int, row: dict, o: JsonlOptions) -> Task:
    for name in (o.question_field, o.answer_field):
        if name not in row:
            raise TaskError(
                f"{p}:{lineno}: missing field '{name}' (fields: {', '.join(row)}); "
                "set the field names with --set task.question_field=... task.answer_field=..."
            )
    raw = str(row[o.answer_field])
    gold = normalise_number(raw.rpartition("####")[2] if "####" in raw else raw)
    if gold is None:
        raise TaskError(f"{p}:{lineno}: answer '{raw[:60]}' is not a number")
    item_id = str(row[o.id_field]) if o.id_field and o.id_field in row else f"{p.stem}-{lineno}"
    return Task(item_id, str(row[o.question_field]), gold, "numeric", {"source": str(p), "line": lineno})
