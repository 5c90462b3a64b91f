"""Play a policy on a batch of environments until every episode ends, and pack what learners need.

`rollout` steps a `VectorLLMEnv` (built with `autoreset=False`): each round generates for every
live episode in one batched call and steps all of them, so single-turn and multi-turn tasks go
through the same loop. It returns one `Episode` per environment with its exact trajectory and the
sampling log-prob of every policy token. `to_batch` pads episodes into tensors: token ids,
attention and loss masks (1 on policy tokens only), old log-probs, per-token rewards (each turn's
reward at its last policy token), process rewards (each scored step's at its last token), episode
rewards, group ids, which episodes carry a verifier error, the mean of each verifier part and of
turns, tool calls and steps.
`Episode.to_json` is the episode JSONL schema. This module samples and packs; it computes no loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llmenv.agents.policy import Policy, SamplingParams
from llmenv.types import Task, Trajectory, Verdict
from llmenv.vector import VectorLLMEnv


@dataclass(frozen=True)
class Episode:
    """One finished episode."""

    seed: int | None
    group: int
    task: Task
    prompt: str
    completions: tuple[str, ...]
    verdicts: tuple[Verdict, ...]
    trajectory: Trajectory
    logprobs: np.ndarray
    """Sampling log-prob of each trajectory token (0 where loss_mask is 0)."""
    truncated: bool
    """The episode hit max_turns / max_context_tokens."""
    cut: bool
    """The last action was cut at max_new_tokens (no stop token)."""
    tool_calls: int = 0
    """Tool calls the policy made (tool-use tasks)."""
    tool_errors: int = 0
    """Tool calls that failed (unknown tool, bad arguments, a raising or timed-out tool, budget)."""
    stop_reason: str = ""
    """Why a multi-turn episode ended ("solved", "max_turns", ...), empty for single-turn ones."""

    @property
    def reward(self) -> float:
        """The episode's return: the sum of its per-turn rewards."""
        return self.trajectory.total_reward

    @property
    def turns(self) -> int:
        """Policy turns played."""
        return len(self.completions)

    @property
    def error(self) -> str | None:
        """The first verifier error of the episode, if any (such an episode is not trained on)."""
        return next((v.error for v in self.verdicts if v.error is not None), None)

    def passed(self, threshold: float = 1.0) -> bool:
        """Whether the final verdict counts as solved (`Verdict.passes` with the task's pass threshold)."""
        return bool(self.verdicts) and self.verdicts[-1].passes(threshold)

    def to_json(self) -> dict[str, Any]:
        """The episode as one JSON object (the schema of `llmenv rollout --out`; fields in README)."""
        return {
            "seed": self.seed,
            "group": self.group,
            "prompt": self.prompt,
            "answer": self.task.answer,
            "completions": list(self.completions),
            "reward": self.reward,
            "rewards": list(self.trajectory.rewards),
            "passed": self.verdicts[-1].passed if self.verdicts else None,
            "parts": [dict(v.parts) for v in self.verdicts],
            "errors": [v.error for v in self.verdicts],
            "turns": self.turns,
            "tool_calls": self.tool_calls,
            "tool_errors": self.tool_errors,
            "stop_reason": self.stop_reason,
            "truncated": self.truncated,
            "cut": self.cut,
            "tokens": self.trajectory.tokens.tolist(),
            "loss_mask": self.trajectory.loss_mask.tolist(),
        }


