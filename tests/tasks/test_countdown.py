"""Tests of llmenv.tasks.countdown: solvable, deterministic generation; the countdown grammar of the
shared evaluator (llmenv.arith, whose hostile inputs tests/test_arith.py covers); a verifier that checks
both the numbers used and the value and stays bounded on hostile completions."""

from __future__ import annotations

import time
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from llmenv.arith import ExpressionError
from llmenv.errors import TaskConfigError
from llmenv.tasks import countdown
from llmenv.tasks.countdown import CountdownVerifier, generate_countdown, parse_expression
from llmenv.types import Task
from llmenv.verifiers.base import call_verifier, check_verifier

TASK = Task(prompt="q", answer="65", meta={"numbers": [19, 36, 55, 7], "target": 65, "solution": "19 + 36 + 55 / 7"})
VERIFY = CountdownVerifier()
HANG_S = 10.0
"""Wall-clock bound of the hostile-completion check: it takes about 0.2 s, so this only catches a hang
(quadratic or worse work on megabyte completions), it claims no speed."""


# --------------------------------------------------------------------------- generation


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"count": 2, "max_number": 10},
        {"count": 6, "ops": "+-"},
        {"ops": "*/", "max_number": 12},
        {"ops": "-"},
    ],
)
def test_generated_tasks_are_solvable_by_their_own_solution(params):
    for seed in range(60):
        task = generate_countdown(np.random.default_rng(seed), **params)
        numbers, target = task.meta["numbers"], task.meta["target"]
        count, max_number = params.get("count", 4), params.get("max_number", 100)
        assert len(numbers) == count and all(1 <= n <= max_number for n in numbers)
        assert isinstance(target, int) and 0 < target <= 1000 and task.answer == str(target)
        value, used = parse_expression(task.meta["solution"])
        assert value == target and Counter(used) == Counter(numbers)
        assert set(task.meta["solution"]) - set("0123456789 ()") <= set(params.get("ops", "+-*/"))
        verdict = VERIFY(f"Let me try.\n\\boxed{{{task.meta['solution']}}}", task)
        assert verdict.reward == 1.0 and verdict.passed, (seed, task.meta, dict(verdict.details))


def test_prompt_names_numbers_target_ops_and_boxed():
    task = generate_countdown(np.random.default_rng(3), ops="+*")
    numbers, target = task.meta["numbers"], task.meta["target"]
    assert task.prompt.startswith(f"Using the numbers {numbers}, create an equation that equals {target}. ")
    assert "You can use + * and parentheses, and each number must be used exactly once." in task.prompt
    assert task.prompt.endswith("Put the final expression in \\boxed{}, e.g. \\boxed{(1 + 2) * 3}.")


def test_generation_is_deterministic_per_seed_and_varies_across_seeds():
    first = [generate_countdown(np.random.default_rng(seed)) for seed in range(20)]
    again = [generate_countdown(np.random.default_rng(seed)) for seed in range(20)]
    assert first == again
    assert len({(tuple(t.meta["numbers"]), t.meta["target"]) for t in first}) == 20
    rng = np.random.default_rng(0)
    assert generate_countdown(rng) != generate_countdown(rng)  # the generator's state advances


def test_targets_respect_max_target():
    targets = [generate_countdown(np.random.default_rng(s), max_target=50).meta["target"] for s in range(40)]
    assert max(targets) <= 50 and len(set(targets)) > 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 1}, r"count must be an int in 2\.\.6, got 1"),
        ({"count": 7}, r"count must be an int in 2\.\.6, got 7"),
        ({"count": 4.0}, "count must be an int"),
        ({"max_number": 0}, "max_number must be an int"),
        ({"max_target": 0}, "max_target must be an int"),
        ({"ops": ""}, "ops must be a non-empty subset of '\\+-\\*/'"),
        ({"ops": "+^"}, "ops must be a non-empty subset"),
        ({"ops": "++"}, "each at most once"),
    ],
)
def test_bad_parameters_raise_task_config_error(kwargs, message):
    with pytest.raises(TaskConfigError, match=message):
        generate_countdown(np.random.default_rng(0), **kwargs)


