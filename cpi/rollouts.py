"""Monte Carlo kernels: episodes, reset-state sampling and Q-rollouts (Numba).

States are addressed by a *flat index* ``x`` shared with :mod:`cpi.selectors` and
:mod:`cpi.estimators`: for a :class:`~cpi.mdp.TabularMDP` ``x = h * S + s`` (a (step, state)
pair, ``X = H * S``); for a :class:`~cpi.mdp.TreeMDP` ``x`` is the node (``X = N``, the step is
the depth). A policy seen through this index is the (X, A) matrix ``policy.reshape(-1, A)``.

Actions are sampled by the alias method from a table built once per policy
(:func:`policy_table`), next states of a tabular ``P`` by the alias method over each row's
successor list (built once per MDP): one uniform and one comparison each, so a tabular step costs
two uniforms and O(1) work however dense the rows are, and a tree step one uniform. Start states
use inverse CDF. The tabular episode kernels advance ``LANES`` independent episodes in lockstep
so that their table look-ups (cache misses on large MDPs) overlap instead of waiting one after
another; tree kernels run one episode at a time (lanes measured no faster there).
All randomness comes from ``numpy.random.Generator`` objects passed into the compiled kernels;
nothing touches global state.

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


#: Episodes advanced in lockstep by the kernels (memory-level parallelism).
LANES = 8


def alias_pack(probs: np.ndarray) -> np.ndarray:
    """Alias tables of the rows of ``probs`` (m, k), packed one uint64 per slot.

    Slot ``j`` of row ``r`` is ``packed[r * k + j] = (threshold << 32) | alias`` with
    ``threshold = floor(keep * 2**32)``: a draw ``u ~ U[0, 1)`` takes ``i = floor(u k)`` and returns
    ``i`` if ``(u k - i) 2**32 < threshold`` else ``alias`` (Walker/Vose; one load, one compare).
    Rows need not be normalised (a zero row returns column 0). Needs k < 2**32.
    """
    probs = np.ascontiguousarray(probs, dtype=np.float64)
    m, k = probs.shape
    ptr = np.arange(m + 1, dtype=np.int64) * k
    cols = np.tile(np.arange(k, dtype=np.int64), m)
    flat = probs.ravel()
    zero = probs.sum(axis=1) <= 0
    if zero.any():
        flat = flat.copy().reshape(m, k)
        flat[zero, 0] = 1.0
        flat = flat.ravel()
    keep, alias = _alias_tables(ptr, cols, flat)
    thresh = np.minimum(np.floor(keep * 2.0**32), 2.0**32 - 1).astype(np.uint64)
    thresh[keep >= 1.0] = np.uint64(2**32 - 1)  # and alias == itself there, so always kept
    return (thresh << np.uint64(32)) | alias.astype(np.uint64)


def policy_table(mdp: MDP, policy) -> np.ndarray:
    """(X * A,) packed alias table of ``policy`` in the flat state index (see :func:`alias_pack`);
    built once per policy, O(X A)."""
    pol = check_policy(mdp, policy)
    return alias_pack(pol.reshape(-1, mdp.n_actions))


def state_table(weights: np.ndarray) -> np.ndarray:
    """(X,) packed alias table drawing a flat state with probability proportional to ``weights``."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
        raise ValueError("weights: expected finite non-negative numbers with a positive sum")
    return alias_pack(w[None, :])


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


