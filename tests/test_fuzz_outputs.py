"""Model outputs as an attacker would write them, through every verifier and parser.

Every call must return (a value, None, or for the Conductor a PlanError) and never raise; each test
carries a generous pytest-timeout so that a catastrophic pattern fails the test instead of hanging
it (no test asserts a time). The equivalence tests check that the linear rewrites read ordinary
outputs exactly as the patterns they replaced did.
"""

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.protocols.conductor import PlanError, parse_plan
from workbench.protocols.leader import leader_answer
from workbench.protocols.maestro import parse_choice
from workbench.tasks.base import Task
from workbench.tasks.code import extract_code
from workbench.tasks.verify import (
    MAX_REPLY_CHARS,
    answer_span,
    extract_math,
    last_boxed,
    normalise_number,
    numbers_equal,
    safe_check,
    safe_extract,
)

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

# pieces of real outputs and of known attacks: markers, separators, huge digit runs, nested brackets,
# unicode digits and minus, NULs, LaTeX, the three parsers' tags, code fences
PIECES = [
    "answer",
    "Answer:",
    "The answer is ",
    "final answer: ",
    "answer to the question is",
    "####",
    " ",
    "  ",
    "\t",
    "\n",
    "\n\n",
    "1",
    "7",
    "42",
    "0",
    "9" * 50,
    "1,234",
    "3.5",
    "-",
    "+",
    "*",
    "/",
    "=",
    "x",
    "×",
    "÷",
    ",",
    ".",
    "e",
    "E",
    "e-",
    "10^",
    "10^{",
    "^",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "\\boxed{",
    "\\fbox{",
    "\\frac{",
    "\\dfrac{",
    "}{",
    "\\times",
    "\\cdot",
    "\\$",
    "$",
    "€",
    "{,}",
    "(A)",
    "(B)",
    "B",
    "b",
    "option ",
    "choice ",
    "candidate ",
    "#",
    "**",
    "`",
    "'",
    '"',
    "<choice>",
    "</choice>",
    "<answer>",
    "</answer>",
    "<think>",
    "model_id = [",
    "subtasks = [",
    "access_list = [",
    '["all"]',
    "'step'",
    "```python\n",
    "```\n",
    "```",
    "def f():\n    return 1\n",
    "import os\n",
    "\x00",
    "\u2212",
    "١٢",
    "٣",
    "０１",
    "²",
    "\ud800",
    "\u200b",
    "True",
    "False",
    "valid",
    "invalid",
    "yes",
    "no",
    "]",
    ">",
    "<",
    "12/25/1937",
]


@st.composite
def hostile(draw, max_pieces: int = 60, max_repeat: int = 2000) -> str:
    """A text of pieces, each repeated up to ``max_repeat`` times, with arbitrary text between."""
    parts = []
    for _ in range(draw(st.integers(1, max_pieces))):
        if draw(st.integers(0, 9)) == 0:
            parts.append(draw(st.text(max_size=20)))
        else:
            piece = draw(st.sampled_from(PIECES))
            parts.append(piece * draw(st.sampled_from([1, 1, 1, 2, 3, 40, max_repeat])))
    return "".join(parts)


OPTIONS = ["12/11/1937", "12/25/1937", "01/04/1938", "12/04/1937"]
TASKS = [
    Task("n", "q", "42", "numeric"),
    Task("n2", "q", "1/3", "numeric"),
    Task("c", "q", "B", "choice", {"options": OPTIONS}),
    Task("l", "q", "False", "exact", {"format": "labels", "labels": ["True", "False"]}),
    Task("d", "q", "] ] >", "exact", {"format": "dyck"}),
    Task("w", "q", "apple banana", "exact", {"format": "words"}),
    Task("num", "q", "24", "exact", {"format": "number"}),
    Task("t", "q", "(C)", "exact", {"format": "text"}),
    Task("code", "q", "", "code", {"entry_point": "f", "prompt": "def f():\n"}),
]
MATH = Task("m", "q", "\\frac{1}{2}", "math")


