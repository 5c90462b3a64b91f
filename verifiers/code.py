"""`CodeVerifier`: reward = the fraction of a task's tests that the code in a completion passes.

The code (see `extract_code`) runs in a sandbox; the verdict is decided by a trusted harness
(`_code_harness.py`, shipped into the sandbox as text) or, for stdin/stdout tests, by comparing
outputs here, never by anything the candidate prints or returns unchecked. This module must not
execute, import or compile model output itself: it only moves text into a sandbox and reads
nonce-tagged results back.

How `task.tests` is read (`task.meta["test_type"]` may name the form; otherwise it is inferred):

- `"check"` (HumanEval): a `str` of Python that defines `check(candidate)`;
  `task.meta["entry_point"]` names the function under test. Each statement of `check`'s body that
  holds an assert (other than `assert <constant>`) is one test; the others are setup, and a setup
  statement that raises fails every test after it. A body that cannot be split is one test.
- `"asserts"` (MBPP): a list of `str`, each a statement such as `"assert add(1, 2) == 3"`; the
  names they call are bound to the candidate's functions of those names.
- `"stdio"` (competitive programming): a list of `{"input": str, "output": str}`; the code runs as
  a program once per case and passes when it exits 0 and its stdout equals `output` after
  stripping trailing whitespace on each line and trailing newlines.

Optional `task.meta`: `code_prefix` (text put before the candidate's code, e.g. HumanEval's
prompt, so that a completion holding only a function body still runs; `from __future__` lines
are moved first), `test_prelude` (trusted code run in the tests' namespace first: imports,
helpers the tests share). Every top-level function the candidate defines is callable from the
tests by its name unless the tests or builtins define that name (HumanEval/32's `check` calls the
`poly` of the candidate's module, HumanEval/38's `encode_cyclic`). Calls into the candidate pass
arguments by value and accept back only exact builtin values (int, float, bool, str, bytes, None,
complex, and lists, tuples, dicts, sets and frozensets of them); anything else fails that test.
"""

from __future__ import annotations

import ast
import builtins
import functools
import marshal
import math
import os
import re
import secrets
import struct
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llmenv.deadline import describe_exception
from llmenv.errors import VerifierError
from llmenv.sandboxes.base import ExecResult, Limits, Sandbox, SandboxError
from llmenv.types import Task, Verdict
from llmenv.verifiers.base import BaseVerifier, call_verifier

__all__ = ["CodeVerifier", "extract_code", "normalize_output", "kind_of_tests"]

HARNESS_SOURCE = Path(__file__).with_name("_code_harness.py").read_text(encoding="utf-8")
"""The harness program sent into the sandbox for function-call tests (read as text, never imported)."""

# The sandbox runs a tiny bootstrap that takes the harness from stdin already compiled (compiling
# its source costs ~4 ms a run); a sandbox whose Python differs from ours compiles the source instead.
_HARNESS_FRAMES = b"".join(
    struct.pack(">I", len(blob)) + blob
    for blob in (marshal.dumps(compile(HARNESS_SOURCE, "_code_harness.py", "exec")), HARNESS_SOURCE.encode())
)
_BOOTSTRAP = f"""import marshal, os, sys


def _take(n):
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            raise EOFError("stdin ended early")
        data += chunk
    return data


_code, _source = _take(int.from_bytes(_take(4), "big")), _take(int.from_bytes(_take(4), "big"))
_same_python = sys.implementation.cache_tag == {sys.implementation.cache_tag!r}
_harness = marshal.loads(_code) if _same_python else compile(_source, "_code_harness.py", "exec")
del _code, _source, _take, _same_python
exec(_harness)
"""

_PYTHON_TAGS = frozenset({"python", "py", "python3", "py3"})
_MAX_REASON = 300
_MAX_CODE_IN_DETAILS = 4000
_FUTURE_RE = re.compile(r"^from __future__ import [^\n]*$", re.M)
_NOT_PREIMPORTED = frozenset({"antigravity", "this", "tkinter", "turtle", "idlelib", "__main__"})


