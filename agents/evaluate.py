"""Held-out evaluation of a model on a task: mean reward, pass@1 and unbiased pass@k.

Tasks come from env seeds starting at `EVAL_SEED_OFFSET`, far from the seeds training draws
from, so procedural tasks are held out (dataset tasks sample rows, so overlap there is possible
unless a held-out split is passed as `data_files`). Each task is played `samples` times in one
group; pass@k uses the unbiased estimator 1 - C(n-c, k) / C(n, k). This module measures; it
never trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Any

import numpy as np

from llmenv.agents.policy import HFPolicy, SamplingParams
from llmenv.agents.rollout import rollout

EVAL_SEED_OFFSET = 2**40


@dataclass(frozen=True)
class EvalResult:
    """Scores over `tasks` held-out tasks with `samples` completions each."""

    task: str
    tasks: int
    samples: int
    mean_reward: float
    pass_at_1: float
    pass_at_k: dict[int, float]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased probability that at least one of k draws (from n samples, c correct) is correct."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def evaluate(
    task: str,
    model: Any,
    tokenizer: Any,
    *,
    n: int = 32,
    samples: int = 1,
    ks: tuple[int, ...] = (1,),
    max_new_tokens: int = 128,
    temperature: float | None = None,
    batch_size: int = 16,
    seed_offset: int = EVAL_SEED_OFFSET,
    task_params: dict[str, Any] | None = None,
) -> EvalResult:
    """Play `n` held-out tasks `samples` times each; greedy when samples == 1 unless temperature is given."""
    from llmenv.vector import VectorLLMEnv

    temperature = (0.0 if samples == 1 else 1.0) if temperature is None else temperature
    policy = HFPolicy(model, tokenizer, batch_size=batch_size)
    groups_per_batch = max(1, batch_size // samples)
    rewards, correct = [], []
    for start in range(0, n, groups_per_batch):
        count = min(groups_per_batch, n - start)
        env = VectorLLMEnv(task, count * samples, tokenizer, group_size=samples, autoreset=False, **(task_params or {}))
        sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed_offset + start)
        episodes = rollout(env, policy, sampling, seed=seed_offset + start * samples)
        for group in range(count):
            members = episodes[group * samples : (group + 1) * samples]
            rewards.append(np.mean([e.reward for e in members]))
            correct.append(sum(1 for e in members if e.verdicts[-1].passed))
    return EvalResult(
        task=task,
        tasks=n,
        samples=samples,
        mean_reward=float(np.mean(rewards)),
        pass_at_1=float(np.mean([c / samples for c in correct])),
        pass_at_k={k: float(np.mean([pass_at_k(samples, c, k) for c in correct])) for k in ks if k <= samples},
    )