# ---------------------------------------------------------------------------------------------
# Kernels: primitives
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, inline="always")
def _draw_alias(tab, base, k, u):  # pragma: no cover - compiled
    """Index in [0, k) from the packed alias row starting at ``tab[base]`` (see alias_pack)."""
    v = u * k
    i = int(v)
    if i >= k:  # u k can round up to k when u is within an ulp of 1
        i = k - 1
    w = tab[base + i]
    if (v - i) * 4294967296.0 < np.float64(w >> np.uint64(32)):
        return np.int64(i)
    return np.int64(w & np.uint64(0xFFFFFFFF))


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
# Lane scheduling: LANES episodes are in flight at once; a lane that finishes takes the next
# pending episode, so lanes of different lengths stay busy. The draws are consumed in a fixed
# order (lane by lane, step by step), so a generator state still fixes every output.
@nb.njit(cache=True, nogil=True)
def _tab_returns(ptr, slots, R, mu_cdf, ptab, H, n, rng):  # pragma: no cover - compiled
    """Returns of n episodes of H steps; ptab is the packed (H*S*A,) policy alias table."""
    S, A = R.shape
    out = np.empty(n)
    s = np.zeros(LANES, dtype=np.int64)
    g = np.zeros(LANES)
    for i0 in range(0, n, LANES):
        m = min(LANES, n - i0)
        for lane in range(m):
            s[lane] = _draw_start(mu_cdf, rng.random())
            g[lane] = 0.0
        for h in range(H):
            for lane in range(m):
                x = s[lane]
                a = _draw_alias(ptab, (h * S + x) * A, A, rng.random())
                g[lane] += R[x, a]
                s[lane] = _next_state(ptr, slots, x * A + a, rng.random())
        for lane in range(m):
            out[i0 + lane] = g[lane]
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


