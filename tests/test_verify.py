import threading
from fractions import Fraction

import pytest

from workbench.tasks.base import Task
from workbench.tasks.verify import (
    answer_span,
    extract_choice,
    extract_exact,
    extract_math,
    extract_number,
    math_equal,
    normalise_exact,
    normalise_number,
    numbers_equal,
    parse_number,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Answer: 42", "42"),
        ("The answer is 7.", "7"),
        ("The answer is **7**", "7"),
        ("so 3 + 4 = 7\nAnswer: 7", "7"),
        ("Answer: 5 ... wait. Answer: 6", "6"),  # the last marker wins
        ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),  # GSM8K style
        ("\\boxed{12}", "12"),
        ("Answer: 1,234", "1234"),
        ("Answer: $18.50", "18.5"),
        ("Answer: -3", "-3"),
        ("The team's final answer is 8 - 3 = 5.", "5"),  # an equation after the marker: its result
        ("Answer: 2 x 3 + 1 = 7", "7"),
        ("The answer is 9 - 2 = 7 - 1 = 6", "6"),  # a chain: the last result
        ("The answer is **4 + 4 = 8**", "8"),
        ("The answer is 8 - 3", "8"),  # no '=': the number after the marker, as before
        ("7 - 9 = 1", "1"),  # a minus between numbers is an operator, not a sign
        ("7-9=-2", "-2"),
        ("(3+4)-2 is 5", "5"),
        ("about 12 apples", "12"),  # units after the number
        ("Answer: 3/4", "0.75"),
        ("Answer: 1/3", "1/3"),
        ("I'm ready to assist. What can I help you with today?", None),
        ("", None),
    ],
)
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_parse_and_normalise():
    assert parse_number("1,000.50") == Fraction(2001, 2)
    assert parse_number("$5") == 5
    assert parse_number("x") is None
    assert parse_number("1/0") is None
    assert normalise_number("6/4") == "1.5"
    assert normalise_number("2/6") == "1/3"
    assert normalise_number("-0") == "0"
    assert normalise_number("12.0") == "12"


def test_numbers_equal():
    assert numbers_equal("12", "12.0")
    assert numbers_equal("1,000", "1000")
    assert numbers_equal("0.5", "1/2")
    assert numbers_equal("0.3333333333", "1/3")  # within 1e-6 relative
    assert not numbers_equal("0.33", "1/3")
    assert not numbers_equal(None, "1")
    assert not numbers_equal("11", "12")


# ---- numeric robustness: units, commas, fractions, LaTeX, currencies ----


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is \\boxed{\\frac{3}{4}}", "0.75"),  # LaTeX fraction inside a box
        ("so x = \\dfrac{1}{3}", "1/3"),
        ("Answer: \\$18.50", "18.5"),  # escaped dollar (markdown/LaTeX)
        ("Answer: €1,200", "1200"),
        ("Answer: £3", "3"),
        ("Answer: 1{,}000", "1000"),  # LaTeX thousands separator
        ("She pays 12 dollars in total.\n#### 1,234,567", "1234567"),
        ("Answer: 12 cm", "12"),
        ("Answer: 45%", "45"),
        ("The answer is: 8 apples.", "8"),
        ("Final answer: −4", "-4"),  # unicode minus
        ("Answer: 2.50", "2.5"),
        ("The final answer is $\\boxed{18}$.", "18"),
    ],
)
def test_extract_number_robust(text, expected):
    assert extract_number(text) == expected


# ---- choice ----

OPTIONS = ["12/11/1937", "12/25/1937", "01/04/1938", "12/04/1937"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Answer: (B)", "B"),
        ("Answer: B", "B"),
        ("The answer is C.", "C"),
        ("**Answer:** D", "D"),
        ("Answer: b", "B"),  # a lone letter after the marker, any case
        ("The correct answer is option A", "A"),
        ("The answer to this question is (C).", "C"),
        ("Answer: 12/25/1937", "B"),  # the option's text
        ("Tomorrow is 01/04/1938, so that one.", "C"),  # the one option mentioned
        ("I think (A) fits best", "A"),
        ("C", "C"),
        ("(D).", "D"),
        ("Answer: (A)\nActually no. Answer: (D)", "D"),  # the last marker wins
        ("Answer:\n(B) 12/25/1937", "B"),  # the answer on the line after the marker
        ("Answer: (F)", None),  # not one of the four options
        ("It could be 12/11/1937 or 12/25/1937.", None),  # two options: no commitment
        ("I am not sure about this question.", None),
        ("a good question", None),  # lowercase 'a' is an article, not option A
        ("", None),
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text, OPTIONS) == expected


