"""`LocalSandbox`: the default backend, running untrusted code in Linux namespaces from warm fork servers.

It exists so that a verifier can run model-written Python (or any command over files) in a few
milliseconds with no network, no view of the host's files beyond read-only system and Python paths,
a scrubbed environment, rlimits, a seccomp filter and a wall-clock bound that kills the whole process
tree. It must never run code outside namespaces unless the caller names the unsafe mode explicitly,
never trust what a server sends beyond JSON and bytes, and never let `run()` hang or leave a process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, NoReturn

from llmenv.sandboxes import _server
from llmenv.sandboxes.base import ExecResult, Limits, SandboxError, SandboxUnavailableError, normalize_files

__all__ = ["DEFAULT_PRELOAD", "LocalSandbox", "SandboxStream", "namespace_support"]

DEFAULT_PRELOAD: tuple[str, ...] = tuple(
    """abc array bisect collections copy dataclasses datetime decimal enum fractions functools heapq io
    itertools json math operator random re statistics string textwrap traceback typing unittest""".split()
)
"""Modules imported once by each warm server, so that runs importing them pay nothing."""

REPLY_GRACE_S = 10.0
"""How long past a run's wall-clock bound the host waits for its server before declaring it wedged."""
STARTUP_TIMEOUT_S = 60.0
_OOM_PATTERN = re.compile(r"(^|\n)MemoryError\b|std::bad_alloc|Cannot allocate memory|out of memory", re.IGNORECASE)


def namespace_support() -> str | None:
    """Why this host cannot run `LocalSandbox` with namespaces, or None if it looks able to."""
    if not sys.platform.startswith("linux"):
        return f"LocalSandbox needs Linux namespaces; this is {sys.platform}"
    if _server.SYS_PIVOT_ROOT is None:
        return f"LocalSandbox does not know this CPU architecture ({os.uname().machine})"
    if not os.path.exists("/proc/self/ns/user"):
        return "the kernel has no user namespaces (CONFIG_USER_NS is off)"
    checks = [
        ("/proc/sys/user/max_user_namespaces", "0", "user namespaces are disabled: sysctl user.max_user_namespaces=0")
    ]
    if os.geteuid() != 0:
        checks += [
            (
                "/proc/sys/kernel/unprivileged_userns_clone",
                "0",
                "unprivileged user namespaces are disabled: sysctl kernel.unprivileged_userns_clone=0",
            ),
            (
                "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
                "1",
                "AppArmor forbids unprivileged user namespaces: sysctl kernel.apparmor_restrict_unprivileged_userns=1",
            ),
        ]
    for path, bad, reason in checks:
        try:
            with open(path) as f:
                if f.read().strip() == bad:
                    return reason
        except OSError:
            pass
    return None


class _Worker:
    """Host-side handle of one server process and its control pipes."""

    def __init__(self, config: dict[str, Any], python: str) -> None:
        debug = os.environ.get("LLMENV_SANDBOX_DEBUG")
        self.proc = subprocess.Popen(
            [python, "-I", os.path.join(os.path.dirname(__file__), "_server.py"), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None if debug else subprocess.DEVNULL,
            env={"LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"},
            close_fds=True,
            start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.to_server, self.from_server = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        os.set_blocking(self.to_server, False)
        self.server_pid: int | None = None
        self.features: dict[str, Any] = {}
        self.busy = True
        """Held by a run or a stream (from `_acquire` to `_release`)."""
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            first = self.read_header(deadline)
            if "error" in first:
                raise SandboxUnavailableError(f"{first['error']} ({_HOST_NEEDS})")
            self.server_pid = int(first["server_pid"])
            ready = self.read_header(deadline)
            if "error" in ready:
                raise SandboxUnavailableError(f"{ready['error']} ({_HOST_NEEDS})")
            self.features = ready
        except BaseException:
            self.kill()
            raise

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, close_pipes: bool = True) -> None:
        """Kill the server (and with it every run inside) and reap it; never blocks for long.

        A worker in use keeps its pipes open (its user reads EOF, then releases it, which closes them):
        closed there, their fd numbers could be reused by a new worker's pipes while the user still reads."""
        if self.proc.poll() is None and self.server_pid is not None and self.server_pid != self.proc.pid:
            try:
                os.kill(self.server_pid, signal.SIGKILL)  # the pid-namespace init: takes all runs down with it
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if not close_pipes:
            return
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass

    def send(self, payload: bytes, deadline: float) -> None:
        view = memoryview(payload)
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [self.to_server], [], left)[1]:
                raise TimeoutError("sandbox server did not accept the request in time")
            view = view[os.write(self.to_server, view) :]

    def read_exact(self, size: int, deadline: float) -> bytes:
        chunks, got = [], 0
        while got < size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_server], [], [], left)[0]:
                raise TimeoutError("sandbox server did not answer in time")
            chunk = os.read(self.from_server, min(size - got, 1 << 20))
            if not chunk:
                raise EOFError("sandbox server exited")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def read_header(self, deadline: float) -> dict[str, Any]:
        size = int.from_bytes(self.read_exact(4, deadline), "big")
        header = json.loads(self.read_exact(size, deadline))
        if not isinstance(header, dict):
            raise SandboxError("sandbox server sent a malformed reply")
        return header


