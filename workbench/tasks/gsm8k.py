"""GSM8K (openai/grade-school-math): from $WORKBENCH_DATA_DIR/gsm8k/{train,test}.jsonl or the hub.

Splits: `test` is the official test split; `dev` is the last 500 problems of the official train
split, held out from `train` (the first 6973), so prompts and settings can be tuned on `dev`
without touching `test`. The shared offline copy of the test file holds only its first 1000
problems: results on it are partial-test results, say so in reports.
"""

from __future__ import annotations

from workbench.tasks.base import Task, TaskError, data_dir
from workbench.tasks.jsonl import read_jsonl
from workbench.tasks.verify import normalise_number

SPLITS = ("train", "dev", "test")
DEV_SIZE = 500
HUB_ID = ("openai/gsm8k", "main")


def gold_from_solution(solution: str) -> str | None:
    """The number after '#### ' in a GSM8K solution."""
    _, sep, tail = solution.rpartition("####")
    return normalise_number(tail.strip()) if sep else None


def _rows(file_split: str) -> list[dict]:
    local = data_dir("gsm8k")
    if local is not None:
        path = local / f"{file_split}.jsonl"
        if not path.exists():
            raise TaskError(
                f"{path} is missing; $WORKBENCH_DATA_DIR/gsm8k must hold train.jsonl and test.jsonl"
            )
        return read_jsonl(path)
    try:
        import datasets

        return list(datasets.load_dataset(*HUB_ID, split=file_split))
    except Exception as e:  # offline, hub error: say how to point at a local copy
        raise TaskError(
            f"could not load gsm8k from the hub ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "offline, set WORKBENCH_DATA_DIR to a folder holding gsm8k/train.jsonl and gsm8k/test.jsonl"
        ) from e


def load(split: str, limit: int) -> list[Task]:
    if split not in SPLITS:
        raise TaskError(f"gsm8k has splits {', '.join(SPLITS)}; got '{split}'")
    rows = _rows("test" if split == "test" else "train")
    if split == "train":
        rows, offset = rows[:-DEV_SIZE], 0
    elif split == "dev":
        rows, offset = rows[-DEV_SIZE:], len(rows) - DEV_SIZE
    else:
        offset = 0
    tasks = []
    for i, row in enumerate(rows[:limit]):
        gold = gold_from_solution(str(row.get("answer", "")))
        if "question" not in row or gold is None:
            raise TaskError(f"gsm8k {split} row {offset + i + 1} has no question or no '#### N' answer")
        file_split = "test" if split == "test" else "train"
        tasks.append(
            Task(f"gsm8k-{file_split}-{offset + i}", row["question"], gold, "numeric", {"split": split})
        )
    return tasks
