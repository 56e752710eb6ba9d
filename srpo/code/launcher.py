"""The sandbox's launcher: builds the isolation layers, runs one program, reports how it ended.

Run as ``python -s -S -B launcher.py CONFIG_JSON`` by ``srpo.code.sandbox`` (never imported by
it: this file is a standalone script using the standard library only, so that it runs in a fresh
interpreter with no site-packages and no project code). Three processes take part:

- L, the launcher (this script as started): becomes a child subreaper, enters the new
  namespaces (``unshare``: a user namespace when not root, then network, PID and IPC
  namespaces), forks C, enforces the wall clock, kills and reaps everything left when C is done.
- C, the init of the new PID namespace (or a plain middle process without one): enters its
  own mount namespace and builds the filesystem view (a size-limited tmpfs root holding
  read-only binds of the interpreter and the system libraries, the work directory copied in,
  ``pivot_root`` into it), forks G, reaps every process of the namespace and reports G's exit
  status and resource use.
- G, the program: applies the rlimits, drops to the unprivileged uid (when L started as root),
  sets the parent-death signal and ``no_new_privs``, and executes the interpreter on the program.

Events go to the status pipe (``status_fd``) as JSON lines, written by L and C only (the fd is
close-on-exec, so G never holds it): ``layers`` (the layers that are active), ``error`` (a layer
that was asked for could not be built: the run is a sandbox error), ``started`` (G executed),
``exit`` (G's status, CPU seconds, peak RSS, wall seconds) and ``end`` (L's cause: ``exit``,
``wall_timeout`` or ``aborted`` when the grader sent SIGTERM, e.g. for too much output).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import shutil
import signal
import sys
import time

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = (
    1024,
    2048,
    4096,
    16384,
    1 << 18,
    1 << 21,
)
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}
#: statvfs flag -> mount flag, to keep the locked flags of a bind mount when remounting it
STATVFS_TO_MS = (
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (getattr(os, "ST_NOATIME", 1024), MS_NOATIME),
    (getattr(os, "ST_NODIRATIME", 2048), MS_NODIRATIME),
    (getattr(os, "ST_RELATIME", 4096), MS_RELATIME),
)
DEVICES = ("null", "zero", "full", "random", "urandom")
RLIMITS = {
    "cpu": resource.RLIMIT_CPU,
    "as": resource.RLIMIT_AS,
    "fsize": resource.RLIMIT_FSIZE,
    "nofile": resource.RLIMIT_NOFILE,
    "nproc": resource.RLIMIT_NPROC,
    "core": resource.RLIMIT_CORE,
}

_libc = ctypes.CDLL(None, use_errno=True)


class LayerError(Exception):
    """A layer that was asked for could not be built."""


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise LayerError(f"{what}: {os.strerror(errno)} (errno {errno})")


def _mount(source, target, fstype, flags, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(
        _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {target}",
    )


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl {option}")


class Status:
    """JSON-line events on the status pipe (atomic writes: each event is below PIPE_BUF)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, event: str, **fields) -> None:
        line = json.dumps({"event": event, **fields}) + "\n"
        try:
            os.write(self.fd, line.encode()[:4000])
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# L: namespaces
# ---------------------------------------------------------------------------------------------


def enter_user_namespace() -> None:
    """A new user namespace mapping our uid and gid to 1000 inside (not 0: after the execve of
    the program its uid in the namespace is not 0, so it holds no capabilities there)."""
    uid, gid = os.geteuid(), os.getegid()
    _check(_libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"1000 {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"1000 {gid} 1")
    except OSError as error:
        raise LayerError(f"user namespace id maps: {error}") from None


def enter_namespaces(layers: dict) -> None:
    """unshare the namespaces of the layers that are on; a failure is a LayerError naming the
    namespace. (The mount namespace is C's own, see ``build_root``: pivot_root changes the root
    of every process of its mount namespace, and L must keep the grader's view.)"""
    if layers.get("userns"):
        enter_user_namespace()
    for name, flag in (("netns", CLONE_NEWNET), ("pidns", CLONE_NEWPID), ("ipcns", CLONE_NEWIPC)):
        if layers.get(name):
            _check(_libc.unshare(flag), f"unshare for layer {name}")


# ---------------------------------------------------------------------------------------------
# C: the filesystem view
# ---------------------------------------------------------------------------------------------


def _bind(source: str, target: str, read_only: bool = True) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            open(target, "w").close()
    _mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        locked = 0
        flags = os.statvfs(target).f_flag
        for st_flag, ms_flag in STATVFS_TO_MS:
            if flags & st_flag:
                locked |= ms_flag
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | locked)


