"""Answer extraction and checking: pure functions, no model, no I/O.

`extract_number` reads a model's free text and returns the number it committed to, or None
(a format failure). Preference order: an explicit marker ("Answer: 42", "the answer is 42",
"#### 42", "\\boxed{42}"), the last one if several; otherwise the last number in the text. An
equation right after the marker is read to its result ("the answer is 8 - 3 = 5" is 5).
`numbers_equal` compares two numeric strings exactly for integers and fractions, with a small
relative tolerance for decimals.
"""

from __future__ import annotations

import re
import string
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from workbench.tasks.code import check_code, extract_code

# A minus sign is a sign only when it does not follow a word or a closing bracket ("7-9" is 7 and 9).
_NUM = r"(?:(?<![\w)\]])-)?[$€£]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?"
# "8 - 3 = ", "2 x 3 + 1 = 7 - 1 = ": terms joined by operators, each chain ending in "=" (optional)
_EQUATION = r"(?:" + _NUM + r"(?:\s*[-+*/×x÷]\s*" + _NUM + r")+\s*=\s*)*"
_MARKERS = [
    re.compile(r"####\s*(" + _NUM + ")"),
    re.compile(r"\\boxed\{\s*(" + _NUM + r")\s*\}"),
    # "the answer is 8 - 3 = 5" commits to 5, not 8: an equation after the marker is read to its result
    re.compile(r"answer\s*(?:is|:|=)?\s*[:=]?\s*\**\s*" + _EQUATION + "(" + _NUM + ")", re.IGNORECASE),
]
_ANY_NUM = re.compile(_NUM)
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{\s*(-?\d+)\s*\}\{\s*(\d+)\s*\}")


def _prepare(text: str) -> str:
    """Undo typography that hides numbers: unicode minus, LaTeX fractions (\\frac{3}{4} -> 3/4),
    escaped dollars and LaTeX thousands separators (1{,}000, 1,\\!000)."""
    text = text.replace("\u2212", "-").replace("\\$", "$").replace("{,}", ",").replace(",\\!", ",")
    return _LATEX_FRAC.sub(r"\1/\2", text)


def parse_number(s: str) -> Fraction | None:
    """'1,234' -> 1234, '$5.50' -> 11/2, '3/4' -> 3/4, '12 apples' -> 12, 'x' -> None."""
    m = _ANY_NUM.search(s.replace("\u2212", "-"))
    if m is None:
        return None
    text = m.group(0).replace("$", "").replace("€", "").replace("£", "").replace(",", "")
    try:
        if "/" in text:
            num, den = text.split("/")
            return Fraction(num) / Fraction(den) if Fraction(den) != 0 else None
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


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
    """Canonical string of a number: '1,000.50' -> '1000.5', '6/4' -> '3/2', '-0' -> '0'."""
    value = parse_number(s)
    if value is None:
        return None
    if value.denominator == 1:
        return str(value.numerator)
    as_float = float(value)
    if Fraction(repr(as_float)) == value:  # a terminating decimal
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
    return abs(float(a) - float(b)) <= rel_tol * max(1.0, abs(float(b)))


# ---- where a free-text reply states its answer (shared by the choice, exact and math kinds) ----

# "Answer: X", "The answer is X", "final answer: X"; a bare "answer" ("let me answer this") is not one.
_MARK = r"answer(?:\s+to\s+(?:this|the)\s+(?:question|problem))?\s*(?:is\s*:?|:|=)"
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
    hits = list(_ANSWER_MARK.finditer(text))
    if not hits:
        return None
    rest = text[hits[-1].end() :]
    lines = [line for line in rest.split("\n") if line.strip()]
    if not lines:
        return None
    first = rest.split("\n", 1)[0]
    return _strip_wrapping(first if first.strip() else lines[0])


# ---- choice: multiple choice, a letter or the option's text ----

_LETTER_AFTER_MARK = re.compile(
    _MARK + r"\s*[*\s]*(?:option\s+|choice\s+)?\(?([A-Z])\)?(?![\w'])", re.IGNORECASE
)
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")


def _norm_text(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s.%/-]", " ", s.lower()).split()).rstrip(".")


def _find_option(span: str, options: list[str]) -> int | None:
    """The one option whose text appears in `span` as whole words; None if none or several do."""
    text = f" {_norm_text(span)} "
    found = [i for i, o in enumerate(options) if _norm_text(o) and f" {_norm_text(o)} " in text]
    if len(found) > 1:  # "dog" inside "hot dog": drop an option found only as part of another
        names = {i: _norm_text(options[i]) for i in found}
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
    bare = re.fullmatch(r"\s*\(?([A-Z])\)?[.:]?\s*", text)
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
        pattern = re.compile(r"\b(" + "|".join(re.escape(x) for x in labels) + r")\b", re.IGNORECASE)
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


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} or \\fbox{...}, with nested braces; None if there is none."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
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


def _math_parse(s: str, timeout: int | None) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    body = s.strip().strip("$").strip()
    return parse(
        "$" + body + "$",
        [LatexExtractionConfig(), ExprExtractionConfig()],
        parsing_timeout=timeout,
    )


def math_equal(predicted: str | None, gold: str) -> bool:
    """Whether a predicted answer equals the gold one symbolically (math-verify: fractions,
    radicals, intervals, tuples, sets, units in \\text{} ignored). False when either does not parse.

    math-verify bounds each parse and comparison with SIGALRM, which only the main thread can use;
    elsewhere (a notebook runs the scheduler on a worker thread) the comparison runs unbounded.
    """
    if predicted is None or not predicted.strip():
        return False
    from math_verify import verify

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold_parsed, pred_parsed = _math_parse(gold, timeout), _math_parse(predicted, timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


@dataclass(frozen=True)
class Verifier:
    """A verifier kind: ``extract(text, task)`` -> normalised answer or None (format failure);
    ``check(extracted, task)`` -> correct? Both pure; they may read ``task.answer`` and ``task.meta``
    (e.g. the options of a multiple-choice item)."""

    extract: Callable[[str, Any], str | None]
    check: Callable[[str | None, Any], bool]


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
    "math": Verifier(lambda text, task: extract_math(text), lambda x, task: math_equal(x, task.answer)),
    # the reply's program, run against task.meta's tests in the sandbox (workbench/tasks/code.py)
    "code": Verifier(extract_code, check_code),
}
