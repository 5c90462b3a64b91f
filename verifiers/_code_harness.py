"""The trusted test harness that `llmenv.verifiers.code` ships into a sandbox as source text.

It is data for the sandbox, never imported by the verifier. In one sandbox run it keeps the tests
in this (trusted) process and runs the candidate's code in a separate child process that only
answers calls over a socket; return values are re-built here from a strict encoding that can
express nothing but exact builtin types. Results go to stdout as lines tagged with a nonce. It
must never execute candidate code in its own process, and it must read the nonce and the tests
only after the spawner of candidate processes has forked, so that no candidate process holds them.
It imports only cheap modules (no json, ast, socket, signal wrappers): it runs once per verdict.

stdin (after the bootstrap's own two frames that carry this program): `[u32 n][n bytes marshal
{"preimport": [module names], "cpu": int | None, "stream": bool}]` (public; read before the first
spawner forks; `cpu` pins the run to one core), then `marshal {"nonce": str, "jobs": [job]}`; or,
when `stream` is set, one `[u32 n][marshal {"nonce": str, "job": job}]` frame per job as the host
sends them, until stdin ends (each job then reports as job 0 of its own nonce); job = `{"code",
"prelude", "units": [(statement source, is_test)], "binds": {test name: candidate function name},
"modules": [stdlib names for the tests], "entry_point", "timeout_s", "budget_s"}`. stdout, per
job j: `<nonce> start <j> <job nonce>` (the job nonce is drawn after the job's spawner forked),
then `<job nonce> plan <n tests>`, one `<job nonce> result <i> <1|0> <reason, unicode-escaped>`
per test and `<job nonce> done <"" | "timeout">`; or `<job nonce> fatal <reason>` when the tests
themselves cannot be set up.
Besides `binds`, every top-level callable the candidate defines is bound in the tests' namespace
under its own name wherever the tests and builtins have none (helpers such as HumanEval's `poly`),
through the same call proxy and the same exact-builtin rule for what comes back.
Jobs run one after another, all of their candidates forked by one spawner that was forked before
anything secret was read, so that no candidate process of any job ever held a test or a nonce.
Between two jobs, every process the job left is killed (the spawner and this process are child
subreapers), the spawner proves it was not tampered with (not stopped, same rlimits and priority),
and, in LocalSandbox's private scratch dirs, every file the job left is removed; if any of that
fails, the remaining jobs are left unreported (the verifier re-runs them alone).
"""

import _signal
import _socket
import builtins
import marshal
import os
import resource as _resource
import struct
import sys
import time

_MAX_MESSAGE = 16 * 1024 * 1024
_MAX_DEPTH = 200
_MAX_REASON = 300
_MODULE = "solution"
_U32 = struct.Struct(">I")
_F64 = struct.Struct(">d")


class _TestTimeout(BaseException):
    """The per-test alarm fired (a BaseException so that no test code can swallow it)."""


class _CandidateGone(Exception):
    """The candidate process exited, was killed, or broke the protocol."""


class CandidateError(Exception):
    """The candidate raised an exception that is not a builtin one (type name and message)."""


class UnsupportedValue(TypeError):
    """The candidate returned something other than an exact builtin value."""


