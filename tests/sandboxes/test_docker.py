"""DockerSandbox: pure argument builders and a scripted fake engine everywhere; the real engine where one runs.

The hostile programs run against a real engine in test_hostile.py; the engine tests here check
what only this backend does (its user and capabilities, reuse of warm containers, cleanup between
runs). They use the session's `docker_sandbox` (tests/sandboxes/conftest.py), which skips only
where no engine answers.
"""

from __future__ import annotations

import io
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time

import pytest

from llmenv.sandboxes.base import Limits, SandboxError, SandboxUnavailableError, normalize_files
from llmenv.sandboxes.docker import (
    LABEL,
    PID_OVERHEAD,
    RUN_USER,
    WORKDIR,
    DockerSandbox,
    OutputDemuxer,
    classify_exit,
    cleanup_command,
    container_config,
    container_key,
    exec_command,
    extract_command,
    tar_files,
)


def _frame(stream: int, data: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


# --------------------------------------------------------------------------- pure functions


def test_container_config_is_locked_down() -> None:
    cfg = container_config(Limits(), "python:3.11-slim")
    assert cfg["image"] == "python:3.11-slim"
    assert cfg["network_mode"] == "none" and cfg["network_disabled"] is True
    assert cfg["read_only"] is True
    assert cfg["cap_drop"] == ["ALL"]
    assert cfg["security_opt"] == ["no-new-privileges"]
    assert cfg["init"] is True
    assert cfg["privileged"] is False
    assert not cfg["user"].startswith("0") and cfg["user"] != RUN_USER  # non-root, and not the run's uid
    assert [cfg["entrypoint"][0], *cfg["command"]] == ["sleep", "infinity"]
    for forbidden in ("volumes", "mounts", "devices", "device_requests", "pid_mode", "cap_add", "volumes_from"):
        assert forbidden not in cfg
    assert set(cfg["tmpfs"]) == {"/tmp", WORKDIR}
    for opts in cfg["tmpfs"].values():
        assert "nosuid" in opts and "nodev" in opts and "mode=1777" in opts
    assert "size=64m" in cfg["tmpfs"]["/tmp"] and "size=128m" in cfg["tmpfs"][WORKDIR]  # inputs + max_file_mb
    assert "working_dir" not in cfg  # the engine would make WORKDIR root 0755 under the tmpfs


def test_container_config_maps_limits() -> None:
    limits = Limits(memory_mb=300, max_processes=10, max_file_mb=7, network=True)
    cfg = container_config(limits, "img")
    assert cfg["network_mode"] == "bridge" and cfg["network_disabled"] is False
    assert cfg["mem_limit"] == "300m" and cfg["memswap_limit"] == "300m"
    assert cfg["pids_limit"] == 10 + PID_OVERHEAD
    assert cfg["nano_cpus"] == 1_000_000_000
    assert cfg["shm_size"] == "7m"
    assert "size=7m" in cfg["tmpfs"]["/tmp"] and "size=14m" in cfg["tmpfs"][WORKDIR]
    ulimits = {u["name"]: (u["soft"], u["hard"]) for u in cfg["ulimits"]}
    assert ulimits["fsize"] == (7 * 1024 * 1024, 7 * 1024 * 1024)
    assert ulimits["nofile"][0] > 0 and ulimits["core"] == (0, 0)


def test_container_config_is_accepted_by_the_sdk() -> None:
    docker = pytest.importorskip("docker")
    from docker.models.containers import _create_container_args

    kwargs = _create_container_args({**container_config(Limits(memory_mb=256), "img"), "version": "1.43"})
    host = kwargs["host_config"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["Memory"] == host["MemorySwap"] == 256 * 1024 * 1024
    assert host["CapDrop"] == ["ALL"] and host["Init"] is True and "Binds" not in host and "Mounts" not in host
    assert {u["Name"] for u in host["Ulimits"]} >= {"fsize", "nofile"}
    api = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.43")
    assert api.create_container_config(**kwargs)["User"] == kwargs["user"]


def test_container_key_ignores_per_run_limits() -> None:
    assert container_key(Limits(wall_time_s=1, max_output_bytes=5)) == container_key(Limits(wall_time_s=9))
    assert container_key(Limits(memory_mb=512)) != container_key(Limits())
    assert container_key(Limits(network=True)) != container_key(Limits())


def test_exec_command_bounds_cpu_and_wall_time() -> None:
    argv = exec_command(["python3", "main.py"], Limits(wall_time_s=2.5, cpu_time_s=1.2))
    assert argv[:2] == ["/bin/sh", "-c"]
    assert "ulimit -S -t" in argv[2] and "exec timeout -s KILL" in argv[2]
    assert argv[3:] == ["sh", "2", "3", "2.5", "python3", "main.py"]
    assert exec_command(["x"], Limits(wall_time_s=3))[4:7] == ["3", "4", "3"]


def test_exec_command_script_runs_under_a_posix_shell() -> None:
    """The wrapper script itself (not the sandbox) on this host: limits set, argv passed through verbatim."""
    if shutil.which("timeout") is None:
        pytest.skip("no coreutils timeout here")
    argv = exec_command(["sh", "-c", 'ulimit -S -t; ulimit -H -t; echo "$1"', "x", "a b"], Limits(wall_time_s=5))
    out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["5", "6", "a b"]
    slow = subprocess.run(exec_command(["sleep", "5"], Limits(wall_time_s=0.3)), capture_output=True, timeout=20)
    assert slow.returncode in (-9, 137)


def test_extract_and_cleanup_commands() -> None:
    argv = extract_command(f"{WORKDIR}/run-abc")
    assert argv[-1] == f"{WORKDIR}/run-abc" and "tar -x -f - -C" in argv[2]
    script = cleanup_command()[2]
    assert "kill -9 -1" in script and 'kill -0 "${d#/proc/}"' in script  # every RUN_USER process, until none
    assert "kill -0 -1" not in script  # it succeeds while any process of another user exists
    for place in ("/tmp", WORKDIR, "/dev/shm", "memory.events", "memory.oom_control"):
        assert place in script


def test_extract_command_unpacks_tar_files_on_this_host(tmp_path) -> None:
    run_dir = tmp_path / "run-1"
    data = tar_files({"main.py": b"print(1)\n", "pkg/sub/x.txt": b"x", "run.sh": b"#!/bin/sh\necho hi\n"})
    out = subprocess.run(extract_command(str(run_dir)), input=data, capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert (run_dir / "pkg/sub/x.txt").read_bytes() == b"x"
    assert (run_dir / "run.sh").stat().st_mode & 0o111


def test_tar_files_contains_the_files_with_safe_paths() -> None:
    files, _ = normalize_files({"main.py": "print('é')", "a/b/c.txt": b"\x00\x01", "run.sh": "#!/bin/sh\n"}, ["sh"])
    with tarfile.open(fileobj=io.BytesIO(tar_files(files, mtime=0))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"main.py", "a", "a/b", "a/b/c.txt", "run.sh"}
        for m in members.values():
            assert not m.name.startswith("/") and ".." not in m.name.split("/")
            assert not (m.issym() or m.islnk() or m.isdev())
            assert m.mode & 0o7000 == 0
        assert members["a"].isdir() and members["a/b"].isdir()
        assert tar.extractfile("main.py").read() == "print('é')".encode()
        assert tar.extractfile("a/b/c.txt").read() == b"\x00\x01"
        assert members["run.sh"].mode == 0o755 and members["main.py"].mode == 0o644


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../x", "a//b", "./a", ""])
def test_bad_paths_raise_sandbox_error(path: str) -> None:
    with pytest.raises(SandboxError):
        normalize_files({path: "x"}, ["true"])
    with pytest.raises(SandboxError):
        tar_files({path: b"x"})


def test_demuxer_splits_caps_and_handles_any_chunking() -> None:
    stream = _frame(1, b"hello ") + _frame(2, b"oops") + _frame(1, b"world") + _frame(0, b"ignored")
    for step in (1, 3, 8, len(stream)):
        d = OutputDemuxer(100)
        for i in range(0, len(stream), step):
            d.feed(stream[i : i + step])
        assert (d.stdout, d.stderr, d.truncated) == (b"hello world", b"oops", False)
    d = OutputDemuxer(8)
    d.feed(stream)
    assert (d.stdout, d.stderr, d.truncated) == (b"hello wo", b"oops", True)


def test_classify_exit() -> None:
    lim = Limits(wall_time_s=2)
    kw = dict(limits=lim, stdout=b"o", stderr=b"", truncated=False, oom_killed=False, host_timed_out=False)
    ok = classify_exit(0, duration_s=0.1, **kw)
    assert ok.ok and ok.stdout == "o" and ok.signal is None
    assert classify_exit(3, duration_s=0.1, **kw).exit_code == 3
    term = classify_exit(128 + signal.SIGTERM, duration_s=0.1, **kw)
    assert term.exit_code is None and term.signal == signal.SIGTERM and not term.timed_out
    wall = classify_exit(137, duration_s=2.01, **kw)
    assert wall.timed_out and not wall.memory_exceeded and wall.signal == signal.SIGKILL
    cpu = classify_exit(128 + signal.SIGXCPU, duration_s=1.0, **kw)
    assert cpu.timed_out and not cpu.memory_exceeded
    oom = classify_exit(137, duration_s=0.3, **{**kw, "oom_killed": True})
    assert oom.memory_exceeded and not oom.timed_out and not oom.ok
    killed = classify_exit(137, duration_s=0.3, **kw)  # SIGKILL before the wall bound, no OOM kill: e.g. kill -9 $PPID
    assert killed.signal == signal.SIGKILL and not killed.memory_exceeded and not killed.timed_out
    stopped = classify_exit(None, duration_s=0.6, **{**kw, "oom_killed": True})  # the host ended it at the OOM kill
    assert stopped.memory_exceeded and stopped.signal == signal.SIGKILL and stopped.exit_code is None
    pyerr = classify_exit(1, duration_s=0.3, **{**kw, "stderr": b"Traceback...\nMemoryError\n"})
    assert pyerr.memory_exceeded and pyerr.exit_code == 1
    host = classify_exit(None, duration_s=4.0, **{**kw, "host_timed_out": True})
    assert host.timed_out and host.exit_code is None and host.signal == signal.SIGKILL


# --------------------------------------------------------------------------- availability errors


def test_missing_sdk_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)  # makes `import docker` raise ImportError
    with pytest.raises(SandboxUnavailableError, match=r"pip install 'llmenv\[docker\]'"):
        DockerSandbox()


def test_unreachable_engine_names_the_error(monkeypatch) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url="unix:///nonexistent.sock", version="1.43")
    with pytest.raises(SandboxUnavailableError, match="no reachable Docker engine.*nonexistent|No such file"):
        DockerSandbox(client=client)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    with pytest.raises(SandboxUnavailableError, match="no reachable Docker engine"):
        DockerSandbox()


# --------------------------------------------------------------------------- a scripted fake engine


class _FakeContainer:
    def __init__(self, cfg: dict) -> None:
        self.cfg, self.id, self.removed, self.attrs = cfg, f"c{id(self)}", False, {"State": {"OOMKilled": False}}

    def start(self) -> None:
        pass

    def remove(self, force: bool = False) -> None:
        self.removed = True

    def reload(self) -> None:
        pass


class _FakeAPI:
    """Answers exec calls over a socketpair: extract/cleanup succeed, the program follows `self.program`."""

    def __init__(self) -> None:
        self.execs: dict[str, dict] = {}
        self.program = lambda stdin: ([_frame(1, stdin.upper())], 0, 0.0)
        self.cleanups = 0
        self.oom_kills = 0  # what the container's cgroup counter says after a run
        self.release = threading.Event()

    def exec_create(self, cid: str, argv: list[str], **kw) -> dict:
        eid = f"e{len(self.execs)}"
        self.execs[eid] = {"argv": argv, "kw": kw, "cid": cid, "running": True, "code": None}
        return {"Id": eid}

    def exec_start(self, eid: str, socket: bool = False) -> object:
        import socket as socketlib

        ours, theirs = socketlib.socketpair()
        threading.Thread(target=self._serve, args=(self.execs[eid], theirs), daemon=True).start()
        return ours

    def _serve(self, ex: dict, sock: socket.socket) -> None:
        stdin = b""
        while chunk := sock.recv(65536):
            stdin += chunk
        script = ex["argv"][2]
        if "tar -x" in script:
            ex["files"] = tarfile.open(fileobj=io.BytesIO(stdin)).getnames()
            frames, code, delay = [], 0, 0.0
        elif "kill -9 -1" in script:
            self.cleanups += 1
            frames, code, delay = [_frame(1, f"oom_kill {self.oom_kills}\n".encode())], 0, 0.0
        else:
            frames, code, delay = self.program(stdin)
        if delay:
            self.release.wait(delay)
        try:
            for f in frames:
                sock.sendall(f)
        finally:
            ex["code"], ex["running"] = code, False
            sock.close()

    def exec_inspect(self, eid: str) -> dict:
        ex = self.execs[eid]
        return {"Running": ex["running"], "ExitCode": ex["code"]}


class _FakeClient:
    def __init__(self) -> None:
        self.api = _FakeAPI()
        self.created: list[_FakeContainer] = []
        self.oom_events: set[str] = set()
        outer = self

        class _Containers:
            def create(self, **cfg) -> _FakeContainer:
                outer.created.append(_FakeContainer(cfg))
                return outer.created[-1]

        class _Images:
            def get(self, name: str) -> None:
                pass

        self.containers, self.images = _Containers(), _Images()

    def ping(self) -> bool:
        return True

    def events(self, **kw) -> list[dict]:
        """The engine's event log: an OOM event for every container in `oom_events`."""
        cid = kw["filters"]["container"]
        return [{"status": "oom", "id": cid}] if cid in self.oom_events else []


@pytest.fixture
def fake():
    pytest.importorskip("docker")
    client = _FakeClient()
    box = DockerSandbox(client=client, warm_containers=1)
    yield client, box
    client.api.release.set()
    box.close()


def test_fake_engine_runs_stdin_and_reuses_the_warm_container(fake) -> None:
    client, box = fake
    assert len(client.created) == 1  # pre-warmed
    res = box.run("print(input())", stdin="hi there")
    assert res.ok and res.stdout == "HI THERE"
    res2 = box.run({"a/b.py": "x", "main.sh": "y"}, cmd=["sh", "main.sh"], stdin=b"\x00abc")
    assert res2.stdout == "\x00ABC"
    assert len(client.created) == 1 and client.api.cleanups == 2
    execs = list(client.api.execs.values())
    assert execs[0]["files"] == ["main.py"] and set(execs[3]["files"]) == {"a", "a/b.py", "main.sh"}
    prog = execs[1]
    assert prog["argv"][-2:] == ["python3", "main.py"] and prog["kw"]["user"] == RUN_USER
    assert prog["kw"]["workdir"].startswith(f"{WORKDIR}/run-") and prog["kw"]["workdir"] != execs[4]["kw"]["workdir"]


def test_fake_engine_large_stdin_and_capped_output(fake) -> None:
    client, box = fake
    client.api.program = lambda stdin: ([_frame(1, stdin), _frame(2, b"e" * 10)], 0, 0.0)
    res = box.run("x", stdin=b"z" * 3_000_000, limits=Limits(max_output_bytes=1000))
    assert res.stdout == "z" * 1000 and res.stderr == "e" * 10 and res.output_truncated


def test_fake_engine_host_deadline_recycles_the_container(fake) -> None:
    client, box = fake
    client.api.program = lambda stdin: ([], 0, 30.0)  # never answers within the bound
    t0 = time.monotonic()
    res = box.run("while True: pass", limits=Limits(wall_time_s=0.2))
    # the host gives up at the bound plus HOST_GRACE_S (2.2 s), well before the fake would answer
    assert time.monotonic() - t0 < 20
    assert res.timed_out and res.exit_code is None and not res.ok
    assert client.created[0].removed and client.api.cleanups == 0
    client.api.program = lambda stdin: ([_frame(1, b"ok")], 0, 0.0)
    assert box.run("print('ok')").stdout == "ok" and len(client.created) == 2  # a fresh one


def test_fake_engine_oom_kill_is_reported_and_recycled(fake) -> None:
    client, box = fake
    client.api.oom_kills = 1  # the cgroup counted an OOM kill, read by the cleanup exec
    client.api.program = lambda stdin: ([], 137, 0.0)
    res = box.run("x = bytearray(10**10)")
    assert res.memory_exceeded and not res.timed_out and res.signal == signal.SIGKILL
    assert client.created[0].removed and client.api.cleanups == 1


def test_fake_engine_sigkill_without_oom_is_not_memory_and_keeps_the_container(fake) -> None:
    client, box = fake
    client.api.program = lambda stdin: ([_frame(1, b"alive\n")], 137, 0.0)
    res = box.run("import os, signal; os.kill(os.getppid(), signal.SIGKILL); print('alive')")
    assert res.signal == signal.SIGKILL and not res.memory_exceeded and res.stdout == "alive\n"
    assert not client.created[0].removed and len(client.created) == 1  # cleaned up and reused


def test_fake_engine_oom_event_during_a_run_ends_it(fake) -> None:
    client, box = fake
    client.api.program = lambda stdin: ([], 0, 30.0)  # a parent waiting on children, one of them OOM-killed
    client.oom_events.add(client.created[0].id)
    t0 = time.monotonic()
    res = box.run("...", limits=Limits(wall_time_s=20))
    assert time.monotonic() - t0 < 10  # at the first poll (0.5 s), not at the wall bound
    assert res.memory_exceeded and not res.timed_out and res.signal == signal.SIGKILL and res.exit_code is None
    assert client.created[0].removed and client.api.cleanups == 0


def test_fake_engine_other_limits_get_their_own_container_and_close_removes_all(fake) -> None:
    client, box = fake
    box.run("print(1)", limits=Limits(memory_mb=256))
    assert len(client.created) == 2 and client.created[1].cfg["mem_limit"] == "256m"
    assert sum(c.removed for c in client.created) == 1  # only one warm container is kept
    box.close()
    assert all(c.removed for c in client.created)
    with pytest.raises(SandboxError, match="closed"):
        box.run("print(1)")


def test_fake_engine_failed_extract_raises(fake) -> None:
    client, box = fake
    real_serve = client.api._serve

    def serve(ex: dict, sock: socket.socket) -> None:
        if "tar -x" in ex["argv"][2]:
            while sock.recv(65536):
                pass
            sock.sendall(_frame(2, b"tar: No space left on device"))
            ex["code"], ex["running"] = 2, False
            sock.close()
        else:
            real_serve(ex, sock)

    client.api._serve = serve
    with pytest.raises(SandboxError, match="No space left"):
        box.run("print(1)")
    assert client.created[0].removed


# --------------------------------------------------------------------------- a real engine


@pytest.fixture
def box(docker_sandbox):
    """The session's DockerSandbox on the image `.ci/docker.sh` builds; skips where no engine answers."""
    return docker_sandbox


def _sandbox_containers() -> set[str]:
    """Ids of every container on the engine that carries this module's label."""
    import docker  # optional dependency: the engine tests skip without it (in the fixture)

    client = docker.from_env()
    try:
        return {c.id for c in client.containers.list(all=True, filters={"label": LABEL})}
    finally:
        client.close()


def test_hello_world(box) -> None:
    res = box.run("print('hello')")
    assert res.ok and res.stdout == "hello\n" and res.exit_code == 0


def test_stdin_and_files(box) -> None:
    assert box.run("import sys; print(sys.stdin.read().upper())", stdin="abc").stdout == "ABC\n"
    res = box.run({"d/x.txt": "data", "run.sh": "#!/bin/sh\ncat d/x.txt; pwd\n"}, cmd=["./run.sh"])
    assert res.ok and res.stdout.startswith(f"data{WORKDIR}/run-")


def test_non_root_read_only_no_caps(box) -> None:
    code = (
        "import os\nprint(os.getuid())\n"
        "try:\n    open('/etc/x', 'w')\nexcept OSError as e:\n    print('ro', e.errno)\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])"
    )
    res = box.run(code)
    assert res.stdout.split() == ["65534", "ro", "30", "0000000000000000"], res


def test_exit_code_and_signal(box) -> None:
    assert box.run("import sys; sys.exit(3)").exit_code == 3
    res = box.run("import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert res.exit_code is None and res.signal == signal.SIGTERM
    res = box.run("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert res.signal == signal.SIGKILL and not res.memory_exceeded and not res.timed_out  # no OOM kill happened


def test_nothing_survives_between_runs(box) -> None:
    first = (
        "import subprocess, os\nopen('/tmp/leak', 'w').write('x'); open('here', 'w').write('y')\n"
        "subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
        "subprocess.Popen(['sh', '-c', 'sleep 1000 &'])\nprint('spawned')"
    )
    assert box.run(first).stdout == "spawned\n"
    second = (
        "import os\n"
        "mine = [p for p in os.listdir('/proc') if p.isdigit() and int(p) not in (os.getpid(), os.getppid())\n"
        "        and 'Uid:\\t65534' in open(f'/proc/{p}/status').read()]\n"
        f"print(os.listdir('/tmp'), sorted(os.listdir('{WORKDIR}')), mine)"
    )
    for _ in range(4):  # whichever warm container answers
        out = box.run(second).stdout.strip()
        assert out.startswith("[] ['run-") and out.endswith("[]") and out.count("run-") == 1, out


def test_output_truncation(box) -> None:
    res = box.run("print('x' * 100000)", limits=Limits(max_output_bytes=1000))
    assert res.output_truncated and res.stdout == "x" * 1000 and res.ok


def test_oom_kill_of_a_child_counts_even_when_the_program_exits_0(box) -> None:
    # the child is OOM-killed, the parent exits 0 at once: the container's own counter says so
    code = "import os\nif os.fork() == 0:\n    b = bytearray(400 << 20)\n    os._exit(0)\nos.wait()\nprint('parent ok')"
    res = box.run(code, limits=Limits(memory_mb=128))
    assert res.memory_exceeded and not res.ok, res


def test_warm_containers_are_reused_and_doubtful_ones_replaced(box) -> None:
    before = _sandbox_containers()
    with DockerSandbox(box.image, warm_containers=1) as sandbox:
        mine = _sandbox_containers() - before
        assert len(mine) == 1
        for code, limits in [
            ("print(1)", Limits()),
            ("import subprocess\nsubprocess.Popen(['sleep', '1000'], start_new_session=True)", Limits()),
            ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", Limits()),
            ("while True:\n    pass", Limits(wall_time_s=0.5)),  # ended by `timeout` inside, then cleaned up
        ]:
            sandbox.run(code, limits=limits)
            assert _sandbox_containers() - before == mine, code
        assert sandbox.run("b = bytearray(2 << 30)").memory_exceeded
        assert _sandbox_containers() - before == set()  # an OOM kill: the container is removed
        assert sandbox.run("print(2)").stdout == "2\n"
        fresh = _sandbox_containers() - before
        assert len(fresh) == 1 and fresh != mine  # the next run starts a fresh one, kept warm
    assert _sandbox_containers() - before == set()  # close() removes them all


def test_fake_engine_failed_cleanup_recycles_but_keeps_the_result(fake) -> None:
    client, box = fake
    real_create = client.api.exec_create

    def exec_create(cid: str, argv: list[str], **kw) -> dict:
        if "kill -9 -1" in argv[2]:
            raise OSError("resource temporarily unavailable")
        return real_create(cid, argv, **kw)

    client.api.exec_create = exec_create
    res = box.run("print(input())", stdin="x")
    assert res.ok and res.stdout == "X"
    assert client.created[0].removed
