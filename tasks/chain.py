"""`llmenv/arith-chain-v0`: multi-step arithmetic chains whose every step is checked exactly.

A task reads "Start with 7. Add 5, then multiply by 3, then subtract 4." and asks for one equation
per line, naming the first (`7 + 5 = ...`); its solution is one equation per step (`7 + 5 = 12`,
`12 * 3 = 36`, `36 - 4 = 32`) and the result in `\\boxed{32}`.
`ChainVerifier` checks the final answer (the outcome reward) and every equation line (step k is
right when it applies the task's k-th operation to the previous step's true result and computes
it correctly); under Math-Shepherd's rule a step scores 1 when it and every step before it are
right, else 0, and these scores go to `Verdict.steps`, so the task gives exact process rewards
without a model. `chain_step_rows` writes step-labelled data for `llmenv train prm` the same
way: correct chains and chains with one injected error (a wrong result or a wrong operand, the
later steps computed on from the wrong value), labelled by that rule. Nothing here runs a model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from llmenv.errors import TaskConfigError
from llmenv.types import StepScore, Task, Verdict
from llmenv.verifiers.format import boxed_contents

__all__ = ["ChainVerifier", "chain_step_rows", "check_steps", "generate_chain", "labels_of", "solution_steps"]

_WORDS = {"+": "add {n}", "-": "subtract {n}", "*": "multiply by {n}"}
_EQUATION = re.compile(r"(-?\d+)\s*([+\-*×x])\s*(-?\d+)\s*=\s*(-?\d+)")
FORMAT = (
    "Solve it step by step: write each step as an equation on its own line (the first is `{first} = ...`), "
    "then put the final result in \\boxed{{}}."
)
"""The instruction after the problem. It names the first step's own operands: with a fixed example
equation instead, SmolLM2-135M copies the example (`7 + 5 = 12`) for every problem."""


def _apply(op: str, left: int, right: int) -> int:
    return left + right if op == "+" else left - right if op == "-" else left * right


def generate_chain(
    rng: np.random.Generator, *, steps: int = 3, max_operand: int = 9, ops: str = "+-*", start_max: int = 9
) -> Task:
    """Draw one chain: a start in 1..start_max and `steps` operations from `ops` with operands in 1..max_operand."""
    if not 1 <= steps <= 8:
        raise TaskConfigError(f"steps must be in 1..8, got {steps}")
    if not ops or set(ops) - set(_WORDS):
        raise TaskConfigError(f"ops must be a non-empty string of characters from '+-*', got {ops!r}")
    if max_operand < 2 or start_max < 1:
        raise TaskConfigError(f"max_operand must be >= 2 and start_max >= 1, got {max_operand} and {start_max}")
    start = int(rng.integers(1, start_max + 1))
    chain = []
    for _ in range(steps):
        op = ops[int(rng.integers(len(ops)))]
        operand = int(rng.integers(2, min(max_operand, 5) + 1)) if op == "*" else int(rng.integers(1, max_operand + 1))
        chain.append((op, operand))
    words = ", then ".join(_WORDS[op].format(n=n) for op, n in chain)
    value = start
    for op, n in chain:
        value = _apply(op, value, n)
    first = f"{start} {chain[0][0]} {chain[0][1]}"
    prompt = f"Start with {start}. {words[0].upper()}{words[1:]}. {FORMAT.format(first=first)}"
    return Task(prompt, answer=str(value), meta={"start": start, "chain": [list(step) for step in chain]})


def solution_steps(task: Task) -> list[str]:
    """The correct solution's steps: one equation per operation, then the boxed result."""
    value, steps = int(task.meta["start"]), []
    for op, n in task.meta["chain"]:
        result = _apply(op, value, n)
        steps.append(f"{value} {op} {n} = {result}")
        value = result
    return [*steps, f"\\boxed{{{value}}}"]


