"""LLMEnv: the Gymnasium contract, exact tokens, loss masks, loud errors and verifier failures."""

from __future__ import annotations

import copy
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import llmenv
from llmenv.chat import ChatCodec
from llmenv.env import LLMEnv
from llmenv.errors import InvalidActionError, ResetNeededError, TaskConfigError
from llmenv.types import Completion, Task, Verdict

TASKS = [Task("What is 2+2?", answer="4"), Task("What is 3*3?", answer="9"), Task("Name a prime.", answer="2")]


def exact(completion: str, task: Task) -> float:
    return float(completion.strip() == task.answer)


@pytest.fixture
def env(tok):
    return LLMEnv(TASKS, exact, tok, task_id="test/exact-v0")


def test_reset_returns_prompt_ids_and_the_required_info(env, tok):
    obs, info = env.reset(seed=3)
    assert obs.dtype == np.int64 and obs.ndim == 1
    assert set(info) >= {"task_id", "task", "messages", "text"}
    assert info["task_id"] == "test/exact-v0" and info["task"] in TASKS
    expected = tok.apply_chat_template(info["messages"], add_generation_prompt=True)["input_ids"]
    assert obs.tolist() == list(expected)
    assert obs in env.observation_space


def test_same_seed_same_task_and_check_env_passes(env):
    a, _ = env.reset(seed=11)
    b, _ = env.reset(seed=11)
    assert a.tolist() == b.tolist()
    check_env(env, skip_render_check=True)


def test_step_scores_decoded_tokens_and_ends_the_episode(env, tok):
    _, info = env.reset(seed=0)
    answer = info["task"].answer
    action = np.asarray(tok.encode(answer, add_special_tokens=False) + [tok.eos_token_id])
    obs, reward, terminated, truncated, info = env.step(action)
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert isinstance(info["verdict"], Verdict) and info["reward_parts"] == {"reward": 1.0}
    assert info["completion"] == answer and info["finished"] is True
    assert "error" not in info


def test_trajectory_is_prompt_plus_action_with_mask_on_action_only(env, tok):
    prompt, _ = env.reset(seed=1)
    action = [5, 17, 42, tok.eos_token_id]
    obs, *_ = env.step(action)
    traj = env.trajectory
    assert traj.tokens.tolist() == prompt.tolist() + action == obs.tolist()
    assert traj.loss_mask.tolist() == [0] * len(prompt) + [1] * len(action)
    assert [t.role for t in traj.turns] == ["prompt", "policy"] and len(traj.rewards) == 1


def test_action_tokens_are_never_reencoded(env, tok):
    """A non-canonical tokenization of the answer stays as generated in the trajectory."""
    _, info = env.reset(seed=0, options={"task": TASKS[0]})
    chars = [tok.convert_tokens_to_ids(c) for c in "4"]  # single-character ids, not BPE merges
    env.step(chars)
    assert env.trajectory.action_tokens()[0].tolist() == chars


@pytest.mark.parametrize(
    "action",
    [np.array([1, 2], dtype=np.int32), [1, 2], (3,), torch.tensor([4, 5]), np.zeros(0, dtype=np.int64), []],
)
def test_accepted_action_forms(env, action):
    env.reset(seed=0)
    env.step(action)
    assert env.trajectory.loss_mask.sum() == len(action)


@pytest.mark.parametrize(
    "action, message",
    [
        (np.array([[1, 2]]), "1-D token ids"),
        (np.array([1.0, 2.0]), "integer token ids"),
        ([1, -1], "token id -1 is outside the vocabulary"),
        ([1, 10**6], "outside the vocabulary \\[0, 400\\)"),
        (np.array([True, False]), "integer token ids"),
        ({"ids": [1]}, "action must be token ids"),
        ([[1, 2], [3]], "flat sequence"),
    ],
)
def test_bad_actions_raise_clear_errors(env, action, message):
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=message):
        env.step(action)


def test_step_before_reset_and_after_end(env):
    with pytest.raises(ResetNeededError, match="before reset"):
        env.step([1])
    env.reset(seed=0)
    env.step([1])
    with pytest.raises(ResetNeededError, match="after the episode ended"):
        env.step([1])


def test_str_action_is_tokenized_for_convenience(env):
    env.reset(seed=0, options={"task": TASKS[1]})
    _, reward, *_ = env.step("9")
    assert reward == 1.0


def test_reset_options_pin_task(env):
    _, info = env.reset(options={"index": 2})
    assert info["task"] is TASKS[2]
    with pytest.raises(TaskConfigError, match="unknown reset option"):
        env.reset(options={"idx": 1})


def test_verifier_crash_is_reported_not_silent(tok):
    def broken(completion, task):
        raise RuntimeError("parser exploded")

    env = LLMEnv(TASKS, broken, tok)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step([1, 2])
    assert reward == 0.0 and terminated
    assert "parser exploded" in info["error"] and info["verdict"].error == info["error"]
    assert info["verdict"].passed is None


