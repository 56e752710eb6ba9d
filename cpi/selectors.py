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

Branch rules on token / thought trees (``branch_choice``, ``branch_distribution``,
``branch_quality``): the rules the tree baselines use to pick where to branch, as selectors of
one reset state per trajectory. ``entropy`` (TreeRL): the internal node on the trajectory's path
where the policy's entropy is highest (ties: the shallowest); ``fixed`` (SPO-Tree): the node at a
fixed depth (clamped to the path); ``random`` (RRPO): uniform over the path's internal nodes.
Over a set of trajectories (e.g. the failed ones) each induces a reset distribution nu over
states; ``selection_from`` turns nu into per-visit acceptance probabilities relative to ``d``.
Their quality against a set of *clean* states (on the first-error tree: the on-track nodes, a
reset before the first error) is measured as the language model's localizers are
(docs/compare.md): precision = nu(clean), recall = 1 (a rule always answers), and the coverage
p = E[clean positions] / E[positions] over the trajectories, which is exactly the precision of
``random``. The theory (THEORY.md section 4) predicts a rule beats random resets when
(1 - beta) gamma > p.

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
from cpi.mdp import MDP, TabularMDP, TreeMDP, check_policy

RESET_RULES = ("none", "random", "oracle", "approx")
BRANCH_RULES = ("entropy", "fixed", "random")


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


# ------------------------------------------------------------------------------------------------
# Branch rules on trees (the tree baselines' branch points as selectors)
# ------------------------------------------------------------------------------------------------


def node_entropy(mdp: TreeMDP, policy) -> np.ndarray:
    """(N,) entropy (nats) of the policy at each internal node; -inf on leaves (never chosen)."""
    if not isinstance(mdp, TreeMDP):
        raise ValueError("mdp: branch rules need a TreeMDP")
    pol = check_policy(mdp, policy)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(pol > 0, pol * np.log(pol), 0.0).sum(axis=1)
    return np.where(mdp.is_leaf, -np.inf, ent)


@nb.njit(cache=True)
def _entropy_choice(parent, is_leaf, ent):  # pragma: no cover - compiled
    """best[n]: the highest-entropy internal node on the path root..n (ties: the shallowest)."""
    n_nodes = parent.shape[0]
    best = np.full(n_nodes, -1, dtype=np.int64)
    for n in range(n_nodes):
        p = parent[n]
        if p < 0:
            best[n] = n if not is_leaf[n] else -1
            continue
        b = best[p]
        if not is_leaf[n] and (b < 0 or ent[n] > ent[b]):
            b = n
        best[n] = b
    return best


@nb.njit(cache=True)
def _ancestor_at(parent, depth, node, target):  # pragma: no cover - compiled
    while depth[node] > target:
        node = parent[node]
    return node


@nb.njit(cache=True)
def _fixed_choice(parent, depth, is_leaf, target):  # pragma: no cover - compiled
    n_nodes = parent.shape[0]
    out = np.full(n_nodes, -1, dtype=np.int64)
    for n in range(n_nodes):
        if is_leaf[n] and depth[n] > 0:
            out[n] = _ancestor_at(parent, depth, n, min(target, depth[n] - 1))
    return out


def branch_choice(mdp: TreeMDP, policy, rule: str, depth: int | None = None) -> np.ndarray:
    """(N,) the node each leaf's trajectory branches (resets) at; -1 for internal nodes.

    Args:
        rule: ``entropy`` (the highest-entropy internal node on the path, the shallowest on ties)
            or ``fixed`` (the ancestor at ``depth``, or at the leaf's depth - 1 if shallower).
    """
    if rule == "entropy":
        best = _entropy_choice(mdp.parent, mdp.is_leaf, node_entropy(mdp, policy))
        return np.where(mdp.is_leaf, best, -1)
    if rule == "fixed":
        if depth is None or depth < 0:
            raise ValueError(f"depth: rule 'fixed' needs a depth >= 0; got {depth!r}")
        return _fixed_choice(mdp.parent, mdp.depth, mdp.is_leaf, int(depth))
    raise ValueError(f"rule: expected 'entropy' or 'fixed' (one node per path), got {rule!r}")