_HOST_NEEDS = (
    "LocalSandbox needs Linux with user, mount, pid, net, ipc and uts namespaces usable by this user "
    "(user.max_user_namespaces > 0; kernel.unprivileged_userns_clone=1 and no AppArmor userns restriction "
    "when not root); pass unsafe_no_namespaces=True only for trusted code"
)


class LocalSandbox:
    """Runs untrusted code in Linux namespaces through a pool of warm fork servers.

    Each worker is a server process (`_server.py`) that builds a read-only root view, enters
    new user/mount/pid/net/ipc/uts namespaces and preloads modules. A run forks from it, unshares a fresh
    user/mount/pid/net/ipc/uts namespace set of its own (so killing its pid-1 init kills every descendant,
    double-forked or not), mounts size-bounded tmpfs on /tmp, /sandbox (the working directory) and
    /dev/shm, drops all capabilities, sets rlimits and a seccomp filter, and either runs Python source in
    the already-warm interpreter or execs `cmd`. Nothing written survives: the tmpfs mounts die with the
    run's mount namespace. Each server prepares its next run's namespaces and init ahead of the request
    (one per server, never shared between runs, killed with the server on `close()`).

    Bounds and how each is enforced:

    - wall clock: the server kills the run's pid-namespace init with SIGKILL at the deadline, which
      kills every process of the run; `run()` returns only after all of them are reaped.
    - CPU time: RLIMIT_CPU (SIGXCPU, then SIGKILL a second later), per process.
    - memory: `memory_mb` bounds the whole run. Its pid-1 init sums, every ~5 ms, RssAnon + RssShmem of
      every process of the run plus what is stored on its tmpfs mounts (/tmp, /sandbox, /dev/shm);
      past the bound (confirmed with PSS, so forks sharing the warm interpreter count once) it
      SIGKILLs every process and the reply says so: `memory_exceeded` with signal SIGKILL. RLIMIT_AS
      is only a generous cap on address space (memory_mb + 8 GB per process, so thread stacks and
      malloc arenas that are reserved but never touched do not count: a 16-thread pool runs under
      256 MB); an allocation it refuses counts as `memory_exceeded` when the program failed and its
      stderr shows `MemoryError`, `std::bad_alloc`, "Cannot allocate memory" or "out of memory".
      memfd_create, shmget and msgget (memory the sum cannot see) are denied. Not counted (there is
      no cgroup): kernel memory such as socket and pipe buffers, and the overshoot of one poll
      interval. The unsafe mode has only RLIMIT_AS, of memory_mb itself.
    - processes: RLIMIT_NPROC, counted per uid within the run's own user namespace (the server never
      runs as host root, where RLIMIT_NPROC would not apply).
    - files: RLIMIT_FSIZE per file and tmpfs sizes of max_file_mb for /tmp, /dev/shm and the working dir.
    - output: stdout and stderr are each kept up to max_output_bytes; the rest is read and discarded.

    Packages: a run imports the standard library only (the interpreter's own site-packages are
    covered by an empty read-only folder), plus the folders named in `site_packages`, for example
    `LocalSandbox(site_packages=[".venv/lib/python3.11/site-packages"])` to let programs `import numpy`.
    Each folder is bind-mounted read-only at its own path, processed like a site dir (its .pth files
    apply) and put on the import path of Python-source runs and on PYTHONPATH for `cmd` runs; a run
    cannot write there. A path that is not an existing directory, or that lies under /tmp (each run has
    its own /tmp), raises ValueError. The folders must
    suit `python` (same version and ABI); modules listed in `preload` may come from them.

    Streamed runs: `stream()` starts a program like `run()` (same namespaces, bounds and wall clock,
    which here bounds the stream's whole life) whose stdin is a pipe the caller feeds with
    `write()` while it reads stdout as it comes with `read()`; `close()` ends its stdin (or stops it)
    and gives the ExecResult. A stream holds its worker until it ends; `waiting` says how many callers
    want one meanwhile. CodeVerifier's single calls share streamed runs (DockerSandbox has none: there
    each call is a run).

    Servers start lazily, one per concurrent run up to `workers` (and a separate pool for
    `Limits(network=True)`, which shares the host's network). `SandboxUnavailableError` comes from the
    constructor when `namespace_support()` finds a missing kernel feature, or from the first `run()`
    when a server cannot isolate itself (for example, proc cannot be mounted in a user namespace).

    With `unsafe_no_namespaces=True` only rlimits, a scrubbed environment, a temporary working
    directory and process-group/subreaper killing apply: that mode is NOT a security boundary (the
    program sees the host's files and network) and is meant for trusted code on hosts without namespaces.
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        python: str = sys.executable,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        site_packages: Sequence[str | os.PathLike[str]] = (),
        unsafe_no_namespaces: bool = False,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.site_packages = tuple(_package_folder(p) for p in site_packages)
        if not unsafe_no_namespaces:
            reason = namespace_support()
            if reason is not None:
                raise SandboxUnavailableError(f"{reason}. {_HOST_NEEDS}")
        self.workers = workers
        self.python = python
        self.preload = tuple(preload)
        self.unsafe_no_namespaces = unsafe_no_namespaces
        self._cond = threading.Condition()
        self._idle: dict[bool, list[_Worker]] = {False: [], True: []}
        self._count = {False: 0, True: 0}
        self._waiting = 0
        self._all: set[_Worker] = set()
        self._closed = False
        self._finalizer = weakref.finalize(self, _kill_all, self._all)

    def __enter__(self) -> LocalSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill every server (and any run still inside one); later runs raise SandboxError."""
        with self._cond:
            self._closed = True
            self._idle = {False: [], True: []}
            self._cond.notify_all()
        _kill_all(self._all)

    def run(
        self,
        files_or_code: str | Mapping[str, str | bytes],
        *,
        cmd: list[str] | None = None,
        stdin: str | bytes = "",
        limits: Limits | None = None,
    ) -> ExecResult:
        """Run Python source (a str, in a warm interpreter) or `cmd` over files; thread-safe."""
        files, cmd = normalize_files(files_or_code, cmd)
        limits = limits or Limits()
        stdin_bytes = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
        limit_fields = asdict(limits) | {"cpu_s": limits.effective_cpu_time_s}
        header = {
            "cmd": cmd,
            "limits": limit_fields,
            "files": [[p, len(c)] for p, c in files.items()],
            "stdin_size": len(stdin_bytes),
        }
        data = json.dumps(header).encode()
        payload = len(data).to_bytes(4, "big") + data + b"".join(files.values()) + stdin_bytes
        for attempt in range(2):
            worker = self._acquire(limits.network)
            healthy = False
            try:
                deadline = time.monotonic() + limits.wall_time_s + REPLY_GRACE_S
                try:
                    worker.send(payload, deadline)
                except (BrokenPipeError, ConnectionResetError):
                    if attempt == 0:
                        continue  # an idle server died; the request never reached it, so try a fresh one
                    raise SandboxError("sandbox server exited before taking the request") from None
                reply = worker.read_header(deadline)
                out = worker.read_exact(int(reply.get("stdout_size", 0)), deadline)
                err = worker.read_exact(int(reply.get("stderr_size", 0)), deadline)
                healthy = True
            except (TimeoutError, EOFError, OSError) as exc:
                raise SandboxError(f"sandbox server failed ({exc}); it was killed and will be restarted") from exc
            finally:
                self._release(worker, limits.network, healthy)
            return _result(reply, out, err)
        raise AssertionError("unreachable")

    @property
    def waiting(self) -> int:
        """How many callers are waiting for a free worker now (holders of idle streams should end them)."""
        return self._waiting

    def stream(
        self,
        files_or_code: str | Mapping[str, str | bytes],
        *,
        cmd: list[str] | None = None,
        stdin: str | bytes = "",
        limits: Limits | None = None,
    ) -> SandboxStream:
        """Start a program that takes stdin and gives stdout while it runs (same isolation and bounds as `run`).

        The stream holds one of this sandbox's workers until `close()`; `limits.wall_time_s` bounds
        its whole life. A program's stdin here is a pipe (a `run`'s is a file)."""
        files, cmd = normalize_files(files_or_code, cmd)
        limits = limits or Limits()
        stdin_bytes = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
        header = {
            "cmd": cmd,
            "limits": asdict(limits) | {"cpu_s": limits.effective_cpu_time_s},
            "files": [[p, len(c)] for p, c in files.items()],
            "stdin_size": len(stdin_bytes),
            "stream": True,
        }
        data = json.dumps(header).encode()
        payload = len(data).to_bytes(4, "big") + data + b"".join(files.values()) + stdin_bytes
        for attempt in range(2):
            worker = self._acquire(limits.network)
            deadline = time.monotonic() + limits.wall_time_s + REPLY_GRACE_S
            try:
                worker.send(payload, deadline)
            except (BrokenPipeError, ConnectionResetError):
                self._release(worker, limits.network, False)
                if attempt == 0:
                    continue  # an idle server died; the request never reached it, so try a fresh one
                raise SandboxError("sandbox server exited before taking the request") from None
            except BaseException as exc:
                self._release(worker, limits.network, False)
                raise SandboxError(f"sandbox server failed ({exc}); it was killed and will be restarted") from exc
            return SandboxStream(self, worker, limits.network, deadline)
        raise AssertionError("unreachable")

    def _config(self, network: bool) -> dict[str, Any]:
        import tempfile

        return {
            "unsafe": self.unsafe_no_namespaces,
            "network": network,
            "preload": list(self.preload),
            "site_packages": list(self.site_packages),
            "tmp_root": tempfile.gettempdir(),
        }

    def _acquire(self, network: bool) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise SandboxError("this LocalSandbox is closed")
                idle = self._idle[network]
                while idle:
                    worker = idle.pop()
                    if worker.alive():
                        worker.busy = True
                        return worker
                    self._forget(worker, network)
                if self._count[network] < self.workers:
                    self._count[network] += 1
                    break
                self._waiting += 1
                try:
                    self._cond.wait()
                finally:
                    self._waiting -= 1
        try:
            worker = _Worker(self._config(network), self.python)
        except BaseException:
            with self._cond:
                self._count[network] -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._all.add(worker)
        return worker

    def _release(self, worker: _Worker, network: bool, healthy: bool) -> None:
        with self._cond:
            worker.busy = False
            if healthy and not self._closed and worker.alive():
                self._idle[network].append(worker)
            else:
                self._forget(worker, network)
            self._cond.notify()

    def _forget(self, worker: _Worker, network: bool) -> None:
        worker.kill()
        self._all.discard(worker)
        self._count[network] -= 1


