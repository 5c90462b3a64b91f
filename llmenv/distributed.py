"""Verifiers on Ray workers: `RayVerifierPool`, for when one machine's cores cannot grade a batch fast enough.

`RayVerifierPool(verifier, n)` starts `n` Ray actors, each holding its own unpickled copy of the verifier
(so each has its own sandbox and math worker processes), and is itself a verifier: `verify_batch` splits a
batch into `n` contiguous shards, grades them on the actors at once through `call_verifier_batch` (every
check of a local call: wrapped results, finite rewards, deadlines, errors on the Verdict) and returns the
verdicts in order; single calls go to the actors in turn. A shard whose actor died (killed, out of memory,
its process exited) is re-run on a fresh actor, up to `retries` times, and only then becomes error verdicts
naming the failure; a shard that outlives `timeout_s` has its actor killed and replaced, and its rows get
error verdicts. New actors must answer within `start_timeout_s` before they get work, so start-up never
eats a shard's time bound. Nothing is lost silently and nothing waits forever. Actors ask for a fraction of a CPU
(`num_cpus`, default 0.25) so that placement never waits for whole free CPUs that a busy local Ray lacks.
Ray is optional (`pip install 'llmenv[ray]'`): it is imported when a pool is made, with a clear error when
it is missing. With `address=None` a local Ray is started (or the running one joined).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Sequence
from typing import Any, cast

from llmenv.errors import VerifierError
from llmenv.types import Task, Verdict
from llmenv.verifiers.base import BaseVerifier, VerifierFn, call_verifier_batch

DEFAULT_NUM_CPUS = 0.25
"""Ray CPUs each verifier actor asks for: a fraction, so a busy local Ray can always place it."""


def import_ray() -> Any:
    """The `ray` module, or a VerifierError saying how to install it (Ray is an optional extra)."""
    try:
        import ray  # noqa: PLC0415 - optional and heavy: only pools need it
    except ImportError as exc:
        raise VerifierError(f"RayVerifierPool needs Ray: pip install 'llmenv[ray]' ({exc})") from exc
    return ray


def ensure_ray(address: str | None = None) -> Any:
    """`ray`, initialised: joins `address` (or the running Ray), else starts a local one without a dashboard."""
    ray = import_ray()
    if not ray.is_initialized():
        if address is None:
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    return ray


class _Grader:
    """The body of one verifier actor: a verifier and `call_verifier_batch` around it."""

    def __init__(self, verifier: VerifierFn, timeout_s: float | None) -> None:
        self.verifier = verifier
        self.timeout_s = timeout_s

    def grade(self, completions: list[str], tasks: list[Task]) -> list[Verdict]:
        """One checked Verdict per completion (crashes and timeouts on the Verdict, as in-process)."""
        return call_verifier_batch(self.verifier, completions, tasks, timeout_s=self.timeout_s)

    def pid(self) -> int:
        """The actor's process id (tests kill it)."""
        return os.getpid()