@dataclass(frozen=True)
class RolloutBatch:
    """Episodes padded to one length, as tensors (B rows, L tokens)."""

    input_ids: torch.Tensor  # (B, L) long
    attention_mask: torch.Tensor  # (B, L) long
    loss_mask: torch.Tensor  # (B, L) float, 1 on policy tokens
    old_logprobs: torch.Tensor  # (B, L) float, sampling log-probs on policy tokens
    token_rewards: torch.Tensor  # (B, L) float, each turn's (outcome) reward at its last policy token
    process_rewards: torch.Tensor  # (B, L) float, each scored step's process reward at its last policy token
    step_mask: torch.Tensor  # (B, L) bool, where a scored step ends
    rewards: torch.Tensor  # (B,) float, episode returns
    group_ids: torch.Tensor  # (B,) long
    cut: torch.Tensor  # (B,) bool, last action cut at the token limit
    errored: torch.Tensor  # (B,) bool, a verdict of the episode carries a verifier error
    parts: dict[str, float]
    """Mean over episodes of each verifier part of the final verdict."""
    stats: dict[str, float]
    """Per-episode means of what the episodes did: turns, tool calls, tool errors."""
    tasks: tuple[Task, ...] = ()
    """Each row's task (what SPIN's reference answers and a row's metadata come from)."""

    def select(self, rows: torch.Tensor) -> RolloutBatch:
        """The given rows (indices), trimmed to their longest sequence (the batch is right-padded)."""
        width = int(self.attention_mask[rows].sum(1).max())
        return dataclasses.replace(
            self,
            input_ids=self.input_ids[rows, :width],
            attention_mask=self.attention_mask[rows, :width],
            loss_mask=self.loss_mask[rows, :width],
            old_logprobs=self.old_logprobs[rows, :width],
            token_rewards=self.token_rewards[rows, :width],
            process_rewards=self.process_rewards[rows, :width],
            step_mask=self.step_mask[rows, :width],
            rewards=self.rewards[rows],
            group_ids=self.group_ids[rows],
            cut=self.cut[rows],
            errored=self.errored[rows],
            tasks=tuple(self.tasks[i] for i in rows.tolist()) if self.tasks else (),
        )


def rollout(env: VectorLLMEnv, policy: Policy, sampling: SamplingParams, *, seed: int | None = None) -> list[Episode]:
    """Reset `env` with `seed` and play every episode to its end; one Episode per env, in env order."""
    if env.autoreset:
        raise ValueError("rollout needs VectorLLMEnv(..., autoreset=False) so ended episodes are not restarted")
    observations, infos = env.reset(seed=seed)
    n = env.num_envs
    obs = list(observations)
    first_infos = [
        {"task": infos["task"][i], "text": infos["text"][i], "group": int(infos["group"][i])} for i in range(n)
    ]
    live = list(range(n))
    logprob_chunks: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(n)]
    completions: list[list[str]] = [[] for _ in range(n)]
    verdicts: list[list[Verdict]] = [[] for _ in range(n)]
    truncated, cut = [False] * n, [False] * n
    tool_calls, tool_errors, stop_reasons = [0] * n, [0] * n, [""] * n
    while live:
        generations = policy.generate([obs[i].tolist() for i in live], sampling)
        actions: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * n
        for i, generation in zip(live, generations):
            actions[i] = generation.tokens
            logprob_chunks[i].append((len(obs[i]), generation.logprobs))
            cut[i] = not generation.finished
        new_obs, _, terminated, trunc, step_infos = env.step(actions)
        for i in live:
            obs[i] = new_obs[i]
            completions[i].append(step_infos["completion"][i])
            verdicts[i].append(step_infos["verdict"][i])
            truncated[i] = bool(trunc[i])
            if "tool_calls" in step_infos and step_infos["_tool_calls"][i]:  # totals so far (ToolEnv)
                tool_calls[i] = int(step_infos["tool_calls"][i])
                tool_errors[i] = _count_at(step_infos.get("tool_errors", {}), i)
            if "stop_reason" in step_infos and step_infos["_stop_reason"][i]:
                stop_reasons[i] = str(step_infos["stop_reason"][i])
        live = [i for i in live if not (terminated[i] or trunc[i])]
    episodes = []
    for i in range(n):
        trajectory = env.envs[i].trajectory
        logprobs = np.zeros(len(trajectory.tokens), dtype=np.float32)
        for start, chunk in logprob_chunks[i]:
            logprobs[start : start + len(chunk)] = chunk
        episodes.append(
            Episode(
                seed=None if seed is None else seed + i,
                group=first_infos[i]["group"],
                task=first_infos[i]["task"],
                prompt=first_infos[i]["text"],
                completions=tuple(completions[i]),
                verdicts=tuple(verdicts[i]),
                trajectory=trajectory,
                logprobs=logprobs,
                truncated=truncated[i],
                cut=cut[i],
                tool_calls=tool_calls[i],
                tool_errors=tool_errors[i],
                stop_reason=stop_reasons[i],
            )
        )
    return episodes


