"""A tiny coding task family a small CPU model can learn: a one-line function from examples.

A problem is a hidden function ``f(x)`` over a small grammar,

    E := x | (E + c) | (E - c) | (E * c) | (E // d) | (E % d) | max(E, c) | min(E, c) | abs(E - c)

with constants c in 1..9 and divisors d in 2..9, at most ``depth`` operations deep. The question
shows ``n_examples`` input/output pairs; the answer is a fenced block ``def f(x):\\n    return E``
and the tests are ``n_tests`` other inputs (functional tests in LiveCodeBench's encoding, split
50/50 into reward and held-out halves like any problem). Equivalent programs all pass: grading is
by tests only. Inputs are non-negative integers (Python's ``//`` and ``%`` of negatives would add
difficulty nobody asked for).

``SyntheticCodeTask.sample`` draws training problems (held-out problems of the problem-level
split are skipped), ``heldout_set`` the held-out ones; ``near_miss`` rewrites a program with one
constant changed (a wrong answer that still passes some tests: partial credit for warm starts).
``lcb_row`` / ``release_row`` / ``mbpp_row`` write a problem in the ecosystem's layouts, which
``srpo.code.formats`` reads back to the same tests.
"""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from dataclasses import dataclass, field

import numpy as np

from srpo.code.cases import TestCase
from srpo.code.formats import release_row
from srpo.code.problem import (
    DEFAULT_SPLIT_SEED,
    HELDOUT_PROBLEM_FRACTION,
    CodeProblem,
    make_problem,
)

__all__ = [
    "SyntheticCodeTask",
    "Program",
    "evaluate",
    "source",
    "near_miss",
    "lcb_row",
    "release_row",
    "mbpp_row",
]

#: a program: ("x",) or (op, child, constant)
Program = tuple
BINARY = ("+", "-", "*", "//", "%")
CALLS = ("max", "min", "absdiff")


def evaluate(program: Program, x: int) -> int:
    """The program's value at ``x`` (our own tree, no ``eval``)."""
    if program[0] == "x":
        return x
    op, child, c = program
    v = evaluate(child, x)
    return {
        "+": lambda: v + c,
        "-": lambda: v - c,
        "*": lambda: v * c,
        "//": lambda: v // c,
        "%": lambda: v % c,
        "max": lambda: max(v, c),
        "min": lambda: min(v, c),
        "absdiff": lambda: abs(v - c),
    }[op]()


def _expr(program: Program, top: bool = True) -> str:
    if program[0] == "x":
        return "x"
    op, child, c = program
    inner = _expr(child, top=False)
    if op in BINARY:
        text = f"{inner} {op} {c}"
        return text if top else f"({text})"
    if op == "absdiff":
        return f"abs({inner} - {c})"
    return f"{op}({inner}, {c})"


def source(program: Program) -> str:
    """The one-line function: ``def f(x):\\n    return E``."""
    return f"def f(x):\n    return {_expr(program)}"


def _random_program(
    rng: np.random.Generator, depth: int, ops: tuple[str, ...] = BINARY + CALLS
) -> Program:
    program: Program = ("x",)
    for _ in range(int(rng.integers(1, depth + 1))):
        op = ops[int(rng.integers(0, len(ops)))]
        c = int(rng.integers(2, 10)) if op in ("//", "%") else int(rng.integers(1, 10))
        program = (op, program, c)
    return program


def near_miss(program: Program, rng: np.random.Generator) -> Program:
    """The program with the constant of one operation changed (a plausible wrong answer)."""
    path, node = [], program
    while node[0] != "x":
        path.append(node)
        node = node[1]
    index = int(rng.integers(0, len(path)))
    op, child, c = path[index]
    low = 2 if op in ("//", "%") else 1
    choices = [v for v in range(low, 10) if v != c]
    changed: Program = (op, child, int(choices[int(rng.integers(0, len(choices)))]))
    for op, _child, c in reversed(path[:index]):
        changed = (op, changed, c)
    return changed


