"""Reset rules as exact objects: the reset distribution d and per-visit selection probabilities.

A reset rule decides which states a CPI iteration samples and updates. Every rule starts from the
*reset distribution* ``d`` of the current policy (package convention): run pi from mu and stop at
a uniformly random step. In a :class:`~cpi.mdp.TabularMDP`, and in a tree whose leaves all sit at
the horizon, ``d = (1/H) sum_h d_h``; in a tree with early leaves the stop is uniform over the
episode's own ``L`` non-leaf steps, so ``d(n) = sum_{leaves l below n} P(l) / depth(l)``.

A rule is then a per-visit acceptance probability ``s(x)`` (the *selector*): a candidate
``x ~ d`` is kept with probability ``s(x)``, so accepted states follow ``d(x) s(x) / m_s`` with
``m_s = sum_x d(x) s(x)``, the *update mass*.

=========  ===================================  ==============================================
rule       s(x)                                 meaning
=========  ===================================  ==============================================
random     1                                    CPI-RR: reset anywhere, update everywhere
oracle     1[x in G]                            CPI-CARO: reset and update on G only
approx     gamma on G, q off G                  noisy selector with FDR beta and recall gamma
none       1 (exact mode: see cpi.algorithm)    outcome-only signal (GRPO analogue)
=========  ===================================  ==============================================

For ``approx``, with ``p = d(G)``: recall is ``P(x in S | x in G) = gamma`` and the false-discovery
rate ``P(x not in G | x in S) = q (1-p) / (gamma p + q (1-p))`` equals ``beta`` exactly when
``q = beta gamma p / ((1 - beta)(1 - p))``. When that ``q`` exceeds 1 the requested beta cannot be
reached (the selector would have to accept more off-G states than exist); it is clipped to 1 (and
reported) or rejected, as the caller chooses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from cpi.evaluation import occupancy
from cpi.mdp import MDP, TabularMDP, check_policy

RESET_RULES = ("none", "random", "oracle", "approx")


def reset_distribution(mdp: MDP, policy, d: np.ndarray | None = None) -> np.ndarray:
    """Exact reset distribution of ``policy``, flat (X,) (tabular ``x = h*S + s``; tree: node).

    ``d`` may pass a precomputed :func:`cpi.occupancy`. Sums to 1 (up to a root that is a leaf).
    """
    pol = check_policy(mdp, policy)
    occ = occupancy(mdp, pol) if d is None else np.asarray(d)
    if isinstance(mdp, TabularMDP):
        return (occ / mdp.horizon).ravel()
    # Tree: push leaf probabilities P(l) / depth(l) up to every non-leaf ancestor.
    leaf = mdp.is_leaf
    w = np.where(leaf & (mdp.depth > 0), occ / np.maximum(mdp.depth, 1), 0.0)
    _push_up(mdp.parent, w)
    w[leaf] = 0.0
    return w


@nb.njit(cache=True)
def _push_up(parent, w):  # pragma: no cover - compiled
    """w[parent[n]] += w[n] for n from last to first (topological order: children after parents)."""
    for n in range(w.shape[0] - 1, 0, -1):
        p = parent[n]
        if p >= 0:
            w[p] += w[n]


@dataclass(frozen=True)
class Selection:
    """Per-visit selection probabilities of a reset rule and their exact statistics.

    s: (X,) acceptance probability per flat state.
    q: acceptance probability off G (approx; 0 for oracle, 1 for random), after clipping.
    q_requested: the unclipped q (``inf`` when beta = 1 and gamma p > 0).
    mass: m_s = sum d s, the probability that a candidate is accepted.
    precision: P(x in G | accepted) = 1 - realised FDR (exact, under d).
    recall: P(accepted | x in G) (exact, under d); NaN when d(G) = 0.
    """

    s: np.ndarray
    q: float
    q_requested: float
    mass: float
    precision: float
    recall: float


def selector_q(beta: float, gamma: float, p: float) -> float:
    """Off-G acceptance probability q = beta gamma p / ((1 - beta)(1 - p)) (may exceed 1)."""
    num = beta * gamma * p
    if num == 0.0:
        return 0.0
    den = (1.0 - beta) * (1.0 - p)
    return float("inf") if den <= 0.0 else num / den


def selection(rule: str, G: np.ndarray, d: np.ndarray, beta: float = 0.0, gamma: float = 1.0,
              on_infeasible: str = "clip") -> Selection:
    """Selection probabilities of ``rule`` given the improvable set ``G`` (X,) and ``d`` (X,).

    ``on_infeasible`` ("clip" or "raise") handles an approximate selector whose q exceeds 1.
    """
    G = np.asarray(G, dtype=np.bool_).ravel()
    d = np.asarray(d, dtype=np.float64).ravel()
    p = float(d[G].sum())
    q_req = 0.0
    if rule in ("random", "none"):
        s = np.ones_like(d)
        q = q_req = 1.0
    elif rule == "oracle":
        s = G.astype(np.float64)
        q = 0.0
    elif rule == "approx":
        q_req = selector_q(beta, gamma, p)
        if q_req > 1.0:
            if on_infeasible == "raise":
                raise ValueError(
                    f"beta: FDR {beta} with recall {gamma} needs q = {q_req:.3g} > 1 at coverage "
                    f"p = {p:.3g}; lower beta or gamma, or pass on_infeasible='clip'")
        q = min(q_req, 1.0)
        s = np.where(G, gamma, q)
    else:
        raise ValueError(f"reset: expected one of {RESET_RULES}, got {rule!r}")
    mass = float(d @ s)
    mass_G = float(d[G] @ s[G])
    precision = mass_G / mass if mass > 0 else float("nan")
    recall = mass_G / p if p > 0 else float("nan")
    return Selection(s, float(q), float(q_req), mass, precision, recall)
