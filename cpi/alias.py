"""Alias tables: O(1) categorical draws for the sampling kernels (built once per MDP / policy).

Walker's alias method (Vose's construction): a distribution over k outcomes becomes k slots, each
holding a threshold and an alias; a uniform u picks slot ``i = floor(u k)`` and keeps ``i`` when
the fractional part ``u k - i`` is below the slot's threshold, else takes its alias. One uniform,
one load and one comparison per draw, however many outcomes there are.

* :func:`policy_table` -- the packed table of a policy's action distributions (per flat state);
* :func:`state_table` -- a packed table over flat states (reset weights);
* :func:`tables` -- the kernel view of an MDP (cached per MDP object): tabular transitions as
  alias slots over each (s, a) row's successors, or a tree's children and rewards.

Flat state index: see :mod:`cpi.rollouts`.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numba as nb
import numpy as np

from cpi.mdp import MDP, TabularMDP, check_policy


# ---------------------------------------------------------------------------------------------
# Sampling tables
# ---------------------------------------------------------------------------------------------
def _cdf_rows(prob: np.ndarray) -> np.ndarray:
    """Row-wise CDFs with the last entry exactly 1.0 (so ``u < cdf[-1]`` always holds)."""
    cdf = np.cumsum(prob, axis=-1)
    last = cdf[..., -1:]
    cdf = np.where(last > 0, cdf / np.where(last > 0, last, 1.0), 1.0)
    cdf[..., -1] = 1.0
    return np.ascontiguousarray(cdf)


def start_support(mu_cdf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(cdf, idx)``: the entries of a start CDF where it increases, and their states.

    The first state with ``mu_cdf[s] > u`` is always one where the CDF increases, so searching
    these (one entry for a tree's root) gives the same state as searching the whole CDF.
    """
    up = np.flatnonzero(np.diff(mu_cdf, prepend=0.0) > 0)
    return np.ascontiguousarray(mu_cdf[up]), up.astype(np.int64)


@dataclass(frozen=True)
class TabularTables:
    """Alias-table form of a :class:`TabularMDP` (built once per MDP and cached).

    Row ``r = s*A + a`` owns the slots ``ptr[r] .. ptr[r+1]-1``, one per successor with
    ``P[s, a, s'] > 0`` (k of them). Sampling s' ~ P[s, a] (Walker/Vose alias method, O(1)):
    draw ``u ~ U[0, 1)``, slot ``j = ptr[r] + floor(u k)``, keep ``succ[j]`` if the fractional
    part ``u k - floor(u k) < keep[j]``, else take ``alias[j]``.

    ptr: (S*A + 1,) int64. succ, alias: (nnz,) int64 states. keep: (nnz,) float64 in [0, 1].
    slots: (nnz, 3) uint32 rows ``(floor(keep * 2**32), succ, alias)``: the same table packed
        into 12 bytes per slot so that a step touches one cache line and large dense rows stay
        in cache (what the kernels read; needs S < 2**32).
    R: (S, A) rewards. mu_cdf: (S,) start CDF; start_cdf, start_idx: its support
    (:func:`start_support`, what the kernels search).
    """

    ptr: np.ndarray
    succ: np.ndarray
    keep: np.ndarray
    alias: np.ndarray
    slots: np.ndarray
    R: np.ndarray
    mu_cdf: np.ndarray
    start_cdf: np.ndarray
    start_idx: np.ndarray


@nb.njit(cache=True)
def _alias_tables(ptr, succ, probs):  # pragma: no cover - compiled
    """Vose's alias method, row by row: returns (keep, alias) aligned with ``succ``."""
    nnz = succ.shape[0]
    keep = np.ones(nnz)
    alias = succ.copy()
    small = np.empty(nnz, dtype=np.int64)
    large = np.empty(nnz, dtype=np.int64)
    scaled = np.empty(nnz)
    for r in range(ptr.shape[0] - 1):
        lo, hi = ptr[r], ptr[r + 1]
        k = hi - lo
        if k <= 1:
            continue
        tot = 0.0
        for j in range(lo, hi):
            tot += probs[j]
        ns = nl = 0
        for j in range(lo, hi):
            scaled[j] = probs[j] * k / tot
            if scaled[j] < 1.0:
                small[ns] = j
                ns += 1
            else:
                large[nl] = j
                nl += 1
        while ns > 0 and nl > 0:
            ns -= 1
            j = small[ns]
            g = large[nl - 1]
            keep[j] = scaled[j]
            alias[j] = succ[g]
            scaled[g] = scaled[g] + scaled[j] - 1.0
            if scaled[g] < 1.0:
                nl -= 1
                small[ns] = g
                ns += 1
        # leftovers (round-off) keep themselves with probability 1
    return keep, alias


@nb.njit(cache=True)
def _pack_rows(probs):  # pragma: no cover - compiled
    """:func:`alias_pack` of a C-contiguous (m, k) float64 array, in one compiled pass."""
    m, k = probs.shape
    ptr = np.arange(m + 1) * k
    cols = np.empty(m * k, dtype=np.int64)
    flat = probs.ravel().copy()
    for r in range(m):
        tot = 0.0
        for j in range(k):
            cols[r * k + j] = j
            tot += probs[r, j]
        if tot <= 0:  # a zero row draws column 0
            flat[r * k] = 1.0
    keep, alias = _alias_tables(ptr, cols, flat)
    out = np.empty(m * k, dtype=np.uint64)
    for j in range(m * k):
        t = 4294967295.0 if keep[j] >= 1.0 else min(np.floor(keep[j] * 4294967296.0), 4294967295.0)
        out[j] = (np.uint64(t) << np.uint64(32)) | np.uint64(alias[j])
    return out


