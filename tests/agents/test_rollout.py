"""rollout/to_batch: a tiny model plays real episodes; packed tensors match what was generated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmenv.agents.policy import HFPolicy, SamplingParams
from llmenv.agents.rollout import rollout, to_batch
from llmenv.models import tiny_llama
from llmenv.vector import VectorLLMEnv


@pytest.fixture(scope="module")
def policy(tok):
    return HFPolicy(tiny_llama(tok, seed=3), tok)


def test_single_turn_rollout_packs_exact_tokens_masks_and_logprobs(tok, policy):
    env = VectorLLMEnv("llmenv/arith-v0", 4, tok, group_size=2, autoreset=False)
    episodes = rollout(env, policy, SamplingParams(max_new_tokens=10, temperature=1.0, seed=0), seed=5)
    assert [e.group for e in episodes] == [0, 0, 1, 1] and episodes[0].task == episodes[1].task
    for e in episodes:
        traj = e.trajectory
        action = traj.tokens[traj.loss_mask == 1]
        assert 1 <= len(action) <= 10 and e.completions[0] == env.envs[0].codec.decode(action)
        assert (e.logprobs[traj.loss_mask == 0] == 0).all() and (e.logprobs[traj.loss_mask == 1] < 0).all()
        assert e.cut == (action[-1] not in policy.stop_token_ids)
    batch = to_batch(episodes, pad_token_id=tok.pad_token_id)
    lengths = [len(e.trajectory.tokens) for e in episodes]
    assert batch.input_ids.shape == (4, max(lengths)) and batch.attention_mask.sum(1).tolist() == lengths
    assert batch.loss_mask.sum().item() == sum(int(e.trajectory.loss_mask.sum()) for e in episodes)
    assert batch.group_ids.tolist() == [0, 0, 1, 1] and set(batch.parts) == {"correct"}
    assert torch.equal(batch.rewards, torch.tensor([e.reward for e in episodes]))


def test_logprobs_are_the_models_on_the_packed_tokens(tok, policy):
    env = VectorLLMEnv("llmenv/arith-v0", 2, tok, autoreset=False)
    episodes = rollout(env, policy, SamplingParams(max_new_tokens=6, temperature=1.0, seed=1), seed=0)
    batch = to_batch(episodes, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        logits = policy.model(batch.input_ids, attention_mask=batch.attention_mask).logits  # (B, L, V)
    logp = logits[:, :-1].log_softmax(-1).gather(-1, batch.input_ids[:, 1:, None])[..., 0]  # (B, L-1)
    mask = batch.loss_mask[:, 1:].bool()
    np.testing.assert_allclose(logp[mask].numpy(), batch.old_logprobs[:, 1:][mask].numpy(), atol=2e-4)


def test_multi_turn_rollout_runs_every_episode_to_its_end(tok, policy):
    env = VectorLLMEnv("llmenv/guess-number-v0", 2, tok, autoreset=False, max_turns=3)
    episodes = rollout(env, policy, SamplingParams(max_new_tokens=5, temperature=1.0, seed=2), seed=0)
    for e in episodes:
        policy_turns = [t for t in e.trajectory.turns if t.role == "policy"]
        assert len(policy_turns) == len(e.completions) == len(e.verdicts) <= 3
        assert e.truncated == (len(policy_turns) == 3 and e.reward == 0.0)
        for turn in policy_turns:
            assert (e.logprobs[turn.start : turn.end] < 0).all()


def test_rollout_refuses_an_autoresetting_env(tok, policy):
    with pytest.raises(ValueError, match="autoreset=False"):
        rollout(VectorLLMEnv("llmenv/arith-v0", 1, tok), policy, SamplingParams(max_new_tokens=2))


def test_episodes_pickle_and_keep_their_json_form(tok):
    import pickle

    from llmenv.agents.policy import HFPolicy, SamplingParams
    from llmenv.agents.rollout import rollout
    from llmenv.models import tiny_llama
    from llmenv.vector import VectorLLMEnv

    env = VectorLLMEnv("llmenv/arith-v0", 2, tok, autoreset=False)
    episodes = rollout(env, HFPolicy(tiny_llama(tok), tok), SamplingParams(max_new_tokens=3, seed=0), seed=0)
    again = pickle.loads(pickle.dumps(episodes))
    assert [e.to_json() for e in again] == [e.to_json() for e in episodes]
