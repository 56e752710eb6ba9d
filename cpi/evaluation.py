"""Exact oracle quantities of a policy: values, Q, advantages, occupancy, improvable set, coverage.

All functions accept a :class:`~cpi.mdp.TabularMDP` or a :class:`~cpi.mdp.TreeMDP`; shapes:

=================  ===========================  ============================
quantity           TabularMDP                   TreeMDP
=================  ===========================  ============================
policy             (H, S, A) or (S, A)          (N, A)
V                  (H+1, S), ``V[H] = 0``       (N,) value-to-go at a node
Q, advantage       (H, S, A)                    (N, A) (rows of leaves = 0)
occupancy d        (H, S): P(s_h = s)           (N,): P(node visited)
improvable set     (H, S) bool                  (N,) bool (leaves False)
=================  ===========================  ============================

In a tree the step of a node is its depth, so ``d[n]`` is ``d_{depth[n]}(n)``; leaves are never
acted in, so they carry no advantage and are never improvable. Values are in reward units.

The kernels are Numba loops that read like the recursions they implement (Bellman backward,
occupancy forward); `tests/cpi/test_evaluation.py` checks them against trajectory enumeration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from cpi.mdp import _ATOL, MDP, TabularMDP, TreeMDP, check_policy, check_tau

# Ties in max_a A >= tau are decided with this slack so that exact zeros from round-off count.
IMPROVABLE_ATOL = 1e-10


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------
# "reassoc" lets LLVM vectorise the dot product over s' (a different summation order, ~1e-16
# relative); inputs are validated finite, so no NaN/inf assumptions are made or needed.
@nb.njit(cache=True, fastmath={"reassoc", "contract"})
def _tabular_evaluate(P, R, policy):  # pragma: no cover - compiled
    H, S, A = policy.shape
    V = np.zeros((H + 1, S))
    Q = np.zeros((H, S, A))
    for h in range(H - 1, -1, -1):
        V_next = V[h + 1]
        for s in range(S):
            v = 0.0
            for a in range(A):
                P_sa = P[s, a]
                q = 0.0
                for s2 in range(S):
                    q += P_sa[s2] * V_next[s2]
                q += R[s, a]
                Q[h, s, a] = q
                v += policy[h, s, a] * q
            V[h, s] = v
    return V, Q


@nb.njit(cache=True)
def _tabular_occupancy(P, mu, policy):  # pragma: no cover - compiled
    H, S, A = policy.shape
    d = np.zeros((H, S))
    d[0] = mu
    for h in range(H - 1):
        for s in range(S):
            m = d[h, s]
            if m == 0.0:
                continue
            for a in range(A):
                w = m * policy[h, s, a]
                if w == 0.0:
                    continue
                for s2 in range(S):
                    d[h + 1, s2] += w * P[s, a, s2]
    return d


@nb.njit(cache=True)
def _tabular_reach(P, mu, policy, G):  # pragma: no cover - compiled
    """P(some step h has (h, s_h) in G): forward pass over the mass that has not yet hit G."""
    H, S, A = policy.shape
    q = mu.copy()
    reach = 0.0
    for h in range(H):
        nxt = np.zeros(S)
        for s in range(S):
            m = q[s]
            if m == 0.0:
                continue
            if G[h, s]:
                reach += m
                continue
            if h == H - 1:
                continue
            for a in range(A):
                w = m * policy[h, s, a]
                if w == 0.0:
                    continue
                for s2 in range(S):
                    nxt[s2] += w * P[s, a, s2]
        q = nxt
    return reach


@nb.njit(cache=True)
def _tree_evaluate(children, reward, policy, is_leaf):  # pragma: no cover - compiled
    N, A = children.shape
    V = np.zeros(N)
    Q = np.zeros((N, A))
    for n in range(N - 1, -1, -1):
        if is_leaf[n]:  # (a 1-byte flag: a leaf's children row is never read)
            continue
        v = 0.0
        for a in range(A):
            c = children[n, a]
            q = reward[c] + V[c]
            Q[n, a] = q
            v += policy[n, a] * q
        V[n] = v
    return V, Q


@nb.njit(cache=True)
def _tree_evaluate_checked(children, reward, policy, is_leaf, atol, sum_tol):  # pragma: no cover
    """:func:`_tree_evaluate` that also checks every policy row it reads (finite, >= -atol,
    summing to 1 +- sum_tol) in the same pass. Returns (V, Q, first bad node or -1)."""
    N, A = children.shape
    V = np.zeros(N)
    Q = np.zeros((N, A))
    for n in range(N - 1, -1, -1):
        if is_leaf[n]:
            continue
        v = 0.0
        total = 0.0
        ok = True
        for a in range(A):
            p = policy[n, a]
            ok &= (p >= -atol) & (p < np.inf)  # False for NaN and +-inf; no branch
            total += p
            c = children[n, a]
            q = reward[c] + V[c]
            Q[n, a] = q
            v += p * q
        if not ok or abs(total - 1.0) > sum_tol:
            return V, Q, n
        V[n] = v
    return V, Q, -1


@nb.njit(cache=True)
def _tree_occupancy(children, mu, policy):  # pragma: no cover - compiled
    N, A = children.shape
    d = mu.copy()
    for n in range(N):
        m = d[n]
        if m == 0.0 or children[n, 0] < 0:
            continue
        for a in range(A):
            d[children[n, a]] += m * policy[n, a]
    return d


@nb.njit(cache=True)
def _tree_reach(children, d, G):  # pragma: no cover - compiled
    N, A = children.shape
    hit_before = np.zeros(N, dtype=np.bool_)
    reach = 0.0
    for n in range(N):
        if G[n] and not hit_before[n]:
            reach += d[n]
        if children[n, 0] < 0:
            continue
        flag = hit_before[n] or G[n]
        for a in range(A):
            hit_before[children[n, a]] = flag
    return reach


# ---------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------
def evaluate(mdp: MDP, policy) -> tuple[np.ndarray, np.ndarray]:
    """Exact finite-horizon policy evaluation.

    Returns ``(V, Q)``: tabular ``V`` (H+1, S) with ``V[H] = 0`` and ``Q`` (H, S, A); tree ``V``
    (N,) value-to-go (0 at leaves) and ``Q`` (N, A) with ``Q[n, a] = reward[child] + V[child]``.
    The policy is validated as by :func:`cpi.mdp.check_policy`, except that on a tree the rows
    of leaves, which the evaluation never reads, are not checked.
    """
    if isinstance(mdp, TabularMDP):
        return _tabular_evaluate(mdp.P, mdp.R, check_policy(mdp, policy))
    if not isinstance(mdp, TreeMDP):
        check_policy(mdp, policy)  # raises: not an MDP
    pol = np.ascontiguousarray(policy, dtype=np.float64)
    if pol.shape != mdp.policy_shape():
        check_policy(mdp, pol)  # raises the shape error
    # The rows it reads are checked in the evaluation pass itself (a separate pass over the
    # whole policy would cost as much as the evaluation); on a bad row, check_policy words it.
    V, Q, bad = _tree_evaluate_checked(mdp.children, mdp.reward, pol, mdp.is_leaf, _ATOL, 1e-6)
    if bad >= 0:
        check_policy(mdp, pol)
        raise AssertionError(f"policy row {bad} failed the check but passed check_policy")
    return V, Q


def value(mdp: MDP, policy) -> float:
    """J(pi) = E_{s_0 ~ mu}[V_0(s_0)], the expected return from the start distribution."""
    V, _ = evaluate(mdp, policy)
    return float(mdp.mu @ (V[0] if isinstance(mdp, TabularMDP) else V))


def occupancy(mdp: MDP, policy) -> np.ndarray:
    """State-visitation probabilities from ``mu``: tabular (H, S), tree (N,) (see module doc)."""
    pol = check_policy(mdp, policy)
    if isinstance(mdp, TabularMDP):
        return _tabular_occupancy(mdp.P, mdp.mu, pol)
    return _tree_occupancy(mdp.children, mdp.mu, pol)


def advantage(mdp: MDP, policy, V: np.ndarray | None = None, Q: np.ndarray | None = None) -> np.ndarray:
    """A = Q - V of ``policy``: tabular (H, S, A); tree (N, A), zero on leaf rows."""
    if V is None or Q is None:
        V, Q = evaluate(mdp, policy)
    if isinstance(mdp, TabularMDP):
        return Q - V[:-1, :, None]
    A = Q - V[:, None]
    A[mdp.is_leaf] = 0.0
    return A


def max_advantage(mdp: MDP, policy, V=None, Q=None) -> np.ndarray:
    """max_a A(x, a) >= 0 per state: tabular (H, S), tree (N,) (0 at leaves)."""
    return advantage(mdp, policy, V, Q).max(axis=-1)


def improvable_set(mdp: MDP, policy, tau: float, V=None, Q=None) -> np.ndarray:
    """The tau-improvable set G_tau(pi) = {x : max_a A^pi(x, a) >= tau} (package convention >=).

    Returns a boolean mask: tabular (H, S), tree (N,) with leaves excluded. ``tau`` must be a
    finite number >= 0; with ``tau = 0`` every non-leaf state qualifies.
    """
    t = check_tau(tau)
    mask = max_advantage(mdp, policy, V, Q) >= t - IMPROVABLE_ATOL
    if isinstance(mdp, TreeMDP):
        mask &= ~mdp.is_leaf
    return mask


@dataclass(frozen=True)
class Coverage:
    """The two readings of on-policy coverage of a state set G (THEORY.md section 1).

    reach: P_pi(some step of the trajectory is in G), in [0, 1].
    mass:  (1/H) sum_h d_h^pi(G), the normalised on-policy mass of G, in [0, 1].
    """

    reach: float
    mass: float


def coverage_of(mdp: MDP, policy, G: np.ndarray, d: np.ndarray | None = None) -> Coverage:
    """Coverage of an arbitrary state set ``G`` (a boolean mask shaped like ``occupancy``)."""
    pol = check_policy(mdp, policy)
    d = occupancy(mdp, pol) if d is None else d
    G = np.asarray(G, dtype=np.bool_)
    if G.shape != d.shape:
        raise ValueError(f"G: expected a boolean mask of shape {d.shape}, got {G.shape}")
    mass = float(d[G].sum()) / mdp.horizon
    if isinstance(mdp, TabularMDP):
        reach = float(_tabular_reach(mdp.P, mdp.mu, pol, G))
    else:
        reach = float(_tree_reach(mdp.children, d, G))
    return Coverage(reach=min(reach, 1.0), mass=min(mass, 1.0))


def coverage(mdp: MDP, policy, tau: float) -> Coverage:
    """On-policy coverage p_pi of the tau-improvable set, both readings (``reach``, ``mass``)."""
    pol = check_policy(mdp, policy)
    return coverage_of(mdp, pol, improvable_set(mdp, pol, tau))


def greedy_policy(mdp: MDP, Q: np.ndarray) -> np.ndarray:
    """Deterministic argmax policy of ``Q`` (ties to the lowest action), shaped like ``Q``."""
    Q = np.asarray(Q, dtype=np.float64)
    out = np.zeros_like(Q)
    idx = np.argmax(Q, axis=-1)
    np.put_along_axis(out, idx[..., None], 1.0, axis=-1)
    return out
