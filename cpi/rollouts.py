"""Monte Carlo kernels: episodes, reset-state sampling and Q-rollouts (Numba).

States are addressed by a *flat index* ``x`` shared with :mod:`cpi.selectors` and
:mod:`cpi.estimators`: for a :class:`~cpi.mdp.TabularMDP` ``x = h * S + s`` (a (step, state)
pair, ``X = H * S``); for a :class:`~cpi.mdp.TreeMDP` ``x`` is the node (``X = N``, the step is
the depth). A policy seen through this index is the (X, A) matrix ``policy.reshape(-1, A)``.

Actions and start states are sampled by inverse CDF (``a = first index with u < cdf[a]`` for
``u ~ U[0, 1)``); next states of a tabular ``P`` by the alias method over each row's successor
list (one uniform and one comparison per step, sparse or dense rows alike). All randomness comes from
``numpy.random.Generator`` objects passed into the compiled kernels; nothing touches global state.

Cost accounting (units: environment steps = transitions simulated):

* a base rollout to a reset candidate at step ``h`` costs ``h`` steps (tabular, and trees whose
  leaves all sit at the horizon); on a tree with early leaves the whole base episode must be run to
  know its length ``L`` (the reset step is uniform over its ``L`` non-leaf steps), so it costs ``L``;
* a Q-rollout from a state at step ``h`` costs ``H - h`` steps (tree: until the leaf);
* an on-policy episode costs ``H`` steps (tree: its length).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numba as nb
import numpy as np

from cpi.mdp import MDP, TabularMDP, TreeMDP, check_policy


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
    R: (S, A) rewards. mu_cdf: (S,) start CDF.
    """

    ptr: np.ndarray
    succ: np.ndarray
    keep: np.ndarray
    alias: np.ndarray
    slots: np.ndarray
    R: np.ndarray
    mu_cdf: np.ndarray


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


@dataclass(frozen=True)
class TreeTables:
    """Kernel view of a :class:`TreeMDP`: children (N, A), reward (N,), depth (N,), start CDF."""

    children: np.ndarray
    reward: np.ndarray
    depth: np.ndarray
    mu_cdf: np.ndarray
    full_depth: bool  # every reachable leaf sits at the horizon (no early leaves)


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
        slots = np.ascontiguousarray(np.stack([thresh, succ.astype(np.uint32),
                                               alias.astype(np.uint32)], axis=1))
        out = TabularTables(ptr, succ, keep, alias, slots, np.ascontiguousarray(mdp.R),
                            _cdf_rows(mdp.mu))
    else:
        # A root that is itself a leaf and has start mass is an episode of length 0 < H: an
        # early leaf too (the fixed-length walk would step off it to node -1).
        leaves = mdp.is_leaf & ((mdp.depth > 0) | (mdp.mu > 0))
        full = bool(np.all(mdp.depth[leaves] == mdp.horizon))
        out = TreeTables(mdp.children, mdp.reward, mdp.depth, _cdf_rows(mdp.mu), full)
    _TABLES[mdp] = out
    return out


def flat_policy_cdf(mdp: MDP, policy) -> np.ndarray:
    """(X, A) row CDFs of ``policy`` in the flat state index (see module doc)."""
    pol = check_policy(mdp, policy)
    return _cdf_rows(pol.reshape(-1, mdp.n_actions))


# ---------------------------------------------------------------------------------------------
# Kernels: primitives
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, inline="always")
def _draw_row(cdf_row, u):  # pragma: no cover - compiled
    """Inverse CDF on one row: first index i with u < cdf_row[i]."""
    i = 0
    while u >= cdf_row[i]:
        i += 1
    return i


@nb.njit(cache=True, inline="always")
def _draw_start(mu_cdf, u):  # pragma: no cover - compiled
    return np.searchsorted(mu_cdf, u, side="right")


@nb.njit(cache=True, inline="always")
def _next_state(ptr, slots, row, u):  # pragma: no cover - compiled
    """s' ~ P[s, a] for ``row = s*A + a`` from the alias table (see :class:`TabularTables`)."""
    lo = ptr[row]
    k = ptr[row + 1] - lo
    v = u * k
    i = int(v)
    j = lo + i
    if (v - i) * 4294967296.0 < slots[j, 0]:
        return np.int64(slots[j, 1])
    return np.int64(slots[j, 2])


