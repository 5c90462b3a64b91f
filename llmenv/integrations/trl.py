"""llmenv's tasks in TRL: a `GRPOTrainer` dataset and a reward function that is the task's own verifier.

`grpo_dataset(task_id, n)` is a `datasets.Dataset` with TRL's conversational `prompt` column (the messages
llmenv's env renders, system prompt included) and an `llmenv_task` column holding each `Task` as JSON;
TRL passes every extra column to reward functions, so `reward_function(task_id)` rebuilds the tasks and
grades each completion with the task's verifier (batched through `verify_batch`: shared sandbox runs for
code). Every part of the reward is logged through TRL's `log_metric` (`llmenv/<part>`, the mean over the
batch), with `llmenv/passed` and `llmenv/verifier_error_fraction`; a completion whose verifier crashed or
timed out gets `None`, TRL's "no reward for this sample" (TRL warns and leaves it out of that function's
sum), never a 0 that reads as a wrong answer. Only single-turn tasks export. This module imports nothing of
TRL.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from llmenv.integrations.rows import draw_tasks, single_turn_spec, task_from_json, task_to_json
from llmenv.verifiers.base import call_verifier_batch

TASK_COLUMN = "llmenv_task"
"""The dataset column holding each row's Task as JSON; TRL hands it to reward functions as a keyword."""

RewardFunction = Callable[..., list[float | None]]
"""TRL's custom reward function: `(prompts, completions, **columns) -> one reward (or None) per completion`."""


def grpo_rows(task_id: str, n: int, *, seed: int = 0, **params: Any) -> list[dict[str, Any]]:
    """Rows `{prompt: messages, llmenv_task: json}` for the tasks `env.reset(seed=seed + i)` draws, i < n."""
    task_spec = single_turn_spec(task_id, "TRL")
    return [{"prompt": task.messages(), TASK_COLUMN: task_to_json(task)}
            for task in draw_tasks(task_spec, n, seed=seed, **params)]  # fmt: skip


def grpo_dataset(task_id: str, n: int, *, seed: int = 0, **params: Any) -> Any:
    """`grpo_rows` as a `datasets.Dataset` for `GRPOTrainer(train_dataset=...)`."""
    from datasets import Dataset  # noqa: PLC0415 - datasets is heavy to import; only the dataset needs it

    return Dataset.from_list(grpo_rows(task_id, n, seed=seed, **params))


def completion_text(completion: str | Sequence[dict[str, Any]]) -> str:
    """What the policy wrote: a standard completion as is, a conversational one's last assistant message."""
    if isinstance(completion, str):
        return completion
    replies = [m for m in completion if m.get("role") == "assistant"]
    content = replies[-1].get("content", "") if replies else ""
    return content if isinstance(content, str) else ""


def reward_function(task_id: str) -> RewardFunction:
    """A TRL reward function grading completions with `task_id`'s verifier, named `llmenv_<task>` in TRL's logs."""
    task_spec = single_turn_spec(task_id, "TRL")

    def reward(prompts: Sequence[Any], completions: Sequence[Any], llmenv_task: Sequence[str],
               log_metric: Callable[[str, float], None] | None = None, **_: Any) -> list[float | None]:  # fmt: skip
        tasks = [task_from_json(text) for text in llmenv_task]
        verdicts = call_verifier_batch(task_spec.verifier, [completion_text(c) for c in completions], tasks)
        graded = [v for v in verdicts if v.error is None]
        if log_metric is not None:
            log_metric("llmenv/verifier_error_fraction", (len(verdicts) - len(graded)) / max(len(verdicts), 1))
            if graded:
                log_metric("llmenv/passed", statistics.fmean(v.passes(task_spec.pass_threshold) for v in graded))
                for part in sorted({name for v in graded for name in v.parts}):
                    log_metric(f"llmenv/{part}", statistics.fmean(v.parts.get(part, 0.0) for v in graded))
        return [None if v.error is not None else float(v.reward) for v in verdicts]

    reward.__name__ = "llmenv_" + task_spec.task_id.split("/", 1)[-1]
    return reward