def _count_at(counts: dict[str, Any], i: int) -> int:
    """Env i's total over a vector info's dict of per-kind count arrays (`_kind` masks say who has one)."""
    return sum(int(values[i]) for kind, values in counts.items() if not kind.startswith("_") and counts[f"_{kind}"][i])


def to_batch(episodes: Sequence[Episode], pad_token_id: int) -> RolloutBatch:
    """Right-pad episodes into a RolloutBatch."""
    width = max(len(e.trajectory.tokens) for e in episodes)
    rows = len(episodes)
    input_ids = torch.full((rows, width), pad_token_id, dtype=torch.long)  # (B, L)
    attention = torch.zeros((rows, width), dtype=torch.long)  # (B, L)
    loss_mask = torch.zeros((rows, width), dtype=torch.float32)  # (B, L)
    old_logprobs = torch.zeros((rows, width), dtype=torch.float32)  # (B, L)
    token_rewards = torch.zeros((rows, width), dtype=torch.float32)  # (B, L)
    process_rewards = torch.zeros((rows, width), dtype=torch.float32)  # (B, L)
    step_mask = torch.zeros((rows, width), dtype=torch.bool)  # (B, L)
    for row, episode in enumerate(episodes):
        length = len(episode.trajectory.tokens)
        input_ids[row, :length] = torch.from_numpy(episode.trajectory.tokens)
        attention[row, :length] = 1
        loss_mask[row, :length] = torch.from_numpy(episode.trajectory.loss_mask.astype(np.float32))
        old_logprobs[row, :length] = torch.from_numpy(episode.logprobs)
        token_rewards[row, :length] = torch.from_numpy(episode.trajectory.reward_per_token(dense=False))
        if episode.trajectory.token_rewards is not None:
            process_rewards[row, :length] = torch.from_numpy(np.asarray(episode.trajectory.token_rewards, np.float32))
            step_mask[row, list(episode.trajectory.step_ends)] = True
    part_values: dict[str, list[float]] = {}
    for episode in episodes:
        for name, value in episode.verdicts[-1].parts.items():
            part_values.setdefault(name, []).append(float(value))
    return RolloutBatch(
        input_ids=input_ids,
        attention_mask=attention,
        loss_mask=loss_mask,
        old_logprobs=old_logprobs,
        token_rewards=token_rewards,
        process_rewards=process_rewards,
        step_mask=step_mask,
        rewards=torch.tensor([e.reward for e in episodes], dtype=torch.float32),  # (B,)
        group_ids=torch.tensor([e.group for e in episodes], dtype=torch.long),  # (B,)
        cut=torch.tensor([e.cut for e in episodes], dtype=torch.bool),  # (B,)
        errored=torch.tensor([e.error is not None for e in episodes], dtype=torch.bool),  # (B,)
        parts={name: float(np.mean(values)) for name, values in part_values.items()},
        stats={
            "turns_mean": float(np.mean([e.turns for e in episodes])),
            "tool_calls_mean": float(np.mean([e.tool_calls for e in episodes])),
            "tool_errors_mean": float(np.mean([e.tool_errors for e in episodes])),
            "steps_mean": float(step_mask.sum(1).float().mean()),
            "step_reward_mean": float(process_rewards[step_mask].mean()) if step_mask.any() else 0.0,
        },
        tasks=tuple(e.task for e in episodes),
    )