# ---------------------------------------------------------------------------------------------
# Kernels: tabular
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _tab_returns(ptr, slots, R, mu_cdf, pcdf, H, n, rng):  # pragma: no cover - compiled
    """Returns of n episodes of H steps; pcdf is the (H*S, A) policy CDF."""
    S, A = R.shape
    out = np.empty(n)
    for i in range(n):
        s = _draw_start(mu_cdf, rng.random())
        g = 0.0
        for h in range(H):
            a = _draw_row(pcdf[h * S + s], rng.random())
            g += R[s, a]
            s = _next_state(ptr, slots, s * A + a, rng.random())
        out[i] = g
    return out


@nb.njit(cache=True)
def _offer(x, sel, in_G, rng_sel, acc, counts):  # pragma: no cover - compiled
    """Offer candidate x to the selector: accept with probability sel[x] (a draw from rng_sel only
    when 0 < sel[x] < 1), append it to ``acc``; counts = [accepted, candidates in G, accepted in G]."""
    p = sel[x]
    ok = p >= 1.0 or (p > 0.0 and rng_sel.random() < p)
    if in_G[x]:
        counts[1] += 1
    if ok:
        acc[counts[0]] = x
        counts[0] += 1
        if in_G[x]:
            counts[2] += 1


@nb.njit(cache=True)
def _tab_resets(ptr, slots, R, mu_cdf, pcdf, H, n_accept, sel, in_G, max_candidates,
                rng, rng_sel):  # pragma: no cover - compiled
    """Reset candidates x = h*S + s ~ d (h uniform in 0..H-1, then h on-policy steps), each
    accepted with probability sel[x] (no draw when sel[x] is 0 or 1), until n_accept are accepted.

    Returns (accepted (n,) flat states, n_candidates, base_steps, candidates_in_G, accepted_in_G).
    """
    S, A = R.shape
    acc = np.empty(n_accept, dtype=np.int64)
    counts = np.zeros(3, dtype=np.int64)  # accepted, candidates in G, accepted in G
    n_cand = 0
    steps = 0
    while counts[0] < n_accept and n_cand < max_candidates:
        h = min(int(rng.random() * H), H - 1)
        s = _draw_start(mu_cdf, rng.random())
        for t in range(h):
            a = _draw_row(pcdf[t * S + s], rng.random())
            s = _next_state(ptr, slots, s * A + a, rng.random())
        steps += h
        n_cand += 1
        _offer(h * S + s, sel, in_G, rng_sel, acc, counts)
    n_acc, cand_G, acc_G = counts
    return acc[:n_acc], n_cand, steps, cand_G, acc_G


@nb.njit(cache=True)
def _tab_q_rollouts(ptr, slots, R, pcdf, H, starts, group, rng):  # pragma: no cover
    """``group`` Q-rollouts per start x = h*S + s: a uniform action, then the policy to step H.

    Returns actions (n, group) int64, Q samples (n, group) (return-to-go from x), env steps.
    """
    S, A = R.shape
    n = starts.shape[0]
    acts = np.empty((n, group), dtype=np.int64)
    qs = np.empty((n, group))
    steps = 0
    for i in range(n):
        h0 = starts[i] // S
        s0 = starts[i] - h0 * S
        for j in range(group):
            a = min(int(rng.random() * A), A - 1)
            acts[i, j] = a
            g = R[s0, a]
            s = _next_state(ptr, slots, s0 * A + a, rng.random())
            for h in range(h0 + 1, H):
                b = _draw_row(pcdf[h * S + s], rng.random())
                g += R[s, b]
                s = _next_state(ptr, slots, s * A + b, rng.random())
            qs[i, j] = g
            steps += H - h0
    return acts, qs, steps


@nb.njit(cache=True)
def _tab_episodes(ptr, slots, R, mu_cdf, pcdf, H, n, rng):  # pragma: no cover - compiled
    """n on-policy episodes: visited flat states (n, H), actions (n, H), return-to-go (n, H)."""
    S, A = R.shape
    xs = np.empty((n, H), dtype=np.int64)
    acts = np.empty((n, H), dtype=np.int64)
    rtg = np.empty((n, H))
    for i in range(n):
        s = _draw_start(mu_cdf, rng.random())
        for h in range(H):
            a = _draw_row(pcdf[h * S + s], rng.random())
            xs[i, h] = h * S + s
            acts[i, h] = a
            rtg[i, h] = R[s, a]
            s = _next_state(ptr, slots, s * A + a, rng.random())
        for h in range(H - 2, -1, -1):
            rtg[i, h] += rtg[i, h + 1]
    return xs, acts, rtg


