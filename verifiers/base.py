"""The verifier protocol, safe invocation with a time bound, `Rubric` composition and `check_verifier`.

A verifier is any callable `(completion: str, task: Task) -> Verdict | float | bool`. This
module makes calling one safe: the result is always a `Verdict`, an exception or a timeout is
recorded on it (`Verdict.error`) instead of becoming a quiet reward of 0, and a verifier that
never returns cannot hang the caller. It must not know about tokens or environments.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

from llmenv.deadline import DeadlineExceeded, call_with_deadline, describe_exception
from llmenv.errors import VerifierError
from llmenv.types import StepScore, Task, Verdict

__all__ = [
    "BaseVerifier",
    "Rubric",
    "Verdict",
    "Verifier",
    "call_verifier",
    "call_verifier_batch",
    "check_verifier",
    "is_time_bounded",
    "prestart_verifier",
]


@runtime_checkable
class Verifier(Protocol):
    """Scores one completion of one task: `(completion, task) -> Verdict | float | bool`.

    Only `__call__` is required; a plain function is a verifier. A verifier may also offer these
    optional capabilities. Callers never look them up themselves: they go through `call_verifier`,
    `call_verifier_batch`, `is_time_bounded` and `prestart_verifier` below, which apply the defaults.
    `BaseVerifier` is a base class that spells the defaults out.

    - `time_bounded: bool` (default False): the verifier enforces its own hard wall-clock bound
      (worker processes, sandboxes, linear-time parsing), so `call_verifier` calls it directly instead
      of under a watchdog deadline.
    - `verify_batch(completions, tasks) -> Sequence[Verdict | float | bool]` (default: call it once per
      completion): score many completions at once, one result per completion, in order. Results go
      through the same checks as single calls (wrapped by `Verdict.of`, finite rewards, a deadline
      unless time-bounded); a crash or a list of the wrong length is an error verdict for every row.
    - `prestart() -> None` (default: nothing): start worker processes in the background, so that the
      first call does not wait for them (learners call it before loading the model).
    """

    def __call__(self, completion: str, task: Task) -> Verdict | float | bool: ...


VerifierFn = Callable[[str, Task], "Verdict | float | bool"]


class BaseVerifier(ABC):
    """A base class for verifiers that states every optional capability's default (see `Verifier`)."""

    time_bounded: ClassVar[bool] = False
    """True when `__call__` bounds its own running time."""

    @abstractmethod
    def __call__(self, completion: str, task: Task) -> Verdict | float | bool:
        """Score one completion of one task."""

    def verify_batch(self, completions: Sequence[str], tasks: Sequence[Task]) -> Sequence[Verdict | float | bool]:
        """One result per completion, in order (default: one call each)."""
        return [self(completion, task) for completion, task in zip(completions, tasks, strict=True)]

    def prestart(self) -> None:  # noqa: B027 - a documented default, not an abstract method
        """Start background workers ahead of the first call (default: nothing to start)."""


def is_time_bounded(verifier: VerifierFn) -> bool:
    """Whether the verifier bounds its own time (`time_bounded`, default False)."""
    return bool(getattr(verifier, "time_bounded", False))


def prestart_verifier(verifier: VerifierFn) -> None:
    """Call `verifier.prestart()` when it has one: verifiers with worker processes start them in the background."""
    prestart = getattr(verifier, "prestart", None)
    if callable(prestart):
        prestart()


def _checked(value: Any, name: str) -> Verdict:
    """What a verifier returned, as a Verdict with a finite reward (an error verdict otherwise)."""
    try:
        verdict = Verdict.of(value, name=name)
    except TypeError as exc:
        return Verdict.failure(str(exc), name=name)
    if not math.isfinite(verdict.reward):
        return Verdict.failure(
            f"verifier returned a non-finite reward {verdict.reward!r}", name=name, details=verdict.details
        )
    return verdict