class SandboxStream:
    """A program running in a `LocalSandbox` that is fed stdin and read from while it runs.

    One thread at a time. `read` gives stdout as the program writes it (b"" once the run has ended);
    `close` ends its stdin (or stops it) and returns the run's `ExecResult`, whose stdout holds only
    what came after the last `read`. Any failure of the server kills it (and the run) and raises
    SandboxError; the worker goes back to the sandbox in every case."""

    def __init__(self, sandbox: LocalSandbox, worker: _Worker, network: bool, deadline: float) -> None:
        self._sandbox, self._network, self._deadline = sandbox, network, deadline
        self._worker: _Worker | None = worker
        self._reply: dict[str, Any] | None = None
        self._stderr = b""
        self.result: ExecResult | None = None
        """The run's result once it has ended."""

    @property
    def ended(self) -> bool:
        """Whether the program's run is over (its result is then in `result`)."""
        return self._reply is not None or self._worker is None

    def write(self, data: bytes) -> None:
        """Send bytes to the program's stdin (ignored by a run that has ended)."""
        if not self.ended:
            self._send({"stdin": len(data)}, data)

    def read(self, timeout_s: float) -> bytes | None:
        """The next piece of stdout; None when nothing came within timeout_s; b"" once the run has ended."""
        if self.ended:
            return b""
        worker = self._worker
        assert worker is not None
        wait = min(timeout_s, self._deadline - time.monotonic())
        if wait < 0 or not select.select([worker.from_server], [], [], max(0.0, wait))[0]:
            if time.monotonic() >= self._deadline:
                self._fail(TimeoutError("sandbox server did not end the stream in time"))
            return None
        try:
            header = worker.read_header(self._deadline)  # a frame is written whole: this does not wait long
            if "chunk" in header:
                return worker.read_exact(int(header["chunk"]), self._deadline)
            out = worker.read_exact(int(header.get("stdout_size", 0)), self._deadline)
            self._stderr = worker.read_exact(int(header.get("stderr_size", 0)), self._deadline)
        except (TimeoutError, EOFError, OSError, ValueError) as exc:
            self._fail(exc)
        self._reply = header
        self._finish(healthy=True)
        self.result = _result(header, out, self._stderr)
        return b""

    def close(self, *, stop: bool = False) -> ExecResult:
        """End the program's stdin (or, with stop, kill its run) and wait for the end; its result."""
        chunks = []
        if not self.ended:
            self._send({"stop": True} if stop else {"eof": True})
            while (chunk := self.read(max(0.0, self._deadline - time.monotonic()))) != b"":
                chunks.append(chunk or b"")
        if self.result is None:
            raise SandboxError("the stream failed earlier; its run was killed")
        if chunks:
            self.result = dataclasses.replace(
                self.result, stdout=b"".join(chunks).decode("utf-8", "replace") + self.result.stdout
            )
        return self.result

    def _send(self, frame: dict[str, Any], data: bytes = b"") -> None:
        header = json.dumps(frame).encode()
        worker = self._worker
        assert worker is not None
        try:
            worker.send(len(header).to_bytes(4, "big") + header + data, self._deadline)
        except (TimeoutError, OSError) as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> NoReturn:
        self._finish(healthy=False)
        raise SandboxError(f"sandbox server failed ({exc}); it was killed and will be restarted") from exc

    def _finish(self, healthy: bool) -> None:
        if self._worker is not None:
            worker, self._worker = self._worker, None
            self._sandbox._release(worker, self._network, healthy)


