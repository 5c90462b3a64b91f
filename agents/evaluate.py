"""Playing a model on a task: the one rollout loop behind `llmenv rollout`, `llmenv eval` and the demo.

`play` runs `n` tasks `samples` times each in batches of vector envs and returns every `Episode`;
`evaluate` plays held-out tasks and reports mean reward, pass@1 and unbiased pass@k
(1 - C(n-c, k) / C(n, k)). Held-out tasks come from env seeds starting at `EVAL_SEED_OFFSET`, far
from the seeds training draws from, so procedural tasks do not overlap with training (dataset tasks
sample rows, so overlap there is possible unless a held-out split is passed as `data_files`). A
verdict counts as solved by `Verdict.passes` with the task's `pass_threshold` (float verifiers:
reward >= threshold). This module measures; it never trains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import comb
from typing import Any

import numpy as np

from llmenv.agents.policy import HFPolicy, Policy, SamplingParams
from llmenv.agents.rollout import Episode, rollout
from llmenv.registry import spec
from llmenv.vector import VectorLLMEnv

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
    error_fraction: float = 0.0
    """Share of episodes whose verifier failed (counted as not solved, and reported here)."""


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased probability that at least one of k draws (from n samples, c correct) is correct."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def play(
    task: str,
    policy: Policy,
    tokenizer: Any,
    *,
    n: int,
    samples: int = 1,
    sampling: SamplingParams,
    batch_size: int = 16,
    seed: int = 0,
    task_params: dict[str, Any] | None = None,
    on_batch: Callable[[int], Any] | None = None,
) -> list[Episode]:
    """Play `n` tasks `samples` times each (a group per task); episodes in task order, `samples` per task.

    Task i is drawn from env seed `seed + i * samples`; `on_batch(episodes_done)` is called after each batch.
    """
    groups_per_batch = max(1, batch_size // samples)
    episodes: list[Episode] = []
    for start in range(0, n, groups_per_batch):
        count = min(groups_per_batch, n - start)
        env = VectorLLMEnv(task, count * samples, tokenizer, group_size=samples, autoreset=False, **(task_params or {}))
        batch_sampling = SamplingParams(
            max_new_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=None if sampling.seed is None else sampling.seed + start,
        )
        episodes.extend(rollout(env, policy, batch_sampling, seed=seed + start * samples))
        env.close()
        if on_batch is not None:
            on_batch(len(episodes))
    return episodes


def score(task: str, episodes: list[Episode], samples: int, ks: tuple[int, ...] = (1,)) -> EvalResult:
    """Mean reward, pass@1 and pass@k of episodes that `play` returned (`samples` per task, in order)."""
    threshold = spec(task).pass_threshold
    groups = [episodes[i : i + samples] for i in range(0, len(episodes), samples)]
    correct = [sum(e.passed(threshold) for e in group) for group in groups]
    return EvalResult(
        task=task,
        tasks=len(groups),
        samples=samples,
        mean_reward=float(np.mean([e.reward for e in episodes])),
        pass_at_1=float(np.mean([c / samples for c in correct])),
        pass_at_k={k: float(np.mean([pass_at_k(samples, c, k) for c in correct])) for k in ks if k <= samples},
        error_fraction=float(np.mean([e.error is not None for e in episodes])),
    )


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
    temperature = (0.0 if samples == 1 else 1.0) if temperature is None else temperature
    policy = HFPolicy(model, tokenizer, batch_size=batch_size)
    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed_offset)
    episodes = play(
        task,
        policy,
        tokenizer,
        n=n,
        samples=samples,
        sampling=sampling,
        batch_size=batch_size,
        seed=seed_offset,
        task_params=task_params,
    )
    return score(task, episodes, samples, ks)