def _bounded(fn: Callable[[], Any], timeout_s: float | None, what: str, name: str) -> Any | Verdict:
    """`fn()` under a deadline (none when `timeout_s` is None); a crash or timeout becomes an error Verdict."""
    try:
        return fn() if timeout_s is None else call_with_deadline(fn, timeout_s)
    except DeadlineExceeded:
        return Verdict.failure(f"{what} timed out after {timeout_s:g}s", name=name)
    except Exception as exc:  # noqa: BLE001 - recorded on the Verdict, never a silent 0
        return Verdict.failure(f"{what} raised {describe_exception(exc)}", name=name)


def call_verifier(
    verifier: VerifierFn,
    completion: str,
    task: Task,
    *,
    timeout_s: float | None = 30.0,
    name: str = "reward",
) -> Verdict:
    """Call a verifier and always return a Verdict; crashes and timeouts are recorded in `error`."""
    timeout = None if is_time_bounded(verifier) else timeout_s
    return _checked(_bounded(lambda: verifier(completion, task), timeout, "verifier", name), name)


def call_verifier_batch(
    verifier: VerifierFn,
    completions: Sequence[str],
    tasks: Sequence[Task],
    *,
    timeout_s: float | None = 30.0,
    name: str = "reward",
) -> list[Verdict]:
    """One checked Verdict per completion, through `verify_batch` when the verifier has one.

    The same guarantees as `call_verifier`: floats and bools are wrapped, non-finite rewards and
    crashes become error verdicts, and a verifier that is not time-bounded runs under a deadline
    (`timeout_s` per completion for the whole batch). A result list of the wrong length cannot be
    matched to the completions, so every row gets an error verdict saying so.
    """
    if len(completions) != len(tasks):
        raise VerifierError(f"got {len(completions)} completions for {len(tasks)} tasks; expected one task each")
    batch = getattr(verifier, "verify_batch", None)
    if not callable(batch) or len(completions) < 2:
        return [call_verifier(verifier, c, t, timeout_s=timeout_s, name=name) for c, t in zip(completions, tasks)]
    timeout = None if is_time_bounded(verifier) or timeout_s is None else timeout_s * len(completions)
    values = _bounded(lambda: list(batch(list(completions), list(tasks))), timeout, "verify_batch", name)
    if isinstance(values, Verdict):
        return [values] * len(completions)
    if len(values) != len(completions):
        error = Verdict.failure(
            f"verify_batch returned {len(values)} results for {len(completions)} completions; expected one each",
            name=name,
        )
        return [error] * len(completions)
    return [_checked(value, name) for value in values]