def extract_code(text: str) -> str:
    """The code of a completion: the last ```python block if any, else the last fenced block, else the text."""
    blocks: list[tuple[str, list[str]]] = []
    current: tuple[str, list[str]] | None = None
    indent = ""
    for line in text.split("\n"):
        stripped = line.strip()
        if current is None:
            if stripped.startswith("```"):
                current = (stripped[3:].strip().split(" ")[0].lower(), [])
                blocks.append(current)
                indent = line[: len(line) - len(line.lstrip())]  # a fence inside a list item is indented
        elif stripped.startswith("```") and not stripped.strip("`"):
            current = None
        else:
            current[1].append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
    if not blocks:
        return text
    python_blocks = [lines for tag, lines in blocks if tag in _PYTHON_TAGS]
    return "\n".join(python_blocks[-1] if python_blocks else blocks[-1][1])


def normalize_output(text: str) -> str:
    """Program output as compared: trailing whitespace stripped on each line, trailing newlines dropped."""
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).rstrip("\n")


def kind_of_tests(task: Task) -> str:
    """How `task.tests` is to be read: "check", "asserts" or "stdio" (raises VerifierError if unreadable)."""
    tests, named = task.tests, task.meta.get("test_type")
    if isinstance(tests, str):
        inferred = "check"
    elif isinstance(tests, Sequence) and tests and all(isinstance(t, str) for t in tests):
        inferred = "asserts"
    elif (
        isinstance(tests, Sequence)
        and tests
        and all(
            isinstance(t, Mapping) and isinstance(t.get("input"), str) and isinstance(t.get("output"), str)
            for t in tests
        )
    ):
        inferred = "stdio"
    else:
        raise VerifierError(
            "task.tests must be a str defining check(candidate), a non-empty list of assert statements, or a "
            f"non-empty list of {{'input': str, 'output': str}}; got {type(tests).__name__}: {tests!r:.120}"
        )
    if named is not None and named != inferred:
        raise VerifierError(f"task.meta['test_type'] is {named!r} but task.tests looks like {inferred!r} tests")
    if inferred == "check" and not task.meta.get("entry_point"):
        raise VerifierError("check(candidate) tests need task.meta['entry_point'] naming the function under test")
    return inferred


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _module_names(*sources: str) -> list[str]:
    """Stdlib modules imported anywhere in trusted task code (imported once before the candidate forks)."""
    names: set[str] = set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return sorted(n for n in names & set(sys.stdlib_module_names) if n not in _NOT_PREIMPORTED)


@functools.lru_cache(maxsize=4096)
def _plan(kind: str, tests: str | tuple[str, ...], prelude: str, entry_point: str | None) -> dict[str, Any]:
    """What the harness needs for these tests (trusted task data, parsed here, executed only in the sandbox)."""
    if kind == "check":
        assert isinstance(tests, str)
        units, param = _check_units(tests, entry_point or "")
        binds = {param: entry_point}
        if entry_point and not hasattr(builtins, entry_point):  # never shadow a builtin the tests use
            binds[entry_point] = entry_point
        return {
            "kind": kind,
            "prelude": f"{prelude}\n{tests}",
            "units": units,
            "binds": binds,
            "modules": [],
            "preimport": _module_names(prelude, tests),
            "entry_point": entry_point,
        }
    assert isinstance(tests, tuple)
    units = []
    free: set[str] = set()
    for test in tests:
        units.append((test, True))
        try:
            free.update(n.id for n in ast.walk(ast.parse(test)) if isinstance(n, ast.Name))
        except SyntaxError:
            pass  # the harness reports it as that test's failure
    free -= set(dir(builtins))
    modules = sorted(free & set(sys.stdlib_module_names))
    binds = {name: name for name in sorted(free - set(modules))}
    if entry_point and not hasattr(builtins, entry_point):
        binds[entry_point] = entry_point
    return {
        "kind": kind,
        "prelude": prelude,
        "units": units,
        "binds": binds,
        "modules": modules,
        "preimport": sorted(set(_module_names(prelude, *tests)) | set(modules)),
        "entry_point": entry_point,
    }


