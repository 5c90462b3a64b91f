"""arith-tool-v0 and python-tool-v0: reference answers by another route, and full tool episodes."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import llmenv
from llmenv.tasks.tool_use import generate_arith_word_problem, generate_python_problem


def call(name, **arguments):
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def brute_force(prompt: str) -> int:
    """Answer a python-tool question the slow, obvious way."""
    numbers = [int(n) for n in re.findall(r"\d+", prompt)]
    if "sum of all prime numbers below" in prompt:
        n = numbers[0]
        return sum(k for k in range(2, n) if all(k % d for d in range(2, int(k**0.5) + 1)))
    if "divisible by" in prompt:
        n, a, b = numbers[1], numbers[2], numbers[3]
        return sum(1 for k in range(1, n + 1) if k % a == 0 or k % b == 0)
    if "Fibonacci" in prompt:
        fib = [0, 1]
        while len(fib) <= numbers[0]:
            fib.append(fib[-1] + fib[-2])
        return fib[numbers[0]]
    if "decimal digits" in prompt:
        return sum(map(int, str(numbers[0] ** numbers[1])))
    if "trailing zeros" in prompt:
        import math

        value, zeros = math.factorial(numbers[0]), 0
        while value % 10 == 0:
            value, zeros = value // 10, zeros + 1
        return zeros
    raise AssertionError(f"unknown problem: {prompt}")


def test_python_problems_have_correct_answers():
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(25):
        task = generate_python_problem(rng)
        kinds.add(task.meta["kind"])
        assert int(task.answer) == brute_force(task.prompt), task.prompt
    assert kinds == {0, 1, 2, 3, 4}


def test_word_problem_answers_follow_their_text():
    rng = np.random.default_rng(1)
    for _ in range(50):
        task = generate_arith_word_problem(rng, digits=2)
        assert "\\boxed{}" in task.prompt and int(task.answer) >= 0
    assert generate_arith_word_problem(np.random.default_rng(3)) == generate_arith_word_problem(
        np.random.default_rng(3)
    )


def test_arith_tool_episode_with_a_calculator_call(tok):
    env = llmenv.make("llmenv/arith-tool-v0", tokenizer=tok)
    _, info = env.reset(seed=2)
    assert '"name": "calculator"' in info["text"]
    task = info["task"]
    _, reward, terminated, _, info = env.step(call("calculator", expression="12345 * 6789"))
    assert not terminated and info["env_messages"][0]["content"] == str(12345 * 6789)
    _, reward, terminated, _, info = env.step(f"The answer is \\boxed{{{task.answer}}}.")
    assert terminated and reward == 1.0 and info["stop_reason"] == "answered"
    check_env(env, skip_render_check=True)


@pytest.mark.slow
def test_python_tool_episode_runs_code_in_the_sandbox(tok):
    env = llmenv.make("llmenv/python-tool-v0", tokenizer=tok)
    _, info = env.reset(seed=0)
    code = "print(sum(range(10)))"
    _, reward, terminated, _, info = env.step(call("python", code=code))
    assert not terminated and "45" in info["env_messages"][0]["content"], info["env_messages"]
    _, reward, terminated, _, _ = env.step(f"\\boxed{{{info['task'].answer}}}")
    assert terminated and reward == 1.0
