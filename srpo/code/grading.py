"""Grading model-written code: extraction, one sandbox run per test, verdicts, reward.

``extract_code(response)`` reads the code as the release does (the text between the last two
fence lines). ``CodeGrader`` runs every test of a program in the sandbox (a bounded thread pool,
one sandboxed process per test), judges each run in the grader's own process and returns a
``GradeReport``: one ``Outcome`` per test (``passed``, ``failed``, ``timed_out``, ``crashed`` or
``sandbox_error``), ``reward`` = the fraction of tests passed and ``correct`` = all passed (the
release's threshold 1.0).

For training: ``grader.rewards(responses, problems)`` -> ``[(reward, correct), ...]`` on each
problem's reward tests. For evaluation: ``grader.evaluate(response, problem)`` on the tests the
training never sees (``problem.eval_tests``).
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from srpo.code.cases import TestCase, call_equal, compare, parse_value, stdio_equal
from srpo.code.sandbox import RunResult, Sandbox, SandboxConfig

__all__ = [
    "ISOLATIONS",
    "judge_record",
    "VERDICTS",
    "Outcome",
    "GradeReport",
    "CodeGrader",
    "extract_code",
    "judge",
    "program_for",
]

VERDICTS = ("passed", "failed", "timed_out", "crashed", "sandbox_error")
FENCE = "```"
HARNESS = Path(__file__).with_name("harness.py").read_text(encoding="utf-8")


def extract_code(response: str, drop: Sequence[str] = ()) -> str | None:
    """The code of a response: the text between its last two fence lines (the release's rule).

    A fence line is a line that starts with three backticks after optional indentation; the
    rest of the line (a language tag such as ``python``, or anything else) is ignored. With
    fewer than two fence lines there is no code (None). With an odd number (the last block left
    open, e.g. cut at the length limit) the last two fence lines close one block and open the
    next, so the text between them is prose: kept as the release keeps it (it fails as code).

    Args:
        response: the model's whole response.
        drop: substrings removed from the code (e.g. ``"</thought>"`` when a thought ended
            inside the block); none by default, as in the release.
    """
    lines = response.split("\n")
    fences = [i for i, line in enumerate(lines) if line.lstrip().startswith(FENCE)]
    if len(fences) < 2:
        return None
    code = "\n".join(lines[fences[-2] + 1 : fences[-1]])
    for text in drop:
        code = code.replace(text, "")
    return code


@dataclass(frozen=True)
class Outcome:
    """The verdict of one test: ``VERDICTS``, a short reason, the program's CPU/wall seconds."""

    verdict: str
    detail: str = ""
    cpu_s: float = 0.0
    wall_s: float = 0.0


@dataclass(frozen=True)
class GradeReport:
    """The outcomes of one program on a list of tests."""

    outcomes: tuple[Outcome, ...]

    @property
    def counts(self) -> dict[str, int]:
        """Tests per verdict (every verdict present, zeros included)."""
        found = Counter(o.verdict for o in self.outcomes)
        return {v: found.get(v, 0) for v in VERDICTS}

    @property
    def passed(self) -> int:
        return sum(o.verdict == "passed" for o in self.outcomes)

    @property
    def reward(self) -> float:
        """Fraction of the tests passed (0.0 without tests)."""
        return self.passed / len(self.outcomes) if self.outcomes else 0.0

    @property
    def correct(self) -> bool:
        """All tests passed (the release's threshold 1.0); False without tests."""
        return bool(self.outcomes) and self.passed == len(self.outcomes)


def program_for(code: str, test: TestCase, prelude: str, nonce: str) -> tuple[dict, str, bytes]:
    """``(files, entry, stdin)`` of the sandbox run of ``test`` on ``code``."""
    if test.kind == "stdio":
        source = f"{prelude}\n{code}" if prelude else code
        return {"solution.py": source}, "solution.py", test.input.encode()
    request = {"nonce": nonce, "prelude": prelude, "setup": test.setup}
    if test.kind == "call":
        args = [json.loads(line) for line in test.input.split("\n") if line.strip()]
        request.update(mode="call", func_name=test.func_name, args=args)
    elif test.kind == "expr":
        request.update(mode="expr", exprs=test.sandbox_exprs)
    else:
        request.update(mode="exec", code=test.code)
    files = {"solution.py": code, "harness.py": HARNESS}
    return files, "harness.py", json.dumps(request).encode()


def _record(text: str, nonce: str) -> dict | None | str:
    """The harness's result line carrying our nonce; "several" if there is more than one."""
    found = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("nonce") == nonce:
            found.append(record)
    if len(found) > 1:
        return "several"
    return found[0] if found else None


def judge(test: TestCase, run: RunResult, nonce: str) -> Outcome:
    """The verdict of one run, decided here from the run's raw output (never from a verdict
    the program prints)."""
    usage = dict(cpu_s=run.cpu_s, wall_s=run.wall_s)
    if run.cause == "sandbox_error":
        return Outcome("sandbox_error", run.error[:300])
    if run.cause in ("wall_timeout", "cpu_limit"):
        return Outcome("timed_out", run.cause, **usage)
    if run.cause == "output_limit":
        return Outcome("failed", "output limit", **usage)
    if test.kind == "stdio":
        if run.returncode != 0:
            return Outcome("crashed", f"exit status {run.returncode}", **usage)
        output = run.stdout.decode("utf-8", errors="replace")
        ok = stdio_equal(output, test.expected)
        return Outcome("passed" if ok else "failed", "" if ok else "wrong output", **usage)
    return judge_record(test, run.stdout, nonce, run.returncode, usage)


def judge_record(test: TestCase, output, nonce: str, returncode, usage: dict) -> Outcome:
    """The verdict of a call / expr / exec test from the harness's output (bytes or text): its
    one result line with our nonce, the values parsed as literals and compared here."""
    if isinstance(output, bytes):
        output = output.decode("utf-8", errors="replace")
    record = _record(output, nonce)
    if record is None:
        return Outcome("crashed", f"no result (exit status {returncode})", **usage)
    if record == "several":
        return Outcome("failed", "more than one result line", **usage)
    if not record.get("ok"):
        return Outcome("crashed", str(record.get("error", ""))[:300], **usage)
    if test.kind == "exec":
        return Outcome("passed", **usage)
    try:
        values = [parse_value(text) for text in record.get("values", [])]
    except (ValueError, TypeError) as error:
        return Outcome("failed", f"result is not a plain value: {error}", **usage)
    if test.kind == "call":
        ok = len(values) == 1 and call_equal(values[0], test.expected)
    else:
        ok = len(values) == len(test.sandbox_exprs) and compare(test, values)
    return Outcome("passed" if ok else "failed", "" if ok else "wrong value", **usage)


ISOLATIONS = ("test", "program")


class CodeGrader:
    """Grades programs on tests in the sandbox, ``workers`` runs at a time.

    Args:
        config: the sandbox's limits and layers (default ``SandboxConfig()``: the release's
            10 s per test).
        workers: sandboxed runs at a time (threads; each run is its own process tree).
        retries: reruns of a test that ended in a sandbox error (a fork refused under load...).
        isolation: ``test`` (default, as the release: one sandboxed run per test) or
            ``program`` (one sandboxed run per program, a forked process per test inside it,
            each on ``config.wall_timeout_s``: ``srpo.code.batch``; for training throughput).

    ``totals`` counts every verdict since creation, ``runs`` the sandboxed runs and
    ``programs`` the programs graded. Use as a context manager or ``close()``.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        workers: int = 2,
        retries: int = 1,
        isolation: str = "test",
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1; got {workers}")
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}; got {isolation!r}")
        self.sandbox = Sandbox(config)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox")
        self.retries = retries
        self.isolation = isolation
        self.totals: Counter = Counter()
        self.runs = 0
        self.programs = 0

    def __enter__(self) -> CodeGrader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def _run_one(self, code: str | None, test: TestCase, prelude: str) -> Outcome:
        if code is None:
            return Outcome("failed", "no code block")
        for _ in range(self.retries + 1):
            nonce = secrets.token_hex(16)
            files, entry, stdin = program_for(code, test, prelude, nonce)
            self.runs += 1
            outcome = judge(test, self.sandbox.run(files, entry, stdin), nonce)
            if outcome.verdict != "sandbox_error":
                break
        return outcome

    def _run_program(
        self, code: str | None, tests: Sequence[TestCase], prelude: str
    ) -> tuple[Outcome, ...]:
        """Every test of one program in one sandboxed run (``srpo.code.batch``)."""
        from srpo.code.batch import judge_cases, program_for_cases, run_wall_clock

        if code is None:
            return tuple(Outcome("failed", "no code block") for _ in tests)
        if not tests:
            return ()
        c = self.sandbox.config
        per_case = c.max_output_bytes if c.max_output_bytes is not None else 8 * 1024**2
        # base64 and the report's fields must fit under the run's stdout cap
        per_case = max(1024, (per_case // (len(tests) + 1)) * 3 // 4)
        for _ in range(self.retries + 1):
            nonce = secrets.token_hex(16)
            files, entry, stdin = program_for_cases(
                code, tests, prelude, nonce, c.wall_timeout_s, per_case
            )
            self.runs += 1
            run = self.sandbox.run(
                files, entry, stdin, wall_timeout_s=run_wall_clock(c.wall_timeout_s, len(tests))
            )
            outcomes = judge_cases(tests, run, nonce, c.cpu_time_s)
            if not any(o.verdict == "sandbox_error" for o in outcomes):
                break
        return tuple(outcomes)

    def grade_many(
        self, jobs: Sequence[tuple[str | None, Sequence[TestCase], str]]
    ) -> list[GradeReport]:
        """Grade several programs at once: ``jobs`` = ``[(code, tests, prelude), ...]``; all
        their runs share the pool (one per test, or one per program with ``isolation =
        "program"``). Returns one report per job, in order."""
        if self.isolation == "program":
            futures = [
                self.pool.submit(self._run_program, code, tuple(tests), prelude)
                for code, tests, prelude in jobs
            ]
            reports = [GradeReport(f.result()) for f in futures]
        else:
            rows = [
                [self.pool.submit(self._run_one, code, test, prelude) for test in tests]
                for code, tests, prelude in jobs
            ]
            reports = [GradeReport(tuple(f.result() for f in row)) for row in rows]
        self.programs += len(reports)
        for report in reports:
            self.totals.update(o.verdict for o in report.outcomes)
        return reports

    def grade(self, code: str | None, tests: Sequence[TestCase], prelude: str = "") -> GradeReport:
        """Grade one program (None: no code, every test fails without running)."""
        return self.grade_many([(code, tests, prelude)])[0]

    def rewards(self, responses: Sequence[str], problems: Sequence) -> list[tuple[float, bool]]:
        """``(reward, correct)`` of each response on its problem's reward tests: reward = the
        fraction passed (the advantage's raw reward), correct = all passed."""
        if len(responses) != len(problems):
            raise ValueError(f"{len(responses)} responses for {len(problems)} problems")
        reports = self.grade_many(
            [(extract_code(r), p.reward_tests, p.prelude) for r, p in zip(responses, problems)]
        )
        return [(r.reward, r.correct) for r in reports]

    def reward(self, response: str, problem) -> tuple[float, bool]:
        """``(reward, correct)`` of one response on ``problem.reward_tests``."""
        return self.rewards([response], [problem])[0]

    def evaluate_many(self, responses: Sequence[str], problems: Sequence) -> list[GradeReport]:
        """Reports on the tests training never sees (``problem.eval_tests``)."""
        return self.grade_many(
            [(extract_code(r), p.eval_tests, p.prelude) for r, p in zip(responses, problems)]
        )

    def evaluate(self, response: str, problem) -> GradeReport:
        return self.evaluate_many([response], [problem])[0]
