"""`llmenv/countdown-v0`: reach a target number using each given number exactly once with + - * /.

`generate_countdown` draws the numbers, builds a random expression tree over them in exact
rational arithmetic and keeps its value as the target, so every task is solvable and carries one
solution. `CountdownVerifier` checks a completion's final expression with `llmenv.arith`, the
safe evaluator the calculator tool shares: model output is parsed and walked, never executed
with `eval` or `exec`, and the evaluator bounds its work (length, nesting, literal size).
"""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction

import numpy as np

from llmenv.arith import ExpressionError, Grammar, evaluate
from llmenv.errors import TaskConfigError
from llmenv.types import Task, Verdict
from llmenv.verifiers.format import boxed_contents

__all__ = ["COUNTDOWN_GRAMMAR", "generate_countdown", "parse_expression", "CountdownVerifier"]

_OPS = "+-*/"
MAX_ATTEMPTS = 10_000


def _apply(op: str, left: Fraction, right: Fraction) -> Fraction | None:
    """`left op right`, or None for a division that is not exact or divides by zero."""
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if right == 0 or (left / right).denominator != 1:
        return None
    return left / right


def _random_expression(rng: np.random.Generator, numbers: list[int], ops: str) -> tuple[Fraction, str] | None:
    """Combine random pairs of the pool until one expression is left; None if no op fits a pair."""
    pool = [(Fraction(n), str(n), True) for n in numbers]  # (value, text, is a bare number)
    while len(pool) > 1:
        i, j = (int(k) for k in rng.choice(len(pool), size=2, replace=False))
        (left, left_text, left_atom), (right, right_text, right_atom) = pool[i], pool[j]
        value, op = None, ""
        for k in rng.permutation(len(ops)):  # the first op, in random order, whose result is exact
            if (value := _apply(op := ops[int(k)], left, right)) is not None:
                break
        if value is None:
            return None
        text = f"{left_text if left_atom else f'({left_text})'} {op} "
        text += right_text if right_atom else f"({right_text})"
        pool = [item for k, item in enumerate(pool) if k not in (i, j)] + [(value, text, False)]
    return pool[0][0], pool[0][1]


