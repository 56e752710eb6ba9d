"""Exact first and second moments of one Kakade-Langford term, hence the normal-approximation
sample size of either accuracy criterion, computed *before* any sampling.

One K&L term is ``coef[x, a] * Q_hat(x, a)``: ``x`` drawn from the reset weights w, ``a`` uniform
over the A actions, ``Q_hat`` one Q-rollout of the policy after a (its return to go). Backward
induction gives, per (h, s, a), the mean ``Q`` and the second moment ``M`` of the return to go
(rewards are deterministic per (s, a), the randomness is in the transitions):

    Q_h(s, a) = R(s, a) + P V_{h+1},     M_h(s, a) = R^2 + 2 R P V_{h+1} + P W_{h+1},
    V_h = sum_a pi Q_h,                  W_h = sum_a pi M_h,

so ``E[term] = sum_x w_x (1/A) sum_a coef Q`` and ``E[term^2] = sum_x w_x (1/A) sum_a coef^2 M``.
With these, n = z_{1-delta/2}^2 Var / tol^2 is the normal-approximation sample size of an
estimate within ``tol`` of its mean with probability 1 - delta (``tol = eps |A|`` for the relative
criterion, ``c tau p`` / ``c tau`` for the theorem's). The sweep's direct measurement must agree
with it wherever the normal approximation holds; ``tests/experiments/test_direct_reference.py``
checks these moments against an independent implementation.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from cpi.mdp import TabularMDP

__all__ = ["normal_n", "term_moments"]


def term_moments(
    mdp: TabularMDP, policy: np.ndarray, coef: np.ndarray, weights: np.ndarray
) -> tuple[float, float]:
    """Exact (mean, variance) of one K&L term under reset weights ``weights``.

    Args:
        mdp: a tabular MDP (P (S, A, S), R (S, A) deterministic, horizon H).
        policy: (H, S, A) rollout policy (the policy being improved).
        coef: (H S, A) or (H, S, A) per-(flat state, action) coefficient, e.g. A (pi' - pi).
        weights: (H S,) non-negative reset weights (normalised here), flat index h S + s.
    Returns:
        ``(mean, variance)`` in reward units (squared for the variance).
    """
    if not isinstance(mdp, TabularMDP):
        raise ValueError(f"mdp: expected a TabularMDP, got {type(mdp).__name__}")
    H, S, A = mdp.horizon, mdp.n_states, mdp.n_actions
    pol = np.asarray(policy, float).reshape(H, S, A)
    c = np.asarray(coef, float).reshape(H, S, A)
    w = np.asarray(weights, float).reshape(H, S)
    if w.sum() <= 0:
        raise ValueError("weights: expected a positive total mass")
    w = w / w.sum()
    P, R = mdp.P, mdp.R
    V = np.zeros(S)
    W = np.zeros(S)
    mean = second = 0.0
    for h in range(H - 1, -1, -1):
        ev, ew = P @ V, P @ W  # (S, A): E[V_{h+1}], E[W_{h+1}] after (s, a)
        Q = R + ev
        M = R * R + 2.0 * R * ev + ew
        mean += float(np.einsum("s,sa,sa->", w[h], c[h], Q)) / A
        second += float(np.einsum("s,sa,sa->", w[h], c[h] ** 2, M)) / A
        V = (pol[h] * Q).sum(axis=1)
        W = (pol[h] * M).sum(axis=1)
    return mean, max(second - mean * mean, 0.0)


def normal_n(variance: float, tol: float, delta: float) -> float:
    """z_{1-delta/2}^2 Var / tol^2: terms needed for |mean - A| <= tol w.p. 1 - delta (normal)."""
    if not tol > 0:
        raise ValueError(f"tol: expected a number > 0, got {tol!r}")
    return float(norm.ppf(1.0 - delta / 2.0) ** 2 * variance / tol**2)