@dataclass
class SyntheticCodeTask:
    """One-line functions from examples.

    Attributes:
        depth: at most this many operations per program (>= 1).
        n_examples: input/output pairs shown in the question.
        n_tests: hidden test inputs (split 50/50 into reward and held-out tests).
        max_input: inputs are drawn from 0..max_input (distinct within a problem).
        min_distinct: a program must take at least this many values on the problem's inputs
            (no near-constant functions).
        split_seed, heldout_fraction: the splits (``srpo.code.problem``).
        ops: the operations drawn (default: all of ``BINARY + CALLS``).
        shown_inputs: fixed inputs of the examples (empty: ``n_examples`` random ones); the
            tests' inputs are drawn from the rest of ``0..max_input``.
    """

    depth: int = 2
    n_examples: int = 4
    n_tests: int = 8
    max_input: int = 20
    min_distinct: int = 4
    split_seed: int = DEFAULT_SPLIT_SEED
    heldout_fraction: float = HELDOUT_PROBLEM_FRACTION
    shown_inputs: tuple[int, ...] = ()
    ops: tuple[str, ...] = BINARY + CALLS
    programs: dict = field(default_factory=dict, repr=False)  # uid -> Program

    def __post_init__(self) -> None:
        self.ops = tuple(self.ops)
        if not self.ops or set(self.ops) - set(BINARY + CALLS):
            raise ValueError(f"ops must be a non-empty subset of {BINARY + CALLS}; got {self.ops}")
        self.shown_inputs = tuple(int(x) for x in self.shown_inputs)
        if self.shown_inputs:
            self.n_examples = len(self.shown_inputs)
            if len(set(self.shown_inputs)) != len(self.shown_inputs) or not all(
                0 <= x <= self.max_input for x in self.shown_inputs
            ):
                raise ValueError(
                    f"shown_inputs must be distinct and in 0..max_input={self.max_input}; "
                    f"got {self.shown_inputs}"
                )
        if self.depth < 1 or self.n_examples < 1 or self.n_tests < 2:
            raise ValueError("depth and n_examples must be >= 1 and n_tests >= 2")
        if self.n_examples + self.n_tests > self.max_input + 1:
            raise ValueError(
                f"n_examples + n_tests = {self.n_examples + self.n_tests} distinct "
                f"inputs do not fit in 0..max_input={self.max_input}"
            )

    def question(self, examples) -> str:
        shown = ", ".join(f"f({x}) = {y}" for x, y in examples)
        return (
            f"Write a one-line Python function f(x) such that {shown}. Answer with the "
            "function in a ```python code block."
        )

    def _draw(self, rng: np.random.Generator) -> CodeProblem:
        while True:
            program = _random_program(rng, self.depth, self.ops)
            if self.shown_inputs:
                rest = [x for x in range(self.max_input + 1) if x not in self.shown_inputs]
                drawn = rng.choice(len(rest), self.n_tests, replace=False)
                inputs = list(self.shown_inputs) + [rest[int(i)] for i in drawn]
            else:
                inputs = [
                    int(x)
                    for x in rng.choice(
                        self.max_input + 1, self.n_examples + self.n_tests, replace=False
                    )
                ]
            outputs = [evaluate(program, x) for x in inputs]
            if len(set(outputs)) >= self.min_distinct:
                break
        shown = list(zip(inputs, outputs))[: self.n_examples]
        tests = [
            TestCase("call", input=json.dumps(x), expected=json.dumps(y), func_name="f")
            for x, y in zip(inputs[self.n_examples :], outputs[self.n_examples :])
        ]
        public = [
            TestCase("call", input=json.dumps(x), expected=json.dumps(y), func_name="f")
            for x, y in shown
        ]
        uid = f"synthetic:{source(program)}:{inputs}"
        self.programs[uid] = program
        return make_problem(
            uid,
            self.question(shown),
            tests,
            seed=self.split_seed,
            heldout_fraction=self.heldout_fraction,
            func_name="f",
            style="call",
            public_tests=tuple(public),
            data_source="synthetic_code",
        )

    def sample(self, n: int, rng: np.random.Generator, heldout: bool = False) -> list[CodeProblem]:
        """``n`` training problems (``heldout=True``: held-out problems instead)."""
        problems = []
        while len(problems) < n:
            problem = self._draw(rng)
            if problem.heldout_problem == heldout:
                problems.append(problem)
        return problems

    def heldout_set(self, n: int, seed: int = 0) -> list[CodeProblem]:
        """A fixed evaluation set of ``n`` held-out problems."""
        return self.sample(n, np.random.default_rng(seed), heldout=True)

    def reference_code(self, problem: CodeProblem) -> str:
        return source(self.programs[problem.uid])

    def reference_response(self, problem: CodeProblem) -> str:
        """A correct answer in the expected form (a fenced block)."""
        return f"```python\n{self.reference_code(problem)}\n```"


# ---------------------------------------------------------------------------------------------
# The problem in the ecosystem's layouts (any call-style problem)
# ---------------------------------------------------------------------------------------------


def _records(tests) -> list[dict]:
    return [{"input": t.input, "output": t.expected, "testtype": "functional"} for t in tests]


def lcb_row(problem: CodeProblem) -> dict:
    """A LiveCodeBench ``code_generation_lite`` row: private tests as base64(zlib(pickle(JSON
    string))), as LiveCodeBench stores them."""
    private = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(_records(problem.tests)))))
    return {
        "question_id": problem.uid,
        "question_title": problem.uid,
        "question_content": problem.question,
        "platform": "synthetic",
        "starter_code": "def f(x):\n    ",
        "difficulty": "easy",
        "public_test_cases": json.dumps(_records(problem.public_tests)),
        "private_test_cases": private.decode(),
        "metadata": json.dumps({"func_name": problem.func_name}),
    }


def mbpp_row(problem: CodeProblem) -> dict:
    """An MBPP row: the tests as ``assert f(ARGS) == EXPECTED`` lines."""
    lines = []
    for t in problem.tests:
        args = ", ".join(repr(json.loads(a)) for a in t.input.split("\n") if a.strip())
        lines.append(f"assert {t.func_name}({args}) == {json.loads(t.expected)!r}")
    return {
        "task_id": problem.uid,
        "text": problem.question,
        "test_list": lines,
        "test_setup_code": "",
    }