def _package_folder(path: str | os.PathLike[str]) -> str:
    """The real path of one `site_packages` entry, or ValueError naming it and the expected form."""
    name = os.fspath(path)
    expected = (
        "expected a folder that holds importable packages, such as a venv's lib/python3.X/site-packages "
        "(the folder above `numpy.__file__`'s package folder)"
    )
    if not os.path.isdir(name):
        problem = "is not a directory" if os.path.exists(name) else "does not exist"
        raise ValueError(f"site_packages entry {name!r} {problem}; {expected}")
    real = os.path.realpath(name)
    hidden = ("/tmp", "/proc", "/dev", _server.WORKDIR)
    if real == "/" or any(real == d or real.startswith(d + "/") for d in hidden):
        raise ValueError(f"site_packages entry {name!r} lies under {real!r}, which the sandbox covers; {expected}")
    return real


def _kill_all(workers: set[_Worker]) -> None:
    for worker in list(workers):
        worker.kill(close_pipes=not worker.busy)
    workers.clear()


def _result(reply: dict[str, Any], out: bytes, err: bytes) -> ExecResult:
    if "error" in reply:
        raise SandboxError(f"sandbox could not run the program: {reply['error']}")
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    status = reply.get("status")
    exit_code: int | None = None
    sig: int | None = None
    if status is None:
        sig = signal.SIGKILL  # killed at the wall-clock deadline before it ended
    elif os.WIFEXITED(status):
        exit_code = os.WEXITSTATUS(status)
    elif os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
    timed_out = bool(reply["timed_out"]) or sig == signal.SIGXCPU
    failed = exit_code != 0
    # The run's init killed it for passing the total bound; or an allocation failed under the RLIMIT_AS cap.
    memory_exceeded = bool(reply.get("memory_exceeded")) or (
        failed and not timed_out and bool(_OOM_PATTERN.search(stderr[-4000:]))
    )
    return ExecResult(
        stdout=stdout,
        stderr=stderr,
        exit_code=exit_code,
        timed_out=timed_out,
        memory_exceeded=memory_exceeded,
        duration_s=float(reply["duration_s"]),
        signal=sig,
        output_truncated=bool(reply["output_truncated"]),
    )
