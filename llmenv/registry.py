"""The task registry: `register_task`, `make`, `list_tasks`, Gymnasium registration and plugins.

A task is a source of `Task`s plus a verifier plus an environment kind. Registering one also
registers it with Gymnasium, so `gymnasium.make("llmenv/<name>", tokenizer=...)` works, and
third-party packages add tasks through the `llmenv.tasks` entry-point group (each entry point
names a module to import or a zero-argument function to call). This module only records and
builds; the environments themselves live in env.py and the built-in tasks in tasks/.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import gymnasium as gym

from llmenv.dialogue import DialogueEnv
from llmenv.env import LLMEnv
from llmenv.errors import RegistrationError, UnknownTaskError
from llmenv.sources import TaskSource, as_source
from llmenv.tool_env import ToolEnv
from llmenv.types import Task

NAMESPACE = "llmenv"
ENTRY_POINT_GROUP = "llmenv.tasks"

# Each env class lists the keywords of make() that configure it (`ENV_KWARGS`); every other keyword
# goes to the task source (generator parameters such as `digits`, or `data_files` for datasets).
ENV_KINDS: dict[str, type[LLMEnv]] = {"single_turn": LLMEnv, "dialogue": DialogueEnv, "tool": ToolEnv}

_ID_PATTERN = re.compile(r"^(?:[\w.-]+/)?[\w.-]+-v\d+$")


@dataclass(frozen=True)
class TaskSpec:
    """Everything needed to build a registered task's environment."""

    task_id: str
    source: Any
    verifier: Callable[[str, Task], Any]
    env: str = "single_turn"
    row_to_task: Callable[[Mapping[str, Any]], Task] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    pass_threshold: float = 1.0
    """A verdict without `passed` (a float verifier's) counts as solved when its reward is at least this."""
    step_data: Callable[..., list[dict[str, Any]]] | None = None
    """`(rng, n, **params) -> rows {prompt, completions: [step, ...], labels: [bool, ...]}`: step-labelled
    solutions for `llmenv train prm --task` (None: the task has none)."""


_TASKS: dict[str, TaskSpec] = {}


def _full_id(task_id: str) -> str:
    return task_id if "/" in task_id else f"{NAMESPACE}/{task_id}"


def register_env_kind(name: str, env_class: type[LLMEnv]) -> None:
    """Make an environment class available to `register_task(env=name)`."""
    ENV_KINDS[name] = env_class


def register_task(
    task_id: str,
    *,
    source: Any,
    verifier: Callable[[str, Task], Any],
    env: str = "single_turn",
    row_to_task: Callable[[Mapping[str, Any]], Task] | None = None,
    description: str = "",
    pass_threshold: float = 1.0,
    step_data: Callable[..., list[dict[str, Any]]] | None = None,
    replace: bool = False,
    **defaults: Any,
) -> str:
    """Register a task (and its Gymnasium id); return the full id, e.g. `llmenv/arith-v0`.

    `source` is a sequence of `Task`, a callable `(rng, **params) -> Task`, a `HubDataset`, or a
    `datasets.Dataset` together with `row_to_task`. `defaults` are keyword defaults for `make`.
    `pass_threshold` is the pass rule of verdicts that do not say `passed` (float verifiers): solved when
    reward >= pass_threshold; evaluation's pass@k and accuracy read it. `step_data(rng, n, **params)`
    gives step-labelled solutions for process-reward-model training (`llmenv train prm --task`).
    """
    full_id = _full_id(task_id)
    if not _ID_PATTERN.match(full_id):
        raise RegistrationError(f"task id {task_id!r} must look like 'name-v0' or 'namespace/name-v0'")
    if full_id in _TASKS and not replace:
        raise RegistrationError(f"task `{full_id}` is already registered; pass replace=True to override it")
    if not callable(verifier):
        raise RegistrationError(f"verifier of `{full_id}` must be callable (completion, task) -> Verdict | float")
    if env not in ENV_KINDS:
        raise RegistrationError(f"unknown env kind {env!r} for `{full_id}`; known kinds: {sorted(ENV_KINDS)}")
    if row_to_task is None and not (
        callable(source) or hasattr(source, "__iter__") or hasattr(source, "load") or hasattr(source, "sample")
    ):
        raise RegistrationError(
            f"source of `{full_id}` must be a list of Task, a callable (rng) -> Task, a HubDataset, "
            f"or a datasets.Dataset with row_to_task; got {type(source).__name__}"
        )
    if not isinstance(pass_threshold, (int, float)) or not math.isfinite(pass_threshold):
        raise RegistrationError(f"pass_threshold of `{full_id}` must be a finite number, got {pass_threshold!r}")
    _TASKS[full_id] = TaskSpec(
        full_id, source, verifier, env, row_to_task, dict(defaults), description, float(pass_threshold), step_data
    )
    if full_id in gym.registry:
        del gym.registry[full_id]
    gym.register(id=full_id, entry_point=_gym_entry_point(full_id))
    return full_id


