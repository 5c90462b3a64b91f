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
    # the run directory holds the input files as well as what the program writes (as LocalSandbox's does),
    # so a file written past max_file_mb meets RLIMIT_FSIZE ("File too large"), not a full disk
    workdir_opts = f"rw,nosuid,nodev,exec,size={2 * file_mb}m,mode=1777"
    return {
        "image": image,
        "entrypoint": ["sleep"],  # replaces any image entrypoint
        "command": ["infinity"],
        "user": KEEPER_USER,
        # no working_dir: the engine would create WORKDIR in the image as root 0755 and the tmpfs mounted
        # there copies that mode up, so RUN_USER could not make its run directories (each exec sets its own)
        "network_mode": "bridge" if limits.network else "none",
        "network_disabled": not limits.network,
        "read_only": True,
        "tmpfs": {"/tmp": tmpfs_opts, WORKDIR: workdir_opts},
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

    It then prints the container's OOM-kill count (`oom_kill N`, from cgroup v2 or v1) where the
    container's cgroup files are visible (Docker mounts them read-only by default).

    `kill -9 -1` signals every process the caller may signal (same uid, no capabilities) except
    itself and init; it repeats until none is left (zombies count until init reaps them). Whether
    one is left is asked of each pid in /proc with the `kill -0` builtin, which fails on the
    keeper's processes: `kill -0 -1` cannot tell, since it succeeds when any other process exists,
    signalled or not. The count is read once nothing of the run is left to allocate, so a container
    reused with a count of 0 starts the next run at 0. Exit 0 means the container is clean; anything
    else means it must be removed.
    """
    script = (
        'alive() { for d in /proc/[0-9]*; do [ "${d#/proc/}" = "$$" ] && continue; '
        'kill -0 "${d#/proc/}" 2>/dev/null && return 0; done; return 1; }; '
        "i=0; while alive; do kill -9 -1 2>/dev/null; i=$((i+1)); "
        '[ "$i" -ge 200 ] && exit 3; sleep 0.01; done; '
        "command -v ipcrm >/dev/null 2>&1 && ipcrm -a >/dev/null 2>&1; "
        f"for d in /tmp {WORKDIR} /dev/shm /dev/mqueue; do "
        '[ -d "$d" ] || continue; rm -rf "$d"/* "$d"/.[!.]* "$d"/..?* 2>/dev/null; '
        '[ -z "$(ls -A "$d" 2>/dev/null)" ] || exit 4; done; '
        "for f in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control; do "
        '[ -r "$f" ] || continue; while read -r k v; do [ "$k" = oom_kill ] && echo "oom_kill $v"; done < "$f"; '
        "break; done; exit 0"
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
    program that itself exits with such a status is indistinguishable). `raw_exit=None` means the
    host ended the run (its deadline passed, or an OOM kill was seen) by removing the container:
    SIGKILL. `timed_out`: the host gave up, SIGXCPU (RLIMIT_CPU), or SIGKILL at or past the wall
    bound (`timeout -s KILL`). `memory_exceeded`: the kernel OOM-killed a process of the run
    (`oom_killed`, from the container's counter or the engine's events), or the last stderr line is
    a Python `MemoryError`. A SIGKILL before the wall bound is not taken for memory on its own: the
    program may have killed itself or its parent.
    """
    sig: int | None = None
    code: int | None = raw_exit
    if raw_exit is None:
        code, sig = None, int(_signal.SIGKILL)
    elif raw_exit is not None and 128 < raw_exit <= 128 + 64:
        code, sig = None, raw_exit - 128
    timed_out = (
        host_timed_out
        or sig == int(_signal.SIGXCPU)
        or (sig == int(_signal.SIGKILL) and duration_s >= limits.wall_time_s * 0.98)
    )
    last_err = stderr.decode("utf-8", "replace").rstrip().rsplit("\n", 1)[-1]
    memory_exceeded = not timed_out and (oom_killed or (code not in (0, None) and last_err.startswith("MemoryError")))
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
    oom_seen: bool
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
                f"image {image!r} is not on the engine; run `docker pull {image}`, pass pull=True, or build "
                "a Python image without a registry with `bash .ci/docker.sh` (llmenv-sandbox-python:bookworm)"
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
        watch_oom: bool = False,
    ) -> _ExecOutcome:
        """Run argv as RUN_USER, feed stdin, read capped output; never wait past timeout_s.

        With `watch_oom`, stop as soon as the engine reports an OOM kill in the container (a process
        of the run passed the memory bound): the caller removes the container, ending the whole run.
        """
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
        started_wall = time.time()
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
        oom_seen = False
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
                    elif watch_oom and self._oom_event(container, started_wall):
                        oom_seen = True
                        break
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
        if not (host_timed_out or oom_seen):
            for _ in range(50):  # the stream can close a moment before the engine records the exit
                info = api.exec_inspect(exec_id)
                if not info.get("Running", False) and info.get("ExitCode") is not None:
                    exit_code = int(info["ExitCode"])
                    break
                time.sleep(0.02)
            else:
                host_timed_out = True
        return _ExecOutcome(exit_code, host_timed_out, oom_seen, demux.stdout, demux.stderr, demux.truncated, duration)

    def _oom_event(self, container: Any, since: float) -> bool:
        """Whether the engine logged an OOM kill in `container` since `since` (host clock, 2 s of slack).

        The container's `State.OOMKilled` cannot say: the engine sets it only for the container's own
        process (the keeper's `sleep`), never for a process started by `docker exec`.
        """
        try:
            events = self._client.events(
                since=since - 2.0, until=time.time(), filters={"container": container.id, "event": "oom"}, decode=True
            )
            return any(True for _ in events)
        except self._errors.DockerException:
            return False

    def _cleanup(self, container: Any) -> tuple[bool, int | None]:
        """Kill what the run left and wipe scratch space: (clean, OOM kills in the container or None if unknown).

        clean is False (the container must go) if cleanup fails in any way.
        """
        try:
            out = self._exec(
                container, cleanup_command(), stdin=b"", workdir="/", timeout_s=SETUP_TIMEOUT_S, max_output=4096
            )
        except (self._errors.DockerException, OSError):
            return False, None  # e.g. the run's leftovers hold every pid, so the cleanup shell cannot start
        oom_kills = None
        for line in out.stdout.decode("ascii", "replace").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                oom_kills = int(value)
        return not out.host_timed_out and out.exit_code == 0, oom_kills

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
        started = time.time()
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
                watch_oom=True,
            )
            oom = out.oom_seen
            if not (out.host_timed_out or out.oom_seen):
                # after the program's own end (exit, signal, `timeout` at the wall bound): clean up,
                # and count OOM kills now that nothing of the run is left to allocate
                clean, oom_kills = self._cleanup(container)
                oom = bool(oom_kills) if oom_kills is not None else self._oom_event(container, started)
                reusable = clean and not oom
            result = classify_exit(
                None if out.oom_seen else out.exit_code,
                limits=limits,
                duration_s=out.duration_s,
                host_timed_out=out.host_timed_out,
                oom_killed=oom,
                stdout=out.stdout,
                stderr=out.stderr,
                truncated=out.truncated,
            )
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
