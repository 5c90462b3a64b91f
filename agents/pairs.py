"""Preference pairs from a task: sample completions with a policy, rank them by the verifier, pair right with wrong.

`llmenv pairs --task ID --model M --out FILE` plays `n` prompts `samples` times each (the rollout loop of
`llmenv eval`, sampled at a temperature), then within each prompt pairs every distinct solved completion
(`Episode.passed` with the task's pass threshold) with every distinct unsolved one, up to
`max_per_prompt` pairs, solved first in sample order. Episodes whose verdict carries a verifier error are
left out and counted, never treated as wrong. Each row has the form `llmenv train rm --data` (and the
DPO trainers) read: `prompt` is the conversation the policy saw (the task's system prompt included),
`chosen`/`rejected` the two completions, plus `chosen_reward`, `rejected_reward` and the episode `seed`
for provenance. Only single-turn tasks make pairs (two episodes of a dialogue differ before their last
turn, so they share no prompt). This module builds pairs; it never trains.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from llmenv.agents.rollout import Episode
from llmenv.errors import TaskConfigError
from llmenv.types import Completion

__all__ = ["PairStats", "pairs_from_episodes"]


@dataclass
class PairStats:
    """What pairing found: prompts seen, prompts that gave pairs, and why the others did not."""

    prompts: int = 0
    paired_prompts: int = 0
    all_solved: int = 0
    none_solved: int = 0
    errored_episodes: int = 0
    pairs: int = 0

    def describe(self) -> str:
        """One line for the CLI."""
        return (
            f"{self.pairs} pairs from {self.paired_prompts} of {self.prompts} prompts ({self.all_solved} all solved, "
            f"{self.none_solved} none solved, {self.errored_episodes} episodes with verifier errors left out)"
        )


def pairs_from_episodes(
    episodes: list[Episode], samples: int, *, threshold: float = 1.0, max_per_prompt: int = 4
) -> tuple[list[dict[str, Any]], PairStats]:
    """Pair rows (solved vs unsolved, per prompt) from `play`'s episodes (`samples` consecutive per prompt)."""
    if samples < 2:
        raise TaskConfigError(f"pairs need at least 2 samples per prompt, got {samples}")
    if max_per_prompt < 1:
        raise TaskConfigError(f"max_per_prompt must be >= 1, got {max_per_prompt}")
    stats, rows = PairStats(), []
    for start in range(0, len(episodes), samples):
        group = episodes[start : start + samples]
        stats.prompts += 1
        if any(e.turns != 1 for e in group):
            raise TaskConfigError(
                f"pairs need a single-turn task; an episode of this one took {max(e.turns for e in group)} turns"
            )
        clean = [e for e in group if e.error is None]
        stats.errored_episodes += len(group) - len(clean)
        solved = _distinct([e for e in clean if e.passed(threshold)])
        unsolved = _distinct([e for e in clean if not e.passed(threshold)])
        if not solved or not unsolved:
            stats.all_solved += bool(solved)
            stats.none_solved += not solved
            continue
        stats.paired_prompts += 1
        for chosen, rejected in itertools.islice(itertools.product(solved, unsolved), max_per_prompt):
            completion = chosen.completions[0]
            messages = list(completion.messages) if isinstance(completion, Completion) else chosen.task.messages()
            rows.append(
                {
                    "prompt": [dict(m) for m in messages],
                    "chosen": str(completion),
                    "rejected": str(rejected.completions[0]),
                    "chosen_reward": chosen.reward,
                    "rejected_reward": rejected.reward,
                    "seed": chosen.seed,
                }
            )
    stats.pairs = len(rows)
    return rows, stats


def _distinct(episodes: list[Episode]) -> list[Episode]:
    """The first episode of each distinct completion text, in order."""
    seen: dict[str, Episode] = {}
    for episode in episodes:
        seen.setdefault(str(episode.completions[0]), episode)
    return list(seen.values())