def test_bad_rng_and_unreachable_targets_raise(monkeypatch):
    with pytest.raises(TaskConfigError, match="rng must be a numpy.random.Generator"):
        generate_countdown(np.random.RandomState(0))  # type: ignore[arg-type]
    monkeypatch.setattr(countdown, "MAX_ATTEMPTS", 200)
    with pytest.raises(TaskConfigError, match=r"no target in 1\.\.5 found in 200 draws with count=6"):
        generate_countdown(np.random.default_rng(0), count=6, max_number=100, ops="*", max_target=5)
    with pytest.raises(TaskConfigError, match="no target in 1..1000 found"):  # 1 - 1 is never positive
        generate_countdown(np.random.default_rng(0), count=2, max_number=1, ops="-")


# --------------------------------------------------------------------------- parser


@pytest.mark.parametrize(
    ("text", "value", "used"),
    [
        ("1 + 2 * 3", 7, [1, 2, 3]),
        ("(1 + 2) * 3", 9, [1, 2, 3]),
        ("10 - 4 - 3", 3, [10, 4, 3]),
        ("8 / 4 / 2", 1, [8, 4, 2]),
        ("7 / 2", Fraction(7, 2), [7, 2]),
        ("-3 + --4", 1, [3, 4]),
        ("-(2 - 5) * 2", 6, [2, 5, 2]),
        ("6 × 7 ÷ 3 − 1", 13, [6, 7, 3, 1]),
        ("2 · 3", 6, [2, 3]),
        (r"(19 + 36) \times 7 \div 5 \cdot 1", 77, [19, 36, 7, 5, 1]),
        ("  ((42))  ", 42, [42]),
    ],
)
def test_parse_expression_values_and_literals(text, value, used):
    assert parse_expression(text) == (value, used)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2 ** 3", r"the operator \*\* is not allowed; use whole numbers, \+ - \* / and parentheses"),
        ("2 ^ 3", r"the operator \^ is not allowed"),
        ("+1", r"the operator unary \+ is not allowed"),
        ("1.5 + 2", "only whole numbers are allowed, got '1.5'"),
        ("1 + x", "unexpected character 'x' at position 4; use whole numbers, \\+ - \\* / and parentheses"),
        ("٣ + 1", "unexpected character '٣' at position 0"),
        ("(1 \\times 2", r"'\(' was never closed at position 0"),
        ("1 \\times 2)", r"unmatched '\)' at position 10"),  # positions count the LaTeX spelling
        ("4 ÷ (2 − 2)", "division by zero"),
        ("(" * 65 + "1" + ")" * 65, "parentheses nested deeper than 64 levels"),
        ("1" + " + 1" * 250, "the expression is longer than 1000 characters"),
        ("9" * 19, "number literal too long: 19 digits > 18"),
    ],
)
def test_parse_expression_refuses_what_countdown_does_not_allow(text, message):
    """Countdown's grammar; hostile inputs of every kind are tested once, in tests/test_arith.py."""
    with pytest.raises(ExpressionError, match=message):
        parse_expression(text)


def test_parser_limits_are_exact():
    assert parse_expression("(" * 64 + "1" + ")" * 64) == (1, [1])
    assert parse_expression("1" + " + 1" * 249)[0] == 250  # 997 characters
    assert parse_expression("9" * 18)[0] == 10**18 - 1
    assert parse_expression("07 + 0") == (7, [7, 0])  # a leading zero is read as people mean it


# --------------------------------------------------------------------------- verifier


SMALL = Task(prompt="q", answer="35", meta={"numbers": [3, 4, 5], "target": 35, "solution": "(3 + 4) * 5"})