def test_choice_option_inside_another_option():
    opts = ["dog", "hot dog", "cat"]
    assert extract_choice("Answer: hot dog", opts) == "B"
    assert extract_choice("Answer: dog", opts) == "A"


def test_choice_verifier_reads_options_from_meta():
    task = Task("t", "q", "B", "choice", {"options": OPTIONS})
    assert task.check("Answer: 12/25/1937") == ("B", True)
    assert task.check("Answer: (A)") == ("A", False)
    assert task.check("no idea") == (None, False)


# ---- exact (BBH) ----


@pytest.mark.parametrize(
    "text, fmt, labels, gold, correct",
    [
        ("not ( True ) and ( True ) is False.\nAnswer: False", "labels", ("True", "False"), "False", True),
        ("Answer: false.", "labels", ("True", "False"), "False", True),
        ("Answer: **True**", "labels", ("True", "False"), "False", False),
        (
            "The argument is invalid.",
            "labels",
            ("valid", "invalid"),
            "invalid",
            True,
        ),  # 'valid' inside 'invalid'
        ("Answer: valid", "labels", ("valid", "invalid"), "invalid", False),
        ("Yes, it is plausible. Answer: yes", "labels", ("yes", "no"), "yes", True),
        (
            'The answer to the question is "No, the sentence is not plausible."',
            "labels",
            ("yes", "no"),
            "no",
            True,
        ),
        ("Answer: No", "labels", ("Yes", "No"), "No", True),
        ("Answer: ] ] >", "dyck", (), "] ] >", True),
        ("Answer: ]]>", "dyck", (), "] ] >", True),  # spacing ignored
        ("Answer: ]>", "dyck", (), "] ] >", False),
        ("Answer: apple, banana, cherry", "words", (), "apple banana cherry", True),
        ("Answer: Apple banana cherry.", "words", (), "apple banana cherry", True),
        ("Answer: banana apple cherry", "words", (), "apple banana cherry", False),
        ("-1 + 2 = 1 ... Answer: 24", "number", (), "24", True),
        ("Answer: 24.0", "number", (), "24", True),
        ("Answer: (C)", "text", (), "(C)", True),
        ("I cannot tell.", "labels", ("True", "False"), "True", False),
    ],
)
def test_exact_verifier(text, fmt, labels, gold, correct):
    task = Task("t", "q", gold, "exact", {"format": fmt, "labels": list(labels)})
    assert task.check(text)[1] is correct


def test_normalise_exact():
    assert normalise_exact("(A)") == "a"
    assert normalise_exact("  Valid. ") == "valid"
    assert normalise_exact("] ]", "dyck") == normalise_exact("]]", "dyck") == "] ]"
    assert normalise_exact("b, A\nc", "words") == "b a c"
    assert normalise_exact("7.0", "number") == "7"
    assert extract_exact("", "text") is None
    assert extract_exact("Answer: no brackets here", "dyck") is None


# ---- math (math-verify) ----


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the result is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        (
            "\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}",
            "\\left( 3, \\frac{\\pi}{2} \\right)",
        ),  # nested braces
        ("first \\boxed{1}, then \\boxed{2}", "2"),  # the last box
        ("Answer: $x = 3$.", "x = 3"),
        ("The final answer is 42", "42"),
        ("it is 7 and then 9", "9"),  # no box, no marker: the last number
        ("\\boxed{\\frac{1}{2", "2"),  # cut off inside the box: falls back to the last number
        ("no numbers at all", None),
    ],
)
def test_extract_math(text, expected):
    assert extract_math(text) == expected


