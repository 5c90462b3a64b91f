"""Docker backend: runs untrusted programs in locked-down, reusable containers on hosts with a Docker engine.

`DockerSandbox` keeps a few idle containers (`sleep infinity`, no network, read-only root, tmpfs
scratch space, memory/pids/CPU bounds, every capability dropped, non-root) and runs each program
with `docker exec` inside a fresh per-run directory, then kills every process the run started and
wipes every writable place before the container may serve another run. It must never mount
anything from the host, never give the program network unless `Limits.network` asks for it, never
run the program as root, never let state (files, processes, IPC objects) survive from one run to
the next, and never let a call hang past the wall-clock bound: a container whose state is in doubt
(host-side timeout, OOM kill, failed cleanup, engine error) is removed, not reused. Every argument
sent to the engine is built by a small pure function here, so the policy is testable without one.
"""

from __future__ import annotations

import io
import select
import signal as _signal
import socket
import tarfile
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmenv.sandboxes.base import ExecResult, Limits, SandboxError, SandboxUnavailableError, normalize_files

__all__ = [
    "DockerSandbox",
    "OutputDemuxer",
    "classify_exit",
    "cleanup_command",
    "container_config",
    "container_key",
    "exec_command",
    "extract_command",
    "tar_files",
]

WORKDIR = "/sandbox"
"""Mount point of the per-container tmpfs that holds one directory per run."""
RUN_USER = "65534:65534"
"""Who runs the program (nobody:nogroup); cleanup kills every process of this uid."""
KEEPER_USER = "65533:65533"
"""Who runs the container's idle `sleep infinity` (and its init), so cleanup cannot kill it."""
PID_OVERHEAD = 4
"""Container pids beyond `Limits.max_processes`: init, sleep, the `timeout` wrapper, a cleanup shell."""
NOFILE = 1024
"""Open-file bound of the program."""
HOST_GRACE_S = 2.0
"""How long past `wall_time_s` the host waits before it gives up on the exec and removes the container."""
SETUP_TIMEOUT_S = 30.0
"""Host-side bound on writing the files in and on cleaning up."""
LABEL = "llmenv.sandbox"
"""Label on every container this module starts (`docker rm -f $(docker ps -aq -f label=llmenv.sandbox)`)."""

_MIB = 1024 * 1024


# --------------------------------------------------------------------------- pure argument builders


def container_key(limits: Limits) -> tuple[int, int, int, bool]:
    """The container-level part of `limits`; runs share a warm container only when their keys match."""
    return (int(limits.memory_mb), int(limits.max_processes), int(limits.max_file_mb), bool(limits.network))