def _short(text):
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _describe(exc):
    message = _short(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# ---------------------------------------------------------------- framing (both sides)


def _send(sock, payload):
    sock.sendall(_U32.pack(len(payload)) + payload)


def _recv_exact(read, size):
    chunks, left = [], size
    while left:
        chunk = read(min(left, 1 << 20))
        if not chunk:
            raise _CandidateGone("connection closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv(sock):
    (size,) = _U32.unpack(_recv_exact(sock.recv, 4))
    if size > _MAX_MESSAGE:
        raise _CandidateGone(f"a message of {size} bytes is over the {_MAX_MESSAGE}-byte bound")
    return _recv_exact(sock.recv, size)


# ---------------------------------------------------------------- strict value encoding


def _encode(value, out):
    """Append the encoding of an exact builtin value to `out`; anything else raises UnsupportedValue."""
    kind = type(value)
    if value is None:
        out.append(b"N")
    elif kind is bool:
        out.append(b"T" if value else b"F")
    elif kind is int:
        text = format(value, "x").encode()
        out.append(b"i" + _U32.pack(len(text)) + text)
    elif kind is float:
        out.append(b"f" + _F64.pack(value))
    elif kind is str:
        data = value.encode("utf-8", "surrogatepass")
        out.append(b"s" + _U32.pack(len(data)) + data)
    elif kind is bytes:
        out.append(b"y" + _U32.pack(len(value)) + value)
    elif kind is complex:
        out.append(b"c" + _F64.pack(value.real) + _F64.pack(value.imag))
    elif kind is list or kind is tuple or kind is set or kind is frozenset:
        out.append({list: b"l", tuple: b"t", set: b"S", frozenset: b"Z"}[kind] + _U32.pack(len(value)))
        for item in value:
            _encode(item, out)
    elif kind is dict:
        out.append(b"d" + _U32.pack(len(value)))
        for key, item in value.items():
            _encode(key, out)
            _encode(item, out)
    else:
        raise UnsupportedValue(f"a value of type {kind.__module__}.{kind.__qualname__} is not a plain builtin value")


class _Decoder:
    """Re-builds a value from its encoding, creating only exact builtin types."""

    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, size):
        if size < 0 or self.pos + size > len(self.data):
            raise UnsupportedValue("truncated value")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def count(self):
        return _U32.unpack(self.take(4))[0]

    def value(self, depth=0):
        if depth > _MAX_DEPTH:
            raise UnsupportedValue(f"a value nested deeper than {_MAX_DEPTH}")
        tag = self.take(1)
        if tag == b"N":
            return None
        if tag == b"T" or tag == b"F":
            return tag == b"T"
        if tag == b"i":
            return int(self.take(self.count()).decode("ascii"), 16)
        if tag == b"f":
            return _F64.unpack(self.take(8))[0]
        if tag == b"s":
            return self.take(self.count()).decode("utf-8", "surrogatepass")
        if tag == b"y":
            return bytes(self.take(self.count()))
        if tag == b"c":
            return complex(_F64.unpack(self.take(8))[0], _F64.unpack(self.take(8))[0])
        if tag == b"d":
            size = self.count()
            return {self.value(depth + 1): self.value(depth + 1) for _ in range(size)}
        if tag in (b"l", b"t", b"S", b"Z"):
            items = [self.value(depth + 1) for _ in range(self.count())]
            return {b"l": list, b"t": tuple, b"S": set, b"Z": frozenset}[tag](items)
        raise UnsupportedValue(f"unknown value tag {tag!r}")


def _decode(data):
    decoder = _Decoder(data)
    value = decoder.value()
    if decoder.pos != len(data):
        raise UnsupportedValue("trailing bytes after the value")
    return value


# ---------------------------------------------------------------- candidate side (untrusted once loaded)


def _privilege_dropper():
    """A function that sets no-new-privileges and drops every capability, so that a candidate cannot
    ptrace the non-dumpable harness. Made once in the spawner: setting up ctypes in each candidate
    cost about 8% of a shared run's time."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl, capset = libc.prctl, libc.capset
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
        data = (ctypes.c_uint32 * 6)()
    except Exception:  # noqa: BLE001 - best effort: without ctypes there is nothing to drop
        return lambda: None

    def drop():
        try:
            prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
            for cap in range(64):
                if prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP; fails past the last cap or without CAP_SETPCAP
                    break
            capset(header, data)
        except Exception:  # noqa: BLE001 - best effort, as above
            pass

    return drop


def _reply(sock, tag, seq, body):
    _send(sock, tag + _U32.pack(seq) + body)


def _serve_candidate(sock, drop_privileges):
    """Load the candidate's code, then answer calls until the harness closes the socket."""
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    drop_privileges()
    code = marshal.loads(_recv(sock))
    module = type(sys)(_MODULE)
    module.__dict__["__builtins__"] = builtins
    sys.modules[_MODULE] = module
    sys.argv = [_MODULE + ".py"]
    try:
        exec(compile(code, _MODULE + ".py", "exec"), module.__dict__)
        names = [n for n, v in list(module.__dict__.items()) if type(n) is str and n[:2] != "__" and callable(v)]
        out = []
        _encode(names, out)
        _reply(sock, b"O", 0, b"".join(out))
    except BaseException as exc:  # noqa: BLE001 - SystemExit at import is a failed load, not an exit
        _reply(sock, b"E", 0, _describe(exc).encode("utf-8", "replace"))
    functions = module.__dict__
    while True:
        seq, name, args, kwargs = marshal.loads(_recv(sock))
        try:
            value = functions[name](*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the harness
            _reply(sock, b"X", seq, marshal.dumps((type(exc).__name__, _short(exc))))
            continue
        out = []
        try:
            _encode(value, out)
        except BaseException as exc:  # noqa: BLE001 - unsupported types, cycles, deep nesting
            _reply(sock, b"B", seq, _describe(exc).encode("utf-8", "replace"))
            continue
        _reply(sock, b"R", seq, b"".join(out))


def _send_fd(sock, data, fd):
    sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", fd))])


def _recv_fd(sock, size):
    data, ancillary, _, _ = sock.recvmsg(size, _socket.CMSG_SPACE(4))
    fds = [struct.unpack("i", d[:4])[0] for level, kind, d in ancillary if kind == _socket.SCM_RIGHTS and len(d) >= 4]
    return data, fds


_RLIMITS = tuple(getattr(_resource, name) for name in dir(_resource) if name.startswith("RLIMIT_"))


def _vitals():
    """What another process of the run could change about this one from outside: rlimits and priority."""
    return [_resource.getrlimit(r) for r in _RLIMITS], os.getpriority(os.PRIO_PROCESS, 0)


def _spawner(control):
    """Fork a fresh candidate process per request (b"s"); kill every candidate and prove this process
    untouched (b"k"). Holds no nonce and no tests: it was forked before they were read."""
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        keep = control.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, 1 << 20)
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
        _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: a candidate's orphans stay ours to kill
        vitals, cpus = _vitals(), os.sched_getaffinity(0)
        drop_privileges = _privilege_dropper()
        while True:
            request = control.recv(1)
            while True:  # reap the candidates the harness killed, so they hold no pid and no process count
                try:
                    if os.waitpid(-1, os.WNOHANG)[0] == 0:
                        break
                except ChildProcessError:
                    break
            if request == b"k":
                clean = _kill_descendants()
                try:
                    os.sched_setaffinity(0, cpus)
                except OSError:
                    clean = False
                control.send(b"1" if clean and _vitals() == vitals else b"0")
                continue
            if request != b"s":
                return
            ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
            pid = os.fork()
            if pid == 0:
                try:
                    control.close()
                    ours.close()
                    _serve_candidate(theirs, drop_privileges)
                finally:
                    os._exit(0)
            theirs.close()
            _send_fd(control, struct.pack(">q", pid), ours.fileno())
            ours.close()
    finally:
        os._exit(0)


# ---------------------------------------------------------------- harness side (trusted)


class _alarm:
    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        _signal.setitimer(_signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        _signal.setitimer(_signal.ITIMER_REAL, 0)
        return False


def _on_alarm(signum, frame):
    raise _TestTimeout()


class _Candidate:
    """The live candidate process as the harness sees it: spawn, load, call, kill."""

    def __init__(self, control, code, timeout_s):
        self.control, self.code, self.timeout_s = control, code, timeout_s
        self.sock, self.pid, self.seq = None, None, 0
        self.names, self.load_error, self.last = [], None, None

    def start(self):
        """Spawn and load a fresh candidate; on failure `load_error` says why."""
        self.kill()
        self.load_error = None
        try:
            with _alarm(self.timeout_s):
                self.control.send(b"s")
                data, fds = _recv_fd(self.control, 8)
                if len(data) != 8 or len(fds) != 1:
                    raise _CandidateGone("the spawner did not answer")
                (self.pid,) = struct.unpack(">q", data)
                self.sock = _socket.socket(fileno=fds[0])
                _send(self.sock, marshal.dumps(self.code))
                reply = _recv(self.sock)
        except _TestTimeout:
            self.kill()
            self.load_error = f"timed out after {self.timeout_s:g}s while loading the code"
            return
        except (OSError, _CandidateGone, struct.error) as exc:
            self.kill()
            self.load_error = f"the candidate process died while loading the code ({_short(exc)})"
            return
        tag, body = reply[:1], reply[5:]
        if tag == b"O":
            try:
                names = _decode(body)
            except (UnsupportedValue, ValueError, TypeError, RecursionError):
                names = None
            if type(names) is list:
                self.names = [n for n in names if type(n) is str and n.isidentifier()]
                return
        if tag == b"E":
            self.load_error = "the code failed to load: " + _short(body.decode("utf-8", "replace"))
        else:
            self.load_error = "the candidate process broke the protocol while loading"
        self.kill()

    def kill(self):
        if self.pid is not None:
            try:
                os.kill(self.pid, 9)
            except OSError:
                pass
        if self.sock is not None:
            self.sock.close()
        self.sock, self.pid = None, None

    def call(self, name, args, kwargs):
        """Call the candidate's `name(*args, **kwargs)`; only exact builtin values come back."""
        if self.sock is None:
            raise _CandidateGone(self.load_error or "the candidate process is not running")
        self.seq = (self.seq + 1) % (1 << 32)
        try:
            request = marshal.dumps((self.seq, name, args, kwargs))
        except ValueError as exc:
            raise TypeError(f"the test's arguments cannot be sent to the candidate ({_short(exc)})") from None
        try:
            _send(self.sock, request)
            reply = _recv(self.sock)
        except (OSError, _CandidateGone) as exc:
            self.kill()
            raise _CandidateGone(f"the candidate process died during the call ({_short(exc)})") from None
        tag, body = reply[:1], reply[5:]
        if len(reply) < 5 or _U32.unpack(reply[1:5])[0] != self.seq:
            self.kill()
            raise _CandidateGone("the candidate process broke the protocol")
        if tag == b"R":
            try:
                value = _decode(body)
            except (UnsupportedValue, ValueError, TypeError, OverflowError, RecursionError, struct.error) as exc:
                raise UnsupportedValue(f"{name} returned an unsupported value ({_short(exc)})") from None
            self.last = f"{name}(...) returned {_short(repr(value))[:80]}"
            return value
        if tag == b"B":
            raise UnsupportedValue(f"{name} returned an unsupported value ({_short(body.decode('utf-8', 'replace'))})")
        if tag == b"X":
            try:
                type_name, message = marshal.loads(body)  # from the candidate: checked below, types only
            except (ValueError, EOFError, TypeError):
                type_name, message = None, None
            if type(type_name) is str and type(message) is str:
                raise _rebuild_exception(type_name, message)
        self.kill()
        raise _CandidateGone("the candidate process broke the protocol")


def _rebuild_exception(type_name, message):
    """A builtin exception of the same name (tests may expect ValueError...), else CandidateError."""
    exc_type = getattr(builtins, type_name, None) if type_name.isidentifier() else None
    if isinstance(exc_type, type) and issubclass(exc_type, Exception):
        try:
            return exc_type(_short(message))
        except Exception:  # noqa: BLE001 - exception types with other constructors
            pass
    return CandidateError(_short(f"{type_name}: {message}"))


class _Remote:
    """Stands in for a candidate function in the test namespace."""

    def __init__(self, candidate, name):
        self._candidate, self._name = candidate, name

    def __call__(self, *args, **kwargs):
        return self._candidate.call(self._name, args, kwargs)

    def __repr__(self):
        return f"<candidate function {self._name}>"


_PENDING: list = []  # lines not yet written (annotations need no typing import)
_FLUSHED = [0.0]


def _emit(nonce, kind, body=""):
    """Queue one line; written out with the next line that closes a job or announces one (start, plan,
    done, fatal), or once lines have waited 5 ms (a write per result cost a wake-up of the server)."""
    _PENDING.append(f"{nonce} {kind} {body}\n")
    now = time.monotonic()
    if kind != "result" or now - _FLUSHED[0] > 0.005:
        sys.stdout.write("".join(_PENDING))
        sys.stdout.flush()
        _PENDING.clear()
        _FLUSHED[0] = now


def _escape(text):
    return text.encode("unicode_escape").decode("ascii")


def _read_stdin(size=None):
    if size is not None:
        return _recv_exact(lambda n: os.read(0, n), size)
    chunks = []
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _run_tests(nonce, payload, control):
    namespace = {"__name__": "__tests__", "__builtins__": builtins}
    try:
        exec(compile(payload["prelude"], "<tests>", "exec"), namespace)
        for name in payload["modules"]:
            if name not in namespace:
                namespace[name] = __import__(name)
        units = [(compile(source, "<test>", "exec"), is_test) for source, is_test in payload["units"]]
    except BaseException as exc:  # noqa: BLE001 - the task's own test code is broken
        _emit(nonce, "fatal", _escape(_describe(exc)))
        return
    _emit(nonce, "plan", sum(1 for _, is_test in units if is_test))

    timeout_s = payload["timeout_s"]
    deadline = time.monotonic() + payload["budget_s"]
    candidate = _Candidate(control, payload["code"], timeout_s)
    candidate.start()
    blocked = candidate.load_error  # a reason that fails every remaining test
    if blocked is None:
        for name, target in payload["binds"].items():
            if target in candidate.names:
                namespace[name] = _Remote(candidate, target)
        for name in candidate.names:  # helpers the tests call by name (HumanEval/32's `poly`)
            if name not in namespace and not hasattr(builtins, name):
                namespace[name] = _Remote(candidate, name)
        entry_point = payload["entry_point"]
        if entry_point and entry_point not in candidate.names:
            blocked = f"the code does not define a function `{entry_point}`"
    index, out_of_time = 0, False
    for code, is_test in units:
        left = deadline - time.monotonic()
        if blocked is None and left < 0.01:
            blocked, out_of_time = f"timed out: the whole run hit its {payload['budget_s']:g}s bound", True
        reason = blocked
        if reason is None:
            candidate.last, restart = None, False
            try:
                with _alarm(min(timeout_s, left)):
                    exec(code, namespace)
            except _TestTimeout:
                reason, restart = f"timed out after {min(timeout_s, left):g}s", True
            except _CandidateGone as exc:
                reason, restart = _short(exc), True
            except NameError as exc:
                reason = _describe(exc)
                if exc.name is not None:  # looked up here (a NameError the candidate raised has no name)
                    reason += " (neither the tests nor the candidate's code define it)"
            except AssertionError as exc:
                reason = _describe(exc) if str(exc) else "assertion failed"
                if candidate.last is not None:
                    reason += f" (last call: {candidate.last})"
            except BaseException as exc:  # noqa: BLE001 - any failure of a test is its reason
                reason = _describe(exc)
            if restart or (reason is not None and candidate.sock is None):
                candidate.start()  # a fresh process for the next test
                if candidate.load_error is not None:
                    blocked = "the candidate could not be restarted: " + candidate.load_error
            if reason is not None and not is_test:
                blocked = f"a setup statement of the tests failed: {reason}"
        if is_test:
            _emit(nonce, "result", f"{index} {0 if reason else 1} {_escape(reason or '')}")
            index += 1
    _emit(nonce, "done", "timeout" if out_of_time else "")
    candidate.kill()


def _start_spawner():
    """The spawner's pid and our end of its control socket."""
    control, spawner_end = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        control.close()
        _spawner(spawner_end)
    spawner_end.close()
    return pid, control


def _spawner_reset(pid, control):
    """Between jobs: the spawner has killed every candidate and was not tampered with (bounded wait)."""
    try:
        os.kill(pid, _signal.SIGCONT)  # a candidate may have stopped it
        with _alarm(2.0):
            control.send(b"k")
            return control.recv(1) == b"1"
    except (_TestTimeout, OSError):
        return False


def _prctl(option, value):
    try:
        import ctypes

        ctypes.CDLL(None).prctl(option, value, 0, 0, 0)
    except Exception:  # noqa: BLE001 - without prctl there is nothing more to do
        pass


def _children():
    pids = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return pids


def _kill_descendants(keep=()):
    """Kill every child but `keep`, and every orphan that comes back to us as a child subreaper."""
    for _ in range(100):
        pids = [pid for pid in _children() if pid not in keep]
        for pid in pids:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if not pids:
            return True
    return False


def _wipe(path):
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                _wipe(entry.path)
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            pass


def main():
    """Run each job's tests against its candidate and report on stdout."""
    _prctl(4, 0)  # PR_SET_DUMPABLE 0: no /proc/<pid>/fd, mem or ptrace of us (nor of the spawner, our fork)
    _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: a job's orphans stay ours to kill
    try:
        os.setsid()  # our own process group: a candidate's killpg(0) reaches no process outside this run
    except OSError:
        pass
    cwd = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", ".", cwd)]  # nothing the candidate can write to
    (size,) = _U32.unpack(_read_stdin(4))
    public = marshal.loads(_read_stdin(size))
    if public.get("cpu") is not None:  # one core for the whole run: the harness and a candidate ping-pong
        try:
            os.sched_setaffinity(0, {public["cpu"]})
        except (OSError, ValueError, TypeError):
            pass
    for name in public["preimport"]:  # shared by this process and every candidate forked below
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - the candidate or the tests will report it themselves
            pass
    spawner, control = _start_spawner()  # before the secrets are read: no candidate ever holds them
    _signal.signal(_signal.SIGALRM, _on_alarm)
    private_scratch = cwd == "/sandbox"  # LocalSandbox: /sandbox, /tmp and /dev/shm are this run's own tmpfs
    streamed = bool(public.get("stream"))
    if streamed:
        jobs = _streamed_jobs()
    else:
        secret = marshal.loads(_read_stdin())
        jobs = ((secret["nonce"], job, j + 1 == len(secret["jobs"])) for j, job in enumerate(secret["jobs"]))
    for j, (nonce, job, last) in enumerate(jobs):
        job_nonce = os.urandom(16).hex()
        _emit(nonce, "start", f"{0 if streamed else j} {job_nonce}")
        _run_tests(job_nonce, job, control)
        if not last:  # (a streamed run cleans up right away: the next job may come at any time)
            reset = _spawner_reset(spawner, control)
            if not (_kill_descendants(keep=(spawner,)) and reset):
                return  # the next job could be touched by what this one left: leave the rest unreported
            if private_scratch:
                for path in ("/sandbox", "/tmp", "/dev/shm"):
                    _wipe(path)


def _streamed_jobs():
    """(nonce, job, False) for each `[u32 n][marshal {"nonce", "job"}]` frame on stdin, until it ends."""
    while True:
        head = os.read(0, 4)
        if not head:
            return
        (size,) = _U32.unpack(head + _read_stdin(4 - len(head)) if len(head) < 4 else head)
        frame = marshal.loads(_read_stdin(size))
        yield frame["nonce"], frame["job"], False


if __name__ == "__main__":
    main()