@pytest.mark.parametrize(
    "pred, gold, equal",
    [
        ("\\frac{1}{2}", "0.5", True),
        ("1/2", "\\frac{1}{2}", True),
        ("\\dfrac{9}{7}", "\\frac97", True),
        ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", True),  # tuple
        ("[-2, 7]", "[-2,7]", True),  # interval
        ("(-2, 7)", "[-2,7]", False),  # open is not closed
        ("(-\\infty,3)\\cup(5,\\infty)", "(-\\infty, 3) \\cup (5, \\infty)", True),
        ("\\sqrt{12}", "2\\sqrt{3}", True),
        ("(x+1)^2", "x^2+2x+1", True),
        ("x = 5", "5", True),
        ("27", "27.0", True),
        ("25", "025", True),
        ("10", "10\\%", True),
        ("Evelyn", "\\text{Evelyn}", True),
        ("6", "7", False),
        ("4.6667", "\\frac{14}{3}", False),  # a rounded decimal is not the fraction
        (None, "1", False),
        ("", "1", False),
        ("\\frac{", "1", False),  # unparseable: wrong, never an exception
    ],
)
def test_math_equal(pred, gold, equal):
    assert math_equal(pred, gold) is equal


def test_math_verifier_on_a_task_and_off_the_main_thread():
    task = Task("t", "q", "\\frac{14}{3}", "math")
    assert task.check("We get $\\boxed{\\dfrac{14}{3}}$.") == ("\\dfrac{14}{3}", True)
    results = []
    worker = threading.Thread(target=lambda: results.append(task.check("\\boxed{14/3}")))
    worker.start()
    worker.join()
    assert results == [("14/3", True)]  # no SIGALRM off the main thread, still verified


def test_answer_span():
    assert answer_span("blah\nAnswer: **42** ") == "42"
    assert answer_span("The answer is:\n\n  B") == "B"
    assert answer_span("let me answer this") is None
    assert answer_span("The answer to the problem is x = 2.") == "x = 2"


# ---- hostile outputs (issue 15): every case named there, counted wrong or read exactly, never raised ----

BIG = 10**400


@pytest.mark.timeout(60)
def test_the_issue_s_backtracking_example_is_linear():
    # 0.8 s at 30 repetitions and exponential beyond before; now one pass even at 50,000
    assert extract_number("The answer is " + "1/" * 40 + "x") == "1"
    assert extract_number("The answer is " + "1/" * 50_000 + "x") == "1"
    assert extract_number("answer is" + " " * 100_000 + "7") == "7"  # was O(n^4) on the spaces
    assert extract_choice("answer is" + " " * 100_000 + "B", OPTIONS) == "B"


def test_a_400_digit_fraction_is_exact():
    gold = f"{BIG}/3"
    assert extract_number(f"Answer: {BIG}/3") == gold  # raised OverflowError (float) before
    assert numbers_equal(gold, gold) and not numbers_equal(f"{2 * BIG}/3", gold)
    assert numbers_equal(f"{BIG + 1}/3", gold)  # the relative tolerance, computed exactly past a float
    assert not numbers_equal(gold, "1") and not numbers_equal("1", gold)
    assert numbers_equal(f"{BIG * 10**6}/{10**6 * 3 + 1}", gold)  # within 1e-6 relative, computed exactly
    assert normalise_number(f"1/{BIG}") == f"1/{BIG}"  # below a float's range: the exact fraction


def test_numbers_past_the_digit_limit_are_not_read_never_raised():
    huge = "1" * 4301  # int(str) raised ValueError past Python's 4300-digit limit
    assert extract_number(f"Answer: {huge}") is None
    assert parse_number(huge) is None and normalise_number(huge) is None
    assert Task("t", "q", "1").check(f"Answer: {huge}") == (None, False)
    assert extract_number("Answer: 1e999999999") is None  # never computes 10**999999999
    assert extract_number("Answer: 10^{99999999}") is None
    assert extract_number("Answer: " + "9" * 100_000) is None


