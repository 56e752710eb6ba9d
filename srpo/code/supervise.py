"""The grader's side of one sandboxed run: start the launcher, feed stdin, read stdout/stderr
with a cap, wait for the launcher (a pidfd), kill its process group if it overruns, and decode
the events it reported into a ``RunResult`` (``srpo.code.sandbox`` builds the configuration)."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunResult", "supervise", "base_python", "LAUNCHER", "LAUNCHER_GRACE_S", "STDERR_CAP"]

LAUNCHER = Path(__file__).with_name("launcher.py")
#: seconds the launcher may take beyond the wall clock (setup, sweep) before the parent kills it
LAUNCHER_GRACE_S = 5.0
STDERR_CAP = 64 * 1024


@dataclass(frozen=True)
class RunResult:
    """How one sandboxed run ended.

    Attributes:
        cause: ``exit`` (the program ended by itself), ``wall_timeout``, ``cpu_limit``,
            ``output_limit`` or ``sandbox_error``.
        returncode: the program's exit status (negative: killed by that signal); None if it
            did not start or was killed by the launcher.
        stdout, stderr: captured bytes (bounded; see the truncated flags).
        cpu_s, wall_s: CPU and wall seconds of the program; maxrss_kb: its peak RSS.
        error: what went wrong for a sandbox_error.
        layers: the layers that were active.
        fs_view: how the mount layer entered its root (``pivot_root`` or ``chroot``; "" without).
    """

    cause: str
    returncode: int | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    cpu_s: float = 0.0
    wall_s: float = 0.0
    maxrss_kb: int = 0
    error: str = ""
    layers: tuple = ()
    fs_view: str = ""


def base_python() -> str:
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _exited(pid: int) -> bool:
    """Whether the launcher has exited, without reaping it: while it is a zombie its pid (the
    process group's id) cannot be reused, so killing the group afterwards is safe."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class _Streams:
    """The parent's side of one run: feeds stdin, reads stdout/stderr/status with caps."""

    def __init__(self, proc: subprocess.Popen, status_fd: int, stdin: bytes, cap: int | None):
        self.proc, self.cap, self.pending = proc, cap, memoryview(stdin)
        self.out, self.err, self.status = bytearray(), bytearray(), bytearray()
        self.out_truncated = self.err_truncated = self.aborted = False
        self.selector = selectors.DefaultSelector()
        self.status_file = os.fdopen(status_fd, "rb", buffering=0)
        for stream, kind, event in (
            (proc.stdout, "out", selectors.EVENT_READ),
            (proc.stderr, "err", selectors.EVENT_READ),
            (self.status_file, "status", selectors.EVENT_READ),
            (proc.stdin, "in", selectors.EVENT_WRITE),
        ):
            os.set_blocking(stream.fileno(), False)
            self.selector.register(stream, event, kind)
        if not stdin:
            self._close(proc.stdin)
        self.pidfd = None  # readable when the launcher exits (Linux >= 5.3), else polled
        try:
            self.pidfd = os.pidfd_open(proc.pid)
            self.selector.register(self.pidfd, selectors.EVENT_READ, "pid")
        except (AttributeError, OSError):
            pass

    def _close(self, stream) -> None:
        try:
            self.selector.unregister(stream)
        except (KeyError, ValueError):
            pass
        try:
            stream.close()
        except OSError:
            pass

    def _read(self, stream, kind: str) -> None:
        try:
            data = os.read(stream.fileno(), 65536)
        except BlockingIOError:
            return
        if not data:
            self._close(stream)
        elif kind == "status":
            self.status += data
        elif kind == "err":
            room = STDERR_CAP - len(self.err)
            self.err += data[: max(room, 0)]
            self.err_truncated |= len(data) > room
        elif self.cap is None:
            self.out += data
        else:
            room = self.cap - len(self.out)
            self.out += data[: max(room, 0)]
            if len(data) > room:
                self.out_truncated = True
                if not self.aborted:  # the launcher kills the program and reports "aborted"
                    self.aborted = True
                    self.proc.send_signal(signal.SIGTERM)

    def _write(self, stream) -> None:
        try:
            written = os.write(stream.fileno(), self.pending[:65536])
        except BlockingIOError:
            return
        except (BrokenPipeError, OSError):
            self._close(stream)
            return
        self.pending = self.pending[written:]
        if not self.pending:
            self._close(stream)

    def pump(self, deadline: float) -> bool:
        """Move data until every stream is closed and the launcher has exited. Returns False if
        the deadline passed first (the caller kills the group)."""
        exited_at = None
        while True:
            now = time.monotonic()
            if exited_at is None and _exited(self.proc.pid):
                exited_at = now
                if self.pidfd is not None:
                    self._close_pidfd()
            if exited_at is not None and (not self.selector.get_map() or now - exited_at > 0.5):
                return True  # past 0.5 s only a process that escaped the sweep holds a pipe
            if now > deadline:
                return False
            polling = self.pidfd is None and exited_at is None
            wait = min(deadline - now, 0.01 if polling or exited_at is not None else 1.0)
            for key, _ in self.selector.select(max(wait, 0.0)):
                if key.data == "in":
                    self._write(key.fileobj)
                elif key.data != "pid":  # a pid event only ends the wait: checked above
                    self._read(key.fileobj, key.data)

    def _close_pidfd(self) -> None:
        try:
            self.selector.unregister(self.pidfd)
        except (KeyError, ValueError):
            pass
        os.close(self.pidfd)
        self.pidfd = None

    def close(self) -> None:
        if self.pidfd is not None:
            self._close_pidfd()
        for key in list(self.selector.get_map().values()):
            self._close(key.fileobj)
        self.selector.close()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr, self.status_file):
            try:
                stream.close()
            except OSError:
                pass


