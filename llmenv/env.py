"""`LLMEnv`: a single-turn, token-in/token-out Gymnasium environment over a task source and a verifier.

`reset` draws a task, renders its prompt through the tokenizer's chat template and returns the
prompt token ids; `step` takes the token ids the policy generated, decodes them (never
re-encodes), asks the verifier for a `Verdict` and ends the episode. The trajectory keeps the
exact tokens with a loss mask that is 1 on policy tokens only. Multi-turn environments build on
the same pieces (`TokenEpisode`, `validate_action`). Nothing here trains, samples or loads models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from llmenv.chat import ChatCodec, shared_codec
from llmenv.errors import InvalidActionError, ResetNeededError, TaskConfigError
from llmenv.sources import TaskSource, as_source
from llmenv.types import Completion, Message, Task, Trajectory, Turn, Verdict
from llmenv.verifiers.base import VerifierFn, call_verifier


def token_space(vocab_size: int) -> spaces.Sequence:
    """The observation/action space: variable-length 1-D arrays of ids in `[0, vocab_size)`."""
    return spaces.Sequence(spaces.Discrete(vocab_size), stack=True)


def validate_action(action: Any, vocab_size: int) -> np.ndarray:
    """Return `action` as a 1-D int64 array of token ids, or raise InvalidActionError saying why."""
    if isinstance(action, np.ndarray):
        array = action
    elif isinstance(action, (list, tuple)):
        if len(action) == 0:
            return np.zeros(0, dtype=np.int64)
        try:
            array = np.asarray(action)
        except ValueError as exc:  # ragged nested lists
            raise InvalidActionError(f"action must be a flat sequence of token ids; {exc}") from None
    else:
        try:
            import torch  # noqa: PLC0415 - only to accept tensors, torch is already loaded by then
        except ImportError:  # pragma: no cover - torch is a dependency
            is_tensor = False
        else:
            is_tensor = isinstance(action, torch.Tensor)
        if not is_tensor:
            raise InvalidActionError(
                f"action must be token ids (1-D np.ndarray, list of int, or torch tensor) or a str; "
                f"got {type(action).__name__}"
            )
        array = action.detach().cpu().numpy()
    if array.ndim != 1:
        raise InvalidActionError(
            f"action must be 1-D token ids, got an array of shape {array.shape}; pass one sequence per step"
        )
    if array.dtype.kind not in "iu":
        if array.size == 0:
            return np.zeros(0, dtype=np.int64)
        raise InvalidActionError(f"action must hold integer token ids, got dtype {array.dtype}")
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise InvalidActionError(f"token id {bad} is outside the vocabulary [0, {vocab_size})")
    return array.astype(np.int64, copy=False)


@dataclass(frozen=True)
class PendingStep:
    """A validated, decoded action waiting for its verdict (lets a vector env verify a batch at once)."""

    action_tokens: np.ndarray
    completion: str
    finished: bool
    """The action ends with a stop token (EOS or the template's end of turn)."""
    needs_verdict: bool


def missing_verdict(pending: PendingStep, verdict: Verdict | None) -> Verdict | None:
    """`verdict`, or an error verdict when a turn that needed one got none (never a quiet reward 0)."""
    if verdict is None and pending.needs_verdict:
        return Verdict.failure("no verdict was produced for this turn (a batched verifier skipped it)")
    return verdict


def step_token_positions(codec: ChatCodec, action_tokens: np.ndarray, ends: Sequence[int]) -> list[int]:
    """For each character offset in `ends`, the index in `action_tokens` of the token holding the character before it.

    Exact without re-tokenising: the completion's text is `codec.decode(action_tokens)`, and a binary
    search finds the shortest token prefix whose decoded text already holds the first `end` characters
    (a prefix cut inside a multi-byte character decodes differently and does not count). Offsets past
    the text map to the last token.
    """
    text = codec.decode(action_tokens)
    positions = []
    for end in ends:
        target = text[: min(end, len(text))]
        low, high = 1, len(action_tokens)  # the answer k (tokens needed) lies in [low, high]
        while low < high:
            middle = (low + high) // 2
            if codec.decode(action_tokens[:middle]).startswith(target):
                high = middle
            else:
                low = middle + 1
        positions.append(low - 1)
    return positions


class TokenEpisode:
    """The growing token record of one episode: spans of prompt, policy and env tokens, and step rewards."""

    def __init__(self, prompt_tokens: np.ndarray) -> None:
        self.chunks: list[np.ndarray] = [prompt_tokens]
        self.turns: list[Turn] = [Turn("prompt", 0, len(prompt_tokens))]
        self.length = len(prompt_tokens)
        self.rewards: list[float] = []
        self.steps: list[tuple[int, float]] = []
        """(index into the episode's tokens, score) of each scored reasoning step."""

    def append(
        self, role: str, tokens: np.ndarray, reward: float | None = None, steps: Sequence[tuple[int, float]] = ()
    ) -> None:
        """Add a span of tokens produced by `role` ("policy" or "env"); `steps` are (index in `tokens`, score)."""
        for index, score in steps:
            self.steps.append((self.length + index, score))
        self.chunks.append(tokens)
        self.turns.append(Turn(role, self.length, self.length + len(tokens), reward))
        self.length += len(tokens)
        if role == "policy":
            self.rewards.append(0.0 if reward is None else reward)

    def tokens(self) -> np.ndarray:
        """All tokens so far, in order."""
        return np.concatenate(self.chunks) if len(self.chunks) > 1 else self.chunks[0]

    def trajectory(self) -> Trajectory:
        """A frozen snapshot with the loss mask (1 exactly on policy tokens)."""
        mask = np.zeros(self.length, dtype=np.int8)
        for turn in self.turns:
            if turn.role == "policy":
                mask[turn.start : turn.end] = 1
        token_rewards = None
        if self.steps:
            token_rewards = np.zeros(self.length, dtype=np.float32)
            for index, score in self.steps:
                token_rewards[index] += score
        return Trajectory(
            tokens=self.tokens(),
            loss_mask=mask,
            turns=tuple(self.turns),
            rewards=tuple(self.rewards),
            token_rewards=token_rewards,
            step_ends=tuple(index for index, _ in self.steps),
        )


def verdict_steps(codec: ChatCodec, action_tokens: np.ndarray, verdict: Verdict | None) -> list[tuple[int, float]]:
    """A verdict's step scores as (index in `action_tokens`, score): each at its step's last token (none if empty)."""
    if verdict is None or not verdict.steps or not len(action_tokens):
        return []
    positions = step_token_positions(codec, action_tokens, [step.end for step in verdict.steps])
    return [(position, step.score) for position, step in zip(positions, verdict.steps)]


class LLMEnv(gym.Env[np.ndarray, np.ndarray]):
    """One prompt, one completion, one verdict.

    Args:
        source: the tasks (a `TaskSource`, a list of `Task`, or a callable `(rng) -> Task`).
        verifier: `(completion, task) -> Verdict | float | bool`.
        tokenizer: a transformers tokenizer, a local path, a hub id or `smollm2-135m`.
        task_id: the registered id, reported in `info["task_id"]`.
        system_prompt: prepended as a system message when the task's prompt has none.
        verifier_timeout_s: hard bound for verifiers that do not bound themselves.
        chat_template: overrides the tokenizer's template (Jinja source).
        render_mode: `"ansi"` returns the episode's text from `render()`.
    """

    metadata = {"render_modes": ["ansi"]}
    ENV_KWARGS: ClassVar[frozenset[str]] = frozenset(
        {"system_prompt", "verifier_timeout_s", "chat_template", "render_mode"}
    )
    """Keywords of `make` that configure this env class; every other keyword is a task parameter."""

    def __init__(
        self,
        source: TaskSource | Sequence[Task] | Callable[..., Task],
        verifier: VerifierFn,
        tokenizer: Any,
        *,
        task_id: str = "llmenv/custom-v0",
        system_prompt: str | None = None,
        verifier_timeout_s: float | None = 30.0,
        chat_template: str | None = None,
        render_mode: str | None = None,
    ) -> None:
        if not callable(verifier):
            raise TaskConfigError(
                f"verifier must be callable (completion, task) -> Verdict, got {type(verifier).__name__}"
            )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise TaskConfigError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        if isinstance(tokenizer, (str, bytes)) or hasattr(tokenizer, "__fspath__"):
            from llmenv.models import load_tokenizer  # noqa: PLC0415 - loads transformers models lazily

            tokenizer = load_tokenizer(tokenizer)
        self.source = as_source(source)
        self.verifier = verifier
        self.codec = shared_codec(tokenizer, chat_template=chat_template)
        self.tokenizer = tokenizer
        self.task_id = task_id
        self.system_prompt = system_prompt
        self.verifier_timeout_s = verifier_timeout_s
        self.render_mode = render_mode
        # gymnasium types every Sequence space as Space[tuple | Any]; with stack=True its elements are arrays
        self.observation_space = token_space(self.codec.vocab_size)  # type: ignore[assignment]
        self.action_space = token_space(self.codec.vocab_size)  # type: ignore[assignment]
        self.task: Task | None = None
        self._episode: TokenEpisode | None = None
        self._messages: list[Message] = []
        """The conversation so far as messages (a multi-turn env extends it each turn)."""
        self._done = True

    @property
    def trajectory(self) -> Trajectory:
        """The current (or last) episode's exact tokens, loss mask, turns and rewards."""
        if self._episode is None:
            raise ResetNeededError("there is no trajectory before the first reset(); call env.reset() first")
        return self._episode.trajectory()

    def reset(
        self, *, seed: int | None = None, options: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; `options` may pin the task with `{"task": Task}` or `{"index": i}`."""
        super().reset(seed=seed)
        self.task = self._choose_task(options or {})
        messages = self.prompt_messages(self.task)
        text, obs = self.codec.render_and_encode(messages)
        self._episode = TokenEpisode(obs)
        self._messages = list(messages)
        self._done = False
        return obs, {"task_id": self.task_id, "task": self.task, "messages": messages, "text": text}

    def prompt_messages(self, task: Task) -> list[Message]:
        """The messages the episode starts with: the task's prompt, with `system_prompt` when set."""
        return task.messages(self.system_prompt)

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Score the generated tokens; the episode ends (terminated) after one step."""
        pending = self.prepare_step(action)
        verdict = self.verify(pending.completion) if pending.needs_verdict else None
        return self.complete_step(pending, verdict)

    def prepare_step(self, action: Any) -> PendingStep:
        """Validate and decode an action without changing the episode (step = prepare, verify, complete)."""
        if self._done or self._episode is None or self.task is None:
            raise ResetNeededError(
                "step() called before reset()"
                if self._episode is None
                else "step() called after the episode ended; call env.reset() to start a new one"
            )
        if isinstance(action, str):
            action_tokens = np.asarray(self.codec.encode_text(action), dtype=np.int64)
        else:
            action_tokens = validate_action(action, self.codec.vocab_size)
        finished = bool(len(action_tokens)) and int(action_tokens[-1]) in self.codec.stop_token_ids
        completion = Completion(
            self.codec.decode(action_tokens),
            tokens=np.concatenate([*self._episode.chunks, action_tokens]),
            action_start=self._episode.length,
            messages=self._messages,
            codec_key=self.codec.codec_key,
        )
        return PendingStep(action_tokens, completion, finished, needs_verdict=True)

    def verify(self, completion: str) -> Verdict:
        """The verifier's Verdict on `completion` for the current task (never raises for verifier bugs)."""
        assert self.task is not None
        return call_verifier(self.verifier, completion, self.task, timeout_s=self.verifier_timeout_s)

    def complete_step(
        self, pending: PendingStep, verdict: Verdict | None
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Record the action and its verdict and end the episode."""
        assert self._episode is not None
        verdict = missing_verdict(pending, verdict)
        assert verdict is not None
        steps = verdict_steps(self.codec, pending.action_tokens, verdict)
        self._episode.append("policy", pending.action_tokens, verdict.reward, steps)
        self._done = True
        return self._episode.tokens(), verdict.reward, True, False, self._step_info(pending, verdict)

    def _step_info(self, pending: PendingStep, verdict: Verdict) -> dict[str, Any]:
        info = {
            "task_id": self.task_id,
            "task": self.task,
            "completion": pending.completion,
            "verdict": verdict,
            "reward_parts": dict(verdict.parts),
            "finished": pending.finished,
        }
        if verdict.error is not None:
            info["error"] = verdict.error
        return info

    def render(self) -> str | None:
        """In `ansi` mode, the episode so far as text (special tokens kept)."""
        if self.render_mode != "ansi" or self._episode is None:
            return None
        return self.codec.decode(self._episode.tokens(), skip_special_tokens=False)

    def _choose_task(self, options: Mapping[str, Any]) -> Task:
        unknown = set(options) - {"task", "index"}
        if unknown:
            raise TaskConfigError(f"unknown reset option(s) {sorted(unknown)}; expected 'task' or 'index'")
        if "task" in options:
            task = options["task"]
            if not isinstance(task, Task):
                raise TaskConfigError(f"options['task'] must be an llmenv.Task, got {type(task).__name__}")
            return task
        if "index" in options:
            return self.source.get(int(options["index"]))
        return self.source.sample(self.np_random)