def branch_distribution(mdp: TreeMDP, policy, rule: str, leaves=None,
                        depth: int | None = None) -> np.ndarray:
    """(N,) nu: where the rule resets, over trajectories ending in ``leaves`` (bool (N,), default
    every leaf), each weighted by its on-policy probability; sums to 1 (0 if no mass).

    ``random`` spreads each trajectory's weight uniformly over its path's internal nodes.
    """
    if rule not in BRANCH_RULES:
        raise ValueError(f"rule: expected one of {BRANCH_RULES}, got {rule!r}")
    occ = occupancy(mdp, check_policy(mdp, policy))
    mask = mdp.is_leaf if leaves is None else (np.asarray(leaves, dtype=bool) & mdp.is_leaf)
    w = np.where(mask & (mdp.depth > 0), occ, 0.0)
    total = w.sum()
    if total <= 0:
        return np.zeros(mdp.n_nodes)
    w = w / total
    if rule == "random":
        u = np.where(w > 0, w / np.maximum(mdp.depth, 1), 0.0)
        _push_up(mdp.parent, u)
        u[mdp.is_leaf] = 0.0
        return u
    choice = branch_choice(mdp, policy, rule, depth)
    nu = np.zeros(mdp.n_nodes)
    np.add.at(nu, choice[w > 0], w[w > 0])
    return nu


@dataclass(frozen=True)
class BranchQuality:
    """A branch rule's place on the phase map (module docstring).

    precision: 1 - beta = nu(clean). recall: gamma = 1 (a rule always names a state).
    p: E[clean positions] / E[positions] over the trajectories (= precision of ``random``).
    """

    precision: float
    recall: float
    p: float

    @property
    def beats_random_predicted(self) -> bool:
        """The theory's prediction: (1 - beta) gamma > p."""
        return self.precision * self.recall > self.p


def branch_quality(mdp: TreeMDP, policy, rule: str, clean, leaves=None,
                   depth: int | None = None) -> BranchQuality:
    """Precision, recall and coverage of a branch rule against ``clean`` states (bool (N,))."""
    clean = np.asarray(clean, dtype=bool)
    nu = branch_distribution(mdp, policy, rule, leaves, depth)
    occ = occupancy(mdp, check_policy(mdp, policy))
    mask = mdp.is_leaf if leaves is None else (np.asarray(leaves, dtype=bool) & mdp.is_leaf)
    w = np.where(mask & (mdp.depth > 0), occ, 0.0)
    n_clean = np.where(clean & ~mdp.is_leaf, 1.0, 0.0)
    _push_down = _count_on_path(mdp.parent, n_clean)
    positions = float((w * mdp.depth).sum())
    p = float((w * _push_down).sum()) / positions if positions > 0 else float("nan")
    return BranchQuality(float(nu[clean].sum()), 1.0, p)


@nb.njit(cache=True)
def _count_on_path(parent, x):  # pragma: no cover - compiled
    """out[n] = sum of x over the strict ancestors of n."""
    out = np.zeros(parent.shape[0])
    for n in range(parent.shape[0]):
        p = parent[n]
        if p >= 0:
            out[n] = out[p] + x[p]
    return out


def selection_from(nu: np.ndarray, d: np.ndarray, G: np.ndarray | None = None) -> Selection:
    """Per-visit acceptance ``s`` with ``d s`` proportional to ``nu`` (``s = (nu/d) / max``), so
    that a selector given as a reset distribution plugs into the exact CPI iteration; precision
    and recall against ``G`` when given."""
    nu = np.asarray(nu, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    ratio = np.where(d > 0, nu / np.where(d > 0, d, 1.0), 0.0)
    top = ratio.max()
    s = ratio / top if top > 0 else ratio
    mass = float(d @ s)
    if G is None:
        return Selection(s, float("nan"), float("nan"), mass, float("nan"), float("nan"))
    G = np.asarray(G, dtype=bool)
    mass_G = float(d[G] @ s[G])
    p = float(d[G].sum())
    return Selection(s, float("nan"), float("nan"), mass, mass_G / mass if mass > 0 else np.nan,
                     mass_G / p if p > 0 else float("nan"))