@pytest.mark.parametrize(
    "gold, expected",
    [
        ("2.5e3", "2500"),  # was read as 2.5
        ("10^400/3", f"{BIG}/3"),  # was read as 10
        ("1e-5", "1e-05"),  # the float form, which now reads back as 1/100000 (it read as 1)
        ("-3.2E2", "-320"),
        ("$1,200", "1200"),
        ("7", "7"),
    ],
)
def test_gold_answers_in_scientific_notation(gold, expected):
    assert normalise_number(gold) == expected
    assert parse_number(normalise_number(gold)) == parse_number(gold)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Answer: 2.5e3", "2500"),
        ("The answer is 2.5 \\times 10^{3}", "2500"),
        ("Answer: 3 x 10^2 apples", "300"),
        ("Answer: 1.5*10^-2", "0.015"),
        ("Answer: 10^3", "1000"),
        ("#### 4e2", "400"),
        ("The answer is 2 x 3 = 6", "6"),  # x between numbers is still an operator
        ("Answer: 3 eggs", "3"),  # an 'e' without digits is a word
    ],
)
def test_scientific_notation_in_predictions(text, expected):
    assert extract_number(text) == expected


def test_a_failing_verifier_is_a_wrong_answer_with_its_error():
    from workbench.tasks.verify import safe_check, safe_extract

    no_options = Task("t", "q", "B", "choice", {})  # a malformed item: KeyError inside the verifier
    assert safe_extract(no_options, "Answer: B") == (None, "KeyError: 'options'")
    assert no_options.check("Answer: B") == (None, False)
    no_gold = Task("t", "q", None, "exact", {"format": "text"})
    correct, error = safe_check(no_gold, "x")
    assert correct is False and error.startswith("AttributeError")


def test_an_episode_with_a_failing_verifier_stays_in_n_and_records_it():
    from workbench.evaluate import ProtocolConfig, run_episodes
    from workbench.models.scripted import ScriptedBackend

    tasks = [
        Task("ok", "q", "x", "exact", {"format": "text"}),
        Task("bad", "q", None, "exact", {"format": "text"}),
    ]
    episodes, errors, _ = run_episodes(tasks, ProtocolConfig("single", {}), ScriptedBackend("Answer: x"))
    assert errors == [] and len(episodes) == 2  # the bad item is counted, not dropped
    ok, bad = sorted(episodes, key=lambda e: e.task_id != "ok")
    assert ok.correct and "verifier_errors" not in ok.meta
    assert bad.correct is False and bad.final_answer == "x" and bad.meta["verifier_errors"] == 1
    (event,) = [e for e in bad.events if e["type"] == "verifier_error"]
    assert event["stage"] == "check" and event["error"].startswith("AttributeError")


@pytest.mark.timeout(120)
def test_math_verify_has_a_hard_deadline_on_any_thread(monkeypatch):
    from workbench.tasks import verify
    from workbench.tasks.verify import VerifierTimeout, safe_check

    monkeypatch.setattr(verify, "MATH_TIMEOUT_S", 1.0)  # math-verify spends its 5 s alarm on this one
    hostile = "10^{10^{7}}+\\frac{1}{3}"
    with pytest.raises(VerifierTimeout):
        math_equal(hostile, "1")
    task = Task("t", "q", "1", "math")
    correct, error = safe_check(task, hostile)
    assert correct is False and error.startswith("VerifierTimeout")
    results = []
    worker = threading.Thread(target=lambda: results.append(task.check("\\boxed{" + hostile + "+1}")))
    worker.start()
    worker.join(timeout=60)  # unbounded off the main thread before
    assert results == [(hostile + "+1", False)]
    assert math_equal("\\frac{1}{2}", "0.5")  # the helper restarts after a kill


def test_answers_too_long_for_math_verify_are_wrong():
    assert not math_equal("1" + " + 0" * 1000, "1")


@pytest.mark.timeout(120)
def test_an_episode_s_verifications_share_one_time_budget():
    import contextvars

    from workbench.tasks.verify import safe_check, start_episode_budget

    task = Task("t", "q", "1", "math")

    def episode():
        start_episode_budget(0.5)  # what protocols.base.play gives each episode (60 s by default)
        first = safe_check(task, "10^{10^{7}}+\\frac{1}{7}")  # cut at the budget, not at 20 s
        then = safe_check(task, "1")  # the budget is spent: wrong without a call
        return first, then

    (ok1, err1), (ok2, err2) = contextvars.copy_context().run(episode)
    assert not ok1 and err1.startswith("VerifierTimeout: math-verify took longer than 0.5")
    assert not ok2 and "verification time is spent" in err2
    assert safe_check(task, "1") == (True, None)  # outside that episode: no budget