def alias_pack(probs: np.ndarray) -> np.ndarray:
    """Alias tables of the rows of ``probs`` (m, k), packed one uint64 per slot.

    Slot ``j`` of row ``r`` is ``packed[r * k + j] = (threshold << 32) | alias`` with
    ``threshold = floor(keep * 2**32)``: a draw ``u ~ U[0, 1)`` takes ``i = floor(u k)`` and returns
    ``i`` if ``(u k - i) 2**32 < threshold`` else ``alias`` (Walker/Vose; one load, one compare).
    Rows need not be normalised (a zero row returns column 0). Needs k < 2**32.
    """
    probs = np.ascontiguousarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs: expected a 2-d array (rows, outcomes), got shape {probs.shape}")
    return _pack_rows(probs)


class _TableCache:
    """The last few (key array, table) pairs: a sampler called again on an equal policy or
    weight vector reuses its table (compared by content, so in-place edits are seen)."""

    def __init__(self, size: int = 4):
        self.size, self.items = size, []

    def get(self, owner, arr: np.ndarray):
        for i, (ref, key, table) in enumerate(self.items):
            o = ref() if ref is not None else None
            if o is owner and key.shape == arr.shape and np.array_equal(key, arr):
                if i:
                    self.items.insert(0, self.items.pop(i))
                return table
        return None

    def put(self, owner, arr: np.ndarray, table: np.ndarray) -> None:
        table.setflags(write=False)
        ref = weakref.ref(owner) if owner is not None else None  # never keeps an MDP alive
        self.items.insert(0, (ref, arr.copy(), table))
        del self.items[self.size :]


_POLICY_TABLES = _TableCache()
_STATE_TABLES = _TableCache()


def policy_table(mdp: MDP, policy) -> np.ndarray:
    """(X * A,) packed alias table of ``policy`` in the flat state index (see :func:`alias_pack`);
    built once per policy, O(X A); read-only, cached for the last few policies of each MDP."""
    raw = np.asarray(policy, dtype=np.float64)
    table = _POLICY_TABLES.get(mdp, raw)
    if table is None:
        table = alias_pack(check_policy(mdp, raw).reshape(-1, mdp.n_actions))
        _POLICY_TABLES.put(mdp, raw, table)
    return table


def state_table(weights: np.ndarray) -> np.ndarray:
    """(X,) packed alias table drawing a flat state with probability proportional to ``weights``
    (read-only, cached for the last few weight vectors)."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    table = _STATE_TABLES.get(None, w)
    if table is None:
        if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
            raise ValueError("weights: expected finite non-negative numbers with a positive sum")
        table = alias_pack(w[None, :])
        _STATE_TABLES.put(None, w, table)
    return table


@dataclass(frozen=True)
class TreeTables:
    """Kernel view of a :class:`TreeMDP`: children (N, A) int64 C-contiguous, reward (N,),
    depth (N,), start CDF (N,) and its support (start_cdf, start_idx: :func:`start_support`)."""

    children: np.ndarray
    reward: np.ndarray
    depth: np.ndarray
    mu_cdf: np.ndarray
    full_depth: bool  # every reachable leaf sits at the horizon (no early leaves)
    start_cdf: np.ndarray
    start_idx: np.ndarray


_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tables(mdp: MDP) -> TabularTables | TreeTables:
    """Sampling tables of ``mdp`` (cached per MDP object)."""
    cached = _TABLES.get(mdp)
    if cached is not None:
        return cached
    if isinstance(mdp, TabularMDP):
        S, A, _ = mdp.P.shape
        flat = mdp.P.reshape(S * A, S)
        rows, cols = np.nonzero(flat > 0)  # row-major: grouped by row
        probs = np.ascontiguousarray(flat[rows, cols])
        counts = np.bincount(rows, minlength=S * A)
        ptr = np.zeros(S * A + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        succ = cols.astype(np.int64)
        keep, alias = _alias_tables(ptr, succ, probs)
        thresh = np.minimum(np.floor(keep * 2.0**32), 2.0**32 - 1).astype(np.uint32)
        thresh[keep >= 1.0] = np.uint32(2**32 - 1)  # and alias == succ there, so always kept
        slots = np.ascontiguousarray(
            np.stack([thresh, succ.astype(np.uint32), alias.astype(np.uint32)], axis=1)
        )
        mu_cdf = _cdf_rows(mdp.mu)
        out = TabularTables(
            ptr,
            succ,
            keep,
            alias,
            slots,
            np.ascontiguousarray(mdp.R),
            mu_cdf,
            *start_support(mu_cdf),
        )
    else:
        # A root that is itself a leaf and has start mass is an episode of length 0 < H: an
        # early leaf too (the fixed-length walk would step off it to node -1).
        leaves = mdp.is_leaf & ((mdp.depth > 0) | (mdp.mu > 0))
        full = bool(np.all(mdp.depth[leaves] == mdp.horizon))
        mu_cdf = _cdf_rows(mdp.mu)
        out = TreeTables(
            np.ascontiguousarray(mdp.children, dtype=np.int64),
            np.ascontiguousarray(mdp.reward, dtype=np.float64),
            mdp.depth,
            mu_cdf,
            full,
            *start_support(mu_cdf),
        )
    _TABLES[mdp] = out
    return out