def check_steps(text: str, task: Task) -> tuple[list[tuple[int, bool]], bool]:
    """Each equation line's (end offset, right?) in order, and whether the last box holds the answer.

    Step k is right when its left operand is the true result so far, its operator and operand are
    the task's k-th operation and its result is exact; equations beyond the chain's length are wrong.
    """
    value, chain = int(task.meta["start"]), task.meta["chain"]
    found: list[tuple[int, bool]] = []
    offset = 0
    for line in text.split("\n"):
        match = _EQUATION.search(line)
        if match is not None:
            left, op, right, result = match.groups()
            op = "*" if op in "×x" else op
            k = len(found)
            ok = k < len(chain) and [op, int(right)] == list(chain[k]) and int(left) == value
            ok = ok and int(result) == _apply(op, int(left), int(right))
            if k < len(chain):
                value = _apply(chain[k][0], value, chain[k][1])
            found.append((offset + len(line.rstrip()), ok))
        offset += len(line) + 1
    boxes, _ = boxed_contents(text)
    return found, bool(boxes) and boxes[-1].strip() == str(task.answer)


class ChainVerifier:
    """Outcome: 1 for the right boxed result; process: each equation line scored by Math-Shepherd's rule.

    `Verdict.steps` has one score per equation line (1 while every step so far is right, 0 from the
    first wrong one on), plus the boxed line as a last step scored 1 when all steps and the result
    are right. `parts`: `correct` (the reward) and `steps_right` (share of the chain's steps done
    right before the first error); `passed` is the outcome.
    """

    time_bounded = True  # linear in the completion's length, no regex backtracking

    def __call__(self, completion: str, task: Task) -> Verdict:
        """Check the answer and every step of one completion."""
        text = str(completion)
        found, correct = check_steps(text, task)
        scores, good = [], True
        for end, ok in found:
            good = good and ok
            scores.append((end, float(good)))
        boxed_end = text.rfind("\\boxed{")
        if boxed_end >= 0:
            close = text.find("}", boxed_end)
            end = close + 1 if close >= 0 else len(text.rstrip())
            if not scores or end > scores[-1][0]:
                scores.append((end, float(good and correct and len(found) == len(task.meta["chain"]))))
        right = next((k for k, (_, ok) in enumerate(found) if not ok), len(found))
        steps_right = min(right, len(task.meta["chain"])) / len(task.meta["chain"])
        return Verdict(
            float(correct),
            passed=correct,
            parts={"correct": float(correct), "steps_right": steps_right},
            details={"step_ok": [ok for _, ok in found]},
            steps=tuple(StepScore(end, score) for end, score in scores if end > 0),
        )


def _with_error(task: Task, rng: np.random.Generator) -> tuple[list[str], list[bool]]:
    """A solution with one injected error at a random step (wrong result or wrong operand), and its labels."""
    chain = task.meta["chain"]
    wrong_at = int(rng.integers(len(chain)))
    kind = "result" if rng.random() < 0.5 else "operand"
    value, steps, labels = int(task.meta["start"]), [], []
    for k, (op, n) in enumerate(chain):
        operand = n
        if k == wrong_at and kind == "operand":
            operand = n + int(rng.choice([-2, -1, 1, 2]))
            operand = operand if operand != n and operand > 0 else n + 1
        result = _apply(op, value, operand)
        if k == wrong_at and kind == "result":
            result += int(rng.choice([-3, -2, -1, 1, 2, 3]))
        steps.append(f"{value} {op} {operand} = {result}")
        labels.append(k < wrong_at)
        value = result
    return [*steps, f"\\boxed{{{value}}}"], [*labels, False]


def chain_step_rows(rng: np.random.Generator, n: int, **params: Any) -> list[dict[str, Any]]:
    """`n` step-labelled rows `{prompt, completions, labels}` (TRL's PRM format): half correct, half with an error."""
    rows = []
    for i in range(n):
        task = generate_chain(rng, **params)
        if i % 2 == 0:
            steps = solution_steps(task)
            labels = [True] * len(steps)
        else:
            steps, labels = _with_error(task, rng)
        rows.append({"prompt": task.prompt, "completions": steps, "labels": labels})
    return rows


def labels_of(steps: Sequence[str], task: Task) -> list[bool]:
    """Math-Shepherd labels of a step list by the exact checker (what `chain_step_rows` writes)."""
    verdict = ChainVerifier()("\n".join(steps), task)
    return [step.score == 1.0 for step in verdict.steps]
