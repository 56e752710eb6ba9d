"""Grading code (srpo.code.grading): extraction, verdicts, reward = fraction passed, correct =
all passed, a bounded pool -- and programs that try to fool the checker. Each of those is also
graded the naive way (the check inside the program's process, or trusting its exit status or a
printed PASS), where it gets through: that is what the grader-side comparison buys."""

import itertools
import json
import threading
from math import comb

import pytest

from srpo.code.asserts import assert_tests, check_function_tests, in_process_count
from srpo.code.cases import TestCase, parse_value, stdio_equal
from srpo.code.grading import CodeGrader, GradeReport, Outcome, extract_code, judge
from srpo.code.problem import make_problem
from srpo.code.sandbox import RunResult, Sandbox, SandboxConfig
from srpo.metrics import pass_at_k
from tests.srpo.code_helpers import leftovers, time_limit  # noqa: F401

CONFIG = SandboxConfig(wall_timeout_s=3, cpu_time_s=1)


@pytest.fixture(scope="module")
def grader():
    with CodeGrader(CONFIG, workers=2) as g:
        yield g


# ---- extraction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, code",
    [
        ("no fence at all", None),
        ("```python\nprint(1)", None),  # one fence line: unclosed, no code
        ("text\n```python\nprint(1)\n```\nmore", "print(1)"),  # language tag ignored
        ("```\nprint(1)\n```", "print(1)"),  # no tag
        ("```py\na = 1\n```\nthen\n```python\nb = 2\n```", "b = 2"),  # the last block
        ("```python\na = 1\n```\nprose\n```python\nb = 2", "prose"),  # odd: between the last two
        ("  ```python\nx = 1\n  ```", "x = 1"),  # indented fences
        ("```python\ns = '```'\n```", "s = '```'"),  # backticks inside a line: not a fence
        ("```python\n```", ""),  # empty block
    ],
)
def test_extract_code(response, code):
    assert extract_code(response) == code


def test_extract_code_can_drop_thought_delimiters():
    response = "I write it.</thought>```python\ndef f(x):</thought>\n    return x\n```</thought>"
    assert extract_code(response) is None  # the fences are not at a line start
    response = "I write it.</thought>\n```python\ndef f(x):</thought>\n    return x\n```"
    assert extract_code(response) == "def f(x):</thought>\n    return x"
    assert extract_code(response, drop=("</thought>",)) == "def f(x):\n    return x"


# ---- comparisons ----------------------------------------------------------------------------


def test_stdio_rule_is_livecodebench_s():
    assert stdio_equal("3\n4\n", "3\n4")
    assert stdio_equal("  3  \n4\n\n", "3\n4")
    assert stdio_equal("0.50 1", "0.5 1.0")  # decimals compare as numbers
    assert not stdio_equal("0.5000001", "0.5")
    assert not stdio_equal("3\n4\n5", "3\n4")
    assert not stdio_equal("3 4", "3\n4")
    assert not stdio_equal("yes", "Yes")


def test_parse_value_reads_literals_and_refuses_code():
    assert parse_value("[1, (2, 3), {'a': {4}}, None, -1.5, 1+2j]") == [
        1,
        (2, 3),
        {"a": {4}},
        None,
        -1.5,
        1 + 2j,
    ]
    assert parse_value("frozenset({1})") == frozenset({1}) and parse_value("set()") == set()
    assert parse_value("inf") == float("inf") and parse_value("-inf") < 0
    for text in (
        "__import__('os').system('true')",
        "<__main__.A object at 0x7f>",
        "x",
        "[1] * 10**9",
        "(" * 500 + ")" * 500,
    ):
        with pytest.raises(ValueError):
            parse_value(text)


def run_result(stdout: bytes, cause="exit", returncode=0) -> RunResult:
    return RunResult(cause, returncode, stdout, b"")


def test_judge_reads_only_the_record_with_our_nonce():
    test = TestCase("expr", left="f(1)", right="2", right_literal=True)
    good = json.dumps({"nonce": "n1", "ok": True, "values": ["2"]}).encode()
    forged = json.dumps({"nonce": "guess", "ok": True, "values": ["2"]}).encode()
    assert judge(test, run_result(good), "n1").verdict == "passed"
    assert judge(test, run_result(forged), "n1").verdict == "crashed"  # no result of ours
    assert judge(test, run_result(forged + b"\n" + good), "n1").verdict == "passed"
    assert judge(test, run_result(good + b"\n" + good), "n1").verdict == "failed"  # two
    assert judge(test, run_result(b"PASS\n"), "n1").verdict == "crashed"
    assert judge(test, run_result(b"", "wall_timeout", None), "n1").verdict == "timed_out"
    assert judge(test, run_result(b"", "cpu_limit", -24), "n1").verdict == "timed_out"
    assert judge(test, run_result(b"x", "output_limit", None), "n1").verdict == "failed"
    assert (
        judge(test, RunResult("sandbox_error", None, b"", b"", error="boom"), "n1").verdict
        == "sandbox_error"
    )


