"""A coding problem and its two splits: tests into reward / held-out halves, problems into
training / held-out problems.

The release splits each problem's private tests 50/50 into reward tests (the training reward)
and held-out tests, and never reads the held-out half: its "validation" curve is the training
problems graded on their reward tests. Here:

- ``split_tests``: a seeded permutation per problem (keyed by a hash of the problem's tests, so
  the split does not depend on file order or on which other problems are loaded); the reward
  half gets ceil(n/2) tests, the held-out half floor(n/2), each in the original order.
- ``is_heldout_problem``: each problem is held out as a whole with probability
  ``heldout_fraction`` (0.2), decided by the same hash and seed (so the held-out count varies
  around 20%). A problem with a single test cannot be split and is always held out.
- ``CodeProblem.eval_tests``: what evaluation grades: the held-out half of a training problem,
  all tests of a held-out problem. ``release_validation_tests`` is the release's choice (the
  reward tests), kept to report the release's number as a labelled secondary column.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from srpo.code.cases import TestCase, cases_to_json
from srpo.tasks import Problem

__all__ = [
    "CodeProblem",
    "split_key",
    "heldout_mask",
    "split_tests",
    "is_heldout_problem",
    "make_problem",
    "DEFAULT_SPLIT_SEED",
    "HELDOUT_PROBLEM_FRACTION",
]

DEFAULT_SPLIT_SEED = 0
HELDOUT_PROBLEM_FRACTION = 0.2


@dataclass(frozen=True)
class CodeProblem(Problem):
    """A coding problem (``answer`` is unused: the tests are the reference).

    Attributes:
        starter_code: code the answer must complete (LeetCode-style signature), "" if none.
        func_name: the function the tests call ("" for stdin/stdout problems).
        style: ``stdio``, ``call`` or ``assert`` (how the tests talk to the program).
        tests: the graded tests (LiveCodeBench's private tests), in file order.
        heldout_mask: per test, True if it is in the held-out half (``split_tests``).
        public_tests: the examples of the statement (LiveCodeBench's public tests); not graded.
        heldout_problem: the whole problem is held out from training.
        prelude: source run before the solution (the imports LiveCodeBench provides).
        data_source: benchmark name; difficulty: e.g. LiveCodeBench's easy/medium/hard.
    """

    starter_code: str = ""
    func_name: str = ""
    style: str = "stdio"
    tests: tuple[TestCase, ...] = ()
    heldout_mask: tuple[bool, ...] = ()
    public_tests: tuple[TestCase, ...] = ()
    heldout_problem: bool = False
    prelude: str = ""
    data_source: str = ""
    difficulty: str = ""

    def __post_init__(self) -> None:
        if len(self.heldout_mask) != len(self.tests):
            raise ValueError(
                f"heldout_mask has {len(self.heldout_mask)} entries for {len(self.tests)} tests"
            )

    @property
    def reward_tests(self) -> tuple[TestCase, ...]:
        """The tests whose pass fraction is the training reward (file order)."""
        return tuple(t for t, held in zip(self.tests, self.heldout_mask) if not held)

    @property
    def heldout_tests(self) -> tuple[TestCase, ...]:
        """The other half of the tests, never used in training (file order)."""
        return tuple(t for t, held in zip(self.tests, self.heldout_mask) if held)

    @property
    def eval_tests(self) -> tuple[TestCase, ...]:
        """Tests for evaluation: all tests of a held-out problem, else the held-out half."""
        return self.tests if self.heldout_problem else self.heldout_tests

    @property
    def release_validation_tests(self) -> tuple[TestCase, ...]:
        """What the release's coding validation grades: the reward tests (training data)."""
        return self.reward_tests


def split_key(tests) -> str:
    """A hash of a problem's tests (hex): the key of both splits."""
    return hashlib.sha256(cases_to_json(tests).encode()).hexdigest()


def _rng(seed: int, purpose: str, key: str) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence(
            [int(seed), int(hashlib.sha256(purpose.encode()).hexdigest()[:8], 16), int(key, 16)]
        )
    )


def heldout_mask(tests, seed: int = DEFAULT_SPLIT_SEED, key: str | None = None) -> tuple[bool, ...]:
    """Per test, whether it is in the held-out half: floor(n/2) tests chosen by a permutation
    seeded with ``seed`` and the problem's key (default ``split_key(tests)``)."""
    tests = tuple(tests)
    key = key or split_key(tests)
    order = _rng(seed, "tests", key).permutation(len(tests))
    held = {int(i) for i in order[: len(tests) // 2]}
    return tuple(i in held for i in range(len(tests)))


def split_tests(
    tests, seed: int = DEFAULT_SPLIT_SEED, key: str | None = None
) -> tuple[tuple[TestCase, ...], tuple[TestCase, ...]]:
    """``(reward, heldout)``: ceil(n/2) and floor(n/2) of the tests (``heldout_mask``), each
    half in file order."""
    tests = tuple(tests)
    mask = heldout_mask(tests, seed, key)
    return (
        tuple(t for t, h in zip(tests, mask) if not h),
        tuple(t for t, h in zip(tests, mask) if h),
    )


def is_heldout_problem(
    key: str, seed: int = DEFAULT_SPLIT_SEED, fraction: float = HELDOUT_PROBLEM_FRACTION
) -> bool:
    """Whether the problem with this key is held out (probability ``fraction``, seeded)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1]; got {fraction}")
    return bool(_rng(seed, "problems", key).random() < fraction)


def make_problem(
    uid: str,
    question: str,
    tests,
    *,
    seed: int = DEFAULT_SPLIT_SEED,
    heldout_fraction: float = HELDOUT_PROBLEM_FRACTION,
    **fields,
) -> CodeProblem:
    """A ``CodeProblem`` with both splits applied to ``tests`` (its graded tests).

    Raises:
        ValueError: no tests.
    """
    tests = tuple(tests)
    if not tests:
        raise ValueError(f"problem {uid!r} has no tests")
    key = split_key(tests)
    held_problem = len(tests) < 2 or is_heldout_problem(key, seed, heldout_fraction)
    return CodeProblem(
        uid=uid,
        question=question,
        answer="",
        tests=tests,
        heldout_mask=heldout_mask(tests, seed, key),
        heldout_problem=held_problem,
        **fields,
    )
