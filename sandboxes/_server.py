"""The warm fork server behind `LocalSandbox`: one long-lived process per worker, inside namespaces.

Started by `local.py` as `python -I _server.py CONFIG_JSON` with its control pipes on stdin/stdout,
it builds a read-only root (system paths and the Python install only), enters new user, mount, pid,
net, ipc and uts namespaces, preloads modules, and then serves one run at a time: each run is a
fork that unshares fresh namespaces of its own (tmpfs /tmp, /sandbox and /dev/shm, its own /proc,
pid namespace and loopback-only network), drops capabilities, sets rlimits, installs a seccomp
filter and runs the code. The next run's namespaces, /proc and pid-1 init are prepared ahead (while
the current run executes, or while idle); its request (limits, files, stdin) reaches that init
afterwards, so tmpfs sizes, rlimits and seccomp still follow each request. The init also bounds the
run's total memory (every process's RSS plus its tmpfs) and kills the whole run past it. It must
never hand anything but JSON and bytes back to the host, and no run may outlive its reply: a run's
pid-namespace init is killed and reaped before the reply is sent.
This file imports only the standard library and must stay importable without side effects.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import gc
import json
import math
import os
import platform
import resource
import select
import signal
import site
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO, NoReturn

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP = 0x10000000, 0x20000000, 0x40000000, 0x02000000
NAMESPACE_FLAGS = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
NAMESPACE_FLAGS |= CLONE_NEWCGROUP
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
MS_REC, MS_PRIVATE, MNT_DETACH = 16384, 1 << 18, 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_SECCOMP = 1, 4, 24, 22
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 36, 38, 47, 4
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine())
SANDBOX_UID = 1000  # the uid a run sees; mapped to the server's uid, which is never host root
NOBODY = 65534
WORKDIR = "/sandbox"
OPEN_FILES = 256
SCRATCH_MOUNTS = ("/tmp", WORKDIR, "/dev/shm")  # the run's tmpfs mounts: what is written there is memory
MEMORY_POLL_S = 0.005
"""How often a run's init sums the run's memory (stretched so that a sweep takes at most ~1/5 of a core)."""
PRECISE_POLL_S = 0.02
"""How often, while the cheap RSS sum is over the bound, the exact (PSS) sum may be taken to confirm it."""
ADDRESS_SPACE_SLACK = 8 << 30
"""RLIMIT_AS is memory_mb plus this: the run's init bounds resident memory, and address space is not memory.
Each thread reserves a stack (8 MB) and glibc a malloc arena (64 MB) that stay mostly untouched, so an
RLIMIT_AS of memory_mb would stop a 16-thread pool under 256 MB; the cap only stops absurd reservations
(a 10 GB allocation fails at once with MemoryError instead of being touched and killed)."""
_libc = ctypes.CDLL(None, use_errno=True)

# Syscalls a run never needs and that widen the kernel attack surface (x86_64 numbers): EPERM.
# shmget, semget, msgget and memfd_create hold memory that no process's RSS and no scratch tmpfs shows, so the
# run's memory bound could not see it.
_DENIED_X86_64 = {
    name: int(number)
    for name, number in (
        pair.split("=")
        for pair in """
    ptrace=101 syslog=103 vhangup=153 pivot_root=155 adjtimex=159 chroot=161 acct=163 settimeofday=164
    mount=165 umount2=166 swapon=167 swapoff=168 reboot=169 sethostname=170 setdomainname=171 iopl=172
    ioperm=173 init_module=175 delete_module=176 quotactl=179 lookup_dcookie=212 clock_settime=227
    kexec_load=246 add_key=248 request_key=249 keyctl=250 unshare=272 perf_event_open=298 fanotify_init=300
    name_to_handle_at=303 open_by_handle_at=304 clock_adjtime=305 setns=308 process_vm_readv=310
    process_vm_writev=311 kcmp=312 finit_module=313 kexec_file_load=320 bpf=321 userfaultfd=323
    shmget=29 semget=64 msgget=68 memfd_create=319
    io_uring_setup=425 io_uring_enter=426 io_uring_register=427 open_tree=428 move_mount=429 fsopen=430
    fsconfig=431 fsmount=432 fspick=433 pidfd_getfd=438 mount_setattr=442 quotactl_fd=443
    """.split()
    )
}
_CLONE_X86_64, _CLONE3_X86_64, _AUDIT_ARCH_X86_64 = 56, 435, 0xC000003E


class SetupError(RuntimeError):
    """The server or a run could not be isolated as required."""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    """unshare(2) through libc (Python 3.11 has no os.unshare)."""
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """mount(2) through libc."""
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    result = _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(result, f"mount {source} on {target} ({fstype})")


def prctl(option: int, arg: int = 0) -> int:
    """prctl(2) with one argument; returns the raw result."""
    return int(_libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)))


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _map_ids(inside: int, outside_uid: int, outside_gid: int) -> None:
    """Map one uid/gid into the user namespace this process just created (setgroups denied first)."""
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{inside} {outside_uid} 1")
    _write("/proc/self/gid_map", f"{inside} {outside_gid} 1")


# ---------------------------------------------------------------------------------------------
# Framing: 4-byte big-endian length + JSON header, then the blobs whose sizes the header lists.


def write_frame(fd: int, header: dict[str, Any], blobs: tuple[bytes, ...] = ()) -> None:
    """Send one frame (header JSON must list blob sizes itself when there are blobs)."""
    data = json.dumps(header).encode()
    payload = struct.pack("!I", len(data)) + data + b"".join(blobs)
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def read_exact(stream: BinaryIO, size: int) -> bytes:
    """Read exactly size bytes or raise EOFError (the control pipe is unbuffered: reads may come short)."""
    chunks, got = [], 0
    while got < size:
        chunk = stream.read(min(size - got, 1 << 20))
        if not chunk:
            raise EOFError("control pipe closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO) -> dict[str, Any]:
    """Read one frame header."""
    (size,) = struct.unpack("!I", read_exact(stream, 4))
    header = json.loads(read_exact(stream, size))
    if not isinstance(header, dict):
        raise ValueError("frame header is not an object")
    return header


# ---------------------------------------------------------------------------------------------
# Building the server's view of the file system.


def _python_dirs() -> list[str]:
    """Directories the interpreter needs: install prefixes, the venv, the real binary's directory."""
    candidates = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    candidates.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    dirs = sorted(os.path.realpath(d) for d in candidates if os.path.isdir(d))
    for d in dirs:
        if d == "/" or d in ("/tmp", WORKDIR) or d.startswith(("/tmp/", WORKDIR + "/", "/proc/", "/dev/")):
            raise SetupError(f"cannot sandbox a Python installed under {d!r} (it would be hidden by a tmpfs)")
    kept: list[str] = []
    for d in dirs:  # sorted, so a parent comes before its children
        if not any(d == k or d.startswith(k + "/") for k in kept):
            kept.append(d)
    return [d for d in kept if not d.startswith("/usr/") and d != "/usr"]


