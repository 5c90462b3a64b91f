"""LocalSandbox: what only this backend does (namespaces, its pool, packages); hostile programs: test_hostile.py."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from llmenv.sandboxes import LocalSandbox, Sandbox, SandboxError, SandboxUnavailableError, default_sandbox
from llmenv.sandboxes import local as local_module
from llmenv.sandboxes.base import Limits

REPO = Path(__file__).resolve().parents[2]
NO_NAMESPACES = local_module.namespace_support()
# Bounds on how long a run may take to come back are there to catch a hang: 10x or more what a run
# takes on a loaded 2-core host. How fast runs are is measured in benchmarks/sandbox.py.
HANG_S = 15.0
needs_namespaces = pytest.mark.skipif(NO_NAMESPACES is not None, reason=f"no namespaces here: {NO_NAMESPACES}")


@pytest.fixture
def sb(local_sandbox):
    """The session's shared two-worker LocalSandbox (tests/sandboxes/conftest.py)."""
    return local_sandbox


def host_pids_with(marker: str) -> list[int]:
    """Host processes whose command line contains marker (a psutil-free /proc scan)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


# --- plain behaviour ---------------------------------------------------------------------------


def test_protocol_and_results(sb):
    assert isinstance(sb, Sandbox)
    r = sb.run("print('hello')")
    assert (r.stdout, r.stderr, r.exit_code, r.ok, r.signal) == ("hello\n", "", 0, True, None)
    r = sb.run("import sys; print('bye', file=sys.stderr); sys.exit(3)")
    assert (r.exit_code, r.stderr, r.ok) == (3, "bye\n", False)
    r = sb.run("def f():\n    raise ValueError('boom')\nf()")
    assert r.exit_code == 1 and "ValueError: boom" in r.stderr and 'File "/sandbox/main.py", line 2' in r.stderr
    assert r.stderr.count('File "') == 2  # no frame of the sandbox's own code
    assert "SyntaxError" in sb.run("def (").stderr
    r = sb.run("import os; os.abort()")
    assert (r.exit_code, r.signal, r.timed_out) == (None, signal.SIGABRT, False)


def test_stdin_and_files_with_cmd(sb):
    assert sb.run("print(input()[::-1])", stdin="abc\n").stdout == "cba\n"
    files = {
        "main.py": "import helper, sys\nprint(helper.twice(sys.stdin.read()))\nsys.exit(4)",
        "helper.py": "def twice(s):\n    return s * 2\n",
        "data/x.bin": b"\x00\x01",
    }
    r = sb.run(files, cmd=["python3", "main.py"], stdin=b"ab")
    assert (r.stdout, r.exit_code) == ("abab\n", 4)
    r = sb.run({"x.sh": "cat; echo $HOME $PWD"}, cmd=["sh", "x.sh"], stdin="in\n")
    assert r.stdout == "in\n/sandbox /sandbox\n"
    assert sb.run({}, cmd=["no-such-program"]).exit_code == 127


@needs_namespaces
def test_default_sandbox_is_shared(sb):
    assert default_sandbox() is default_sandbox()
    assert default_sandbox().run("print(2 + 2)").stdout == "4\n"


# --- memory -------------------------------------------------------------------------------------


def test_memory_the_bound_cannot_see_is_denied(sb):
    code = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nout = []\n"
        "try:\n    os.memfd_create('x')\n    out.append('memfd')\nexcept OSError as e:\n    out.append(e.errno)\n"
        "out.append(libc.shmget(0, 1 << 20, 0o1600))\nout.append(libc.msgget(0, 0o1600))\nprint(out)\n"
    )
    assert sb.run(code).stdout == "[1, -1, -1]\n"


# --- visibility of the host ---------------------------------------------------------------------


def test_only_the_system_is_visible(sb):
    # beyond test_hostile's host files: the run's root holds the system dirs it needs and nothing else
    probe = (
        "import os\nprint([p for p in ['/etc/shadow', '/home', '/var', '/sys'] if os.path.exists(p)])\n"
        "print(sorted(os.listdir('/root')) if os.path.isdir('/root') else 'no /root')\n"
    )
    lines = sb.run(probe).stdout.splitlines()
    assert lines[0] == "[]", lines
    host_root = sorted(os.listdir("/root"))
    assert lines[1] in ("no /root", "[]", "['.pyenv']") and (len(host_root) > 1 or lines[1] != str(host_root))


def test_environment_is_scrubbed(sb, monkeypatch):
    monkeypatch.setenv("LLMENV_SECRET", "topsecret")
    with LocalSandbox(workers=1) as fresh:
        for box in (sb, fresh):
            r = box.run(
                "import os\nprint(sorted(os.environ))\n"
                "print(open('/proc/self/environ').read() + open('/proc/1/environ').read())"
            )
            assert "LLMENV_SECRET" not in r.stdout and "topsecret" not in r.stdout
            assert r.stdout.splitlines()[0] == str(
                sorted(["PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "USER", "PYTHONDONTWRITEBYTECODE"])
            )


def test_network_true_shares_the_host_network(sb):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    r = sb.run(
        f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).close()\nprint('ok')",
        limits=Limits(network=True),
    )
    server.close()
    assert r.stdout == "ok\n"


# --- the pool -----------------------------------------------------------------------------------


def test_a_run_sees_only_its_own_processes(sb):
    # the next run is prepared (its namespaces and init exist) while this one runs: it must stay invisible
    code = "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"
    for _ in range(3):
        assert sb.run(code).stdout == "[1, 2]\n"


def test_prepared_runs_are_cleaned_up_on_close():
    if NO_NAMESPACES is not None:
        pytest.skip(f"no namespaces here: {NO_NAMESPACES}")
    marker = f"llmenv_marker_{uuid.uuid4().hex}"  # a preload name that fails to import: it tags the cmdline
    box = LocalSandbox(workers=1, preload=(marker,))
    try:
        assert box.run("print(1)").stdout == "1\n"
        deadline = time.monotonic() + HANG_S
        # the outer server process, the server (its pid namespace's init) and the next run's prepared init
        while len(host_pids_with(marker)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(host_pids_with(marker)) >= 3
    finally:
        box.close()
    # the kernel kills the nested namespaces' processes when their init dies, asynchronously
    deadline = time.monotonic() + HANG_S
    while host_pids_with(marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert host_pids_with(marker) == []


def test_dead_or_wedged_server_is_replaced(sb, monkeypatch):
    monkeypatch.setattr(local_module, "REPLY_GRACE_S", 1.0)
    with LocalSandbox(workers=1) as box:
        assert box.run("print(1)").stdout == "1\n"
        (worker,) = box._idle[False]
        os.kill(worker.server_pid, signal.SIGKILL)
        worker.proc.wait(timeout=5)
        assert box.run("print(2)").stdout == "2\n"  # restarted transparently
        (worker,) = box._idle[False]
        os.kill(worker.server_pid, signal.SIGSTOP)
        t = time.monotonic()
        with pytest.raises(SandboxError, match="killed and will be restarted"):
            box.run("print(3)", limits=Limits(wall_time_s=0.5))
        assert time.monotonic() - t < HANG_S  # the run's bound plus REPLY_GRACE_S, not forever
        assert box.run("print(4)").stdout == "4\n"
    with pytest.raises(SandboxError, match="closed"):
        box.run("print(5)")


# --- degraded modes -----------------------------------------------------------------------------


def test_missing_namespaces_give_a_clear_error(monkeypatch):
    monkeypatch.setattr(local_module, "namespace_support", lambda: "user namespaces are disabled: sysctl x=0")
    with pytest.raises(SandboxUnavailableError, match="user namespaces are disabled.*unsafe_no_namespaces"):
        LocalSandbox()


def test_unsafe_mode_for_trusted_code(tmp_path):
    marker = f"llmenv-unsafe-{uuid.uuid4().hex}"
    with LocalSandbox(workers=1, unsafe_no_namespaces=True) as box:
        r = box.run("import os\nprint(os.getcwd() != os.environ['TMPDIR'], 'LLMENV' in ''.join(os.environ))")
        assert r.stdout == "True False\n"
        assert box.run("import sys; sys.exit(5)").exit_code == 5
        rlimit_as = "import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[0] >> 20)"
        assert box.run(rlimit_as, limits=Limits(memory_mb=256)).stdout == "256\n"  # no init here: the only bound
        r = box.run({"a.txt": "hi"}, cmd=["cat", "a.txt"])
        assert r.stdout == "hi"
        code = (
            "import os, signal, shutil, time\n"
            "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            f"        os.execv(shutil.which('sleep'), [{marker!r}, '1000'])\n"
            "    os._exit(0)\ntime.sleep(100)\n"
        )
        r = box.run(code, limits=Limits(wall_time_s=1.0))
        assert r.timed_out and host_pids_with(marker) == []


# --- packages from a chosen environment --------------------------------------------------------


def test_site_packages_are_importable_read_only_and_absent_by_default(sb):
    # a package folder of our own outside /tmp (where a checkout may lie: each run has its own tmpfs there),
    # readable by the run's unprivileged user
    folder = tempfile.mkdtemp(prefix="llmenv-site-test-", dir="/var/tmp")
    os.chmod(folder, 0o755)
    try:
        os.makedirs(os.path.join(folder, "probe_pkg"))
        with open(os.path.join(folder, "probe_pkg", "__init__.py"), "w") as f:
            f.write("def answer():\n    return 42\n")
        code = "import probe_pkg\nprint(probe_pkg.answer())\n"
        assert "No module named 'probe_pkg'" in sb.run(code).stderr  # the default sandbox: the standard library
        with LocalSandbox(workers=1, site_packages=[folder]) as packaged:
            r = packaged.run(code)
            assert (r.stdout, r.exit_code) == ("42\n", 0), r.stderr
            r = packaged.run({"main.py": code}, cmd=["python3", "main.py"])  # a `cmd` run finds them too
            assert (r.stdout, r.exit_code) == ("42\n", 0), r.stderr
            r = packaged.run(f"open({os.path.join(folder, 'planted.py')!r}, 'w')")
            assert r.exit_code == 1 and ("Read-only file system" in r.stderr or "Permission denied" in r.stderr)
        assert not os.path.exists(os.path.join(folder, "planted.py"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_numpy_from_the_project_venv(sb):
    numpy = pytest.importorskip("numpy")
    folder = os.path.realpath(os.path.dirname(os.path.dirname(numpy.__file__)))
    if folder == "/tmp" or folder.startswith("/tmp/"):
        pytest.skip("this checkout's venv lies under /tmp, which every run covers with its own tmpfs")
    code = "import numpy\nprint(int(numpy.arange(10).sum()))\n"
    assert "No module named 'numpy'" in sb.run(code).stderr
    with LocalSandbox(workers=1, site_packages=[folder]) as packaged:
        r = packaged.run(code)
        assert (r.stdout, r.exit_code) == ("45\n", 0), r.stderr


def test_site_packages_must_be_existing_folders(tmp_path):
    with pytest.raises(ValueError, match=r"'.*missing' does not exist; expected a folder .*site-packages"):
        LocalSandbox(site_packages=[tmp_path / "missing"])
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"'.*file' is not a directory; expected a folder"):
        LocalSandbox(site_packages=[str(tmp_path / "file")])
    if os.path.realpath(tmp_path).startswith("/tmp/"):  # a folder the runs' own /tmp would hide
        with pytest.raises(ValueError, match="which the sandbox covers"):
            LocalSandbox(site_packages=[tmp_path])


# --- streamed runs ------------------------------------------------------------------------------

DOUBLER = "import sys\nfor line in sys.stdin:\n    print(int(line) * 2, flush=True)\nprint('bye')\n"


def read_line(stream, timeout_s: float = HANG_S) -> bytes:
    """One stdout line of a stream (pieces may come split or joined)."""
    data = b""
    deadline = time.monotonic() + timeout_s
    while not data.endswith(b"\n"):
        chunk = stream.read(max(0.0, deadline - time.monotonic()))
        assert chunk, f"no line within {timeout_s}s (got {data!r}, then {chunk!r})"
        data += chunk
    return data


def test_a_stream_takes_stdin_and_gives_stdout_while_it_runs(sb):
    stream = sb.stream(DOUBLER, stdin=b"1\n", limits=Limits(wall_time_s=HANG_S))
    assert read_line(stream) == b"2\n"
    for n in (10, 11, 12):
        stream.write(f"{n}\n".encode())
        assert read_line(stream) == f"{2 * n}\n".encode()  # the answer comes before stdin ends
    assert stream.read(0.05) is None  # nothing more until it is asked
    stream.write(b"5\n")
    result = stream.close()
    assert result.ok and result.stdout == "10\nbye\n" and stream.ended and stream.result == result
    assert sb.run("print(6 * 7)").stdout == "42\n"  # the worker went back to the pool


def test_a_stream_keeps_the_isolation_and_bounds_of_a_run(sb):
    stream = sb.stream("import os, sys\nprint(os.getuid(), os.getcwd(), flush=True)\nsys.stdin.read()\n")
    assert read_line(stream) == b"1000 /sandbox\n"
    assert stream.close().ok
    started = time.monotonic()
    stream = sb.stream("import time\nprint('up', flush=True)\ntime.sleep(60)\n", limits=Limits(wall_time_s=1.0))
    assert read_line(stream) == b"up\n"
    assert stream.read(HANG_S) == b"" and stream.result is not None and stream.result.timed_out
    assert time.monotonic() - started < HANG_S
    stream = sb.stream("print('x' * 5000)", limits=Limits(max_output_bytes=100))
    result = stream.close()
    assert len(result.stdout) == 100 and result.output_truncated


def test_stopping_a_stream_kills_its_run_even_when_it_reads_nothing(sb):
    marker = f"llmenv-stream-{uuid.uuid4().hex}"
    stream = sb.stream(f"import os, shutil\nos.execv(shutil.which('sleep'), [{marker!r}, '1000'])\n")
    stream.write(b"x" * (1 << 20))  # more than a pipe holds: the server must not block on it
    started = time.monotonic()
    result = stream.close(stop=True)
    assert result.signal == signal.SIGKILL and not result.timed_out and time.monotonic() - started < HANG_S
    assert host_pids_with(marker) == []
    assert sb.run("print(1)").stdout == "1\n"


def test_waiting_counts_the_callers_that_want_a_worker():
    with LocalSandbox(workers=1) as box:
        stream = box.stream(DOUBLER)
        assert box.waiting == 0
        done = []
        thread = threading.Thread(target=lambda: done.append(box.run("print(3)").stdout))
        thread.start()
        deadline = time.monotonic() + HANG_S
        while box.waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert box.waiting == 1 and not done  # the only worker is the stream's
        stream.close()
        thread.join(HANG_S)
        assert done == ["3\n"] and box.waiting == 0


def test_streams_in_unsafe_mode():
    with LocalSandbox(workers=1, unsafe_no_namespaces=True) as box:
        stream = box.stream(DOUBLER, stdin=b"4\n")
        assert read_line(stream) == b"8\n"
        assert stream.close().stdout == "bye\n"


def test_a_stream_whose_sandbox_closed_fails_and_never_reads_another_sandboxs_pipes():
    box = LocalSandbox(workers=1)
    stream = box.stream(DOUBLER)
    box.close()
    with LocalSandbox(workers=1) as other:
        assert other.run("print(2)").stdout == "2\n"  # its pipes may take the closed worker's fd numbers
        with pytest.raises(SandboxError):
            while stream.read(HANG_S) is not None:  # EOF from the killed server, never the new one's frames
                pass
        assert other.run("print(3)").stdout == "3\n"
