"""`llmenv/arith-v0`: seeded arithmetic problems with a difficulty knob (digits, operators, terms).

Each task is an integer expression such as `47 * 3 - 12`; the answer is its exact value and
the policy is asked to put it in `\\boxed{}`. Generation is pure and deterministic given the
generator, fast enough to draw a fresh task on every reset. Verification is the math verifier's
job (its numeric fast path), not this module's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmenv.errors import TaskConfigError
from llmenv.types import Task
from llmenv.verifiers.base import Rubric
from llmenv.verifiers.format import INTEGER, BoxedFormat
from llmenv.verifiers.math import MathVerifier

DEMO_PARAMS: dict[str, Any] = {
    "digits": 1,
    "ops": "+-",
    "terms": 2,
    "system_prompt": "Reply with only the final result, written as \\boxed{N}. For example: 3 + 4 = \\boxed{7}.",
}
"""`llmenv/arith-demo-v0`'s defaults: one-digit sums and differences, and a system prompt asking for \\boxed{}."""


def demo_reward(*, integer_box: bool = False) -> Rubric:
    """The demo's shaped reward: correct boxed answer 1 + exactly one \\boxed{} 0.5 + correct final number 0.25.

    The box is worth more than a right unboxed number so that a sampled boxed answer that comes out
    wrong never scores below a right one left unboxed (with the weights the other way round, a policy
    learns to stop boxing); one box only, so boxing every number earns nothing. `integer_box=True`
    pays the format part only for a box holding a whole number: the system prompt's placeholder
    copied as it is (`\\boxed{N}`) is otherwise a format a policy can learn to farm (PPO did, on the
    retry task, whose feedback repeats the placeholder). Solved (`passed`) means the correct part
    passed, whatever the shaping parts say.
    """
    return Rubric(
        {
            "correct": (MathVerifier(extraction="anchored"), 1.0),
            "format": (BoxedFormat(exactly_one=True, content=INTEGER if integer_box else None), 0.5),
            "number": (MathVerifier(extraction="anchored", fallback_last_number=True), 0.25),
        },
        pass_part="correct",
    )


_OPS = "+-*/"


def _apply_precedence(numbers: list[int], ops: list[str]) -> int:
    """Value of `n0 op0 n1 op1 ...` with * and / (exact, chosen to divide) before + and -."""
    terms, signs = [numbers[0]], []
    for op, n in zip(ops, numbers[1:]):
        if op == "*":
            terms[-1] *= n
        elif op == "/":
            terms[-1] //= n  # the generator only writes exact divisions
        else:
            terms.append(n)
            signs.append(op)
    value = terms[0]
    for sign, term in zip(signs, terms[1:]):
        value = value + term if sign == "+" else value - term
    return value


def generate_arith(
    rng: np.random.Generator, *, digits: int = 2, ops: str = "+-*", terms: int = 2, instruction: str | None = None
) -> Task:
    """Draw one arithmetic task: `terms` numbers of up to `digits` digits joined by operators from `ops`."""
    if not 1 <= digits <= 9:
        raise TaskConfigError(f"digits must be in 1..9, got {digits}")
    if not 2 <= terms <= 8:
        raise TaskConfigError(f"terms must be in 2..8, got {terms}")
    if not ops or set(ops) - set(_OPS):
        raise TaskConfigError(f"ops must be a non-empty string of characters from {_OPS!r}, got {ops!r}")
    high = 10**digits
    numbers = [int(rng.integers(1, high))]
    chosen: list[str] = []
    term = numbers[0]  # value of the current run of * and /, so divisions stay exact
    for _ in range(terms - 1):
        op = ops[int(rng.integers(len(ops)))]
        divisors = [d for d in range(2, min(term, high - 1) + 1) if term % d == 0] if op == "/" else []
        if op == "/" and not divisors:
            op = next((o for o in "*+-" if o in ops), None) or "+"
        n = divisors[int(rng.integers(len(divisors)))] if op == "/" else int(rng.integers(1, high))
        term = term * n if op == "*" else term // n if op == "/" else n
        chosen.append(op)
        numbers.append(n)
    expression = " ".join([str(numbers[0])] + [f"{op} {n}" for op, n in zip(chosen, numbers[1:])])
    value = _apply_precedence(numbers, chosen)
    prompt = f"Compute {expression}. " + (instruction or "Put the final answer in \\boxed{}.")
    return Task(prompt=prompt, answer=str(value), meta={"expression": expression, "digits": digits, "terms": terms})
