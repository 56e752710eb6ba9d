"""The compiled samplers against a frozen plain-Python copy of their sampling order.

Every sampler of :mod:`cpi.rollouts` consumes uniforms from its Generator in a documented order
(tabular episodes advance ``LANES`` at a time, lane by lane and step by step; Q-rollouts and
Kakade-Langford terms are scheduled over lanes, a finished lane taking the next pending
rollout; reset candidates and tree episodes one after another). The functions below are a plain
Python transcription of the kernels as they were before issue 22 (``rng.random()`` one draw at a
time, the same alias-table arithmetic), so these tests fail when a kernel changes the draws it
makes, their order, or the arithmetic that turns them into states and actions: the new kernels
must return bit-identical arrays and leave the Generators in the same state. Sizes are small
(plain Python); the statistical tests of the samplers are in ``test_rollouts.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from cpi import TabularMDP
from cpi.mdp import check_policy
from cpi.rollouts import (
    alias_pack,
    kl_estimates,
    on_policy_episodes,
    q_rollouts,
    sample_resets,
    simulate_returns,
    tables,
)
from cpi.selectors import reset_distribution
from cpi.tabular_kernels import LANES_MIN_HORIZON
from tests.cpi import builders

LANES = 8  # the kernels' lane count before issue 22 (part of the sampling order)


# ---------------------------------------------------------------------------------------------
# Frozen alias tables (Vose's construction as before issue 22, in plain Python)
# ---------------------------------------------------------------------------------------------
def vose(ptr, succ, probs):
    """(keep, alias) aligned with succ, row by row (the pre-issue-22 _alias_tables)."""
    keep = np.ones(len(succ))
    alias = np.array(succ, dtype=np.int64)
    scaled = np.zeros(len(succ))
    for r in range(len(ptr) - 1):
        lo, hi = int(ptr[r]), int(ptr[r + 1])
        k = hi - lo
        if k <= 1:
            continue
        tot = 0.0
        for j in range(lo, hi):
            tot += probs[j]
        small, large = [], []
        for j in range(lo, hi):
            scaled[j] = probs[j] * k / tot
            (small if scaled[j] < 1.0 else large).append(j)
        while small and large:
            j = small.pop()
            g = large[-1]
            keep[j] = scaled[j]
            alias[j] = succ[g]
            scaled[g] = scaled[g] + scaled[j] - 1.0
            if scaled[g] < 1.0:
                large.pop()
                small.append(g)
    return keep, alias


def frozen_pack(probs):
    """The pre-issue-22 alias_pack: (m, k) rows -> (m k,) uint64 (threshold << 32 | alias)."""
    probs = np.array(probs, dtype=np.float64)
    m, k = probs.shape
    probs[probs.sum(axis=1) <= 0, 0] = 1.0
    keep, alias = vose(np.arange(m + 1) * k, np.tile(np.arange(k), m), probs.ravel())
    thresh = np.minimum(np.floor(keep * 2.0**32), 2.0**32 - 1).astype(np.uint64)
    thresh[keep >= 1.0] = np.uint64(2**32 - 1)
    return (thresh << np.uint64(32)) | alias.astype(np.uint64)


def policy_table(mdp, pol):
    return frozen_pack(check_policy(mdp, pol).reshape(-1, mdp.n_actions))


def state_table(w):
    return frozen_pack(np.asarray(w, dtype=np.float64)[None, :])


@pytest.mark.parametrize("k", [1, 2, 3, 7, 64])
def test_alias_tables_are_the_frozen_ones(k):
    rng = np.random.default_rng(k)
    probs = rng.dirichlet(np.full(k, 0.3), size=9)
    probs[0] = 0.0  # a zero row
    probs[1] = 0.0
    probs[1, k - 1] = 1.0  # a deterministic row
    probs[2] *= 3.0  # unnormalised
    np.testing.assert_array_equal(alias_pack(probs), frozen_pack(probs))
    mdp, _ = sparse_tabular(seed=k)
    tb = tables(mdp)
    S, A = mdp.n_states, mdp.n_actions
    flat = mdp.P.reshape(S * A, S)
    rows, cols = np.nonzero(flat > 0)
    ptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=S * A))])
    keep, alias = vose(ptr, cols, flat[rows, cols])
    thresh = np.minimum(np.floor(keep * 2.0**32), 2.0**32 - 1).astype(np.uint32)
    thresh[keep >= 1.0] = np.uint32(2**32 - 1)
    np.testing.assert_array_equal(tb.ptr, ptr)
    np.testing.assert_array_equal(tb.slots, np.stack([thresh, cols, alias], axis=1))


def test_the_largest_uniform_stays_in_range():
    """u k < k for the largest uniform u = 1 - 2**-53 (so an alias draw needs no clamp)."""
    u = 1.0 - 2.0**-53
    for k in [*range(1, 5000), 2**20 - 1, 2**31 + 7, 2**32 - 1]:
        assert int(u * k) == k - 1


# ---------------------------------------------------------------------------------------------
# Frozen plain-Python samplers (the pre-issue-22 kernels, one draw at a time)
# ---------------------------------------------------------------------------------------------
def draw_alias(tab, base, k, u):
    v = u * k
    i = int(v)
    if i >= k:
        i = k - 1
    w = int(tab[base + i])
    if (v - i) * 4294967296.0 < float(w >> 32):
        return i
    return w & 0xFFFFFFFF


def next_state(tb, row, u):
    lo = int(tb.ptr[row])
    k = int(tb.ptr[row + 1]) - lo
    v = u * k
    i = int(v)
    j = lo + i
    if (v - i) * 4294967296.0 < float(tb.slots[j, 0]):
        return int(tb.slots[j, 1])
    return int(tb.slots[j, 2])


def draw_start(mu_cdf, u):
    return int(np.searchsorted(mu_cdf, u, side="right"))


def uniform_action(A, u):
    return min(int(u * A), A - 1)


def offer(x, sel, in_G, rng_sel, acc, counts):
    p = sel[x]
    ok = p >= 1.0 or (p > 0.0 and rng_sel.random() < p)
    if in_G[x]:
        counts[1] += 1
    if ok:
        acc.append(x)
        counts[0] += 1
        if in_G[x]:
            counts[2] += 1


def tab_step(tb, ptab, S, A, h, x, rng):
    a = draw_alias(ptab, (h * S + x) * A, A, rng.random())
    r = tb.R[x, a]
    return next_state(tb, x * A + a, rng.random()), a, r


def tab_returns(mdp, pol, n, rng):
    tb, ptab = tables(mdp), policy_table(mdp, pol)
    S, A, H = mdp.n_states, mdp.n_actions, mdp.horizon
    out = np.empty(n)
    for i0 in range(0, n, LANES):
        m = min(LANES, n - i0)
        s = [draw_start(tb.mu_cdf, rng.random()) for _ in range(m)]
        g = [0.0] * m
        for h in range(H):
            for ln in range(m):
                s[ln], _, r = tab_step(tb, ptab, S, A, h, s[ln], rng)
                g[ln] += r
        out[i0 : i0 + m] = g
    return out


def tab_episodes(mdp, pol, n, rng):
    tb, ptab = tables(mdp), policy_table(mdp, pol)
    S, A, H = mdp.n_states, mdp.n_actions, mdp.horizon
    xs = np.empty((n, H), dtype=np.int64)
    acts = np.empty((n, H), dtype=np.int64)
    rtg = np.empty((n, H))
    for i0 in range(0, n, LANES):
        m = min(LANES, n - i0)
        s = [draw_start(tb.mu_cdf, rng.random()) for _ in range(m)]
        for h in range(H):
            for ln in range(m):
                xs[i0 + ln, h] = h * S + s[ln]
                s[ln], acts[i0 + ln, h], rtg[i0 + ln, h] = tab_step(tb, ptab, S, A, h, s[ln], rng)
        for ln in range(m):
            for h in range(H - 2, -1, -1):
                rtg[i0 + ln, h] += rtg[i0 + ln, h + 1]
    return xs, acts, rtg


def tab_resets(mdp, pol, n_accept, sel, in_G, rng, rng_sel, max_candidates=10**9):
    tb, ptab = tables(mdp), policy_table(mdp, pol)
    S, A, H = mdp.n_states, mdp.n_actions, mdp.horizon
    acc, counts, n_cand, steps = [], [0, 0, 0], 0, 0
    while counts[0] < n_accept and n_cand < max_candidates:
        h = min(int(rng.random() * H), H - 1)
        s = draw_start(tb.mu_cdf, rng.random())
        for t in range(h):
            s, _, _ = tab_step(tb, ptab, S, A, t, s, rng)
        steps += h
        n_cand += 1
        offer(h * S + s, sel, in_G, rng_sel, acc, counts)
    return np.array(acc, dtype=np.int64), n_cand, steps, counts[1], counts[2]


def lane_schedule(total, start, step, finish):
    """The Q-rollout lane scheduler: start(lane, r) -> steps; step(lane) -> done?; finish."""
    lane_r = [-1] * LANES
    nxt = active = steps = 0
    for ln in range(LANES):
        if nxt < total:
            steps += start(ln, nxt)
            lane_r[ln] = nxt
            nxt += 1
            active += 1
    while active > 0:
        for ln in range(LANES):
            r = lane_r[ln]
            if r < 0:
                continue
            if step(ln):
                continue
            finish(ln, r)
            if nxt < total:
                steps += start(ln, nxt)
                lane_r[ln] = nxt
                nxt += 1
            else:
                lane_r[ln] = -1
                active -= 1
    return steps


def tab_q_lanes(mdp, pol, first, total, rng, finish):
    """Q-rollouts scheduled over lanes; ``first(r) -> (x0 flat, a)`` draws a rollout's start."""
    tb, ptab = tables(mdp), policy_table(mdp, pol)
    S, A, H = mdp.n_states, mdp.n_actions, mdp.horizon
    lane = [[0, 0, 0.0] for _ in range(LANES)]  # state, step, return

    def start(ln, r):
        x0, a = first(r)
        h0 = x0 // S
        s0 = x0 - h0 * S
        lane[ln][2] = tb.R[s0, a]
        lane[ln][0] = next_state(tb, s0 * A + a, rng.random())
        lane[ln][1] = h0 + 1
        return H - h0

    def step(ln):
        s, h, _ = lane[ln]
        if h >= H:
            return False
        lane[ln][0], _, r = tab_step(tb, ptab, S, A, h, s, rng)
        lane[ln][2] += r
        lane[ln][1] = h + 1
        return True

    return lane_schedule(total, start, step, lambda ln, r: finish(r, lane[ln][2]))


