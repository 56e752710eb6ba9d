"""Tasks: a synthetic verifiable multi-step task and real question/answer datasets.

Both satisfy the `Task` protocol: `sample(n, rng)`, `prompt(problem)`, `grade(problem, text)`,
`first_error(problem, thoughts)` and `has_step_verifier`.

Synthetic task: chained modular arithmetic (`ModularArithmeticTask`)
---------------------------------------------------------------------
A problem is a start value and H operations, e.g. `start 3; +4; *2; -1 (mod 10)`. A correct
solution has one thought per operation, each computing the running value from the previous one:

    3+4=7</thought>7*2=4</thought>4-1=3 \\boxed{3}</thought>

and the last thought boxes the final value. A per-step verifier knows the true first wrong step.
This mirrors the first-error tree of `cpi`: horizon H = number of steps; at each step the policy
writes one of |Y| = modulus candidate values, exactly one of which is correct; once a step is wrong,
later steps computed correctly from the wrong value cannot (except by a lucky modular collision)
recover the right answer. `reference_solution(problem, error_rate, rng)` samples such solutions with
independent per-step errors, giving supervised data with a controllable error rate.

Coverage knob (`hard_steps`, `hard_ops`, `hard_operands`, `easy_operands`). By default every
step's operator is drawn from `ops`. With `hard_steps` set, one step per problem -- at a position
drawn uniformly from `hard_steps` (1-based; a single position fixes it) -- takes its operator from
`hard_ops` (and its operand from `hard_operands`, if given) and all other steps take theirs from
`ops` (and their operands from `easy_operands`, if given: e.g. `(1,)` makes every other step
"+1", which a small model never has to look up in the question). Paired with a warm start whose misconceptions sit only on the hard operators
(`srpo.warmstart.WarmStartConfig.confused_ops`), the position of the step the model tends to get
wrong moves while its difficulty stays the same: an early hard step in a long chain puts the first
error of failed chains near the start (small coverage p of docs/compare.md), a late one near the
end (large p). `experiments/llm_coverage.py` uses it; the default task is unchanged.

Real datasets (`DatasetTask`, `load_dataset_file`)
---------------------------------------------------
Local JSONL or parquet files (plain question/answer fields or the release's parquet layout; see
`srpo.data`), prompted with the release's rollout prompt (paraphrased) and graded per row by
`srpo.graders` (math: equivalence of the last `\\boxed{...}` with the reference by `math_verify`;
multiple-choice letter; yes/no; normalized exact match). There is no per-step verifier:
`first_error` returns None and `has_step_verifier` is False, so the oracle localizer is
unavailable on these tasks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from srpo.thoughts import THOUGHT_DELIMITER, extract_boxed


@dataclass(frozen=True)
class Problem:
    """A question with a reference answer.

    Attributes:
        uid: identifier (unique within its task or file).
        question: the question text.
        answer: the reference answer as a string (for the synthetic task, the final value).
    """

    uid: str
    question: str
    answer: str


@dataclass(frozen=True)
class ModArithProblem(Problem):
    """A chained modular-arithmetic problem.

    Attributes:
        start: start value in `0..modulus-1`.
        ops: H operations `(operator, operand)`, operator in {"+", "-", "*"}.
        modulus: every running value is reduced into `0..modulus-1`.
    """

    start: int = 0
    ops: tuple[tuple[str, int], ...] = ()
    modulus: int = 10

    @property
    def n_steps(self) -> int:
        """H, the number of steps (= thoughts of a correct solution)."""
        return len(self.ops)

    def values(self) -> list[int]:
        """The true running values `[v_0 = start, v_1, ..., v_H]`."""
        values = [self.start]
        for op, operand in self.ops:
            values.append(apply_op(values[-1], op, operand, self.modulus))
        return values


@runtime_checkable
class Task(Protocol):
    """What the trainer needs from a task."""

    has_step_verifier: bool

    def sample(self, n: int, rng: np.random.Generator) -> list[Problem]:
        """n problems drawn with `rng`."""
        ...

    def prompt(self, problem: Problem) -> str:
        """The prompt text shown to the model."""
        ...

    def grade(self, problem: Problem, response_text: str) -> float:
        """1.0 if the response's last boxed answer is correct, else 0.0."""
        ...

    def first_error(self, problem: Problem, thoughts_text: Sequence[str]) -> int | None:
        """1-based index of the first wrong thought, None if none (or no verifier)."""
        ...


def apply_op(value: int, op: str, operand: int, modulus: int) -> int:
    """`(value op operand) mod modulus`, in `0..modulus-1`."""
    if op == "+":
        return (value + operand) % modulus
    if op == "-":
        return (value - operand) % modulus
    if op == "*":
        return (value * operand) % modulus
    raise ValueError(f"op must be one of '+', '-', '*', got {op!r}")