def _mirror(path: str, root: str) -> None:
    """Reproduce ``path`` in the new root: a symlink as the same symlink, a directory or file as
    a read-only bind mount."""
    target = root + path
    if os.path.islink(path):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.lexists(target):
            os.symlink(os.readlink(path), target)
    elif os.path.exists(path):
        _bind(path, target)


def build_root(cfg: dict) -> str:
    """In a new mount namespace, the new root: a tmpfs (size and inode limits) with /usr, /lib*, /bin, the interpreter's
    prefix and a few device nodes bound read-only, site-packages hidden, the work directory
    copied to /work (owned by the program's uid) and /tmp. Returns the new root's path."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare for layer mountns")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing mounted here propagates back
    root = os.path.join(cfg["host_dir"], "root")
    os.makedirs(root, exist_ok=True)
    _mount(
        "tmpfs",
        root,
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        f"size={cfg['tmpfs_bytes']},nr_inodes={cfg['tmpfs_inodes']},mode=755",
    )
    for path in cfg["bind_ro"]:
        _mirror(path, root)
    for path in cfg["hide"]:
        if os.path.isdir(root + path):
            _mount(
                "tmpfs",
                root + path,
                "tmpfs",
                MS_RDONLY | MS_NOSUID | MS_NODEV,
                "size=4096,mode=555",
            )
    os.makedirs(root + "/dev", exist_ok=True)
    for name in DEVICES:
        if os.path.exists("/dev/" + name):
            _bind("/dev/" + name, f"{root}/dev/{name}", read_only=False)
    os.makedirs(root + "/tmp", mode=0o1777, exist_ok=True)
    os.chmod(root + "/tmp", 0o1777)
    shutil.copytree(cfg["work_dir"], root + "/work")
    uid = cfg.get("uid")
    for dirpath, dirnames, filenames in os.walk(root + "/work"):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            if uid is not None:
                os.chown(name, uid, uid)
    return root


def pivot_into(root: str) -> str:
    """Make ``root`` the filesystem root and detach the old one (``pivot_root``; where the
    syscall is unknown or refused, ``chroot``, which a process without CAP_SYS_CHROOT cannot
    leave). Returns the mechanism used."""
    os.chdir(root)
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is not None and _libc.syscall(number, b".", b".") == 0:
        _check(_libc.umount2(b".", MNT_DETACH), "umount2 old root")
        os.chdir("/")
        return "pivot_root"
    os.chroot(".")
    os.chdir("/")
    return "chroot"


# ---------------------------------------------------------------------------------------------
# G: limits and identity, then exec
# ---------------------------------------------------------------------------------------------


def become_program(cfg: dict, exec_error_fd: int) -> None:
    """In G: rlimits, the unprivileged uid, parent-death signal, no_new_privs, then execve.
    Never returns; an exec failure is written to ``exec_error_fd`` and G exits 127."""
    try:
        os.chdir(cfg["cwd"])
        for name, value in cfg["rlimits"].items():
            soft, hard = value if isinstance(value, list) else (value, value)
            resource.setrlimit(RLIMITS[name], (soft, hard))
        uid = cfg.get("uid")
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        # after the uid change: the kernel clears the parent-death signal on credential changes
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
    except BaseException as error:  # noqa: BLE001 - any failure before exec is reported
        os.write(exec_error_fd, f"{type(error).__name__}: {error}".encode()[:1000])
    os._exit(127)


def run_init(cfg: dict, status: Status) -> int:
    """C: build the filesystem view, fork G, reap every child; report G's end. Returns C's exit
    code (0 when G ran, 1 when a layer failed)."""
    try:
        if cfg["layers"].get("mountns"):
            status.send("fs", mechanism=pivot_into(build_root(cfg)))
    except (LayerError, OSError) as error:
        status.send("error", stage="filesystem view", message=str(error))
        return 1
    read_end, write_end = os.pipe()  # close-on-exec: empty read = exec succeeded
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        become_program(cfg, write_end)
    os.close(write_end)
    failure = os.read(read_end, 1000)
    os.close(read_end)
    if failure:
        status.send("error", stage="exec", message=failure.decode(errors="replace"))
    else:
        status.send("started", pid=pid)
    while True:  # as the PID namespace's init, every orphan of the namespace is ours to reap
        try:
            child, code, usage = os.wait4(-1, 0)
        except ChildProcessError:
            return 0
        if child == pid:
            status.send(
                "exit",
                returncode=os.waitstatus_to_exitcode(code),
                cpu_s=usage.ru_utime + usage.ru_stime,
                maxrss_kb=usage.ru_maxrss,
                wall_s=time.monotonic() - started,
                exec_failed=bool(failure),
            )
            return 0 if not failure else 1


# ---------------------------------------------------------------------------------------------
# L: the wall clock and the sweep
# ---------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Live children of ``pid`` (from /proc/*/stat: this kernel may lack /proc/PID/children)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def sweep() -> None:
    """Kill and reap every remaining descendant. L is a child subreaper, so orphans of G (also
    those that called setsid) are re-parented to L and listed as its children."""
    me = os.getpid()
    for _ in range(1000):
        reaped_any = False
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                break
            reaped_any = True
        children = _children(me)
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not children and not reaped_any:
            time.sleep(0.001)


def wait_for(pid: int, deadline: float, abort_fd: int) -> str:
    """Wait until C exits ("exit"), the deadline passes ("wall_timeout") or the grader sends
    SIGTERM ("aborted")."""
    pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    while True:
        if pidfd is None:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return "exit"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "wall_timeout"
        fds = [abort_fd] + ([pidfd] if pidfd is not None else [])
        ready, _, _ = select.select(fds, [], [], min(remaining, 0.01 if pidfd is None else 1.0))
        if abort_fd in ready:
            return "aborted"
        if pidfd is not None and pidfd in ready:
            os.waitpid(pid, 0)
            return "exit"


def main() -> int:
    cfg = json.loads(sys.argv[1])
    os.set_inheritable(cfg["status_fd"], False)  # L and C write events; G must not hold it
    status = Status(cfg["status_fd"])
    abort_read, abort_write = os.pipe()
    os.set_blocking(abort_write, False)
    signal.set_wakeup_fd(abort_write)
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        if cfg["layers"].get("subreaper"):
            _prctl(PR_SET_CHILD_SUBREAPER, 1)
        enter_namespaces(cfg["layers"])
    except LayerError as error:
        status.send("error", stage="namespaces", message=str(error))
        return 1
    status.send("layers", active=sorted(k for k, v in cfg["layers"].items() if v))
    deadline = time.monotonic() + cfg["wall_timeout_s"]
    pid = os.fork()
    if pid == 0:
        os.close(abort_read)
        os._exit(run_init(cfg, status))
    cause = wait_for(pid, deadline, abort_read)
    if cause != "exit":
        try:
            os.kill(pid, signal.SIGKILL)  # with a PID namespace this kills all of it
        except ProcessLookupError:
            pass
    if cfg["layers"].get("subreaper"):
        sweep()
    elif cause != "exit":
        os.waitpid(pid, 0)  # reap C; what it leaves is only reached by the group kill
    status.send("end", cause=cause)
    return 0


if __name__ == "__main__":
    sys.exit(main())
