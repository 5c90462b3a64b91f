"""RewardModelVerifier: the score is read at the explicit end, from the policy's exact tokens when it can."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from llmenv.chat import ChatCodec
from llmenv.dialogue import DialogueEnv, EnvReply, TurnContext
from llmenv.env import LLMEnv
from llmenv.errors import VerifierError
from llmenv.models import load_reward_model, tiny_llama
from llmenv.types import Completion, Message, Task
from llmenv.verifiers.reward_model import (
    RewardModelVerifier,
    RunningNormalizer,
    encode_conversation,
    pair_rewards,
    reward_parts,
    sequence_rewards,
)

TASK = Task("What is 2+2?", answer="4")


@pytest.fixture(scope="module")
def eos_pad_tok(tok):
    """The tiny tokenizer with SmolLM2's convention: the pad token is the end-of-turn token."""
    same = copy.deepcopy(tok)
    same.pad_token = same.eos_token
    return same


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, eos_pad_tok):
    """A saved one-output reward model (a random head) whose config pads with EOS."""
    lm, path = tmp_path_factory.mktemp("tiny-lm"), tmp_path_factory.mktemp("tiny-rm")
    tiny_llama(eos_pad_tok, seed=0).save_pretrained(lm)
    torch.manual_seed(0)
    model = load_reward_model(lm)  # the causal LM's trunk under a new scalar head
    assert model.config.pad_token_id == eos_pad_tok.eos_token_id
    model.save_pretrained(path)
    eos_pad_tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def verifier(rm_dir):
    return RewardModelVerifier(str(rm_dir))


def head_at(verifier, ids, index):
    """The head applied to the trunk's hidden state at `index`: the score the verifier must give."""
    trunk, head = reward_parts(verifier.model)
    with torch.inference_mode():
        hidden = trunk(input_ids=torch.tensor([ids])).last_hidden_state
        return float(head(hidden[0, index]).squeeze())


def test_a_completion_ending_in_eos_is_scored_at_the_eos_not_one_token_early(verifier, eos_pad_tok):
    ids, end = encode_conversation(verifier.codec, TASK.messages(), "4")
    assert ids[end] == eos_pad_tok.eos_token_id == verifier.model.config.pad_token_id
    verdict = verifier("4", TASK)
    assert verdict.reward == pytest.approx(head_at(verifier, ids[: end + 1], end), abs=1e-5)
    with torch.inference_mode():  # transformers' own pooling skips the EOS (it is the pad token)
        pooled = float(verifier.model(input_ids=torch.tensor([ids[: end + 1]])).logits.squeeze())
    assert pooled == pytest.approx(head_at(verifier, ids[: end + 1], end - 1), abs=1e-5)
    assert abs(pooled - verdict.reward) > 1e-4
    assert verdict.passed is None and verdict.details["encoding"] == "rendered"
    assert verdict.details["raw_reward"] == verdict.reward and verdict.parts == {"reward_model": verdict.reward}


def test_an_env_completion_is_scored_on_the_policys_exact_tokens(rm_dir, eos_pad_tok):
    seen = []

    def scored(completion, task):
        verdict = verifier(completion, task)
        seen.append((completion, verdict))
        return verdict

    verifier = RewardModelVerifier(str(rm_dir))
    env = LLMEnv([TASK], scored, eos_pad_tok)
    prompt, _ = env.reset(seed=0)
    # "is" spelled one character per token: the canonical encoding of the text is one merged token
    action = [eos_pad_tok.convert_tokens_to_ids(ch) for ch in "is"] + [eos_pad_tok.eos_token_id]
    assert eos_pad_tok("is", add_special_tokens=False)["input_ids"] != action[:-1]
    env.step(np.array(action))
    completion, verdict = seen[0]
    assert isinstance(completion, Completion) and completion.tokens.tolist() == [*prompt.tolist(), *action]
    assert verdict.details["encoding"] == "policy_tokens" and verdict.details["tokens"] == len(prompt) + len(action)
    exact = head_at(verifier, completion.tokens.tolist(), len(completion.tokens) - 1)
    assert verdict.reward == pytest.approx(exact, abs=1e-5)
    rendered = verifier("is", TASK)  # the same text re-encoded canonically scores differently
    assert rendered.details["encoding"] == "rendered" and abs(rendered.reward - verdict.reward) > 1e-4


def test_a_cut_action_gets_the_end_of_turn_token_before_it_is_scored(verifier, eos_pad_tok):
    prompt = verifier.codec.encode(TASK.messages(), add_generation_prompt=True)
    action = eos_pad_tok("4", add_special_tokens=False)["input_ids"]  # no EOS: cut by max_new_tokens
    key = verifier.codec.codec_key
    cut = Completion("4", tokens=[*prompt, *action], action_start=len(prompt), messages=TASK.messages(), codec_key=key)
    ids, end, how = verifier.encode(cut, TASK)
    assert how == "policy_tokens" and ids == [*prompt, *action, eos_pad_tok.eos_token_id] and end == len(ids) - 1
    assert verifier(cut, TASK).reward == pytest.approx(head_at(verifier, ids, end), abs=1e-5)


def test_tokens_from_another_codec_are_re_rendered_through_the_reward_models_template(verifier, tok_no_template):
    other = ChatCodec(tok_no_template)
    assert other.codec_key != verifier.codec.codec_key
    prompt = other.encode(TASK.messages(), add_generation_prompt=True)
    messages, key = TASK.messages(), other.codec_key
    foreign = Completion("4", tokens=prompt, action_start=len(prompt), messages=messages, codec_key=key)
    verdict = verifier(foreign, TASK)
    assert verdict.details["encoding"] == "rendered"
    assert verdict.reward == pytest.approx(verifier("4", TASK).reward, abs=1e-5)