def _is_site_dir(path: str) -> bool:
    parts = path.split(os.sep)
    return "site-packages" in parts or "dist-packages" in parts


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _hidden_site_dirs(chosen: list[str]) -> list[str]:
    """The interpreter's own package folders, covered by an empty tmpfs unless chosen (or overlapping one)."""
    found = {os.path.realpath(d) for d in site.getsitepackages() if os.path.isdir(d)}
    return sorted(d for d in found if not any(_overlaps(d, c) for c in chosen))


def use_site_packages(chosen: list[str]) -> None:
    """Make the import path the standard library plus the chosen package folders (with their .pth files)."""
    bases = tuple(os.path.realpath(b).rstrip("/") + "/" for b in {sys.base_prefix, sys.base_exec_prefix})
    sys.path[:] = [p for p in sys.path if not _is_site_dir(p) and (os.path.realpath(p) + "/").startswith(bases)]
    for folder in chosen:
        site.addsitedir(folder)
    sys.path_importer_cache.clear()


def _bind_ro(source: str, target: str) -> None:
    mount(source, target, None, MS_BIND | MS_REC)
    # A read-only remount in a user namespace must keep the locked nosuid/nodev/noexec flags.
    st = os.statvfs(source)
    keep = st.f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC | 1024 | 2048 | (1 << 21))  # + noatime/nodiratime/relatime
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)


def _make_target(source: str, target: str) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            open(target, "wb").close()


def _copy_or_bind(path: str, root: str) -> None:
    """Recreate a host path inside root: symlinks as symlinks, files and dirs as read-only binds."""
    target = root + path
    if os.path.islink(path):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(os.readlink(path), target)
    elif os.path.exists(path):
        _make_target(path, target)
        _bind_ro(path, target)


_PASSWD = f"root:x:0:0:root:/:/bin/sh\nsandbox:x:{SANDBOX_UID}:{SANDBOX_UID}::{WORKDIR}:/bin/sh\n"
_GROUP = f"root:x:0:\nsandbox:x:{SANDBOX_UID}:\n"


