"""The verifier protocol, safe invocation with a time bound, `Rubric` composition and `check_verifier`.

A verifier is any callable `(completion: str, task: Task) -> Verdict | float | bool`. This
module makes calling one safe: the result is always a `Verdict`, an exception or a timeout is
recorded on it (`Verdict.error`) instead of becoming a quiet reward of 0, and a verifier that
never returns cannot hang the caller. It must not know about tokens or environments.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from llmenv.deadline import DeadlineExceeded, call_with_deadline, describe_exception
from llmenv.errors import VerifierError
from llmenv.types import Task, Verdict

__all__ = ["Verifier", "Rubric", "call_verifier", "check_verifier", "Verdict"]


@runtime_checkable
class Verifier(Protocol):
    """Scores one completion of one task.

    Verifiers that enforce their own hard wall-clock bound (math, code) set the class attribute
    `time_bounded = True`; `call_verifier` then calls them directly instead of under a watchdog deadline.
    """

    def __call__(self, completion: str, task: Task) -> Verdict | float | bool: ...


def call_verifier(
    verifier: Callable[[str, Task], Verdict | float | bool],
    completion: str,
    task: Task,
    *,
    timeout_s: float | None = 30.0,
    name: str = "reward",
) -> Verdict:
    """Call a verifier and always return a Verdict; crashes and timeouts are recorded in `error`."""
    if timeout_s is None or getattr(verifier, "time_bounded", False):
        try:
            value = verifier(completion, task)
        except Exception as exc:  # noqa: BLE001 - recorded on the Verdict, never a silent 0
            return Verdict.failure(f"verifier raised {describe_exception(exc)}", name=name)
    else:
        try:
            value = call_with_deadline(lambda: verifier(completion, task), timeout_s)
        except DeadlineExceeded:
            return Verdict.failure(f"verifier timed out after {timeout_s:g}s", name=name)
        except Exception as exc:  # noqa: BLE001 - recorded on the Verdict, never a silent 0
            return Verdict.failure(f"verifier raised {describe_exception(exc)}", name=name)
    try:
        verdict = Verdict.of(value, name=name)
    except TypeError as exc:
        return Verdict.failure(str(exc), name=name)
    if not math.isfinite(verdict.reward):
        return Verdict.failure(
            f"verifier returned a non-finite reward {verdict.reward!r}", name=name, details=verdict.details
        )
    return verdict


def prestart_verifier(verifier: Any) -> None:
    """Call `verifier.prestart()` when it has one: verifiers with worker processes start them in the background."""
    prestart = getattr(verifier, "prestart", None)
    if callable(prestart):
        prestart()


class Rubric:
    """A weighted sum of named verifiers that reports every part.

    >>> from llmenv.types import Task
    >>> r = Rubric({"exact": (lambda c, t: c == t.answer, 1.0), "short": (lambda c, t: len(c) < 5, 0.5)})
    >>> v = r("42", Task("q", answer="42"))
    >>> v.reward, dict(v.parts)
    (1.5, {'exact': 1.0, 'short': 1.0})
    """

    time_bounded = True  # each part is called through call_verifier with its own bound

    def __init__(
        self,
        parts: Mapping[str, tuple[Callable[[str, Task], Verdict | float | bool], float]]
        | Sequence[tuple[str, Callable[[str, Task], Verdict | float | bool], float]],
        *,
        timeout_s: float | None = 30.0,
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

    def prestart(self) -> None:
        """Let every part that can start its workers ahead (see `prestart_verifier`) do so."""
        for _, verifier, _ in self.parts:
            prestart_verifier(verifier)

    def __call__(self, completion: str, task: Task) -> Verdict:
        """Score `completion` with every part; reward is the weighted sum of part rewards."""
        reward = 0.0
        parts: dict[str, float] = {}
        details: dict[str, Any] = {}
        errors: list[str] = []
        passed: list[bool] = []
        for name, verifier, weight in self.parts:
            verdict = call_verifier(verifier, completion, task, timeout_s=self.timeout_s, name=name)
            reward += weight * verdict.reward
            parts[name] = verdict.reward
            for sub, value in verdict.parts.items():
                if sub != name and len(verdict.parts) > 1:
                    parts[f"{name}/{sub}"] = value
            details[name] = dict(verdict.details)
            if verdict.error is not None:
                errors.append(f"{name}: {verdict.error}")
            if verdict.passed is not None:
                passed.append(verdict.passed)
        return Verdict(
            reward=reward,
            passed=all(passed) if passed else None,
            parts=parts,
            details=details,
            error="; ".join(errors) or None,
        )


def check_verifier(
    verifier: Callable[[str, Task], Verdict | float | bool],
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
