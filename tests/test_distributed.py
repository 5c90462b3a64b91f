"""RayVerifierPool on a real local Ray (2 CPUs): the same verdicts as in-process, errors as verdicts, a killed
worker's shard re-run, a hung one bounded."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

ray = pytest.importorskip("ray", reason="Ray is the [ray] extra (in dev); pip install 'llmenv[ray]'")

from llmenv.distributed import RayVerifierPool, _shards  # noqa: E402 - after the importorskip
from llmenv.errors import VerifierError  # noqa: E402
from llmenv.tasks.arith import generate_arith  # noqa: E402
from llmenv.types import Task, Verdict  # noqa: E402
from llmenv.verifiers.base import call_verifier_batch  # noqa: E402
from llmenv.verifiers.math import MathVerifier  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors get this file's verifiers by value


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray with 2 CPUs for the module, as a user on this machine would start it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def slow_exact(completion: str, task: Task) -> Verdict:
    """Exact match after 0.25 s; raises on 'raise', exits its process on 'die', hangs on 'hang'."""
    if completion == "raise":
        raise ValueError("cannot grade this")
    if completion == "die":
        os._exit(3)
    if completion == "hang":
        time.sleep(60)
    time.sleep(0.25)
    return Verdict(reward=float(completion == task.answer), passed=completion == task.answer)


def arith_tasks(n: int) -> list[Task]:
    import numpy as np

    return [generate_arith(np.random.default_rng(i)) for i in range(n)]


def test_shards_are_contiguous_near_equal_and_rotate():
    assert _shards(10, 3, 0) == {0: (0, 3), 1: (3, 6), 2: (6, 10)}
    assert _shards(10, 3, 1) == {1: (0, 3), 2: (3, 6), 0: (6, 10)}
    assert _shards(2, 4, 3) == {3: (0, 1), 0: (1, 2)}


def test_math_verdicts_equal_the_in_process_ones():
    tasks = arith_tasks(12)
    completions = [f"\\boxed{{{t.answer}}}" if i % 3 else f"\\boxed{{{t.answer}1}}" for i, t in enumerate(tasks)]
    expected = call_verifier_batch(MathVerifier(), completions, tasks)
    with RayVerifierPool(MathVerifier(), 2) as pool:
        got = pool.verify_batch(completions, tasks)
        single = pool(completions[1], tasks[1])
    assert [(v.reward, v.passed, dict(v.parts), v.error) for v in got] == [
        (v.reward, v.passed, dict(v.parts), v.error) for v in expected
    ]
    assert sum(v.passed for v in got) == 8 and single.passed


def test_a_code_verifier_already_in_use_here_grades_in_its_own_sandbox_there():
    import numpy as np

    from llmenv.tasks.codegen import generate_codegen
    from llmenv.verifiers.code import CodeVerifier

    tasks = [generate_codegen(np.random.default_rng(i)) for i in range(4)]
    completions = [f"```python\n{t.meta['reference_solution']}```" if i % 2 else "```python\nx = 1\n```"
                   for i, t in enumerate(tasks)]  # fmt: skip
    verifier = CodeVerifier()
    here = verifier.verify_batch(completions, tasks)  # starts this process's default sandbox
    with RayVerifierPool(verifier, 2) as pool:  # the copies leave it behind and start their own
        there = pool.verify_batch(completions, tasks)
    assert [v.passed for v in there] == [v.passed for v in here] == [False, True, False, True]


def test_a_crashing_verifier_is_an_error_verdict_and_the_rest_are_graded():
    tasks = arith_tasks(4)
    with RayVerifierPool(slow_exact, 2) as pool:
        got = pool.verify_batch([tasks[0].answer, "raise", "wrong", tasks[3].answer], tasks)
    assert [v.reward for v in got] == [1.0, 0.0, 0.0, 1.0]
    assert got[1].error is not None and "ValueError: cannot grade this" in got[1].error
    assert [v.error for v in (got[0], got[2], got[3])] == [None, None, None]


@pytest.mark.slow  # actors restart: several seconds each on 2 busy cores
def test_a_worker_killed_mid_batch_has_its_shard_rerun_not_lost():
    tasks = arith_tasks(8)
    with RayVerifierPool(slow_exact, 2) as pool:
        before = pool.pids()
        killer = threading.Timer(0.5, os.kill, (before[0], signal.SIGKILL))  # a shard takes 4 x 0.25 s
        killer.start()
        got = pool.verify_batch([t.answer for t in tasks], tasks)
        killer.join()
        after = pool.pids()
    assert [v.error for v in got] == [None] * 8 and all(v.passed for v in got)
    assert after[0] != before[0] and after[1] == before[1]  # the killed actor was replaced, the other kept


@pytest.mark.slow  # actors restart: several seconds each on 2 busy cores
def test_a_shard_whose_worker_dies_every_time_becomes_error_verdicts_naming_it():
    tasks = arith_tasks(4)
    with RayVerifierPool(slow_exact, 2, retries=1) as pool:
        got = pool.verify_batch(["die", tasks[1].answer, tasks[2].answer, tasks[3].answer], tasks)
        again = pool.verify_batch([t.answer for t in tasks], tasks)  # the pool still works afterwards
    assert all("verifier worker died 2 times" in (v.error or "") for v in got[:2])
    assert [v.passed for v in got[2:]] == [True, True]
    assert all(v.passed for v in again)


@pytest.mark.slow  # actors restart: several seconds each on 2 busy cores
def test_a_hung_worker_is_bounded_and_replaced():
    tasks = arith_tasks(2)
    with RayVerifierPool(slow_exact, 2, timeout_s=2.0, item_timeout_s=None) as pool:
        started = time.monotonic()
        got = pool.verify_batch(["hang", tasks[1].answer], tasks)
        waited = time.monotonic() - started
        again = pool(tasks[0].answer, tasks[0])
    assert "took longer than 2s" in (got[0].error or "") and got[1].passed
    assert waited < 20 and again.passed  # bounded (10x slack on a noisy machine), and usable after


def test_bad_arguments_are_named():
    with pytest.raises(VerifierError, match="at least 1 actor"):
        RayVerifierPool(slow_exact, 0)
    with pytest.raises(VerifierError, match="num_cpus must be above 0"):
        RayVerifierPool(slow_exact, 1, num_cpus=0)
    with RayVerifierPool(slow_exact, 1) as pool, pytest.raises(VerifierError, match="2 completions for 1 tasks"):
        pool.verify_batch(["a", "b"], arith_tasks(1))
