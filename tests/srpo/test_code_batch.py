"""Every test of a program in ONE sandboxed run (``CodeGrader(isolation="program")``,
``srpo.code.batch`` / ``case_runner.py``): verdicts per test, decided in the grader.

Break-it tests: a test that hangs, sleeps, floods its output, crashes the interpreter, kills the
runner or forges another test's report ends alone (or fails), and the tests before and after it
keep their own verdicts. ``test_without_the_per_test_clock_a_hang_hides_the_rest`` removes the
runner's per-test clock and shows the hang then hides every later verdict: the per-test clock,
not luck, is what keeps them. The agreement test grades the same programs both ways.
"""

import json
import time
from dataclasses import replace

import numpy as np
import pytest

from srpo.code.batch import judge_cases, program_for_cases
from srpo.code.cases import TestCase
from srpo.code.grading import CodeGrader
from srpo.code.sandbox import Sandbox, SandboxConfig
from srpo.code.synthetic import SyntheticCodeTask, near_miss, source
from tests.srpo.code_helpers import leftovers, sandbox_dirs, time_limit  # noqa: F401

TIME_LIMIT_S = 60
CONFIG = SandboxConfig(
    wall_timeout_s=1.5, cpu_time_s=1, memory_bytes=512 * 2**20, max_output_bytes=2**20
)
CALLS = [
    TestCase("call", input=json.dumps(x), expected=json.dumps(x + 3), func_name="f")
    for x in range(5)
]
STDIO = [TestCase("stdio", input=f"{x}\n", expected=f"{2 * x}\n") for x in range(4)]


@pytest.fixture(scope="module")
def grader():
    with CodeGrader(CONFIG, workers=2, isolation="program") as g:
        yield g


def grade(grader, code, tests=CALLS):
    before = sandbox_dirs()
    t0 = time.monotonic()
    report = grader.grade(code, tests)
    assert sandbox_dirs() == before, "a temporary directory was left behind"
    assert leftovers() == [], "a process was left behind"
    return [o.verdict for o in report.outcomes], time.monotonic() - t0


def test_a_correct_program_passes_every_test_in_one_run(grader):
    runs = grader.runs
    verdicts, _ = grade(grader, "def f(x):\n    return x + 3")
    assert verdicts == ["passed"] * 5 and grader.runs == runs + 1


@pytest.mark.parametrize(
    "attack", ["while True:\n            pass", "import time\n        time.sleep(100)"]
)
def test_one_hanging_test_cannot_hide_the_others(grader, attack):
    code = f"def f(x):\n    if x == 1:\n        {attack}\n    return x + 3 if x != 3 else 0"
    verdicts, seconds = grade(grader, code)
    assert verdicts == ["passed", "timed_out", "passed", "failed", "passed"]
    assert seconds < 2 * CONFIG.wall_timeout_s + 3  # one test's clock, not the run's


def test_without_the_per_test_clock_a_hang_hides_the_rest():
    """The ablation: the runner's clock per test set past the run's wall clock."""
    code = "def f(x):\n    if x == 1:\n        while True:\n            pass\n    return x + 3"
    files, entry, stdin = program_for_cases(code, CALLS, "", "n0nce", 100.0, 2**16)
    config = replace(CONFIG, cpu_time_s=None)  # only a clock could stop it
    run = Sandbox(config).run(files, entry, stdin, wall_timeout_s=3.0)
    verdicts = [o.verdict for o in judge_cases(CALLS, run, "n0nce", None)]
    assert verdicts == ["passed"] + ["timed_out"] * 4  # tests 2..4 never ran: hidden
    assert leftovers() == []


def test_a_flooding_test_is_cut_and_the_others_keep_their_verdicts(grader):
    code = "import sys\nx = int(input())\nif x == 2:\n    while True: sys.stdout.write('9' * 65536)\nprint(2 * x)"
    verdicts, _ = grade(grader, code, STDIO)
    assert verdicts == ["passed", "passed", "failed", "passed"]


def test_a_test_that_kills_its_interpreter_or_exits_early(grader):
    code = (
        "import os, sys\n"
        "def f(x):\n"
        "    if x == 0:\n        os.kill(os.getpid(), 11)\n"  # a segfault
        "    if x == 1:\n        sys.exit(0)\n"  # before the result
        "    if x == 2:\n        os._exit(0)\n"
        "    return x + 3\n"
    )
    verdicts, _ = grade(grader, code)
    assert verdicts == ["crashed", "crashed", "crashed", "passed", "passed"]


def test_killing_the_runner_ends_the_later_tests_without_a_pass(grader):
    code = "import os, signal\ndef f(x):\n    if x == 2:\n        os.kill(os.getppid(), signal.SIGKILL)\n    return x + 3"
    verdicts, _ = grade(grader, code)
    assert verdicts[:2] == ["passed", "passed"]
    assert "passed" not in verdicts[2:]


def test_forged_reports_for_other_tests_do_not_pass(grader):
    """A test's process finds the nonce in the harness's frames and writes reports of the right
    values for every test on every descriptor it can find; its own function is wrong. The
    runner's channel is closed before model code runs and reports are matched to their test, so
    no test passes."""
    code = (
        "import json, os, sys\n"
        "def f(x):\n"
        "    frame, nonce = sys._getframe(), None\n"
        "    while frame is not None and nonce is None:\n"
        "        for v in frame.f_locals.values():\n"
        "            if isinstance(v, dict) and 'nonce' in v:\n"
        "                nonce = v['nonce']\n"
        "        frame = frame.f_back\n"
        "    for fd in range(3, 64):\n"
        "        for case in range(5):\n"
        "            rec = json.dumps({'nonce': nonce, 'ok': True, 'values': [repr(case + 3)]})\n"
        "            line = json.dumps({'nonce': nonce, 'case': case, 'status': 0,\n"
        "                               'timeout': False, 'record': rec}) + '\\n'\n"
        "            try:\n                os.write(fd, line.encode())\n"
        "            except OSError:\n                pass\n"
        "    return -1\n"
    )
    verdicts, _ = grade(grader, code)
    assert "passed" not in verdicts


def test_program_and_test_isolation_agree_on_synthetic_programs():
    task = SyntheticCodeTask(depth=2)
    rng = np.random.default_rng(3)
    problems = task.sample(6, rng)
    codes = []
    for p in problems:
        program = task.programs[p.uid]
        codes.append(source(program))
        codes.append(source(near_miss(program, rng)))
    jobs = [(c, p.tests, p.prelude) for c, p in zip(codes, np.repeat(problems, 2))]
    jobs.append(("def f(x):\n    return 1 // (x % 2)", problems[0].tests, ""))  # crashes on some
    with (
        CodeGrader(CONFIG, workers=2, isolation="test") as one,
        CodeGrader(CONFIG, workers=2, isolation="program") as many,
    ):
        a = [[o.verdict for o in r.outcomes] for r in one.grade_many(jobs)]
        b = [[o.verdict for o in r.outcomes] for r in many.grade_many(jobs)]
    assert a == b
    assert any("failed" in row and "passed" in row for row in a)  # partial credit exercised
    assert "crashed" in a[-1] and "passed" in a[-1]