@pytest.mark.parametrize(
    ("completion", "task", "source"),
    [
        (r"\boxed{55 + 36 - 19 - 7}", TASK, "boxed"),
        (r"first \boxed{1+1}, but finally \boxed{(55 + 36) - (19 + 7) = 65}", TASK, "boxed"),
        (r"\boxed{(3 + 4) \times 5}", SMALL, "boxed"),
        (r"\boxed{5 \cdot (4 + 3)}", SMALL, "boxed"),
        ("I get:\n55 + 36 - 19 - 7 = 65\n", TASK, "line"),
        ("Answer:\n$55 + 36 - 19 - 7$.", TASK, "line"),
        ("So:\n**(3 + 4) × 5**", SMALL, "line"),
    ],
)
def test_verifier_accepts_correct_expressions(completion, task, source):
    verdict = VERIFY(completion, task)
    assert verdict.reward == 1.0 and verdict.passed is True, dict(verdict.details)
    assert dict(verdict.parts) == {"correct": 1.0, "format": 1.0}
    assert verdict.details["value"] == task.answer and verdict.details["source"] == source
    assert "reason" not in verdict.details


@pytest.mark.parametrize(
    ("completion", "found", "reason"),
    [
        (r"\boxed{55 + 36 - 19}", 1.0, "used [55, 36, 19] but must use [19, 36, 55, 7] exactly once"),
        (
            r"\boxed{55 + 36 - 19 - 7 + 7 - 7}",
            1.0,
            "used [55, 36, 19, 7, 7, 7] but must use [19, 36, 55, 7] exactly once",
        ),
        (r"\boxed{55 + 36 - 19 - 8}", 1.0, "used [55, 36, 19, 8] but must use [19, 36, 55, 7] exactly once"),
        (r"\boxed{55 + 36 - 19 + 7}", 1.0, "value 79 != target 65"),
        (r"\boxed{(55 + 36) / 19 - 7}", 1.0, "value -42/19 != target 65"),
        (r"\boxed{65}", 1.0, "used [65] but must use [19, 36, 55, 7] exactly once"),
        (
            r"\boxed{__import__('os').system('x')}",
            0.0,
            "parse error: unexpected character '_' at position 0; use whole numbers, + - * / and parentheses",
        ),
        (r"\boxed{55 + 36 - 19 - 7", 0.0, "no \\boxed{} expression and no line that looks like one"),
        ("The answer is sixty-five.", 0.0, "no \\boxed{} expression and no line that looks like one"),
        ("65", 0.0, "no \\boxed{} expression and no line that looks like one"),
        ("So 55 + 36 - 19 - 7 works", 0.0, "no \\boxed{} expression and no line that looks like one"),
        ("(" * 70 + "1" + ")" * 70 + "+1", 0.0, "parse error: parentheses nested deeper than 64 levels"),
    ],
)
def test_verifier_rejects_with_reason(completion, found, reason):
    verdict = VERIFY(completion, TASK)
    assert verdict.reward == 0.0 and verdict.passed is False and verdict.error is None
    assert dict(verdict.parts) == {"correct": 0.0, "format": found}
    assert verdict.details["reason"] == reason


def test_verifier_uses_the_last_box_only():
    assert VERIFY(r"\boxed{55 + 36 - 19 - 7} no wait \boxed{55 + 36 - 19}", TASK).reward == 0.0
    assert VERIFY(r"\boxed{55 + 36 - 19} no wait \boxed{55 + 36 - 19 - 7}", TASK).reward == 1.0


def test_verifier_without_meta_is_an_error_not_a_zero():
    verdict = call_verifier(VERIFY, r"\boxed{1+2}", Task("q", answer="3"))
    assert verdict.error is not None and "task.meta['numbers']" in verdict.error


def test_hostile_completions_are_bounded_in_time():
    started = time.perf_counter()
    for completion in [
        "1" * 1_000_000 + "x",
        "1+" * 500_000,
        "\\boxed{" * 100_000,
        "(" * 1_000_000 + "\n1+1",
    ]:
        verdict = VERIFY(completion, TASK)
        assert verdict.reward == 0.0 and verdict.details["reason"]
    assert time.perf_counter() - started < HANG_S


def test_check_verifier_contract():
    generated = generate_countdown(np.random.default_rng(7))
    cases = [
        (r"\boxed{55 + 36 - 19 - 7}", TASK, 1.0),
        (r"\boxed{55 + 36 - 19}", TASK, 0.0),
        (f"\\boxed{{{generated.meta['solution']}}}", generated, 1.0),
    ]
    assert VERIFY.time_bounded is True
    check_verifier(VERIFY, cases, timeout_s=2.0)
