"""Run a policy on environments until every episode ends, and collect what happened.

`run_episodes` is the plain loop behind `llmenv rollout` and `llmenv demo`: reset a batch of
environments with given seeds, generate for every live observation in one batched call, step,
repeat while any episode is still running (so multi-turn environments work unchanged). It
returns per-episode results with the exact trajectory. It does not compute losses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from llmenv.agents.policy import Policy, SamplingParams
from llmenv.types import Task, Trajectory, Verdict


@dataclass(frozen=True)
class EpisodeResult:
    """One finished episode."""

    seed: int
    task: Task
    prompt: str
    completions: tuple[str, ...]
    reward: float
    verdicts: tuple[Verdict, ...]
    trajectory: Trajectory
    truncated: bool


def run_episodes(
    envs: Sequence[gym.Env], policy: Policy, sampling: SamplingParams, seeds: Sequence[int]
) -> list[EpisodeResult]:
    """Play one episode per (env, seed) pair with `policy`; results are in seed order."""
    if len(envs) != len(seeds):
        raise ValueError(f"need one seed per env, got {len(envs)} envs and {len(seeds)} seeds")
    observations, live = [], list(range(len(envs)))
    infos: list[dict[str, Any]] = []
    for env, seed in zip(envs, seeds):
        obs, info = env.reset(seed=seed)
        observations.append(obs)
        infos.append(info)
    rewards = [0.0] * len(envs)
    completions: list[list[str]] = [[] for _ in envs]
    verdicts: list[list[Verdict]] = [[] for _ in envs]
    truncated = [False] * len(envs)
    while live:
        generations = policy.generate([observations[i].tolist() for i in live], sampling)
        still_live = []
        for i, generation in zip(live, generations):
            obs, reward, term, trunc, info = envs[i].step(generation.tokens)
            rewards[i] += float(reward)
            completions[i].append(info.get("completion", ""))
            verdicts[i].append(info["verdict"])
            observations[i] = obs
            if term or trunc:
                truncated[i] = bool(trunc)
            else:
                still_live.append(i)
        live = still_live
    return [
        EpisodeResult(
            seed=seeds[i],
            task=infos[i]["task"],
            prompt=infos[i]["text"],
            completions=tuple(completions[i]),
            reward=rewards[i],
            verdicts=tuple(verdicts[i]),
            trajectory=envs[i].unwrapped.trajectory,
            truncated=truncated[i],
        )
        for i in range(len(envs))
    ]
