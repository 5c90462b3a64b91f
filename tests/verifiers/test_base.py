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
    assert time.perf_counter() - started < 10.0  # a bound on a hang; it returns at about the 0.2 s bound
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
    rubric = Rubric(
        {
            "correct": (lambda c, t: c == t.answer, 1.0),
            "short": (lambda c, t: len(c) < 3, 0.2),
            "broken": (lambda c, t: 1 / 0, 0.5),
        }
    )
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


def test_call_verifier_batch_checks_every_result_like_a_single_call():
    from llmenv.verifiers.base import call_verifier_batch

    class Batch:
        time_bounded = True

        def __init__(self, results):
            self.results = results

        def __call__(self, completion, task):
            return 1.0

        def verify_batch(self, completions, tasks):
            if isinstance(self.results, Exception):
                raise self.results
            return self.results

    tasks = [Task("q", answer="1")] * 3
    ok = call_verifier_batch(Batch([1.0, True, Verdict(0.5, passed=False)]), ["a", "b", "c"], tasks)
    assert [v.reward for v in ok] == [1.0, 1.0, 0.5] and [v.passed for v in ok] == [None, True, False]
    for results, message in (([1.0, 1.0], "returned 2 results for 3"), ([1.0] * 4, "returned 4 results for 3")):
        verdicts = call_verifier_batch(Batch(results), ["a", "b", "c"], tasks)
        assert len(verdicts) == 3 and all(message in v.error and v.reward == 0.0 for v in verdicts)
    bad = call_verifier_batch(Batch([1.0, float("inf"), "yes"]), ["a", "b", "c"], tasks)
    assert bad[0].error is None and "non-finite" in bad[1].error and "must return a Verdict" in bad[2].error
    crashed = call_verifier_batch(Batch(RuntimeError("down")), ["a", "b", "c"], tasks)
    assert all("verify_batch raised RuntimeError: down" in v.error for v in crashed)
    single = call_verifier_batch(lambda c, t: c == t.answer, ["1", "2"], tasks[:2])  # no verify_batch
    assert [v.passed for v in single] == [True, False]


def test_base_verifier_spells_out_the_defaults():
    from llmenv.verifiers.base import BaseVerifier, Verifier, is_time_bounded, prestart_verifier

    class Exact(BaseVerifier):
        def __call__(self, completion, task):
            return completion == task.answer

    exact = Exact()
    assert not is_time_bounded(exact) and is_time_bounded(Rubric({"e": (exact, 1.0)}))
    assert exact.verify_batch(["1", "2"], [Task("q", answer="1")] * 2) == [True, False]
    prestart_verifier(exact)  # nothing to start, and no error
    assert isinstance(exact, Verifier) and isinstance(lambda c, t: 1.0, Verifier)


def test_rubric_scores_a_batch_part_by_part():
    calls = []

    class Batched:
        time_bounded = True

        def __call__(self, completion, task):
            raise AssertionError("a Rubric batch must use verify_batch")

        def verify_batch(self, completions, tasks):
            calls.append(len(completions))
            return [float(c == t.answer) for c, t in zip(completions, tasks)]

    rubric = Rubric({"exact": (Batched(), 1.0), "short": (lambda c, t: len(c) < 2, 0.5)})
    verdicts = rubric.verify_batch(["1", "22"], [Task("q", answer="1"), Task("q", answer="22")])
    assert calls == [2] and [v.reward for v in verdicts] == [1.5, 1.0]
    assert dict(verdicts[1].parts) == {"exact": 1.0, "short": 0.0} and verdicts[1].passed is False
