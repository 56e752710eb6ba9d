"""The ``code`` task type of training (``TrainConfig.task_type = "code"``, docs/code.md).

A ``CodeTask`` trains on coding problems (``srpo.code.problem.CodeProblem``) as the release does:

- the response's code is the text between its last two fence lines (``extract_code``);
- reward = the fraction of the problem's *reward* tests (its 50/50 training half) passed in the
  sandbox, the advantage's raw reward; correct = all of them pass (the release's threshold 1.0,
  which picks the failed parents of the reset methods);
- ``J`` (``eval_scores``, read by ``srpo.trainer.evaluate``) = the fraction of the *held-out*
  tests passed: the held-out half of a training problem's tests, or every test of a held-out
  problem. The release's validation reads the reward tests instead (docs/code.md).

Grading goes through one ``CodeGrader`` (``isolation="program"``: every test of a response in one
sandboxed run, each test on its own clock; ``srpo.code.batch``), a whole batch at a time
(``score_many``: the methods call it through ``srpo.methods.base.score_all``).

``TinyCodeTask`` (``srpo.code.tiny``) subclasses it for the warm-started tiny CPU model: its
problems are drawn, not read, and it has a step verifier (the oracle's first error).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from srpo.code.grading import CodeGrader
from srpo.code.problem import CodeProblem
from srpo.code.sandbox import SandboxConfig

__all__ = ["CodeTask", "CODE_ROLLOUT_PROMPT", "training_grader"]

#: Our rollout prompt for code: the release's step rules (``srpo.tasks.RELEASE_ROLLOUT_PROMPT``,
#: paraphrased), with the final step holding the code in a fenced block instead of a box.
CODE_ROLLOUT_PROMPT = (
    "Solve the problem below one step at a time. Make each step a self-contained observation, "
    "plan or deduction that moves the solution forward, has real substance and follows from the "
    "steps before it. End every step with </thought>. In the final step, write the complete "
    "solution in one ```python code block and close that step with </thought> as well.\n"
    "Q: {question}\n"
)


def training_grader(workers: int = 2, config: SandboxConfig | None = None) -> CodeGrader:
    """The grader of training rewards: the release's limits (10 s per test) and every test of a
    response in one sandboxed run (``isolation="program"``)."""
    return CodeGrader(config, workers=workers, isolation="program")


@dataclass
class CodeTask:
    """Coding problems graded by their tests in the sandbox.

    Attributes:
        problems: the training problems (their ``reward_tests`` give the reward).
        grader: the sandboxed grader (default ``training_grader()``, created on first use).
        prompt_template: format string with ``{question}`` (default ``CODE_ROLLOUT_PROMPT``).
        workers: sandboxed runs at a time of the default grader.
    """

    problems: list[CodeProblem]
    grader: CodeGrader | None = None
    prompt_template: str = CODE_ROLLOUT_PROMPT
    workers: int = 2
    has_step_verifier: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if not self.problems:
            raise ValueError("problems must be non-empty, got []")
        bad = [p.uid for p in self.problems if not p.reward_tests]
        if bad:
            raise ValueError(f"problems without reward tests (held-out problems?): {bad[:3]}")

    @property
    def sandbox_grader(self) -> CodeGrader:
        if self.grader is None:
            self.grader = training_grader(self.workers)
        return self.grader

    def close(self) -> None:
        if self.grader is not None:
            self.grader.close()

    # ---- the Task protocol ------------------------------------------------------------------

    def sample(self, n: int, rng: np.random.Generator) -> list[CodeProblem]:
        """n problems, without replacement when n <= len(problems)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        indices = rng.choice(len(self.problems), size=n, replace=n > len(self.problems))
        return [self.problems[int(i)] for i in indices]

    def question(self, problem: CodeProblem) -> str:
        from srpo.code.formats import question_text

        return question_text(problem)

    def prompt(self, problem: CodeProblem) -> str:
        return self.prompt_template.format(question=self.question(problem))

    def score_many(
        self, problems: Sequence[CodeProblem], texts: Sequence[str]
    ) -> list[tuple[float, bool]]:
        """``(reward, correct)`` per response on its problem's reward tests, graded together."""
        return self.sandbox_grader.rewards(list(texts), list(problems))

    def score(self, problem: CodeProblem, text: str) -> tuple[float, bool]:
        return self.score_many([problem], [text])[0]

    def grade(self, problem: CodeProblem, response_text: str) -> float:
        """The reward: the fraction of the reward tests passed."""
        return self.score(problem, response_text)[0]

    def eval_scores(self, problems: Sequence[CodeProblem], texts: Sequence[str]) -> list[float]:
        """Per response: the fraction of its problem's held-out tests passed (``eval_tests``)."""
        reports = self.sandbox_grader.evaluate_many(list(texts), list(problems))
        return [r.reward for r in reports]

    def first_error(self, problem, thoughts_text: Sequence[str]) -> int | None:
        """Not available on real coding problems: no per-step verifier. Always None."""
        return None
