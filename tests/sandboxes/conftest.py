"""Sandbox fixtures: one LocalSandbox and one DockerSandbox (on the image `.ci/docker.sh` builds) per session."""

from __future__ import annotations

import os

import pytest

from llmenv.sandboxes import LocalSandbox, SandboxUnavailableError
from llmenv.sandboxes import local as local_module
from llmenv.sandboxes.docker import DockerSandbox

DOCKER_IMAGE = os.environ.get("LLMENV_DOCKER_IMAGE", "llmenv-sandbox-python:bookworm")
"""The image the real-engine tests run in: what `bash .ci/docker.sh` builds and prints."""


def docker_engine_error() -> str | None:
    """Why no Docker engine answers here (the SDK missing, or a ping that fails), or None when one does."""
    try:
        import docker  # optional dependency, only for these tests
    except ImportError as exc:
        return f"no Docker SDK ({exc})"
    try:
        client = docker.from_env(timeout=15)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # DockerException, requests errors, OSError: all mean no engine
        return f"no reachable Docker engine ({type(exc).__name__}: {exc})"
    return None


@pytest.fixture(scope="session")
def local_sandbox():
    """A shared two-worker LocalSandbox; skips where this host cannot isolate (the reason is in the skip)."""
    missing = local_module.namespace_support()
    if missing is not None:
        pytest.skip(f"no namespaces here: {missing}")
    with LocalSandbox(workers=2) as sandbox:
        try:
            sandbox.run("pass")
        except SandboxUnavailableError as exc:
            pytest.skip(str(exc))
        yield sandbox


@pytest.fixture(scope="session")
def docker_sandbox():
    """A shared DockerSandbox on DOCKER_IMAGE; skips only when no engine answers (a missing image fails)."""
    reason = docker_engine_error()
    if reason is not None:
        pytest.skip(f"{reason}; `bash .ci/docker.sh` starts one")
    try:
        sandbox = DockerSandbox(DOCKER_IMAGE, warm_containers=4)
    except SandboxUnavailableError as exc:
        pytest.fail(f"a Docker engine answers but the sandbox cannot start ({exc}); run `bash .ci/docker.sh`")
    yield sandbox
    sandbox.close()
