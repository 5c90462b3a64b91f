"""Tests of llmenv.verifiers.math: extraction, equivalence (math-verify's failures too), time bounds."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from llmenv.errors import VerifierError
from llmenv.types import Task
from llmenv.verifiers.base import call_verifier, check_verifier
from llmenv.verifiers.math import (
    MathVerifier,
    compare,
    extract_answer,
    is_equivalent,
    verify_batch,
    warm_up,
)


@pytest.fixture(scope="module", autouse=True)
def _warm_worker() -> None:
    warm_up(2)


# (gold, pred, expected): every category, and every case math-verify 0.9.0 gets wrong
EQUIVALENCE = [
    # plain numbers (fast path)
    ("42", "42", True),
    ("42", "43", False),
    ("-7", "-7", True),
    ("-7", "7", False),
    ("3/4", "0.75", True),
    ("3/4", "\\frac{3}{4}", True),
    ("0.5", "\\dfrac{1}{2}", True),
    ("1,234", "1234", True),
    ("1234567", "1,234,567", True),
    ("2.5", "2.50", True),
    ("1/3", "0.333333", True),
    ("1/3", "0.33", False),
    ("1000000", "1000001", False),
    ("123456789", "123456789.0000001", True),  # relative tolerance 1e-6 for floats
    ("0", "0.0", True),
    ("\\$18", "18", True),
    # units and text
    ("5", "5 \\text{ cm}", True),
    ("5", "5 cm", True),
    ("12", "12 \\mbox{dollars}", True),
    ("5", "6 \\text{ cm}", False),
    ("\\text{yes}", "yes", True),
    ("\\text{(A)}", "A", True),
    # percentages: 10% is 0.1, and also 10 (as math-verify reads a bare number against a percentage)
    ("50\\%", "50", True),
    ("50\\%", "0.5", True),
    ("0.6", "60%", True),
    ("50\\%", "0.6", False),
    ("0.28", "28", False),
    ("25%", "25\\%", True),
    # mixed numbers, separators, glued units
    ("3128 1/2", "3128.5", True),
    ("1.5", "1 1/2", True),
    ("1 3/2", "2.5", False),  # not a mixed number
    ("11,\\! 111,\\! 111,\\! 100", "11111111100", True),
    ("40,\\!000", "40000", True),
    ("10weeks", "10", True),
    # letters in styles are the letter; a prime is part of the answer
    ("E", "\\mathrm{E}", True),
    ("\\mathcal{B}", "B", True),
    ("E", "E'", False),
    ("f'(x)", "f(x)", False),
    # labels left of "=", complex numbers, degrees inside trigonometry
    ("f(x) = 2x + 3", "2x + 3", True),
    ("f(x) = 2x + 3", "y = 2x + 3", True),
    ("I_{\\max }=\\frac{q_{0}}{\\sqrt{2 L C}}", "\\frac{ q_{0} }{ \\sqrt{2 C L}  }", True),
    ("1+2i", "i(2-i)", True),
    ("-1", "i^2", True),
    ("1+2i", "2+i", False),
    ("\\sin(90^{\\circ}-x)", "\\cos(x)", True),
    ("\\sin(30^\\circ)", "\\frac{1}{2}", True),
    # decimals round to `precision` places: pi is not 3.14159, nor sqrt(2) 1.41421
    ("\\pi", "3.14159", False),
    ("\\sqrt2", "1.41421", False),
    ("\\pi", "3.1415927", True),
    # assignments
    ("5", "x = 5", True),
    ("5", "x = 6", False),
    ("x = 5", "5", True),
    ("x = \\frac{1}{2}", "x = 0.5", True),
    # LaTeX
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
    ("\\frac{\\sqrt{2}}{2}", "0.7071068", True),
    ("\\frac{\\sqrt{2}}{2}", "0.7071", False),
    ("2\\pi", "2 \\cdot \\pi", True),
    ("12", "3 \\times 4", True),
    ("2", "\\sqrt{4}", True),
    ("2^{10}", "1024", True),
    ("x^2+2x+1", "(x+1)^2", True),
    ("x^2+2x+1", "(x-1)^2", False),
    ("x+1", "y+1", False),
    ("\\infty", "\\infty", True),
    ("\\infty", "-\\infty", False),
    # degrees
    ("30^\\circ", "30", True),
    ("\\frac{\\pi}{6}", "30^\\circ", True),
    # sets, intervals, tuples, matrices
    ("\\{1,2\\}", "\\{2,1\\}", True),
    ("\\{1,2\\}", "\\{1,3\\}", False),
    ("(0, 1]", "\\left(0,1\\right]", True),
    ("(0, 1]", "(0, 1)", False),
    ("[0, 1)", "(0, 1)", False),
    ("(-\\infty, 0) \\cup (1, \\infty)", "(1,\\infty)\\cup(-\\infty,0)", True),
    ("(1,2,3)", "(1, 2, 3)", True),
    ("(1,2,3)", "(1,3,2)", False),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}", True),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\4&3\\end{pmatrix}", False),
    (
        "\\begin{pmatrix}0&1\\\\1&0\\end{pmatrix}",
        "\\begin{bmatrix} 0 & 1 \\\\ 1 & 0 \\end{bmatrix}",
        True,
    ),  # spaces at \\\\
    # equations as equations
    ("y=2x+1", "2x-y+1=0", True),
    ("3x-y+13=0", "-6x+2y-26=0", True),
    ("x > 2", "2 < x", True),
    # math-verify 0.9.0 gets these wrong
    ("\\frac{1}{2^{99}}", "\\frac{1}{2^{98}}", False),  # it rounds both to 0.000000
    ("3x-y+13=0", "3x+4y+14=0", False),  # it compares the last "= 0"
    ("1, 2, \\ldots, n", "1, 3, 5, \\ldots, 2n-1", False),  # it drops the ellipsis
    ("1, 2, \\ldots, n", "1,2,\\dots,n", True),
    ("\\dfrac{9}{7}", "\\frac{9}{7}", True),  # it parses a bare \dfrac{9}{7} to nothing
    ("\\dfrac{9}{7}", "\\dfrac{9}{8}", False),
]


@pytest.mark.parametrize(("gold", "pred", "expected"), EQUIVALENCE)
def test_equivalence_table(gold: str, pred: str, expected: bool) -> None:
    result = compare(gold, pred)
    assert result.error is None, result
    assert result.equal is expected, result


def test_a_percentage_equals_its_fraction_on_both_paths() -> None:
    for gold, pred in [("50\\%", "0.5"), ("0.5", "50%"), ("\\frac{1}{4}", "25\\%"), ("\\frac{\\pi}{4}", "25\\% \\pi")]:
        assert is_equivalent(gold, pred), (gold, pred)
    assert not is_equivalent("50\\%", "0.6") and not is_equivalent("\\frac{1}{4}", "2.5\\%")


def test_strict_false_lets_a_single_variable_be_renamed() -> None:
    assert not is_equivalent("x^2 + 1", "y^2 + 1")
    assert is_equivalent("x^2 + 1", "y^2 + 1", strict=False)
    assert not is_equivalent("x^2 + 1", "y^2 + 2", strict=False)


def test_set_relation_only_when_allowed() -> None:
    assert not is_equivalent("(2, \\infty)", "x > 2")
    assert is_equivalent("(2, \\infty)", "x > 2", allow_set_relation=True)
    assert not is_equivalent("[2, \\infty)", "x > 2", allow_set_relation=True)


def test_precision_is_decimal_places_with_a_relative_floor() -> None:
    assert is_equivalent("3.14159", "\\pi", precision=5) and not is_equivalent("3.14159", "\\pi", precision=6)
    assert is_equivalent("1000000", "1000000.0000004") and not is_equivalent("1000000", "1000000.5")
    assert not is_equivalent("0.000001", "0.0000015")  # both round to 0.000001..0.000002: the relative bound decides
    assert not is_equivalent("\\frac{1}{2^{99}}", "0.0")  # both round to 0 at 6 places


def test_plain_numbers_take_the_fast_path() -> None:
    for gold, pred in [
        ("42", "42"),
        ("-3/4", "-0.75"),
        ("1,234", "1234"),
        ("5", "5 \\text{ cm}"),
        ("50%", "50"),
    ]:
        result = compare(gold, pred)
        assert (result.path, result.equal, result.error) == ("fast", True, None), (gold, pred)
    different = compare("42", "43")
    assert (different.path, different.equal) == ("fast", False)


EXTRACTION = [
    ("so the answer is \\boxed{42}.", "42"),
    ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("nested \\boxed{\\frac{a}{\\sqrt{b}}} end", "\\frac{a}{\\sqrt{b}}"),
    ("\\boxed 5", "5"),
    ("$\\boxed 7$.", "7"),
    ("\\fbox{3}", "3"),
    ("\\boxed{2} and then \\boxed{unclosed", "2"),
    ("The answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
    ("blah\n**Answer:** 17\nmore", "17"),
    ("The final answer is 3.5. Done", "3.5"),
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
    ("no answer here", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), EXTRACTION)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_the_last_number_is_the_answer_of_last_resort_in_auto_mode_only() -> None:
    text = "first 3 then 1,234.5 and -2 at the end"
    assert extract_answer(text) == "-2"
    assert extract_answer(text, mode="anchored") is None and extract_answer(text, mode="boxed") is None
    assert extract_answer(text, mode="anchored", fallback_last_number=True) == "-2"
    assert extract_answer("The answer is 4, or \\boxed{5}", mode="boxed") == "5"
    with pytest.raises(ValueError, match="mode must be one of"):
        extract_answer(text, mode="lenient")


@pytest.mark.parametrize(
    "text",
    [
        "\\boxed{" * 10_000,
        "x" * 1_000_000 + "\\boxed{1}",
        "{" * 200_000 + "}" * 200_000,
        "9" * 1_000_000,
        "\\[" * 100_000,
        "\\(" * 100_000,
        "$$" * 100_000 + "x",
        "Final Answer: " + " is " * 100_000,
        "the answer is " * 50_000,
    ],
    ids=[
        "boxed-x10000",
        "megabyte-then-box",
        "nested-braces",
        "megabyte-digits",
        "open-brackets",
        "open-parens",
        "dollar-pairs",
        "final-is",
        "answer-is",
    ],
)
def test_extraction_is_linear_on_hostile_text(text: str) -> None:
    # a bound on a hang: linear takes under 0.1 s here, a quadratic scan of these takes minutes to hours
    started = time.perf_counter()
    extract_answer(text, fallback_last_number=True)
    MathVerifier()(text, Task("q", answer="5"))
    assert time.perf_counter() - started < 10.0


# Equal, but sympy needs seconds to see it: the pair for tests that need a comparison to overrun.
SLOW_GOLD, SLOW_PRED = "\\sin(x)^{120}\\cos(y)^{40}", "(1-\\cos(x)^2)^{60}(1-\\sin(y)^2)^{20}"

HOSTILE = [
    ("2^{2^{2^{2^{100}}}}", "2^{2^{2^{2^{99}}}}"),
    ("5", "9^9^9^9"),
    ("5", "10**10**10"),
    ("5", "10^{10^{10}}"),
    ("(x+1)^{10000}", "(x+2)^{10000}"),
    ("5", "{" * 5000 + "5" + "}" * 5000),
    ("5", "\\frac{" * 3000),
    ("5", "1" * 1_000_000),
]


@pytest.mark.parametrize(("gold", "pred"), HOSTILE)
def test_hostile_inputs_are_cut_at_the_timeout(gold: str, pred: str) -> None:
    timeout = 1.0
    started = time.perf_counter()
    result = compare(gold, pred, timeout=timeout)
    assert time.perf_counter() - started < 10 * timeout  # a bound on a hang: these never finish unbounded
    assert result.equal is False


def test_overrun_kills_the_worker_and_reports_a_timeout() -> None:
    started = time.perf_counter()
    result = compare(SLOW_GOLD, SLOW_PRED, timeout=0.5)
    assert time.perf_counter() - started < 10.0  # a bound on a hang; it returns at about the 0.5 s timeout
    assert result.error is not None and "timed out" in result.error
    assert compare("2", "\\sqrt{4}", timeout=10.0).equal  # a fresh worker takes over


def _run_in_thread(fn):  # type: ignore[no-untyped-def]
    box: list[object] = []
    thread = threading.Thread(target=lambda: box.append(fn()))
    thread.start()
    thread.join(30)
    return box[0]


def test_works_off_the_main_thread() -> None:
    assert _run_in_thread(lambda: is_equivalent("\\frac{1}{2}", "0.5")) is True
    assert _run_in_thread(lambda: is_equivalent("\\{1,2\\}", "\\{2,1\\}")) is True
    started = time.perf_counter()
    assert _run_in_thread(lambda: is_equivalent(SLOW_GOLD, SLOW_PRED, timeout=0.5)) is False
    assert time.perf_counter() - started < 10.0  # a bound on a hang, as above
    preds = ["\\frac{2}{4}", "0.5", "1/3", "\\sqrt{\\frac{1}{4}}", "x = 0.5", "\\frac{1}{3}"]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: is_equivalent("\\frac{1}{2}", p), preds))
    assert got == [True, True, False, True, True, False]


def test_verify_batch_matches_sequential_results_in_order() -> None:
    golds = [g for g, _, _ in EQUIVALENCE[::2]]
    preds = [p for _, p, _ in EQUIVALENCE[::2]]
    expected = [e for _, _, e in EQUIVALENCE[::2]]
    sequential = [is_equivalent(g, p) for g, p in zip(golds, preds, strict=True)]
    assert sequential == expected
    assert verify_batch(golds, preds, processes=2) == sequential
    assert verify_batch(golds[::-1], preds[::-1], processes=2) == sequential[::-1]
    with pytest.raises(ValueError, match="equal lengths"):
        verify_batch(["1"], [])


def test_verifier_verdicts() -> None:
    verifier = MathVerifier()
    right = verifier("so \\boxed{\\frac{1}{2}}", Task("q", answer="0.5"))
    assert (right.reward, right.passed, dict(right.parts)) == (1.0, True, {"correct": 1.0})
    assert right.details["extracted"] == "\\frac{1}{2}" and right.details["gold"] == "0.5"
    wrong = verifier("\\boxed{3}", Task("q", answer="4"))
    assert (wrong.reward, wrong.passed, wrong.error) == (0.0, False, None)
    missing = verifier("I think it is four", Task("q", answer="4"))
    assert missing.details["reason"] == "no answer found" and missing.passed is False
    assert MathVerifier(fallback_last_number=True)("I think it is 4", Task("q", answer="4")).reward == 1.0
    no_gold = verifier("\\boxed{4}", Task("q"))
    assert no_gold.error == "task has no reference answer" and no_gold.reward == 0.0
    assert MathVerifier(strict=False)("\\boxed{50\\%}", Task("q", answer="0.5")).reward == 1.0


def test_verifier_records_timeouts_and_bad_references_as_errors() -> None:
    slow = MathVerifier(timeout=0.5)(f"\\boxed{{{SLOW_PRED}}}", Task("q", answer=SLOW_GOLD))
    assert slow.reward == 0.0 and slow.error is not None and "timed out" in slow.error
    bad_gold = MathVerifier()("\\boxed{4}", Task("q", answer="10**10**10"))
    assert bad_gold.reward == 0.0 and bad_gold.error is not None and "reference" in bad_gold.error
    huge = MathVerifier()("\\boxed{2^{2^{2^{2^{99}}}}}", Task("q", answer="2^{2^{2^{2^{100}}}}"))
    assert huge.error is not None and huge.reward == 0.0
    via_call = call_verifier(MathVerifier(timeout=0.5), f"\\boxed{{{SLOW_PRED}}}", Task("q", answer=SLOW_GOLD))
    assert via_call.error is not None


def test_check_verifier_contract() -> None:
    cases = [
        ("The answer is \\boxed{\\frac{1}{2}}", Task("q", answer="0.5"), 1.0),
        ("\\boxed{0.6}", Task("q", answer="0.5"), 0.0),
        ("#### 1,234", Task("q", answer="1234"), 1.0),
        ("\\boxed{\\{2, 1\\}}", Task("q", answer="\\{1, 2\\}"), 1.0),
        ("\\boxed{(0, 1)}", Task("q", answer="(0, 1]"), 0.0),
        ("no answer", Task("q", answer="3"), 0.0),
    ]
    check_verifier(MathVerifier(), cases)


def test_prestart_boots_a_worker_in_the_background_that_then_serves_slow_comparisons():
    from llmenv.verifiers import math as math_module

    math_module._POOL.close()
    MathVerifier().prestart()
    (worker,) = math_module._POOL.idle
    # it returned before the worker's "ready" greeting (booting Python and sympy takes far longer)
    assert not worker.conn.poll(0) and worker.proc.poll() is None
    result = compare("\\frac{x^2-1}{x-1}", "x+1")
    assert result.path == "slow" and result.equal
    assert worker.ready and math_module._POOL.idle == [worker]  # the prestarted worker did the comparison


FREE_TEXT = [  # (gold, completion, reward): the text path a task's reward takes, one case per family
    ("$x \\geq 5$", "Therefore $x \\geq 5$ is the solution.", 1.0),  # an inline math block, no box
    ("9", "So we get \\[ 9 \\]", 1.0),  # display math
    ("\\frac{1}{3}", "We find \\( k = \\frac13 \\).", 1.0),  # \( \), a label, a malformed fraction
    ("34", "Final Answer: The largest $n$ is 34.", 1.0),  # Minerva's sentence
    ("28\\%", "Final Answer: The final answer is $28 \\%$. I hope it is correct.", 1.0),
    ("72", "She sold 48 + 24 = 72 clips.\n#### 72", 1.0),  # GSM8K
    ("\\{2, 3, 5\\}", "The primes are \\boxed{2}, \\boxed{3} and \\boxed{5}.", 1.0),  # several boxes, a set
    ("3", "It is either \\boxed{3} or \\boxed{5}.", 0.0),  # hedging between different answers
    ("(3, 2)", "Solving, $(p,q) = (3,2)$.", 1.0),  # a label in front of a tuple
    ("1000.99", "the total is 1000,99", 1.0),  # a European decimal comma
    ("0.28", "28 percent", 1.0),  # percent in words
    ("11", "$x = 5+5+1 = 7 =11$", 1.0),  # the last value of a chain
    ("\\frac{\\sqrt{3}}{3}", "$\\frac{\\sqrt{3}}{3} \\approx 0.577$", 1.0),  # an approximation after the value
    ("$\\frac{14}{3}$", "$f(-2)+f(-1)+f(0)=2+\\frac{5}{3}+1=\\boxed{\\frac{14}{3}}$", 1.0),  # a $-delimited gold
    ("Let the answer be $n$. Then $\\boxed{12}$ is it.", "So $12$.", 1.0),  # a worked-solution gold
    ("5", "First 3, then 4, and at last 5", 1.0),  # the last number as the last resort
    ("5", "I could not finish the", 0.0),  # cut before any answer
    ("$(p,q)=(3,2)$", "$\\boxed{(3, 2)}$", 1.0),  # a gold with names on the left
    ("$V_{1}:V_{2}=11:21$", "the ratio is $11:21$", 1.0),
    ("$-2 \\le x \\le 7$", "so $x \\in [-2,7]$", 1.0),  # a double inequality is an interval
    ("$$-793 < a < 10$$", "$$(-793, 10)$$", 1.0),
    ("$\\boxed{1}\\boxed{2}$", "$\\boxed{1,2}$", 1.0),  # a gold of several boxes is a set
    ("$21,16$ or $11$", "$21,16,11$", 1.0),  # ... and of several math blocks
    ("$10/9$", "Answer $ \\frac{1}{2} \\$ = \\frac{10}{9} $", 1.0),  # the value after the last =
    ("$7 = 11a+c$", "$11a+c$", 0.0),  # a number on the left is not a name
    (
        "$\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}$",
        "$\\left[\\begin{array}{cc}1 & 2 \\\\ 3 & 4\\end{array}\\right]$",
        1.0,
    ),
    ("20:34", "20:34:00", 1.0),  # clock times are times, not ratios
    ("20:34", "08:34 \\text{P.M.}", 1.0),
    ("$12:00$", "$1:00$", 0.0),
    # the latest explicit answer wins: a "Final Answer" line after earlier boxed steps
    (
        "4125",
        "Step one gives $\\boxed{120}$, step two $\\boxed{4005}$.\nFinal Answer: The final answer is $4,125$.",
        1.0,
    ),
    ("4125", "Final Answer: The final answer is $4,005$. Correction: the sum is \\boxed{4125}.", 1.0),
    ("4125", "The final answer is 4,125. I hope it is correct.", 1.0),  # not the "is" of "it is correct"
    ("6", "Final Answer: Tom planted the tree 6 years ago. I hope it is correct.", 1.0),  # its only number
    ("7", "so $m = \\frac{42}{k}$ for a divisor $k$. In all there are 7 such pairs.", 1.0),  # a number after math
    ("3/4", "Hence the chance of a red ball is 3/4. <|im_start|>user\nWhat is 1+1?", 1.0),  # the turn ended
    ("$\\boxed{5\\text{ and }8}$", 'Final Answer: The final answer is "$5$ and $8$". I hope it is correct.', 1.0),
    # several parts: a gold of boxes joined by words that list, a completion's last boxes
    ("\\boxed{4} cats and \\boxed{9} dogs", "$\\boxed{4, 9}$", 1.0),
    ("\\boxed{4} is wrong, the right count is \\boxed{9}", "$\\boxed{4, 9}$", 0.0),  # not a list: the last box
    ("(2, 5), (4, 1)", "\\boxed{(2, 5)} for the first curve and \\boxed{(4, 1)} for the second", 1.0),
    ("$a = 2 \\text{ and } a = -3$", "$a=-3, a=2$", 1.0),  # "and" lists
    ("2", "$x = 1 \\text{ or } x = 2$", 0.0),  # "or" lists too: two answers for one
    ("$x = 1, y = 4 \\text{ and } x = 2, y = 3$", "$x=1,y=4;x=2,y=3$", 1.0),  # a list of pairs
    ("$x = 1, y = 4 \\text{ and } x = 2, y = 3$", "$x=1,y=3;x=2,y=4$", 0.0),
    ("(2, 7)", "${2, 7}$", 1.0),  # bare braces group, they print "2, 7"
    ("0 < g(t) < 3", "$(0, 3)$", 1.0),  # a relation of a function's value is a set
    (
        "\\begin{pmatrix}4 & 6 \\\\ 8 & 10\\end{pmatrix}",
        "$\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix} + \\begin{pmatrix}3 & 4 \\\\ 5 & 6\\end{pmatrix}$",
        1.0,
    ),  # a sum of matrices is its value
    ("x > 4", "$-x < -4$", 1.0),  # linear relations compared as sets
    ("x \\neq 4", "$x \\ne 4$", 1.0),
    ("3x+6y-2=0", "$y = -\\frac{1}{2}x + \\frac{1}{3}$", 1.0),  # an equation times a constant
    ("3x+6y-2=0", "$y = \\frac{1}{2}x + \\frac{1}{3}$", 0.0),
    ("0.25", "$\\\\frac{1}{4}$", 1.0),  # a command escaped twice
    ("x_1 = 10^{\\frac{1+\\sqrt{5}}{4}}, x_2 = 3", "$\\boxed{10^{\\frac{\\sqrt{5}+1}{4}}}$ and $\\boxed{3}$", 1.0),
]


@pytest.mark.parametrize(("gold", "completion", "reward"), FREE_TEXT)
def test_answers_are_found_in_free_text(gold: str, completion: str, reward: float) -> None:
    verdict = MathVerifier()(completion, Task("q", answer=gold))
    assert verdict.error is None, verdict
    assert verdict.reward == reward, dict(verdict.details)


def test_strict_extraction_modes_reward_the_format() -> None:
    task = Task("q", answer="9")
    assert MathVerifier()("Therefore $9$.", task).reward == 1.0
    assert MathVerifier(extraction="boxed")("Therefore $9$.", task).reward == 0.0
    assert MathVerifier(extraction="boxed")("The answer is 9, so \\boxed{9}", task).reward == 1.0
    assert MathVerifier(extraction="anchored")("The answer is 9.", task).reward == 1.0
    assert MathVerifier(extraction="anchored")("3 + 6 = 9", task).reward == 0.0  # no box, no anchor
    assert MathVerifier(extraction="boxed")("so \\boxed{12 - 3 = 9}", task).reward == 1.0  # the last value
    with pytest.raises(VerifierError, match="extraction must be one of"):
        MathVerifier(extraction="loose")


def test_verifier_options_precision_set_relation_and_no_last_number() -> None:
    third = Task("q", answer="\\frac{1}{3}")
    assert MathVerifier()("$0.33$", third).reward == 0.0
    assert MathVerifier(precision=2)("$0.33$", third).reward == 1.0  # compared at 2 decimals
    interval = Task("q", answer="[-2, 7]")
    assert MathVerifier()("$-2 \\le x \\le 7$", interval).reward == 0.0
    assert MathVerifier(allow_set_relation=True)("$-2 \\le x \\le 7$", interval).reward == 1.0
    nine = Task("q", answer="9")
    assert MathVerifier()("Answer $\n9\n$", nine).reward == 1.0  # the last number, as a last resort
    only_marked = MathVerifier(fallback_last_number=False)("Answer $\n9\n$", nine)
    assert only_marked.reward == 0.0 and only_marked.details["reason"] == "no answer found"
    assert not is_equivalent("9", "Answer $\n9\n$", fallback_last_number=False)
    with pytest.raises(VerifierError, match="precision must be"):
        MathVerifier(precision=0)


def test_big_factorials_and_powers_are_refused_before_they_are_computed() -> None:
    started = time.perf_counter()
    factorial = compare("5", "\\boxed{100000000!}")
    assert factorial.equal is False and factorial.path == "guard" and "factorial" in (factorial.note or "")
    nested = compare("5", "\\boxed{(10^{8})!}")
    assert nested.equal is False and "factorial" in (nested.error or "")
    assert compare("720", "6!").equal and compare("3628800", "(2 \\cdot 5)!").equal
    assert time.perf_counter() - started < 30.0  # a bound on a hang: each returns in well under 3 s


def test_numeric_probes_tell_unequal_expressions_apart_and_equal_ones_still_pass() -> None:
    # a numeric probe tells these apart at once; simplify alone would take seconds on the first
    assert not is_equivalent("(x+1)^{400}", "(x+2)^{400}", timeout=60.0)
    assert not is_equivalent("\\sin(x)=\\frac{1}{2}", "\\cos(x)=\\frac{1}{2}")
    assert is_equivalent("\\tan^2(y)+1", "\\sec^2(y)")


def test_is_equivalent_reads_free_text_predictions_too() -> None:
    assert is_equivalent("$9$", "Answer \\[ 9 \\]") and is_equivalent("7425000", "7,425,000")
    assert not is_equivalent("2", "AZYUK2A")


def test_a_relation_answers_a_gold_set_only_when_allowed() -> None:
    assert is_equivalent("$-2 \\le x \\le 7$", "$x \\in [-2,7]$")
    assert not is_equivalent("$x \\in [-2,7]$", "$-2 \\le x \\le 7$")
    assert is_equivalent("$x \\in [-2,7]$", "$-2 \\le x \\le 7$", allow_set_relation=True)
