"""Task, Verdict and Trajectory values: validation, immutability, wrapping of plain rewards."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from llmenv.types import Completion, Task, Trajectory, Turn, Verdict


def test_task_prompt_string_becomes_one_user_message_and_system_is_prepended():
    task = Task("What is 2+2?", answer=4)
    assert task.answer == "4"
    assert task.messages() == [{"role": "user", "content": "What is 2+2?"}]
    assert task.messages("Be brief.")[0] == {"role": "system", "content": "Be brief."}


def test_task_keeps_its_own_system_message():
    task = Task([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert task.messages("other")[0]["content"] == "S"


@pytest.mark.parametrize("prompt", [42, [{"role": "user"}], [{"role": 1, "content": "x"}], None])
def test_task_rejects_malformed_prompts(prompt):
    with pytest.raises(TypeError, match="Task.prompt must be"):
        Task(prompt)


def test_values_are_frozen():
    task = Task("q", meta={"a": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.answer = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        task.meta["a"] = 2  # type: ignore[index]


@pytest.mark.parametrize(
    "value, reward, passed", [(0.25, 0.25, None), (True, 1.0, True), (False, 0.0, False), (np.float32(0.5), 0.5, None)]
)
def test_verdict_of_wraps_plain_values(value, reward, passed):
    verdict = Verdict.of(value)
    assert verdict.reward == reward and verdict.passed is passed and verdict.parts == {"reward": reward}


def test_verdict_of_rejects_other_types():
    with pytest.raises(TypeError, match="must return a Verdict, a float or a bool"):
        Verdict.of("1.0")  # type: ignore[arg-type]


def test_trajectory_action_tokens_and_total_reward():
    traj = Trajectory(
        tokens=np.arange(6),
        loss_mask=np.array([0, 0, 1, 1, 0, 1]),
        turns=(Turn("prompt", 0, 2), Turn("policy", 2, 4, 1.0), Turn("env", 4, 5), Turn("policy", 5, 6, 0.5)),
        rewards=(1.0, 0.5),
    )
    assert [t.tolist() for t in traj.action_tokens()] == [[2, 3], [5]]
    assert traj.total_reward == 1.5


def test_values_pickle_and_deep_copy_and_stay_immutable():
    import copy
    import pickle

    task = Task([{"role": "user", "content": "q"}], answer="1", tests=["assert True"], meta={"entry_point": "f"})
    verdict = Verdict(1.0, passed=True, parts={"correct": 1.0}, details={"extracted": "1", "nested": {"a": [1]}})
    trajectory = Trajectory(np.arange(4), np.array([0, 0, 1, 1], dtype=np.int8), (Turn("prompt", 0, 2),), (1.0,))
    for value in (task, verdict):
        for clone in (pickle.loads(pickle.dumps(value)), copy.deepcopy(value)):
            assert clone == value and clone is not value
    again = pickle.loads(pickle.dumps(trajectory))
    assert again.tokens.tolist() == trajectory.tokens.tolist() and again.turns == trajectory.turns
    clone = copy.deepcopy(verdict)
    with pytest.raises(TypeError):
        clone.details["extracted"] = "2"  # type: ignore[index]
    with pytest.raises(AttributeError):
        clone.details._data = {}  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        clone.reward = 0.0  # type: ignore[misc]
    assert copy.deepcopy(task).meta["entry_point"] == "f" and dict(pickle.loads(pickle.dumps(task)).meta) == {
        "entry_point": "f"
    }


def test_pass_rule_of_verdicts_without_passed():
    assert Verdict(1.0).passes() and not Verdict(0.99).passes()
    assert Verdict(0.5).passes(threshold=0.5) and not Verdict(1.0, passed=False).passes()
    assert not Verdict.failure("crashed").passes(threshold=0.0)  # an error never passes


def test_a_completion_is_its_text_plus_the_exact_episode_tokens():
    messages = [{"role": "user", "content": "2+2?"}]
    tokens = np.array([5, 6, 7, 8, 9])
    done = Completion("4", tokens=tokens, action_start=3, messages=messages, codec_key="k")
    tokens[0] = 99  # the completion holds its own copy
    assert done == "4" and isinstance(done, str) and done.strip() == "4"
    assert done.tokens.tolist() == [5, 6, 7, 8, 9] and done.action_tokens.tolist() == [8, 9]
    assert done.tokens.dtype == np.int64 and not done.tokens.flags.writeable
    with pytest.raises(ValueError):
        done.tokens[0] = 1
    again = pickle.loads(pickle.dumps(done))  # verifiers may run in another process
    assert isinstance(again, Completion) and again == "4" and again.tokens.tolist() == done.tokens.tolist()
    assert (again.action_start, again.messages, again.codec_key) == (3, tuple(messages), "k")
