"""One exact CPI iteration assembled from the core's pieces (for the improvement-type experiments).

``exact_iteration`` follows the package convention of ``cpi.step_rules``: the update is
``pi_{k+1}(x) = pi_k(x) + alpha s(x) (pi'(x) - pi_k(x))`` with ``pi'`` greedy in the exact Q,
``s`` the reset rule's per-visit selection (:func:`cpi.selectors.selection`: 1 for random, the
indicator of G for the oracle, gamma / q for the approximate selector) and ``alpha`` either the
theory step of each method (:func:`cpi.step_rules.theory_step` on the exact policy advantage over
the selected states), the paper-form step (:func:`cpi.step_rules.paper_step`, K&L's constants
translated to the finite horizon as THEORY.md section 2 does) or the exact line search. Everything is exact (no sampling), so it measures
what the theorem's improvement column predicts without estimation noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpi.evaluation import advantage, evaluate, greedy_policy, improvable_set, occupancy, value
from cpi.mdp import TabularMDP
from cpi.selectors import reset_distribution, selection
from cpi.step_rules import (
    advantage_bound,
    guaranteed_improvement,
    line_search,
    paper_step,
    theory_step,
)


@dataclass(frozen=True)
class IterationResult:
    """One exact iteration: the new policy and its accounting (reward units, probabilities)."""

    policy: np.ndarray
    J_before: float
    J_after: float
    alpha: float
    adv_on_update: float
    update_mass: float
    p_mass: float
    precision: float
    recall: float
    guaranteed: float = float("nan")

    @property
    def improvement(self) -> float:
        return self.J_after - self.J_before


def _mix(mdp, policy, target, s_flat, alpha):
    A = mdp.n_actions
    w = (alpha * s_flat)[:, None]
    flat = policy.reshape(-1, A) * (1 - w) + target.reshape(-1, A) * w
    return flat.reshape(policy.shape)


def exact_iteration(mdp, policy, rule: str, tau: float, step: str = "theory",
                    beta: float = 0.0, gamma: float = 1.0) -> IterationResult:
    """One CPI iteration with exact advantages (``step``: ``"theory"``, ``"paper"`` or
    ``"line_search"``)."""
    policy = np.asarray(policy, dtype=np.float64)
    if isinstance(mdp, TabularMDP) and policy.ndim == 2:
        policy = np.broadcast_to(policy, mdp.policy_shape()).copy()
    V, Q = evaluate(mdp, policy)
    A = mdp.n_actions
    target = greedy_policy(mdp, Q)
    occ = occupancy(mdp, policy)
    d = reset_distribution(mdp, policy, occ)
    G = improvable_set(mdp, policy, tau, V, Q).ravel()
    sel = selection(rule, G, d, beta, gamma)
    gain = (advantage(mdp, policy, V, Q).reshape(-1, A) * target.reshape(-1, A)).sum(axis=1)
    w = d * sel.s
    adv_u = float((w * gain).sum() / w.sum()) if w.sum() > 0 else 0.0
    J0 = value(mdp, policy)
    if step == "theory":
        alpha = theory_step(adv_u, mdp.horizon, advantage_bound(mdp))
    elif step == "paper":
        alpha = paper_step(adv_u, mdp.horizon, mdp.r_max)
    elif step == "line_search":
        alpha, _ = line_search(lambda a: value(mdp, _mix(mdp, policy, target, sel.s, a)))
    else:
        raise ValueError(f"step: expected 'theory', 'paper' or 'line_search', got {step!r}")
    new = _mix(mdp, policy, target, sel.s, alpha)
    guaranteed = guaranteed_improvement(adv_u, alpha, mdp.horizon, advantage_bound(mdp), sel.mass)
    return IterationResult(new, J0, value(mdp, new), float(alpha), adv_u, sel.mass,
                           float(d[G].sum()), sel.precision, sel.recall, float(guaranteed))
