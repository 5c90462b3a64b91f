"""DialogueEnv: exact tokens across turns, masks, truncation vs termination, and the built-in games."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import llmenv
from llmenv.dialogue import DialogueEnv, EnvReply, end_when_passed
from llmenv.errors import TaskConfigError
from llmenv.models import load_tokenizer
from llmenv.types import Task


def echo_env(tokenizer, **kwargs):
    """A dialogue where the user repeats back what the assistant said, until it says 'stop'."""

    def respond(ctx):
        if "stop" in ctx.completion:
            return EnvReply(done=True, reason="stopped", reward=1.0)
        return EnvReply(messages=[{"role": "user", "content": f"You said: {ctx.completion}"}], reward=0.1)

    return DialogueEnv([Task("Talk to me.")], lambda c, t: 0.0, tokenizer, responder=respond, **kwargs)


def play(env, tok, texts, *, cut_last=False, cut=()):
    obs, info = env.reset(seed=0)
    history = list(info["messages"])
    results = []
    for i, text in enumerate(texts):
        action = env.unwrapped.codec.encode_text(text)
        if i not in cut and not (cut_last and i == len(texts) - 1):
            action = action + [tok.convert_tokens_to_ids("<|im_end|>")]
        before = obs
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs[: len(before)].tolist() == before.tolist(), "the context must only grow"
        assert obs[len(before) : len(before) + len(action)].tolist() == action, "action tokens kept verbatim"
        history.append({"role": "assistant", "content": text})
        history.extend(info["env_messages"])
        results.append((reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return obs, history, results


def assert_matches_full_render(tok, obs, history, *, generation_prompt):
    expected = tok.apply_chat_template(history, add_generation_prompt=generation_prompt)["input_ids"]
    assert obs.tolist() == list(expected)


@pytest.mark.parametrize("tokenizer_name", ["tiny", pytest.param("smollm2-135m", marks=pytest.mark.slow)])
def test_tokens_equal_a_full_render_of_the_conversation_after_every_turn(tok, tokenizer_name):
    tokenizer = tok if tokenizer_name == "tiny" else load_tokenizer(tokenizer_name)
    env = echo_env(tokenizer, max_turns=10)
    texts = ["Hello there!", "trailing spaces and\nnewlines \n", "émoji 🙂 and 123", '{"json": [1, 2]}', "ok stop"]
    obs, history, results = play(env, tokenizer, texts)
    assert [r[1] for r in results] == [False, False, False, False, True]
    # after the final (terminal) action nothing is appended: compare the context before it
    before_last = obs[: len(obs) - len(env.unwrapped.trajectory.action_tokens()[-1])]
    assert_matches_full_render(tokenizer, before_last, history[:-1], generation_prompt=True)


@pytest.mark.parametrize("tokenizer_name", ["tiny", pytest.param("smollm2-135m", marks=pytest.mark.slow)])
def test_text_equals_the_full_render_even_when_actions_tokenize_differently_in_context(tok, tokenizer_name):
    """A reply starting with spaces merges with the prompt's newline in a re-tokenization; we keep the sampled ids."""
    tokenizer = tok if tokenizer_name == "tiny" else load_tokenizer(tokenizer_name)
    env = echo_env(tokenizer)
    obs, history, _ = play(env, tokenizer, ["   indented reply", "\n\nnewlines first", "stop"])
    before_last = obs[: env.unwrapped.trajectory.turns[-1].start]
    text = env.unwrapped.codec.decode(before_last, skip_special_tokens=False)
    assert text == env.unwrapped.codec.render_full(history[:-1], add_generation_prompt=True)


def test_loss_mask_covers_policy_tokens_only_and_rewards_are_per_turn(tok):
    env = echo_env(tok)
    play(env, tok, ["one", "two", "stop"])
    traj = env.trajectory
    assert [t.role for t in traj.turns] == ["prompt", "policy", "env", "policy", "env", "policy"]
    for turn in traj.turns:
        assert set(traj.loss_mask[turn.start : turn.end].tolist()) == ({1} if turn.role == "policy" else {0})
    assert traj.rewards == (0.1, 0.1, 1.0)


def test_a_cut_action_gets_its_end_of_turn_token_from_the_env(tok):
    env = echo_env(tok)
    obs, history, _ = play(env, tok, ["this was cut", "stop"], cut={0})
    traj = env.trajectory
    env_turn = traj.turns[2]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert traj.tokens[env_turn.start] == im_end and traj.loss_mask[env_turn.start] == 0
    before_last = obs[: traj.turns[-1].start]
    assert_matches_full_render(tok, before_last, history[:-1], generation_prompt=True)


def test_max_turns_truncates_and_max_context_tokens_truncates(tok):
    env = echo_env(tok, max_turns=2)
    _, _, results = play(env, tok, ["a", "b", "c"])
    reward, terminated, truncated, info = results[-1]
    assert len(results) == 2 and (terminated, truncated) == (False, True) and info["stop_reason"] == "max_turns"
    env = echo_env(tok, max_turns=50, max_context_tokens=120)
    _, _, results = play(env, tok, ["some words " * 3] * 20)
    assert results[-1][2] and results[-1][3]["stop_reason"] == "max_context_tokens"
    assert env.trajectory.tokens.size > 120


