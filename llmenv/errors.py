"""Every exception llmenv raises on purpose, as one named hierarchy.

Each message says what was wrong (the actual value) and what was expected, so that a user
reading a traceback knows the fix without opening the source. Nothing here is caught and
turned into a reward: verifier failures travel on the `Verdict` instead (see verifiers.base).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LLMEnvError(Exception):
    """Base class of every error llmenv raises on purpose."""


class InvalidActionError(LLMEnvError, ValueError):
    """`env.step` got an action that is not a 1-D sequence of token ids in `[0, vocab_size)`."""


class ResetNeededError(LLMEnvError, RuntimeError):
    """`env.step` was called before `env.reset` or after the episode ended."""


class UnknownTaskError(LLMEnvError, LookupError):
    """A task id that is not registered; the message suggests the closest registered ids."""

    def __init__(self, task_id: str, known: Iterable[str]) -> None:
        known = sorted(known)
        close = difflib.get_close_matches(task_id, known, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(f'`{c}`' for c in close)}?" if close else ""
        listing = "" if close else f" Registered tasks: {', '.join(known) or '(none)'}."
        super().__init__(f"Task `{task_id}` doesn't exist.{hint}{listing}")
        self.task_id = task_id
        self.suggestions = close

    def __str__(self) -> str:  # LookupError/KeyError would quote the message otherwise
        return str(self.args[0])


class RegistrationError(LLMEnvError, ValueError):
    """`register_task` got a bad id, source, verifier or env kind."""


class TaskConfigError(LLMEnvError, ValueError):
    """A task's source or parameters are unusable (unknown parameter, empty dataset, bad row)."""


class DatasetUnavailableError(LLMEnvError, RuntimeError):
    """A dataset-backed task could not load its data (offline hub, missing local file)."""


class TokenizerError(LLMEnvError, ValueError):
    """A tokenizer could not be resolved or cannot render chat messages."""


class ModelNotFoundError(LLMEnvError, FileNotFoundError):
    """A model name, path or hub id could not be resolved to weights."""


class VerifierError(LLMEnvError, RuntimeError):
    """A verifier was misconfigured (raised at construction, never from inside a reward call)."""


class ConfigError(LLMEnvError, ValueError):
    """A learner's or command's configuration cannot work (out-of-range value, unknown choice, no CUDA)."""


class DataError(ConfigError):
    """A learner's `--data` file or one of its rows does not have the expected form (says where and what)."""


class CheckpointError(LLMEnvError, RuntimeError):
    """A checkpoint to resume from is missing, incomplete or does not match the model."""


class ExpressionError(LLMEnvError, ValueError):
    """An arithmetic expression `llmenv.arith.evaluate` refuses: bad syntax, something other than
    arithmetic, a bound exceeded, or a value with no exact or real answer (division by zero, a
    negative number to a fractional power)."""
