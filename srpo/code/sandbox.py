"""Run model-written Python in a sandbox: one process tree per run, isolated in layers.

``Sandbox(config).run(files, entry, stdin)`` writes ``files`` into a fresh temporary directory,
starts ``launcher.py`` (a separate process in its own session and process group) and returns a
``RunResult``: exit status, captured stdout/stderr (bounded), CPU and wall seconds, and why it
ended (``exit``, ``wall_timeout``, ``cpu_limit``, ``output_limit`` or ``sandbox_error``). The
temporary directory is removed afterwards; every process of the run is killed and reaped.

Layers (``LAYERS``; docs/code.md says what each one guarantees and what is lost without it):

- ``session``     own session / process group; the parent kills the group if the launcher hangs
- ``subreaper``   the launcher is a child subreaper: orphans (even after ``setsid``) come back
                  to it and are killed and reaped when the run ends
- ``rlimits``     CPU seconds, address space, file size, open files, processes, no core files
- ``uid``         (root only) the program runs as a fresh unprivileged uid: RLIMIT_NPROC is
                  enforced (it is not for root), it cannot signal or ptrace the grader, and it
                  can write only where everyone may
- ``userns``      (non-root only) a user namespace, which lets an unprivileged grader create
                  the namespaces below
- ``mountns``     a new mount namespace and root: a size-limited tmpfs with read-only binds of
                  the system libraries and the interpreter (site-packages hidden); nothing of
                  the grader's files (repository, data sets, home) is visible or writable
- ``netns``       a new network namespace: no interfaces up, no network, not even loopback
- ``pidns``       a new PID namespace: the program sees no outside process and killing its
                  init kills all of it
- ``ipcns``       a new IPC namespace (System V IPC, POSIX message queues)
- ``output_cap``  stdout and stderr are read in the parent up to a byte limit; more stdout
                  ends the run

The layers a machine supports are found once per process by a probe (``Sandbox.layers``).
``SandboxConfig.disable`` turns layers off (the break-it tests use it to show that each limit
is what stops its attack); ``SandboxConfig.require`` makes a missing layer an error.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import sysconfig
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from srpo.code.supervise import RunResult, base_python, supervise

__all__ = ["LAYERS", "SandboxConfig", "RunResult", "Sandbox", "SandboxUnavailable"]

LAYERS = (
    "session",
    "subreaper",
    "rlimits",
    "uid",
    "userns",
    "mountns",
    "netns",
    "pidns",
    "ipcns",
    "output_cap",
)
NAMESPACE_LAYERS = ("mountns", "netns", "pidns", "ipcns")
#: fresh uids for programs when the grader is root: far above any account, one per run, so the
#: per-uid process count (RLIMIT_NPROC) and file ownership are private to the run
UID_RANGE = (1_000_000_000, 1_000_000_000 + 2**24)


class SandboxUnavailable(RuntimeError):
    """A required layer is not available on this machine, or no interpreter can run in it."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and layers of a sandbox run. ``None`` switches a limit off.

    Attributes:
        wall_timeout_s: wall-clock seconds per run, setup included (the release: 10 s per test).
        cpu_time_s: RLIMIT_CPU in seconds (soft; the hard limit, SIGKILL, is one second later).
        memory_bytes: RLIMIT_AS, the address space in bytes.
        file_size_bytes: RLIMIT_FSIZE, the largest file the program may write, in bytes.
        open_files: RLIMIT_NOFILE, file descriptors.
        processes: RLIMIT_NPROC, processes (threads) of the program's uid; without the uid
            layer the grader user's current count is added, as the limit is per user.
        max_output_bytes: stdout bytes read before the run is ended (cause ``output_limit``);
            stderr is kept up to 64 KiB and the rest drained.
        tmpfs_bytes, tmpfs_inodes: size and file count of the program's root (mountns layer).
        disable: layers (``LAYERS``) not to use.
        require: layers that must be active; a machine without one raises SandboxUnavailable.
        python: interpreter for programs (default: the grader's, its real path).
        uid: uid of programs when the grader is root (default: a fresh one per run).
        tmp_root: where the per-run temporary directories go (default: the system's).
    """

    wall_timeout_s: float = 10.0
    cpu_time_s: float | None = 10.0
    memory_bytes: int | None = 2 * 1024**3
    file_size_bytes: int | None = 16 * 1024**2
    open_files: int | None = 64
    processes: int | None = 8
    max_output_bytes: int | None = 8 * 1024**2
    tmpfs_bytes: int = 64 * 1024**2
    tmpfs_inodes: int = 4096
    disable: frozenset = field(default_factory=frozenset)
    require: frozenset = field(default_factory=frozenset)
    python: str | None = None
    uid: int | None = None
    tmp_root: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "disable", frozenset(self.disable))
        object.__setattr__(self, "require", frozenset(self.require))
        for name in ("disable", "require"):
            unknown = set(getattr(self, name)) - set(LAYERS)
            if unknown:
                raise ValueError(
                    f"SandboxConfig.{name}: unknown layers {sorted(unknown)}; "
                    f"expected some of {LAYERS}"
                )
        if "session" in self.disable:
            raise ValueError(
                "SandboxConfig.disable: the 'session' layer cannot be turned off "
                "(the parent's last-resort kill is a kill of that process group)"
            )
        if not self.wall_timeout_s > 0:
            raise ValueError(f"SandboxConfig.wall_timeout_s must be > 0; got {self.wall_timeout_s}")
        for name in (
            "cpu_time_s",
            "memory_bytes",
            "file_size_bytes",
            "open_files",
            "processes",
            "max_output_bytes",
        ):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"SandboxConfig.{name} must be > 0 or None; got {value}")


def _user_thread_count(uid: int) -> int:
    """Threads owned by ``uid`` (what RLIMIT_NPROC counts)."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid == uid:
                count += len(os.listdir(f"/proc/{entry}/task"))
        except OSError:
            continue
    return count


def _system_binds(python: str) -> tuple[list[str], list[str]]:
    """Paths to mirror read-only into the program's root, and site-packages paths to hide."""
    binds = ["/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin", "/etc/ld.so.cache"]
    prefix = os.path.realpath(sys.base_prefix)
    if not any(prefix == b or prefix.startswith(b + "/") for b in binds if os.path.isdir(b)):
        binds.append(prefix)
    if not python.startswith(prefix + "/"):
        binds.append(os.path.dirname(python))
    hide = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
    return binds, sorted(hide)


class Sandbox:
    """Runs programs under ``config``; thread-safe (one launcher per run)."""

    _probe_cache: dict = {}
    _probe_lock = threading.Lock()

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()

    # ---- layers ---------------------------------------------------------------------------

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers this machine gives under this config (probed once per process)."""
        return self._probe()[0]

    @property
    def python(self) -> str:
        """The interpreter programs run with."""
        return self._probe()[1]

    def _wanted(self) -> dict:
        root = os.geteuid() == 0
        want = {name: name not in self.config.disable for name in LAYERS}
        want["uid"] = want["uid"] and root
        want["userns"] = want["userns"] and not root
        return want

    def _probe(self) -> tuple[tuple[str, ...], str]:
        key = (self.config.disable, self.config.python, self.config.tmp_root)
        with self._probe_lock:
            if key not in self._probe_cache:
                self._probe_cache[key] = self._find_layers()
        layers, python = self._probe_cache[key]
        missing = self.config.require - set(layers)
        if missing:
            raise SandboxUnavailable(
                f"sandbox layers {sorted(missing)} are required (SandboxConfig.require) but not "
                f"available on this machine (active: {list(layers)}); docs/code.md lists what "
                "each needs"
            )
        return layers, python

    def _works(self, layers: dict, python: str) -> bool:
        result = self._launch({"probe.py": ""}, None, b"", layers, python, probe=True)
        return result.cause == "exit" and result.returncode == 0

    def _find_layers(self) -> tuple[tuple[str, ...], str]:
        want = self._wanted()
        pythons = (
            [self.config.python]
            if self.config.python
            else list(dict.fromkeys([base_python(), "/usr/bin/python3", "/usr/local/bin/python3"]))
        )
        for python in (p for p in pythons if p and os.path.exists(p)):
            layers = self._best_layers(want, python)
            if layers is not None:
                return tuple(n for n in LAYERS if layers.get(n)), python
        raise SandboxUnavailable(
            f"no interpreter of {pythons} runs in the sandbox, even without "
            "namespaces (see docs/code.md)"
        )

    def _best_layers(self, want: dict, python: str) -> dict | None:
        """All wanted layers if they work; else the namespaces that work, added one at a time
        (without any, no user namespace either); None if not even that runs ``python``."""
        if self._works(want, python):
            return want
        namespaces = [n for n in NAMESPACE_LAYERS if want[n]]
        layers = {**want, **{n: False for n in namespaces}}
        for name in namespaces:
            trial = {**layers, name: True}
            if self._works(trial, python):
                layers = trial
        if not any(layers[n] for n in namespaces):
            layers["userns"] = False
        return layers if self._works(layers, python) else None

    # ---- a run ----------------------------------------------------------------------------

    def run(
        self,
        files: dict[str, str],
        entry: str,
        stdin: bytes = b"",
        wall_timeout_s: float | None = None,
    ) -> RunResult:
        """Run ``python entry`` in a fresh sandbox whose work directory holds ``files``.

        Args:
            files: file name -> text, written into the work directory (the program's cwd).
            entry: the file to run (one of ``files``).
            stdin: bytes fed to the program's stdin.
            wall_timeout_s: this run's wall clock instead of ``config.wall_timeout_s`` (a run
                that grades several tests, each on its own clock: ``srpo.code.batch``).
        """
        if entry not in files:
            raise ValueError(f"entry {entry!r} is not one of the files {sorted(files)}")
        if wall_timeout_s is not None and not wall_timeout_s > 0:
            raise ValueError(f"wall_timeout_s must be > 0 or None; got {wall_timeout_s}")
        layers, python = self._probe()
        flags = {name: name in layers for name in LAYERS}
        return self._launch(files, entry, stdin, flags, python, wall_timeout_s=wall_timeout_s)

    def _limits(self, layers: dict) -> dict:
        c = self.config
        limits = {"core": 0}
        if not layers.get("rlimits"):
            return {}
        if c.cpu_time_s is not None:
            seconds = max(1, int(-(-c.cpu_time_s // 1)))
            limits["cpu"] = [seconds, seconds + 1]
        for key, value in (
            ("as", c.memory_bytes),
            ("fsize", c.file_size_bytes),
            ("nofile", c.open_files),
        ):
            if value is not None:
                limits[key] = int(value)
        if c.processes is not None:
            extra = 0 if layers.get("uid") else _user_thread_count(os.getuid())
            limits["nproc"] = int(c.processes) + extra
        return limits

    def _launch(
        self, files, entry, stdin, layers, python, probe=False, wall_timeout_s=None
    ) -> RunResult:
        c = self.config
        if wall_timeout_s is not None:
            c = replace(c, wall_timeout_s=float(wall_timeout_s))
        host_dir = tempfile.mkdtemp(prefix="srpo-sandbox-", dir=c.tmp_root)
        try:
            uid = None
            if layers.get("uid"):
                uid = (
                    c.uid
                    if c.uid is not None
                    else secrets.randbelow(UID_RANGE[1] - UID_RANGE[0]) + UID_RANGE[0]
                )
            work = Path(host_dir) / "work"
            work.mkdir()
            for name, text in files.items():
                (work / name).write_text(text, encoding="utf-8")
            mounted = layers.get("mountns")
            if not mounted and uid is not None:  # the program needs to reach its cwd
                os.chmod(host_dir, 0o711)
                for path in [work, *work.iterdir()]:
                    os.chown(path, uid, uid)
            binds, hide = _system_binds(python)
            argv = [python, "-s", "-S", "-B"] + (["-c", "pass"] if probe else [entry])
            cfg = {
                "host_dir": host_dir,
                "work_dir": str(work),
                "cwd": "/work" if mounted else str(work),
                "layers": {
                    n: bool(layers.get(n)) for n in ("subreaper", "userns", *NAMESPACE_LAYERS)
                },
                "uid": uid,
                "rlimits": self._limits(layers),
                "argv": argv,
                "env": {
                    "PATH": "/usr/bin:/bin",
                    "LANG": "C.UTF-8",
                    "PYTHONHASHSEED": "0",
                    "PYTHONIOENCODING": "utf-8",
                    "HOME": "/work" if mounted else str(work),
                },
                "bind_ro": binds,
                "hide": hide,
                "tmpfs_bytes": c.tmpfs_bytes,
                "tmpfs_inodes": c.tmpfs_inodes,
                "wall_timeout_s": c.wall_timeout_s,
            }
            cap = c.max_output_bytes if layers.get("output_cap") else None
            result = supervise(cfg, stdin, cap, c.wall_timeout_s, c.cpu_time_s)
            active = tuple(n for n in LAYERS if layers.get(n))
            return replace(result, layers=active)
        finally:
            _remove(host_dir)


def _remove(path: str) -> None:
    def unlock(function, name, _excinfo):
        try:
            os.chmod(os.path.dirname(name), 0o700)
            os.chmod(name, 0o700)
        except OSError:
            pass
        function(name)

    try:
        shutil.rmtree(path, onerror=unlock)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