def supervise(
    cfg: dict, stdin: bytes, cap: int | None, wall_timeout_s: float, cpu_time_s: float | None
) -> RunResult:
    """Start the launcher on ``cfg``, move the data, kill the group if it overruns (the wall
    clock plus ``LAUNCHER_GRACE_S``), read the events."""
    status_read, status_write = os.pipe()
    cfg["status_fd"] = status_write
    try:
        proc = subprocess.Popen(
            [base_python(), "-s", "-S", "-B", str(LAUNCHER), json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(status_write,),
            start_new_session=True,
            cwd=cfg["host_dir"],
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
    except OSError as error:
        os.close(status_read)
        return RunResult(
            "sandbox_error", None, b"", b"", error=f"cannot start the launcher: {error}"
        )
    finally:
        os.close(status_write)
    streams = _Streams(proc, status_read, stdin, cap)
    try:
        finished = streams.pump(time.monotonic() + wall_timeout_s + LAUNCHER_GRACE_S)
    finally:
        try:  # the launcher is alive or a zombie here: the group id is still ours
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        streams.close()
        launcher_status = proc.wait()
    return _result(streams, finished, launcher_status, cpu_time_s)


def _result(
    streams: _Streams, finished: bool, launcher_status: int, cpu_time_s: float | None
) -> RunResult:
    events = []
    for line in bytes(streams.status).splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    last = {e.get("event"): e for e in events}
    errors = [f"{e.get('stage')}: {e.get('message')}" for e in events if e.get("event") == "error"]
    common = dict(
        stdout=bytes(streams.out),
        stderr=bytes(streams.err),
        stdout_truncated=streams.out_truncated,
        stderr_truncated=streams.err_truncated,
        fs_view=str(last.get("fs", {}).get("mechanism", "")),
    )
    ended = last.get("exit", {})
    usage = dict(
        cpu_s=float(ended.get("cpu_s", 0.0)),
        wall_s=float(ended.get("wall_s", 0.0)),
        maxrss_kb=int(ended.get("maxrss_kb", 0)),
    )
    tail = bytes(streams.err[-300:]).decode(errors="replace")
    if errors:
        return RunResult("sandbox_error", None, error="; ".join(errors), **common)
    if not finished:
        return RunResult(
            "sandbox_error",
            None,
            error=f"the launcher did not finish within the wall clock + {LAUNCHER_GRACE_S} s",
            **common,
        )
    cause = last.get("end", {}).get("cause")
    if cause == "wall_timeout":
        return RunResult("wall_timeout", None, **common, **usage)
    if cause == "aborted":
        return RunResult(
            "output_limit" if streams.out_truncated else "sandbox_error",
            None,
            error="" if streams.out_truncated else "aborted",
            **common,
            **usage,
        )
    if cause != "exit" or "exit" not in last:
        return RunResult(
            "sandbox_error",
            None,
            error=f"the launcher ended without a report (status {launcher_status}): {tail}",
            **common,
        )
    code = int(ended["returncode"])
    limit = cpu_time_s
    if code == -signal.SIGXCPU or (
        code == -signal.SIGKILL and limit is not None and usage["cpu_s"] >= limit - 0.05
    ):
        return RunResult("cpu_limit", code, **common, **usage)
    return RunResult("exit", code, **common, **usage)
