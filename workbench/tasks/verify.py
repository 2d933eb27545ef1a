"""Answer extraction and checking: pure functions, no model, no I/O (math-verify runs in a helper process).

`extract_number` reads a model's free text and returns the number it committed to, or None
(a format failure). Preference order: an explicit marker ("Answer: 42", "the answer is 42",
"#### 42", "\\boxed{42}"), the last one if several; otherwise the last number in the text. An
equation right after the marker is read to its result ("the answer is 8 - 3 = 5" is 5).
`numbers_equal` compares two numeric strings exactly for integers and fractions, with a small
relative tolerance for decimals.

Total and bounded on any input (a model's output is data, never a reason to crash or hang):
* every pattern is linear-time: no two adjacent quantifiers can share characters (possessive
  ``*+`` / atomic ``(?>...)`` groups where they could), and the equation reader's terms are atomic,
  so ``"The answer is " + "1/" * 40 + "x"`` or a run of spaces after a marker costs one pass;
* a verifier reads at most the last ``MAX_REPLY_CHARS`` characters of a reply (`safe_extract`);
* numbers are exact `Fraction`s parsed from bounded digit strings (``MAX_DIGITS`` per part, no
  ``int(str)`` past Python's 4300-digit limit, no float overflow): a longer number is not read;
  scientific notation (``2.5e3``, ``2.5 \\times 10^{3}``, ``10^400``) is read exactly;
* `safe_extract` / `safe_check` turn any exception into (None / False, "Type: message"): the
  episode records a ``verifier_error`` event and counts the answer wrong (workbench/protocols/base.py);
* math-verify runs in a helper process with a hard deadline (``MATH_TIMEOUT_S``), which also stops
  C code that a SIGALRM cannot interrupt, from any thread.

Slow checks run off the event loop: a verifier kind marked ``slow`` (code: the sandbox; math: the
math-verify helper) has its checks run by an episode on `verifier_pool()`, a thread pool of
``VERIFY_WORKERS`` threads (``$WORKBENCH_VERIFY_WORKERS`` overrides it; 0 runs them on the loop as
before), while the other episodes keep generating (workbench/protocols/base.py). The episode's
verification budget goes with each check to the worker thread (`contextvars.copy_context`).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from workbench.tasks.code import check_code, extract_code

MAX_REPLY_CHARS = 100_000  # a verifier reads at most the last this many characters of a reply
MAX_DIGITS = 2_000  # a number whose parts (or value) need more digits is not read (never an error)
MATH_MAX_CHARS = 2_000  # a math answer (or gold) longer than this is wrong without calling math-verify
MATH_STEP_TIMEOUT_S = 5  # math-verify's own alarm per parse and per comparison (as before)
MATH_TIMEOUT_S = 20.0  # hard deadline of one math comparison in the helper process
MATH_MEMORY_BYTES = 4 << 30  # address-space cap of the helper process
EPISODE_BUDGET_S = 60.0  # verification time one episode may spend, all its extractions and checks together
# checks of slow verifier kinds that run at once, on worker threads (0: on the event loop, one at a time)
VERIFY_WORKERS = min(4, os.cpu_count() or 1)
VERIFY_WORKERS_MAX = 64

_LIMIT = 10**MAX_DIGITS

# ---- numbers ----

# A minus sign is a sign only when it does not follow a word or a closing bracket ("7-9" is 7 and 9).
_SIGN = r"(?:(?<![\w)\]])-)?"
_POW10 = r"10\^(?:\{\s*+[-+]?\d+\s*+\}|[-+]?\d+)"  # 10^3, 10^{-3}
_EXP = r"(?:[eE][-+]?\d+|\s*+(?:×|\\times|\\cdot|\*|x)\s*+" + _POW10 + ")"  # 2.5e3, 2.5 \times 10^{3}
# a number without a fraction bar: sign, currency, digits (1,234 or 1234), decimals, exponent
_SIMPLE = _SIGN + r"[$€£]?(?:" + _POW10 + r"|(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?" + _EXP + "?)"
_NUM = _SIMPLE + r"(?:/\d+)?"
# "8 - 3 = ", "2 x 3 + 1 = 7 - 1 = ": terms joined by operators, each chain ending in "=" (optional).
# Terms are atomic simple numbers: "8/2" is 8, "/", 2 (the same chains as with fraction terms, but
# one way to read each, so a long "1/1/1/..." is one pass instead of exponentially many).
_TERM = "(?>" + _SIMPLE + ")"
_CHAIN = _TERM + r"(?:\s*+[-+*/×x÷]\s*+" + _TERM + ")+"
_EQUATION = "(?:" + _CHAIN + r"\s*+=\s*+)*"
_MARKERS = [
    re.compile(r"####\s*+(" + _NUM + ")"),
    re.compile(r"\\boxed\{\s*+(" + _NUM + r")\s*\}"),
    # "the answer is 8 - 3 = 5" commits to 5, not 8: an equation after the marker is read to its result
    re.compile(r"answer\s*+(?:is|:|=)?+\s*+[:=]?+\s*+\**+\s*+" + _EQUATION + "(" + _NUM + ")", re.IGNORECASE),
]
_ANY_NUM = re.compile(_NUM)
# the parts of one matched number: sign, 10^k alone, digits, decimals, exponent (two spellings), denominator
_NUM_PARTS = re.compile(
    r"(-?)[$€£]?(?:10\^\{?\s*([-+]?\d+)\s*\}?|([\d,]+)(?:\.(\d+))?"
    r"(?:[eE]([-+]?\d+)|\s*(?:×|\\times|\\cdot|\*|x)\s*10\^\{?\s*([-+]?\d+)\s*\}?)?)(?:/(\d+))?"
)
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{\s*+(-?\d+)\s*+\}\{\s*+(\d+)\s*+\}")


def _prepare(text: str) -> str:
    """Undo typography that hides numbers: unicode minus, LaTeX fractions (\\frac{3}{4} -> 3/4),
    escaped dollars and LaTeX thousands separators (1{,}000, 1,\\!000)."""
    text = text.replace("\u2212", "-").replace("\\$", "$").replace("{,}", ",").replace(",\\!", ",")
    return _LATEX_FRAC.sub(r"\1/\2", text)


def _fraction(text: str) -> Fraction | None:
    """The exact value of one matched number; None when it needs more than MAX_DIGITS digits."""
    m = _NUM_PARTS.fullmatch(text)
    if m is None:
        return None
    sign, power, whole, decimals, exp_e, exp_10, den = m.groups()
    if power is not None:
        digits, exponent = "1", power
    else:
        digits, exponent = whole.replace(",", "") + (decimals or ""), exp_e or exp_10 or "0"
    if len(digits) > MAX_DIGITS or len(exponent) > 6 or (den is not None and len(den) > MAX_DIGITS):
        return None
    shift = int(exponent) - len(decimals or "")
    if abs(shift) > MAX_DIGITS:
        return None
    value = Fraction(int(digits) * 10**shift) if shift >= 0 else Fraction(int(digits), 10**-shift)
    if den is not None:
        if int(den) == 0:
            return None
        value /= int(den)
    if abs(value.numerator) >= _LIMIT or value.denominator >= _LIMIT:
        return None
    return -value if sign else value


def parse_number(s: str) -> Fraction | None:
    """'1,234' -> 1234, '$5.50' -> 11/2, '3/4' -> 3/4, '2.5e3' -> 2500, '12 apples' -> 12, 'x' -> None."""
    m = _ANY_NUM.search(s.replace("\u2212", "-"))
    return None if m is None else _fraction(m.group(0))


def extract_number(text: str) -> str | None:
    """The number a free-text answer commits to, as a normalised string; None if there is none."""
    text = _prepare(text)
    for pattern in _MARKERS:
        hits = pattern.findall(text)
        if hits:
            return normalise_number(hits[-1])
    hits = _ANY_NUM.findall(text)
    return normalise_number(hits[-1]) if hits else None


def normalise_number(s: str) -> str | None:
    """Canonical string of a number: '1,000.50' -> '1000.5', '6/4' -> '3/2', '-0' -> '0', '2.5e3' -> '2500'."""
    value = parse_number(s)
    if value is None:
        return None
    if value.denominator == 1:
        return str(value.numerator)
    try:
        as_float = float(value)
    except OverflowError:  # beyond a float: the exact fraction
        as_float = None
    if as_float is not None and Fraction(repr(as_float)) == value:  # a terminating decimal
        return repr(as_float)
    return f"{value.numerator}/{value.denominator}"


def numbers_equal(predicted: str | None, gold: str, rel_tol: float = 1e-6) -> bool:
    if predicted is None:
        return False
    a, b = parse_number(predicted), parse_number(gold)
    if a is None or b is None:
        return False
    if a == b:
        return True
    try:
        return abs(float(a) - float(b)) <= rel_tol * max(1.0, abs(float(b)))
    except OverflowError:  # beyond a float: the same test, exactly
        return abs(a - b) <= Fraction(rel_tol) * max(1, abs(b))


# ---- where a free-text reply states its answer (shared by the choice, exact and math kinds) ----

# "Answer: X", "The answer is X", "final answer: X"; a bare "answer" ("let me answer this") is not one.
_MARK = r"answer(?:\s++to\s++(?:this|the)\s++(?:question|problem))?+\s*+(?:is\s*+:?+|:|=)"
_ANSWER_MARK = re.compile(_MARK, re.IGNORECASE)


def _strip_wrapping(s: str) -> str:
    """Remove markdown bold, math dollars, quotes and a trailing full stop around an answer."""
    s = s.strip().strip("*").strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "$\"'`":
        s = s[1:-1].strip()
    return s.rstrip(".").strip().strip("*").strip()


def answer_span(text: str) -> str | None:
    """What follows the last answer marker, to the end of its line (or the next line when the
    marker ends its line); None when the text has no marker."""
    last = None
    for last in _ANSWER_MARK.finditer(text):  # noqa: B007 (only the last one is wanted)
        pass
    if last is None:
        return None
    rest = text[last.end() :]
    first, _, after = rest.partition("\n")
    if first.strip():
        return _strip_wrapping(first)
    for line in after.split("\n"):
        if line.strip():
            return _strip_wrapping(line)
    return None


# ---- choice: multiple choice, a letter or the option's text ----

_LETTER_AFTER_MARK = re.compile(
    _MARK + r"[*\s]*+(?:option\s++|choice\s++)?+\(?([A-Z])\)?(?![\w'])", re.IGNORECASE
)
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")


def _norm_text(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s.%/-]", " ", s.lower()).split()).rstrip(".")


def _find_option(span: str, options: list[str]) -> int | None:
    """The one option whose text appears in `span` as whole words; None if none or several do."""
    text = f" {_norm_text(span)} "
    names = [_norm_text(str(o)) for o in options]
    found = [i for i, name in enumerate(names) if name and f" {name} " in text]
    if len(found) > 1:  # "dog" inside "hot dog": drop an option found only as part of another
        found = [i for i in found if not any(j != i and names[i] in names[j] for j in found)]
    return found[0] if len(found) == 1 else None


def extract_choice(text: str, options: list[str]) -> str | None:
    """The option letter a reply commits to, or None.

    In order: a letter after the last answer marker ("Answer: (B)", "the answer is B"); an
    option's text after that marker ("Answer: 12/25/1937"); the last "(B)" in the text; the one
    option whose text the reply contains; a reply that is only a letter ("B", "B.").
    Letters must be uppercase and name one of the options; lowercase "a" is an article.
    """
    letters = string.ascii_uppercase[: len(options)]
    marked = [m.group(1) for m in _LETTER_AFTER_MARK.finditer(text)]
    marked = [x for x in marked if x in letters and x.isupper()]
    span = answer_span(text)
    if span is not None:
        alone = re.fullmatch(r"\(?([A-Za-z])\)?[.:]?", span)  # "Answer: b" names option B
        if alone and alone.group(1).upper() in letters:
            return alone.group(1).upper()
        hits = [m.group(1) for m in _LETTER_AFTER_MARK.finditer("answer: " + span)]
        if hits and hits[-1] in letters and hits[-1].isupper():
            return hits[-1]
        i = _find_option(span, options)
        if i is not None:
            return letters[i]
    if marked:
        return marked[-1]
    parens = [x for x in _PAREN_LETTER.findall(text) if x in letters]
    if parens:
        return parens[-1]
    i = _find_option(text, options)
    if i is not None:
        return letters[i]
    bare = re.fullmatch(r"\s*+\(?([A-Z])\)?[.:]?\s*", text)
    return bare.group(1) if bare and bare.group(1) in letters else None


# ---- exact: exact match after normalisation (BBH's free-form targets) ----

_BRACKETS = set("()[]{}<>")


def normalise_exact(s: str, fmt: str = "text") -> str:
    """Canonical form of an answer for exact matching, by answer format.

    `dyck`: only the bracket characters, space-separated ("]]" -> "] ]"); `words`: lowercase words,
    commas and line breaks ignored; `number`: the numeric normal form; `labels`/`text`: lowercase,
    whitespace collapsed, wrapping and a final full stop removed, "(A)" -> "a".
    """
    if fmt == "dyck":
        return " ".join(c for c in s if c in _BRACKETS)
    if fmt == "words":
        return " ".join(re.split(r"[\s,;]+", s.lower())).strip()
    if fmt == "number":
        return normalise_number(s) or _strip_wrapping(s).lower()
    s = " ".join(_strip_wrapping(s).lower().split())
    m = re.fullmatch(r"\(([a-z])\)", s)
    return m.group(1) if m else s


def extract_exact(text: str, fmt: str = "text", labels: tuple[str, ...] | list[str] = ()) -> str | None:
    """The normalised answer of a reply for an exact-match task with answer format `fmt`.

    `labels`: the last of the labels (True/False, ...) after the answer marker, else in the whole
    reply. `number`: as the numeric verifier. `dyck`/`words`/`text`: the answer marker's span,
    else the last non-empty line. None when nothing usable is there.
    """
    if fmt == "number":
        return extract_number(text)
    span = answer_span(text)
    if fmt == "labels" and labels:
        pattern = re.compile(r"\b(" + "|".join(re.escape(str(x)) for x in labels) + r")\b", re.IGNORECASE)
        for where in (span, text):
            hits = pattern.findall(where or "")
            if hits:
                return hits[-1].lower()
        return None
    if span is None:
        lines = [line for line in text.strip().split("\n") if line.strip()]
        span = _strip_wrapping(lines[-1]) if lines else None
    if not span:
        return None
    value = normalise_exact(span, fmt)
    return value or None


# ---- math: symbolic equivalence with math-verify (\boxed{}, LaTeX, intervals, tuples) ----

_BRACE = re.compile(r"[{}]")


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} or \\fbox{...}, with nested braces; None if there is none."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for m in _BRACE.finditer(text, i):
        depth += 1 if m.group() == "{" else -1
        if depth == 0:
            return text[i : m.start()].strip()
    return None  # unbalanced: the reply was cut off inside the box


def extract_math(text: str) -> str | None:
    """The final answer of a math reply as a LaTeX/plain string: the last \\boxed{}, else what
    follows the last answer marker, else the last number; None if there is none."""
    boxed = last_boxed(text)
    if boxed:
        return boxed
    span = answer_span(text)
    if span:
        return span.strip("$ ").rstrip(".") or None
    hits = _ANY_NUM.findall(_prepare(text))
    return hits[-1].replace("$", "") if hits else None


class VerifierTimeout(Exception):
    """A verification ran past its time limit; the answer is counted wrong (a ``verifier_error``).

    ``final``: the answer itself took the whole ``MATH_TIMEOUT_S`` (so it is cached as a timeout);
    False when only this episode's remaining budget, or the wait for the helper, cut it short.
    """

    def __init__(self, message: str, final: bool = True):
        super().__init__(message)
        self.final = final


def _math_parse(s: str, timeout: int | None) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    body = s.strip().strip("$").strip()
    return parse(
        "$" + body + "$",
        [LatexExtractionConfig(), ExprExtractionConfig()],
        parsing_timeout=timeout,
    )


def _math_equal_here(predicted: str, gold: str, timeout: int | None) -> bool:
    """math-verify in this process: its SIGALRM bounds each step on the main thread only."""
    from math_verify import verify

    gold_parsed, pred_parsed = _math_parse(gold, timeout), _math_parse(predicted, timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


def _math_worker_main() -> None:
    """The helper process: one JSON ``[predicted, gold]`` per line in, ``1`` or ``0`` per line out."""
    import logging
    import resource

    out = os.fdopen(os.dup(1), "w")  # the answers' channel; stray prints of libraries go to stderr
    os.dup2(2, 1)
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MATH_MEMORY_BYTES, MATH_MEMORY_BYTES))
    except (ValueError, OSError):
        pass
    import math_verify  # noqa: F401 (imported before saying ready)

    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            predicted, gold = json.loads(line)
            ok = _math_equal_here(predicted, gold, MATH_STEP_TIMEOUT_S)
        except BaseException as e:  # math-verify's own timeout is a BaseException
            if isinstance(e, KeyboardInterrupt | SystemExit):
                raise
            ok = False
        out.write("1\n" if ok else "0\n")
        out.flush()


class _MathHelper:
    """One helper process running math-verify, restarted after a timeout or a crash.

    A deadline here stops anything (C code included) from any thread, which math-verify's SIGALRM
    cannot. Calls are serialised by a lock; a fork (a new pid) starts its own helper.
    """

    START_TIMEOUT_S = 120.0  # importing sympy on a loaded 2-core machine

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._pid = -1
        self.unavailable = False  # the helper cannot start here: verify in-process as before

    def _start(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # so that the helper imports this workbench
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        code = "from workbench.tasks.verify import _math_worker_main; _math_worker_main()"
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal is the parent's to handle
        )
        self._pid = os.getpid()
        if self._readline(self.START_TIMEOUT_S) != b"ready":
            self.close()
            raise OSError("the math-verify helper process did not start")

    def _readline(self, timeout: float) -> bytes | None:
        """One line from the helper, or None on timeout or end of file."""
        fd = self._proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 64)
            if not chunk:
                return None
            buf += chunk
        return buf.strip()

    def close(self) -> None:
        if self._proc is not None and self._pid == os.getpid():
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def equal(self, predicted: str, gold: str) -> bool:
        # episodes on other threads wait for the helper; the wait is bounded by this one's budget
        wait = budget_left()
        if not self._lock.acquire(timeout=-1 if wait == float("inf") else max(0.0, wait)):
            raise VerifierTimeout("math-verify was busy with other episodes for this episode's budget", False)
        try:
            if self._proc is None or self._pid != os.getpid() or self._proc.poll() is not None:
                self._proc = None
                self._start()
            self._proc.stdin.write(json.dumps([predicted, gold]).encode() + b"\n")
            self._proc.stdin.flush()
            limit = min(MATH_TIMEOUT_S, max(0.0, budget_left()))
            answer = self._readline(limit)
            if answer in (b"0", b"1"):
                return answer == b"1"
            self.close()  # a late answer must not be read as the next request's
        finally:
            self._lock.release()
        if answer is None:
            raise VerifierTimeout(
                f"math-verify took longer than {limit:g} s on an answer of {len(predicted)} characters",
                final=limit >= MATH_TIMEOUT_S,
            )
        raise RuntimeError(f"the math-verify helper process failed ({answer[:80]!r})")


_MATH_HELPER = _MathHelper()
atexit.register(_MATH_HELPER.close)
_MATH_CACHE: dict[tuple[str, str], bool | None] = {}  # None: timed out (raised again, not re-run)


def math_equal(predicted: str | None, gold: str) -> bool:
    """Whether a predicted answer equals the gold one symbolically (math-verify: fractions,
    radicals, intervals, tuples, sets, units in \\text{} ignored). False when either does not parse
    or is longer than ``MATH_MAX_CHARS``.

    math-verify runs in a helper process (`_MathHelper`) with math-verify's own 5 s step alarms and
    a hard ``MATH_TIMEOUT_S`` deadline; past it this raises VerifierTimeout (counted wrong by
    `safe_check`). Where the helper cannot start, math-verify runs here as before: bounded by its
    SIGALRM on the main thread, unbounded on other threads.
    """
    if predicted is None or not predicted.strip():
        return False
    if len(predicted) > MATH_MAX_CHARS or len(gold) > MATH_MAX_CHARS:
        return False
    key = (predicted, gold)
    if key in _MATH_CACHE:
        if _MATH_CACHE[key] is None:
            raise VerifierTimeout(
                f"math-verify timed out on this answer before ({len(predicted)} characters)"
            )
        return _MATH_CACHE[key]
    if len(_MATH_CACHE) > 50_000:
        _MATH_CACHE.clear()
    if not _MATH_HELPER.unavailable:
        try:
            result = _MATH_HELPER.equal(predicted, gold)
        except VerifierTimeout as e:
            if e.final:  # only the answer's own full timeout is remembered, not a short budget
                _MATH_CACHE[key] = None
            raise
        except OSError:  # no helper process here (no sys.executable, a locked-down host)
            _MATH_HELPER.unavailable = True
    if _MATH_HELPER.unavailable:
        timeout = MATH_STEP_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
        result = _math_equal_here(predicted, gold, timeout)
    _MATH_CACHE[key] = result
    return result


# ---- the verifier kinds, and the total entry points every caller uses ----


@dataclass(frozen=True)
class Verifier:
    """A verifier kind: ``extract(text, task)`` -> normalised answer or None (format failure);
    ``check(extracted, task)`` -> correct? Both pure; they may read ``task.answer`` and ``task.meta``
    (e.g. the options of a multiple-choice item). ``slow``: a check may take long (it waits on a
    subprocess), so episodes run it on `verifier_pool()` instead of the event loop; the cheap kinds
    stay inline, where a check costs less than the hop to a thread."""

    extract: Callable[[str, Any], str | None]
    check: Callable[[str | None, Any], bool]
    slow: bool = False


# verifier kind -> Verifier; Task.verifier names one of these.
VERIFIERS: dict[str, Verifier] = {
    "numeric": Verifier(
        lambda text, task: extract_number(text), lambda x, task: numbers_equal(x, task.answer)
    ),
    # gold: a letter; task.meta["options"]: the option texts in letter order
    "choice": Verifier(
        lambda text, task: extract_choice(text, task.meta["options"]), lambda x, task: x == task.answer
    ),
    # task.meta["format"]: labels | number | dyck | words | text; task.meta["labels"] for labels
    "exact": Verifier(
        lambda text, task: extract_exact(text, task.meta.get("format", "text"), task.meta.get("labels", ())),
        lambda x, task: x is not None and x == normalise_exact(task.answer, task.meta.get("format", "text")),
    ),
    # gold: a LaTeX answer (MATH's `answer` field); compared symbolically by math-verify
    "math": Verifier(
        lambda text, task: extract_math(text), lambda x, task: math_equal(x, task.answer), slow=True
    ),
    # the reply's program, run against task.meta's tests in the sandbox (workbench/tasks/code.py)
    "code": Verifier(extract_code, check_code, slow=True),
}


def _describe(e: BaseException) -> str:
    try:
        message = str(e)
    except Exception:  # an exception whose str() fails is still described by its type
        message = ""
    return f"{type(e).__name__}: {message[:200]}" if message else type(e).__name__


def _user_error(e: Exception) -> bool:
    """A configuration or data error (the user's to fix): raised, never counted as a wrong answer."""
    from workbench.config import ConfigError
    from workbench.tasks.base import TaskError

    return isinstance(e, ConfigError | TaskError)


# the verification time left to the running episode: [seconds]; None outside an episode (no cap)
_BUDGET: ContextVar[list[float] | None] = ContextVar("workbench_verification_budget", default=None)


def start_episode_budget(seconds: float | None = None) -> None:
    """Give the current context (one episode's asyncio task) ``seconds`` of verification time
    (default: ``EPISODE_BUDGET_S`` as it is now)."""
    _BUDGET.set([EPISODE_BUDGET_S if seconds is None else seconds])


def budget_left() -> float:
    budget = _BUDGET.get()
    return float("inf") if budget is None else budget[0]


def _timed(fn: Callable, *args):
    """``fn(*args)``, charged to the episode's verification budget; refused once it is spent."""
    budget = _BUDGET.get()
    if budget is not None and budget[0] <= 0:
        raise VerifierTimeout(
            "the episode's verification time is spent (workbench.tasks.verify.EPISODE_BUDGET_S)"
        )
    t0 = time.monotonic()
    try:
        return fn(*args)
    finally:
        if budget is not None:
            budget[0] -= time.monotonic() - t0


def safe_extract(task: Any, text: str) -> tuple[str | None, str | None]:
    """``(extracted, error)``: the verifier's answer from the last MAX_REPLY_CHARS of ``text``;
    any exception gives ``(None, "Type: message")`` (a format failure that the episode records)."""
    verifier = VERIFIERS[task.verifier]  # an unknown kind is a bug in the task, not in the reply
    try:
        return _timed(verifier.extract, text[-MAX_REPLY_CHARS:], task), None
    except Exception as e:
        if _user_error(e):
            raise
        return None, _describe(e)


def safe_check(task: Any, extracted: str | None) -> tuple[bool, str | None]:
    """``(correct, error)``: any exception (a timeout, a spent episode budget) gives ``(False, "Type: message")``."""
    verifier = VERIFIERS[task.verifier]
    try:
        return bool(_timed(verifier.check, extracted, task)), None
    except Exception as e:
        if _user_error(e):
            raise
        return False, _describe(e)


def safe_check_all(task: Any, answers: list[str]) -> list[tuple[bool, str | None]]:
    """`safe_check` of each answer, one after another, in order (what a worker of the pool runs for
    one episode: its checks stay sequential, so its budget is spent in the same order as inline)."""
    return [safe_check(task, a) for a in answers]


# ---- the verifier pool: slow checks off the event loop ----


def verify_workers() -> int:
    """The verifier pool's size: ``$WORKBENCH_VERIFY_WORKERS`` when set, else ``VERIFY_WORKERS``
    (default min(4, CPU cores)); 0 runs slow checks on the event loop, one at a time."""
    raw = os.environ.get("WORKBENCH_VERIFY_WORKERS", "").strip()
    if not raw:
        value: object = VERIFY_WORKERS
    else:
        try:
            value = int(raw)
        except ValueError:
            value = raw
    if not isinstance(value, int) or not 0 <= value <= VERIFY_WORKERS_MAX:
        from workbench.config import ConfigError

        where = f"WORKBENCH_VERIFY_WORKERS={raw!r}" if raw else f"verify.VERIFY_WORKERS={value!r}"
        raise ConfigError(
            f"{where}: the verifier pool's size must be an integer 0..{VERIFY_WORKERS_MAX} "
            "(0: checks run on the event loop); unset it for the default min(4, CPU cores)"
        )
    return value


_POOL_LOCK = threading.Lock()
_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)


def verifier_pool() -> ThreadPoolExecutor | None:
    """The process's pool for slow checks (None when `verify_workers()` is 0). Threads suffice:
    a slow check waits on a subprocess (the sandbox, math-verify's helper) without holding the GIL.
    A forked child, or a changed size, gets a new pool."""
    global _POOL
    workers = verify_workers()
    if workers == 0:
        return None
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid() or _POOL[1] != workers:
            if _POOL is not None and _POOL[0] == os.getpid():
                _POOL[2].shutdown(wait=False)  # its running checks finish; new ones go to the new pool
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="workbench-verify")
            _POOL = (os.getpid(), workers, pool)
        return _POOL[2]