def test_hanging_verifier_is_cut_at_its_time_bound(tok):
    def spin(completion, task):
        while True:
            pass

    env = LLMEnv(TASKS, spin, tok, verifier_timeout_s=0.3)
    env.reset(seed=0)
    started = time.perf_counter()
    _, reward, _, _, info = env.step([1])
    assert time.perf_counter() - started < 10.0  # a bound on a hang; the step returns at about the 0.3 s bound
    assert reward == 0.0 and "timed out after 0.3s" in info["error"]


def test_verifier_returning_nan_is_an_error(tok):
    env = LLMEnv(TASKS, lambda c, t: float("nan"), tok)
    env.reset(seed=0)
    assert "non-finite" in env.step([1])[4]["error"]


def test_procedural_source_and_render(tok):
    def gen(rng, *, top=10):
        a = int(rng.integers(top))
        return Task(f"Echo {a}", answer=str(a))

    env = LLMEnv(gen, exact, tok, render_mode="ansi")
    _, info = env.reset(seed=5)
    env.step(info["task"].answer)
    assert env.render().endswith(info["task"].answer)


def test_gymnasium_make_and_llmenv_make_agree(tok):
    a = gym.make("llmenv/arith-v0", tokenizer=tok)
    b = llmenv.make("llmenv/arith-v0", tokenizer=tok)
    oa, ia = a.reset(seed=7)
    ob, ib = b.reset(seed=7)
    assert oa.tolist() == ob.tolist() and ia["task"] == ib["task"]
    _, reward, *_ = a.step(f"\\boxed{{{ia['task'].answer}}}")
    assert reward == 1.0


def test_the_env_hands_its_verifier_a_completion_with_the_policys_tokens(tok):
    seen = []
    env = LLMEnv([Task("2+2?", answer="4")], lambda c, t: seen.append(c) or 1.0, tok, system_prompt="Be brief.")
    prompt, _ = env.reset(seed=0)
    action = [*tok("4", add_special_tokens=False)["input_ids"], tok.eos_token_id]
    env.step(np.array(action))
    (done,) = seen
    assert isinstance(done, Completion) and done == "4"
    assert done.tokens.tolist() == [*prompt.tolist(), *action] and done.action_start == len(prompt)
    assert [m["role"] for m in done.messages] == ["system", "user"] and done.messages[0]["content"] == "Be brief."
    other = copy.deepcopy(tok)
    other.chat_template = tok.chat_template.replace("<|im_start|>", "<|im_start|> ")
    assert done.codec_key == ChatCodec(copy.deepcopy(tok)).codec_key != ChatCodec(other).codec_key


def steps_at_newlines(completion: str, task: Task) -> Verdict:
    """A process verifier: each line is a step, scored by its position (1, 2, 3 ...) so every score is distinct."""
    ends, offset = [], 0
    for line in completion.split("\n"):
        offset += len(line)
        if line:
            ends.append(offset)
        offset += 1
    return Verdict(0.5, steps=tuple(llmenv.StepScore(end, i + 1) for i, end in enumerate(ends)))


@pytest.mark.parametrize("text", ["3 + 4 = 7\n7 * 2 = 14\n14 - 5 = 9", "é€ café\nnaïve ünïcode 😀\nend", "a\n\nb"])
def test_step_scores_land_on_the_token_holding_each_steps_last_character(tok, text):
    env = LLMEnv(TASKS, steps_at_newlines, tok)
    obs, _ = env.reset(seed=0)
    action = np.asarray(tok.encode(text, add_special_tokens=False) + [tok.eos_token_id])
    env.step(action)
    trajectory = env.trajectory
    assert trajectory.token_rewards is not None and len(trajectory.token_rewards) == len(trajectory.tokens)
    lines = [line for line in text.split("\n") if line]
    assert len(trajectory.step_ends) == len(lines)
    start = len(obs)
    for k, (index, line) in enumerate(zip(trajectory.step_ends, lines)):
        assert trajectory.token_rewards[index] == k + 1 and trajectory.loss_mask[index] == 1
        decoded_through = tok.decode(trajectory.tokens[start : index + 1].tolist())
        decoded_before = tok.decode(trajectory.tokens[start:index].tolist())
        assert line in decoded_through.split("\n")  # the step's last character is in this token ...
        assert not decoded_before.endswith(line)  # ... and not yet in the one before
    assert np.count_nonzero(trajectory.token_rewards) == len(lines)
    assert trajectory.reward_per_token().sum() == pytest.approx(0.5 + sum(range(1, len(lines) + 1)))
    assert trajectory.reward_per_token(dense=False).sum() == pytest.approx(0.5)


def test_outcome_only_verifiers_leave_no_dense_rewards(env, tok):
    env.reset(seed=0)
    env.step(np.asarray(tok.encode("4", add_special_tokens=False)))
    assert env.trajectory.token_rewards is None and env.trajectory.step_ends == ()


def test_verdict_steps_must_increase():
    with pytest.raises(ValueError, match="strictly increasing"):
        Verdict(1.0, steps=(llmenv.StepScore(5, 1.0), llmenv.StepScore(3, 1.0)))
