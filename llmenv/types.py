"""The values that cross module boundaries: tasks, messages, verdicts, turns and trajectories.

They are frozen dataclasses so that an environment, a verifier and a learner can hand them to
each other without defensive copies. This module holds data only: no tokenizer, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np


class Message(TypedDict):
    """One chat message, as chat templates expect it."""

    role: str
    content: str


class FrozenMap(Mapping[str, Any]):
    """A read-only mapping that, unlike `types.MappingProxyType`, pickles and deep-copies.

    Values cross processes (Gymnasium's `AsyncVectorEnv`, multiprocessing, `datasets.map`, Ray),
    so the immutable mappings on `Task` and `Verdict` must survive `pickle` and `copy.deepcopy`.
    """

    __slots__ = ("_data",)
    _data: dict[str, Any]

    def __init__(self, value: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", dict(value or {}))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __repr__(self) -> str:
        return repr(self._data)

    def __eq__(self, other: object) -> bool:
        return dict(self._data) == other if isinstance(other, Mapping) else NotImplemented

    __hash__ = None  # type: ignore[assignment]  # values may be unhashable, like a dict's

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMap, (self._data,))


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return value if isinstance(value, FrozenMap) else FrozenMap(value)


@dataclass(frozen=True)
class Task:
    """One problem: the prompt the policy sees and what the verifier checks against.

    `prompt` is a user string or a list of `{"role", "content"}` messages; `answer` is the
    reference answer (math, arithmetic); `tests` holds code tests; `meta` anything else
    (difficulty, source row id, entry point).
    """

    prompt: str | Sequence[Message]
    answer: str | None = None
    tests: Any = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        prompt: object = self.prompt  # unchecked until here: callers may pass anything
        if isinstance(prompt, str):
            pass
        elif isinstance(prompt, Sequence) and all(
            isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in prompt
        ):
            object.__setattr__(self, "prompt", tuple(dict(m) for m in prompt))
        else:
            raise TypeError(
                "Task.prompt must be a string or a list of {'role': str, 'content': str} messages, "
                f"got {type(self.prompt).__name__}: {self.prompt!r:.200}"
            )
        if self.answer is not None and not isinstance(self.answer, str):
            object.__setattr__(self, "answer", str(self.answer))
        object.__setattr__(self, "meta", _frozen_mapping(self.meta))

    def messages(self, system_prompt: str | None = None) -> list[Message]:
        """The prompt as chat messages, with `system_prompt` prepended when given."""
        if isinstance(self.prompt, str):
            msgs: list[Message] = [{"role": "user", "content": self.prompt}]
        else:
            msgs = [Message(role=m["role"], content=m["content"]) for m in self.prompt]
        if system_prompt is not None and not (msgs and msgs[0]["role"] == "system"):
            msgs.insert(0, {"role": "system", "content": system_prompt})
        return msgs


@dataclass(frozen=True)
class StepScore:
    """A process reward for one reasoning step: where the step ends in the completion, and its score."""

    end: int
    """Character offset in the completion text just past the step's last character (the step is `text[:end]`'s tail)."""
    score: float
    """The step's reward (a PRM's P(correct), or 1/0 from an exact step check)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "end", int(self.end))
        object.__setattr__(self, "score", float(self.score))
        if self.end < 1:
            raise ValueError(f"a step must end after the completion's first character, got end={self.end}")


@dataclass(frozen=True)
class Verdict:
    """What a verifier says of one completion.

    `reward` is the scalar the learner sees; `passed` is the verifier's yes/no when it has one;
    `parts` names every component of the reward; `details` holds what explains it (the
    extracted answer, the reason a format check failed); `error` is set when the verifier
    itself crashed or timed out, so that a failure is never mistaken for a wrong answer.
    `steps` holds per-step process rewards, in order, each with the step's end as a character
    offset in the completion; the env turns them into per-token rewards at each step's last
    policy token (`Trajectory.token_rewards`). Outcome-only verifiers leave it empty.
    """

    reward: float
    passed: bool | None = None
    parts: Mapping[str, float] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    steps: tuple[StepScore, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "reward", float(self.reward))
        object.__setattr__(self, "steps", tuple(self.steps))
        ends = [step.end for step in self.steps]
        if ends != sorted(set(ends)):
            raise ValueError(f"Verdict.steps must end at strictly increasing offsets, got {ends}")
        object.__setattr__(self, "parts", _frozen_mapping(self.parts))
        object.__setattr__(self, "details", _frozen_mapping(self.details))

    @classmethod
    def of(cls, value: Verdict | float | bool, *, name: str = "reward") -> Verdict:
        """Wrap what a verifier returned (a Verdict, a float or a bool) into a Verdict."""
        if isinstance(value, Verdict):
            return value
        if isinstance(value, bool):
            return cls(reward=float(value), passed=value, parts={name: float(value)})
        if isinstance(value, (int, float, np.integer, np.floating)):
            return cls(reward=float(value), parts={name: float(value)})
        raise TypeError(
            f"a verifier must return a Verdict, a float or a bool; got {type(value).__name__}: {value!r:.200}"
        )

    def passes(self, threshold: float = 1.0) -> bool:
        """Whether this verdict counts as solved: `passed` when the verifier said, else `reward >= threshold`.

        Float verifiers leave `passed` None; their pass rule is the task's `pass_threshold` (default 1.0,
        a full reward). A verdict with an error never passes.

        >>> Verdict(0.5).passes(), Verdict(1.0).passes(), Verdict(0.5).passes(0.5), Verdict(1.0, passed=False).passes()
        (False, True, True, False)
        """
        if self.error is not None:
            return False
        return self.passed if self.passed is not None else self.reward >= threshold

    @classmethod
    def failure(cls, error: str, *, name: str = "reward", details: Mapping[str, Any] | None = None) -> Verdict:
        """A verdict for a verifier that crashed or timed out: reward 0, `error` set, `passed` unknown."""
        return cls(reward=0.0, passed=None, parts={name: 0.0}, details=details or {}, error=error)


