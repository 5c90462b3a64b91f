"""arith-chain-v0: chains are solvable, every step is checked exactly, step labels follow Math-Shepherd's rule."""

from __future__ import annotations

import numpy as np
import pytest

import llmenv
from llmenv.errors import TaskConfigError
from llmenv.registry import spec
from llmenv.tasks.chain import (
    ChainVerifier,
    _with_error,
    chain_step_rows,
    check_steps,
    generate_chain,
    labels_of,
    solution_steps,
)

VERIFY = ChainVerifier()


def test_the_solution_passes_and_every_step_scores_one():
    rng = np.random.default_rng(0)
    for _ in range(50):
        task = generate_chain(rng, steps=4)
        text = "\n".join(solution_steps(task))
        verdict = VERIFY(text, task)
        assert verdict.passed and verdict.reward == 1.0 and verdict.parts["steps_right"] == 1.0
        assert [s.score for s in verdict.steps] == [1.0] * 5
        assert [text[: s.end].rsplit("\n", 1)[-1] for s in verdict.steps] == solution_steps(task)


def test_injected_errors_are_labelled_bad_from_the_first_wrong_step_on_by_the_checker_too():
    rng = np.random.default_rng(1)
    for _ in range(200):
        task = generate_chain(rng)
        steps, labels = _with_error(task, rng)
        assert labels_of(steps, task) == labels
        first_bad = labels.index(False)
        assert labels == [True] * first_bad + [False] * (len(labels) - first_bad)
        assert not VERIFY("\n".join(steps), task).passed


def test_a_right_answer_with_a_wrong_step_still_passes_but_its_steps_say_where_it_went_wrong():
    task = llmenv.Task("q", answer="9", meta={"start": 2, "chain": [["+", 3], ["+", 4]]})
    text = "Let me think.\n2 + 3 = 6\n5 + 4 = 9\nSo \\boxed{9}"
    verdict = VERIFY(text, task)
    assert verdict.passed and [s.score for s in verdict.steps] == [0.0, 0.0, 0.0]
    assert verdict.details["step_ok"] == [False, True] and verdict.parts["steps_right"] == 0.0
    found, correct = check_steps(text, task)
    assert correct and [ok for _, ok in found] == [False, True]


def test_extra_or_missing_steps_and_chatter():
    task = llmenv.Task("q", answer="5", meta={"start": 2, "chain": [["+", 3]]})
    assert [s.score for s in VERIFY("2 + 3 = 5\n5 + 0 = 5\n\\boxed{5}", task).steps] == [1.0, 0.0, 0.0]
    assert [s.score for s in VERIFY("\\boxed{5}", task).steps] == [0.0]  # no work shown: the box alone is not a step
    assert VERIFY("no numbers here", task).steps == () and VERIFY("", task).reward == 0.0
    assert [s.score for s in VERIFY("2 × 3 = 5", task).steps] == [0.0]  # the wrong operator


def test_rows_are_trl_prm_format_half_correct():
    rows = chain_step_rows(np.random.default_rng(2), 10, steps=2)
    assert all(set(r) == {"prompt", "completions", "labels"} for r in rows)
    assert all(len(r["completions"]) == len(r["labels"]) == 3 for r in rows)
    assert sum(all(r["labels"]) for r in rows) == 5


def test_the_task_is_registered_with_step_data_and_bad_knobs_are_errors(tok):
    assert spec("arith-chain-v0").step_data is chain_step_rows
    env = llmenv.make("llmenv/arith-chain-v0", tokenizer=tok)
    _, info = env.reset(seed=0)
    task = info["task"]
    first = f"{task.meta['start']} {task.meta['chain'][0][0]} {task.meta['chain'][0][1]} = ..."
    assert "\\boxed{}" in task.prompt and first in task.prompt
    with pytest.raises(TaskConfigError, match="steps"):
        generate_chain(np.random.default_rng(0), steps=0)
    with pytest.raises(TaskConfigError, match="ops"):
        generate_chain(np.random.default_rng(0), ops="/")
