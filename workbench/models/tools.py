"""Tool workers: team members whose answer comes from running something, behind the Backend interface.

    team.py.tool=python   team.py.model=default   team.py.description="writes and runs Python"
    team.calc.tool=calculator                      team.calc.description="evaluates arithmetic exactly"

* ``python`` (`PythonTool`): the member's model is asked to write a Python program that prints the
  answer; the program runs in the OS sandbox (`workbench.tasks.sandbox`, never anywhere else: a
  machine without a working sandbox is refused when the config is built) and the worker's
  response is the program, what it printed and ``Answer: <its last printed line>``.
* ``calculator`` (`Calculator`): no model. The arithmetic expression of the instruction (else of
  the whole request) is evaluated exactly with fractions by a whitelist walk of Python's AST
  (numbers, + - * / // % **, parentheses; nothing else parses), with bounded size and exponents;
  the response is ``<expression> = <value>`` and ``Answer: <value>``.

A tool that cannot answer (no program or expression, an exception, a timeout, a sandbox error, a
value out of bounds) still returns a generation: its text says what went wrong and
``Generation.tool`` carries ``status`` and ``reason``, which the episode records as a
``tool_error`` event and counts in ``meta.tool_failures``. It never raises into the episode.
"""

from __future__ import annotations

import ast
import re
import time
from dataclasses import replace
from fractions import Fraction

from workbench.models.base import Backend, Generation, Request
from workbench.tasks.sandbox import Program, SandboxLimits, run_many
from workbench.tasks.verify import MAX_DIGITS

PYTHON_SYSTEM = (
    "You are a Python tool. Solve the instruction by writing one short Python program that computes "
    "the answer and prints it as its last line. Reply with the program only, in a ```python block. "
    "Standard library only; no input, files or network."
)
MAX_EXPRESSION_CHARS = 300  # a longer candidate expression is not evaluated
MAX_EXPONENT = 4096  # |b| in a ** b
LIMIT = 10**MAX_DIGITS  # numerators and denominators stay below this (as verify.py's numbers do)
MAX_STDOUT_CHARS = 2000  # of a program's output, kept in the response
_CANDIDATE = re.compile(r"[-+*/×÷^().,\d\s]+")  # one character class: linear time on any text
MAX_CANDIDATES = 64  # expressions tried per text, longest first
_OPERATOR = re.compile(r"\d\s*(?:\*\*|[-+*/%×÷^])\s*[-+(.\d]")


class CalculatorError(ValueError):
    """The expression is not plain arithmetic, or its value is out of bounds; the message says which."""


def _check(value: Fraction) -> Fraction:
    if abs(value.numerator) >= LIMIT or value.denominator >= LIMIT:
        raise CalculatorError(f"the value needs more than {MAX_DIGITS} digits")
    return value


def _power(base: Fraction, exp: Fraction) -> Fraction:
    if exp.denominator != 1:
        raise CalculatorError("only whole-number exponents are evaluated")
    e = exp.numerator
    if abs(e) > MAX_EXPONENT:
        raise CalculatorError(f"exponent {e} is larger than {MAX_EXPONENT}")
    if base == 0 and e < 0:
        raise CalculatorError("division by zero")
    bits = max(abs(base.numerator).bit_length(), base.denominator.bit_length())
    if bits * abs(e) > MAX_DIGITS * 3.33 + 8:  # log2(10) ~ 3.32: the result would pass LIMIT
        raise CalculatorError(f"the value needs more than {MAX_DIGITS} digits")
    return _check(base**e)


