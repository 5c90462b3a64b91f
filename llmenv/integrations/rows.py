"""What every integration shares: a registered task's problems as plain rows, and the Task carried in them as JSON.

Another trainer sees a task as dataset rows: the prompt messages (the env's system prompt included, so its
own chat template renders what llmenv's env would) plus the whole `Task` as a JSON string, from which the
reward side rebuilds exactly the task its verifier expects (code tasks keep their tests and entry point).
Rows are the tasks `env.reset(seed=seed + i)` draws, so a training range and a held-out range of seeds
never overlap, as in llmenv's own learners.
"""

from __future__ import annotations

import json
from typing import Any

from gymnasium.utils import seeding

from llmenv.errors import DataError, TaskConfigError
from llmenv.registry import TaskSpec, spec, task_source
from llmenv.types import Task


def task_to_json(task: Task) -> str:
    """The Task as a JSON object string `{prompt, answer, tests, meta}` (DataError if a field is not JSON)."""
    try:
        return json.dumps({"prompt": task.messages(), "answer": task.answer, "tests": task.tests,
                           "meta": dict(task.meta)})  # fmt: skip
    except TypeError as exc:
        raise DataError(f"task {task.prompt!r:.60} cannot be exported: its tests or meta are not JSON ({exc})") from exc


def task_from_json(text: str) -> Task:
    """The Task `task_to_json` wrote."""
    fields = json.loads(text)
    return Task(fields["prompt"], answer=fields["answer"], tests=fields["tests"], meta=fields["meta"])


def single_turn_spec(task_id: str, trainer: str) -> TaskSpec:
    """The registered spec of a single-turn task (TaskConfigError naming `trainer` for dialogue and tool tasks)."""
    task_spec = spec(task_id)
    if task_spec.env != "single_turn":
        raise TaskConfigError(
            f"`{task_spec.task_id}` is a {task_spec.env} task; {trainer}'s reward function scores one response, so "
            "only single-turn tasks export (train multi-turn ones with `llmenv train`)"
        )
    return task_spec


def draw_tasks(task_spec: TaskSpec, n: int, *, seed: int = 0, **params: Any) -> list[Task]:
    """The tasks `env.reset(seed=seed + i)` draws, i < n, with the env's system prompt in their messages."""
    if n < 1:
        raise TaskConfigError(f"n must be at least 1, got {n}")
    source, env_kwargs = task_source(task_spec, params)
    system_prompt = env_kwargs.get("system_prompt")
    tasks = []
    for index in range(n):
        rng, _ = seeding.np_random(seed + index)  # the generator env.reset(seed=seed + index) samples with
        task = source.sample(rng)
        tasks.append(Task(task.messages(system_prompt), answer=task.answer, tests=task.tests, meta=task.meta))
    return tasks
