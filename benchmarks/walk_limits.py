"""Same-walk limits of the sampling kernels: the loops ``bench_kernels.py`` measures them against.

A sampling kernel draws uniforms and walks tables: every uniform picks a table entry (a policy
alias slot, a transition slot, a child) whose content decides the next read. For each kernel of
:mod:`cpi.rollouts` this module has the loop that makes **the same draws** (the same uniforms of
the same PCG64 stream, in the same order) and **the same reads** (the same entries of the same
arrays: start CDF, policy alias slot, transition offsets and slot, reward, child, acceptance
probability, reset-state alias slot and coefficient) and does nothing else: what it reads is
folded into one checksum, and it writes no per-episode outputs, counts nothing, keeps no
per-rollout records. That is the limit of the computation on this machine: a kernel can only
add work to it.

One kernel's output is itself a memory access of the computation: ``on_policy_episodes`` hands
back each step's state, action and return-to-go, three (n, H) arrays, 24 bytes a step written
to memory, which no loop computing those episodes can skip (a loop summing rewards writes
nothing). Its limit, :func:`tab_episodes_stored` / :func:`tree_episodes_stored`, is the same
walk that also writes each output entry once, at the kernel's position (state, action, reward;
a tree's padding past the leaf), into buffers allocated once; it does not form the suffix sums
and allocates nothing, which the kernel must (both are the kernel's overhead against it). The loops use the kernels' own primitives (:func:`cpi.walk.tab_step`,
:func:`cpi.walk.tree_step`, :func:`cpi.pcg.draw`), which *are* the walk (a draw and the reads it
causes); whether those primitives are fast is what the second reference, the draws-only loop,
bounds.

Orders that the kernels fix (and so the references follow): tabular episodes advance in blocks
of ``LANES`` lanes, lane by lane; Q-rollouts and K&L terms are scheduled over ``LANES`` lanes (a
lane starts the next rollout as soon as its own ends), which decides which uniform goes to which
rollout, so the reference runs the same schedule; reset candidates and tree episodes come one
after another in the stream. For reset candidates two references are timed and the faster is
the limit: one walking the candidates one after another, one walking up to ``LANES`` at once by
jumping the stream past each candidate's walk (as :func:`cpi.tabular_kernels.resets_lanes`).

``bench_kernels.py`` checks, before timing, that every reference ends its stream where the
kernel ends it (the same number of uniforms) and that its checksum equals the same sum computed
from the kernel's outputs, so the reference provably walked the same path.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from cpi.pcg import draw, jump
from cpi.tabular_kernels import LANES, RING
from cpi.walk import (
    accept,
    alias_draw,
    load,
    next_state,
    start_state,
    store,
    tab_step,
    tree_step,
    uniform_action,
)


@nb.njit(cache=True, nogil=True)
def draws_only(m, rs):  # pragma: no cover - compiled
    """m uniforms of the stream and nothing else (their sum, the stream)."""
    acc = 0.0
    for _ in range(m):
        u, rs = draw(rs)
        acc += u
    return acc, rs


# ---------------------------------------------------------------------------------------------
# Tabular
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def tab_episodes(ptr, slots, R, S, A, cdf, idx, ptab, H, n, rs):  # pragma: no cover - compiled
    """The walk of n episodes (returns and episode kernels): sum of rewards, stream."""
    s = np.zeros(LANES, dtype=np.int64)
    acc = 0.0
    for i0 in range(0, n, LANES):
        m = min(LANES, n - i0)
        for ln in range(m):
            u, rs = draw(rs)
            s[ln] = start_state(cdf, idx, u)
        for h in range(H):
            for ln in range(m):
                s[ln], _, r, rs = tab_step(ptab, ptr, slots, R, S, A, h, s[ln], rs)
                acc += r
    return acc, rs


@nb.njit(cache=True, nogil=True)
def tab_episodes_stored(
    ptr, slots, R, S, A, cdf, idx, ptab, H, xs, acts, rew, rs
):  # pragma: no cover
    """The walk of n = len(xs) / H episodes that also stores what the episode kernel must
    hand back: each step's flat state, action and reward, once, into (n H,) arrays at the
    kernel's positions (the lane states kept in a lane array). Sum of rewards, stream."""
    n = xs.shape[0] // H
    s = np.zeros(LANES, dtype=np.int64)
    acc = 0.0
    for i0 in range(0, n, LANES):
        m = min(LANES, n - i0)
        for ln in range(m):
            u, rs = draw(rs)
            s[ln] = start_state(cdf, idx, u)
        for h in range(H):
            jl = i0 * H + h
            for ln in range(m):
                x = s[ln]
                store(xs, jl, h * S + x)
                s[ln], a, r, rs = tab_step(ptab, ptr, slots, R, S, A, h, x, rs)
                store(acts, jl, a)
                store(rew, jl, r)
                acc += r
                jl += H
    return acc, rs


