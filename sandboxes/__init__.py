"""Isolated execution of untrusted code: `Limits`, `ExecResult`, the `Sandbox` protocol and its backends."""

from llmenv.sandboxes.base import ExecResult, Limits, Sandbox, SandboxError, SandboxUnavailableError

__all__ = ["ExecResult", "Limits", "Sandbox", "SandboxError", "SandboxUnavailableError"]