# ---------------------------------------------------------------------------------------------
# Kernels: tree
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _tree_returns(children, reward, mu_cdf, pcdf, n, rng):  # pragma: no cover - compiled
    out = np.empty(n)
    for i in range(n):
        x = _draw_start(mu_cdf, rng.random())
        g = 0.0
        while children[x, 0] >= 0:
            x = children[x, _draw_row(pcdf[x], rng.random())]
            g += reward[x]
        out[i] = g
    return out


@nb.njit(cache=True)
def _tree_resets(children, depth, mu_cdf, pcdf, H, full_depth, n_accept, sel, in_G,
                 max_candidates, rng, rng_sel):  # pragma: no cover - compiled
    """Tree reset candidates: uniform step among the episode's non-leaf steps (see module doc)."""
    acc = np.empty(n_accept, dtype=np.int64)
    path = np.empty(H + 1, dtype=np.int64)
    counts = np.zeros(3, dtype=np.int64)  # accepted, candidates in G, accepted in G
    n_cand = 0
    steps = 0
    while counts[0] < n_accept and n_cand < max_candidates:
        n_cand += 1
        x = _draw_start(mu_cdf, rng.random())
        if full_depth:
            h = min(int(rng.random() * H), H - 1)
            for _ in range(h):
                x = children[x, _draw_row(pcdf[x], rng.random())]
            steps += h
        else:
            L = 0
            path[0] = x
            while children[x, 0] >= 0:
                x = children[x, _draw_row(pcdf[x], rng.random())]
                L += 1
                path[L] = x
            steps += L
            if L == 0:  # a root that is a leaf: nothing to reset at
                continue
            h = min(int(rng.random() * L), L - 1)
            x = path[h]
        _offer(x, sel, in_G, rng_sel, acc, counts)
    n_acc, cand_G, acc_G = counts
    return acc[:n_acc], n_cand, steps, cand_G, acc_G


@nb.njit(cache=True)
def _tree_q_rollouts(children, reward, pcdf, starts, group, rng):  # pragma: no cover
    N, A = children.shape
    n = starts.shape[0]
    acts = np.empty((n, group), dtype=np.int64)
    qs = np.empty((n, group))
    steps = 0
    for i in range(n):
        for j in range(group):
            a = min(int(rng.random() * A), A - 1)
            acts[i, j] = a
            x = children[starts[i], a]
            g = reward[x]
            steps += 1
            while children[x, 0] >= 0:
                x = children[x, _draw_row(pcdf[x], rng.random())]
                g += reward[x]
                steps += 1
            qs[i, j] = g
    return acts, qs, steps


@nb.njit(cache=True)
def _tree_episodes(children, reward, mu_cdf, pcdf, H, n, rng):  # pragma: no cover - compiled
    """Like _tab_episodes; an episode shorter than H is padded with x = -1, action -1, rtg 0."""
    xs = np.full((n, H), -1, dtype=np.int64)
    acts = np.full((n, H), -1, dtype=np.int64)
    rtg = np.zeros((n, H))
    for i in range(n):
        x = _draw_start(mu_cdf, rng.random())
        t = 0
        while children[x, 0] >= 0:
            a = _draw_row(pcdf[x], rng.random())
            xs[i, t] = x
            acts[i, t] = a
            x = children[x, a]
            rtg[i, t] = reward[x]
            t += 1
        for h in range(t - 2, -1, -1):
            rtg[i, h] += rtg[i, h + 1]
    return xs, acts, rtg


# ---------------------------------------------------------------------------------------------
# Public samplers
# ---------------------------------------------------------------------------------------------
def simulate_returns(mdp: MDP, policy, n_episodes: int, rng: np.random.Generator) -> np.ndarray:
    """Returns of ``n_episodes`` independent on-policy episodes from ``mu``: shape (n_episodes,).

    Units: reward units (sum of the H one-step rewards; tree: sum of rewards on arrival).
    ``rng`` is a ``numpy.random.Generator`` consumed by the compiled kernel.
    """
    n = int(n_episodes)
    if n < 0:
        raise ValueError(f"n_episodes: expected an int >= 0, got {n_episodes!r}")
    tb = tables(mdp)
    pcdf = flat_policy_cdf(mdp, policy)
    if isinstance(mdp, TabularMDP):
        return _tab_returns(tb.ptr, tb.slots, tb.R, tb.mu_cdf, pcdf, mdp.horizon, n, rng)
    return _tree_returns(tb.children, tb.reward, tb.mu_cdf, pcdf, n, rng)


