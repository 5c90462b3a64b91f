"""Tests of llmenv.arith, the evaluator behind the calculator tool and the countdown verifier: exact values and
literals, each Grammar option, and every hostile input of both callers tested once here (huge powers, deep
nesting, long input, Python syntax that is not arithmetic, odd literals, division by zero)."""

from __future__ import annotations

import random
import time
from fractions import Fraction

import pytest

from llmenv.arith import Evaluation, ExpressionError, Grammar, evaluate
from llmenv.errors import LLMEnvError
from llmenv.tasks.countdown import COUNTDOWN_GRAMMAR
from llmenv.tools import CALCULATOR_GRAMMAR

INTEGERS = Grammar()
FULL = Grammar(power=True, caret_is_power=True, decimals=True, unary_plus=True)
HANG_S = 10.0
"""Wall-clock bound of the hostile-input checks: they take well under 0.5 s, so this only catches a hang
(work that grows with a power's size or the input's length), it claims no speed."""


@pytest.mark.parametrize(
    ("text", "grammar", "value", "literals"),
    [
        ("1 + 2 * 3", INTEGERS, 7, (1, 2, 3)),
        ("(19 + 36) * 7 / 5", INTEGERS, 77, (19, 36, 7, 5)),
        ("7 / 2", INTEGERS, Fraction(7, 2), (7, 2)),
        ("10 - 4 - 3", INTEGERS, 3, (10, 4, 3)),  # left-associative
        ("-3 + --4", INTEGERS, 1, (3, 4)),  # literals are unsigned
        (" \n (1 +\n 2)\t* 3 ", INTEGERS, 9, (1, 2, 3)),  # any whitespace, newlines included
        ("007 + 0", INTEGERS, 7, (7, 0)),
        ("0.1 + 0.2", FULL, Fraction(3, 10), (Fraction(1, 10), Fraction(2, 10))),  # exact, not 0.30000000000000004
        (".5 + 2. + 1e3 + 1.5E-2", FULL, Fraction(1002515, 1000), (Fraction(1, 2), 2, 1000, Fraction(15, 1000))),
        ("1.5e-007 * 10 ** 7", FULL, Fraction(3, 2), (Fraction(15, 10**8), 10, 7)),  # exponents may have zeros
        ("2 ** 3 ** 2", FULL, 512, (2, 3, 2)),  # right-associative
        ("-2 ** 2", FULL, -4, (2, 2)),
        ("2 ^ 3 * 2", FULL, 16, (2, 3, 2)),  # ^ binds as ** does, tighter than *
        ("2 ** -2", FULL, Fraction(1, 4), (2, 2)),
        ("+(1 / 3) ** 2", FULL, Fraction(1, 9), (1, 3, 2)),
        ("0 ** 0 + (-1) ** (10 ** 500)", FULL, 2, (0, 0, 1, 10, 500)),  # powers of 0 and 1 stay small
    ],
)
def test_exact_values_and_literals_in_reading_order(text, grammar, value, literals):
    evaluation = evaluate(text, grammar)
    assert evaluation == Evaluation(value, tuple(Fraction(n) for n in literals))
    assert isinstance(evaluation.value, Fraction)