def build_root(root: str, network: bool, site_packages: list[str]) -> None:
    """Mount a tmpfs at root and populate it with read-only system paths, a synthetic /etc and /dev.

    The interpreter's own site-packages are covered by an empty read-only tmpfs: a run sees the
    standard library and only the package folders chosen in site_packages (read-only binds).
    """
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16m")
    for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", *_python_dirs()):
        _copy_or_bind(path, root)
    for path in _hidden_site_dirs(site_packages):
        if os.path.isdir(root + path):
            mount("tmpfs", root + path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=0755,size=4k")
    for path in site_packages:
        _copy_or_bind(path, root)
    os.makedirs(root + "/etc")
    etc = ["ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "mime.types"]
    if network:
        etc += ["resolv.conf", "hosts", "ssl", "ca-certificates", "nsswitch.conf", "gai.conf", "services", "protocols"]
    for name in etc:
        _copy_or_bind("/etc/" + name, root)
    files = {"passwd": _PASSWD, "group": _GROUP, "hostname": "sandbox\n"}
    if not network:
        files |= {"hosts": "127.0.0.1 localhost\n::1 localhost\n", "nsswitch.conf": "hosts: files\n"}
    for name, text in files.items():
        if not os.path.lexists(f"{root}/etc/{name}"):
            with open(f"{root}/etc/{name}", "w") as f:
                f.write(text)
    for name in ("null", "zero", "full", "random", "urandom"):
        _make_target("/dev/" + name, f"{root}/dev/{name}")
        mount("/dev/" + name, f"{root}/dev/{name}", None, MS_BIND)
    for name, link in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(link, f"{root}/dev/{name}")
    for d in ("/dev/shm", "/proc", "/tmp", WORKDIR):
        os.makedirs(root + d, exist_ok=True)
    os.chmod(root + "/tmp", 0o1777)
    # A proc mount must already be fully visible in this mount namespace for the pid-namespace
    # init to mount its own later; mount one now (it is covered by the server's own right after).
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def pivot_into(root: str) -> None:
    """Make root the file-system root and detach everything else (pivot_root(".", ".") idiom)."""
    if SYS_PIVOT_ROOT is None:
        raise SetupError(f"pivot_root syscall number unknown for {platform.machine()}")
    os.chdir(root)
    _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def enter_namespaces(network: bool, site_packages: list[str]) -> bool:
    """Enter user/mount/pid/net/ipc/uts namespaces (pid applies to children); True if the root view is built."""
    others = CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | (0 if network else CLONE_NEWNET)
    if os.geteuid() == 0:
        # Real root builds the root view with real privileges (it can read the Python install even
        # where that lives under /root), then becomes nobody so that RLIMIT_NPROC applies to runs.
        unshare(CLONE_NEWNS)
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        build_root("/tmp", network, site_packages)
        pivot_into("/tmp")
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        prctl(PR_SET_DUMPABLE, 1)  # else /proc/self/uid_map is root's and unwritable
        unshare(CLONE_NEWUSER | CLONE_NEWNS | others)
        _map_ids(0, NOBODY, NOBODY)
        return True
    # Without real privileges, proc can only be mounted by a process in a pid namespace this user
    # namespace owns: the root view is built by the child, the new pid namespace's init.
    uid, gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWUSER | CLONE_NEWNS)
    _map_ids(0, uid, gid)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    unshare(others)
    return False


# ---------------------------------------------------------------------------------------------
# Per-run hardening inside the run's namespaces.


def seccomp_program() -> bytes:
    """A BPF filter: EPERM for denied syscalls and namespace-creating clone, ENOSYS for clone3 and non-x86_64 ABIs."""
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    ins: list[tuple[int, int, int, int]] = [
        (ld, 0, 0, 4),  # arch
        (jeq, 1, 0, _AUDIT_ARCH_X86_64),
        (ret, 0, 0, enosys),
        (ld, 0, 0, 0),  # nr
        (jge, 0, 1, 0x40000000),  # x32 ABI
        (ret, 0, 0, enosys),
        (jeq, 0, 1, _CLONE3_X86_64),
        (ret, 0, 0, enosys),  # libc falls back to clone, whose flags we can inspect
    ]
    for nr in _DENIED_X86_64.values():
        ins += [(jeq, 0, 1, nr), (ret, 0, 0, eperm)]
    ins += [
        (jeq, 0, 3, _CLONE_X86_64),
        (ld, 0, 0, 16),  # low 32 bits of args[0]: the clone flags
        (jset, 0, 1, NAMESPACE_FLAGS),
        (ret, 0, 0, eperm),
        (ret, 0, 0, allow),
    ]
    return b"".join(struct.pack("HBBI", *i) for i in ins)


def install_seccomp(program: bytes) -> None:
    """Load a BPF program as this thread-group's seccomp filter (no_new_privs set first)."""
    buf = ctypes.create_string_buffer(program)
    fprog = struct.pack("HxxxxxxP", len(program) // 8, ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog)
    _check(prctl(PR_SET_NO_NEW_PRIVS, 1), "prctl(NO_NEW_PRIVS)")
    _check(_libc.prctl(PR_SET_SECCOMP, 2, fbuf, 0, 0), "prctl(PR_SET_SECCOMP)")  # SECCOMP_MODE_FILTER


def drop_bounding_capabilities() -> None:
    """Empty the bounding and ambient sets (inherited by children; the effective set stays)."""
    for cap in range(64):
        if prctl(PR_CAPBSET_DROP, cap) != 0:
            break
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def drop_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable capability sets."""
    drop_bounding_capabilities()
    _check(_libc.capset(ctypes.create_string_buffer(_CAP_HEADER), ctypes.create_string_buffer(24)), "capset")


_CAP_HEADER = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", 0x1 | 0x8 | 0x40))  # SIOCSIFFLAGS UP|LOOPBACK|RUNNING


# ---------------------------------------------------------------------------------------------
# A run's total memory, as its pid-1 init sees it (every process in /proc is the run's own).


def _kb_field(data: bytes, key: bytes) -> int | None:
    """The value of a `Key:   123 kB` line of a /proc file, in bytes (None when absent)."""
    i = data.find(key)
    if i < 0:
        return None
    end = data.find(b"kB", i)
    return int(data[i + len(key) : end]) << 10 if end > 0 else None


def _read_proc(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 8192)
    finally:
        os.close(fd)


def scratch_bytes() -> int:
    """Bytes used on the run's tmpfs mounts (tmpfs pages are memory)."""
    used = 0
    for path in SCRATCH_MOUNTS:
        try:
            st = os.statvfs(path)
        except OSError:
            continue
        used += (st.f_blocks - st.f_bfree) * st.f_frsize
    return used


def run_pids() -> list[str]:
    """Every process of this pid namespace but its init (the caller)."""
    return [p for p in os.listdir("/proc") if p.isdigit() and p != "1"]


def cheap_memory(pids: list[str]) -> int:
    """Sum of RssAnon + RssShmem: an upper bound (pages a fork still shares count once per process)."""
    total = 0
    for pid in pids:
        try:
            data = _read_proc(f"/proc/{pid}/status")
        except OSError:  # gone meanwhile
            continue
        total += (_kb_field(data, b"RssAnon:") or 0) + (_kb_field(data, b"RssShmem:") or 0)
    return total


def precise_memory(pids: list[str]) -> int:
    """Sum of Pss_Anon + Pss_Shmem (shared pages split between their sharers); RSS where PSS is unreadable."""
    total = 0
    for pid in pids:
        try:
            data = _read_proc(f"/proc/{pid}/smaps_rollup")
            anon = _kb_field(data, b"Pss_Anon:")
            if anon is None:
                raise OSError("no Pss_Anon")
            total += anon + (_kb_field(data, b"Pss_Shmem:") or 0)
        except (OSError, ValueError):
            total += cheap_memory([pid])
    return total


class MemoryWatch:
    """Decides, tick by tick, whether a run's processes plus its scratch files exceed its memory bound.

    The cheap sum (one /proc/PID/status read per process) bounds the truth from above; only when it
    passes the bound is the exact sum (smaps_rollup, which walks page tables) taken, at most every
    PRECISE_POLL_S, so that forked processes sharing the warm interpreter's pages are not over-counted.
    """

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.interval = MEMORY_POLL_S
        self.next_precise = 0.0
        self.used = 0

    def exceeded(self) -> bool:
        """Take one measurement (and stretch the interval if it was slow)."""
        t = time.monotonic()
        pids = run_pids()
        used = scratch_bytes()
        cheap = used + cheap_memory(pids)
        self.used = cheap
        over = False
        if cheap > self.bound and t >= self.next_precise:
            self.used = used + precise_memory(pids)
            over = self.used > self.bound
            self.next_precise = time.monotonic() + PRECISE_POLL_S
        self.interval = max(MEMORY_POLL_S, 5 * (time.monotonic() - t))
        return over


# ---------------------------------------------------------------------------------------------
# The server.


class _Slot:
    """The server's side of a run prepared ahead of its request."""

    def __init__(self, creator: int, req_w: int, out_r: int, err_r: int, st_r: int, stdin_fd: int, pipe_w: int) -> None:
        self.creator, self.req_w, self.stdin_fd, self.pipe_w = creator, req_w, stdin_fd, pipe_w
        self.out_r, self.err_r, self.st_r = out_r, err_r, st_r

    def created(self) -> tuple[list[dict[str, Any]], bytearray]:
        """Wait for the creator (it exits right after forking the init); its messages, and any partial line."""
        os.waitpid(self.creator, 0)
        data = bytearray()
        os.set_blocking(self.st_r, False)
        try:
            while chunk := os.read(self.st_r, 4096):
                data += chunk
        except BlockingIOError:
            pass
        os.set_blocking(self.st_r, True)
        *lines, rest = bytes(data).split(b"\n")
        return [json.loads(line) for line in lines], bytearray(rest)

    def close_request_side(self) -> None:
        self._close("req_w", "stdin_fd")

    def close_all(self) -> None:
        self._close("req_w", "stdin_fd", "pipe_w", "out_r", "err_r", "st_r")

    def take_pipe(self) -> int:
        """The stdin pipe's write end, now the caller's to close."""
        fd, self.pipe_w = self.pipe_w, -1
        return fd

    def _close(self, *names: str) -> None:
        for name in names:
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)


class Server:
    """Serves runs one at a time over the control pipes."""

    def __init__(self, config: dict[str, Any], ctl_in: BinaryIO, ctl_out: int) -> None:
        self.unsafe: bool = bool(config.get("unsafe"))
        self.network: bool = bool(config.get("network"))
        self.site_packages: list[str] = [str(p) for p in config.get("site_packages", ())]
        bin_dir = os.path.realpath(os.path.dirname(sys.executable))
        self.path_env = f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"
        self.ctl_in, self.ctl_out = ctl_in, ctl_out
        self.seccomp = b""
        self.tmp_root = config.get("tmp_root") or "/tmp"
        self.slot: _Slot | None = None
        """The next run, prepared ahead of its request (namespaced mode only)."""

    def setup_inside(self, preload: list[str], root_built: bool) -> dict[str, Any]:
        """Finish setup as the pid-namespace init (or plain process in unsafe mode); report features."""
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        features: dict[str, Any] = {}
        if not self.unsafe:
            if root_built:  # cover the host-pid proc with this pid namespace's own
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            else:
                build_root("/tmp", self.network, self.site_packages)
                pivot_into("/tmp")
            _libc.sethostname(b"sandbox", 7)
            if platform.machine() == "x86_64":
                self.seccomp = seccomp_program()
                features["seccomp"] = self._probe(lambda: install_seccomp(self.seccomp))
                if not features["seccomp"]:
                    self.seccomp = b""
        use_site_packages(self.site_packages)
        for name in preload:
            try:
                __import__(name)
            except Exception as exc:  # a missing optional module must not stop the server
                features.setdefault("preload_failed", []).append(f"{name}: {exc}")
        for name in ("atexit", "io", "threading", "traceback", "types"):  # what _run_python_main imports
            __import__(name)
        gc.freeze()  # keeps the collector off the preloaded heap in every fork (no copy-on-write storms)
        return features

    @staticmethod
    def _probe(action: Any) -> bool:
        pid = os.fork()
        if pid == 0:
            try:
                action()
                os._exit(0)
            except BaseException:
                os._exit(1)
        return os.waitpid(pid, 0)[1] == 0

    def serve(self) -> None:
        """Answer requests until the host closes the control pipe."""
        while True:
            if self.slot is None and not self.unsafe:
                try:
                    self.slot = self._prepare()  # while idle (normally it was prepared during the last run)
                except OSError:
                    pass  # (out of processes or fds: tried again with the request)
            try:
                header = read_frame(self.ctl_in)
            except EOFError:
                return
            if "files" not in header:  # a streamed run's stdin, eof or stop that came after it had ended
                read_exact(self.ctl_in, int(header.get("stdin", 0)))
                continue
            files = {path: read_exact(self.ctl_in, size) for path, size in header["files"]}
            stdin = read_exact(self.ctl_in, header["stdin_size"])
            try:
                reply, out, err = self.run(header, files, stdin)
            except Exception as exc:
                reply, out, err = {"error": f"{type(exc).__name__}: {exc}"}, b"", b""
            reply["stdout_size"], reply["stderr_size"] = len(out), len(err)
            write_frame(self.ctl_out, reply, (out, err))

    def run(self, header: dict[str, Any], files: dict[str, bytes], stdin: bytes) -> tuple[dict[str, Any], bytes, bytes]:
        """Run one program; return the reply header, stdout and stderr (each cut at the output cap)."""
        if not self.unsafe:
            return self._run_prepared(header, files, stdin)
        limits = header["limits"]
        streamed = bool(header.get("stream"))
        if streamed:
            stdin_fd, pipe_w = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(pipe_w, False)
        else:
            stdin_fd = os.memfd_create("stdin")
            os.write(stdin_fd, stdin)
            os.lseek(stdin_fd, 0, os.SEEK_SET)
        out_r, out_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        err_r, err_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        st_r, st_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(out_w, True)
        os.set_blocking(err_w, True)
        import shutil
        import tempfile

        workdir = tempfile.mkdtemp(prefix="llmenv-run-", dir=self.tmp_root)
        tmpdir = tempfile.mkdtemp(prefix="llmenv-tmp-", dir=self.tmp_root)
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:

            def exec_child() -> None:  # not `start`: that is the run's start time
                for fd in (out_r, err_r, st_r) + ((pipe_w,) if streamed else ()):
                    os.close(fd)
                os.setsid()
                self._exec_user(header, files, limits, stdin_fd, out_w, err_w, workdir, tmpdir)

            _child_main(exec_child, st_w)
        for fd in (stdin_fd, out_w, err_w, st_w):
            os.close(fd)
        done_fd = os.pidfd_open(pid)

        def end(messages: list[dict[str, Any]], timed_out: bool) -> int | None:
            self._kill_group(pid)
            status = os.waitpid(pid, 0)[1]
            self._reap_all()
            return status

        try:
            return self._supervise(
                start, limits, out_r, err_r, st_r, done_fd, end, stream=(pipe_w, stdin) if streamed else None
            )
        finally:
            os.close(done_fd)
            self._reap_all()
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(tmpdir, ignore_errors=True)

    # --- namespaced runs, prepared one ahead ----------------------------------------------------

    def _prepare(self) -> _Slot:
        """Fork the next run's creator: it unshares fresh namespaces and forks that run's init, which
        mounts its /proc and waits for the request (limits, files). Nothing of a request is needed."""
        stdin_fd = os.memfd_create("stdin")
        pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC)  # a streamed run's stdin (the memfd is every other run's)
        req_r, req_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        err_r, err_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        st_r, st_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(out_w, True)
        os.set_blocking(err_w, True)
        try:
            pid = os.fork()
        except OSError:
            for fd in (stdin_fd, pipe_r, pipe_w, req_r, req_w, out_r, out_w, err_r, err_w, st_r, st_w):
                os.close(fd)
            raise
        if pid == 0:

            def start() -> None:
                # nothing of the server or of a run in flight: only this run's own ends
                _close_all_but(stdin_fd, pipe_r, req_r, out_w, err_w, st_w)
                self._create(req_r, (stdin_fd, pipe_r), out_w, err_w, st_w)

            _child_main(start, st_w)
        for fd in (pipe_r, req_r, out_w, err_w, st_w):
            os.close(fd)
        os.set_blocking(pipe_w, False)
        return _Slot(pid, req_w, out_r, err_r, st_r, stdin_fd, pipe_w)

    def _run_prepared(
        self, header: dict[str, Any], files: dict[str, bytes], stdin: bytes
    ) -> tuple[dict[str, Any], bytes, bytes]:
        """Hand the request to the prepared run (or a fresh one), prepare the next, supervise this one."""
        limits = header["limits"]
        start = time.monotonic()
        streamed = bool(header.get("stream"))
        request = {
            "cmd": header.get("cmd"),
            "limits": limits,
            "files": [[p, len(c)] for p, c in files.items()],
            "stream": streamed,
        }
        for attempt in range(2):
            slot, self.slot = self.slot, None
            if slot is None:
                slot = self._prepare()
            messages, pending = slot.created()
            init = next((int(m["init"]) for m in messages if "init" in m), None)
            if init is not None:
                try:
                    view = memoryview(b"" if streamed else stdin)  # a streamed run gets it through its pipe
                    while view:  # pwrite: the shared offset stays at 0 for the program
                        view = view[os.pwrite(slot.stdin_fd, view, len(stdin) - len(view)) :]
                    write_frame(slot.req_w, request, tuple(files.values()))
                except BrokenPipeError:  # the prepared init died before the request (it is never signalled)
                    self._end_slot(slot, init)
                    slot.close_all()
                    if attempt == 0:
                        continue
                    raise SetupError("the run's init died before taking the request") from None
            slot.close_request_side()
            pipe_w = slot.take_pipe()
            if not streamed:
                os.close(pipe_w)
            if self.slot is None:
                try:
                    self.slot = self._prepare()  # the next run gets ready while this one runs
                except OSError:
                    pass

            def end(messages: list[dict[str, Any]], timed_out: bool, slot: _Slot = slot) -> int | None:
                pid = next((int(m["init"]) for m in messages if "init" in m), None)
                self._end_slot(slot, pid)  # killing a pid-namespace init kills everything in that namespace
                statuses = [int(m["status"]) for m in messages if "status" in m]
                return statuses[0] if statuses and not timed_out else None

            try:
                return self._supervise(
                    start,
                    limits,
                    slot.out_r,
                    slot.err_r,
                    slot.st_r,
                    slot.st_r,
                    end,
                    messages,
                    pending,
                    (pipe_w, stdin) if streamed else None,
                )
            except BaseException:
                self._end_slot(slot, init)
                raise
        raise AssertionError("unreachable")

    def _end_slot(self, slot: _Slot, init: int | None) -> None:
        """Kill and reap a run's init; its reaping means its whole pid namespace is gone."""
        slot.close_request_side()
        if init is not None:
            self._kill(init)
            try:
                os.waitpid(init, 0)
            except ChildProcessError:
                pass

    def _supervise(
        self,
        start: float,
        limits: dict[str, Any],
        out_r: int,
        err_r: int,
        st_r: int,
        done_fd: int,
        end: Callable[[list[dict[str, Any]], bool], int | None],
        messages: list[dict[str, Any]] | None = None,
        pending: bytearray | None = None,
        stream: tuple[int, bytes] | None = None,
    ) -> tuple[dict[str, Any], bytes, bytes]:
        """Collect output until the run ends or its deadline passes; then `end` kills and reaps every
        process of it and returns the program's status.

        The end of a run: the init's status pipe closes (namespaces, done_fd is st_r) or the program's
        pidfd fires (unsafe). A streamed run (`stream` = its stdin pipe and first bytes) also takes host
        frames meanwhile ({"stdin": n} + bytes, {"eof": true}, {"stop": true}) and forwards its stdout
        as it comes, in {"chunk": n} frames (up to the output cap in all); its reply's stdout is empty."""
        cap = int(limits["max_output_bytes"])
        deadline = start + float(limits["wall_time_s"])
        buffers = {out_r: bytearray(), err_r: bytearray()}
        truncated = timed_out = done = False
        messages = messages if messages is not None else []
        pending = pending if pending is not None else bytearray()
        poller = select.poll()
        open_fds = {out_r, err_r}
        for fd in (out_r, err_r, done_fd):
            poller.register(fd, select.POLLIN)
        host = self.ctl_in.fileno()
        stdin_w, to_program = (stream[0], bytearray(stream[1])) if stream else (-1, bytearray())
        eof_asked = stopped = False
        forwarded = 0
        if stream:
            poller.register(host, select.POLLIN)
            if to_program:
                poller.register(stdin_w, select.POLLOUT)

        def close_stdin() -> None:
            nonlocal stdin_w
            if stdin_w >= 0:
                try:
                    poller.unregister(stdin_w)
                except KeyError:
                    pass
                os.close(stdin_w)
                stdin_w = -1
            to_program.clear()

        def feed() -> None:
            try:
                del to_program[: os.write(stdin_w, to_program)]
            except BlockingIOError:
                return
            except (BrokenPipeError, OSError):  # the program closed its stdin: the rest has no reader
                close_stdin()
                return
            if not to_program:
                if eof_asked:
                    close_stdin()
                else:
                    poller.unregister(stdin_w)

        def take_host_frame() -> bool:
            """One frame from the host; False when the host asked to stop the run (or went away)."""
            nonlocal eof_asked
            try:
                frame = read_frame(self.ctl_in)
                data = read_exact(self.ctl_in, int(frame.get("stdin", 0)))
            except (EOFError, ValueError):
                return False
            if frame.get("stop"):
                return False
            if data and stdin_w >= 0:
                if not to_program:
                    poller.register(stdin_w, select.POLLOUT)
                to_program.extend(data)
            if frame.get("eof"):
                eof_asked = True
                if not to_program:
                    close_stdin()
            return True

        def drain(fd: int) -> bool:
            nonlocal truncated, forwarded
            data = os.read(fd, 65536)
            if data:
                if stream and fd == out_r:
                    kept = data[: max(0, cap - forwarded)]
                    truncated = truncated or len(kept) < len(data)
                    forwarded += len(kept)
                    if kept:
                        write_frame(self.ctl_out, {"chunk": len(kept)}, (kept,))
                    return True
                buf = buffers[fd]
                if len(buf) + len(data) > cap:
                    truncated = True
                buf += data[: max(0, cap - len(buf))]  # past the cap, keep reading and discard
                return True
            if fd in open_fds:
                open_fds.discard(fd)
                poller.unregister(fd)
            return False

        while not done:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for fd, _ in poller.poll(int(left * 1000) + 1):
                if stream and fd == host:
                    if not take_host_frame():
                        stopped = True
                        break
                elif stream and fd == stdin_w:
                    feed()
                elif fd == done_fd and fd != st_r:
                    done = True
                elif fd == st_r:
                    data = os.read(st_r, 4096)
                    done = done or not data
                    pending += data
                    while b"\n" in pending:
                        line, _, rest = bytes(pending).partition(b"\n")
                        pending[:] = rest
                        messages.append(json.loads(line))
                elif fd in buffers:
                    drain(fd)
            if stopped:
                break
        close_stdin()
        status = end(messages, timed_out or stopped)  # returns once the run is gone: its pipes are closed for good
        for fd in buffers:
            os.set_blocking(fd, True)
            while drain(fd):
                pass
        for fd in (out_r, err_r, st_r):
            os.close(fd)
        reply: dict[str, Any] = {
            "duration_s": time.monotonic() - start,
            "timed_out": timed_out,
            "output_truncated": truncated,
            "status": status,
        }
        if stopped:
            reply["stopped"] = True
        over = [m for m in messages if m.get("memory_exceeded")]
        if over and not timed_out:
            reply |= {"memory_exceeded": True, "memory_used_mb": over[0].get("memory_used_mb")}
        errors = [str(m["error"]) for m in messages if "error" in m]
        if errors and status is None and not timed_out:
            reply["error"] = errors[0]
        return reply, bytes(buffers[out_r]), bytes(buffers[err_r])

    @staticmethod
    def _kill(pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @staticmethod
    def _kill_group(pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap_all(self) -> None:
        """Kill and reap every remaining child (orphans come to us: this process is a subreaper)."""
        me = os.getpid()
        while True:
            try:
                with open(f"/proc/{me}/task/{me}/children") as f:
                    children = [int(p) for p in f.read().split()]
            except OSError:
                children = []
            for pid in children:
                self._kill(pid)
            try:
                pid, _ = os.waitpid(-1, 0 if children else os.WNOHANG)
            except ChildProcessError:
                return
            if not children and pid == 0:
                time.sleep(0.001)

    # --- inside the run -------------------------------------------------------------------------

    def _create(self, req_r: int, stdin_fds: tuple[int, int], out_w: int, err_w: int, st_w: int) -> None:
        """The namespaces' creator: fresh user/mount/pid/net/ipc/uts namespaces, loopback, then the init."""
        flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
        unshare(flags | (0 if self.network else CLONE_NEWNET))
        _map_ids(SANDBOX_UID, 0, 0)
        if not self.network:
            _loopback_up()
        init = os.fork()
        if init == 0:
            self._init(req_r, stdin_fds, out_w, err_w, st_w)
        # The server waits for this process to exit before it sends the request: the init's pid is known
        # before any code of the request runs.
        os.write(st_w, (json.dumps({"init": init}) + "\n").encode())
        os._exit(0)

    def _init(self, req_r: int, stdin_fds: tuple[int, int], out_w: int, err_w: int, st_w: int) -> None:
        """pid 1 of the run: mounts /proc and waits for the request; then mounts the scratch tmpfs,
        writes the files, starts the program, reaps orphans, bounds the run's memory, reports the status."""
        prctl(PR_SET_DUMPABLE, 0)  # the program may not open our status pipe through /proc/1/fd
        os.setsid()  # a session and process group of the run's own: killpg(0) must not reach the server
        for sig in range(1, signal.NSIG):
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                try:
                    signal.signal(sig, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        _close_all_but(req_r, *stdin_fds, out_w, err_w, st_w)
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        drop_bounding_capabilities()  # the init keeps its effective ones; the program clears them
        with os.fdopen(req_r, "rb", buffering=1 << 16) as requests:
            try:
                header = read_frame(requests)
                files = {path: read_exact(requests, size) for path, size in header["files"]}
            except EOFError:  # never used: the server went away or discarded this run
                os._exit(0)
        memfd, pipe_r = stdin_fds
        stdin_fd = pipe_r if header.get("stream") else memfd  # a streamed run reads what the host sends on
        os.close(memfd if stdin_fd == pipe_r else pipe_r)
        limits = header["limits"]
        size_mb = int(limits["max_file_mb"])
        opts = f"size={size_mb}m,nr_inodes=4096,uid={SANDBOX_UID},gid={SANDBOX_UID}"
        mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts + ",mode=1777")
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, opts + ",mode=1777")
        total_mb = sum(len(c) for c in files.values()) // (1 << 20) + 1
        mount("tmpfs", WORKDIR, "tmpfs", MS_NOSUID | MS_NODEV, f"{opts},mode=0755,size={size_mb + total_mb}m")
        _write_files(WORKDIR, files)
        program = os.fork()
        if program == 0:
            os.close(st_w)
            self._exec_user(header, files, limits, stdin_fd, out_w, err_w, WORKDIR, "/tmp")
        for fd in (stdin_fd, out_w, err_w):
            os.close(fd)
        status, exceeded, used = self._watch(program, int(limits["memory_mb"]) << 20)
        message: dict[str, Any] = {"status": status}
        if exceeded:
            message |= {"memory_exceeded": True, "memory_used_mb": used >> 20}
        os.write(st_w, (json.dumps(message) + "\n").encode())
        os._exit(0)

    @staticmethod
    def _watch(program: int, bound: int) -> tuple[int, bool, int]:
        """Reap orphans and sum the run's memory until the program ends (or the sum passes bound:
        then every process of the run is killed). Returns (status, bound exceeded, bytes last seen).

        A SIGCHLD wakes the loop at once, so a program that ends between ticks costs no tick."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        poller = select.poll()
        poller.register(wake_r, select.POLLIN)
        watch = MemoryWatch(bound)
        next_at = time.monotonic() + watch.interval
        while True:
            while True:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == program:
                    return status, False, watch.used
                if pid == 0:
                    break
            left = next_at - time.monotonic()
            if left > 0 and poller.poll(max(1, math.ceil(left * 1000))):
                try:
                    while os.read(wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                continue  # a child ended: reap it; the measurement stays due at next_at
            if watch.exceeded():
                os.kill(-1, signal.SIGKILL)  # from a pid-namespace init: every other process of the run
                return os.waitpid(program, 0)[1], True, watch.used
            next_at = time.monotonic() + watch.interval

    def _exec_user(
        self,
        header: dict[str, Any],
        files: dict[str, bytes],
        limits: dict[str, Any],
        stdin_fd: int,
        out_w: int,
        err_w: int,
        workdir: str,
        tmpdir: str,
    ) -> None:
        """The program's process: stdio, cwd, env, rlimits, no capabilities, seccomp; then exec or run Python."""
        os.dup2(stdin_fd, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.closerange(3, 1 << 16)
        if self.unsafe:
            _write_files(workdir, files)
        os.chdir(workdir)
        os.umask(0o022)
        env = {
            "PATH": self.path_env,
            "HOME": workdir,
            "TMPDIR": tmpdir,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "USER": "sandbox",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if self.site_packages:  # for Python programs the run starts with `cmd`
            env["PYTHONPATH"] = ":".join(self.site_packages)
        os.environ.clear()
        os.environ.update(env)
        # The unsafe mode has no init watching resident memory, so there RLIMIT_AS is the only bound.
        mem = (int(limits["memory_mb"]) << 20) + (0 if self.unsafe else ADDRESS_SPACE_SLACK)
        cpu = int(limits["cpu_s"])
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        fsize = int(limits["max_file_mb"]) << 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if not self.unsafe:
            # counted per uid in this run's own user namespace: the init, this process, and its children
            nproc = int(limits["max_processes"]) + 2
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
            _check(_libc.capset(ctypes.create_string_buffer(_CAP_HEADER), ctypes.create_string_buffer(24)), "capset")
            prctl(PR_SET_DUMPABLE, 1)  # (the init made itself undumpable) lets the init read our smaps_rollup
            if self.seccomp:
                install_seccomp(self.seccomp)
        else:
            prctl(PR_SET_NO_NEW_PRIVS, 1)
        cmd = header.get("cmd")
        if cmd:
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            try:
                os.execvpe(cmd[0], cmd, env)
            except OSError as exc:
                os.write(2, f"sandbox: cannot run {cmd[0]!r}: {exc.strerror}\n".encode())
                os._exit(127)
        # The signal dispositions python3 starts with (the init reset everything to the default).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _run_python_main(os.path.join(workdir, "main.py"), workdir)


def _child_main(start: Any, status_fd: int) -> NoReturn:
    """Run a forked child's `start()`; report an exception on `status_fd`; never return to the caller."""
    try:
        start()
    except BaseException as exc:
        try:
            os.write(status_fd, (json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n").encode())
        finally:
            os._exit(70)
    os._exit(70)


def _close_all_but(*keep: int) -> None:
    low = 0
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def _write_files(root: str, files: dict[str, bytes]) -> None:
    for path, content in files.items():
        target = os.path.join(root, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(content)
        os.chmod(target, 0o755 if content.startswith(b"#!") else 0o644)


def _run_python_main(path: str, workdir: str) -> None:
    """Run path as __main__ in this (forked, warm) interpreter, then exit the way python3 would."""
    import atexit
    import builtins
    import io
    import threading
    import traceback
    import types

    # typeshed declares sys.__stdin__ and the others Final; this child replaces them on purpose
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(  # type: ignore[misc]
        io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8"
    )
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(  # type: ignore[misc]
        io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8"
    )
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(  # type: ignore[misc]
        io.BufferedWriter(io.FileIO(2, "w", closefd=False)),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
    )
    sys.argv = [os.path.basename(path)]
    sys.path[0:0] = [workdir]
    main = types.ModuleType("__main__")
    main.__dict__.update({"__file__": path, "__builtins__": builtins, "__cached__": None})
    sys.modules["__main__"] = main
    code = 0
    try:
        with open(path, "rb") as f:
            source = f.read()
        exec(compile(source, path, "exec"), main.__dict__)
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code & 0xFF
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException as exc:  # printed as python3 would, without this function's frame
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None)
        code = 1
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # join non-daemon threads as python3 does
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            code = code or 120
    os._exit(code)


def main() -> None:
    """Entry point: become isolated, report readiness (or why not), then serve."""
    config = json.loads(sys.argv[1])
    # Control pipes move to high fds; 0/1/2 become /dev/null so nothing stray reaches the host.
    ctl_in_fd, ctl_out = os.dup(0), os.dup(1)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    # unbuffered: during a streamed run the server polls this fd, so no frame may wait in a buffer
    ctl_in = os.fdopen(ctl_in_fd, "rb", buffering=0)
    server = Server(config, ctl_in, ctl_out)
    root_built = False
    try:
        if not server.unsafe:
            root_built = enter_namespaces(server.network, server.site_packages)
    except Exception as exc:
        write_frame(ctl_out, {"error": f"cannot isolate the sandbox server: {exc}"})
        os._exit(1)
    if not server.unsafe:
        # This process stays outside the new pid namespace; its child is that namespace's init.
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid:
            os.close(go_r)
            write_frame(ctl_out, {"server_pid": pid})
            os.close(go_w)
            ctl_in.close()
            os.close(ctl_out)
            status = os.waitpid(pid, 0)[1]
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        os.close(go_w)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        os.read(go_r, 1)
        os.close(go_r)
    else:
        write_frame(ctl_out, {"server_pid": os.getpid()})
    try:
        features = server.setup_inside(list(config.get("preload", ())), root_built)
    except Exception as exc:
        write_frame(ctl_out, {"error": f"cannot isolate the sandbox server: {exc}"})
        os._exit(1)
    write_frame(ctl_out, {"ready": True, **features})
    server.serve()
    server._reap_all()


if __name__ == "__main__":
    main()
