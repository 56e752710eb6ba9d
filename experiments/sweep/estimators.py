"""Per-sample policy-advantage terms, built on the core's samplers (``cpi.rollouts``).

The Kakade-Langford estimator of the policy advantage of a target policy pi' over pi is the mean
of i.i.d. terms ``|Y| Q_hat(x, a) (pi'(a|x) - pi(a|x))`` with ``x`` drawn from the reset
distribution (random reset: the on-policy visit distribution d; oracle: d restricted to G), ``a``
uniform and ``Q_hat`` one Q-rollout. Its expectation is ``E_x[A^pi(x, pi')]``. Exposing the terms
(not only their mean) gives the per-sample variance directly, which is what the sample-size
calculation of the estimation experiment needs; ``cpi.algorithm`` computes the same mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpi.evaluation import advantage, evaluate, greedy_policy, improvable_set
from cpi.rollouts import q_rollouts, sample_resets


@dataclass(frozen=True)
class AdvantageProblem:
    """Exact ingredients of one estimation problem, flat-indexed like ``cpi.rollouts``.

    policy: the current policy (canonical shape); ``flat_policy`` / ``flat_target`` (X, A);
    ``flat_adv`` (X, A) exact advantages; ``G`` (X,) bool improvable set at ``tau``.
    """

    policy: np.ndarray
    flat_policy: np.ndarray
    flat_target: np.ndarray
    flat_adv: np.ndarray
    G: np.ndarray

    def exact(self, select: np.ndarray, d_flat: np.ndarray) -> float:
        """E_{x ~ d sel / sum}[A(x, pi'(x))], the quantity the estimator targets."""
        w = d_flat * select
        gain = (self.flat_adv * self.flat_target).sum(axis=1)
        return float((w * gain).sum() / w.sum())


def advantage_problem(mdp, policy, tau: float) -> AdvantageProblem:
    """Greedy target pi' of the exact Q of ``policy`` and the exact advantages and G."""
    V, Q = evaluate(mdp, policy)
    A = mdp.n_actions
    return AdvantageProblem(
        policy=np.asarray(policy),
        flat_policy=np.asarray(policy).reshape(-1, A),
        flat_target=greedy_policy(mdp, Q).reshape(-1, A),
        flat_adv=advantage(mdp, policy, V, Q).reshape(-1, A),
        G=improvable_set(mdp, policy, tau, V, Q).ravel(),
    )


@dataclass(frozen=True)
class AdvantageTerms:
    """``terms`` (n,) per-sample estimates; costs of drawing them (Q-rollouts and env steps)."""

    terms: np.ndarray
    q_rollouts: int
    q_steps: int
    base_steps: int
    n_candidates: int


def advantage_terms(mdp, prob: AdvantageProblem, select: np.ndarray, n: int,
                    rng: np.random.Generator, rng_select: np.random.Generator) -> AdvantageTerms:
    """Draw ``n`` accepted reset states (acceptance prob ``select`` (X,)) and one Q-rollout each."""
    batch = sample_resets(mdp, prob.policy, n, select, prob.G, rng, rng_select)
    acts, q, q_steps = q_rollouts(mdp, prob.policy, batch.states, 1, rng)
    x, a, q = batch.states, acts[:, 0], q[:, 0]
    terms = mdp.n_actions * q * (prob.flat_target[x, a] - prob.flat_policy[x, a])
    return AdvantageTerms(terms, len(x), q_steps, batch.base_steps, batch.n_candidates)
