"""Hard wall-clock bounds for Python calls made on the caller's own thread (verifiers, tools, hooks).

`call_with_deadline(fn, timeout_s)` runs `fn()` on the calling thread and, if it is still running
when the time is up, raises `DeadlineExceeded` inside it. A hand-off to a worker thread would cost
about 200 us, more than a whole env step; arming a deadline here is a heap push on one shared
watchdog thread. The interrupt is delivered with `PyThreadState_SetAsyncExc`, so it stops
Python-level loops (parsers, sympy, user code) even when they catch `Exception`; code blocked
inside C or in I/O is interrupted only when it returns to Python, which is why verifiers and
tools that can block there bound themselves (worker processes, sandboxes). This module never
runs anything on another thread but the watchdog.
"""

from __future__ import annotations

import ctypes
import heapq
import threading
import time
import traceback
from collections.abc import Callable
from typing import TypeVar

_Result = TypeVar("_Result")


class DeadlineExceeded(BaseException):
    """Raised inside a call whose deadline passed.

    A BaseException so that the call's own `except Exception` cannot swallow it.
    """


class _Watchdog:
    """One daemon thread that raises DeadlineExceeded in threads whose armed deadline passed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, int] = {}  # token -> thread id
        self._fired: set[int] = set()
        self._next_token = 0
        self._thread: threading.Thread | None = None

    def arm(self, timeout_s: float) -> int:
        """Start a deadline for the calling thread; return the token to disarm it."""
        with self._cond:
            self._next_token += 1
            token = self._next_token
            self._armed[token] = threading.get_ident()
            deadline = time.monotonic() + timeout_s
            if not self._heap or deadline < self._heap[0][0]:
                self._cond.notify()
            heapq.heappush(self._heap, (deadline, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="llmenv-watchdog")
                self._thread.start()
        return token

    def disarm(self, token: int) -> bool:
        """Stop the deadline; return True if it fired (a still-pending interrupt is cancelled)."""
        with self._cond:
            thread_id = self._armed.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                if thread_id is not None:
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
                return True
        return False

    def _loop(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, token = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                self._fired.add(token)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._armed[token]), ctypes.py_object(DeadlineExceeded)
                )


_watchdog = _Watchdog()


def call_with_deadline(fn: Callable[[], _Result], timeout_s: float) -> _Result:
    """Return `fn()`, or raise DeadlineExceeded if it runs longer than `timeout_s` seconds."""
    token = _watchdog.arm(timeout_s)
    try:
        try:
            result = fn()
        finally:
            fired = _watchdog.disarm(token)
    except DeadlineExceeded:
        _watchdog.disarm(token)
        raise
    if fired:  # finished just as the deadline passed; the pending interrupt was cancelled
        raise DeadlineExceeded
    return result


def describe_exception(exc: BaseException) -> str:
    """`Type: message (at file:line)` of where an exception was raised, for error reports."""
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {frame[0].filename.rsplit('/', 1)[-1]}:{frame[0].lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"
