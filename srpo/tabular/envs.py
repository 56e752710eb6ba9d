"""Tabular environments: a thought MDP, its initial policy and its exact held-out evaluation.

* ``arithmetic_env``: the language model's task (``srpo.tasks.ModularArithmeticTask``) as a
  thought MDP, with the initial policy of the warm start's data: a *confused* fact
  ``(left, op, operand)`` (``srpo.warmstart.MisconceptionWriter``'s table) writes its one wrong
  value with probability ``confusion_prob``; every step otherwise errs with probability
  ``easy_error``, uniformly over the wrong values. Evaluation: the exact success probability on
  fixed held-out problems (``J``) and on those with the hard step (``J_hard``).
* ``tree_env``: a ``cpi.TreeMDP`` (first-error trees, forests), its ``meta["initial_policy"]``,
  evaluated exactly by ``cpi.value``.
"""

from __future__ import annotations

import numpy as np

from srpo.tabular.mdp import ArithmeticThoughtMDP, TreeTask, TreeThoughtMDP
from srpo.tabular.policy import log_probabilities
from srpo.tabular.train import TabularEnv

__all__ = ["arithmetic_env", "misconception_probabilities", "tree_env"]


def misconception_probabilities(
    mdp: ArithmeticThoughtMDP, wrong_value: dict, confusion_prob: float, easy_error: float
) -> np.ndarray:
    """(S, A) initial policy of the arithmetic MDP (module docstring); the same at every step
    index and clean flag (the warm start's data do not depend on them)."""
    m = mdp.m
    probs = np.zeros((mdp.n_states, m))
    for h in range(mdp.H):
        for oi, (op, x) in enumerate(mdp.op_vocab):
            for v in range(m):
                right = (mdp._mul[oi] * v + mdp._add[oi]) % m
                row = np.full(m, easy_error / (m - 1))
                row[right] = 1.0 - easy_error
                wrong = wrong_value.get((v, op, x))
                if wrong is not None:
                    row = (1.0 - confusion_prob) * row
                    row[wrong] += confusion_prob
                for clean in (0, 1):
                    probs[mdp.state_index(h, oi, v, clean)] = row
    return probs


def arithmetic_env(
    task,
    wrong_value: dict,
    confusion_prob: float,
    easy_error: float,
    eval_problems: list,
    info: dict | None = None,
) -> TabularEnv:
    """The arithmetic thought MDP of ``task`` as a ``TabularEnv`` (module docstring).

    Args:
        task: a ``ModularArithmeticTask``.
        wrong_value: ``{(left, op, operand): wrong value}`` of the confused facts.
        confusion_prob, easy_error: the initial policy's error rates (module docstring).
        eval_problems: fixed held-out problems of ``J`` (``J_hard``: those with a hard step).
        info: facts copied into every metrics row.
    """
    mdp = ArithmeticThoughtMDP(task)
    probs0 = misconception_probabilities(mdp, wrong_value, confusion_prob, easy_error)
    prompts = np.array([mdp.prompt_ids(p) for p in eval_problems], dtype=np.int64)
    hard = np.array([task.hard_step_of(p) is not None for p in eval_problems], dtype=bool)

    def evaluate(probs: np.ndarray) -> dict:
        success = mdp.success_probability(probs, prompts)
        out = {"J": float(success.mean())}
        if hard.any():
            out["J_hard"] = float(success[hard].mean())
        return out

    return TabularEnv(mdp, task, log_probabilities(probs0), evaluate, dict(info or {}))


def tree_env(tree, info: dict | None = None) -> TabularEnv:
    """A ``cpi.TreeMDP`` as a ``TabularEnv``: initial policy ``meta["initial_policy"]`` (uniform
    without one), ``J`` = the exact value ``cpi.value``."""
    from cpi import value

    mdp = TreeThoughtMDP(tree)
    pol0 = tree.meta.get("initial_policy")
    pol0 = tree.uniform_policy() if pol0 is None else np.asarray(pol0)

    def evaluate(probs: np.ndarray) -> dict:
        return {"J": float(value(tree, probs))}

    return TabularEnv(mdp, TreeTask(mdp), log_probabilities(pol0), evaluate, dict(info or {}))