def test_each_turn_of_a_dialogue_is_scored_in_its_context(rm_dir, eos_pad_tok):
    verifier = RewardModelVerifier(str(rm_dir))
    seen = []

    def scored(completion, task):
        seen.append(completion)
        return verifier(completion, task)

    def again(ctx: TurnContext) -> EnvReply:
        return EnvReply(messages=[Message(role="user", content="Are you sure?")])

    env = DialogueEnv([TASK], scored, eos_pad_tok, responder=again, max_turns=2)
    env.reset(seed=0)
    action = np.array([*eos_pad_tok("4", add_special_tokens=False)["input_ids"], eos_pad_tok.eos_token_id])
    env.step(action)
    _, reward, *_ = env.step(action)
    second = seen[1]
    assert [m["content"] for m in second.messages] == [*(m["content"] for m in TASK.messages()), "4", "Are you sure?"]
    assert second.tokens[: len(seen[0].tokens)].tolist() == seen[0].tokens.tolist()
    in_context = head_at(verifier, second.tokens.tolist(), len(second.tokens) - 1)
    assert verifier(second, TASK).reward == pytest.approx(in_context, abs=1e-5)
    assert abs(in_context - verifier(seen[0], TASK).reward) > 1e-4  # same text, different context


def test_a_batch_scores_like_one_at_a_time(rm_dir):
    verifier = RewardModelVerifier(str(rm_dir), batch_size=3)
    texts = ["4", "four", "The answer is 4, I am sure of it.", "5", "", "2+2 is 4"]
    batched = verifier.verify_batch(texts, [TASK] * len(texts))
    for text, verdict in zip(texts, batched):
        assert verdict.reward == pytest.approx(verifier(text, TASK).reward, abs=1e-5)


def test_normalisation_uses_running_statistics_and_keeps_the_raw_score(rm_dir):
    raw = RewardModelVerifier(str(rm_dir))
    normed = RewardModelVerifier(str(rm_dir), normalize=True)
    texts = ["4", "four", "5", "2+2 is 4"]
    scores = [v.reward for v in raw.verify_batch(texts, [TASK] * 4)]
    verdicts = normed.verify_batch(texts, [TASK] * 4)
    mean, std = np.mean(scores), np.std(scores)
    for score, verdict in zip(scores, verdicts):
        assert verdict.details["raw_reward"] == pytest.approx(score, abs=1e-6)
        assert verdict.reward == pytest.approx((score - mean) / std, abs=1e-4)
    running = RunningNormalizer()
    running.update([1.0, 3.0])
    running.update([5.0])
    assert (running.count, running.mean, running.std) == (3, 3.0, pytest.approx(np.std([1, 3, 5])))


def test_bad_arguments_are_clear_errors(rm_dir, tok):
    model = load_reward_model(str(rm_dir))
    with pytest.raises(VerifierError, match="needs its tokenizer"):
        RewardModelVerifier(model)
    with pytest.raises(VerifierError, match="batch_size must be >= 1"):
        RewardModelVerifier(str(rm_dir), batch_size=0)
    with pytest.raises(VerifierError, match="not a reward model"):
        reward_parts(tiny_llama(tok))
    assert RewardModelVerifier(model, str(rm_dir))("4", TASK).reward == pytest.approx(
        RewardModelVerifier(str(rm_dir))("4", TASK).reward, abs=1e-6
    )


@pytest.mark.parametrize("shared_prefix", [True, False], ids=["prefix-once", "whole-sequences"])
def test_pair_rewards_equal_whole_sequence_rewards_and_their_gradients(rm_dir, eos_pad_tok, shared_prefix):
    model = load_reward_model(rm_dir).train()
    codec = ChatCodec(eos_pad_tok)
    sides = [("What is 2+2?", "It is 4.", "It is five, I think."), ("Name a prime number please.", "7", "Nine")]
    if not shared_prefix:
        sides = [("", "a", "b")]  # a few tokens in common only: the whole-sequence path
    chosen, rejected = [], []
    for prompt, good, bad in sides:
        messages = [Message(role="user", content=prompt)] if prompt else []
        chosen.append(encode_conversation(codec, messages, good))
        rejected.append(encode_conversation(codec, messages, bad))
    pad = eos_pad_tok.pad_token_id
    calls = []
    hook = reward_parts(model)[0].register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs),
                                                        with_kwargs=True)  # fmt: skip
    r_c, r_r = pair_rewards(model, [c for c, _ in chosen], [e for _, e in chosen], [r for r, _ in rejected],
                            [e for _, e in rejected], pad=pad)  # fmt: skip
    hook.remove()
    assert len(calls) == (2 if shared_prefix else 1)  # the prefix pass, then both continuations on its cache
    (r_c - 2 * r_r).sum().backward()
    paired = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    whole = []
    for ids, end in chosen + rejected:
        row = torch.tensor([ids[: end + 1]])
        whole.append(sequence_rewards(model, row, torch.ones_like(row), torch.tensor([end]))[0])
    expected_c, expected_r = torch.stack(whole[: len(chosen)]), torch.stack(whole[len(chosen) :])
    (expected_c - 2 * expected_r).sum().backward()
    torch.testing.assert_close(r_c, expected_c, atol=1e-5, rtol=0)
    torch.testing.assert_close(r_r, expected_r, atol=1e-5, rtol=0)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(paired[name], parameter.grad, atol=1e-5, rtol=1e-4, msg=name)