def _check_units(source: str, entry_point: str) -> tuple[list[tuple[str, bool]], str]:
    """The statements of `check(candidate)`'s body as (source, is_test), and the parameter's name."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise VerifierError(f"the task's check() tests do not parse: {exc}") from exc
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if not checks or not checks[-1].args.args:
        raise VerifierError("the task's tests must define check(candidate)")
    param = checks[-1].args.args[0].arg
    whole = [("check(" + param + ")", True)]
    units = []
    for stmt in checks[-1].body:
        has_assert = any(isinstance(n, ast.Assert) and not isinstance(n.test, ast.Constant) for n in ast.walk(stmt))
        if isinstance(stmt, (ast.Return, ast.Global, ast.Nonlocal)) or any(
            isinstance(n, (ast.Return, ast.Yield, ast.YieldFrom)) and not _inside_function(stmt, n)
            for n in ast.walk(stmt)
        ):
            return whole, param  # statements that only make sense inside check(): run it whole
        units.append((ast.unparse(stmt), has_assert))
    return (units if any(is_test for _, is_test in units) else whole), param


def _inside_function(root: ast.AST, target: ast.AST) -> bool:
    for node in ast.walk(root):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and node is not root:
            if any(child is target for child in ast.walk(node)):
                return True
    return False


def _candidate_source(code: str, prefix: str) -> str:
    if not prefix:
        return code
    futures = _FUTURE_RE.findall(code)
    body = _FUTURE_RE.sub("", code) if futures else code
    return "\n".join([*futures, prefix.rstrip("\n"), body]) + "\n"


class _CpuSlots:
    """Which CPU a sandbox run of the harness pins itself to: the one with the fewest runs in flight.

    Inside one run, the harness and the candidate answer each other call by call; on one core that
    hand-off is a context switch, across cores a cross-CPU wake-up (3-4x slower on a VM). Runs in
    flight at the same time go to different cores."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: dict[int, int] = {}

    def take(self) -> int | None:
        """A CPU for the next run (None when this process may use only one)."""
        try:
            cpus = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return None
        if len(cpus) < 2:
            return None
        with self._lock:
            cpu = min(cpus, key=lambda c: (self._busy.get(c, 0), c))
            self._busy[cpu] = self._busy.get(cpu, 0) + 1
        return cpu

    def give(self, cpu: int | None) -> None:
        """The run on `cpu` has ended."""
        if cpu is not None:
            with self._lock:
                self._busy[cpu] -= 1


_CPUS = _CpuSlots()
_POOL_LOCK = threading.Lock()


STREAM_IDLE_S = 0.25
"""How long a streamed harness run may wait for its next job before it is ended (it holds a sandbox worker)."""
_STREAM_GRACE_S = 2.0


class _Stream:
    """One streamed harness run: jobs go in one at a time, each with a nonce of its own."""

    def __init__(self, stream: Any, cpu: int | None, wall_s: float) -> None:
        self.stream, self.cpu = stream, cpu
        self.retire_at = time.monotonic() + wall_s
        self.jobs = 0
        self.idle_since = time.monotonic()

    def run(self, job: _Job, limits: Limits, per_test_timeout_s: float) -> Verdict | None:
        """The job's verdict, or None when the run broke off before the job's report was complete."""
        nonce = secrets.token_hex(16)
        frame = marshal.dumps({"nonce": nonce, "job": _job_payload(job, limits, per_test_timeout_s)})
        started = time.monotonic()
        deadline = started + limits.wall_time_s + _STREAM_GRACE_S
        self.jobs += 1
        self.stream.write(struct.pack(">I", len(frame)) + frame)
        text = ""
        while True:
            chunk = self.stream.read(max(0.0, deadline - time.monotonic()))
            if not chunk:  # the run ended (b"") or the job overran its bound (None)
                return None
            text += chunk.decode("utf-8", "replace")
            if " done " in text or " fatal " in text:
                report = _parse_reports(text[: text.rfind("\n") + 1], nonce, 1)[0]
                if report.done or report.fatal is not None:
                    result = ExecResult(text, "", None, False, False, time.monotonic() - started)
                    return CodeVerifier._job_verdict_of(job, report, result, limits)


