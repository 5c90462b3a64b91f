"""llmenv/arith-v0: determinism, difficulty knobs, exact answers, and a full episode."""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np
import pytest

import llmenv
from llmenv.errors import TaskConfigError
from llmenv.tasks.arith import demo_reward, generate_arith


def exact_value(expression: str) -> Fraction:
    """Reference value by a different route: Fraction arithmetic with Python's own precedence."""
    return eval(re.sub(r"(\d+)", r"Fraction(\1)", expression), {"Fraction": Fraction})  # noqa: S307 - our own text


@pytest.mark.parametrize("digits, ops, terms", [(1, "+", 2), (2, "+-*", 3), (3, "+-*/", 5), (2, "/", 4)])
def test_answers_are_exact_integers(digits, ops, terms):
    rng = np.random.default_rng(0)
    for _ in range(300):
        task = generate_arith(rng, digits=digits, ops=ops, terms=terms)
        expression = task.meta["expression"]
        numbers = [int(n) for n in re.findall(r"\d+", expression)]
        assert len(numbers) == terms and all(1 <= n < 10**digits for n in numbers)
        value = exact_value(expression)
        assert value.denominator == 1 and str(value.numerator) == task.answer
        assert set(re.findall(r"[-+*/]", expression)) <= set(ops) | {"*", "+"}


def test_same_generator_state_same_task():
    a = generate_arith(np.random.default_rng(5), digits=3)
    b = generate_arith(np.random.default_rng(5), digits=3)
    c = generate_arith(np.random.default_rng(6), digits=3)
    assert a == b and a != c


@pytest.mark.parametrize(
    "kwargs, message", [({"digits": 10}, "digits"), ({"terms": 1}, "terms"), ({"ops": "^"}, "ops")]
)
def test_bad_knobs(kwargs, message):
    with pytest.raises(TaskConfigError, match=message):
        generate_arith(np.random.default_rng(0), **kwargs)


def test_episode_rewards_the_right_boxed_answer_only(tok):
    env = llmenv.make("llmenv/arith-v0", tokenizer=tok, digits=2)
    _, info = env.reset(seed=3)
    answer = info["task"].answer
    assert env.step(f"So the result is \\boxed{{{answer}}}.")[1] == 1.0
    env.reset(seed=3)
    _, reward, _, _, info = env.step(f"So the result is \\boxed{{{int(answer) + 1}}}.")
    assert reward == 0.0 and info["verdict"].passed is False


@pytest.mark.parametrize(
    "completion, reward, passed",
    [
        ("4 + 3 = \\boxed{7}", 1.75, True),  # right and boxed: every part
        ("4 + 3 = \\boxed{8}", 0.5, False),  # boxed but wrong: the format part
        ("4 + 3 = 7.", 0.25, False),  # right but unboxed: the number part, less than a boxed wrong answer
        ("\\boxed{4} + \\boxed{3} = \\boxed{7}", 1.25, True),  # boxing every number: no format credit
        ("I cannot say.", 0.0, False),
    ],
)
def test_demo_reward_never_pays_an_unboxed_answer_more_than_a_boxed_one(completion, reward, passed):
    task = llmenv.Task("Compute 4 + 3. Put the final answer in \\boxed{}.", answer="7")
    verdict = demo_reward()(completion, task)
    assert verdict.reward == pytest.approx(reward)
    assert verdict.passed is passed
