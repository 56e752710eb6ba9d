"""Finite-horizon episodic MDPs as plain containers of arrays, validated at construction.

Two representations share one set of conventions:

* :class:`TabularMDP` -- dense ``P`` (S, A, S), ``R`` (S, A), start distribution ``mu`` (S,),
  horizon ``H``. An episode draws ``s_0 ~ mu`` and, for ``h = 0 .. H-1``, takes ``a_h``, receives
  ``R[s_h, a_h]`` and moves to ``s_{h+1} ~ P[s_h, a_h]``. Policies are non-stationary, shape
  (H, S, A); a stationary (S, A) policy is broadcast over steps.
* :class:`TreeMDP` -- a deterministic token/thought MDP stored as a tree of ``N`` nodes with a
  fixed action count ``A``: ``children[n, a]`` is the node reached by taking action ``a`` at node
  ``n`` (``-1`` everywhere for a leaf). Reward ``reward[n]`` is received on *arriving* at ``n``
  (so a terminal outcome sits on the leaves). Nodes are stored in topological order (every child
  has a larger index than its parent), which lets kernels sweep values backwards and occupancy
  forwards in one pass each. The step of a node is its depth; the horizon is the largest depth.
  Policies have shape (N, A) (a node already determines its step). A leaf above the maximal
  depth ends the episode early (an absorbing state with zero reward in tabular form).

Rewards are in "reward units"; ``r_max`` is the largest absolute one-step reward, so returns lie
in ``[-H r_max, H r_max]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numba as nb
import numpy as np

_ATOL = 1e-8


def _as_float_array(name: str, value, ndim: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite values, found NaN or inf")
    return arr


def _check_distribution(name: str, arr: np.ndarray, axis: int = -1) -> None:
    if np.any(arr < -_ATOL):
        raise ValueError(f"{name}: expected probabilities >= 0, found min {arr.min():.3g}")
    sums = arr.sum(axis=axis)
    bad = np.abs(sums - 1.0) > 1e-6
    if np.any(bad):
        worst = float(sums.flat[np.argmax(np.abs(sums - 1.0).ravel())])
        raise ValueError(
            f"{name}: expected probabilities summing to 1 along the last axis, found a sum of {worst:.6g}"
        )


def check_horizon(horizon) -> int:
    """Return ``horizon`` as an int, or raise ``ValueError`` unless it is an integer >= 1."""
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer):
        raise ValueError(f"horizon: expected an int >= 1, got {horizon!r}")
    if horizon < 1:
        raise ValueError(f"horizon: expected an int >= 1, got {horizon}")
    return int(horizon)


@dataclass(frozen=True, eq=False)
class TabularMDP:
    """Dense finite-horizon MDP.

    Attributes:
        P: (S, A, S) transition probabilities; ``P[s, a]`` sums to 1.
        R: (S, A) expected one-step reward, finite.
        mu: (S,) start distribution, sums to 1.
        horizon: number of decisions per episode, ``H >= 1``.
        name: free-form label used in logs.
        meta: free-form facts about the instance (an environment family puts its knobs here, and
            optionally ``"initial_policy"``, the policy CPI starts from by default).
    """

    P: np.ndarray
    R: np.ndarray
    mu: np.ndarray
    horizon: int
    name: str = "tabular"
    meta: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        P = _as_float_array("P", self.P, 3)
        S, A, S2 = P.shape
        if S < 1 or A < 1 or S2 != S:
            raise ValueError(f"P: expected shape (S, A, S) with S, A >= 1, got {P.shape}")
        _check_distribution("P", P)
        R = _as_float_array("R", self.R, 2)
        if R.shape != (S, A):
            raise ValueError(f"R: expected shape (S, A) = ({S}, {A}), got {R.shape}")
        mu = _as_float_array("mu", self.mu, 1)
        if mu.shape != (S,):
            raise ValueError(f"mu: expected shape (S,) = ({S},), got {mu.shape}")
        _check_distribution("mu", mu)
        H = check_horizon(self.horizon)
        # Clean tiny negative round-off so kernels can sample from these rows directly.
        P = np.clip(P, 0.0, None)
        P = P / P.sum(axis=-1, keepdims=True)
        mu = np.clip(mu, 0.0, None)
        mu = mu / mu.sum()
        for name, arr in (("P", P), ("R", R), ("mu", mu)):
            arr = np.ascontiguousarray(arr)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "horizon", H)

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    @property
    def r_max(self) -> float:
        """Largest absolute one-step reward (at least a tiny positive number)."""
        return max(float(np.abs(self.R).max()), 1e-12)

    def policy_shape(self) -> tuple[int, int, int]:
        return (self.horizon, self.n_states, self.n_actions)

    def uniform_policy(self) -> np.ndarray:
        """(H, S, A) uniformly random policy."""
        return np.full(self.policy_shape(), 1.0 / self.n_actions)


def _depths_and_parents(children: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    N = children.shape[0]
    parent = np.full(N, -1, dtype=np.int64)
    depth = np.zeros(N, dtype=np.int64)
    for n in range(N):
        for c in children[n]:
            if c < 0:
                continue
            if parent[c] != -1:
                raise ValueError(f"children: node {c} has two parents ({parent[c]} and {n})")
            parent[c] = n
            depth[c] = depth[n] + 1
    return depth, parent


@dataclass(frozen=True, eq=False)
class TreeMDP:
    """Deterministic tree MDP (token/thought MDP) in topological order.

    Attributes:
        children: (N, A) int, child node per action or -1 for a leaf (all -1). An internal node
            has all A children; every child index is larger than its parent's.
        reward: (N,) reward received on arriving at each node (typically 0 except leaves).
        mu: (N,) start distribution, supported on root nodes (nodes with no parent); defaults
            to all mass on node 0.
        name: free-form label.
        meta: free-form facts about the instance (as for :class:`TabularMDP`).
    Derived (read-only): ``depth`` (N,), ``parent`` (N,) (-1 for roots), ``horizon`` = max depth.
    """

    children: np.ndarray
    reward: np.ndarray
    mu: np.ndarray | None = None
    name: str = "tree"
    meta: dict = field(default_factory=dict, repr=False)
    depth: np.ndarray = field(init=False, repr=False)
    parent: np.ndarray = field(init=False, repr=False)
    horizon: int = field(init=False)

    def __post_init__(self) -> None:
        children = np.asarray(self.children)
        if children.ndim != 2 or children.shape[0] < 1 or children.shape[1] < 1:
            raise ValueError(f"children: expected shape (N, A) with N, A >= 1, got {children.shape}")
        if not np.issubdtype(children.dtype, np.integer):
            raise ValueError(f"children: expected an integer array, got dtype {children.dtype}")
        children = children.astype(np.int64)
        N, A = children.shape
        if children.min() < -1 or children.max() >= N:
            raise ValueError(f"children: expected indices in [-1, {N - 1}]")
        is_leaf_row = (children < 0).all(axis=1)
        is_full_row = (children >= 0).all(axis=1)
        if not np.all(is_leaf_row | is_full_row):
            bad = int(np.flatnonzero(~(is_leaf_row | is_full_row))[0])
            raise ValueError(
                f"children: node {bad} has some but not all of its {A} children; expected all or none"
            )
        rows = np.arange(N)[:, None]
        if np.any((children >= 0) & (children <= rows)):
            raise ValueError("children: expected topological order (every child index > its parent's)")
        reward = _as_float_array("reward", self.reward, 1)
        if reward.shape != (N,):
            raise ValueError(f"reward: expected shape (N,) = ({N},), got {reward.shape}")
        depth, parent = _depths_and_parents(children)
        if self.mu is None:
            mu = np.zeros(N)
            mu[0] = 1.0
        else:
            mu = _as_float_array("mu", self.mu, 1)
            if mu.shape != (N,):
                raise ValueError(f"mu: expected shape (N,) = ({N},), got {mu.shape}")
            _check_distribution("mu", mu)
            if np.any((mu > 0) & (parent >= 0)):
                raise ValueError("mu: expected start mass only on root nodes (nodes without a parent)")
        horizon = int(depth.max())
        if horizon < 1:
            raise ValueError("children: expected a tree of depth >= 1 (the horizon), got a lone root")
        for name, arr in (("children", children), ("reward", reward), ("mu", mu),
                          ("depth", depth), ("parent", parent)):
            arr = np.ascontiguousarray(arr)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "horizon", horizon)

    @property
    def n_nodes(self) -> int:
        return self.children.shape[0]

    @property
    def n_actions(self) -> int:
        return self.children.shape[1]

    @cached_property
    def is_leaf(self) -> np.ndarray:
        """(N,) bool, True where the node has no children (computed once)."""
        leaf = self.children[:, 0] < 0
        leaf.setflags(write=False)
        return leaf

    @property
    def r_max(self) -> float:
        return max(float(np.abs(self.reward).max()), 1e-12)

    def policy_shape(self) -> tuple[int, int]:
        return (self.n_nodes, self.n_actions)

    def uniform_policy(self) -> np.ndarray:
        """(N, A) uniformly random policy (rows of leaves are unused)."""
        return np.full(self.policy_shape(), 1.0 / self.n_actions)

    def to_tabular(self, max_states: int = 20_000) -> TabularMDP:
        """Dense tabular form: one state per node plus one absorbing state (index N).

        ``R[n, a] = reward[children[n, a]]``; leaves and the absorbing state move to the absorbing
        state with zero reward. The horizon is kept, so a tabular (H, S, A) policy at step h only
        matters on nodes of depth h.
        """
        N, A = self.children.shape
        S = N + 1
        if S > max_states:
            raise ValueError(f"to_tabular: {S} states exceed max_states={max_states}")
        P = np.zeros((S, A, S))
        R = np.zeros((S, A))
        internal = ~self.is_leaf
        for n in np.flatnonzero(internal):
            P[n, np.arange(A), self.children[n]] = 1.0
            R[n] = self.reward[self.children[n]]
        P[np.flatnonzero(~internal), :, N] = 1.0
        P[N, :, N] = 1.0
        mu = np.append(self.mu, 0.0)
        return TabularMDP(P, R, mu, self.horizon, name=f"{self.name}-tabular")

    def tree_policy_to_tabular(self, policy: np.ndarray) -> np.ndarray:
        """Lift an (N, A) tree policy to an (H, S=N+1, A) tabular policy."""
        policy = np.asarray(policy, dtype=np.float64)
        N, A = self.children.shape
        out = np.full((self.horizon, N + 1, A), 1.0 / A)
        out[:, :N, :] = policy[None, :, :]
        return out


MDP = TabularMDP | TreeMDP


def check_policy(mdp: MDP, policy, name: str = "policy") -> np.ndarray:
    """Validate a policy for ``mdp`` and return it as a float64 array of the canonical shape.

    Tabular: (H, S, A), or (S, A) which is broadcast over steps. Tree: (N, A). Rows must be
    probability distributions (leaf rows of a tree are ignored but must still be finite).
    """
    pol = np.asarray(policy, dtype=np.float64)
    if isinstance(mdp, TabularMDP):
        H, S, A = mdp.policy_shape()
        if pol.shape == (S, A):
            pol = np.broadcast_to(pol, (H, S, A))
        if pol.shape != (H, S, A):
            raise ValueError(f"{name}: expected shape (H, S, A) = ({H}, {S}, {A}) or (S, A), got {pol.shape}")
    elif isinstance(mdp, TreeMDP):
        if pol.shape != mdp.policy_shape():
            raise ValueError(f"{name}: expected shape (N, A) = {mdp.policy_shape()}, got {pol.shape}")
    else:
        raise ValueError(f"mdp: expected a TabularMDP or TreeMDP, got {type(mdp).__name__}")
    pol = np.ascontiguousarray(pol)
    if isinstance(mdp, TabularMDP):
        # One compiled pass decides; the numpy checks below only word the error.
        if _rows_are_distributions(pol.reshape(-1, pol.shape[-1]), _ATOL, 1e-6):
            return pol
        if not np.all(np.isfinite(pol)):
            raise ValueError(f"{name}: expected finite probabilities, found NaN or inf")
        _check_distribution(name, pol)
        return pol
    # Trees can have 10^6+ nodes: one compiled pass checks finiteness, signs and the row sums of
    # non-leaf rows (leaf rows are never used) instead of several numpy passes and a copy.
    code, where, val = _tree_policy_problem(pol, mdp.is_leaf, _ATOL, 1e-6)
    if code == 1:
        raise ValueError(f"{name}: expected finite probabilities, found NaN or inf at node {where}")
    if code == 2:
        raise ValueError(f"{name}: expected probabilities >= 0, found {val:.3g} at node {where}")
    if code == 3:
        raise ValueError(
            f"{name}: expected probabilities summing to 1 along the last axis, found a sum of "
            f"{val:.6g} at node {where}"
        )
    return pol


@nb.njit(cache=True)
def _rows_are_distributions(pol, atol, sum_tol):  # pragma: no cover - compiled
    """True when every row of ``pol`` (m, A) is finite, >= -atol and sums to 1 +- sum_tol."""
    m, A = pol.shape
    ok = True
    for r in range(m):
        total = 0.0
        for a in range(A):
            x = pol[r, a]
            ok &= (x >= -atol) & (x < np.inf)  # False for NaN and +-inf; no branch
            total += x
        ok &= abs(total - 1.0) <= sum_tol
    return ok


@nb.njit(cache=True)
def _tree_policy_problem(pol, is_leaf, atol, sum_tol):  # pragma: no cover - compiled
    """Return (code, node, value): 0 ok, 1 non-finite, 2 negative, 3 row sum off (non-leaf)."""
    N, A = pol.shape
    for n in range(N):
        total = 0.0
        for a in range(A):
            x = pol[n, a]
            if not np.isfinite(x):
                return 1, n, x
            if x < -atol:
                return 2, n, x
            total += x
        if not is_leaf[n] and abs(total - 1.0) > sum_tol:
            return 3, n, total
    return 0, -1, 0.0


def check_tau(tau) -> float:
    """Return ``tau`` as a float, or raise unless it is a finite number >= 0."""
    try:
        t = float(tau)
    except (TypeError, ValueError):
        raise ValueError(f"tau: expected a finite number >= 0, got {tau!r}") from None
    if not np.isfinite(t) or t < 0:
        raise ValueError(f"tau: expected a finite number >= 0, got {tau!r}")
    return t