def every_parser(text: str) -> None:
    """Run the text through every verifier's extraction and every protocol parser; raise on any failure."""
    for task in TASKS:
        extracted, error = safe_extract(task, text)
        assert error is None, (task.verifier, error)
        assert extracted is None or isinstance(extracted, str)
        if task.verifier != "code":  # the code check runs the sandbox: covered by test_sandbox
            correct, error = safe_check(task, extracted)
            assert error is None and isinstance(correct, bool)
        leader, tagged = leader_answer(text, task, strict=False)
        assert leader is None or isinstance(leader, str)
    assert isinstance(extract_math(text) or "", str)
    assert isinstance(answer_span(text) or "", str)
    assert isinstance(last_boxed(text) or "", str)
    assert isinstance(extract_code(text) or "", str)
    for m in (1, 3, 9):
        pick, how = parse_choice(text, m)
        assert how in ("strict", "lenient", "failed") and (pick is None or 0 <= pick < m)
    try:
        plan = parse_plan(text, 3, 5)
        assert len(plan.model_id) == len(plan.subtasks) == len(plan.access_list) <= 5
    except PlanError as e:
        assert len(str(e)) < 400  # one line that says why, never the whole output


@pytest.mark.timeout(240)
@FUZZ
@given(hostile())
def test_hostile_outputs_never_raise(text):
    every_parser(text)


@pytest.mark.timeout(240)
@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text_never_raises(text):
    every_parser(text)


@pytest.mark.timeout(240)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile(max_pieces=12, max_repeat=30))
def test_math_verify_never_raises_on_hostile_answers(text):
    extracted = extract_math(text)
    correct, error = safe_check(MATH, extracted)
    assert isinstance(correct, bool)
    assert error is None or error.startswith("VerifierTimeout")


@pytest.mark.timeout(120)
@FUZZ
@given(st.from_regex(r"-?[0-9]{1,5000}(\.[0-9]{1,500})?(e-?[0-9]{1,12}|/[0-9]{1,5000})?", fullmatch=True))
def test_numbers_of_any_size_never_raise(s):
    for text in (s, f"Answer: {s}", f"<choice>{s}</choice>"):
        value = normalise_number(text)
        assert value is None or numbers_equal(value, value)
        assert numbers_equal(text, "1") in (True, False)
        assert parse_choice(text, 4)[1] in ("strict", "lenient", "failed")


# ---- 100k-character pathological inputs: each finishes (a generous timeout, not a timed assert) ----

