"""llmenv's tasks in verl: a dataset export in verl's parquet columns and verl's reward-function contract.

verl (volcengine/verl) trains on parquet rows `{data_source, prompt, ability, reward_model: {style,
ground_truth}, extra_info}` and scores each decoded response with `compute_score(data_source=...,
solution_str=..., ground_truth=..., extra_info=...)` (its `custom_reward_function.path/name`; a batch reward
manager calls `compute_score_batch(data_sources=..., solution_strs=..., ground_truths=..., extra_infos=...)`).
`export_parquet` writes a registered task's problems in that form, `data_source` the llmenv task id and
`extra_info["llmenv_task"]` the whole `Task` as JSON (prompt, answer, tests, meta), so the reward side
rebuilds exactly the task the verifier expects; `compute_score` looks the verifier up by `data_source`
and returns verl's dict: `score` (the Verdict's reward), `passed`, and `verifier_error` (1.0 when the
verifier crashed or timed out: such a row is data, never a quiet 0 that looks like a wrong answer).
Rows verl prepared itself (no `llmenv_task`) become `Task(prompt="", answer=ground_truth)`;
`compute_score_for(task_id)` binds a task id when their `data_source` is another name. Only single-turn
tasks export: multi-turn and tool tasks need verl's agent loop, not a reward function. This module imports
nothing of verl.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llmenv.errors import DataError
from llmenv.integrations.rows import draw_tasks, single_turn_spec, task_from_json, task_to_json
from llmenv.registry import spec
from llmenv.types import Task, Verdict
from llmenv.verifiers.base import call_verifier_batch

ABILITY = "llmenv"
"""verl's `ability` column for exported rows (verl only carries it along)."""
TASK_KEY = "llmenv_task"
"""The `extra_info` key holding the exported Task as JSON."""
SCORE_KEYS = ("score", "passed", "verifier_error")
"""The keys of every `compute_score` result: verl collects each key into a list per batch, so they never vary."""


def export_rows(task_id: str, n: int, *, seed: int = 0, split: str = "train", **params: Any) -> list[dict[str, Any]]:
    """verl rows for the tasks `env.reset(seed=seed + i)` draws, i < n (`params`: the task's make() keywords)."""
    task_spec = single_turn_spec(task_id, "verl")
    return [
        {
            "data_source": task_spec.task_id,
            "prompt": task.messages(),
            "ability": ABILITY,
            "reward_model": {"style": "rule", "ground_truth": task.answer or ""},
            "extra_info": {"split": split, "index": index, "seed": seed + index, TASK_KEY: task_to_json(task)},
        }
        for index, task in enumerate(draw_tasks(task_spec, n, seed=seed, **params))
    ]


def export_parquet(
    task_id: str, path: str | Path, n: int, *, seed: int = 0, split: str = "train", **params: Any
) -> Path:
    """Write `export_rows(task_id, n, ...)` to a parquet file verl's `data.train_files` reads; the path."""
    from datasets import Dataset  # noqa: PLC0415 - datasets is heavy to import; only the export needs it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(export_rows(task_id, n, seed=seed, split=split, **params)).to_parquet(str(path))
    return path


def row_task(ground_truth: Any, extra_info: Mapping[str, Any] | None) -> Task:
    """The Task of a verl row: the exported one, else the ground truth as the answer."""
    exported = (extra_info or {}).get(TASK_KEY)
    if exported:
        return task_from_json(exported)
    return Task("", answer=None if ground_truth is None else str(ground_truth))


def score_of(verdict: Verdict, pass_threshold: float = 1.0) -> dict[str, float]:
    """verl's result dict for a verdict (the keys are always SCORE_KEYS; `passed` by `Verdict.passes`)."""
    return {"score": float(verdict.reward), "passed": float(verdict.error is None and verdict.passes(pass_threshold)),
            "verifier_error": float(verdict.error is not None)}  # fmt: skip


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None, **_: Any
) -> dict[str, float]:
    """verl's reward function: the verdict of `data_source`'s verifier on `solution_str` (extra kwargs ignored)."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info])[0]


def compute_score_batch(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
    **_: Any,
) -> list[dict[str, float]]:
    """verl's batch reward function: one result per response, each task's rows through its `verify_batch`."""
    infos = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
    if not len(data_sources) == len(solution_strs) == len(ground_truths) == len(infos):
        raise DataError(
            f"got {len(data_sources)} data sources, {len(solution_strs)} responses, {len(ground_truths)} ground "
            f"truths and {len(infos)} extra infos; expected one of each per response"
        )
    results: list[dict[str, float]] = [{}] * len(solution_strs)
    for source in dict.fromkeys(data_sources):
        rows = [i for i, s in enumerate(data_sources) if s == source]
        tasks = [row_task(ground_truths[i], infos[i]) for i in rows]
        task_spec = spec(source)
        verdicts = call_verifier_batch(task_spec.verifier, [solution_strs[i] for i in rows], tasks)
        for i, verdict in zip(rows, verdicts):
            results[i] = score_of(verdict, task_spec.pass_threshold)
    return results


def compute_score_for(task_id: str) -> Callable[..., dict[str, float]]:
    """A verl reward function that scores every row with `task_id`'s verifier, whatever its `data_source`."""
    spec(task_id)  # an unknown id fails here, with suggestions, not at the first reward

    def score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None, **_: Any) -> dict:
        return compute_score(task_id, solution_str, ground_truth, extra_info)

    return score