# ---- verdicts of real runs ----------------------------------------------------------------


def test_every_verdict(grader):
    tests = [
        TestCase("stdio", input="2 3\n", expected="5\n"),  # passed
        TestCase("stdio", input="2 2\n", expected="5\n"),  # failed
        TestCase("stdio", input="0 0\n", expected="0\n"),  # timed out
        TestCase("stdio", input="9 9\n", expected="18\n"),
    ]  # crashed
    code = (
        "a, b = map(int, input().split())\nif a == 0:\n    while True:\n        pass\n"
        "if a == 9:\n    raise SystemExit(3)\nprint(a + b)\n"
    )
    report = grader.grade(code, tests)
    assert [o.verdict for o in report.outcomes] == ["passed", "failed", "timed_out", "crashed"]
    assert report.counts == {
        "passed": 1,
        "failed": 1,
        "timed_out": 1,
        "crashed": 1,
        "sandbox_error": 0,
    }
    assert report.reward == 0.25 and not report.correct
    assert grader.totals["timed_out"] >= 1
    assert leftovers() == []


def test_call_tests_leetcode_style(grader):
    from srpo.code.formats import LCB_PRELUDE

    tests = [
        TestCase("call", input="[1, 2, 3]\n2", expected="[3, 4, 5]", func_name="addAll"),
        TestCase("call", input="[]\n7", expected="[]", func_name="addAll"),
    ]
    code = (
        "class Solution:\n    def addAll(self, nums: List[int], k: int) -> List[int]:\n"
        "        return tuple(deque(x + k for x in nums))\n"
    )  # List, deque: the prelude
    report = grader.grade(code, tests, LCB_PRELUDE)
    assert report.correct and report.reward == 1.0
    assert not grader.grade(code, tests).correct  # without the prelude: NameError
    plain = grader.grade("def addAll(nums, k):\n    return [x + k for x in nums]\n", tests)
    assert plain.correct


def test_no_code_fails_every_test_without_running(grader):
    report = grader.grade(None, [TestCase("stdio", input="", expected="1")] * 3)
    assert report.counts["failed"] == 3 and report.reward == 0.0
    assert {o.detail for o in report.outcomes} == {"no code block"}


def test_rewards_partial_credit_and_correctness(grader):
    tests = assert_tests("\n".join(f"assert f({x}) == {2 * x}" for x in range(6)))
    problem = make_problem("p", "double it", tests, style="assert", func_name="f")
    fence = "```python\n{}\n```"
    right = fence.format("def f(x):\n    return 2 * x")
    half = fence.format("def f(x):\n    return 2 * x if x % 2 == 0 else 0")
    results = grader.rewards([right, half, "no code"], [problem] * 3)
    n = len(problem.reward_tests)
    passed_half = sum(int(t.left[2:-1]) % 2 == 0 for t in problem.reward_tests)
    assert results == [(1.0, True), (passed_half / n, False), (0.0, False)]
    assert grader.evaluate(right, problem).correct
    assert len(grader.evaluate(right, problem).outcomes) == len(problem.eval_tests)


def test_report_properties():
    report = GradeReport((Outcome("passed"), Outcome("failed"), Outcome("passed")))
    assert report.passed == 2 and report.reward == pytest.approx(2 / 3) and not report.correct
    assert GradeReport(()).reward == 0.0 and not GradeReport(()).correct
    assert GradeReport((Outcome("passed"),) * 4).correct