def container_config(limits: Limits, image: str) -> dict[str, Any]:
    """Keyword arguments for `client.containers.create` of one idle, locked-down sandbox container."""
    file_mb = int(limits.max_file_mb)
    tmpfs_opts = f"rw,nosuid,nodev,exec,size={file_mb}m,mode=1777"
    return {
        "image": image,
        "entrypoint": ["sleep"],  # replaces any image entrypoint
        "command": ["infinity"],
        "user": KEEPER_USER,
        "working_dir": WORKDIR,
        "network_mode": "bridge" if limits.network else "none",
        "network_disabled": not limits.network,
        "read_only": True,
        "tmpfs": {"/tmp": tmpfs_opts, WORKDIR: tmpfs_opts},
        "shm_size": f"{file_mb}m",
        "ipc_mode": "private",
        "mem_limit": f"{int(limits.memory_mb)}m",
        "memswap_limit": f"{int(limits.memory_mb)}m",  # equal to mem_limit: no swap
        "pids_limit": int(limits.max_processes) + PID_OVERHEAD,
        "nano_cpus": 1_000_000_000,  # one CPU
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "privileged": False,
        "init": True,  # reaps the processes cleanup kills
        # RLIMIT_CPU is set per run by exec_command (it varies with wall_time_s); these are per container.
        "ulimits": [
            {"name": "fsize", "soft": file_mb * _MIB, "hard": file_mb * _MIB},
            {"name": "nofile", "soft": NOFILE, "hard": NOFILE},
            {"name": "core", "soft": 0, "hard": 0},
        ],
        "environment": {"HOME": WORKDIR, "TMPDIR": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"},
        "hostname": "sandbox",
        "labels": {LABEL: "docker"},
        "stdin_open": False,
        "tty": False,
    }


def exec_command(cmd: list[str], limits: Limits) -> list[str]:
    """The in-container argv of one run: set RLIMIT_CPU, then run `cmd` under `timeout -s KILL wall_time_s`."""
    cpu = limits.effective_cpu_time_s
    script = 'ulimit -S -t "$1" && ulimit -H -t "$2" && shift 2 && exec timeout -s KILL "$@"'
    return ["/bin/sh", "-c", script, "sh", str(cpu), str(cpu + 1), f"{float(limits.wall_time_s):g}", *cmd]


def extract_command(run_dir: str) -> list[str]:
    """The in-container argv that creates `run_dir` and unpacks the tar fed on stdin into it."""
    return ["/bin/sh", "-c", 'mkdir -m 700 "$1" && exec tar -x -f - -C "$1"', "sh", run_dir]


def cleanup_command() -> list[str]:
    """The in-container argv (run as RUN_USER) that kills every RUN_USER process and empties every writable dir.

    `kill -9 -1` signals every process the caller may signal (same uid, no capabilities) except
    itself and init; it repeats until none is left (zombies count until init reaps them). Exit 0
    means the container is clean; anything else means it must be removed.
    """
    script = (
        "i=0; while kill -0 -1 2>/dev/null; do kill -9 -1 2>/dev/null; i=$((i+1)); "
        '[ "$i" -ge 200 ] && exit 3; sleep 0.01; done; '
        "command -v ipcrm >/dev/null 2>&1 && ipcrm -a >/dev/null 2>&1; "
        f"for d in /tmp {WORKDIR} /dev/shm /dev/mqueue; do "
        '[ -d "$d" ] || continue; rm -rf "$d"/* "$d"/.[!.]* "$d"/..?* 2>/dev/null; '
        '[ -z "$(ls -A "$d" 2>/dev/null)" ] || exit 4; done; exit 0'
    )
    return ["/bin/sh", "-c", script]


def tar_files(files: Mapping[str, bytes], *, mtime: float | None = None) -> bytes:
    """An uncompressed tar of `files` (already validated by normalize_files), with parent dirs and safe modes."""
    stamp = int(time.time() if mtime is None else mtime)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for path in sorted(files):
            parts = path.split("/")
            if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
                raise SandboxError(f"file path {path!r} must be relative without '.', '..' or empty parts")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if parent not in dirs:
                    dirs.add(parent)
                    info = tarfile.TarInfo(parent)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, stamp
                    tar.addfile(info)
            content = files[path]
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mode = 0o755 if content.startswith(b"#!") else 0o644
            info.mtime = stamp
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


class OutputDemuxer:
    """Splits Docker's multiplexed exec stream (8-byte frame headers) into stdout and stderr, each capped."""

    def __init__(self, max_bytes: int) -> None:
        """Keep at most `max_bytes` of each stream."""
        self.max_bytes = int(max_bytes)
        self._pending = bytearray()
        self._out: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
        self.truncated = False

    def feed(self, data: bytes) -> None:
        """Consume raw bytes from the socket, in any chunking."""
        self._pending += data
        while len(self._pending) >= 8:
            size = int.from_bytes(self._pending[4:8], "big")
            if len(self._pending) < 8 + size:
                break
            stream = self._pending[0]
            payload = bytes(self._pending[8 : 8 + size])
            del self._pending[: 8 + size]
            target = self._out.get(stream)
            if target is None:  # 0 (stdin echo) or unknown: ignore
                continue
            room = self.max_bytes - len(target)
            if len(payload) > room:
                self.truncated = True
                payload = payload[: max(room, 0)]
            target += payload

    @property
    def stdout(self) -> bytes:
        """What the program wrote to stdout (capped)."""
        return bytes(self._out[1])

    @property
    def stderr(self) -> bytes:
        """What the program wrote to stderr (capped)."""
        return bytes(self._out[2])


def classify_exit(
    raw_exit: int | None,
    *,
    limits: Limits,
    duration_s: float,
    host_timed_out: bool,
    oom_killed: bool,
    stdout: bytes,
    stderr: bytes,
    truncated: bool,
) -> ExecResult:
    """Turn an exec's raw exit status into an ExecResult.

    Docker reports a signal death as 128+N, so 129..192 become `signal=N, exit_code=None` (a
    program that itself exits with such a status is indistinguishable). `timed_out`: the host gave
    up, SIGXCPU (RLIMIT_CPU), or SIGKILL at or past the wall bound (`timeout -s KILL`).
    `memory_exceeded`: the engine reports OOMKilled, or SIGKILL before the wall bound (inside the
    sandbox nothing but the kernel's OOM killer sends that, unless the program kills itself), or
    a Python `MemoryError` traceback as the last stderr line.
    """
    sig: int | None = None
    code: int | None = raw_exit
    if host_timed_out:
        code, sig = None, int(_signal.SIGKILL)
    elif raw_exit is not None and 128 < raw_exit <= 128 + 64:
        code, sig = None, raw_exit - 128
    timed_out = (
        host_timed_out
        or sig == int(_signal.SIGXCPU)
        or (sig == int(_signal.SIGKILL) and duration_s >= limits.wall_time_s * 0.98)
    )
    last_err = stderr.decode("utf-8", "replace").rstrip().rsplit("\n", 1)[-1]
    memory_exceeded = not timed_out and (
        oom_killed or sig == int(_signal.SIGKILL) or (code not in (0, None) and last_err.startswith("MemoryError"))
    )
    return ExecResult(
        stdout=stdout.decode("utf-8", "replace"),
        stderr=stderr.decode("utf-8", "replace"),
        exit_code=code,
        timed_out=timed_out,
        memory_exceeded=memory_exceeded,
        duration_s=duration_s,
        signal=sig,
        output_truncated=truncated,
    )


# --------------------------------------------------------------------------- engine plumbing


def _import_docker() -> Any:
    """The `docker` SDK, or SandboxUnavailableError saying how to install it."""
    try:
        import docker  # optional dependency, imported lazily
    except ImportError as exc:
        raise SandboxUnavailableError(
            f"DockerSandbox needs the Docker SDK for Python ({exc}); install it with: pip install 'llmenv[docker]'"
        ) from exc
    return docker


@dataclass
class _ExecOutcome:
    exit_code: int | None
    host_timed_out: bool
    stdout: bytes
    stderr: bytes
    truncated: bool
    duration_s: float


def _remove_containers(containers: list[Any]) -> None:
    """Force-remove containers, ignoring errors (used by close() and at interpreter exit)."""
    while containers:
        container = containers.pop()
        try:
            container.remove(force=True)
        except Exception:  # best effort: the container may already be gone
            pass


class DockerSandbox:
    """A Sandbox backed by warm, locked-down Docker containers; see the module docstring for the rules."""

    def __init__(
        self,
        image: str = "python:3.11-slim",
        *,
        warm_containers: int = 2,
        pull: bool = False,
        client: Any = None,
    ) -> None:
        """Connect (or use `client`), check or pull `image`, and start `warm_containers` idle containers."""
        if warm_containers < 0:
            raise ValueError(f"warm_containers must be >= 0, got {warm_containers!r}")
        docker = _import_docker()
        self._errors = docker.errors
        try:
            self._client = client if client is not None else docker.from_env()
            self._client.ping()
        except Exception as exc:  # DockerException, requests errors, OSError
            raise SandboxUnavailableError(
                f"no reachable Docker engine ({type(exc).__name__}: {exc}); start dockerd or set DOCKER_HOST"
            ) from exc
        self.image = image
        self.warm_containers = int(warm_containers)
        try:
            if pull:
                self._client.images.pull(image)
            else:
                self._client.images.get(image)
        except docker.errors.ImageNotFound as exc:
            raise SandboxUnavailableError(
                f"image {image!r} is not on the engine; run `docker pull {image}` or pass pull=True"
            ) from exc
        except docker.errors.DockerException as exc:
            raise SandboxUnavailableError(f"could not get image {image!r}: {exc}") from exc
        self._lock = threading.Lock()
        self._idle: list[tuple[tuple[int, int, int, bool], Any]] = []  # oldest first
        self._all: list[Any] = []  # every live container, for close() and the exit finalizer
        self._closed = False
        self._finalizer = weakref.finalize(self, _remove_containers, self._all)
        default = Limits()
        for _ in range(self.warm_containers):
            self._idle.append((container_key(default), self._start(default)))

    # -- pool

    def _start(self, limits: Limits) -> Any:
        try:
            container = self._client.containers.create(**container_config(limits, self.image))
        except self._errors.DockerException as exc:
            raise SandboxError(f"could not create a sandbox container from {self.image!r}: {exc}") from exc
        with self._lock:
            self._all.append(container)
        try:
            container.start()
        except self._errors.DockerException as exc:
            self._discard(container)
            raise SandboxError(f"could not start a sandbox container from {self.image!r}: {exc}") from exc
        return container

    def _discard(self, container: Any) -> None:
        with self._lock:
            if container in self._all:
                self._all.remove(container)
        _remove_containers([container])

    def _acquire(self, limits: Limits) -> Any:
        key = container_key(limits)
        with self._lock:
            if self._closed:
                raise SandboxError("this DockerSandbox is closed")
            for i in range(len(self._idle) - 1, -1, -1):
                if self._idle[i][0] == key:
                    return self._idle.pop(i)[1]
        return self._start(limits)

    def _release(self, container: Any, limits: Limits, reusable: bool) -> None:
        evict: list[Any] = []
        with self._lock:
            if reusable and not self._closed and self.warm_containers > 0:
                self._idle.append((container_key(limits), container))
                while len(self._idle) > self.warm_containers:
                    evict.append(self._idle.pop(0)[1])
            else:
                evict.append(container)
        for c in evict:
            self._discard(c)

    # -- exec

    def _exec(
        self,
        container: Any,
        argv: list[str],
        *,
        stdin: bytes,
        workdir: str,
        timeout_s: float,
        max_output: int,
        environment: dict[str, str] | None = None,
    ) -> _ExecOutcome:
        """Run argv as RUN_USER, feed stdin, read capped output; never wait past timeout_s."""
        api = self._client.api
        exec_id = api.exec_create(
            container.id,
            argv,
            stdin=True,
            stdout=True,
            stderr=True,
            tty=False,
            user=RUN_USER,
            workdir=workdir,
            environment=environment,
        )["Id"]
        start = time.monotonic()
        deadline = start + timeout_s
        sock = api.exec_start(exec_id, socket=True)
        raw = getattr(sock, "_sock", sock)
        demux = OutputDemuxer(max_output)
        demux.feed(_drain_buffered(sock, raw))

        def write_stdin() -> None:
            try:
                if stdin:
                    raw.sendall(stdin)
                raw.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the program closed stdin or the run is over

        writer = threading.Thread(target=write_stdin, name="docker-sandbox-stdin", daemon=True)
        writer.start()
        host_timed_out = False
        exited_at: float | None = None
        next_poll = start + 0.5
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    host_timed_out = True
                    break
                if exited_at is not None and now >= exited_at + 0.5:
                    break  # the process is gone; something it left behind holds the stream open
                pending = getattr(raw, "pending", None)
                ready = bool(pending and pending()) or bool(select.select([raw], [], [], min(deadline - now, 0.2))[0])
                if ready:
                    chunk = raw.recv(65536)
                    if not chunk:
                        break
                    demux.feed(chunk)
                if exited_at is None and time.monotonic() >= next_poll:
                    if not api.exec_inspect(exec_id).get("Running", False):
                        exited_at = time.monotonic()
                    next_poll = time.monotonic() + 0.5
        finally:
            for closer in (lambda: raw.shutdown(socket.SHUT_RDWR), raw.close, sock.close):
                try:
                    closer()
                except OSError:
                    pass
            writer.join(timeout=1.0)
        duration = time.monotonic() - start
        exit_code: int | None = None
        if not host_timed_out:
            for _ in range(50):  # the stream can close a moment before the engine records the exit
                info = api.exec_inspect(exec_id)
                if not info.get("Running", False) and info.get("ExitCode") is not None:
                    exit_code = int(info["ExitCode"])
                    break
                time.sleep(0.02)
            else:
                host_timed_out = True
        return _ExecOutcome(exit_code, host_timed_out, demux.stdout, demux.stderr, demux.truncated, duration)

    def _oom_killed(self, container: Any) -> bool:
        try:
            container.reload()
            return bool(container.attrs.get("State", {}).get("OOMKilled", False))
        except self._errors.DockerException:
            return False

    def _cleanup(self, container: Any) -> bool:
        """Kill what the run left and wipe scratch space; False (container must go) if that fails in any way."""
        try:
            clean = self._exec(
                container, cleanup_command(), stdin=b"", workdir="/", timeout_s=SETUP_TIMEOUT_S, max_output=4096
            )
        except (self._errors.DockerException, OSError):
            return False  # e.g. the run's leftovers hold every pid, so the cleanup shell cannot start
        return not clean.host_timed_out and clean.exit_code == 0

    # -- public API

    def run(
        self,
        files_or_code: str | Mapping[str, str | bytes],
        *,
        cmd: list[str] | None = None,
        stdin: str | bytes = "",
        limits: Limits | None = None,
    ) -> ExecResult:
        """Run Python source (a str, as `python3 main.py`) or `cmd` over files in a fresh per-run directory."""
        files, argv = normalize_files(files_or_code, cmd)
        limits = limits if limits is not None else Limits()
        argv = argv if argv is not None else ["python3", "main.py"]
        stdin_bytes = stdin.encode("utf-8", "surrogatepass") if isinstance(stdin, str) else bytes(stdin)
        archive = tar_files(files)
        container = self._acquire(limits)
        reusable = False
        try:
            run_dir = f"{WORKDIR}/run-{uuid.uuid4().hex[:16]}"
            setup = self._exec(
                container,
                extract_command(run_dir),
                stdin=archive,
                workdir=WORKDIR,
                timeout_s=SETUP_TIMEOUT_S,
                max_output=64 * 1024,
            )
            if setup.host_timed_out or setup.exit_code != 0:
                raise SandboxError(
                    f"could not write the files into the sandbox (exit {setup.exit_code}, "
                    f"limit {limits.max_file_mb} MB): {setup.stderr.decode('utf-8', 'replace').strip()}"
                )
            out = self._exec(
                container,
                exec_command(argv, limits),
                stdin=stdin_bytes,
                workdir=run_dir,
                timeout_s=float(limits.wall_time_s) + HOST_GRACE_S,
                max_output=int(limits.max_output_bytes),
                environment={"HOME": run_dir, "TMPDIR": "/tmp"},
            )
            oom = False
            if not out.host_timed_out and out.exit_code == 128 + int(_signal.SIGKILL):
                oom = self._oom_killed(container)
            result = classify_exit(
                out.exit_code,
                limits=limits,
                duration_s=out.duration_s,
                host_timed_out=out.host_timed_out,
                oom_killed=oom,
                stdout=out.stdout,
                stderr=out.stderr,
                truncated=out.truncated,
            )
            if not (out.host_timed_out or result.timed_out or result.memory_exceeded):
                reusable = self._cleanup(container)
            return result
        except SandboxError:
            raise
        except (self._errors.DockerException, OSError) as exc:
            raise SandboxError(f"the Docker engine failed during a run: {type(exc).__name__}: {exc}") from exc
        finally:
            self._release(container, limits, reusable)

    def close(self) -> None:
        """Remove every container this sandbox started; later runs raise SandboxError."""
        with self._lock:
            self._closed = True
            self._idle.clear()
            doomed = list(self._all)
            self._all.clear()
        _remove_containers(doomed)

    def __enter__(self) -> DockerSandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _drain_buffered(sock: Any, raw: Any) -> bytes:
    """Bytes the HTTP layer already read past the upgrade headers (the first output of a fast program)."""
    response = getattr(sock, "_response", None)
    reader = getattr(getattr(getattr(response, "raw", None), "_fp", None), "fp", None)
    if reader is None or not hasattr(reader, "read1"):
        return b""
    data = bytearray()
    try:
        raw.setblocking(False)
        while True:
            chunk = reader.read1(65536)
            if not chunk:
                break
            data += chunk
    except (OSError, ValueError):
        pass
    finally:
        try:
            raw.setblocking(True)
        except OSError:
            pass
    return bytes(data)
