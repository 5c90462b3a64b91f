"""HFPolicy: batched left-padded generation returns the sampled ids and their true log-probs."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from llmenv.agents.policy import Generation, HFPolicy, SamplingParams
from llmenv.chat import ChatCodec
from llmenv.models import tiny_llama


@pytest.fixture(scope="module")
def policy(tok):
    return HFPolicy(tiny_llama(tok, seed=1), tok, batch_size=3)


def prompts(tok):
    codec = ChatCodec(tok)
    texts = ["Compute 1 + 2.", "What is the answer to the ultimate question of life?", "Hi"]
    return [codec.encode([{"role": "user", "content": t}]).tolist() for t in texts]


def test_generations_end_at_a_stop_token_or_the_budget(policy, tok):
    out = policy.generate(prompts(tok) * 2, SamplingParams(max_new_tokens=12, temperature=1.0, seed=0))
    assert len(out) == 6 and all(isinstance(g, Generation) for g in out)
    for g in out:
        assert g.tokens.dtype == np.int64 and len(g.tokens) == len(g.logprobs) <= 12
        stops = [i for i, t in enumerate(g.tokens) if t in policy.stop_token_ids]
        assert stops == ([len(g.tokens) - 1] if g.finished else [])
        assert len(g.tokens) == 12 or g.finished


def test_logprobs_are_those_of_the_model_at_temperature_one(policy, tok):
    """Recompute each sampled token's log-prob with an unpadded forward pass: padding must not leak."""
    batch = prompts(tok)
    out = policy.generate(batch, SamplingParams(max_new_tokens=8, temperature=1.0, seed=3))
    for prompt, g in zip(batch, out):
        ids = torch.tensor([prompt + g.tokens.tolist()])
        with torch.no_grad():
            logits = policy.model(ids).logits[0, len(prompt) - 1 : -1]  # (T, V)
        expected = logits.log_softmax(-1).gather(-1, torch.tensor(g.tokens)[:, None])[:, 0]  # (T,)
        np.testing.assert_allclose(g.logprobs, expected.numpy(), atol=2e-4)


def test_a_group_of_identical_prompts_is_prefilled_once_with_the_same_results(policy, tok, monkeypatch):
    group = [prompts(tok)[1]] * 3  # one GRPO group: the same prompt three times
    sampled = SamplingParams(max_new_tokens=8, temperature=1.0, seed=5)
    shapes = []
    forward = policy.model.forward

    @functools.wraps(forward)  # keeps forward's signature: the policy's own sampling loop still drives it
    def counting(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    monkeypatch.setattr(policy.model, "forward", counting)
    out = policy.generate(group, sampled)
    assert shapes[0] == (1, len(group[0]) - 1) and shapes[1] == (3, 1)  # shared prefill, then per-row tokens
    for g in out:  # each row's log-probs are still those of an unshared forward pass
        ids = torch.tensor([group[0] + g.tokens.tolist()])
        with torch.no_grad():
            logits = forward(ids).logits[0, len(group[0]) - 1 : -1]  # (T, V)
        expected = logits.log_softmax(-1).gather(-1, torch.tensor(g.tokens)[:, None])[:, 0]  # (T,)
        np.testing.assert_allclose(g.logprobs, expected.numpy(), atol=2e-4)


def test_greedy_is_deterministic_and_seeded_sampling_reproduces(policy, tok):
    batch = prompts(tok)
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0)
    assert [g.tokens.tolist() for g in policy.generate(batch, greedy)] == [
        g.tokens.tolist() for g in policy.generate(batch, greedy)
    ]
    sampled = SamplingParams(max_new_tokens=6, temperature=1.0, seed=7)
    assert [g.tokens.tolist() for g in policy.generate(batch, sampled)] == [
        g.tokens.tolist() for g in policy.generate(batch, sampled)
    ]


def test_update_weights_changes_generation(tok):
    a, b = tiny_llama(tok, seed=1), tiny_llama(tok, seed=2)
    policy = HFPolicy(a, tok)
    batch = prompts(tok)
    sampled = SamplingParams(max_new_tokens=6, temperature=1.0, seed=11)
    before = [g.logprobs.tolist() for g in policy.generate(batch, sampled)]
    policy.update_weights(b.state_dict())
    after = [g.logprobs.tolist() for g in policy.generate(batch, sampled)]
    assert after == [g.logprobs.tolist() for g in HFPolicy(b, tok).generate(batch, sampled)] and after != before


@pytest.mark.parametrize("kwargs", [{"max_new_tokens": 0}, {"temperature": -1}, {"top_p": 0}])
def test_bad_sampling_params(kwargs):
    with pytest.raises(ValueError):
        SamplingParams(**kwargs)
