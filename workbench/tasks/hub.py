"""Where benchmark rows come from, and the fixed dev/test partition of test-only benchmarks.

Every benchmark family reads a local copy when ``$WORKBENCH_DATA_DIR/<folder>/`` exists (the same
files as the public release; `make test` points it at an offline copy) and the public Hugging Face dataset
otherwise. A hub failure (offline, gated, renamed) becomes a TaskError that says how to point the
loader at a local copy, never a traceback from deep inside `datasets`.

Test-only benchmarks (MATH-500, BBH, SVAMP, MAWPS, GPQA) get a `dev` split so prompts and settings
can be tuned without touching `test`: an item belongs to `dev` when a hash of its stable id falls
in one of `DEV_BUCKETS` buckets out of `BUCKETS` (about 20%), and `test` is every other item.
Membership depends only on the item's id, so it is the same for the hub and the local copy, and
for a partial copy (the shared SVAMP and MAWPS files hold a prefix of the full set).
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

from workbench.tasks.base import Task, TaskError, data_dir
from workbench.tasks.jsonl import read_jsonl

BUCKETS = 5
DEV_BUCKETS = 1  # 1 of 5 buckets: ~20% of a test-only benchmark is its dev split


def heldout_split(item_id: str) -> str:
    """'dev' or 'test' for an item of a test-only benchmark; a pure function of the item id."""
    bucket = int.from_bytes(hashlib.sha256(item_id.encode("utf-8")).digest()[:4], "big") % BUCKETS
    return "dev" if bucket < DEV_BUCKETS else "test"


def check_split(family: str, split: str, splits: tuple[str, ...], hint: str = "") -> None:
    """Raise a TaskError naming the family's splits when `split` is not one of them."""
    if split not in splits:
        raise TaskError(f"{family} has splits {', '.join(splits)}; got '{split}'{hint}")


def read_local(path: Path) -> list[dict[str, Any]]:
    """Rows of a local .jsonl, .json (BBH's {"examples": [...]}) or .csv file.

    A damaged copy (not UTF-8, invalid or too deeply nested JSON, rows that are not objects, a
    broken CSV) is a TaskError naming the file and how to fix it, never a traceback.
    """
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    fix = "fix or replace the file (the public release's copy)"
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); {fix}") from None
        except UnicodeDecodeError:
            raise TaskError(f"{path}: not UTF-8 text; {fix}") from None
        except RecursionError:
            raise TaskError(f"{path}: JSON nested too deeply to read; {fix}") from None
        except (OSError, ValueError) as e:
            raise TaskError(f"{path}: cannot read ({str(e)[:80]}); {fix}") from None
        rows = data.get("examples") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise TaskError(f"{path}: expected a list of row objects or {{'examples': [...]}}; {fix}")
        return rows
    if path.suffix == ".csv":
        try:
            with open(path, encoding="utf-8", newline="") as f:
                return list(csv.DictReader(f))
        except UnicodeDecodeError:
            raise TaskError(f"{path}: not UTF-8 text; {fix}") from None
        except (OSError, csv.Error) as e:
            raise TaskError(f"{path}: not a readable CSV file ({str(e)[:80]}); {fix}") from None
    raise TaskError(f"{path}: unsupported file type (expected .jsonl, .json or .csv)")


def local_or_hub(
    folder: str,
    filename: str,
    hub: tuple[str, str | None, str],
    *,
    gated: bool = False,
) -> list[dict[str, Any]]:
    """Rows from ``$WORKBENCH_DATA_DIR/<folder>/<filename>`` if that folder exists, else from the hub.

    `hub` is ``(dataset id, config name or None, split)`` for ``datasets.load_dataset``.
    """
    local = data_dir(folder)
    if local is not None:
        path = local / filename
        if not path.exists():
            raise TaskError(
                f"{path} is missing; $WORKBENCH_DATA_DIR/{folder} must hold {filename} "
                f"(the file of the public release), or unset WORKBENCH_DATA_DIR to use the hub"
            )
        return read_local(path)
    hub_id, config, split = hub
    try:
        import datasets

        return list(datasets.load_dataset(hub_id, config, split=split))
    except Exception as e:  # offline, gated, hub error: say how to fix it
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}" if str(e) else type(e).__name__
        access = (
            f"it is gated: accept its terms at https://huggingface.co/datasets/{hub_id}, then run "
            "`huggingface-cli login` or set HF_TOKEN; "
            if gated
            else ""
        )
        raise TaskError(
            f"could not load {hub_id}{'/' + config if config else ''} from the Hugging Face hub ({reason}); "
            f"{access}offline, set WORKBENCH_DATA_DIR to a folder holding {folder}/{filename}"
        ) from e


def interleave(groups: list[list[Any]]) -> list[Any]:
    """Round-robin over groups: [a0, b0, c0, a1, b1, ...], so the first N items cover every group."""
    out: list[Any] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def load_competition(family: str, split: str, limit: int, hub: tuple[str, str | None, str]) -> list[Task]:
    """A test-only competition set (AMC, AIME): `problem` + a numeric `answer`, checked by `math`."""
    from workbench.tasks.verify import normalise_number

    check_split(family, split, ("test",), "; it is test-only: tune on --task math500 --split dev")
    tasks = []
    for i, row in enumerate(local_or_hub(family, "test.jsonl", hub)[:limit]):
        question = row.get("problem") or row.get("question")
        gold = normalise_number(str(row.get("answer", "")))
        if not question or gold is None:
            raise TaskError(f"{family} row {i + 1} has no problem or no numeric answer")
        tasks.append(Task(f"{family}-{row.get('id', i)}", question, gold, "math", {"split": split}))
    return tasks