def test_a_fractional_power_is_a_float():
    assert evaluate("2 ** 0.5", FULL).value == 2**0.5
    assert evaluate("(0 - 2 ** 0.5) ** 2", FULL).value == pytest.approx(2.0)  # negative float base, integer power
    assert evaluate("4 ** 0.5 / 2", FULL).value == 1.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("9**9**9", "the result would have more than 10000 digits"),  # refused before computing 9**387420489
        ("2 ** 100000", "the result would have more than 10000 digits"),
        ("10 ** 10 ** 10", "the result would have more than 10000 digits"),
        ("(1 / 3) ** 100000", "the result would have more than 10000 digits"),  # the denominator counts
        ("0.5 ** -100000", "the result would have more than 10000 digits"),
        ("(9 ** 5000) * (9 ** 5000) * (9 ** 5000)", "the result would have more than 10000 digits"),
        ("(2 ** 0.5) ** 5000", "the result is too large"),  # float overflow
        ("2 ** 0.5 * 10 ** 400", "the result is too large"),  # a big exact value meets a float
        ("(-8) ** (1 / 3)", "a negative number raised to a fractional power is not a real number"),
    ],
)
def test_huge_powers_and_results_are_refused(text, message):
    started = time.perf_counter()
    with pytest.raises(ExpressionError, match=message):
        evaluate(text, FULL)
    assert time.perf_counter() - started < HANG_S


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 / 0", "division by zero"),
        ("1 / (2 - 2)", "division by zero"),
        ("1 / 0.0", "division by zero"),
        ("0 ** -1", r"division by zero \(0 raised to a negative power\)"),
        ("0 ** -0.5", r"division by zero \(0 raised to a negative power\)"),
    ],
)
def test_division_by_zero(text, message):
    with pytest.raises(ExpressionError, match=message):
        evaluate(text, FULL)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x", "unexpected character 'x' at position 0; use numbers, \\+ - \\* / \\*\\* and parentheses"),
        ("abs(-1)", "unexpected character 'a' at position 0"),
        ("__import__('os').system('rm -rf /')", "unexpected character '_' at position 0"),
        ("[1][0]", "unexpected character '\\[' at position 0"),
        ("(lambda: 9 ** 9 ** 9)()", "unexpected character 'l' at position 1"),
        ("1 < 2", "unexpected character '<' at position 2"),
        ("'1' + 1", 'unexpected character "\'" at position 0'),
        ("True", "unexpected character 'T' at position 0"),
        ("1j", "unexpected character 'j' at position 1"),
        ("0x10", "unexpected character 'x' at position 1"),
        ("1_000", "unexpected character '_' at position 1"),
        ("7 % 2", "unexpected character '%' at position 2"),
        ("~1", "unexpected character '~' at position 0"),
        ("1 # comment", "unexpected character '#' at position 2"),  # Python would ignore the rest
        ("1; 2", "unexpected character ';' at position 1"),
        ("1 \\\n 2", "unexpected character '\\\\\\\\' at position 2"),  # no line continuation either
        ("1\x00", "unexpected character '\\\\x00' at position 1"),
        ("٣ + 1", "unexpected character '٣' at position 0"),  # digits are ASCII digits
        ("é + 1", "unexpected character 'é' at position 0"),
        # What Python can still build from the characters that pass, the walk refuses:
        ("e", "names are not allowed: 'e'"),
        ("2 (3)", "function calls are not allowed: '2 \\(3\\)'"),
        ("(2)(3)", "function calls are not allowed"),
        ("(1).e", "attributes are not allowed: '\\(1\\).e'"),
        ("1 .E5", "attributes are not allowed: '1 .E5'"),
        ("()", "Python Tuple expressions are not allowed"),
        ("...", "'...' is not a number"),
        ("7 // 2", "the operator // is not allowed"),
    ],
)
def test_python_that_is_not_arithmetic_is_refused(text, message):
    with pytest.raises(ExpressionError, match=message):
        evaluate(text, FULL)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1e99999", "number literal '1e99999' is too large: more than 10000 digits"),
        ("1e-99999", "number literal '1e-99999' is too large"),  # its denominator would be huge
        ("1e9999999999999", "number literal '1e9999999999999' is too large"),
        ("9" * 19, "number literal too long: 19 digits > 18"),
        ("1." + "1" * 18, "number literal too long: 19 digits > 18"),
        ("1e", "invalid decimal literal at position 0"),
        ("1.2.3", "invalid syntax|unexpected|attributes"),
    ],
)
def test_odd_and_huge_literals(text, message):
    with pytest.raises(ExpressionError, match=message):
        evaluate(text, FULL)


def test_literal_bounds_are_exact():
    assert evaluate("9" * 18, INTEGERS).value == 10**18 - 1
    assert evaluate("1e9999", FULL).value == 10**9999  # exact, not the float inf
    assert evaluate("1e-9999", FULL).value == Fraction(1, 10**9999)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the expression is empty"),
        (" \n\t", "the expression is empty"),
        ("2 +", "the expression ends where a number or '\\(' was expected"),
        ("  (1 + 2", "'\\(' was never closed at position 2"),  # positions are those of the text given
        ("1 + 2)", "unmatched '\\)' at position 5"),
        ("3 4", "unexpected '4' at position 2"),
    ],
)
def test_syntax_errors_say_where(text, message):
    with pytest.raises(ExpressionError, match=message):
        evaluate(text, INTEGERS)


