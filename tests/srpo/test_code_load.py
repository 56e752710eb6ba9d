"""Load test of the sandbox: 2,000 gradings in a row (a pool of 2, a trivial program) hold
steady in time per grading and in the grader's memory, and leave no process, no temporary
directory and no open file descriptor behind. About 2,000 x 40 ms of CPU: marked slow."""

import os
import resource
import statistics
import threading
import time

import pytest

from srpo.code.cases import TestCase
from srpo.code.grading import CodeGrader
from srpo.code.sandbox import SandboxConfig
from tests.srpo.code_helpers import leftovers, sandbox_dirs, time_limit  # noqa: F401

TIME_LIMIT_S = 900
GRADINGS, BATCH = 2000, 100


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0])


@pytest.mark.slow
def test_two_thousand_gradings_hold_steady(capsys):
    test = [TestCase("stdio", input="7\n", expected="7\n")]
    fds, threads, dirs = len(os.listdir("/proc/self/fd")), threading.active_count(), sandbox_dirs()
    with CodeGrader(SandboxConfig(), workers=2) as grader:
        grader.grade("print(input())", test)  # warm: the layer probe
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        per_grading, rss = [], []
        for _ in range(GRADINGS // BATCH):
            start = time.monotonic()
            reports = grader.grade_many([("print(input())", test, "")] * BATCH)
            per_grading.append((time.monotonic() - start) / BATCH)
            rss.append(rss_kb())
            assert all(r.correct for r in reports)
        assert grader.totals["passed"] == GRADINGS + 1 and sum(grader.totals.values()) == (
            GRADINGS + 1
        )
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_ms = 1000 * ((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)) / GRADINGS
    early, late = statistics.median(per_grading[:5]), statistics.median(per_grading[-5:])
    with capsys.disabled():
        print(
            f"\nload: {GRADINGS} gradings, pool of 2: {1000 * early:.1f} ms per grading in the "
            f"first 500, {1000 * late:.1f} ms in the last 500; {cpu_ms:.1f} ms CPU per run; "
            f"grader RSS {rss[1] / 1024:.1f} -> {rss[-1] / 1024:.1f} MiB"
        )
    assert late <= 3 * early + 0.02  # steady: no slow-down that grows with the run count
    assert rss[-1] - rss[1] < 16 * 1024  # no memory that grows with the run count (KiB)
    assert len(os.listdir("/proc/self/fd")) == fds and threading.active_count() == threads
    assert leftovers() == [] and sandbox_dirs() == dirs
