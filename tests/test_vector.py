"""VectorLLMEnv: groups share tasks, batched verification, Gymnasium autoreset, and SyncVectorEnv."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import llmenv
from llmenv.errors import TaskConfigError
from llmenv.testing import fake_task
from llmenv.types import Task, Verdict
from llmenv.vector import VectorLLMEnv


def answers(infos):
    return [t.answer for t in infos["task"]]


def test_groups_share_one_task_and_groups_differ(tok):
    env = VectorLLMEnv("llmenv/arith-v0", 8, tok, group_size=4)
    obs, infos = env.reset(seed=0)
    assert len(obs) == 8 and all(o.dtype == np.int64 for o in obs)
    first, second = answers(infos)[:4], answers(infos)[4:]
    assert len(set(first)) == 1 and len(set(second)) == 1 and infos["task"][0] != infos["task"][4]
    assert infos["group"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1] and env.groups.tolist() == infos["group"].tolist()
    assert all(obs[i].tolist() == obs[0].tolist() for i in range(4))


def test_step_scores_each_env_and_autoresets_the_next_step(tok):
    env = VectorLLMEnv("llmenv/arith-v0", 4, tok, group_size=2)
    _, infos = env.reset(seed=3)
    actions = [f"\\boxed{{{a}}}" for a in answers(infos)]
    actions[1] = "\\boxed{nope}"
    _, rewards, terminated, truncated, infos = env.step(actions)
    assert rewards.tolist() == [1.0, 0.0, 1.0, 1.0] and terminated.all() and not truncated.any()
    assert all(isinstance(v, Verdict) for v in infos["verdict"]) and infos["reward_parts"]["correct"].tolist() == [
        1.0,
        0.0,
        1.0,
        1.0,
    ]
    obs, rewards, terminated, _, infos = env.step(actions)  # ignored: every env resets
    assert rewards.tolist() == [0.0] * 4 and not terminated.any() and infos["autoreset"].all()
    assert answers(infos)[0] == answers(infos)[1] and len(obs[0]) > 0


def test_a_group_waits_for_its_slowest_member(tok):
    env = VectorLLMEnv("llmenv/guess-number-v0", 2, tok, group_size=2)
    _, infos = env.reset(seed=5)
    secret = int(answers(infos)[0])
    wrong = 1 if secret != 1 else 2
    _, rewards, terminated, _, infos = env.step([f"\\boxed{{{secret}}}", f"\\boxed{{{wrong}}}"])
    assert terminated.tolist() == [True, False] and rewards[0] == 1.0
    _, rewards, terminated, _, infos = env.step([f"\\boxed{{{secret}}}", f"\\boxed{{{secret}}}"])
    assert infos["waiting"].tolist() == [True, False] and infos["_waiting"].tolist() == [True, False]
    assert rewards.tolist() == [0.0, 1.0] and terminated.tolist() == [False, True]
    _, _, _, _, infos = env.step(["x", "x"])
    assert infos["autoreset"].all() and answers(infos)[0] == answers(infos)[1]


def test_batched_verification_is_used_and_its_crash_is_recorded(tok):
    calls = []

    class Batched:
        time_bounded = True

        def __call__(self, completion, task):
            return 0.0

        def verify_batch(self, completions, tasks):
            calls.append(len(completions))
            if "crash" in completions:
                raise RuntimeError("batch backend down")
            return [Verdict(float(c == t.answer), passed=c == t.answer) for c, t in zip(completions, tasks)]

    env = VectorLLMEnv(fake_task(verifier=Batched(), count=1), 3, tok)
    env.reset(seed=0)
    _, rewards, *_ = env.step(["0", "b", "0"])
    assert calls == [3] and rewards.tolist() == [1.0, 0.0, 1.0]
    env.reset(seed=0)
    _, rewards, _, _, infos = env.step(["0", "crash", "0"])
    assert rewards.tolist() == [0.0] * 3 and "batch backend down" in infos["verdict"][0].error


def test_math_verify_batch_matches_one_by_one(tok):
    env = VectorLLMEnv("llmenv/arith-v0", 6, tok)
    _, infos = env.reset(seed=1)
    actions = [f"The answer is \\boxed{{{int(a) + (i % 2)}}}" for i, a in enumerate(answers(infos))]
    _, rewards, _, _, infos = env.step(actions)
    single = [llmenv.make("llmenv/arith-v0", tokenizer=tok) for _ in range(6)]
    expected = []
    for i, (e, action) in enumerate(zip(single, actions)):
        e.reset(seed=1 + i)
        expected.append(e.step(action)[1])
    assert rewards.tolist() == expected == [1.0, 0.0] * 3


def test_seeds_make_resets_reproducible_and_options_choose_tasks(tok):
    a = VectorLLMEnv("llmenv/arith-v0", 4, tok, group_size=2)
    b = VectorLLMEnv("llmenv/arith-v0", 4, tok, group_size=2)
    assert answers(a.reset(seed=9)[1]) == answers(b.reset(seed=9)[1])
    tasks = [Task("one", answer="1"), Task("two", answer="2")]
    _, infos = a.reset(options={"tasks": tasks})
    assert answers(infos) == ["1", "1", "2", "2"]


@pytest.mark.parametrize(
    "kwargs, message", [({"num_envs": 5, "group_size": 2}, "multiple of group_size"), ({"num_envs": 0}, "positive")]
)
def test_bad_shapes(tok, kwargs, message):
    with pytest.raises(TaskConfigError, match=message):
        VectorLLMEnv("llmenv/arith-v0", tokenizer=tok, **kwargs)


def test_wrong_number_of_actions(tok):
    env = VectorLLMEnv("llmenv/arith-v0", 2, tok)
    env.reset(seed=0)
    with pytest.raises(TaskConfigError, match="expected 2 actions"):
        env.step(["1"])


def test_gymnasium_sync_vector_env_works_over_our_envs(tok):
    env = gym.vector.SyncVectorEnv([lambda: llmenv.make("llmenv/arith-v0", tokenizer=tok) for _ in range(3)])
    obs, infos = env.reset(seed=0)
    assert len(obs) == 3 and all(isinstance(o, np.ndarray) for o in obs)
    actions = [np.asarray(tok.encode(f"\\boxed{{{t.answer}}}", add_special_tokens=False)) for t in infos["task"]]
    _, rewards, terminated, _, _ = env.step(actions)
    assert rewards.tolist() == [1.0, 1.0, 1.0] and terminated.all()


class ShortBatch:
    """A batched verifier with a bug: it drops the last completion, and returns floats."""

    time_bounded = True

    def __call__(self, completion, task):
        return float(completion == task.answer)

    def verify_batch(self, completions, tasks):
        return [float(c == t.answer) for c, t in zip(completions, tasks)][:-1]


class NonFiniteBatch(ShortBatch):
    def verify_batch(self, completions, tasks):
        return [float("nan") if c == "nan" else 1.0 for c in completions]


def test_batched_results_get_the_single_call_checks(tok):
    env = VectorLLMEnv(fake_task(verifier=ShortBatch(), count=1), 3, tok)
    env.reset(seed=0)
    _, rewards, _, _, infos = env.step(["0", "0", "0"])
    errors = [v.error for v in infos["verdict"]]
    assert all("returned 2 results for 3 completions" in e for e in errors), errors
    assert infos["error"].tolist() == errors  # the step's info shows it too
    env = VectorLLMEnv(fake_task(verifier=NonFiniteBatch(), count=1), 2, tok)
    env.reset(seed=0)
    _, rewards, _, _, infos = env.step(["0", "nan"])
    assert rewards.tolist() == [1.0, 0.0] and infos["verdict"][0].error is None
    assert "non-finite" in infos["verdict"][1].error
    assert infos["verdict"][0].parts == {"reward": 1.0}  # a float is wrapped by Verdict.of


def test_a_slow_batched_verifier_that_does_not_bound_itself_gets_a_deadline(tok):
    import time

    class Slow:
        def __call__(self, completion, task):
            return 1.0

        def verify_batch(self, completions, tasks):
            while True:
                time.sleep(0.01)

    env = VectorLLMEnv(fake_task(verifier=Slow(), count=1), 2, tok, verifier_timeout_s=0.2)
    env.reset(seed=0)
    _, rewards, _, _, infos = env.step(["0", "0"])
    assert rewards.tolist() == [0.0, 0.0] and all("timed out" in v.error for v in infos["verdict"])


def test_a_dialogue_turn_left_without_a_verdict_is_an_error_not_reward_0(tok):
    env = VectorLLMEnv("llmenv/math-retry-v0", 2, tok)
    env.reset(seed=0)
    pending = {i: e.prepare_step("\\boxed{1}") for i, e in enumerate(env.envs)}
    _, reward, _, _, info = env.envs[0].complete_step(pending[0], None)
    assert reward == 0.0 and "no verdict" in info["verdict"].error and "no verdict" in info["error"]


def test_envs_of_a_vector_share_one_source_and_one_codec(tok, tmp_path):
    import json

    rows = [{"question": f"{i} + 1?", "answer": f"#### {i + 1}"} for i in range(4)]
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = VectorLLMEnv("llmenv/gsm8k-v0", 4, tok, data_files=str(path))
    assert len({id(e.source) for e in env.envs}) == 1 and len({id(e.codec) for e in env.envs}) == 1
    _, infos = env.reset(seed=0)
    assert all(t.answer in {"1", "2", "3", "4"} for t in infos["task"])


def test_gymnasium_async_vector_env_runs_a_builtin_task(tok):
    env = gym.make_vec(
        "llmenv/arith-v0",
        num_envs=2,
        vectorization_mode="async",
        vector_kwargs={"shared_memory": False},
        tokenizer=tok,
    )
    try:
        obs, infos = env.reset(seed=0)
        assert len(obs) == 2 and all(o.dtype == np.int64 for o in obs)
        actions = [np.asarray(tok.encode(f"\\boxed{{{t.answer}}}", add_special_tokens=False)) for t in infos["task"]]
        _, rewards, terminated, _, infos = env.step(actions)
        assert rewards.tolist() == [1.0, 1.0] and terminated.all()
        assert all(isinstance(v, Verdict) and v.passed for v in infos["verdict"])
    finally:
        env.close()
