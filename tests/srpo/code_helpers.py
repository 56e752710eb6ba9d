"""Shared pieces of the sandbox tests: a per-test time limit and checks that the machine is
unharmed (no process of a sandbox uid left, no descendant of the test left, no temp dir left)."""

import os
import signal
import tempfile
from pathlib import Path

import pytest

from srpo.code.sandbox import UID_RANGE


@pytest.fixture(autouse=True)
def time_limit(request):
    """Every test of a module that imports this fixture ends within its limit: the module's
    ``TIME_LIMIT_S`` (default 60 s), enforced with SIGALRM in the main thread."""
    seconds = int(getattr(request.module, "TIME_LIMIT_S", 60))

    def expire(*_):
        raise TimeoutError(f"test exceeded its time limit of {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    # Children that earlier tests of the same pytest process left on purpose (joblib's reusable
    # worker pool, for one) are not this test's leftovers: only processes born during it count.
    _BEFORE.clear()
    _BEFORE.update(_descendants_and_sandbox())
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _stat(pid: str) -> tuple[int, int] | None:
    """(ppid, uid) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[1]), uid


_BEFORE: set[int] = set()


def leftovers() -> list[int]:
    """Processes of a sandbox uid, and descendants of this test process (zombies included), that
    did not exist when the test started."""
    return sorted(_descendants_and_sandbox() - _BEFORE)


def _descendants_and_sandbox() -> set[int]:
    parents, found = {}, []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(entry)
            if info is not None:
                parents[int(entry)] = info[0]
                if UID_RANGE[0] <= info[1] < UID_RANGE[1]:
                    found.append(int(entry))
    me = os.getpid()
    for pid in parents:
        seen, current = 0, parents.get(pid)
        while current and seen < 64:
            if current == me:
                found.append(pid)
                break
            current, seen = parents.get(current), seen + 1
    return set(found)


def sandbox_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("srpo-sandbox-*")}