def test_responder_contract_errors(tok):
    env = DialogueEnv([Task("q")], lambda c, t: 0.0, tok, responder=lambda ctx: "nope")
    env.reset(seed=0)
    with pytest.raises(TaskConfigError, match="must return an EnvReply"):
        env.step([1])
    with pytest.raises(TaskConfigError, match="max_turns must be >= 1"):
        DialogueEnv([Task("q")], lambda c, t: 0.0, tok, responder=end_when_passed(), max_turns=0)


def test_guess_number_binary_search_wins_and_check_env(tok):
    env = llmenv.make("llmenv/guess-number-v0", tokenizer=tok)
    for seed in range(5):
        _, info = env.reset(seed=seed)
        secret, low, high = int(info["task"].answer), 1, 100
        for _ in range(7):
            guess = (low + high) // 2
            _, reward, terminated, truncated, info = env.step(f"\\boxed{{{guess}}}")
            if terminated:
                break
            low, high = (guess + 1, high) if secret > guess else (low, guess - 1)
        assert terminated and reward == 1.0 and info["stop_reason"] == "guessed"
    check_env(env, skip_render_check=True)


def test_guess_number_linear_search_runs_out_of_turns(tok):
    env = llmenv.make("llmenv/guess-number-v0", tokenizer=tok)
    _, info = env.reset(seed=1)
    assert int(info["task"].answer) > 8
    for guess in range(1, 8):
        _, reward, terminated, truncated, info = env.step(f"\\boxed{{{guess}}}")
    assert truncated and not terminated and info["stop_reason"] == "max_turns" and reward == 0.0


def test_guess_number_asks_again_for_unreadable_guesses(tok):
    env = llmenv.make("llmenv/guess-number-v0", tokenizer=tok)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step("fifty?")
    assert not terminated and "could not read a guess" in info["env_messages"][0]["content"]


def test_math_retry_discounts_reward_by_attempt(tok):
    env = llmenv.make("llmenv/math-retry-v0", tokenizer=tok)
    _, info = env.reset(seed=4)
    answer = int(info["task"].answer)
    _, r1, t1, _, i1 = env.step(f"\\boxed{{{answer + 1}}}")
    assert (r1, t1) == (0.0, False) and f"{answer + 1} is not correct" in i1["env_messages"][0]["content"]
    _, r2, t2, _, _ = env.step(f"\\boxed{{{answer}}}")
    assert (r2, t2) == (0.5, True)
    assert env.trajectory.rewards == (0.0, 0.5)
    check_env(env, skip_render_check=True)


def test_arith_retry_demo_pays_shaped_credit_per_attempt_and_ends_after_one_retry(tok):
    env = llmenv.make("llmenv/arith-retry-demo-v0", tokenizer=tok)
    _, info = env.reset(seed=3)
    task = info["task"]
    assert not set(task.prompt) & set("*/") and "\\boxed{N}" in info["messages"][0]["content"]
    answer = int(task.answer)
    _, r1, t1, _, i1 = env.step(f"\\boxed{{{answer + 1}}}")  # wrong, but boxed: the format part (0.5) only
    assert (r1, t1) == (0.5, False) and "not correct" in i1["env_messages"][0]["content"]
    _, r2, t2, tr2, _ = env.step(f"\\boxed{{{answer}}}")  # right on the retry: (1 + 0.5 + 0.25) x 0.5
    assert r2 == 0.875 and (t2 or tr2) and env.trajectory.rewards == (0.5, 0.875)
    env.reset(seed=3)
    _, r, t, _, _ = env.step(f"\\boxed{{{answer + 1}}}")
    _, r, t, tr, _ = env.step(f"\\boxed{{{answer + 1}}}")
    assert tr and not t  # two attempts are all there is: the episode is cut at max_turns
    env.reset(seed=3)
    _, r1, _, _, i1 = env.step("8 + \\boxed{N}")  # the prompt's placeholder copied: no format credit
    assert r1 == 0.0 and i1["reward_parts"]["format"] == 0.0


def test_arith_retry_demo_feedback_quotes_only_the_answer_that_was_judged(tok):
    env = llmenv.make("llmenv/arith-retry-demo-v0", tokenizer=tok)
    _, info = env.reset(seed=3)
    answer = int(info["task"].answer)
    # right number, unboxed: the fallback part reads it (0.25) but it did not pass, so it must not be called wrong
    _, r1, t1, _, i1 = env.step(f"The result is {answer}")
    feedback = i1["env_messages"][0]["content"]
    assert (r1, t1) == (0.25, False) and "not correct" not in feedback and "\\boxed{N}" in feedback
    env.reset(seed=3)
    _, _, _, _, i1 = env.step(f"\\boxed{{{answer + 1}}}")
    assert f"Your answer {answer + 1} is not correct" in i1["env_messages"][0]["content"]


def test_a_misnamed_answer_part_is_a_clear_error_not_silent_feedback():
    from llmenv.dialogue import TurnContext
    from llmenv.tasks.arith import demo_reward
    from llmenv.tasks.dialogue import retry_responder

    task = Task("What is 3 + 4?", answer="7")
    verdict = demo_reward()("\\boxed{8}", task)
    ctx = TurnContext(task=task, completion="\\boxed{8}", verdict=verdict, turn=1, messages=[], finished=True, state={})
    with pytest.raises(TaskConfigError, match="answer_part 'corect' is not a Rubric part.*'correct'"):
        retry_responder(0.5, shaped=True, answer_part="corect")(ctx)


def test_observation_is_int64_and_in_space(tok):
    env = echo_env(tok)
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step([5, 6])
    assert obs.dtype == np.int64 and obs in env.observation_space