class RayVerifierPool(BaseVerifier):
    """A verifier that grades on `n` Ray actors, each with its own copy of `verifier` (see the module docstring)."""

    time_bounded = True  # every shard waits at most timeout_s; a verifier that never returns loses its actor

    def __init__(
        self,
        verifier: VerifierFn,
        n: int = 2,
        *,
        address: str | None = None,
        num_cpus: float = DEFAULT_NUM_CPUS,
        timeout_s: float = 120.0,
        item_timeout_s: float | None = 30.0,
        retries: int = 1,
        start_timeout_s: float = 120.0,
    ) -> None:
        if n < 1:
            raise VerifierError(f"a RayVerifierPool needs at least 1 actor, got n={n}")
        if not 0 < num_cpus:
            raise VerifierError(f"num_cpus must be above 0 (a fraction is fine), got {num_cpus}")
        self.ray = ensure_ray(address)
        self.verifier = verifier
        self.num_cpus = num_cpus
        self.timeout_s = timeout_s
        self.item_timeout_s = item_timeout_s
        self.retries = retries
        self.start_timeout_s = start_timeout_s
        self._remote = self.ray.remote(_Grader)
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self.actors = self._started(n)

    def _started(self, n: int) -> list[Any]:
        """`n` new actors, each answering (so no shard's time bound is spent on an actor's start-up)."""
        actors = [self._remote.options(num_cpus=self.num_cpus).remote(self.verifier, self.item_timeout_s)
                  for _ in range(n)]  # fmt: skip
        try:
            self.ray.get([actor.pid.remote() for actor in actors], timeout=self.start_timeout_s)
        except self.ray.exceptions.GetTimeoutError:
            for actor in actors:
                self.ray.kill(actor, no_restart=True)
            raise VerifierError(
                f"Ray did not start {n} verifier actor(s) within {self.start_timeout_s:g}s; each asks for "
                f"{self.num_cpus:g} CPU (num_cpus=), and the cluster has {self.ray.available_resources()}"
            ) from None
        return actors

    def _replace(self, index: int, failed: Any) -> None:
        """Put a fresh actor in slot `index`, unless another thread already replaced the `failed` one."""
        with self._lock:
            if self.actors[index] is failed:
                self.ray.kill(failed, no_restart=True)
                self.actors[index] = self._started(1)[0]

    def __call__(self, completion: str, task: Task) -> Verdict:
        """One completion, on the next actor in turn."""
        return self.verify_batch([completion], [task])[0]

    def verify_batch(self, completions: Sequence[str], tasks: Sequence[Task]) -> list[Verdict]:
        """Verdicts in order: contiguous shards graded at once, a dead actor's shard re-run on a fresh one."""
        if len(completions) != len(tasks):
            raise VerifierError(f"got {len(completions)} completions for {len(tasks)} tasks; expected one task each")
        if not completions:
            return []
        shards = _shards(len(completions), len(self.actors), next(self._turn))
        verdicts: list[Verdict | None] = [None] * len(completions)
        pending = {index: (start, stop, 0) for index, (start, stop) in shards.items()}
        while pending:
            used = {index: self.actors[index] for index in pending}
            refs = {index: used[index].grade.remote(list(completions[a:b]), list(tasks[a:b]))
                    for index, (a, b, _) in pending.items()}  # fmt: skip
            ready, _ = self.ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.timeout_s)
            retry = {}
            for index, ref in refs.items():
                start, stop, tries = pending[index]
                if ref not in ready:
                    self._replace(index, used[index])
                    failure = f"verifier worker took longer than {self.timeout_s:g}s; its actor was replaced"
                    verdicts[start:stop] = [Verdict.failure(failure)] * (stop - start)
                    continue
                try:
                    verdicts[start:stop] = self.ray.get(ref)
                except (self.ray.exceptions.RayActorError, self.ray.exceptions.WorkerCrashedError) as exc:
                    self._replace(index, used[index])
                    if tries < self.retries:
                        retry[index] = (start, stop, tries + 1)
                    else:
                        failure = f"verifier worker died {tries + 1} times on this shard ({type(exc).__name__})"
                        verdicts[start:stop] = [Verdict.failure(failure)] * (stop - start)
                except self.ray.exceptions.RayTaskError as exc:  # grading raised outside call_verifier_batch's guard
                    failure = f"verifier worker raised {type(exc.cause).__name__}: {exc.cause}"
                    verdicts[start:stop] = [Verdict.failure(failure)] * (stop - start)
            pending = retry
        return cast("list[Verdict]", verdicts)  # every shard was filled: its verdicts, or error verdicts

    def pids(self) -> list[int]:
        """The actors' process ids, in actor order."""
        return list(self.ray.get([actor.pid.remote() for actor in self.actors]))

    def close(self) -> None:
        """Stop the actors (the Ray runtime stays up for others)."""
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors = []

    def __enter__(self) -> RayVerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shards(rows: int, actors: int, turn: int) -> dict[int, tuple[int, int]]:
    """`{actor index: (start, stop)}` of contiguous, near-equal shards, starting at actor `turn % actors`."""
    count = min(rows, actors)
    bounds = [rows * k // count for k in range(count + 1)]
    return {(turn + k) % actors: (bounds[k], bounds[k + 1]) for k in range(count)}