_STEP_PATTERN = re.compile(r"^\s*(\d+)\s*([+\-*])\s*(\d+)\s*=\s*(\d+)\s*(.*?)\s*$", re.DOTALL)
_INTEGER = re.compile(r"^\s*-?\d+\s*$")
_FINAL_BOX = re.compile(r"\\boxed\s*\{\s*(\d+)\s*\}")


def format_step(left: int, op: str, operand: int, value: int, final: bool) -> str:
    """One thought of a solution, delimiter included, e.g. `3+4=7</thought>`.

    The final thought also boxes its value: `4-1=3 \\boxed{3}</thought>`.
    """
    body = f"{left}{op}{operand}={value}"
    if final:
        body += f" \\boxed{{{value}}}"
    return body + THOUGHT_DELIMITER


@dataclass
class ModularArithmeticTask:
    """Chained modular arithmetic with a per-step verifier.

    Attributes:
        n_steps: H, operations per problem (>= 1).
        modulus: values live in `0..modulus-1` (>= 2); |Y| = modulus candidates per step.
        ops: operator set (difficulty: "+" only is easiest, "*" hardest); with `hard_steps`,
            the operators of every step but the hard one.
        prompt_template: format string with `{question}`.
        hard_steps: 1-based positions the hard step may take, one drawn uniformly per problem
            (`(3,)` fixes it at step 3); empty (default): no hard step, every operator from `ops`.
        hard_ops: operators of the hard step (used only with `hard_steps`).
        hard_operands: operands of the hard step (empty: `1..modulus-1`; only with `hard_steps`).
        easy_operands: operands of the other steps (empty: `1..modulus-1`; only with
            `hard_steps`).
        hard_fraction: probability that a problem has the hard step at all (the ladder's
            coverage knob, issue 19: the hard step appears on some problems only, with the same
            per-visit difficulty; the others keep their drawn easy operator there). 1 (default):
            every problem has it, and the draws are exactly those of before this field.
        eval_hard_only: ``sample_eval`` draws problems that all have the hard step (the
            held-out J then measures the one thing RL can improve); ``sample`` is unchanged.
    """

    n_steps: int = 4
    modulus: int = 10
    ops: tuple[str, ...] = ("+", "-", "*")
    prompt_template: str = "{question}\n"
    hard_steps: tuple[int, ...] = ()
    hard_ops: tuple[str, ...] = ("*",)
    hard_operands: tuple[int, ...] = ()
    easy_operands: tuple[int, ...] = ()
    hard_fraction: float = 1.0
    eval_hard_only: bool = False
    has_step_verifier: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        if self.n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {self.n_steps}")
        if self.modulus < 2:
            raise ValueError(f"modulus must be >= 2, got {self.modulus}")
        if not self.ops or any(op not in ("+", "-", "*") for op in self.ops):
            raise ValueError(f"ops must be a non-empty subset of ('+', '-', '*'), got {self.ops!r}")
        self.ops = tuple(self.ops)
        if not self.hard_ops or any(op not in ("+", "-", "*") for op in self.hard_ops):
            raise ValueError(
                f"hard_ops must be a non-empty subset of ('+', '-', '*'), got {self.hard_ops!r}")
        self.hard_ops = tuple(self.hard_ops)
        if isinstance(self.hard_steps, int):
            self.hard_steps = (self.hard_steps,)
        self.hard_steps = tuple(self.hard_steps)
        for position in self.hard_steps:
            if isinstance(position, bool) or not isinstance(position, int | np.integer) or not (
                    1 <= position <= self.n_steps):
                raise ValueError(
                    f"hard_steps must hold positions in 1..n_steps={self.n_steps}, "
                    f"got {self.hard_steps!r}")
        self.hard_steps = tuple(int(x) for x in self.hard_steps)
        for name in ("hard_operands", "easy_operands"):
            values = tuple(int(x) for x in getattr(self, name))
            if any(not 1 <= x < self.modulus for x in values):
                raise ValueError(f"{name} must lie in 1..modulus-1={self.modulus - 1}, got "
                                 f"{getattr(self, name)!r}")
            setattr(self, name, values)
        if not 0.0 <= float(self.hard_fraction) <= 1.0:
            raise ValueError(f"hard_fraction must be in [0, 1], got {self.hard_fraction!r}")
        if self.hard_fraction < 1.0 and not self.hard_steps:
            raise ValueError("hard_fraction < 1 needs hard_steps (the hard step to leave out)")

    def make_problem(self, start: int, ops: Sequence[tuple[str, int]], uid: str = "") -> ModArithProblem:
        """A problem from explicit values (question and answer derived)."""
        ops = tuple((str(op), int(operand)) for op, operand in ops)
        steps = "; ".join(f"{op}{operand}" for op, operand in ops)
        question = f"start {start}; {steps} (mod {self.modulus})"
        value = start
        for op, operand in ops:
            value = apply_op(value, op, operand, self.modulus)
        return ModArithProblem(
            uid=uid or question, question=question, answer=str(value),
            start=int(start), ops=ops, modulus=self.modulus,
        )

    def sample(self, n: int, rng: np.random.Generator) -> list[ModArithProblem]:
        """n random problems: start uniform in `0..m-1`, operators uniform over `ops`, operands
        uniform in `1..m-1` (so no step is the identity "+0" or the collapse "*0").

        With `hard_steps`, the hard step's position is uniform over `hard_steps` and its operator
        uniform over `hard_ops` (drawn after the other steps, so the rest of the problem does not
        depend on where the hard step goes); without, the draws are exactly those of the plain
        task."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        problems = []
        for _ in range(n):
            start = int(rng.integers(0, self.modulus))
            op_index = rng.integers(0, len(self.ops), size=self.n_steps)
            if self.hard_steps and self.easy_operands:
                pick = rng.integers(0, len(self.easy_operands), size=self.n_steps)
                operands = [self.easy_operands[int(i)] for i in pick]
            else:
                operands = rng.integers(1, self.modulus, size=self.n_steps)
            ops = [(self.ops[int(i)], int(x)) for i, x in zip(op_index, operands)]
            if self.hard_steps:
                position = self.hard_steps[int(rng.integers(0, len(self.hard_steps)))]
                hard = self.hard_ops[int(rng.integers(0, len(self.hard_ops)))]
                operand = ops[position - 1][1]
                if self.hard_operands:
                    operand = self.hard_operands[int(rng.integers(0, len(self.hard_operands)))]
                easy = ops[position - 1]
                ops[position - 1] = (hard, operand)
                if self.hard_fraction < 1.0 and rng.random() >= self.hard_fraction:
                    ops[position - 1] = easy  # this problem has no hard step
            problems.append(self.make_problem(start, ops))
        return problems

    def sample_eval(self, n: int, rng: np.random.Generator) -> list[ModArithProblem]:
        """The evaluation problems: ``sample``, or with ``eval_hard_only`` problems that all have
        the hard step (drawn as with ``hard_fraction = 1``)."""
        if not self.eval_hard_only:
            return self.sample(n, rng)
        import dataclasses

        return dataclasses.replace(self, hard_fraction=1.0, eval_hard_only=False).sample(n, rng)

    def hard_step_of(self, problem: ModArithProblem) -> int | None:
        """1-based position of the problem's hard step: the only step whose operator is in
        `hard_ops` but not in `ops` (None without `hard_steps`, or if that is ambiguous)."""
        if not self.hard_steps:
            return None
        only_hard = [i for i, (op, _x) in enumerate(problem.ops, start=1)
                     if op in self.hard_ops and op not in self.ops]
        return only_hard[0] if len(only_hard) == 1 else None

    def prompt(self, problem: Problem) -> str:
        return self.prompt_template.format(question=problem.question)

    def grade(self, problem: Problem, response_text: str) -> float:
        """1.0 iff the last `\\boxed{...}` holds an integer equal to the answer."""
        boxed = extract_boxed(response_text)
        if boxed is None or not _INTEGER.match(boxed):
            return 0.0
        return 1.0 if int(boxed) == int(problem.answer) else 0.0

    def first_error(self, problem: ModArithProblem, thoughts_text: Sequence[str]) -> int | None:
        """1-based index of the first wrong thought, or None if the solution is fully correct.

        Thought i (1..H) is correct iff it reads `v_{i-1} op_i operand_i = v_i` with the true
        values (an optional trailing delimiter is ignored), carries no `\\boxed{}` for i < H, and
        for i = H boxes exactly v_H. An unparseable thought is wrong. If all written thoughts are
        correct but fewer than H were written, the first missing step `len(thoughts_text) + 1` is
        returned (callers that clamp to `1..n` get n); a thought after step H is wrong (H + 1).
        None implies `grade(...) == 1.0` for the concatenated text.
        """
        values = problem.values()
        horizon = problem.n_steps
        for index, text in enumerate(thoughts_text, start=1):
            if index > horizon:
                return index
            body = text.replace(THOUGHT_DELIMITER, " ")
            match = _STEP_PATTERN.match(body)
            if match is None:
                return index
            left, op, operand, value, rest = match.groups()
            op_true, operand_true = problem.ops[index - 1]
            if (int(left), op, int(operand), int(value)) != (
                values[index - 1], op_true, operand_true, values[index]
            ) or str(int(value)) != value:
                return index
            if index < horizon:
                if rest:
                    return index
            else:
                final = _FINAL_BOX.fullmatch(rest)
                if final is None or int(final.group(1)) != values[index]:
                    return index
        if len(thoughts_text) < horizon:
            return len(thoughts_text) + 1
        return None

    def reference_solution(
        self, problem: ModArithProblem, error_rate: float, rng: np.random.Generator
    ) -> list[str]:
        """Thoughts of a solution in which each step is independently wrong with prob. error_rate.

        A wrong step writes a value drawn uniformly from the `modulus - 1` wrong values (relative
        to a correct computation from the previous written value); later steps compute correctly
        from the written (possibly wrong) value, so errors propagate. The last thought boxes the
        last written value. Each returned string ends with the delimiter.
        """
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
        thoughts = []
        previous = problem.start
        for index, (op, operand) in enumerate(problem.ops, start=1):
            value = apply_op(previous, op, operand, problem.modulus)
            if rng.random() < error_rate:
                shift = int(rng.integers(1, problem.modulus))
                value = (value + shift) % problem.modulus
            thoughts.append(format_step(previous, op, operand, value, final=index == problem.n_steps))
            previous = value
        return thoughts


# ------------------------------------------------------------------------------------------------
# Real datasets
# ------------------------------------------------------------------------------------------------

from srpo.graders import math_equivalent  # noqa: E402, F401  (kept importable from here)

#: Our paraphrase of the release's rollout prompt (no chat template is applied to rollouts).
RELEASE_ROLLOUT_PROMPT = (
    "Solve the problem below one step at a time. Make each step a self-contained observation, "
    "calculation or deduction that moves the solution forward, has real substance and follows "
    "from the steps before it. End every step with </thought>. When a step reaches the final "
    "answer, put the answer in \\boxed{{}} and close that step with </thought> as well.\n"
    "Q: {question}\n"
)


@dataclass
class DatasetTask:
    """Question/answer problems from a file, each graded by its grader (``srpo.graders``).

    Attributes:
        problems: the problems (see ``srpo.data.read_problems``); a problem without a ``grader``
            attribute is graded as math.
        prompt_template: format string with ``{question}`` (default: the release's rollout
            prompt, paraphrased).
    """

    problems: list[Problem]
    prompt_template: str = RELEASE_ROLLOUT_PROMPT
    has_step_verifier: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if not self.problems:
            raise ValueError("problems must be non-empty, got []")

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> DatasetTask:
        """``DatasetTask(load_dataset_file(path), **kwargs)``."""
        return cls(load_dataset_file(path), **kwargs)

    def sample(self, n: int, rng: np.random.Generator) -> list[Problem]:
        """n problems, without replacement when n <= len(problems), with replacement otherwise.

        (Training on a file goes through it by epochs instead: ``srpo.data.EpochSampler``.)
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        replace = n > len(self.problems)
        indices = rng.choice(len(self.problems), size=n, replace=replace)
        return [self.problems[int(i)] for i in indices]

    def prompt(self, problem: Problem) -> str:
        return self.prompt_template.format(question=problem.question)

    def grade(self, problem: Problem, response_text: str) -> float:
        """1.0 iff the response answers the problem under its grader (math: the last
        ``\\boxed{...}`` is equivalent to the reference by ``math_verify``)."""
        from srpo.graders import grade

        grader = getattr(problem, "grader", "math")
        if grader == "code":  # srpo.graders' code grader reads the held-out tests
            raise ValueError("code problems are trained on with task_type='code' (llm_srpo.py "
                             "--task-type code): rewards come from the reward tests in the "
                             "sandbox (srpo.code.task.CodeTask), not from this grader, which "
                             "reads the held-out tests")
        return grade(grader, problem.answer, response_text)

    def first_error(self, problem: Problem, thoughts_text: Sequence[str]) -> int | None:
        """Not available: real datasets have no per-step verifier. Always None."""
        return None


def load_dataset_file(path: str | Path, question_field: str | None = None,
                      answer_field: str | None = None, grader: str | None = None) -> list[Problem]:
    """Read problems from a local ``.jsonl`` / ``.json`` / ``.parquet`` file.

    See ``srpo.data.read_problems`` (field names, the release's parquet layout, graders, errors).
    """
    from srpo.data import read_problems

    return list(read_problems(path, question_field, answer_field, grader))
