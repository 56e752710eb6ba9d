"""Compiled samplers of a tabular MDP (episodes, reset candidates, Q-rollouts, K&L terms).

Inputs are the arrays of :class:`cpi.alias.TabularTables` (``ptr``; ``slots`` and ``R``
flattened to (3 nnz,) and (S A,); the start CDF's support ``cdf``, ``idx``), the sizes S and
A, a packed policy table
``ptab`` (H*S*A,) and PCG64 streams ``rs`` (:mod:`cpi.pcg`); every kernel returns its final
stream(s) last. Flat states are ``x = h*S + s``.

Memory-level parallelism: a step's table look-ups depend on the state it starts from, so one
episode is a chain of dependent loads. Kernels keep ``LANES`` episodes in flight and advance
them in turn, so the chains overlap. Sampling order (which uniforms go where) is part of each
kernel's contract (tests/cpi/test_sampling_order.py holds a plain-Python copy):

* episodes (:func:`returns`, :func:`episodes`): blocks of ``LANES`` episodes; in a block the
  start states lane by lane, then step by step, lane by lane, one :func:`~cpi.walk.tab_step`;
* Q-rollouts and K&L terms (:func:`q_lanes`): ``LANES`` lanes; a lane starts the next pending
  rollout (its start draws, then its first transition) as soon as it finishes one; each pass
  over the lanes advances every running lane by one step;
* reset candidates (:func:`resets_lanes`, :func:`resets_serial`): one candidate after the
  other in the stream (its step h, its start state, then h steps); the acceptance draws come
  from their own stream in candidate order. :func:`resets_lanes` runs up to ``LANES``
  candidates at once without changing this: a lane is given the stream position of its
  candidate's walk (known once h is drawn: 2 h uniforms) and the main stream jumps past it.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from cpi.pcg import draw, jump
from cpi.walk import (
    accept,
    alias_draw,
    load,
    next_state,
    start_state,
    store,
    tab_step,
    uniform_action,
)

#: Episodes advanced in lockstep (part of the episode and Q-rollout sampling order).
LANES = 8
#: Reset candidates that may be started ahead of the oldest one not yet offered.
RING = 64
#: :func:`resets_lanes` from this horizon on, :func:`resets_serial` below it (the same
#: candidates; short walks do not repay the lanes' bookkeeping: measured crossover H ~ 12-20).
LANES_MIN_HORIZON = 16


@nb.njit(cache=True, nogil=True)
def returns(ptr, slots, R, S, A, cdf, idx, ptab, H, n, rs):  # pragma: no cover - compiled
    """Returns (n,) of n episodes of H steps, and the stream."""
    out = np.empty(n)
    s = np.zeros(LANES, dtype=np.int64)
    g = np.zeros(LANES)
    for i0 in range(0, n, LANES):
        m = min(LANES, n - i0)
        for ln in range(m):
            u, rs = draw(rs)
            s[ln] = start_state(cdf, idx, u)
            g[ln] = 0.0
        for h in range(H):
            for ln in range(m):
                s[ln], _, r, rs = tab_step(ptab, ptr, slots, R, S, A, h, s[ln], rs)
                g[ln] += r
        for ln in range(m):
            out[i0 + ln] = g[ln]
    return out, rs


@nb.njit(cache=True, nogil=True)
def episodes(ptr, slots, R, S, A, cdf, idx, ptab, H, xs, acts, rtg, rs):  # pragma: no cover
    """n episodes into flat states ``xs``, actions ``acts`` and return-to-go ``rtg``, each (n,
    H) flattened to (n H,) (allocated by the caller: numpy backs large arrays with huge pages, so
    writing them costs fewer page faults); returns (env steps = n H, the stream)."""
    n = xs.shape[0] // H
    s = np.zeros(LANES, dtype=np.int64)
    for i0 in range(0, n, LANES):
        m = min(LANES, n - i0)
        for ln in range(m):
            u, rs = draw(rs)
            s[ln] = start_state(cdf, idx, u)
        j = i0 * H  # output index of (lane 0, step h); lane ln is at j + ln * H
        for h in range(H):
            jl = j
            for ln in range(m):
                x = s[ln]
                store(xs, jl, h * S + x)
                x, a, r, rs = tab_step(ptab, ptr, slots, R, S, A, h, x, rs)
                s[ln] = x
                store(acts, jl, a)
                store(rtg, jl, r)
                jl += H
            j += 1
        # suffix sums, step by step across the block's lanes (independent chains interleave)
        for h in range(H - 2, -1, -1):
            jl = i0 * H + h
            for _ in range(m):
                store(rtg, jl, load(rtg, jl) + load(rtg, jl + 1))
                jl += H
    return n * H, rs


# ---------------------------------------------------------------------------------------------
# Q-rollouts over lanes (one engine for per-start Q samples and for K&L terms)
# ---------------------------------------------------------------------------------------------
Q_SAMPLES = 0  # rollout r starts at starts[r // group]; record its action and return
KL_TERMS = 1  # rollout r starts at x ~ xtab; add coef[x, a] * return to sums[r // group]


@nb.njit(cache=True, nogil=True)
def q_lanes(
    kind, ptr, slots, R, S, A, ptab, H, total, group, n_out, starts, xtab, coef, rs
):  # pragma: no cover - compiled
    """``total`` Q-rollouts (a first action, then the policy to step H) over ``LANES`` lanes.

    kind Q_SAMPLES: rollout r from ``starts[r // group]`` (a uniform action: one draw); returns
    actions and Q samples (n_out, group). kind KL_TERMS: rollout r from x ~ xtab (one draw),
    then a uniform action (one draw); ``sums[r // group] += coef[x*A + a] * Q`` (n_out sums).
    Then the first transition (one draw) and H - 1 - h0 policy steps. Each pass over the lanes
    advances every running lane by one step, and a lane whose rollout is done records it and
    starts the next pending one in the same pass. Returns ``(acts, qs, sums, env steps, rs)``
    (the arrays of the other kind are empty).
    """
    X = H * S
    acts = np.empty((n_out if kind == Q_SAMPLES else 0, group), dtype=np.int64)
    qs = np.empty((n_out if kind == Q_SAMPLES else 0, group))
    sums = np.zeros(n_out if kind == KL_TERMS else 0)
    lane_r = np.full(LANES, -1, dtype=np.int64)
    lane_s = np.zeros(LANES, dtype=np.int64)
    lane_h = np.zeros(LANES, dtype=np.int64)
    lane_g = np.zeros(LANES)
    lane_c = np.zeros(LANES)
    steps = 0
    nxt = 0
    active = 0
    while True:
        for ln in range(LANES):
            r = lane_r[ln]
            if r >= 0:
                h = lane_h[ln]
                if h < H:
                    lane_s[ln], _, rew, rs = tab_step(ptab, ptr, slots, R, S, A, h, lane_s[ln], rs)
                    lane_g[ln] += rew
                    lane_h[ln] = h + 1
                    continue
                i = r // group
                if kind == Q_SAMPLES:
                    qs[i, r - i * group] = lane_g[ln]
                else:
                    sums[i] += lane_c[ln] * lane_g[ln]
                lane_r[ln] = -1
                active -= 1
            if nxt >= total:
                continue
            # start rollout nxt in this lane
            if kind == Q_SAMPLES:
                i = nxt // group
                x0 = starts[i]
                u, rs = draw(rs)
                a = uniform_action(A, u)
                acts[i, nxt - i * group] = a
            else:
                u, rs = draw(rs)
                x0 = alias_draw(xtab, 0, X, u)
                u, rs = draw(rs)
                a = uniform_action(A, u)
                lane_c[ln] = load(coef, x0 * A + a)
            h0 = x0 // S
            row = (x0 - h0 * S) * A + a
            u, rs = draw(rs)
            lane_s[ln] = next_state(ptr, slots, row, u)
            lane_g[ln] = load(R, row)
            lane_h[ln] = h0 + 1
            lane_r[ln] = nxt
            steps += H - h0
            nxt += 1
            active += 1
        if active == 0:
            return acts, qs, sums, steps, rs


# ---------------------------------------------------------------------------------------------
# Reset candidates
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def resets_serial(
    ptr, slots, R, S, A, cdf, idx, ptab, H, n_accept, sel, in_G, max_candidates, rs, rs_sel, shared
):  # pragma: no cover - compiled
    """Reset candidates x = h*S + s ~ d (h uniform in 0..H-1, then h on-policy steps), each
    accepted with probability sel[x] (a draw only when 0 < sel[x] < 1), until n_accept are
    accepted or max_candidates drawn. ``shared``: the acceptance draws come from ``rs`` (the
    same Generator), between candidates; else from ``rs_sel``.

    Returns (accepted flat states, n_candidates, base_steps, candidates_in_G, accepted_in_G,
    rs, rs_sel).
    """
    acc = np.empty(n_accept, dtype=np.int64)
    n_acc = cand_G = acc_G = 0  # accepted, candidates in G, accepted in G
    n_cand = 0
    steps = 0
    while n_acc < n_accept and n_cand < max_candidates:
        u, rs = draw(rs)
        h = min(int(u * H), H - 1)
        u, rs = draw(rs)
        s = start_state(cdf, idx, u)
        for t in range(h):
            s, _, _, rs = tab_step(ptab, ptr, slots, R, S, A, t, s, rs)
        steps += h
        n_cand += 1
        x = h * S + s
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
def resets_lanes(
    ptr, slots, R, S, A, cdf, idx, ptab, H, n_accept, sel, in_G, max_candidates, jumps, rs, rs_sel
):  # pragma: no cover - compiled
    """:func:`resets_serial` with separate streams, up to ``LANES`` candidates walked at once.

    Same outputs, bit for bit (module doc): candidate c is started by drawing its h and start
    state from the main stream, its walk gets the stream position after them, and the main
    stream jumps ``2 h`` uniforms ahead (``jumps``: :func:`cpi.pcg.jump_table` of >= 2H - 1
    rows). Finished walks are offered in candidate order; at the stop, candidates started ahead
    are dropped and the main stream is the position after the last candidate offered.
    """
    acc = np.empty(n_accept, dtype=np.int64)
    n_acc = cand_G = acc_G = 0  # accepted, candidates in G, accepted in G
    if n_accept <= 0 or max_candidates <= 0:
        return acc[:0], 0, 0, 0, 0, rs, rs_sel
    inc_hi, inc_lo = rs[2], rs[3]
    lane_c = np.full(LANES, -1, dtype=np.int64)  # candidate walked by the lane, -1 idle
    lane_s = np.zeros(LANES, dtype=np.int64)
    lane_t = np.zeros(LANES, dtype=np.int64)  # steps walked
    lane_h = np.zeros(LANES, dtype=np.int64)  # steps to walk
    lane_hi = np.zeros(LANES, dtype=np.uint64)  # the lane's stream position
    lane_lo = np.zeros(LANES, dtype=np.uint64)
    ring_x = np.zeros(RING, dtype=np.int64)
    ring_h = np.zeros(RING, dtype=np.int64)
    ring_done = np.zeros(RING, dtype=np.bool_)
    ring_hi = np.zeros(RING, dtype=np.uint64)  # main stream after the candidate
    ring_lo = np.zeros(RING, dtype=np.uint64)
    started = 0
    n_cand = 0
    steps = 0
    while True:
        # 1. idle lanes start the next candidates (a candidate with h = 0 is done at once)
        for ln in range(LANES):
            while lane_c[ln] < 0 and started < max_candidates and started - n_cand < RING:
                u, rs = draw(rs)
                h = min(int(u * H), H - 1)
                u, rs = draw(rs)
                s = start_state(cdf, idx, u)
                k = started % RING
                ring_h[k] = h
                if h == 0:
                    ring_x[k] = s
                    ring_done[k] = True
                else:
                    lane_c[ln], lane_s[ln], lane_t[ln], lane_h[ln] = started, s, 0, h
                    lane_hi[ln], lane_lo[ln] = rs[0], rs[1]
                    rs = jump(rs, jumps, 2 * h)
                ring_hi[k], ring_lo[k] = rs[0], rs[1]
                started += 1
        # 2. offer finished candidates in order; stop as the serial loop would
        while n_cand < started and ring_done[n_cand % RING]:
            k = n_cand % RING
            ring_done[k] = False
            n_cand += 1
            steps += ring_h[k]
            x = ring_h[k] * S + ring_x[k]
            ok, rs_sel = accept(sel[x], rs_sel)
            g = in_G[x]
            cand_G += g
            if ok:
                acc[n_acc] = x
                n_acc += 1
                acc_G += g
            if n_acc >= n_accept or n_cand >= max_candidates:
                out_rs = (ring_hi[k], ring_lo[k], inc_hi, inc_lo)
                return acc[:n_acc], n_cand, steps, cand_G, acc_G, out_rs, rs_sel
        # 3. every running lane takes one step
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
                k = c % RING
                ring_x[k] = lane_s[ln]
                ring_done[k] = True
                lane_c[ln] = -1


# ---------------------------------------------------------------------------------------------
# K&L terms on per-repetition streams (cpi.kl_streams)
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def kl_extend(
    ptr, slots, R, S, A, ptab, H, xtab, coef, st, sums, counts, n_to, marks, at_marks
):  # pragma: no cover - compiled
    """Extend every repetition r to ``n_to`` K&L terms, drawn from its own stream.

    st (reps, 4) uint64: the repetitions' PCG64 streams, advanced in place. sums (reps,),
    counts (reps,): terms so far, updated in place. marks (k,) increasing term counts:
    ``at_marks[r, i] = sums`` after ``marks[i]`` terms, for the marks passed on the way.
    A term: x ~ xtab (one draw), a uniform action (one draw), then a Q-rollout (the first
    transition, then the policy to step H). ``LANES`` repetitions run at once (each in its own
    stream, so the interleaving changes no draw). Returns the env steps walked.
    """
    reps = sums.shape[0]
    X = H * S
    lane_r = np.full(LANES, -1, dtype=np.int64)
    lane_s = np.zeros(LANES, dtype=np.int64)
    lane_h = np.full(LANES, H, dtype=np.int64)
    lane_g = np.zeros(LANES)
    lane_c = np.zeros(LANES)
    lane_k = np.zeros(LANES, dtype=np.int64)  # next mark of the lane's repetition
    steps = 0
    nxt = 0
    active = 0
    while True:
        for ln in range(LANES):
            r = lane_r[ln]
            if r >= 0:
                h = lane_h[ln]
                if h < H:
                    rs = (st[r, 0], st[r, 1], st[r, 2], st[r, 3])
                    lane_s[ln], _, rew, rs = tab_step(ptab, ptr, slots, R, S, A, h, lane_s[ln], rs)
                    st[r, 0], st[r, 1] = rs[0], rs[1]
                    lane_g[ln] += rew
                    lane_h[ln] = h + 1
                    continue
                # the term is done: add it, record marks, then start the next or release the lane
                sums[r] += lane_c[ln] * lane_g[ln]
                counts[r] += 1
                k = lane_k[ln]
                while k < marks.shape[0] and marks[k] <= counts[r]:
                    if marks[k] == counts[r]:
                        at_marks[r, k] = sums[r]
                    k += 1
                lane_k[ln] = k
                if counts[r] >= n_to:
                    lane_r[ln] = -1
                    active -= 1
                    r = -1
            if r < 0:
                # take the next repetition that still needs terms
                while nxt < reps and counts[nxt] >= n_to:
                    nxt += 1
                if nxt >= reps:
                    continue
                r = nxt
                nxt += 1
                lane_r[ln] = r
                active += 1
                k = 0
                while k < marks.shape[0] and marks[k] <= counts[r]:
                    k += 1
                lane_k[ln] = k
            # start term counts[r] + 1 of repetition r
            rs = (st[r, 0], st[r, 1], st[r, 2], st[r, 3])
            u, rs = draw(rs)
            x0 = alias_draw(xtab, 0, X, u)
            u, rs = draw(rs)
            a = uniform_action(A, u)
            lane_c[ln] = load(coef, x0 * A + a)
            h0 = x0 // S
            row = (x0 - h0 * S) * A + a
            u, rs = draw(rs)
            lane_s[ln] = next_state(ptr, slots, row, u)
            st[r, 0], st[r, 1] = rs[0], rs[1]
            lane_g[ln] = load(R, row)
            lane_h[ln] = h0 + 1
            steps += H - h0
        if active == 0 and nxt >= reps:
            return steps
