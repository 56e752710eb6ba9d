"""A coding task the warm-started tiny CPU model can learn (``TrainConfig.task = "synthetic_code"``).

A problem is a hidden one-operation function over the grammar of ``srpo.code.synthetic`` (depth
1 over ``TINY_OPS``: ``x + c``, ``x - c``, ``x * c``, ``max(x, c)``, ``min(x, c)``, c in 1..9;
45 programs), shown at the fixed inputs ``SHOWN_INPUTS`` and tested on 8
other inputs of 0..20 (4 reward tests, 4 held-out tests; some problems held out whole). The
prompt is compact (the tiny model reads characters)::

    Write f(x) with f(0)=4, f(1)=5, f(3)=7, f(7)=11, f(12)=16.

and a solution has three thoughts: the operation, the constant, the code in a fenced block (on its own
line: a fence line starts a line)::

    op +</thought>c 4</thought>
    ```
    def f(x): return x + 4
    ```</thought>

The reward is the fraction of reward tests passed *in the sandbox* (a wrong constant often
keeps partial credit: ``max(x, 5)`` for ``max(x, 4)``), exactly as for a real coding file
(``srpo.code.task.CodeTask``). Unlike real problems this one has a step verifier
(``first_error``: the first thought that differs from the generator's program; an equivalent
program written differently counts as an error there, never in the reward), so the oracle
localizer and the localization warm-start examples work on it.

``CodeMisconceptionWriter`` writes warm-start solutions with misconceptions, as
``srpo.warmstart.MisconceptionWriter`` does for arithmetic: a fixed seeded subset of the
programs is *confused* (a fixed wrong constant written with probability ``confusion_prob``), so
the greedy warm-started policy fails on them while the right constant keeps a fair sampling
probability: RL has something to learn.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from srpo.code.problem import CodeProblem
from srpo.code.synthetic import BINARY, SyntheticCodeTask, evaluate
from srpo.code.task import CodeTask
from srpo.thoughts import THOUGHT_DELIMITER

__all__ = [
    "TinyCodeTask",
    "CodeMisconceptionWriter",
    "SHOWN_INPUTS",
    "TINY_STEPS",
    "TINY_OPS",
    "solution_thoughts",
    "all_programs",
]

#: the inputs shown in every question (spread so that most programs are identifiable)
SHOWN_INPUTS = (0, 1, 3, 7, 12)
#: the operations of the tiny task (``//``, ``%`` and ``abs`` are left out: the tiny model cannot
#: tell their constants from five examples after a short warm start)
TINY_OPS = ("+", "-", "*", "max", "min")
#: thoughts of a solution: operation, constant, code
TINY_STEPS = 3
OP_NAMES = {
    "+": "+",
    "-": "-",
    "*": "*",
    "//": "//",
    "%": "%",
    "max": "max",
    "min": "min",
    "absdiff": "abs",
}
_SOURCE = re.compile(r"return (?:x (\+|-|\*|//|%) (\d+)|(max|min)\(x, (\d+)\)|abs\(x - (\d+)\))")


def all_programs(ops: tuple[str, ...] = TINY_OPS) -> list[tuple]:
    """Every depth-1 program over ``ops``: ``(op, ("x",), c)``."""
    out = []
    for op in ops:
        low = 2 if op in ("//", "%") else 1
        out.extend((op, ("x",), c) for c in range(low, 10))
    return out


def _expr(op: str, c: int) -> str:
    if op in BINARY:
        return f"x {op} {c}"
    if op == "absdiff":
        return f"abs(x - {c})"
    return f"{op}(x, {c})"


def solution_thoughts(op: str, c: int, code_c: int | None = None) -> list[str]:
    """The three thoughts of a solution (each with its delimiter); ``code_c``: the constant
    the code uses (default ``c``)."""
    code_c = c if code_c is None else code_c
    return [
        f"op {OP_NAMES[op]}{THOUGHT_DELIMITER}",
        f"c {c}{THOUGHT_DELIMITER}",
        f"\n```\ndef f(x): return {_expr(op, code_c)}\n```{THOUGHT_DELIMITER}",
    ]


def program_of(problem: CodeProblem) -> tuple[str, int]:
    """``(op, c)`` of a tiny problem, read from its uid (``synthetic:<source>:<inputs>``)."""
    match = _SOURCE.search(problem.uid)
    if match is None:
        raise ValueError(f"not a depth-1 synthetic problem: {problem.uid!r}")
    binary, c1, call, c2, c3 = match.groups()
    if binary:
        return binary, int(c1)
    if call:
        return call, int(c2)
    return "absdiff", int(c3)


@dataclass
class TinyCodeTask(CodeTask):
    """The tiny coding task (module docstring): problems drawn, graded in the sandbox.

    Attributes:
        generator: the problem family (depth 1, ``SHOWN_INPUTS``, 8 tests over 0..20).
        (the rest as ``CodeTask``; ``problems`` is unused: problems are drawn.)
    """

    problems: list | None = None
    generator: SyntheticCodeTask = field(
        default_factory=lambda: SyntheticCodeTask(
            depth=1,
            shown_inputs=SHOWN_INPUTS,
            n_tests=8,
            max_input=20,
            min_distinct=3,
            ops=TINY_OPS,
        )
    )

    def __post_init__(self) -> None:
        self.has_step_verifier = True

    def sample(self, n: int, rng: np.random.Generator) -> list[CodeProblem]:
        """n training problems (held-out problems of the problem split are skipped)."""
        return self.generator.sample(n, rng)

    def eval_problems(self, n: int, seed: int) -> list[CodeProblem]:
        """n held-out problems (all their tests unseen), drawn with ``seed``."""
        return self.generator.heldout_set(n, seed)

    def question(self, problem: CodeProblem) -> str:
        shown = ", ".join(f"f({t.input})={t.expected}" for t in problem.public_tests)
        return f"Write f(x) with {shown}."

    def prompt(self, problem: CodeProblem) -> str:
        return self.question(problem) + "\n"

    def first_error(self, problem: CodeProblem, thoughts_text: Sequence[str]) -> int | None:
        """1-based index of the first thought that differs from the generator's program (the
        three thoughts of ``solution_thoughts``); ``len + 1`` if all written ones are right but
        fewer than three; None if all three are right."""
        op, c = program_of(problem)
        expected = solution_thoughts(op, c)
        for index, text in enumerate(thoughts_text, start=1):
            if index > TINY_STEPS:
                return index
            want = expected[index - 1].replace(THOUGHT_DELIMITER, "").strip()
            if text.replace(THOUGHT_DELIMITER, "").strip() != want:
                return index
        if len(thoughts_text) < TINY_STEPS:
            return len(thoughts_text) + 1
        return None

    def writer_failed(self, problem: CodeProblem, thoughts: Sequence[str]) -> bool:
        """Whether a written solution is wrong (the warm start's data; no sandbox needed: the
        step verifier decides)."""
        return self.first_error(problem, thoughts) is not None


class CodeMisconceptionWriter:
    """Writes tiny-task solutions with a fixed table of confused programs (module docstring).

    Args:
        confused_fraction: fraction of the programs that are confused.
        confusion_prob: probability that a confused program is written with its wrong constant.
        noise_error_rate: extra i.i.d. probability of a wrong operation and of a wrong constant.
        seed: seeds the table.
    """

    def __init__(
        self, confused_fraction: float, confusion_prob: float, noise_error_rate: float, seed: int
    ) -> None:
        self.confusion_prob, self.noise = confusion_prob, noise_error_rate
        rng = np.random.default_rng([seed, 7927])
        self.wrong_constant: dict[tuple[str, int], int] = {}
        for op, _x, c in all_programs():
            if rng.random() < confused_fraction:
                low = 2 if op in ("//", "%") else 1
                choices = [v for v in range(low, 10) if v != c]
                self.wrong_constant[(op, c)] = int(choices[int(rng.integers(0, len(choices)))])

    def solution(
        self, problem: CodeProblem, rng: np.random.Generator, extra_error: float = 0.0
    ) -> list[str]:
        """Thoughts of one solution; a wrong operation or constant carries into the code."""
        op, c = program_of(problem)
        if rng.random() < self.noise + extra_error:
            others = [o for o in TINY_OPS if o != op]
            op = others[int(rng.integers(0, len(others)))]
            if op in ("//", "%") and c < 2:
                c = 2
        wrong = self.wrong_constant.get((op, c))
        if wrong is not None and rng.random() < self.confusion_prob:
            c = wrong
        elif rng.random() < self.noise + extra_error:
            low = 2 if op in ("//", "%") else 1
            choices = [v for v in range(low, 10) if v != c]
            c = int(choices[int(rng.integers(0, len(choices)))])
        return solution_thoughts(op, c)


def reference_value(problem: CodeProblem, x: int) -> int:
    """The hidden function's value at ``x`` (our own tree; no code is executed)."""
    op, c = program_of(problem)
    return evaluate((op, ("x",), c), x)
