"""call_verifier, Rubric and check_verifier: failures are recorded, never silent, and time-bounded."""

from __future__ import annotations

import threading
import time

import pytest

from llmenv.errors import VerifierError
from llmenv.types import Task, Verdict
from llmenv.verifiers.base import Rubric, call_verifier, check_verifier

TASK = Task("q", answer="42")


def test_plain_values_are_wrapped():
    assert call_verifier(lambda c, t: True, "x", TASK).passed is True
    assert call_verifier(lambda c, t: 0.25, "x", TASK).reward == 0.25


def test_exception_becomes_an_error_verdict_naming_it():
    verdict = call_verifier(lambda c, t: {}["missing"], "x", TASK)
    assert verdict.reward == 0.0 and verdict.passed is None
    assert verdict.error.startswith("verifier raised KeyError: 'missing'")


def test_wrong_return_type_is_an_error():
    assert "got str" in call_verifier(lambda c, t: "yes", "x", TASK).error


def test_timeout_interrupts_python_code_even_if_it_catches_exceptions():
    def stubborn(completion, task):
        while True:
            try:
                sum(range(100))
            except Exception:  # a verifier that swallows errors must still be stopped
                pass

    started = time.perf_counter()
    verdict = call_verifier(stubborn, "x", TASK, timeout_s=0.2)
    assert time.perf_counter() - started < 2.0
    assert verdict.error == "verifier timed out after 0.2s"


def test_timeout_works_off_the_main_thread_and_leaves_no_pending_interrupt():
    results = []

    def worker():
        results.append(call_verifier(lambda c, t: time.sleep(0.01) or 1.0, "x", TASK, timeout_s=0.005))
        time.sleep(0.05)  # a stale interrupt would surface here and kill the thread
        results.append(call_verifier(lambda c, t: 1.0, "x", TASK, timeout_s=5))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(5)
    assert len(results) == 2 and results[1].reward == 1.0


def test_time_bounded_verifiers_are_called_directly():
    class Bounded:
        time_bounded = True

        def __call__(self, completion, task):
            return Verdict(1.0, passed=True, parts={"ok": 1.0}, details={"thread": threading.get_ident()})

    assert call_verifier(Bounded(), "x", TASK).details["thread"] == threading.get_ident()


def test_rubric_reports_every_part_and_weights_them():
    rubric = Rubric({
        "correct": (lambda c, t: c == t.answer, 1.0),
        "short": (lambda c, t: len(c) < 3, 0.2),
        "broken": (lambda c, t: 1 / 0, 0.5),
    })
    verdict = rubric("42", TASK)
    assert verdict.reward == pytest.approx(1.2)
    assert dict(verdict.parts) == {"correct": 1.0, "short": 1.0, "broken": 0.0}
    assert verdict.error.startswith("broken: verifier raised ZeroDivisionError")
    assert verdict.passed is True  # the parts that gave a yes/no all passed


def test_rubric_flattens_sub_parts():
    inner = Rubric({"a": (lambda c, t: 1.0, 1.0), "b": (lambda c, t: 0.0, 1.0)})
    verdict = Rubric([("inner", inner, 2.0)])("x", TASK)
    assert verdict.reward == 2.0 and verdict.parts["inner/b"] == 0.0


@pytest.mark.parametrize(
    "parts, message",
    [({}, "at least one"), ({"a": (1, 1.0)}, "callable verifier"), ({"a": (lambda c, t: 0, float("inf"))}, "finite")],
)
def test_rubric_validates_parts(parts, message):
    with pytest.raises(VerifierError, match=message):
        Rubric(parts)


def test_check_verifier_accepts_a_good_verifier_and_catches_a_wrong_one():
    check_verifier(lambda c, t: float(c == t.answer), [("42", TASK, 1.0), ("41", TASK, 0.0)])
    with pytest.raises(AssertionError, match="expected 1.0"):
        check_verifier(lambda c, t: 0.0, [("42", TASK, 1.0)])
    with pytest.raises(AssertionError, match="not deterministic"):
        import itertools

        counter = itertools.count()
        check_verifier(lambda c, t: float(next(counter) % 2 == 0), [("42", TASK, 1.0)])
