"""All tests of one program in ONE sandboxed run (``case_runner.py``), verdicts per test.

A sandboxed run costs two interpreter starts and the namespaces (about 40 ms of CPU); a training
step grades hundreds of responses on several tests each. ``CodeGrader(isolation="program")``
therefore runs every test of a response in one sandbox: inside it, ``case_runner.py`` forks one
child per test, and each child does exactly what a one-test run does (the solution loaded afresh,
then the test; the runner never executes model code). The runner gives each test its own wall
clock and output cap, so a test that hangs, crashes or floods its output ends alone and the
others still get their verdicts. Every comparison stays in the grader: ``judge_cases`` reads the
raw per-test reports (exit status, the child's result line or stdout) and compares values and
outputs itself, as ``srpo.code.grading.judge`` does for a one-test run; the expected values never
enter the sandbox.

What is shared between the tests of one run (and is not with ``isolation="test"``): the sandbox's
temporary root (a test may leave files that a later test of the same program reads: the same
program, so it can only help or hurt itself) and, for a process that escapes its test's process
group with ``setsid``, the run (it is killed when the run ends). The per-process limits (CPU,
memory, file size, processes) apply to each test's process as in a one-test run.
"""

from __future__ import annotations

import base64
import json
import signal
from collections.abc import Sequence
from pathlib import Path

from srpo.code.cases import TestCase, stdio_equal
from srpo.code.grading import HARNESS, Outcome, judge_record
from srpo.code.sandbox import RunResult

__all__ = ["CASE_RUNNER", "program_for_cases", "judge_cases", "run_wall_clock"]

CASE_RUNNER = Path(__file__).with_name("case_runner.py").read_text(encoding="utf-8")
#: seconds a whole run may take beyond the sum of its tests' clocks (interpreter start, setup)
RUN_OVERHEAD_S = 5.0


def run_wall_clock(case_timeout_s: float, n_tests: int) -> float:
    """The sandbox run's wall clock: every test's own clock plus ``RUN_OVERHEAD_S`` (the runner
    ends each test at its clock, so this is only a backstop)."""
    return case_timeout_s * max(n_tests, 1) + RUN_OVERHEAD_S


def _case(test: TestCase) -> dict:
    if test.kind == "stdio":
        return {"mode": "stdio", "input": test.input}
    case = {"setup": test.setup}
    if test.kind == "call":
        args = [json.loads(line) for line in test.input.split("\n") if line.strip()]
        case.update(mode="call", func_name=test.func_name, args=args)
    elif test.kind == "expr":
        case.update(mode="expr", exprs=test.sandbox_exprs)
    else:
        case.update(mode="exec", code=test.code)
    return case


def program_for_cases(
    code: str,
    tests: Sequence[TestCase],
    prelude: str,
    nonce: str,
    case_timeout_s: float,
    case_output_bytes: int,
) -> tuple[dict, str, bytes]:
    """``(files, entry, stdin)`` of the one sandbox run that grades ``code`` on every test.
    The request holds the tests' inputs (never their expected values)."""
    request = {
        "nonce": nonce,
        "prelude": prelude,
        "case_timeout_s": float(case_timeout_s),
        "case_output_bytes": int(case_output_bytes),
        "cases": [_case(t) for t in tests],
    }
    files = {"solution.py": code, "harness.py": HARNESS, "case_runner.py": CASE_RUNNER}
    return files, "case_runner.py", json.dumps(request).encode()


def _reports(stdout: bytes, nonce: str, n: int) -> list:
    """Per test: its report, None if none came, "several" if more than one did."""
    found: list = [None] * n
    for line in stdout.decode("utf-8", errors="replace").splitlines():
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if not isinstance(report, dict) or report.get("nonce") != nonce:
            continue
        index = report.get("case")
        if isinstance(index, int) and 0 <= index < n:
            found[index] = "several" if found[index] is not None else report
    return found


def _missing(run: RunResult) -> Outcome:
    """The verdict of a test without a report: the whole run ended before it."""
    if run.cause == "sandbox_error":
        return Outcome("sandbox_error", run.error[:300])
    if run.cause in ("wall_timeout", "cpu_limit"):
        return Outcome("timed_out", f"run {run.cause}")
    if run.cause == "output_limit":
        return Outcome("failed", "output limit")
    return Outcome("crashed", f"no report (runner exit status {run.returncode})")


def _judge_one(test: TestCase, report: dict, nonce: str, cpu_limit_s: float | None) -> Outcome:
    usage = dict(cpu_s=float(report.get("cpu_s") or 0.0), wall_s=float(report.get("wall_s") or 0.0))
    status = report.get("status")
    if report.get("timeout"):
        return Outcome("timed_out", "wall_timeout", **usage)
    if report.get("output_limit"):
        return Outcome("failed", "output limit", **usage)
    if status == -signal.SIGXCPU or (
        status == -signal.SIGKILL
        and cpu_limit_s is not None
        and usage["cpu_s"] >= cpu_limit_s - 0.05
    ):
        return Outcome("timed_out", "cpu_limit", **usage)
    if test.kind == "stdio":
        if status != 0:
            return Outcome("crashed", f"exit status {status}", **usage)
        try:
            output = base64.b64decode(str(report.get("stdout", "")), validate=True)
        except ValueError:
            return Outcome("failed", "unreadable output", **usage)
        ok = stdio_equal(output.decode("utf-8", errors="replace"), test.expected)
        return Outcome("passed" if ok else "failed", "" if ok else "wrong output", **usage)
    return judge_record(test, str(report.get("record") or ""), nonce, status, usage)


def judge_cases(
    tests: Sequence[TestCase], run: RunResult, nonce: str, cpu_limit_s: float | None
) -> list[Outcome]:
    """One verdict per test from one ``case_runner.py`` run, decided here from raw reports."""
    if run.cause == "sandbox_error":
        return [Outcome("sandbox_error", run.error[:300]) for _ in tests]
    reports = _reports(run.stdout, nonce, len(tests))
    out = []
    for test, report in zip(tests, reports):
        if report is None:
            out.append(_missing(run))
        elif report == "several":
            out.append(Outcome("failed", "more than one report"))
        else:
            out.append(_judge_one(test, report, nonce, cpu_limit_s))
    return out