@nb.njit(cache=True, nogil=True)
def tab_q(
    kl, ptr, slots, R, S, A, ptab, H, total, group, starts, xtab, coef, rs
):  # pragma: no cover
    """The walk of ``total`` Q-rollouts under the kernels' lane schedule: sum of returns (Q
    samples) or of coef * return (K&L terms), stream."""
    lane_s = np.zeros(LANES, dtype=np.int64)
    lane_h = np.full(LANES, H, dtype=np.int64)  # H: idle
    lane_c = np.zeros(LANES)
    lane_g = np.zeros(LANES)
    acc = 0.0
    nxt = 0
    busy = 0
    while True:
        for ln in range(LANES):
            h = lane_h[ln]
            if h < H:
                lane_s[ln], _, r, rs = tab_step(ptab, ptr, slots, R, S, A, h, lane_s[ln], rs)
                lane_g[ln] += r
                lane_h[ln] = h + 1
                continue
            acc += lane_c[ln] * lane_g[ln]
            lane_g[ln] = 0.0
            if nxt >= total:
                continue
            if kl:
                u, rs = draw(rs)
                x0 = alias_draw(xtab, 0, H * S, u)
                u, rs = draw(rs)
                a = uniform_action(A, u)
                lane_c[ln] = load(coef, x0 * A + a)
            else:
                x0 = starts[nxt // group]
                u, rs = draw(rs)
                a = uniform_action(A, u)
                lane_c[ln] = 1.0
            h0 = x0 // S
            row = (x0 - h0 * S) * A + a
            u, rs = draw(rs)
            lane_s[ln] = next_state(ptr, slots, row, u)
            lane_g[ln] = load(R, row)
            lane_h[ln] = h0 + 1
            nxt += 1
        if nxt >= total:
            busy = 0
            for ln in range(LANES):
                busy += lane_h[ln] < H
            if busy == 0:
                for ln in range(LANES):
                    acc += lane_c[ln] * lane_g[ln]
                return acc, rs


@nb.njit(cache=True, nogil=True)
def tab_resets_serial(
    ptr, slots, R, S, A, cdf, idx, ptab, H, n_accept, sel, rs, rs_sel
):  # pragma: no cover
    """Reset candidates one after another until n_accept are accepted: sum of the accepted
    flat states, streams."""
    acc = 0
    n_ok = 0
    while n_ok < n_accept:
        u, rs = draw(rs)
        h = min(int(u * H), H - 1)
        u, rs = draw(rs)
        s = start_state(cdf, idx, u)
        for t in range(h):
            s, _, _, rs = tab_step(ptab, ptr, slots, R, S, A, t, s, rs)
        x = h * S + s
        ok, rs_sel = accept(load(sel, x), rs_sel)
        if ok:
            acc += x
            n_ok += 1
    return acc, rs, rs_sel


@nb.njit(cache=True, nogil=True)
def tab_resets_lanes(
    ptr, slots, R, S, A, cdf, idx, ptab, H, n_accept, sel, jumps, rs, rs_sel
):  # pragma: no cover
    """The same candidates walked ``LANES`` at a time (stream jumps), offered in order."""
    inc_hi, inc_lo = rs[2], rs[3]
    lane_c = np.full(LANES, -1, dtype=np.int64)
    lane_s = np.zeros(LANES, dtype=np.int64)
    lane_t = np.zeros(LANES, dtype=np.int64)
    lane_h = np.zeros(LANES, dtype=np.int64)
    lane_hi = np.zeros(LANES, dtype=np.uint64)
    lane_lo = np.zeros(LANES, dtype=np.uint64)
    ring_x = np.full(RING, -1, dtype=np.int64)  # flat state of a finished candidate, -1 pending
    ring_hi = np.zeros(RING, dtype=np.uint64)
    ring_lo = np.zeros(RING, dtype=np.uint64)
    started = 0
    done = 0
    acc = 0
    n_ok = 0
    while True:
        for ln in range(LANES):
            while lane_c[ln] < 0 and started - done < RING:
                u, rs = draw(rs)
                h = min(int(u * H), H - 1)
                u, rs = draw(rs)
                s = start_state(cdf, idx, u)
                k = started % RING
                if h == 0:
                    ring_x[k] = s
                else:
                    lane_c[ln], lane_s[ln], lane_t[ln], lane_h[ln] = started, s, 0, h
                    lane_hi[ln], lane_lo[ln] = rs[0], rs[1]
                    rs = jump(rs, jumps, 2 * h)
                ring_hi[k], ring_lo[k] = rs[0], rs[1]
                started += 1
        while done < started and ring_x[done % RING] >= 0:
            k = done % RING
            x = ring_x[k]
            ring_x[k] = -1
            done += 1
            ok, rs_sel = accept(load(sel, x), rs_sel)
            if ok:
                acc += x
                n_ok += 1
                if n_ok == n_accept:
                    return acc, (ring_hi[k], ring_lo[k], inc_hi, inc_lo), rs_sel
        for ln in range(LANES):
            c = lane_c[ln]
            if c < 0:
                continue
            t = lane_t[ln]
            lrs = (lane_hi[ln], lane_lo[ln], inc_hi, inc_lo)
            lane_s[ln], _, _, lrs = tab_step(ptab, ptr, slots, R, S, A, t, lane_s[ln], lrs)
            lane_hi[ln], lane_lo[ln] = lrs[0], lrs[1]
            lane_t[ln] = t + 1
            if t + 1 == lane_h[ln]:
                ring_x[c % RING] = (t + 1) * S + lane_s[ln]
                lane_c[ln] = -1


# ---------------------------------------------------------------------------------------------
# Tree
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True, inline="always")
def _leaf_sum(children, reward, ptab, A, x, g, rs):  # pragma: no cover - compiled
    while load(children, x * A) >= 0:
        x, _, rs = tree_step(children, ptab, A, x, rs)
        g += load(reward, x)
    return g, rs