def _walk(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _walk(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _check(Fraction(str(node.value)) if isinstance(node.value, float) else Fraction(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        value = _walk(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        a, b = _walk(node.left), _walk(node.right)
        op = node.op
        if isinstance(op, ast.Pow):
            return _power(a, b)
        if isinstance(op, ast.Div | ast.FloorDiv | ast.Mod) and b == 0:
            raise CalculatorError("division by zero")
        if isinstance(op, ast.Add):
            return _check(a + b)
        if isinstance(op, ast.Sub):
            return _check(a - b)
        if isinstance(op, ast.Mult):
            return _check(a * b)
        if isinstance(op, ast.Div):
            return _check(a / b)
        if isinstance(op, ast.FloorDiv):
            return Fraction(a // b)
        if isinstance(op, ast.Mod):
            return _check(a % b)
    raise CalculatorError(f"'{type(node).__name__}' is not arithmetic")


def evaluate_expression(text: str) -> Fraction:
    """The exact value of an arithmetic expression (``×``, ``÷``, ``^`` and thousands commas read as
    Python's operators and digits); CalculatorError for anything else."""
    expr = text.strip().replace("×", "*").replace("÷", "/").replace("^", "**").replace("\u2212", "-")
    expr = re.sub(r"(?<=\d),(?=\d{3}\b)", "", expr)
    if not expr or len(expr) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression is empty or longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise CalculatorError(f"not an arithmetic expression: {expr[:60]!r}") from None
    try:
        return _walk(tree)
    except RecursionError:
        raise CalculatorError("expression nested too deeply") from None


def format_value(value: Fraction) -> str:
    """An integer, a terminating decimal (at most 12 places) or ``p/q``."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d == 1:
        for places in range(1, 13):
            scaled = value * 10**places
            if scaled.denominator == 1:
                sign = "-" if scaled < 0 else ""
                digits = str(abs(scaled.numerator)).rjust(places + 1, "0")
                return f"{sign}{digits[:-places]}.{digits[-places:]}"
    return f"{value.numerator}/{value.denominator}"


def _instruction(text: str) -> str:
    """The conductor's instruction in a worker's turn ("Your instruction: ..." up to a blank line)."""
    marker = text.rfind("Your instruction:")
    if marker < 0:
        return ""
    return text[marker + len("Your instruction:") :].split("\n\n", 1)[0]


def find_expression(text: str) -> tuple[str, Fraction] | None:
    """The longest arithmetic expression (with an operator) in the instruction, else in the whole
    text, that evaluates; or a lone number when there is no operator anywhere; None if neither."""
    for part in (_instruction(text), text):
        runs = {p.strip().strip(",") for c in _CANDIDATE.findall(part) for p in re.split(r",\s", c)}
        candidates = sorted((c for c in runs if _OPERATOR.search(c)), key=len, reverse=True)
        for c in candidates[:MAX_CANDIDATES]:
            for cut in (c, c.strip("()"), c.rstrip(".")):
                try:
                    return cut, evaluate_expression(cut)
                except CalculatorError:
                    continue
    return None


def _tool_generation(text: str, tool: dict, t0: float, base: Generation | None = None) -> Generation:
    tool = {**tool, "duration_s": round(time.perf_counter() - t0, 4)}
    if base is not None:  # the model's tokens are what the call cost; the text is the tool's
        return replace(base, text=text, latency_s=base.latency_s + tool["duration_s"], tool=tool)
    return Generation(text, [], 0, 0, "stop", tool["duration_s"], tool=tool)


class Calculator:
    """The calculator tool worker: no model; see the module docstring."""

    name = "tool:calculator"

    def generate(self, requests: list[Request]) -> list[Generation]:
        out = []
        for req in requests:
            t0 = time.perf_counter()
            user = [m["content"] for m in req.messages if m.get("role") == "user"]
            text = user[-1] if user else ""
            found = find_expression(text)
            if found is None:
                reason = "no arithmetic expression that evaluates in the instruction or the question"
                gen = _tool_generation(
                    f"Calculator: {reason}.",
                    {"tool": "calculator", "status": "no_expression", "reason": reason},
                    t0,
                )
            else:
                expr, value = found
                shown = format_value(value)
                gen = _tool_generation(
                    f"{expr} = {shown}\nAnswer: {shown}",
                    {"tool": "calculator", "status": "ok", "reason": "", "expression": expr},
                    t0,
                )
            out.extend(replace(gen) for _ in range(req.sampling.n))
        return out


class PythonTool:
    """The Python tool worker: ``inner`` writes a program, the OS sandbox runs it (module docstring)."""

    def __init__(self, inner: Backend, timeout_s: float = 10.0, memory_mb: int = 1024):
        self.inner = inner
        self.name = f"tool:python({inner.name})"
        self.limits = SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb)

    def generate(self, requests: list[Request]) -> list[Generation]:
        from workbench.tasks.code import extract_code

        asked = [Request(self._messages(r.messages), r.sampling) for r in requests]
        written = self.inner.generate(asked)
        codes = [extract_code(g.text) if g.finish_reason != "error" else None for g in written]
        to_run = [i for i, c in enumerate(codes) if c]
        t0 = time.perf_counter()
        results = run_many(
            [Program(codes[i], as_main=True, exit_ok=True) for i in to_run],
            self.limits,
            workers=2,
            allow_unsandboxed=False,  # tool workers never run code outside the OS sandbox
        )
        by_index = dict(zip(to_run, results, strict=True))
        return [self._response(g, codes[i], by_index.get(i), t0) for i, g in enumerate(written)]

    @staticmethod
    def _messages(messages) -> list[dict[str, str]]:
        system = [m["content"] for m in messages if m.get("role") == "system"]
        rest = [dict(m) for m in messages if m.get("role") != "system"]
        content = PYTHON_SYSTEM + ("\n\n" + "\n\n".join(system) if system else "")
        return [{"role": "system", "content": content}, *rest]

    def _response(self, gen: Generation, code: str | None, result, t0: float) -> Generation:
        tool = {"tool": "python"}
        if gen.finish_reason == "error":
            reason = f"the model call failed: {gen.error}"
            return _tool_generation("", {**tool, "status": "error", "reason": reason}, t0, gen)
        if not code:
            reason = "the model wrote no Python program that parses"
            text = f"{gen.text}\n\n(Python tool: {reason}.)"
            return _tool_generation(text, {**tool, "status": "no_code", "reason": reason}, t0, gen)
        shown = f"```python\n{code}\n```"
        stdout = (result.stdout or "")[-MAX_STDOUT_CHARS:]
        lines = [line.strip() for line in stdout.splitlines() if line.strip()]
        if result.status == "passed" and lines:
            last = lines[-1] if lines[-1].lower().startswith("answer") else f"Answer: {lines[-1]}"
            text = f"{shown}\nOutput:\n{stdout.strip()}\n{last}"
            return _tool_generation(text, {**tool, "status": "ok", "reason": ""}, t0, gen)
        if result.status == "passed":
            status, reason = "failed", "the program printed nothing"
        else:
            status, reason = ("timeout" if result.status == "timeout" else result.status), result.message
        reason = " ".join(str(reason).split())[:300]
        text = f"{shown}\nThe program did not give an answer ({status}: {reason})."
        return _tool_generation(text, {**tool, "status": status, "reason": reason}, t0, gen)
