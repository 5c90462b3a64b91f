"""Built-in tool-use tasks: `llmenv/arith-tool-v0` (calculator) and `llmenv/python-tool-v0` (sandboxed python).

arith-tool: arithmetic word problems with 2-4 digit numbers, where a `calculator(expression)`
call beats mental arithmetic. python-tool: counting and number-theory questions (prime sums,
Fibonacci numbers, digit sums of large powers) that are easy with a few lines of code and hard
without. Answers are computed here by reference implementations; the tool loop is ToolEnv's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from llmenv.errors import TaskConfigError
from llmenv.types import Task

TOOL_INSTRUCTION = "Use the {tool} tool if it helps, then give the final answer in \\boxed{{}}."


def _word_problems(a: int, b: int, c: int, d: int) -> list[tuple[str, int]]:
    return [
        (
            f"A warehouse holds {a} boxes with {b} items in each box. {c} items are shipped out. "
            "How many items are left?",
            a * b - c,
        ),
        (f"A train runs at {a} km per hour for {b} hours and then {c} km more. How far does it travel?", a * b + c),
        (
            f"A shop sells {a} shirts at {b} dollars each and {c} hats at {d} dollars each. "
            "How many dollars does it take in?",
            a * b + c * d,
        ),
        (
            f"{a * b} pencils are shared equally among {a} students, and then each student buys {c} more. "
            "How many pencils does each student have?",
            b + c,
        ),
    ]


def generate_arith_word_problem(rng: np.random.Generator, *, digits: int = 3) -> Task:
    """A word problem whose arithmetic a calculator makes easy; `digits` sets the size of the numbers."""
    if not 1 <= digits <= 6:
        raise TaskConfigError(f"digits must be in 1..6, got {digits}")
    low, high = 10 ** (digits - 1) + 1, 10**digits
    a, b, c, d = (int(x) for x in rng.integers(low, high, size=4))
    problems = _word_problems(a, b, min(c, a * b - 1), d)
    text, answer = problems[int(rng.integers(len(problems)))]
    return Task(
        prompt=f"{text} {TOOL_INSTRUCTION.format(tool='calculator')}", answer=str(answer), meta={"digits": digits}
    )


def _primes_below(n: int) -> list[int]:
    sieve = np.ones(n, dtype=bool)
    sieve[:2] = False
    for p in range(2, int(n**0.5) + 1):
        if sieve[p]:
            sieve[p * p :: p] = False
    return np.flatnonzero(sieve).tolist()


def _fibonacci(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def _trailing_zeros_of_factorial(n: int) -> int:
    count, power = 0, 5
    while power <= n:
        count += n // power
        power *= 5
    return count


def _prime_sum(rng: np.random.Generator) -> tuple[str, int]:
    n = int(rng.integers(1_000, 20_000))
    return f"What is the sum of all prime numbers below {n}?", sum(_primes_below(n))


def _divisible_count(rng: np.random.Generator) -> tuple[str, int]:
    n, a, b = int(rng.integers(10_000, 1_000_000)), int(rng.integers(3, 20)), int(rng.integers(21, 50))
    lcm = a * b // int(np.gcd(a, b))
    return f"How many integers from 1 to {n} are divisible by {a} or by {b}?", n // a + n // b - n // lcm


def _fibonacci_term(rng: np.random.Generator) -> tuple[str, int]:
    n = int(rng.integers(30, 90))
    return f"What is the {n}th Fibonacci number, with F(1) = F(2) = 1?", _fibonacci(n)


def _digit_sum_of_power(rng: np.random.Generator) -> tuple[str, int]:
    a, b = int(rng.integers(2, 10)), int(rng.integers(50, 200))
    return f"What is the sum of the decimal digits of {a}^{b}?", sum(int(ch) for ch in str(a**b))


def _factorial_zeros(rng: np.random.Generator) -> tuple[str, int]:
    n = int(rng.integers(100, 5_000))
    return f"How many trailing zeros does {n}! (the factorial of {n}) have?", _trailing_zeros_of_factorial(n)


_PYTHON_PROBLEMS: list[Callable[[np.random.Generator], tuple[str, int]]] = [
    _prime_sum,
    _divisible_count,
    _fibonacci_term,
    _digit_sum_of_power,
    _factorial_zeros,
]


def generate_python_problem(rng: np.random.Generator) -> Task:
    """A counting or number-theory question best answered by running a few lines of Python."""
    kind = int(rng.integers(len(_PYTHON_PROBLEMS)))
    text, answer = _PYTHON_PROBLEMS[kind](rng)
    return Task(prompt=f"{text} {TOOL_INSTRUCTION.format(tool='python')}", answer=str(int(answer)), meta={"kind": kind})