def test_nesting_and_length_bounds():
    assert evaluate("(" * 64 + "1" + ")" * 64, INTEGERS).value == 1
    with pytest.raises(ExpressionError, match="parentheses nested deeper than 64 levels"):
        evaluate("(" * 65 + "1" + ")" * 65, INTEGERS)
    with pytest.raises(ExpressionError, match="parentheses nested deeper than 3 levels"):
        evaluate("((((1))))", Grammar(max_depth=3))
    assert evaluate("1" + "+1" * 499, INTEGERS).value == 500  # a 500-deep tree: no recursion limit
    assert evaluate("-" * 999 + "1", INTEGERS).value == -1
    with pytest.raises(ExpressionError, match="the expression is longer than 1000 characters"):
        evaluate("1" + "+1" * 500, INTEGERS)
    with pytest.raises(ExpressionError, match="longer than 5 characters"):
        evaluate("1 + 23", Grammar(max_chars=5))


def test_hostile_inputs_are_refused_without_hanging():
    started = time.perf_counter()
    for text in [
        "(" * 1_000_000,
        "1+" * 500_000,
        " " * 1_000_000 + "x",
        "9" * 1_000_000,
        "-" * 999 + "1",
        "(" * 199 + "1" + ")" * 199,
        "[" * 300 + "]" * 300,
        "(9 ** 2500 + 1 / 7) / (8 ** 2500 + 1 / 3) * " * 20 + "1",
    ]:
        try:
            evaluate(text, FULL)
        except ExpressionError:
            pass
    assert time.perf_counter() - started < HANG_S


def test_random_text_only_ever_raises_expression_error():
    rng = random.Random(0)
    alphabet = "0123456789 +-*/^().e_xj'[]#,<=~%\\\n"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        for grammar in (INTEGERS, FULL):
            try:
                evaluation = evaluate(text, grammar)
            except ExpressionError as exc:
                assert str(exc)
            else:
                assert isinstance(evaluation.value, (Fraction, float))


@pytest.mark.parametrize(
    ("text", "refused_by", "message"),
    [
        ("2 ** 3", INTEGERS, "the operator \\*\\* is not allowed; use whole numbers, \\+ - \\* / and parentheses"),
        ("2 ^ 3", Grammar(power=True), "the operator \\^ is not allowed"),  # Python's xor, unless caret_is_power
        ("1.5", INTEGERS, "only whole numbers are allowed, got '1.5'"),
        ("1e3", INTEGERS, "only whole numbers are allowed, got '1e3'"),
        ("+1", INTEGERS, "the operator unary \\+ is not allowed"),
        ("123", Grammar(max_literal_digits=2), "number literal too long: 3 digits > 2"),
        ("10 ** 5", Grammar(power=True, max_digits=4), "the result would have more than 4 digits"),
        ("99999 * 99999", Grammar(max_digits=9), "the result would have more than 9 digits"),
    ],
)
def test_each_grammar_option(text, refused_by, message):
    with pytest.raises(ExpressionError, match=message):
        evaluate(text, refused_by)
    assert evaluate(text, Grammar(power=True, caret_is_power=True, decimals=True, unary_plus=True)).value > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_chars": 0}, "Grammar.max_chars must be a positive int, got 0"),
        ({"max_digits": True}, "Grammar.max_digits must be a positive int"),
        ({"max_literal_digits": 1.5}, "Grammar.max_literal_digits must be a positive int"),
        ({"max_depth": 200}, "Grammar.max_depth must be under 200"),
        ({"caret_is_power": True}, "caret_is_power needs power=True"),
    ],
)
def test_bad_grammars_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Grammar(**kwargs)


def test_expression_error_is_an_llmenv_value_error():
    with pytest.raises(ExpressionError, match="the expression must be a string, got int") as caught:
        evaluate(12, INTEGERS)  # type: ignore[arg-type]
    assert isinstance(caught.value, LLMEnvError) and isinstance(caught.value, ValueError)


def test_the_callers_grammars():
    assert evaluate("2 ^ 0.5 ^ 2", CALCULATOR_GRAMMAR).value == 2 ** (0.5**2)
    with pytest.raises(ExpressionError, match="more than 1000 digits"):
        evaluate("9 ** 2000", CALCULATOR_GRAMMAR)
    assert evaluate("(19 + 36) * 7 / 5", COUNTDOWN_GRAMMAR).literals == (19, 36, 7, 5)
    with pytest.raises(ExpressionError, match="the operator \\*\\* is not allowed"):
        evaluate("2 ** 3", COUNTDOWN_GRAMMAR)
