"""Evaluation: held-out seeds, pass@k from the task's pass rule, errors counted, one loop for every caller."""

from __future__ import annotations

import pytest

import llmenv
from llmenv.agents.evaluate import EVAL_SEED_OFFSET, evaluate, pass_at_k, play, score
from llmenv.agents.policy import HFPolicy, SamplingParams
from llmenv.models import tiny_llama
from llmenv.types import Task, Verdict


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(tok, seed=0)


def half_credit(completion: str, task: Task) -> float:
    return 0.5


def crashing_on_even_seeds(completion: str, task: Task) -> Verdict:
    if int(task.meta["i"]) % 2 == 0:
        raise RuntimeError("grader down")
    return Verdict(1.0, passed=True)


TASKS = [Task(f"q{i}", answer=str(i), meta={"i": i}) for i in range(8)]
llmenv.register_task("half-credit-v0", source=TASKS, verifier=half_credit, replace=True)
llmenv.register_task("half-credit-pass-v0", source=TASKS, verifier=half_credit, pass_threshold=0.5, replace=True)
llmenv.register_task("crashy-v0", source=TASKS, verifier=crashing_on_even_seeds, replace=True)


def test_float_verdicts_pass_by_the_tasks_threshold(model, tok):
    strict = evaluate("llmenv/half-credit-v0", model, tok, n=4, max_new_tokens=2)
    lenient = evaluate("llmenv/half-credit-pass-v0", model, tok, n=4, max_new_tokens=2)
    assert strict.mean_reward == lenient.mean_reward == 0.5
    assert strict.pass_at_1 == 0.0 and lenient.pass_at_1 == 1.0


def test_verifier_errors_are_counted_and_never_solved(model, tok):
    policy = HFPolicy(model, tok)
    episodes = play("llmenv/crashy-v0", policy, tok, n=6, sampling=SamplingParams(max_new_tokens=2, temperature=0))
    result = score("llmenv/crashy-v0", episodes, 1)
    crashed = [e.error is not None for e in episodes]
    assert 0 < sum(crashed) < len(crashed)
    assert result.error_fraction == pytest.approx(sum(crashed) / len(crashed))
    assert result.pass_at_1 == pytest.approx(1 - sum(crashed) / len(crashed))


def test_play_groups_samples_per_task_and_uses_held_out_seeds(model, tok):
    policy = HFPolicy(model, tok)
    sampling = SamplingParams(max_new_tokens=3, temperature=1.0, seed=1)
    episodes = play(
        "llmenv/arith-v0", policy, tok, n=3, samples=2, sampling=sampling, batch_size=4, seed=EVAL_SEED_OFFSET
    )
    assert len(episodes) == 6
    for first, second in zip(episodes[::2], episodes[1::2]):
        assert first.task == second.task  # a task's samples are one group
    assert [e.seed for e in episodes] == [EVAL_SEED_OFFSET + i for i in range(6)]
    again = play("llmenv/arith-v0", policy, tok, n=3, samples=2, sampling=sampling, batch_size=4, seed=EVAL_SEED_OFFSET)
    assert [e.completions for e in again] == [e.completions for e in episodes]  # seeded: reproducible
    result = score("llmenv/arith-v0", episodes, 2, ks=(1, 2))
    assert result.tasks == 3 and set(result.pass_at_k) == {1, 2}


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError, match="pass@3 needs at least 3 samples"):
        pass_at_k(2, 1, 3)
