"""The codec, scorer and localizers a tabular policy brings to ``srpo.methods.RolloutContext``.

* ``ThoughtCodec``: prompt ids from the MDP, thought texts of a chain (the arithmetic MDP writes
  them as the language model does, so the task's step verifier and the localizers read the same
  texts), the question, and the reset prefix cut on thought ids (one id per thought, so the cut
  is always exact).
* ``ThoughtScorer``: ``(reward, correct)`` of a chain from its thought ids (no text): the task's
  grade on the arithmetic MDP (1 iff the last written value is the answer), the path reward on a
  tree; ``correct = reward > 0.5`` as ``srpo.methods.TaskScorer`` decides.
* ``SetLocalizer``: the self-localizer of the theory's section 4 with a *set* precision 1 - beta
  and recall gamma (SRPO on the tabular rung; the language model's own values, measured before RL,
  are passed in): given a failed parent with true first error f (the task's verifier) it answers
  with probability gamma, else falls back to step 1 (the release's fallback, counted); an answer
  is clean with probability 1 - beta (k = f) and otherwise lands uniformly on a step after f
  (k in f+1..n; with f = n there is none, so the answer is clean). Its realised precision and
  recall are measured from the reset events like the language model's
  (``experiments.comparison.stats.selector_quality``).
"""

from __future__ import annotations

from srpo.localize import LocalizationResult, _Localizer
from srpo.methods.base import PrefixCut, Score

__all__ = ["ThoughtCodec", "ThoughtScorer", "SetLocalizer"]


class ThoughtCodec:
    """Token ids are thought ids (module docstring)."""

    def __init__(self, mdp) -> None:
        self.mdp = mdp

    def prompt_ids(self, problem) -> list[int]:
        return self.mdp.prompt_ids(problem)

    def question(self, problem) -> str:
        return getattr(problem, "question", "")

    def thoughts(self, chain) -> list[str]:
        return self.mdp.thought_texts(chain.prompt_ids, chain.response_ids)

    def cut_prefix(self, chain, k: int) -> PrefixCut:
        """Thoughts 1..k-1: the first k-1 ids, one span each."""
        n = len(chain.response_ids)
        if not 1 <= k <= n + 1:
            raise ValueError(f"k must be in 1..{n + 1} (n = {n} thoughts), got {k}")
        return PrefixCut(list(chain.response_ids[: k - 1]), [(i, i + 1) for i in range(k - 1)])

    def followup_ids(self, prompt_ids, response_ids, message):
        raise ValueError(
            "method: a tabular policy has no follow-up prompts; use grpo, rrpo, "
            "srpo, oracle (or another single-prompt method)"
        )


class ThoughtScorer:
    """``(reward, correct)`` from thought ids (module docstring)."""

    def __init__(self, mdp) -> None:
        self.mdp = mdp
        self._tree = not hasattr(mdp, "problem_arrays")

    def score(self, problem, chain) -> Score:
        if self._tree:
            reward = self.mdp.path_reward(problem.root, chain.response_ids)
        else:
            reward = self.mdp.reward(problem, chain.response_ids)
        return Score(reward, reward > 0.5)


class SetLocalizer(_Localizer):
    """SRPO's localizer with a set precision ``1 - beta`` and recall ``gamma`` (module docstring).

    Args:
        task: the task whose ``first_error(problem, thoughts)`` is the truth.
        beta: false-discovery rate of an answer, in [0, 1].
        gamma: probability of answering (else the step-1 fallback), in [0, 1].
    """

    name = "self"

    def __init__(self, task, beta: float = 0.0, gamma: float = 1.0) -> None:
        super().__init__()
        for label, v in (("beta", beta), ("gamma", gamma)):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{label} must be in [0, 1]; got {v!r}")
        if not getattr(task, "has_step_verifier", False):
            raise ValueError("SetLocalizer needs a task with a step verifier (first_error)")
        self.task, self.beta, self.gamma = task, float(beta), float(gamma)

    def _locate(self, parents, rng, **kw):
        out = []
        for p in parents:
            fe = self.task.first_error(p.problem, p.thoughts)
            f = p.n if fe is None else min(max(int(fe), 1), p.n)
            answer, wrong, later = rng.random(), rng.random(), rng.integers(0, 1 << 30)
            if answer >= self.gamma:
                out.append(LocalizationResult(1, "fallback_step1"))
            elif wrong < self.beta and f < p.n:
                out.append(LocalizationResult(int(f + 1 + later % (p.n - f)), "boxed", raw=None))
            else:
                out.append(LocalizationResult(int(f), "boxed", raw=int(f)))
        return out