def test_the_pool_runs_at_most_workers_at_a_time(monkeypatch):
    running, peak, lock = [0], [0], threading.Lock()
    original = Sandbox.run

    def counting(self, *args, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return original(self, *args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(Sandbox, "run", counting)
    tests = [TestCase("stdio", input="", expected="ok")] * 8
    with CodeGrader(CONFIG, workers=3) as grader:
        report = grader.grade("import time\ntime.sleep(0.3)\nprint('ok')", tests)
    assert report.correct and peak[0] == 3


# ---- assert conversion --------------------------------------------------------------------


def test_assert_shapes():
    tests = assert_tests(
        "import math\nassert f(3) == 6\nassert 8 == f(4)\n"
        "assert f(1) and not f(0)\nassert abs(f(1.5) - 3.0) < 1e-6\n"
        "assert a < b < c\nfor i in range(3):\n    assert f(i) == 2 * i\n"
        "assert 1 == 1\nassert f(2) in [4, 5]"
    )
    kinds = [(t.kind, t.op) for t in tests]
    assert kinds == [
        ("expr", "=="),
        ("expr", "=="),
        ("expr", "truth"),
        ("expr", "not"),
        ("expr", "<"),
        ("exec", "=="),
        ("exec", "=="),
        ("expr", "in"),
    ]
    assert tests[0].setup == "import math" and tests[1].sandbox_exprs == ["f(4)"]
    assert in_process_count(tests) == 2


def test_humaneval_check_functions():
    simple = (
        "METADATA = {}\n\ndef check(candidate):\n    '''doc'''\n"
        "    assert candidate(1) == 2\n    assert candidate(2) == 4\n"
    )
    tests = check_function_tests(simple, "double")
    assert [t.kind for t in tests] == ["expr", "expr"]
    assert "candidate = double" in tests[0].setup and "METADATA = {}" in tests[0].setup
    looped = "def check(candidate):\n    for x in range(3):\n        assert candidate(x) == 2*x\n"
    (test,) = check_function_tests(looped, "double")
    assert test.kind == "exec" and test.code.endswith("check(double)")
    with pytest.raises(ValueError, match="check"):
        check_function_tests("assert True", "double")


# ---- programs that try to fool the checker --------------------------------------------------

WRONG = "def f(x):\n    return 0\n"
ASSERTS = "assert f(2) == 5\nassert abs(f(2) - 5) < 1e-9"


def naive_exit_status(code: str, asserts: str) -> bool:
    """A naive grader: the solution and its asserts as one script, passed if it exits 0 (still
    run in the sandbox: only the verdict is naive)."""
    result = Sandbox(CONFIG).run({"main.py": f"{code}\n{asserts}\n"}, "main.py")
    return result.cause == "exit" and result.returncode == 0


def naive_pass_line(code: str, asserts: str) -> bool:
    """A naive grader: passed if the output says PASS."""
    script = f"{code}\n{asserts}\nprint('PASS')\n"
    return b"PASS" in Sandbox(CONFIG).run({"main.py": script}, "main.py").stdout


EQUALS_EVERYTHING = """class Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    def __sub__(self, other): return self
    def __abs__(self): return self
    __hash__ = object.__hash__
def f(x):
    return Anything()
"""


def test_an_object_equal_to_everything(grader):
    tests = assert_tests(ASSERTS)
    report = grader.grade(EQUALS_EVERYTHING, tests)
    assert report.counts["passed"] == 0  # its repr is no literal: nothing to compare
    in_process = tuple(TestCase("exec", code=f"assert {t.left} {t.op} {t.right}") for t in tests)
    assert grader.grade(EQUALS_EVERYTHING, in_process).correct  # the in-process check is fooled
    assert naive_exit_status(EQUALS_EVERYTHING, ASSERTS)


PATCHER = """import builtins, operator
builtins.abs = lambda value: 0
operator.eq = lambda a, b: True
builtins.isinstance = lambda *a: True
def f(x):
    return 0
"""


def test_monkeypatching_builtins_and_operator(grader):
    report = grader.grade(PATCHER, assert_tests(ASSERTS))
    assert report.counts["passed"] == 0
    assert naive_exit_status(PATCHER, "assert abs(f(2) - 5) < 1e-9")  # naive: fooled


FAKE_PASS = """import os, json
print("PASS")
for fd in (1, 2, 3, 4):
    try:
        os.write(fd, (json.dumps({"nonce": "0" * 32, "ok": True, "values": ["5"]}) + "\\n").encode())
    except OSError:
        pass
os._exit(0)
"""


def test_a_printed_pass_or_forged_record(grader):
    report = grader.grade(FAKE_PASS, assert_tests(ASSERTS))
    assert report.counts["passed"] == 0 and report.counts["crashed"] == 2
    assert naive_pass_line(FAKE_PASS.replace("os._exit(0)", ""), ASSERTS)  # naive: fooled
    assert naive_exit_status(FAKE_PASS, ASSERTS)


EXIT_EARLY = "import sys\nsys.exit(0)\ndef f(x):\n    return 0\n"


def test_exiting_before_the_asserts(grader):
    for tests in (assert_tests(ASSERTS), (TestCase("exec", code=ASSERTS),)):
        report = grader.grade(EXIT_EARLY, tests)
        assert report.counts["crashed"] == len(tests) and report.reward == 0.0
    assert naive_exit_status(EXIT_EARLY, ASSERTS)  # exit status 0: a naive grader passes it
    hard_exit = EXIT_EARLY.replace("sys.exit(0)", "import os; os._exit(0)")
    assert grader.grade(hard_exit, assert_tests(ASSERTS)).counts["crashed"] == 2


def test_set_order_is_the_same_in_every_run():
    """PYTHONHASHSEED=0 in the sandbox: a program that prints a set gives the same output in
    every run (same seed, same numbers), so its grade does not flip from run to run."""
    box = Sandbox(CONFIG)
    outputs = {
        box.run({"main.py": "print(list({str(i) for i in range(30)}))"}, "main.py").stdout
        for _ in range(3)
    }
    assert len(outputs) == 1


# ---- pass@k -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        outcomes = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(outcomes, k))
            exact = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
            assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_time_per_run_is_reported(grader):
    report = grader.grade("print(1)", [TestCase("stdio", input="", expected="1")])
    outcome = report.outcomes[0]
    assert outcome.verdict == "passed" and 0 < outcome.wall_s < CONFIG.wall_timeout_s
