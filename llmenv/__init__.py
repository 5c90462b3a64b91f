"""llmenv: LLM post-training problems as exact token-in/token-out Gymnasium environments.

`import llmenv` registers the built-in tasks with Gymnasium under the `llmenv/` namespace, so
`gymnasium.make("llmenv/arith-v0", tokenizer=...)` works; `llmenv.make` is the same call without
Gymnasium's wrappers.
"""

from __future__ import annotations

from llmenv.env import LLMEnv
from llmenv.errors import LLMEnvError
from llmenv.registry import list_tasks, make, register_env_kind, register_task
from llmenv.sources import HubDataset
from llmenv.types import Completion, Message, StepScore, Task, Trajectory, Turn, Verdict

__all__ = [
    "Completion",
    "HubDataset",
    "LLMEnv",
    "LLMEnvError",
    "Message",
    "StepScore",
    "Task",
    "Trajectory",
    "Turn",
    "Verdict",
    "list_tasks",
    "make",
    "register_env_kind",
    "register_task",
]
__version__ = "0.1.0"


def _register_builtins() -> None:
    from llmenv.tasks import register_builtin_tasks

    register_builtin_tasks()


_register_builtins()
