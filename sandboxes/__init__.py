"""Isolated execution of untrusted code: `Limits`, `ExecResult`, the `Sandbox` protocol and its backends."""

from __future__ import annotations

import atexit
import threading

from llmenv.sandboxes.base import ExecResult, Limits, Sandbox, SandboxError, SandboxUnavailableError
from llmenv.sandboxes.docker import DockerSandbox
from llmenv.sandboxes.local import LocalSandbox

__all__ = [
    "DockerSandbox",
    "ExecResult",
    "Limits",
    "LocalSandbox",
    "Sandbox",
    "SandboxError",
    "SandboxUnavailableError",
    "default_sandbox",
]

_default: LocalSandbox | None = None
_default_lock = threading.Lock()


def default_sandbox() -> LocalSandbox:
    """The process-wide shared `LocalSandbox` (created on first use, closed at exit)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = LocalSandbox()
            atexit.register(_default.close)
        return _default