def tab_q_rollouts(mdp, pol, starts, group, rng):
    A = mdp.n_actions
    n = len(starts)
    acts = np.empty((n, group), dtype=np.int64)
    qs = np.empty((n, group))

    def first(r):
        a = uniform_action(A, rng.random())
        acts[r // group, r % group] = a
        return int(starts[r // group]), a

    def finish(r, g):
        qs[r // group, r % group] = g

    steps = tab_q_lanes(mdp, pol, first, n * group, rng, finish)
    return acts, qs, steps


def tab_kl_means(mdp, pol, coef, w, n, reps, rng):
    A = mdp.n_actions
    X = mdp.horizon * mdp.n_states
    xtab = state_table(w)
    sums = np.zeros(reps)
    c = {}

    def first(r):
        x = draw_alias(xtab, 0, X, rng.random())
        a = uniform_action(A, rng.random())
        c[r] = coef[x * A + a]
        return x, a

    def finish(r, g):
        sums[r // n] += c.pop(r) * g

    steps = tab_q_lanes(mdp, pol, first, n * reps, rng, finish)
    return sums / n, steps


def tree_walk(children, ptab, A, x, rng, reward=None, g=0.0):
    """Follow the policy from x to a leaf, adding rewards to g: (leaf, g, steps, path)."""
    t, path = 0, [x]
    while children[x, 0] >= 0:
        x = int(children[x, draw_alias(ptab, x * A, A, rng.random())])
        if reward is not None:
            g += reward[x]
        t += 1
        path.append(x)
    return x, g, t, path


def tree_returns(tree, pol, n, rng):
    tb, ptab = tables(tree), policy_table(tree, pol)
    A = tree.n_actions
    out = np.empty(n)
    for i in range(n):
        x = draw_start(tb.mu_cdf, rng.random())
        out[i] = tree_walk(tb.children, ptab, A, x, rng, tb.reward)[1]
    return out


def tree_resets(tree, pol, n_accept, sel, in_G, rng, rng_sel, max_candidates=10**9):
    tb, ptab = tables(tree), policy_table(tree, pol)
    A, H = tree.n_actions, tree.horizon
    acc, counts, n_cand, steps = [], [0, 0, 0], 0, 0
    while counts[0] < n_accept and n_cand < max_candidates:
        n_cand += 1
        x = draw_start(tb.mu_cdf, rng.random())
        if tb.full_depth:
            h = min(int(rng.random() * H), H - 1)
            for _ in range(h):
                x = int(tb.children[x, draw_alias(ptab, x * A, A, rng.random())])
            steps += h
        else:
            _, _, L, path = tree_walk(tb.children, ptab, A, x, rng)
            steps += L
            if L == 0:
                continue
            x = path[min(int(rng.random() * L), L - 1)]
        offer(x, sel, in_G, rng_sel, acc, counts)
    return np.array(acc, dtype=np.int64), n_cand, steps, counts[1], counts[2]


def tree_q_rollouts(tree, pol, starts, group, rng):
    tb, ptab = tables(tree), policy_table(tree, pol)
    A = tree.n_actions
    n = len(starts)
    acts = np.empty((n, group), dtype=np.int64)
    qs = np.empty((n, group))
    steps = 0
    for i in range(n):
        for j in range(group):
            a = uniform_action(A, rng.random())
            acts[i, j] = a
            x = int(tb.children[starts[i], a])
            _, qs[i, j], t, _ = tree_walk(tb.children, ptab, A, x, rng, tb.reward, tb.reward[x])
            steps += 1 + t
    return acts, qs, steps


def tree_episodes(tree, pol, n, rng):
    tb, ptab = tables(tree), policy_table(tree, pol)
    A, H = tree.n_actions, tree.horizon
    xs = np.full((n, H), -1, dtype=np.int64)
    acts = np.full((n, H), -1, dtype=np.int64)
    rtg = np.zeros((n, H))
    for i in range(n):
        x = draw_start(tb.mu_cdf, rng.random())
        t = 0
        while tb.children[x, 0] >= 0:
            a = draw_alias(ptab, x * A, A, rng.random())
            xs[i, t], acts[i, t] = x, a
            x = int(tb.children[x, a])
            rtg[i, t] = tb.reward[x]
            t += 1
        for h in range(t - 2, -1, -1):
            rtg[i, h] += rtg[i, h + 1]
    return xs, acts, rtg


def tree_kl_means(tree, pol, coef, w, n, reps, rng):
    tb, ptab = tables(tree), policy_table(tree, pol)
    N, A = tb.children.shape
    xtab = state_table(w)
    sums = np.zeros(reps)
    steps = 0
    for r in range(reps):
        acc = 0.0
        for _ in range(n):
            x0 = draw_alias(xtab, 0, N, rng.random())
            a = uniform_action(A, rng.random())
            x = int(tb.children[x0, a])
            _, g, t, _ = tree_walk(tb.children, ptab, A, x, rng, tb.reward, tb.reward[x])
            steps += 1 + t
            acc += coef[x0 * A + a] * g
        sums[r] = acc
    return sums / n, steps


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------
def sparse_tabular(S=9, A=3, H=5, seed=0, mu_zeros=0):
    rng = np.random.default_rng(seed)
    P = np.zeros((S, A, S))
    for s in range(S):
        for a in range(A):
            k = 1 + (s + a) % 4  # rows of 1..4 successors (a deterministic row included)
            P[s, a, rng.choice(S, k, replace=False)] = rng.dirichlet(np.ones(k))
    mu = rng.dirichlet(np.ones(S))
    mu[rng.choice(S, mu_zeros, replace=False)] = 0.0  # start states without mass
    mdp = TabularMDP(P, rng.normal(size=(S, A)), mu / mu.sum(), H)
    return mdp, rng.dirichlet(np.full(A, 0.5), size=(H, S))


def early_leaf_tree():
    children = np.array([[1, 2], [-1, -1], [3, 4], [5, 6], [-1, -1], [-1, -1], [-1, -1]])
    from cpi import TreeMDP

    reward = np.array([0.0, 1.0, 0.2, -0.3, 0.5, 2.0, -1.0])
    pol = np.array(
        [[0.3, 0.7], [0.5, 0.5], [0.6, 0.4], [0.2, 0.8], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]
    )
    return TreeMDP(children, reward), pol


CASES = {
    "tabular": sparse_tabular,
    # H >= LANES_MIN_HORIZON: reset candidates walked in lanes; mu with zeros
    "tabular_long": lambda: sparse_tabular(S=11, H=17, seed=2, mu_zeros=4),
    "tree": lambda: builders.full_tree(A=3, D=4, seed=1, internal_noise=0.1, with_policy=True),
    "tree_early_leaves": early_leaf_tree,
}


def same_state(a: np.random.Generator, b: np.random.Generator) -> bool:
    return a.bit_generator.state == b.bit_generator.state


def pair(seed):
    return np.random.default_rng(seed), np.random.default_rng(seed)


def assert_same(got, want):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("n", [1, 13, 40])
def test_returns_and_episodes_follow_the_frozen_order(case, n):
    mdp, pol = CASES[case]()
    tab = isinstance(mdp, TabularMDP)
    r1, r2 = pair(10 + n)
    assert_same(
        simulate_returns(mdp, pol, n, r1), (tab_returns if tab else tree_returns)(mdp, pol, n, r2)
    )
    assert same_state(r1, r2)
    xs, acts, rtg, steps = on_policy_episodes(mdp, pol, n, r1)
    assert_same((xs, acts, rtg), (tab_episodes if tab else tree_episodes)(mdp, pol, n, r2))
    assert steps == int((xs >= 0).sum())
    assert same_state(r1, r2)


def selectors(mdp, pol, seed):
    """Acceptance vectors: all, a mix of 0 / 1 / fractional, and one that rejects most."""
    d = reset_distribution(mdp, pol)
    rng = np.random.default_rng(seed)
    mixed = rng.choice([0.0, 1.0, 0.3, 0.8], size=d.size)
    rare = (rng.random(d.size) < 0.15) * 0.5
    G = rng.random(d.size) < 0.4
    return [(np.ones(d.size), G), (mixed, G), (rare, ~G)]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shared", [False, True])
def test_resets_follow_the_frozen_order(case, shared):
    mdp, pol = CASES[case]()
    ref = tab_resets if isinstance(mdp, TabularMDP) else tree_resets
    if case == "tabular_long":  # the lane kernel, not the serial one
        assert mdp.horizon >= LANES_MIN_HORIZON
    for k, (sel, G) in enumerate(selectors(mdp, pol, 3)):
        for n, cap in ((1, 10**9), (37, 10**9), (60, 25)):
            r1, r2 = pair(100 + k)
            s1, s2 = pair(200 + k)
            if shared:
                s1, s2 = r1, r2
            b = sample_resets(mdp, pol, n, sel, G, r1, s1, max_candidates=cap)
            want = ref(mdp, pol, n, sel, G, r2, s2, max_candidates=cap)
            assert_same(
                (b.states, b.n_candidates, b.base_steps, b.candidates_in_G, b.accepted_in_G), want
            )
            assert same_state(r1, r2) and same_state(s1, s2)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("group", [1, 3])
def test_q_rollouts_follow_the_frozen_order(case, group):
    mdp, pol = CASES[case]()
    d = reset_distribution(mdp, pol)
    starts = np.flatnonzero(d > 0)
    starts = np.resize(starts, 23)  # repeats, and more rollouts than lanes
    r1, r2 = pair(7)
    got = q_rollouts(mdp, pol, starts, group, r1)
    ref = tab_q_rollouts if isinstance(mdp, TabularMDP) else tree_q_rollouts
    assert_same(got, ref(mdp, pol, starts, group, r2))
    assert same_state(r1, r2)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("n", "reps"), [(1, 30), (7, 5)])
def test_kl_estimates_follow_the_frozen_order(case, n, reps):
    mdp, pol = CASES[case]()
    A = mdp.n_actions
    d = reset_distribution(mdp, pol)
    rng = np.random.default_rng(4)
    X = d.size
    coef = A * (rng.dirichlet(np.ones(A), size=X) - pol.reshape(X, A)).ravel()
    w = d * (rng.random(X) < 0.6)
    if not isinstance(mdp, TabularMDP):
        w[mdp.is_leaf] = 0.0
    if w.sum() == 0:
        w = d.copy()
    r1, r2 = pair(9)
    got = kl_estimates(mdp, pol, coef, w, n, reps, r1)
    ref = tab_kl_means if isinstance(mdp, TabularMDP) else tree_kl_means
    assert_same(got, ref(mdp, pol, coef, w, n, reps, r2))
    assert same_state(r1, r2)


def frozen_greedy(pf, states, actions, qs):
    """The pre-issue-22 greedy_from_samples (np.unique, np.bincount, np.argmax)."""
    A = pf.shape[1]
    target = pf.copy()
    keep = states >= 0
    if not keep.any():
        return target
    xs, inv = np.unique(states[keep], return_inverse=True)
    key = inv * A + actions[keep]
    counts = np.bincount(key, minlength=xs.size * A).reshape(-1, A)
    sums = np.bincount(key, weights=qs[keep], minlength=xs.size * A).reshape(-1, A)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
    target[xs] = 0.0
    target[xs, np.argmax(means, axis=1)] = 1.0
    return target


def test_greedy_target_is_the_frozen_one():
    """Both paths of greedy_from_samples (a dense table for small X, sorting for large X) pick
    the frozen version's actions: same sums, ties to the lowest action, NaN as numpy."""
    from cpi.estimators import greedy_from_samples

    rng = np.random.default_rng(0)
    for trial in range(400):
        X, A = int(rng.integers(1, 25)), int(rng.integers(1, 6))
        if trial % 4 == 0:
            X = 30_000  # X A > 16 n + 65536: the sorting path
        pf = rng.dirichlet(np.ones(A), size=X)
        n = int(rng.integers(0, 50))
        st = rng.integers(-1, min(X, 40), size=n)
        ac = rng.integers(0, A, size=n)
        qs = rng.choice([0.0, 1.0, 0.5], size=n) if trial % 2 else rng.normal(size=n)
        if trial % 25 == 0 and n:
            qs[0] = np.nan
        np.testing.assert_array_equal(
            greedy_from_samples(pf, st, ac, qs), frozen_greedy(pf, st, ac, qs)
        )
