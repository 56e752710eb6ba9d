"""Compiled samplers of a tree MDP (episodes, reset candidates, Q-rollouts, K&L terms).

Inputs are the arrays of :class:`cpi.alias.TreeTables` (``children`` flattened to (N A,),
``reward``, the start CDF's support ``cdf``, ``idx``), the number of actions A, a packed policy table ``ptab`` (N*A,) and
PCG64 streams ``rs`` (:mod:`cpi.pcg`); every kernel returns its final stream(s) last. One episode at a time: an episode's length is known only at
its leaf, so the next episode's uniforms cannot be located before it ends (no lanes without
changing the sampling order). Sampling order: episodes (and candidates, rollouts, terms) one
after the other; within one, its start draws, then one uniform per step
(:func:`cpi.walk.tree_step`).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from cpi.pcg import draw
from cpi.walk import (
    accept,
    alias_draw,
    load,
    start_state,
    store,
    tree_step,
    uniform_action,
)


@nb.njit(cache=True, inline="always")
def _to_leaf(children, reward, ptab, A, x, g, rs):  # pragma: no cover - compiled
    """Follow the policy from node x to a leaf, adding arrival rewards to g: (g, steps, rs)."""
    t = 0
    while load(children, x * A) >= 0:
        x, _, rs = tree_step(children, ptab, A, x, rs)
        g += load(reward, x)
        t += 1
    return g, t, rs


@nb.njit(cache=True, nogil=True)
def returns(children, reward, A, cdf, idx, ptab, n, rs):  # pragma: no cover - compiled
    out = np.empty(n)
    for i in range(n):
        u, rs = draw(rs)
        out[i], _, rs = _to_leaf(children, reward, ptab, A, start_state(cdf, idx, u), 0.0, rs)
    return out, rs


@nb.njit(cache=True, nogil=True)
def resets(
    children,
    A,
    cdf,
    idx,
    ptab,
    H,
    full_depth,
    n_accept,
    sel,
    in_G,
    max_candidates,
    rs,
    rs_sel,
    shared,
):  # pragma: no cover - compiled
    """Tree reset candidates: uniform step among the episode's non-leaf steps (see
    :mod:`cpi.rollouts`); acceptance as in :func:`cpi.tabular_kernels.resets_serial`."""
    acc = np.empty(n_accept, dtype=np.int64)
    path = np.empty(H + 1, dtype=np.int64)
    n_acc = cand_G = acc_G = 0  # accepted, candidates in G, accepted in G
    n_cand = 0
    steps = 0
    while n_acc < n_accept and n_cand < max_candidates:
        n_cand += 1
        u, rs = draw(rs)
        x = start_state(cdf, idx, u)
        if full_depth:
            u, rs = draw(rs)
            h = min(int(u * H), H - 1)
            for _ in range(h):
                x, _, rs = tree_step(children, ptab, A, x, rs)
            steps += h
        else:
            L = 0
            path[0] = x
            while load(children, x * A) >= 0:
                x, _, rs = tree_step(children, ptab, A, x, rs)
                L += 1
                path[L] = x
            steps += L
            if L == 0:  # a root that is a leaf: nothing to reset at
                continue
            u, rs = draw(rs)
            x = path[min(int(u * L), L - 1)]
        if shared:
            ok, rs = accept(sel[x], rs)
        else:
            ok, rs_sel = accept(sel[x], rs_sel)
        g = in_G[x]
        cand_G += g
        if ok:
            acc[n_acc] = x
            n_acc += 1
            acc_G += g
    return acc[:n_acc], n_cand, steps, cand_G, acc_G, rs, rs_sel


@nb.njit(cache=True, nogil=True)
def q_rollouts(children, reward, A, ptab, starts, group, rs):  # pragma: no cover - compiled
    n = starts.shape[0]
    acts = np.empty((n, group), dtype=np.int64)
    qs = np.empty((n, group))
    steps = 0
    for i in range(n):
        for j in range(group):
            u, rs = draw(rs)
            a = uniform_action(A, u)
            acts[i, j] = a
            x = load(children, starts[i] * A + a)
            qs[i, j], t, rs = _to_leaf(children, reward, ptab, A, x, load(reward, x), rs)
            steps += 1 + t
    return acts, qs, steps, rs


@nb.njit(cache=True, nogil=True)
def episodes(children, reward, A, cdf, idx, ptab, H, xs, acts, rtg, rs):  # pragma: no cover
    """Like :func:`cpi.tabular_kernels.episodes` (outputs (n, H) flattened to (n H,), allocated
    by the caller); an episode shorter than H is padded with x = -1, action -1, rtg 0. Returns
    (env steps = the episodes' lengths summed, the stream)."""
    n = xs.shape[0] // H
    steps = 0
    for i in range(n):
        u, rs = draw(rs)
        x = start_state(cdf, idx, u)
        t = 0
        j0 = i * H
        while load(children, x * A) >= 0:
            store(xs, j0 + t, x)
            x, a, rs = tree_step(children, ptab, A, x, rs)
            store(acts, j0 + t, a)
            store(rtg, j0 + t, load(reward, x))
            t += 1
        steps += t
        for h in range(t, H):
            store(xs, j0 + h, -1)
            store(acts, j0 + h, -1)
            store(rtg, j0 + h, 0.0)
        if t > 0:  # suffix sums, the running one kept in a register (same additions)
            acc = load(rtg, j0 + t - 1)
            for h in range(t - 2, -1, -1):
                acc = load(rtg, j0 + h) + acc
                store(rtg, j0 + h, acc)
    return steps, rs


@nb.njit(cache=True, nogil=True)
def kl_means(children, reward, A, ptab, xtab, coef, n, reps, rs):  # pragma: no cover - compiled
    """Tree version of the K&L kernel (x ~ xtab over the N nodes, no mass on leaves)."""
    N = children.shape[0] // A
    sums = np.zeros(reps)
    steps = 0
    for r in range(reps):
        acc = 0.0
        for _ in range(n):
            u, rs = draw(rs)
            x0 = alias_draw(xtab, 0, N, u)
            u, rs = draw(rs)
            a = uniform_action(A, u)
            x = load(children, x0 * A + a)
            g, t, rs = _to_leaf(children, reward, ptab, A, x, load(reward, x), rs)
            steps += 1 + t
            acc += load(coef, x0 * A + a) * g
        sums[r] = acc
    return sums / n, steps, rs


@nb.njit(cache=True, nogil=True)
def kl_extend(
    children, reward, A, ptab, xtab, coef, st, sums, counts, n_to, marks, at_marks
):  # pragma: no cover - compiled
    """Tree version of :func:`cpi.tabular_kernels.kl_extend` (repetitions one after another)."""
    N = children.shape[0] // A
    steps = 0
    for r in range(sums.shape[0]):
        rs = (st[r, 0], st[r, 1], st[r, 2], st[r, 3])
        k = 0
        while k < marks.shape[0] and marks[k] <= counts[r]:
            k += 1
        while counts[r] < n_to:
            u, rs = draw(rs)
            x0 = alias_draw(xtab, 0, N, u)
            u, rs = draw(rs)
            a = uniform_action(A, u)
            x = load(children, x0 * A + a)
            g, t, rs = _to_leaf(children, reward, ptab, A, x, load(reward, x), rs)
            steps += 1 + t
            sums[r] += load(coef, x0 * A + a) * g
            counts[r] += 1
            while k < marks.shape[0] and marks[k] <= counts[r]:
                if marks[k] == counts[r]:
                    at_marks[r, k] = sums[r]
                k += 1
        st[r, 0], st[r, 1] = rs[0], rs[1]
    return steps