@nb.njit(cache=True, nogil=True)
def _tab_resets(ptr, slots, R, mu_cdf, ptab, H, n_accept, sel, in_G, max_candidates,
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
            a = _draw_alias(ptab, (t * S + s) * A, A, rng.random())
            s = _next_state(ptr, slots, s * A + a, rng.random())
        steps += h
        n_cand += 1
        _offer(h * S + s, sel, in_G, rng_sel, acc, counts)
    n_acc, cand_G, acc_G = counts
    return acc[:n_acc], n_cand, steps, cand_G, acc_G


@nb.njit(cache=True, inline="always")
def _tab_start_q(ln, r, group, starts, ptr, slots, R, S, A, rng, acts, lane_r, lane_s, lane_h,
                 lane_g):  # pragma: no cover - compiled
    """Start Q-rollout r (start starts[r // group]) in lane ln: the uniform first action and its
    transition. Returns the rollout's env steps (H - h0)."""
    i = r // group
    h0 = starts[i] // S
    s0 = starts[i] - h0 * S
    a = min(int(rng.random() * A), A - 1)
    acts[i, r - i * group] = a
    lane_g[ln] = R[s0, a]
    lane_s[ln] = _next_state(ptr, slots, s0 * A + a, rng.random())
    lane_h[ln] = h0 + 1
    lane_r[ln] = r
    return h0


@nb.njit(cache=True, nogil=True)
def _tab_q_rollouts(ptr, slots, R, ptab, H, starts, group, rng):  # pragma: no cover
    """``group`` Q-rollouts per start x = h*S + s: a uniform action, then the policy to step H.

    Returns actions (n, group) int64, Q samples (n, group) (return-to-go from x), env steps.
    """
    S, A = R.shape
    n = starts.shape[0]
    total = n * group
    acts = np.empty((n, group), dtype=np.int64)
    qs = np.empty((n, group))
    lane_r = np.full(LANES, -1, dtype=np.int64)
    lane_s = np.zeros(LANES, dtype=np.int64)
    lane_h = np.zeros(LANES, dtype=np.int64)
    lane_g = np.zeros(LANES)
    steps = 0
    nxt = 0
    active = 0
    for ln in range(LANES):
        if nxt < total:
            h0 = _tab_start_q(ln, nxt, group, starts, ptr, slots, R, S, A, rng, acts, lane_r,
                              lane_s, lane_h, lane_g)
            steps += H - h0
            nxt += 1
            active += 1
    while active > 0:
        for ln in range(LANES):
            r = lane_r[ln]
            if r < 0:
                continue
            h = lane_h[ln]
            if h < H:
                x = lane_s[ln]
                b = _draw_alias(ptab, (h * S + x) * A, A, rng.random())
                lane_g[ln] += R[x, b]
                lane_s[ln] = _next_state(ptr, slots, x * A + b, rng.random())
                lane_h[ln] = h + 1
                continue
            i = r // group
            qs[i, r - i * group] = lane_g[ln]
            if nxt < total:
                h0 = _tab_start_q(ln, nxt, group, starts, ptr, slots, R, S, A, rng, acts,
                                  lane_r, lane_s, lane_h, lane_g)
                steps += H - h0
                nxt += 1
            else:
                lane_r[ln] = -1
                active -= 1
    return acts, qs, steps


@nb.njit(cache=True, nogil=True)
def _tab_episodes(ptr, slots, R, mu_cdf, ptab, H, n, rng):  # pragma: no cover - compiled
    """n on-policy episodes: visited flat states (n, H), actions (n, H), return-to-go (n, H)."""
    S, A = R.shape
    xs = np.empty((n, H), dtype=np.int64)
    acts = np.empty((n, H), dtype=np.int64)
    rtg = np.empty((n, H))
    s = np.zeros(LANES, dtype=np.int64)
    for i0 in range(0, n, LANES):
        m = min(LANES, n - i0)
        for lane in range(m):
            s[lane] = _draw_start(mu_cdf, rng.random())
        for h in range(H):
            for lane in range(m):
                i = i0 + lane
                x = s[lane]
                a = _draw_alias(ptab, (h * S + x) * A, A, rng.random())
                xs[i, h] = h * S + x
                acts[i, h] = a
                rtg[i, h] = R[x, a]
                s[lane] = _next_state(ptr, slots, x * A + a, rng.random())
        for lane in range(m):
            i = i0 + lane
            for h in range(H - 2, -1, -1):
                rtg[i, h] += rtg[i, h + 1]
    return xs, acts, rtg


@nb.njit(cache=True, inline="always")
def _tab_start_kl(ln, xtab, X, coef, ptr, slots, R, S, A, rng, lane_s, lane_h, lane_g,
                  lane_c):  # pragma: no cover - compiled
    """Start one K&L term in lane ln: x ~ xtab, uniform a, first transition. Returns h0."""
    x = _draw_alias(xtab, 0, X, rng.random())
    h0 = x // S
    s0 = x - h0 * S
    a = min(int(rng.random() * A), A - 1)
    lane_c[ln] = coef[x * A + a]
    lane_g[ln] = R[s0, a]
    lane_s[ln] = _next_state(ptr, slots, s0 * A + a, rng.random())
    lane_h[ln] = h0 + 1
    return h0


@nb.njit(cache=True, nogil=True)
def _tab_kl_means(ptr, slots, R, ptab, H, xtab, coef, n, reps, rng):  # pragma: no cover
    """``reps`` independent Kakade-Langford estimates, each the mean of ``n`` terms
    ``coef[x, a] * Q_hat(x, a)`` with x ~ xtab (packed alias over the H*S flat states), a uniform
    and Q_hat one Q-rollout under ptab. Returns (means (reps,), Q-rollout env steps)."""
    S, A = R.shape
    X = H * S
    total = n * reps
    sums = np.zeros(reps)
    lane_r = np.full(LANES, -1, dtype=np.int64)
    lane_s = np.zeros(LANES, dtype=np.int64)
    lane_h = np.zeros(LANES, dtype=np.int64)
    lane_g = np.zeros(LANES)
    lane_c = np.zeros(LANES)
    steps = 0
    nxt = 0
    active = 0
    for ln in range(LANES):
        if nxt < total:
            h0 = _tab_start_kl(ln, xtab, X, coef, ptr, slots, R, S, A, rng, lane_s, lane_h,
                               lane_g, lane_c)
            lane_r[ln] = nxt
            steps += H - h0
            nxt += 1
            active += 1
    while active > 0:
        for ln in range(LANES):
            r = lane_r[ln]
            if r < 0:
                continue
            h = lane_h[ln]
            if h < H:
                x = lane_s[ln]
                b = _draw_alias(ptab, (h * S + x) * A, A, rng.random())
                lane_g[ln] += R[x, b]
                lane_s[ln] = _next_state(ptr, slots, x * A + b, rng.random())
                lane_h[ln] = h + 1
                continue
            sums[r // n] += lane_c[ln] * lane_g[ln]
            if nxt < total:
                h0 = _tab_start_kl(ln, xtab, X, coef, ptr, slots, R, S, A, rng, lane_s, lane_h,
                                   lane_g, lane_c)
                lane_r[ln] = nxt
                steps += H - h0
                nxt += 1
            else:
                lane_r[ln] = -1
                active -= 1
    return sums / n, steps


# ---------------------------------------------------------------------------------------------
# Kernels: tree
# ---------------------------------------------------------------------------------------------
# Trees: one episode at a time. Interleaving lanes measured no faster here (a tree step is one
# dependent load chain: node -> its alias slot -> child), while it does help tabular kernels.
@nb.njit(cache=True, nogil=True)
def _tree_returns(children, reward, mu_cdf, ptab, n, rng):  # pragma: no cover - compiled
    A = children.shape[1]
    out = np.empty(n)
    for i in range(n):
        x = _draw_start(mu_cdf, rng.random())
        g = 0.0
        while children[x, 0] >= 0:
            x = children[x, _draw_alias(ptab, x * A, A, rng.random())]
            g += reward[x]
        out[i] = g
    return out


@nb.njit(cache=True, nogil=True)
def _tree_resets(children, depth, mu_cdf, ptab, H, full_depth, n_accept, sel, in_G,
                 max_candidates, rng, rng_sel):  # pragma: no cover - compiled
    """Tree reset candidates: uniform step among the episode's non-leaf steps (see module doc)."""
    A = children.shape[1]
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
                x = children[x, _draw_alias(ptab, x * A, A, rng.random())]
            steps += h
        else:
            L = 0
            path[0] = x
            while children[x, 0] >= 0:
                x = children[x, _draw_alias(ptab, x * A, A, rng.random())]
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


@nb.njit(cache=True, nogil=True)
def _tree_q_rollouts(children, reward, ptab, starts, group, rng):  # pragma: no cover
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
                x = children[x, _draw_alias(ptab, x * A, A, rng.random())]
                g += reward[x]
                steps += 1
            qs[i, j] = g
    return acts, qs, steps


@nb.njit(cache=True, nogil=True)
def _tree_episodes(children, reward, mu_cdf, ptab, H, n, rng):  # pragma: no cover - compiled
    """Like _tab_episodes; an episode shorter than H is padded with x = -1, action -1, rtg 0."""
    A = children.shape[1]
    xs = np.full((n, H), -1, dtype=np.int64)
    acts = np.full((n, H), -1, dtype=np.int64)
    rtg = np.zeros((n, H))
    for i in range(n):
        x = _draw_start(mu_cdf, rng.random())
        t = 0
        while children[x, 0] >= 0:
            a = _draw_alias(ptab, x * A, A, rng.random())
            xs[i, t] = x
            acts[i, t] = a
            x = children[x, a]
            rtg[i, t] = reward[x]
            t += 1
        for h in range(t - 2, -1, -1):
            rtg[i, h] += rtg[i, h + 1]
    return xs, acts, rtg


@nb.njit(cache=True, nogil=True)
def _tree_kl_means(children, reward, ptab, xtab, coef, n, reps, rng):  # pragma: no cover
    """Tree version of :func:`_tab_kl_means` (x ~ xtab over the N nodes, which must put no mass
    on leaves)."""
    N, A = children.shape
    sums = np.zeros(reps)
    steps = 0
    for r in range(reps):
        acc = 0.0
        for _ in range(n):
            x0 = _draw_alias(xtab, 0, N, rng.random())
            a = min(int(rng.random() * A), A - 1)
            x = children[x0, a]
            g = reward[x]
            steps += 1
            while children[x, 0] >= 0:
                x = children[x, _draw_alias(ptab, x * A, A, rng.random())]
                g += reward[x]
                steps += 1
            acc += coef[x0 * A + a] * g
        sums[r] = acc
    return sums / n, steps


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
    ptab = policy_table(mdp, policy)
    if isinstance(mdp, TabularMDP):
        return _tab_returns(tb.ptr, tb.slots, tb.R, tb.mu_cdf, ptab, mdp.horizon, n, rng)
    return _tree_returns(tb.children, tb.reward, tb.mu_cdf, ptab, n, rng)


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
    ptab = policy_table(mdp, policy)
    sel = np.ascontiguousarray(select, dtype=np.float64).ravel()
    G = np.ascontiguousarray(in_G, dtype=np.bool_).ravel()
    if isinstance(mdp, TabularMDP):
        res = _tab_resets(tb.ptr, tb.slots, tb.R, tb.mu_cdf, ptab, mdp.horizon,
                          int(n_accept), sel, G, int(max_candidates), rng, rng_select)
    else:
        res = _tree_resets(tb.children, tb.depth, tb.mu_cdf, ptab, mdp.horizon, tb.full_depth,
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
    ptab = policy_table(mdp, policy)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    if isinstance(mdp, TabularMDP):
        a, q, steps = _tab_q_rollouts(tb.ptr, tb.slots, tb.R, ptab, mdp.horizon, starts,
                                      int(group_size), rng)
    else:
        a, q, steps = _tree_q_rollouts(tb.children, tb.reward, ptab, starts, int(group_size), rng)
    return a, q, int(steps)


def on_policy_episodes(mdp: MDP, policy, n_episodes: int, rng: np.random.Generator):
    """``n_episodes`` full episodes from ``mu`` with no branching.

    Returns ``(states, actions, return_to_go, env_steps)``, each array (n, H); tree episodes
    that end early are padded with state -1 and action -1.
    """
    tb = tables(mdp)
    ptab = policy_table(mdp, policy)
    n = int(n_episodes)
    if isinstance(mdp, TabularMDP):
        xs, acts, rtg = _tab_episodes(tb.ptr, tb.slots, tb.R, tb.mu_cdf, ptab,
                                      mdp.horizon, n, rng)
    else:
        xs, acts, rtg = _tree_episodes(tb.children, tb.reward, tb.mu_cdf, ptab, mdp.horizon, n,
                                       rng)
    return xs, acts, rtg, int((xs >= 0).sum())


def kl_estimates(mdp: MDP, policy, coef: np.ndarray, reset_weights: np.ndarray, n: int,
                 reps: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """``reps`` independent Kakade-Langford estimates of size ``n``, in one compiled call.

    Each estimate is the mean of n i.i.d. terms ``coef[x, a] * Q_hat(x, a)``: ``x`` drawn from
    the reset weights (normalised; e.g. d for random resets, d restricted to G for the oracle,
    ``d s`` for a selector), ``a`` uniform over the A actions, ``Q_hat`` one Q-rollout of
    ``policy`` after a (its return to go). With ``coef = A (pi' - pi)`` the expectation is the
    policy advantage ``E_x[A^pi(x, pi'(x))]`` (see :mod:`cpi.estimators`).

    The reset state is drawn from its exact distribution by an alias table rather than by rolling
    in from mu and rejecting (the two have the same law: ``tests/cpi/test_rollouts.py`` checks
    the roll-in sampler against d); the cost of a roll-in is accounted by the caller.

    Args:
        coef: (X, A) or (X * A,) per (flat state, action) coefficient.
        reset_weights: (X,) non-negative, positive sum (no mass on tree leaves).
        n, reps: terms per estimate (>= 1) and estimates (>= 1).
    Returns:
        ``(estimates (reps,), env_steps)``; env_steps counts the Q-rollouts' transitions.
    """
    n, reps = int(n), int(reps)
    if n < 1 or reps < 1:
        raise ValueError(f"n, reps: expected ints >= 1, got n={n}, reps={reps}")
    tb = tables(mdp)
    ptab = policy_table(mdp, policy)
    X = flat_state_count(mdp)
    coef = np.ascontiguousarray(coef, dtype=np.float64).ravel()
    if coef.shape != (X * mdp.n_actions,):
        raise ValueError(f"coef: expected {X * mdp.n_actions} entries (X * A), got {coef.size}")
    w = np.asarray(reset_weights, dtype=np.float64).ravel()
    if w.shape != (X,):
        raise ValueError(f"reset_weights: expected shape ({X},), got {w.shape}")
    if isinstance(mdp, TreeMDP) and np.any(w[mdp.is_leaf] > 0):
        raise ValueError("reset_weights: expected no mass on tree leaves (nothing to act on)")
    xtab = state_table(w)
    if isinstance(mdp, TabularMDP):
        est, steps = _tab_kl_means(tb.ptr, tb.slots, tb.R, ptab, mdp.horizon, xtab, coef, n,
                                   reps, rng)
    else:
        est, steps = _tree_kl_means(tb.children, tb.reward, ptab, xtab, coef, n, reps, rng)
    return est, int(steps)


def flat_state_count(mdp: MDP) -> int:
    """X, the number of flat states (tabular H*S, tree N)."""
    if isinstance(mdp, TabularMDP):
        return mdp.horizon * mdp.n_states
    assert isinstance(mdp, TreeMDP)
    return mdp.n_nodes