@dataclass(frozen=True)
class ResetBatch:
    """Accepted reset states of one draw and what finding them cost.

    states: (n,) flat state indices, i.i.d. from the reset distribution d restricted to and
        reweighted by the selector, ``d(x) sel(x) / sum d sel``.
    n_candidates: candidates drawn from d (accepted + rejected).
    base_steps: environment steps of the base rollouts to all candidates.
    candidates_in_G, accepted_in_G: counts for precision/recall (``in_G`` given to the sampler).
    """

    states: np.ndarray
    n_candidates: int
    base_steps: int
    candidates_in_G: int
    accepted_in_G: int


def sample_resets(mdp: MDP, policy, n_accept: int, select: np.ndarray, in_G: np.ndarray,
                  rng: np.random.Generator, rng_select: np.random.Generator,
                  max_candidates: int = 10**9) -> ResetBatch:
    """Draw candidates from the reset distribution of ``policy`` until ``n_accept`` are accepted.

    ``select`` (X,) is the per-visit acceptance probability (1 everywhere: random reset; the
    indicator of G: oracle; gamma on G and q off G: approximate selector); ``in_G`` (X,) bool is
    used only to count. ``rng_select`` is consumed only where ``0 < select[x] < 1``.
    """
    tb = tables(mdp)
    pcdf = flat_policy_cdf(mdp, policy)
    sel = np.ascontiguousarray(select, dtype=np.float64).ravel()
    G = np.ascontiguousarray(in_G, dtype=np.bool_).ravel()
    if isinstance(mdp, TabularMDP):
        res = _tab_resets(tb.ptr, tb.slots, tb.R, tb.mu_cdf, pcdf, mdp.horizon,
                          int(n_accept), sel, G, int(max_candidates), rng, rng_select)
    else:
        res = _tree_resets(tb.children, tb.depth, tb.mu_cdf, pcdf, mdp.horizon, tb.full_depth,
                           int(n_accept), sel, G, int(max_candidates), rng, rng_select)
    states, n_cand, steps, cand_G, acc_G = res
    return ResetBatch(states, int(n_cand), int(steps), int(cand_G), int(acc_G))


def q_rollouts(mdp: MDP, policy, starts: np.ndarray, group_size: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """``group_size`` Q-rollouts at each start state (uniform exploratory action, then ``policy``).

    Returns ``(actions, Q, env_steps)``: actions (n, group_size) int, Q (n, group_size) returns
    to go in reward units (unbiased for Q^policy(x, a)), env_steps the transitions simulated.
    """
    tb = tables(mdp)
    pcdf = flat_policy_cdf(mdp, policy)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    if isinstance(mdp, TabularMDP):
        a, q, steps = _tab_q_rollouts(tb.ptr, tb.slots, tb.R, pcdf, mdp.horizon, starts,
                                      int(group_size), rng)
    else:
        a, q, steps = _tree_q_rollouts(tb.children, tb.reward, pcdf, starts, int(group_size), rng)
    return a, q, int(steps)


def on_policy_episodes(mdp: MDP, policy, n_episodes: int, rng: np.random.Generator):
    """``n_episodes`` full episodes from ``mu`` with no branching.

    Returns ``(states, actions, return_to_go, env_steps)``, each array (n, H); tree episodes
    that end early are padded with state -1 and action -1.
    """
    tb = tables(mdp)
    pcdf = flat_policy_cdf(mdp, policy)
    n = int(n_episodes)
    if isinstance(mdp, TabularMDP):
        xs, acts, rtg = _tab_episodes(tb.ptr, tb.slots, tb.R, tb.mu_cdf, pcdf,
                                      mdp.horizon, n, rng)
    else:
        xs, acts, rtg = _tree_episodes(tb.children, tb.reward, tb.mu_cdf, pcdf, mdp.horizon, n,
                                       rng)
    return xs, acts, rtg, int((xs >= 0).sum())


def flat_state_count(mdp: MDP) -> int:
    """X, the number of flat states (tabular H*S, tree N)."""
    if isinstance(mdp, TabularMDP):
        return mdp.horizon * mdp.n_states
    assert isinstance(mdp, TreeMDP)
    return mdp.n_nodes
