from fractions import Fraction

import pytest

from workbench.tasks.verify import extract_number, normalise_number, numbers_equal, parse_number


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