N = MAX_REPLY_CHARS
PATHOLOGICAL = {
    "the issue's fraction chain": "The answer is " + "1/" * (N // 2) + "x",
    "spaces after a marker": "answer is" + " " * N + "x",
    "mixed whitespace after a marker": "answer " + " \t\n" * (N // 3) + "x",
    "an equation chain that never ends": "answer is " + "1+1=" * (N // 4) + "x",
    "an equation of fractions": "answer: " + "1/2 - 3/4 = " * (N // 12),
    "one huge number": "Answer: " + "9" * N,
    "a huge exponent": "Answer: 1e" + "9" * N,
    "thousands separators": "Answer: " + "1,000" * (N // 5),
    "many markers": "answer " * (N // 7),
    "nested boxes": "\\boxed{" * (N // 7),
    "nested braces in a box": "\\boxed{" + "{" * N + "}" * 10,
    "latex fractions left open": "\\frac{" + " " * N,
    "option letters": "(A)" * (N // 3),
    "choice tags": "<choice>" * (N // 8),
    "a choice of 100k digits": "<choice>" + "7" * N + "</choice>",
    "leading zeros": "<choice>" + "0" * N + "2</choice>",
    "answer tags never closed": "<answer>" * (N // 8),
    "a plan list never closed": "model_id = [" + "[" * N,
    "a plan list of quotes": "subtasks = ['" + "\\'" * (N // 2),
    "nested plan lists": "model_id = [" + "[" * 180 + "]" * 181 + " subtasks = [] access_list = []",
    "code fences": "```python\n" * (N // 10),
    "a fence and spaces": "```" + " " * N + "x",
    "unparseable code lines": "def f(:\n" * (N // 8),
    "deeply nested code": "def f():\n    return " + "(" * 150 + "1" + ")" * 150 + "\n" + "x = [\n" * 5000,
    "NULs": "\x00" * N,
    "unicode digits": "Answer: " + "١٢٣" * (N // 3),
    "unicode minus chains": "answer: " + "\u22121 \u2212 " * (N // 5),
    "scientific chains": "answer is " + "2.5 \\times 10^{3} = " * (N // 20),
    "labels": "True False " * (N // 11),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_a_100k_character_pathological_output_finishes(name):
    every_parser(PATHOLOGICAL[name])


def test_the_issue_s_4301_digit_choice_is_a_counted_failure():
    assert parse_choice("<choice>" + "1" * 4301 + "</choice>", 3) == (None, "failed")  # raised ValueError
    assert parse_choice("<choice>" + "0" * 5000 + "2</choice>", 3) == (1, "strict")
    assert parse_choice("Candidate " + "9" * 5000 + " or candidate 2", 3) == (1, "lenient")


def test_a_plan_literal_that_raises_type_error_is_a_plan_error():
    with pytest.raises(PlanError, match="not a Python list literal"):
        parse_plan('model_id = [{[]: 1}] subtasks = ["a"] access_list = [[]]', 3, 5)


# ---- the linear rewrites read ordinary outputs as the old patterns did ----

# the patterns before issue 15, verbatim (exponential or polynomial on long inputs, fine on short ones)
OLD_NUM = r"(?:(?<![\w)\]])-)?[$€£]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?"
OLD_EQUATION = r"(?:" + OLD_NUM + r"(?:\s*[-+*/×x÷]\s*" + OLD_NUM + r")+\s*=\s*)*"
OLD_MARKER = re.compile(
    r"answer\s*(?:is|:|=)?\s*[:=]?\s*\**\s*" + OLD_EQUATION + "(" + OLD_NUM + ")", re.IGNORECASE
)
OLD_LENIENT = re.compile(r"(?:candidate|choice|option|number)?\s*#?\s*(\d+)", re.IGNORECASE)
OLD_LETTER = re.compile(
    r"answer(?:\s+to\s+(?:this|the)\s+(?:question|problem))?\s*(?:is\s*:?|:|=)"
    r"\s*[*\s]*(?:option\s+|choice\s+)?\(?([A-Z])\)?(?![\w'])",
    re.IGNORECASE,
)
# ordinary outputs: no scientific notation (the one reading that changed on purpose: 2.5e3 is 2500)
TERM = st.sampled_from(["1", "23", "10", "5", "4", "6", "1,000", "2.5", "$3", "-4", "7-9", "(3+4)", "B"])
JOIN = st.sampled_from(
    ["/", "/", " / ", "+", " - ", "-", " x ", "*", " = ", " = ", "=", " ", ". ", "\n", ", "]
)
MARK = st.sampled_from(
    ["", "The answer is ", "Answer: ", "answer = ", "so the answer is **", "Final answer:\n"]
)
ORDINARY = st.tuples(st.lists(st.tuples(MARK, st.lists(st.tuples(TERM, JOIN), max_size=7)), max_size=3)).map(
    lambda t: "".join(mark + "".join(a + b for a, b in body) for mark, body in t[0])
)


@FUZZ
@given(ORDINARY)
def test_the_marker_pattern_reads_ordinary_outputs_as_before(text):
    from workbench.tasks.verify import _LETTER_AFTER_MARK, _MARKERS

    assert _MARKERS[2].findall(text) == OLD_MARKER.findall(text)
    assert _LETTER_AFTER_MARK.findall(text) == OLD_LETTER.findall(text)


@FUZZ
@given(st.text(alphabet=" #\t\n0123456789٣abcdeinortuCcandidtechoisnumber", max_size=40))
def test_the_lenient_choice_reads_the_same_numbers_as_before(text):
    from workbench.protocols.maestro import _LENIENT

    assert _LENIENT.findall(text) == OLD_LENIENT.findall(text)
