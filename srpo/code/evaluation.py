"""The ``code`` grader of ``srpo.graders`` / ``experiments/llm_eval.py``: held-out tests.

A row's reference (``reward_model.ground_truth``: the problem's tests, see
``srpo.code.formats.ground_truth_tests``) is split as in training (``srpo.code.problem``:
same seed, same hash key), and a response is graded on the tests training never sees: the
held-out half of a training problem, all tests of a held-out problem. ``correct`` = all of them
pass. That is the honest version of the release's coding validation, which grades the training
problems on their reward tests (``eval_split="release"`` reproduces it, as a labelled secondary
number).

One ``CodeGrader`` per process (``workers`` = up to 4 sandboxed runs at a time); reports are
cached by (reference, response, split) so that reading the verdict and the pass fraction of the
same response grades it once.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache

from srpo.code.formats import LCB_PRELUDE, ground_truth_tests
from srpo.code.grading import CodeGrader, GradeReport, extract_code
from srpo.code.problem import CodeProblem, make_problem

__all__ = [
    "problem_from_reference",
    "grade_reference",
    "code_columns",
    "shared_grader",
    "EVAL_SPLITS",
]

EVAL_SPLITS = ("heldout", "release")
_lock = threading.Lock()
_grader: CodeGrader | None = None


def shared_grader() -> CodeGrader:
    """The process's grader (created on first use)."""
    global _grader
    with _lock:
        if _grader is None:
            _grader = CodeGrader(workers=max(1, min(4, os.cpu_count() or 1)))
        return _grader


@lru_cache(maxsize=256)
def problem_from_reference(reference: str) -> CodeProblem:
    """The problem (both splits applied) whose tests a ground-truth string holds.

    Raises:
        ValueError: the reference holds no tests (message names the accepted forms).
    """
    tests, style = ground_truth_tests(reference)
    func_name = next((t.func_name for t in tests if t.func_name), "")
    return make_problem(
        "",
        "",
        tests,
        style=style,
        func_name=func_name,
        prelude=LCB_PRELUDE if style != "assert" else "",
    )


@lru_cache(maxsize=1024)
def grade_reference(reference: str, response: str, split: str = "heldout") -> GradeReport:
    """The report of ``response`` on the evaluation tests of ``reference``'s problem
    (``split="heldout"``: tests training never sees; ``"release"``: the reward tests, as the
    release's validation)."""
    if split not in EVAL_SPLITS:
        raise ValueError(f"split must be one of {EVAL_SPLITS}; got {split!r}")
    problem = problem_from_reference(reference)
    tests = problem.eval_tests if split == "heldout" else problem.release_validation_tests
    return shared_grader().grade(extract_code(response), tests, problem.prelude)


def code_columns(reference: str, response: str) -> dict:
    """Per-response columns of an evaluation row: the fraction of held-out tests passed, how
    many there were, where they come from, and the verdict counts."""
    problem = problem_from_reference(reference)
    report = grade_reference(reference, response)
    return {
        "greedy_tests_passed": report.reward,
        "eval_tests": len(report.outcomes),
        "eval_split": "heldout_problem" if problem.heldout_problem else "heldout_tests",
        **{f"tests_{verdict}": n for verdict, n in report.counts.items()},
    }