class _StreamPool:
    """Streamed harness runs that single `CodeVerifier` calls share (sandboxes with a `stream` method).

    A call takes an idle run (or starts one, up to the sandbox's workers), sends its job, reads the
    job's report and gives the run back; a run ends after `programs_per_run` jobs, near its wall-clock
    bound, after STREAM_IDLE_S without a job, or at once when another caller waits for a sandbox worker.
    Jobs of one run go one after another with the same isolation as a shared run's."""

    def __init__(self, verifier: CodeVerifier) -> None:
        self.sandbox = verifier.sandbox
        self.limits, self.per_test_timeout_s = verifier.limits, verifier.per_test_timeout_s
        self.per_run = verifier.programs_per_run
        self.size = max(1, int(getattr(self.sandbox, "workers", 1) or 1))
        self._cond = threading.Condition()
        self._idle: list[_Stream] = []
        self._open = 0
        self._reaper: threading.Thread | None = None
        self._closed = False

    def verdict(self, job: _Job) -> Verdict | None:
        """The job's verdict through a streamed run; None when it has to run alone."""
        stream = self._take()
        if stream is None:
            return None
        verdict = None
        try:
            verdict = stream.run(job, self.limits, self.per_test_timeout_s)
        except SandboxError:
            pass
        finally:
            self._give(stream, healthy=verdict is not None)
        return verdict

    def close_idle(self) -> None:
        """End every run that waits for a job (so that the sandbox's workers are free for others)."""
        with self._cond:
            idle, self._idle = self._idle, []
        for stream in idle:
            self._end(stream)

    def close(self) -> None:
        """End every idle run; runs in use end when they are given back."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.close_idle()

    def _take(self) -> _Stream | None:
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._idle:
                    return self._idle.pop()
                if self._open < self.size:
                    self._open += 1
                    break
                self._cond.wait()
        cpu = _CPUS.take()
        wall_s = self.limits.wall_time_s * self.per_run + _STREAM_GRACE_S
        try:
            public = marshal.dumps({"preimport": [], "cpu": cpu, "stream": True})
            stdin = _HARNESS_FRAMES + struct.pack(">I", len(public)) + public
            live = self.sandbox.stream(  # type: ignore[attr-defined]
                _BOOTSTRAP, stdin=stdin, limits=replace(self.limits, wall_time_s=wall_s)
            )
        except BaseException:
            _CPUS.give(cpu)
            with self._cond:
                self._open -= 1
                self._cond.notify()
            return None
        return _Stream(live, cpu, wall_s)

    def _give(self, stream: _Stream, healthy: bool) -> None:
        worn = stream.jobs >= self.per_run or time.monotonic() + self.limits.wall_time_s + 1.0 > stream.retire_at
        wanted = getattr(self.sandbox, "waiting", 0) > 0  # someone else needs a worker
        if not healthy or worn or wanted or self._closed:
            self._end(stream, stop=not healthy)
            return
        stream.idle_since = time.monotonic()
        with self._cond:
            self._idle.append(stream)
            self._cond.notify()
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="llmenv-code-streams", daemon=True)
                self._reaper.start()

    def _end(self, stream: _Stream, stop: bool = False) -> None:
        try:
            stream.stream.close(stop=stop)
        except SandboxError:
            pass
        finally:
            _CPUS.give(stream.cpu)
            with self._cond:
                self._open -= 1
                self._cond.notify()

    def _reap(self) -> None:
        """End runs idle for STREAM_IDLE_S, or at once while another caller waits for a sandbox worker."""
        while True:
            with self._cond:
                if not self._idle:
                    self._reaper = None
                    return
                now = time.monotonic()
                wanted = getattr(self.sandbox, "waiting", 0) > 0
                done = [s for s in self._idle if wanted or now - s.idle_since >= STREAM_IDLE_S]
                self._idle = [s for s in self._idle if s not in done]
            for stream in done:
                self._end(stream)
            time.sleep(0.02)


def _job_payload(job: _Job, limits: Limits, per_test_timeout_s: float) -> dict[str, Any]:
    """What the harness gets of one job."""
    return {
        "code": job.code,
        "prelude": job.plan["prelude"],
        "units": job.plan["units"],
        "binds": job.plan["binds"],
        "modules": job.plan["modules"],
        "entry_point": job.plan["entry_point"],
        "timeout_s": float(per_test_timeout_s),
        "budget_s": float(limits.wall_time_s),
    }


@dataclass(frozen=True)
class _Job:
    """One completion's code and the harness plan of its task's tests."""

    code: str
    plan: Mapping[str, Any]


class CodeVerifier(BaseVerifier):
    """Runs the code in a completion against `task.tests` in a sandbox; reward = fraction of tests passed.

    Args:
        sandbox: where code runs; default `llmenv.sandboxes.default_sandbox()` (the standard library only);
            pass `LocalSandbox(site_packages=[folder])` to let the code import the packages in folder (read-only).
        limits: bounds of one program's run (for stdin/stdout tests, `wall_time_s` bounds all cases together).
        per_test_timeout_s: bound of one test (one check() statement, one assert, one stdin/stdout case),
            and of loading the code.
        programs_per_run: how many completions one sandbox run checks (function-call tests only).
            1 gives each completion a fresh sandbox run (new namespaces). Above 1, the programs of a
            run go one after another, each in fresh processes forked by a spawner that was forked
            before any test was read (no program's processes ever hold a test or a nonce); between two
            programs every process the first left is killed, the spawner must prove it was not tampered
            with (stopped, rlimits, priority), and LocalSandbox's scratch dirs are wiped; a program whose
            results are incomplete is re-run alone. This amortises the sandbox's start-up cost (about
            3.5x the throughput at 32). `verify_batch` splits a batch into such runs of even sizes, at
            least one per sandbox worker. Single calls (`__call__`, from any number of threads) share
            streamed runs where the sandbox has `stream` (LocalSandbox): at most one per sandbox worker,
            each fed one job at a time and ended after `programs_per_run` jobs, after STREAM_IDLE_S
            without one, or at once when another caller waits for a sandbox worker; elsewhere (or at 1)
            a single call gets a run of its own. `close()` ends the streamed runs at once.

    Every run pins itself (its harness, spawner and candidates) to the CPU with the fewest of this
    process's runs in flight: a test calls into the candidate and waits for the answer, and that
    hand-off costs 3-4x more across cores than on one.
    """

    time_bounded = True

    def __init__(
        self,
        sandbox: Sandbox | None = None,
        *,
        limits: Limits = Limits(wall_time_s=20.0, memory_mb=1024),  # noqa: B008 - frozen value
        per_test_timeout_s: float = 4.0,
        programs_per_run: int = 32,
    ) -> None:
        if not (math.isfinite(per_test_timeout_s) and 0 < per_test_timeout_s <= limits.wall_time_s):
            raise VerifierError(
                f"per_test_timeout_s must be in (0, limits.wall_time_s={limits.wall_time_s}], got {per_test_timeout_s}"
            )
        if not isinstance(programs_per_run, int) or programs_per_run < 1:
            raise VerifierError(f"programs_per_run must be a positive int, got {programs_per_run!r}")
        self._sandbox = sandbox
        self._default_sandbox = sandbox is None
        self._pool: _StreamPool | None = None
        self.limits = limits
        self.per_test_timeout_s = per_test_timeout_s
        self.programs_per_run = programs_per_run

    @property
    def sandbox(self) -> Sandbox:
        """The sandbox in use (the shared default one unless one was given)."""
        if self._sandbox is None:
            from llmenv.sandboxes import default_sandbox

            self._sandbox = default_sandbox()
        return self._sandbox

    def __call__(self, completion: str, task: Task) -> Verdict:
        """Score one completion: the fraction of `task.tests` its code passes (thread-safe; calls made at
        the same time share streamed runs where the sandbox can stream)."""
        job = self._job(completion, task)
        if not isinstance(job, _Job):
            return self._run_stdio(*job)
        pool = self._streams()
        verdict = pool.verdict(job) if pool is not None else None
        return verdict if verdict is not None else self._run_jobs([job])[0]

    def _streams(self) -> _StreamPool | None:
        if self.programs_per_run < 2 or not callable(getattr(self.sandbox, "stream", None)):
            return None
        with _POOL_LOCK:
            if self._pool is None:
                self._pool = _StreamPool(self)
            return self._pool

    def close(self) -> None:
        """End the streamed runs this verifier keeps (they also end by themselves when idle)."""
        if self._pool is not None:
            self._pool.close()

    def __getstate__(self) -> dict[str, Any]:
        """A copy for another process (a Ray actor, a worker): no streamed runs, and its own default sandbox."""
        state = self.__dict__ | {"_pool": None}
        if state.get("_default_sandbox", False):
            state["_sandbox"] = None  # the process-wide default sandbox stays here; the copy starts its own
        return state

    def verify_batch(
        self, completions: Sequence[str], tasks: Sequence[Task], *, max_workers: int | None = None
    ) -> list[Verdict]:
        """Score many completions in parallel (threads over the thread-safe sandbox); verdicts in input order."""
        if len(completions) != len(tasks):
            raise ValueError(f"got {len(completions)} completions for {len(tasks)} tasks; expected one task each")
        if self._pool is not None:
            self._pool.close_idle()  # the shared runs below need the workers that idle streamed runs hold
        verdicts: list[Verdict | None] = [None] * len(completions)
        chunks: list[list[int]] = []
        jobs: dict[int, _Job] = {}
        for i, (completion, task) in enumerate(zip(completions, tasks)):
            try:
                job = self._job(completion, task)
            except Exception as exc:  # noqa: BLE001 - recorded on the Verdict, like call_verifier does
                verdicts[i] = Verdict.failure(f"verifier raised {describe_exception(exc)}", name="tests")
                continue
            if isinstance(job, _Job):
                jobs[i] = job
            else:
                chunks.append([i])  # stdin/stdout programs: one at a time (a run per case)
        workers = max_workers or getattr(self.sandbox, "workers", None) or os.cpu_count() or 1
        # as few shared runs as programs_per_run allows, but at least one per worker, of even sizes
        runs = min(len(jobs), max(workers, -(-len(jobs) // self.programs_per_run)))
        order = list(jobs)
        chunks += [order[k * len(order) // runs : (k + 1) * len(order) // runs] for k in range(runs)]

        def run(chunk: list[int]) -> None:
            if chunk[0] in jobs:
                results = self._run_jobs([jobs[i] for i in chunk])
            else:
                results = [call_verifier(self, completions[chunk[0]], tasks[chunk[0]], timeout_s=None, name="tests")]
            for i, verdict in zip(chunk, results):
                verdicts[i] = verdict

        if chunks:
            with ThreadPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
                list(pool.map(run, chunks))
        return [v if v is not None else Verdict.failure("no verdict was produced", name="tests") for v in verdicts]

    def _job(self, completion: str, task: Task) -> _Job | tuple[str, Sequence[Mapping[str, str]]]:
        kind = kind_of_tests(task)
        code = _candidate_source(extract_code(completion), task.meta.get("code_prefix") or "")
        if kind == "stdio":
            return code, task.tests
        tests = task.tests if isinstance(task.tests, str) else tuple(task.tests)
        return _Job(code, _plan(kind, tests, task.meta.get("test_prelude") or "", task.meta.get("entry_point")))

    def _run_jobs(self, jobs: list[_Job]) -> list[Verdict]:
        """Run the jobs in one sandbox run; jobs of a shared run left incomplete are re-run alone."""
        nonce = secrets.token_hex(16)
        preimport = sorted({name for job in jobs for name in job.plan["preimport"]})
        cpu = _CPUS.take()
        public = marshal.dumps({"preimport": preimport, "cpu": cpu})
        secret = marshal.dumps(
            {"nonce": nonce, "jobs": [_job_payload(job, self.limits, self.per_test_timeout_s) for job in jobs]}
        )
        limits = replace(self.limits, wall_time_s=self.limits.wall_time_s * len(jobs))
        try:
            result = self.sandbox.run(
                _BOOTSTRAP, stdin=_HARNESS_FRAMES + struct.pack(">I", len(public)) + public + secret, limits=limits
            )
        except SandboxError as exc:
            return [Verdict.failure(f"the sandbox could not run the tests: {exc}", name="tests")] * len(jobs)
        finally:
            _CPUS.give(cpu)
        reports = _parse_reports(result.stdout, nonce, len(jobs))
        verdicts = []
        for job, report in zip(jobs, reports):
            if len(jobs) > 1 and not report.done:
                verdicts.append(self._run_jobs([job])[0])  # the shared run broke off: this one gets its own
            else:
                verdicts.append(self._job_verdict(job, report, result))
        return verdicts

    def _job_verdict(self, job: _Job, report: _Report, result: ExecResult) -> Verdict:
        return self._job_verdict_of(job, report, result, self.limits)

    @staticmethod
    def _job_verdict_of(job: _Job, report: _Report, result: ExecResult, limits: Limits) -> Verdict:
        labels = [source for source, is_test in job.plan["units"] if is_test]
        if report.fatal is not None:
            return Verdict.failure(f"the task's tests could not be set up: {report.fatal}", name="tests")
        if report.total is None or report.total != len(labels):
            return Verdict.failure(
                f"the test harness did not start ({_run_summary(result)}); stderr: {_short(result.stderr[-600:])}",
                name="tests",
            )
        missing = _missing_reason(result, limits)
        rows = []
        for i, label in enumerate(labels):
            ok, reason = report.outcomes.get(i, (False, missing))
            rows.append({"test": _short(label)[:160], "passed": ok, "reason": reason})
        timed_out = report.timed_out or (result.timed_out and not report.done)
        return _verdict(rows, job.plan["kind"], job.code, timed_out=timed_out)

    def _run_stdio(self, code: str, cases: Sequence[Mapping[str, str]]) -> Verdict:
        deadline = time.monotonic() + self.limits.wall_time_s
        rows, timed_out, fatal = [], False, None
        for case in cases:
            label = _short(case["input"])[:160]
            left = deadline - time.monotonic()
            if fatal is not None or left <= 0.05:
                reason = fatal or f"not run: the {self.limits.wall_time_s:g}s time budget of all cases was used up"
                timed_out = timed_out or fatal is None
                rows.append({"test": label, "passed": False, "reason": reason})
                continue
            limits = replace(self.limits, wall_time_s=min(self.per_test_timeout_s, left))
            try:
                result = self.sandbox.run(code, stdin=case["input"], limits=limits)
            except SandboxError as exc:
                return Verdict.failure(f"the sandbox could not run the code: {exc}", name="tests")
            ok, reason = _judge_case(result, case["output"], limits)
            if (
                not ok
                and result.exit_code not in (0, None)
                and re.search(r"^(SyntaxError|IndentationError|TabError)\b", result.stderr.strip().rsplit("\n", 1)[-1])
            ):
                fatal = reason  # the program does not compile: every case would fail the same way
            rows.append({"test": label, "passed": ok, "reason": reason})
        return _verdict(rows, "stdio", code, timed_out=timed_out)


@dataclass
class _Report:
    """What the harness said about one job (only lines carrying that job's nonce)."""

    total: int | None = None
    outcomes: dict[int, tuple[bool, str]] = field(default_factory=dict)
    done: bool = False
    timed_out: bool = False
    fatal: str | None = None


def _parse_reports(stdout: str, nonce: str, count: int) -> list[_Report]:
    """Per-job reports from the harness's stdout; lines without a nonce the harness announced are ignored."""
    reports = [_Report() for _ in range(count)]
    job_of: dict[str, int] = {}
    start = f"{nonce} start "
    for line in stdout.splitlines():
        if line.startswith(start):
            parts = line[len(start) :].split(" ")
            index = int(parts[0]) if len(parts) == 2 and parts[0].isdigit() else count
            if index < count and index not in job_of.values():
                job_of[parts[1]] = index
            continue
        tag, _, rest = line.partition(" ")
        if tag not in job_of:
            continue  # only the harness knows the job nonces
        report = reports[job_of[tag]]
        kind, _, body = rest.partition(" ")
        if kind == "plan" and report.total is None and body.isdigit():
            report.total = int(body)
        elif kind == "result":
            test_index, ok, reason = (body.split(" ", 2) + [""])[:3]
            if test_index.isdigit():
                report.outcomes.setdefault(int(test_index), (ok == "1", _unescape(reason)))
        elif kind == "done":
            report.done, report.timed_out = True, body == "timeout"
        elif kind == "fatal":
            report.fatal = _unescape(body)
    return reports


def _unescape(text: str) -> str:
    return text.encode("ascii", "replace").decode("unicode_escape", "replace")


def _judge_case(result: ExecResult, expected: str, limits: Limits) -> tuple[bool, str]:
    if result.timed_out:
        return False, f"timed out after {limits.wall_time_s:g}s"
    if result.memory_exceeded:
        return False, f"memory limit of {limits.memory_mb} MB exceeded"
    if result.exit_code != 0:
        last = result.stderr.strip().rsplit("\n", 1)[-1] if result.stderr.strip() else ""
        return False, _short(f"runtime error ({_run_summary(result)}): {last}")
    got, want = normalize_output(result.stdout), normalize_output(expected)
    if got == want:
        return True, ""
    return False, _short(f"wrong answer: expected {want[:100]!r}, got {got[:100]!r}")


def _run_summary(result: ExecResult) -> str:
    if result.timed_out:
        return "timed out"
    if result.memory_exceeded:
        return "memory limit exceeded"
    if result.signal is not None:
        return f"killed by signal {result.signal}"
    return f"exit code {result.exit_code}"


def _missing_reason(result: ExecResult, limits: Limits) -> str:
    if result.timed_out:
        return f"timed out: the whole run hit its {limits.wall_time_s:g}s bound before this test"
    if result.memory_exceeded:
        return f"no result: the run exceeded its {limits.memory_mb} MB memory bound"
    return f"no result: the test harness was stopped ({_run_summary(result)})"


def _verdict(rows: list[dict[str, Any]], kind: str, code: str, *, timed_out: bool) -> Verdict:
    passed = sum(row["passed"] for row in rows)
    fraction = passed / len(rows)
    return Verdict(
        reward=fraction,
        passed=passed == len(rows),
        parts={"tests": fraction},
        details={
            "test_type": kind,
            "passed": passed,
            "total": len(rows),
            "tests": rows,
            "timed_out": timed_out,
            "code": code[:_MAX_CODE_IN_DETAILS],
        },
    )
