"""The sandbox contract: `Limits` in, `ExecResult` out, and the `Sandbox` protocol every backend meets.

Model-written code is hostile by default. A sandbox runs it with hard bounds on wall time, CPU
time, memory, processes, output and file size, without network unless asked, and reports which
bound was hit. Backends (local namespaces in local.py, Docker in docker.py) implement `run`; this
module holds only the shared values and checks, and never executes anything itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from llmenv.errors import LLMEnvError

__all__ = ["ExecResult", "Limits", "Sandbox", "SandboxError", "SandboxUnavailableError", "normalize_files"]


class SandboxError(LLMEnvError, RuntimeError):
    """A sandbox could not run a program at all (not: the program failed, which is an ExecResult)."""


class SandboxUnavailableError(SandboxError):
    """The isolation a backend needs (namespaces, bwrap, a Docker engine) is missing on this host."""


@dataclass(frozen=True)
class Limits:
    """Hard bounds for one run."""

    wall_time_s: float = 10.0
    """Wall-clock bound; the whole process tree is killed when it passes."""
    cpu_time_s: float | None = None
    """CPU-time bound (RLIMIT_CPU); None means the wall-clock bound rounded up."""
    memory_mb: int = 1024
    """Address-space / memory bound of the program."""
    max_processes: int = 64
    """Processes and threads the program may have at once."""
    max_output_bytes: int = 1_000_000
    """stdout and stderr are each cut after this many bytes (the run is not stopped by it)."""
    max_file_mb: int = 64
    """Largest file the program may write (RLIMIT_FSIZE) and size of its writable scratch space."""
    network: bool = False
    """Whether the program may use the network (never on by default, not even loopback to the host)."""

    def __post_init__(self) -> None:
        for name in ("wall_time_s", "memory_mb", "max_processes", "max_output_bytes", "max_file_mb"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive finite number, got {value!r}")
        if self.cpu_time_s is not None and (not math.isfinite(self.cpu_time_s) or self.cpu_time_s <= 0):
            raise ValueError(f"Limits.cpu_time_s must be None or positive, got {self.cpu_time_s!r}")

    @property
    def effective_cpu_time_s(self) -> int:
        """The RLIMIT_CPU value in whole seconds."""
        return max(1, math.ceil(self.cpu_time_s if self.cpu_time_s is not None else self.wall_time_s))


@dataclass(frozen=True)
class ExecResult:
    """What happened to one run."""

    stdout: str
    stderr: str
    exit_code: int | None
    """The program's exit status; None when it was killed by a signal."""
    timed_out: bool
    """The wall-clock or CPU-time bound was hit."""
    memory_exceeded: bool
    """The memory bound was hit (allocation failure or OOM kill)."""
    duration_s: float
    signal: int | None = None
    """The signal that ended the program, if one did."""
    output_truncated: bool = False
    """stdout or stderr was longer than max_output_bytes and was cut."""

    @property
    def ok(self) -> bool:
        """The program exited 0 within every bound."""
        return self.exit_code == 0 and not self.timed_out and not self.memory_exceeded


@runtime_checkable
class Sandbox(Protocol):
    """Runs untrusted programs in isolation."""

    def run(
        self,
        files_or_code: str | Mapping[str, str | bytes],
        *,
        cmd: list[str] | None = None,
        stdin: str | bytes = "",
        limits: Limits | None = None,
    ) -> ExecResult:
        """Run Python source (a str) or `cmd` over files (a dict of relative path -> content)."""
        ...

    def close(self) -> None:
        """Release warm workers and temporary state."""
        ...


def normalize_files(
    files_or_code: str | Mapping[str, str | bytes], cmd: list[str] | None
) -> tuple[dict[str, bytes], list[str] | None]:
    """Validate `run`'s inputs: relative, non-escaping paths; a cmd when files are given; bytes contents."""
    if isinstance(files_or_code, str):
        if cmd is not None:
            raise SandboxError("pass either Python source (a str) or files plus cmd, not a str plus cmd")
        return {"main.py": files_or_code.encode("utf-8", "surrogatepass")}, None
    if not isinstance(files_or_code, Mapping):
        raise SandboxError(
            f"expected Python source (str) or a dict of path -> content, got {type(files_or_code).__name__}"
        )
    if not cmd or not all(isinstance(part, str) for part in cmd):
        raise SandboxError("files need cmd=[...] (a non-empty list of str) saying what to run")
    files: dict[str, bytes] = {}
    for path, content in files_or_code.items():
        parts = path.split("/")
        if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise SandboxError(f"file path {path!r} must be relative without '.', '..' or empty parts")
        files[path] = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    return files, list(cmd)