def _gym_entry_point(full_id: str) -> Callable[..., gym.Env]:
    def build(**kwargs: Any) -> gym.Env:
        return make(full_id, **kwargs)

    build.__name__ = f"make_{full_id.replace('/', '_').replace('-', '_')}"
    return build


def spec(task_id: str) -> TaskSpec:
    """The registered spec of `task_id` (raises UnknownTaskError with suggestions)."""
    load_plugins()
    full_id = _full_id(task_id)
    if full_id not in _TASKS:
        raise UnknownTaskError(task_id if "/" in task_id else full_id, _TASKS)
    return _TASKS[full_id]


def list_tasks() -> list[str]:
    """All registered task ids, sorted."""
    load_plugins()
    return sorted(_TASKS)


def env_builder(
    task_id: str, *, tokenizer: Any, verifier: Callable[[str, Task], Any] | None = None, **kwargs: Any
) -> Callable[[], LLMEnv]:
    """A zero-argument function that builds environments of a task, all sharing one task source.

    The source (a dataset is loaded here) and the arguments are resolved once, so a vector env of N
    copies loads its data once; see `make` for the keywords.
    """
    from llmenv.models import load_tokenizer  # noqa: PLC0415 - models imports transformers' model code

    task_spec = spec(task_id)
    env_class = ENV_KINDS[task_spec.env]
    source, env_kwargs = task_source(task_spec, kwargs)
    if isinstance(tokenizer, (str, bytes)) or hasattr(tokenizer, "__fspath__"):
        tokenizer = load_tokenizer(tokenizer)
    chosen = verifier or task_spec.verifier

    def build() -> LLMEnv:
        return env_class(source, chosen, tokenizer, task_id=task_spec.task_id, **env_kwargs)

    return build


def task_source(task_spec: TaskSpec, kwargs: Mapping[str, Any]) -> tuple[TaskSource, dict[str, Any]]:
    """The task's source built from make()'s keywords (over the registered defaults), and the env's own keywords."""
    env_class = ENV_KINDS[task_spec.env]
    options = {**task_spec.defaults, **kwargs}
    env_kwargs = {k: v for k, v in options.items() if k in env_class.ENV_KWARGS}
    source_params = {k: v for k, v in options.items() if k not in env_class.ENV_KWARGS}
    return as_source(task_spec.source, source_params, task_spec.row_to_task), env_kwargs


def make(task_id: str, *, tokenizer: Any, verifier: Callable[[str, Task], Any] | None = None, **kwargs: Any) -> gym.Env:
    """Build the environment of a registered task (the same as `gymnasium.make`, without wrappers).

    Keywords in the env class's `ENV_KWARGS` configure the environment; `verifier` replaces the task's verifier;
    every other keyword is a task-source parameter (e.g. `digits=3`, `data_files="gsm8k.jsonl"`).
    """
    return env_builder(task_id, tokenizer=tokenizer, verifier=verifier, **kwargs)()


_plugins_loaded = False


def load_plugins() -> None:
    """Import every `llmenv.tasks` entry point once; a broken plugin warns instead of breaking llmenv."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
            if callable(loaded):
                loaded()
        except Exception as exc:  # noqa: BLE001 - a third-party bug must not break every other task
            warnings.warn(f"llmenv task plugin {entry.name!r} ({entry.value}) failed to load: {exc!r}", stacklevel=2)