class Completion(str):
    """A policy turn's text as an environment hands it to its verifier, with the exact tokens it came from.

    It is a `str` (every verifier that reads text works unchanged); verifiers that read tokens (a
    reward model that shares the policy's tokenizer) find the episode here instead of re-encoding it:

    - `tokens`: the episode's tokens up to and including this action (prompt, earlier turns, env
      tokens, then the action), int64, read-only;
    - `action_start`: where the action starts in `tokens`;
    - `messages`: the conversation before this action (system prompt included), as the policy saw it;
    - `codec_key`: identifies the tokenizer, chat template and tools that made `tokens`
      (`ChatCodec.codec_key`); tokens are only meaningful to a model whose codec has the same key.

    A verifier called directly with a plain `str` gets none of these and reads the text.
    """

    tokens: np.ndarray
    action_start: int
    messages: tuple[Message, ...]
    codec_key: str

    def __new__(
        cls, text: str, *, tokens: np.ndarray, action_start: int, messages: Sequence[Message], codec_key: str
    ) -> Completion:
        """`text` carrying its episode tokens (copied read-only), action start, prior messages and codec key."""
        self = super().__new__(cls, text)
        held = np.array(tokens, dtype=np.int64)
        held.flags.writeable = False
        self.tokens, self.action_start = held, int(action_start)
        self.messages, self.codec_key = tuple(messages), codec_key
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return _completion, (str(self), self.tokens, self.action_start, self.messages, self.codec_key)

    @property
    def action_tokens(self) -> np.ndarray:
        """The action's own token ids."""
        return self.tokens[self.action_start :]


def _completion(
    text: str, tokens: np.ndarray, action_start: int, messages: Sequence[Message], codec_key: str
) -> Completion:
    return Completion(text, tokens=tokens, action_start=action_start, messages=messages, codec_key=codec_key)


@dataclass(frozen=True)
class Turn:
    """One span of a trajectory: who produced tokens `[start, end)` and the turn's reward."""

    role: str  # "prompt", "policy" or "env"
    start: int
    end: int
    reward: float | None = None


@dataclass(frozen=True)
class Trajectory:
    """An episode as the learner needs it: exact tokens, which of them the policy produced, rewards.

    `tokens` is the concatenation of prompt, action and environment tokens exactly as the
    policy saw and produced them; `loss_mask[i] == 1` exactly where `tokens[i]` was sampled by
    the policy; `rewards` has one entry per policy turn.
    """

    tokens: np.ndarray
    loss_mask: np.ndarray
    turns: tuple[Turn, ...] = ()
    rewards: tuple[float, ...] = ()
    token_rewards: np.ndarray | None = None
    """Dense per-token rewards (process rewards), same length as `tokens`, 0 off the scored tokens; None if none."""
    step_ends: tuple[int, ...] = ()
    """Indices into `tokens` of the last policy token of each scored step, in order (where `token_rewards` sit)."""

    @property
    def total_reward(self) -> float:
        """The sum of per-turn rewards."""
        return float(sum(self.rewards))

    def reward_per_token(self, *, dense: bool = True) -> np.ndarray:
        """Rewards over `tokens` (float32): each policy turn's reward at its last token, plus the dense ones.

        A policy turn without tokens has its reward placed at the last policy token before it (else the
        first after it), so no turn's reward is lost; `token_rewards`, when present, is added on top
        unless `dense=False` (learners that weigh outcome and process rewards read them apart).
        """
        out = np.zeros(len(self.tokens), dtype=np.float32)
        policy = np.flatnonzero(self.loss_mask)
        for turn in self.turns:
            if turn.role != "policy" or not turn.reward or len(policy) == 0:
                continue
            before = policy[policy < turn.end]
            out[before[-1] if len(before) else policy[0]] += turn.reward
        if dense and self.token_rewards is not None:
            out += np.asarray(self.token_rewards, dtype=np.float32)
        return out

    def action_tokens(self) -> list[np.ndarray]:
        """The token ids of each policy turn, in order."""
        return [self.tokens[t.start : t.end] for t in self.turns if t.role == "policy"]
