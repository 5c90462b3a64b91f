"""run_episodes: a tiny model plays real episodes; trajectories match what was generated."""

from __future__ import annotations

import llmenv
from llmenv.agents.policy import HFPolicy, SamplingParams
from llmenv.agents.rollout import run_episodes
from llmenv.models import tiny_llama


def test_rollout_records_exact_trajectories(tok):
    envs = [llmenv.make("llmenv/arith-v0", tokenizer=tok) for _ in range(3)]
    policy = HFPolicy(tiny_llama(tok), tok)
    results = run_episodes(envs, policy, SamplingParams(max_new_tokens=10, temperature=1.0, seed=0), [5, 6, 7])
    assert [r.seed for r in results] == [5, 6, 7]
    for env, r in zip(envs, results):
        prompt, _ = env.reset(seed=r.seed)
        traj = r.trajectory
        assert traj.tokens[: len(prompt)].tolist() == prompt.tolist()
        action = traj.tokens[traj.loss_mask == 1]
        assert 1 <= len(action) <= 10 and r.completions[0] == env.unwrapped.codec.decode(action)
        assert r.reward in (0.0, 1.0) and r.verdicts[0].error is None