def generate_countdown(
    rng: np.random.Generator,
    *,
    count: int = 4,
    max_number: int = 100,
    ops: str = "+-*/",
    max_target: int = 1000,
) -> Task:
    """Draw one Countdown task: `count` numbers in 1..max_number and a reachable target in 1..max_target.

    The numbers are redrawn until a random expression over them (each used once, exact divisions
    only) is a positive integer no larger than `max_target`; `meta["solution"]` is that expression.
    """
    if not isinstance(rng, np.random.Generator):
        raise TaskConfigError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    for label, value, low, high in (
        ("count", count, 2, 6),
        ("max_number", max_number, 1, 10**6),
        ("max_target", max_target, 1, 10**9),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise TaskConfigError(f"{label} must be an int in {low}..{high}, got {value!r}")
    if not isinstance(ops, str) or not ops or set(ops) - set(_OPS) or len(set(ops)) != len(ops):
        raise TaskConfigError(f"ops must be a non-empty subset of {_OPS!r} (each at most once), got {ops!r}")
    for _ in range(MAX_ATTEMPTS):
        numbers = [int(n) for n in rng.integers(1, max_number + 1, size=count)]
        built = _random_expression(rng, numbers, ops)
        if built is not None and built[0].denominator == 1 and 0 < built[0] <= max_target:
            target, solution = int(built[0]), built[1]
            break
    else:
        raise TaskConfigError(
            f"no target in 1..{max_target} found in {MAX_ATTEMPTS} draws with count={count}, "
            f"max_number={max_number}, ops={ops!r}; raise max_target or allow more operators"
        )
    prompt = (
        f"Using the numbers {numbers}, create an equation that equals {target}. "
        f"You can use {' '.join(ops)} and parentheses, and each number must be used exactly once. "
        "Put the final expression in \\boxed{}, e.g. \\boxed{(1 + 2) * 3}."
    )
    meta = {"numbers": numbers, "target": target, "solution": solution}
    return Task(prompt=prompt, answer=str(target), meta=meta)


COUNTDOWN_GRAMMAR = Grammar(max_chars=1000, max_depth=64, max_literal_digits=18)
"""What a countdown answer may contain: whole numbers, + - * /, unary minus and parentheses."""
_SPELLED_OPERATORS = re.compile(r"\\times|\\div|\\cdot|[×÷·−]")
_ASCII_OPERATOR = {"\\times": "*", "×": "*", "·": "*", "\\cdot": "*", "\\div": "/", "÷": "/", "−": "-"}


def parse_expression(text: str) -> tuple[Fraction, list[int]]:
    """The exact value of an arithmetic expression and the integer literals it uses, in order.

    Accepts whole numbers, + - * / (also × ÷ · − and LaTeX `\\times` `\\div` `\\cdot`), parentheses
    and unary minus, evaluated by `llmenv.arith`; raises `ExpressionError` (a ValueError) on anything
    else, on division by zero, and beyond 1000 characters, 64 levels of parentheses or 18-digit numbers.

    >>> parse_expression("(19 + 36) \\\\times 7 ÷ 5")
    (Fraction(77, 1), [19, 36, 7, 5])
    """
    # Padded to the spelling's length, so positions in error messages stay those of `text`.
    ascii_text = _SPELLED_OPERATORS.sub(lambda op: _ASCII_OPERATOR[op.group()].ljust(len(op.group())), text)
    evaluation = evaluate(ascii_text, COUNTDOWN_GRAMMAR)
    return Fraction(evaluation.value), [int(literal) for literal in evaluation.literals]


_EXPRESSION_CHARS = re.compile(r"[0-9\s()+\-*/×÷·−]+")  # one class, no backtracking: linear on any line
_DECORATION = " \t$`.:"  # LaTeX/markdown wrapping and trailing punctuation around a bare expression


def _find_expression(completion: str) -> tuple[str | None, str]:
    """(expression text, where it came from): the last `\\boxed{}`, else the last expression-like line."""
    boxed, _ = boxed_contents(completion)
    if boxed:
        return boxed[-1].split("=")[0].strip(), "boxed"
    for line in reversed(completion.splitlines()):
        candidate = line.split("=")[0].strip(_DECORATION)
        if len(candidate) > 4 and candidate.startswith("**") and candidate.endswith("**"):  # markdown bold
            candidate = candidate[2:-2].strip()
        has_digit, has_op = (any(c in candidate for c in chars) for chars in ("0123456789", "+-*/×÷·−"))
        if has_digit and has_op and _EXPRESSION_CHARS.fullmatch(candidate):
            return candidate, "line"
    return None, "none"


class CountdownVerifier:
    """Reward 1.0 when the final expression uses exactly the task's numbers and equals the target.

    The expression is the content of the last `\\boxed{}` (its left side if it contains `=`), else
    the last line that looks like an arithmetic expression. `parts["format"]` reports whether an
    expression was found and parsed; it is logged, not added to the reward.
    """

    time_bounded = True  # a linear scan plus an evaluator capped at 1000 characters

    def __call__(self, completion: str, task: Task) -> Verdict:
        """Score `completion` against `task.meta["numbers"]` and `task.meta["target"]`."""
        if "numbers" not in task.meta or "target" not in task.meta:
            raise ValueError(f"CountdownVerifier needs task.meta['numbers'] and ['target'], got keys {list(task.meta)}")
        numbers, target = [int(n) for n in task.meta["numbers"]], int(task.meta["target"])
        expression, source = _find_expression(completion)
        details: dict[str, object] = {"expression": expression, "source": source}
        if expression is None:
            return self._verdict(0.0, 0.0, details, "no \\boxed{} expression and no line that looks like one")
        try:
            value, used = parse_expression(expression)
        except ExpressionError as exc:
            return self._verdict(0.0, 0.0, details, f"parse error: {exc}")
        details["value"] = str(value)
        if Counter(used) != Counter(numbers):
            return self._verdict(0.0, 1.0, details, f"used {used} but must use {numbers} exactly once")
        if value != target:
            return self._verdict(0.0, 1.0, details, f"value {value} != target {target}")
        return self._verdict(1.0, 1.0, details, None)

    @staticmethod
    def _verdict(correct: float, found: float, details: dict[str, object], reason: str | None) -> Verdict:
        if reason is not None:
            details["reason"] = reason
        return Verdict(
            reward=correct, passed=correct == 1.0, parts={"correct": correct, "format": found}, details=details
        )