class Rubric(BaseVerifier):
    """A weighted sum of named verifiers that reports every part (and their step scores, weighted the same).

    `passed` is True when every part that reports one passed, or, with `pass_part`, that part's own
    (so shaping parts such as a format bonus do not decide whether the task was solved).

    >>> from llmenv.types import Task
    >>> r = Rubric({"exact": (lambda c, t: c == t.answer, 1.0), "short": (lambda c, t: len(c) < 5, 0.5)})
    >>> v = r("42", Task("q", answer="42"))
    >>> v.reward, dict(v.parts)
    (1.5, {'exact': 1.0, 'short': 1.0})
    """

    time_bounded = True  # each part is called through call_verifier with its own bound

    def __init__(
        self,
        parts: Mapping[str, tuple[VerifierFn, float]] | Sequence[tuple[str, VerifierFn, float]],
        *,
        timeout_s: float | None = 30.0,
        pass_part: str | None = None,
    ) -> None:
        items = list(parts.items()) if isinstance(parts, Mapping) else [(n, (v, w)) for n, v, w in parts]
        if not items:
            raise VerifierError("Rubric needs at least one (name, verifier, weight) part")
        for name, spec in items:
            if not (isinstance(spec, tuple) and len(spec) == 2 and callable(spec[0])):
                raise VerifierError(
                    f"Rubric part {name!r} must be (verifier, weight) with a callable verifier, got {spec!r:.100}"
                )
            if not isinstance(spec[1], (int, float)) or not math.isfinite(spec[1]):
                raise VerifierError(f"Rubric part {name!r} has weight {spec[1]!r}; expected a finite number")
        self.parts = [(name, verifier, float(weight)) for name, (verifier, weight) in items]
        self.timeout_s = timeout_s
        if pass_part is not None and pass_part not in {name for name, _ in items}:
            raise VerifierError(f"pass_part {pass_part!r} is not a part; parts: {[name for name, _ in items]}")
        self.pass_part = pass_part

    def prestart(self) -> None:
        """Let every part that can start its workers ahead (see `prestart_verifier`) do so."""
        for _, verifier, _ in self.parts:
            prestart_verifier(verifier)

    def __call__(self, completion: str, task: Task) -> Verdict:
        """Score `completion` with every part; reward is the weighted sum of part rewards."""
        return self.verify_batch([completion], [task])[0]

    def verify_batch(self, completions: Sequence[str], tasks: Sequence[Task]) -> list[Verdict]:
        """Score many completions: each part scores the whole batch at once (see `call_verifier_batch`)."""
        per_part = [
            call_verifier_batch(verifier, completions, tasks, timeout_s=self.timeout_s, name=name)
            for name, verifier, _ in self.parts
        ]
        return [self._combine([verdicts[row] for verdicts in per_part]) for row in range(len(completions))]

    def _combine(self, verdicts: list[Verdict]) -> Verdict:
        """One verdict from each part's verdict on the same completion."""
        reward = 0.0
        parts: dict[str, float] = {}
        details: dict[str, Any] = {}
        errors: list[str] = []
        passed: list[bool] = []
        steps: dict[int, float] = {}  # step end -> weighted score summed over the parts that score steps
        for (name, _, weight), verdict in zip(self.parts, verdicts, strict=True):
            reward += weight * verdict.reward
            for step in verdict.steps:
                steps[step.end] = steps.get(step.end, 0.0) + weight * step.score
            parts[name] = verdict.reward
            for sub, value in verdict.parts.items():
                if sub != name and len(verdict.parts) > 1:
                    parts[f"{name}/{sub}"] = value
            details[name] = dict(verdict.details)
            if verdict.error is not None:
                errors.append(f"{name}: {verdict.error}")
            if verdict.passed is not None and self.pass_part in (None, name):
                passed.append(verdict.passed)
        return Verdict(
            reward=reward,
            passed=all(passed) if passed else None,
            parts=parts,
            details=details,
            error="; ".join(errors) or None,
            steps=tuple(StepScore(end, score) for end, score in sorted(steps.items())),
        )


def check_verifier(
    verifier: VerifierFn,
    cases: Sequence[tuple[str, Task, float]],
    *,
    timeout_s: float = 10.0,
) -> None:
    """Assert the basic contract of a verifier; raise AssertionError naming the first failed check.

    `cases` are `(completion, task, expected_reward)` triples. Checked: every case scores as
    expected and returns a finite Verdict, scoring is deterministic, and hostile completions
    (empty, a megabyte of text, control characters) return a Verdict within `timeout_s`.
    """
    for completion, task, expected in cases:
        first = call_verifier(verifier, completion, task, timeout_s=timeout_s)
        assert first.error is None, f"verifier errored on {completion[:80]!r}: {first.error}"
        assert math.isclose(first.reward, expected, rel_tol=1e-9, abs_tol=1e-9), (
            f"verifier gave {first.reward} for {completion[:80]!r}, expected {expected}"
        )
        again = call_verifier(verifier, completion, task, timeout_s=timeout_s)
        assert again.reward == first.reward, f"verifier is not deterministic on {completion[:80]!r}"
    task = cases[0][1]
    hostile = ["", "\x00\x1b[2J\ufffd", "9" * 1_000_000, "(" * 100_000, "\\boxed{" * 10_000]
    for completion in hostile:
        started = time.perf_counter()
        verdict = call_verifier(verifier, completion, task, timeout_s=timeout_s)
        took = time.perf_counter() - started
        assert isinstance(verdict, Verdict) and math.isfinite(verdict.reward), "verifier returned a non-finite reward"
        assert took < timeout_s + 1.0, f"verifier took {took:.1f}s on a hostile completion of {len(completion)} chars"
