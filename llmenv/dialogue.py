"""`DialogueEnv`: multi-turn, token-exact episodes where the environment answers between policy turns.

Each `step(tokens)` appends the policy's tokens, asks a responder hook for the environment's
reply (a scripted user, a game, a checker giving feedback, tool results), and appends the reply
as the exact text the chat template inserts after an assistant turn, tokenized once and masked
0, followed by the generation prompt. The next observation is always the previous observation
plus the action tokens plus these env tokens, so a learner trains on exactly what was sampled.
When an action was cut before its end-of-turn token, the env supplies that token (mask 0).
`max_turns` and `max_context_tokens` end an episode by truncation, the responder by
termination. This module orchestrates turns; what a reply says is the responder's business.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, SupportsFloat

import numpy as np

from llmenv.env import LLMEnv, PendingStep, missing_verdict, verdict_steps
from llmenv.errors import TaskConfigError
from llmenv.types import Message, Task, Verdict


@dataclass(frozen=True)
class EnvReply:
    """What the environment says after a policy turn."""

    messages: Sequence[Message] = ()
    """Messages to append (role "user", "tool", ...); ignored when the episode ends."""
    reward: float | None = None
    """This turn's reward; None means the verdict's reward (0 when the turn was not verified)."""
    done: bool = False
    """End the episode (terminated)."""
    reason: str = ""
    """A name for why the episode ended (e.g. "solved", "gave_up"), reported as info["stop_reason"]."""
    info: Mapping[str, Any] = field(default_factory=dict)
    """Extra values merged into the step's info."""


@dataclass(frozen=True)
class TurnContext:
    """What a responder sees of the turn it answers."""

    task: Task
    completion: str
    verdict: Verdict | None
    """The verifier's verdict on this turn (None when the env chose not to verify it)."""
    turn: int
    """1 for the first policy turn."""
    messages: Sequence[Message]
    """The conversation so far, ending with this turn's assistant message."""
    finished: bool
    """The action ended with a stop token (False: it was cut at the length limit)."""
    state: dict[str, Any]
    """Scratch space that lives for one episode (attempt counters, game state)."""


Responder = Callable[[TurnContext], EnvReply]


def end_when_passed(feedback: str = "That is not correct. Try again.") -> Responder:
    """A responder that ends the episode when the verdict passed and otherwise replies `feedback`."""

    def respond(ctx: TurnContext) -> EnvReply:
        if ctx.verdict is not None and ctx.verdict.passed:
            return EnvReply(done=True, reason="solved")
        return EnvReply(messages=[{"role": "user", "content": feedback}])

    return respond


class DialogueEnv(LLMEnv):
    """A conversation of up to `max_turns` policy turns with environment replies in between.

    Args (beyond LLMEnv's):
        responder: `(TurnContext) -> EnvReply`, called after every policy turn.
        max_turns: policy turns before the episode is truncated (stop_reason "max_turns").
        max_context_tokens: truncate when the context grows past this many tokens.
        verify_every_turn: run the verifier on every turn (else the subclass decides per turn).
    """

    ENV_KWARGS: ClassVar[frozenset[str]] = LLMEnv.ENV_KWARGS | {
        "responder",
        "max_turns",
        "max_context_tokens",
        "verify_every_turn",
    }

    def __init__(
        self,
        source: Any,
        verifier: Callable[[str, Task], Any],
        tokenizer: Any,
        *,
        responder: Responder,
        max_turns: int = 4,
        max_context_tokens: int | None = None,
        verify_every_turn: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(source, verifier, tokenizer, **kwargs)
        if not callable(responder):
            raise TaskConfigError(
                f"responder must be callable (TurnContext) -> EnvReply, got {type(responder).__name__}"
            )
        if max_turns < 1:
            raise TaskConfigError(f"max_turns must be >= 1, got {max_turns}")
        if max_context_tokens is not None and max_context_tokens < 1:
            raise TaskConfigError(f"max_context_tokens must be >= 1 or None, got {max_context_tokens}")
        self.responder = responder
        self.max_turns = max_turns
        self.max_context_tokens = max_context_tokens
        self.verify_every_turn = verify_every_turn
        self._turn = 0
        self._state: dict[str, Any] = {}

    def reset(
        self, *, seed: int | None = None, options: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a conversation with the task's prompt."""
        obs, info = super().reset(seed=seed, options=options)
        self._turn = 0
        self._state = {}
        return obs, info

    def prepare_step(self, action: Any) -> PendingStep:
        """Validate and decode; whether the turn is verified is `verify_every_turn` (or a subclass's call)."""
        pending = super().prepare_step(action)
        if self.verify_every_turn:
            return pending
        return PendingStep(pending.action_tokens, pending.completion, pending.finished, self.needs_verdict(pending))

    def needs_verdict(self, pending: PendingStep) -> bool:
        """Whether this turn is scored by the verifier (subclasses decide; e.g. not for tool calls)."""
        return True

    def complete_step(
        self, pending: PendingStep, verdict: Verdict | None
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Record the turn, ask the responder, and append its reply unless the episode ended."""
        assert self._episode is not None and self.task is not None
        verdict = missing_verdict(pending, verdict)
        self._turn += 1
        history = [*self._messages, Message(role="assistant", content=pending.completion)]
        reply = self.responder(
            TurnContext(self.task, pending.completion, verdict, self._turn, history, pending.finished, self._state)
        )
        if not isinstance(reply, EnvReply):
            raise TaskConfigError(f"responder must return an EnvReply, got {type(reply).__name__}")
        reward = reply.reward if reply.reward is not None else (verdict.reward if verdict is not None else 0.0)
        steps = verdict_steps(self.codec, pending.action_tokens, verdict)
        self._episode.append("policy", pending.action_tokens, float(reward), steps)
        terminated, truncated, stop_reason = reply.done, False, reply.reason or ("done" if reply.done else "")
        if not terminated:
            if self._turn >= self.max_turns:
                truncated, stop_reason = True, "max_turns"
            else:
                env_tokens = self._env_tokens(history, list(reply.messages), pending)
                self._episode.append("env", env_tokens)
                self._messages = [*history, *reply.messages]
                if self.max_context_tokens is not None and self._episode.length > self.max_context_tokens:
                    truncated, stop_reason = True, "max_context_tokens"
        self._done = terminated or truncated
        turn_verdict = verdict if verdict is not None else Verdict(reward=reward, parts={"reward": reward})
        info = self._step_info(pending, turn_verdict)
        info.update(reply.info)
        info["turn"] = self._turn
        info["env_messages"] = list(reply.messages)
        if self._done:
            info["stop_reason"] = stop_reason
        return self._episode.tokens(), float(reward), terminated, truncated, info

    def _env_tokens(self, history: list[Message], new_messages: list[Message], pending: PendingStep) -> np.ndarray:
        """Token ids of everything the template puts between this action and the next generation."""
        text = self.codec.continuation(history, new_messages)
        if pending.finished:
            # the policy already produced the end-of-turn token; keep only what follows it
            stop_text = self.codec.decode(pending.action_tokens[-1:], skip_special_tokens=False)
            if text.startswith(stop_text):
                text = text[len(stop_text) :]
        return np.asarray(self.codec.encode_text(text), dtype=np.int64)