@nb.njit(cache=True, nogil=True)
def tree_episodes(children, reward, A, cdf, idx, ptab, n, rs):  # pragma: no cover - compiled
    """The walk of n tree episodes (returns and episode kernels): sum of rewards, stream."""
    acc = 0.0
    for _ in range(n):
        u, rs = draw(rs)
        acc, rs = _leaf_sum(children, reward, ptab, A, start_state(cdf, idx, u), acc, rs)
    return acc, rs


@nb.njit(cache=True, nogil=True)
def tree_episodes_stored(
    children, reward, A, cdf, idx, ptab, H, xs, acts, rew, rs
):  # pragma: no cover
    """The walk of n = len(xs) / H tree episodes that also stores each step's node, action and
    reward, once, and the padding past the leaf (-1, -1, 0): every entry of the episode
    kernel's outputs written once. Sum of rewards, stream."""
    n = xs.shape[0] // H
    acc = 0.0
    for i in range(n):
        u, rs = draw(rs)
        x = start_state(cdf, idx, u)
        j = i * H
        end = j + H
        while load(children, x * A) >= 0:
            store(xs, j, x)
            x, a, rs = tree_step(children, ptab, A, x, rs)
            store(acts, j, a)
            r = load(reward, x)
            store(rew, j, r)
            acc += r
            j += 1
        for k in range(j, end):
            store(xs, k, -1)
            store(acts, k, -1)
            store(rew, k, 0.0)
    return acc, rs


@nb.njit(cache=True, nogil=True)
def tree_q(
    kl, children, reward, A, ptab, starts, group, n_terms, xtab, coef, rs
):  # pragma: no cover
    """Tree Q-rollouts (``group`` per start) or K&L terms (``n_terms``, x ~ xtab): sum of
    returns or of coef * return, stream."""
    N = children.shape[0] // A
    acc = 0.0
    total = n_terms if kl else starts.shape[0] * group
    for r in range(total):
        if kl:
            u, rs = draw(rs)
            x0 = alias_draw(xtab, 0, N, u)
        else:
            x0 = starts[r // group]
        u, rs = draw(rs)
        a = uniform_action(A, u)
        x = load(children, x0 * A + a)
        g, rs = _leaf_sum(children, reward, ptab, A, x, load(reward, x), rs)
        acc += (load(coef, x0 * A + a) if kl else 1.0) * g
    return acc, rs


@nb.njit(cache=True, nogil=True)
def tree_resets(children, A, cdf, idx, ptab, H, n_accept, sel, rs, rs_sel):  # pragma: no cover
    """Tree reset candidates (whole episode walked, then a uniform non-leaf step) until
    n_accept are accepted: sum of accepted nodes, streams."""
    path = np.empty(H + 1, dtype=np.int64)
    acc = 0
    n_ok = 0
    while n_ok < n_accept:
        u, rs = draw(rs)
        x = start_state(cdf, idx, u)
        L = 0
        path[0] = x
        while load(children, x * A) >= 0:
            x, _, rs = tree_step(children, ptab, A, x, rs)
            L += 1
            path[L] = x
        if L == 0:
            continue
        u, rs = draw(rs)
        x = path[min(int(u * L), L - 1)]
        ok, rs_sel = accept(load(sel, x), rs_sel)
        if ok:
            acc += x
            n_ok += 1
    return acc, rs, rs_sel
