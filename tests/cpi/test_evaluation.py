"""Exact evaluation against independent references.

* brute-force enumeration of every trajectory (product over steps of actions and next states)
  on small random tabular MDPs with non-stationary policies: V, Q, d, J, coverage reach and mass;
* Monte Carlo (a plain numpy simulation written here) on larger MDPs, |MC - exact| < 5 standard
  errors;
* random trees against their tabular form and against root-to-leaf path enumeration;
* closed forms: a bandit and a deterministic chain; E_{a~pi} A = 0, max_a A >= 0; the
  improvable set at tau = 0; coverage non-increasing in tau.

Tolerances: exact-vs-exact comparisons use ``atol = 1e-10`` (returns here are O(H) with
H <= 6, so round-off is ~1e-14); Monte Carlo uses 5 standard errors (plus 1/n for cells whose
variance is ~0), so a correct kernel fails a given check with probability < 1e-6.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cpi import (
    TabularMDP,
    TreeMDP,
    advantage,
    coverage,
    coverage_of,
    evaluate,
    greedy_policy,
    improvable_set,
    max_advantage,
    occupancy,
    value,
)

ATOL = 1e-10
PROPERTY = settings(max_examples=50, deadline=None, derandomize=True)


# ---------------------------------------------------------------------------------------------
# Random instances (generated here, independent of cpi.envs)
# ---------------------------------------------------------------------------------------------
def random_tabular(S: int, A: int, H: int, seed: int, sparsity: float = 0.4):
    """A random MDP with some zero transition/start/policy entries, and a non-stationary policy."""
    rng = np.random.default_rng(seed)

    def sparse_simplex(shape, n):
        w = rng.dirichlet(np.ones(n), size=shape)
        keep = rng.random(w.shape) > sparsity
        keep[..., 0] |= ~keep.any(-1)  # never an empty row
        w = w * keep
        return w / w.sum(-1, keepdims=True)

    P = sparse_simplex((S, A), S)
    R = rng.normal(size=(S, A))
    mu = sparse_simplex((), S)
    pol = sparse_simplex((H, S), A)
    # make some rows deterministic, as greedy / mixed CPI policies are
    det = rng.random((H, S)) < 0.3
    pol[det] = np.eye(A)[rng.integers(A, size=int(det.sum()))]
    return TabularMDP(P, R, mu, H), pol


def random_tree(A: int, max_depth: int, seed: int, p_leaf: float = 0.3, n_roots: int = 1):
    """A random tree in topological (breadth-first) order with early leaves and random rewards.

    Node 0 always expands, so the depth is at least 1; other nodes below ``max_depth`` become
    leaves with probability ``p_leaf``. Start mass is spread over ``n_roots`` roots.
    """
    rng = np.random.default_rng(seed)
    depth = [0] * n_roots
    children: list[list[int]] = [[-1] * A for _ in range(n_roots)]
    n = 0
    while n < len(depth):
        if depth[n] < max_depth and (n == 0 or rng.random() > p_leaf):
            first = len(depth)
            children[n] = list(range(first, first + A))
            depth += [depth[n] + 1] * A
            children += [[-1] * A for _ in range(A)]
        n += 1
    N = len(depth)
    reward = np.where(rng.random(N) < 0.5, rng.normal(size=N), 0.0)
    mu = np.zeros(N)
    mu[:n_roots] = rng.dirichlet(np.ones(n_roots))
    tree = TreeMDP(np.array(children, dtype=np.int64), reward, mu=mu)
    pol = rng.dirichlet(np.ones(A), size=N)
    det = rng.random(N) < 0.3
    pol[det] = np.eye(A)[rng.integers(A, size=int(det.sum()))]
    return tree, pol


# ---------------------------------------------------------------------------------------------
# Brute-force enumeration
# ---------------------------------------------------------------------------------------------
def trajectories(mdp: TabularMDP, pol, h0: int, start, first_action=None):
    """Every trajectory from step ``h0``: yields (probability, states s_h0..s_{H-1}, return).

    ``start`` is a start distribution (S,); ``first_action`` fixes the action at step h0.
    Enumerates the full product over actions and next states (zero-probability branches are
    pruned, which does not change any expectation).
    """
    H, S, A = mdp.horizon, mdp.n_states, mdp.n_actions

    def rec(h, s, prob, states, ret):
        if h == H:
            yield prob, states, ret
            return
        for a in range(A):
            pa = (1.0 if a == first_action else 0.0) if (h == h0 and first_action is not None) else pol[h, s, a]
            if pa == 0.0:
                continue
            for s2 in range(S):
                p = mdp.P[s, a, s2]
                if p == 0.0:
                    continue
                yield from rec(h + 1, s2, prob * pa * p, states + (s,), ret + mdp.R[s, a])

    for s in range(S):
        if start[s] > 0.0:
            yield from rec(h0, s, float(start[s]), (), 0.0)


def brute_force(mdp: TabularMDP, pol, G):
    """V, Q, d, J, reach(G) and mass(G) by enumeration of all trajectories."""
    H, S, A = mdp.horizon, mdp.n_states, mdp.n_actions
    V = np.zeros((H + 1, S))
    Q = np.zeros((H, S, A))
    for h, s in itertools.product(range(H), range(S)):
        e_s = np.eye(S)[s]
        V[h, s] = sum(p * r for p, _, r in trajectories(mdp, pol, h, e_s))
        for a in range(A):
            Q[h, s, a] = sum(p * r for p, _, r in trajectories(mdp, pol, h, e_s, first_action=a))
    d = np.zeros((H, S))
    J = reach = total = 0.0
    for p, states, r in trajectories(mdp, pol, 0, mdp.mu):
        total += p
        J += p * r
        for h, s in enumerate(states):
            d[h, s] += p
        if any(G[h, s] for h, s in enumerate(states)):
            reach += p
    assert abs(total - 1.0) < 1e-12  # the enumeration itself is complete
    mass = d[G].sum() / H
    return V, Q, d, J, reach, mass


@PROPERTY
@given(
    S=st.integers(1, 3),
    A=st.integers(1, 3),
    H=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
@example(S=3, A=3, H=4, seed=7)  # the largest case: 3 * 9^4 trajectories before pruning
@example(S=3, A=1, H=4, seed=8)
def test_tabular_matches_enumeration(S, A, H, seed):
    mdp, pol = random_tabular(S, A, H, seed)
    G = np.random.default_rng(seed + 1).random((H, S)) < 0.4
    V_bf, Q_bf, d_bf, J_bf, reach_bf, mass_bf = brute_force(mdp, pol, G)

    V, Q = evaluate(mdp, pol)
    assert V.shape == (H + 1, S) and Q.shape == (H, S, A)
    np.testing.assert_allclose(V, V_bf, rtol=0, atol=ATOL)
    np.testing.assert_allclose(Q, Q_bf, rtol=0, atol=ATOL)
    assert np.all(V[H] == 0.0)

    d = occupancy(mdp, pol)
    assert d.shape == (H, S)
    np.testing.assert_allclose(d, d_bf, rtol=0, atol=ATOL)
    np.testing.assert_allclose(d.sum(1), 1.0, atol=ATOL)
    assert value(mdp, pol) == pytest.approx(J_bf, abs=ATOL)

    cov = coverage_of(mdp, pol, G)
    assert cov.reach == pytest.approx(reach_bf, abs=ATOL)
    assert cov.mass == pytest.approx(mass_bf, abs=ATOL)

    # the improvable set and its coverage, with the set taken from the enumerated advantages
    A_bf = Q_bf - V_bf[:-1, :, None]
    tau = float(np.quantile(A_bf.max(-1), 0.5))
    G_tau = improvable_set(mdp, pol, tau)
    np.testing.assert_array_equal(G_tau, A_bf.max(-1) >= tau - 1e-9)
    *_, reach_tau, mass_tau = brute_force(mdp, pol, G_tau)
    cov_tau = coverage(mdp, pol, tau)
    assert cov_tau.reach == pytest.approx(reach_tau, abs=ATOL)
    assert cov_tau.mass == pytest.approx(mass_tau, abs=ATOL)


def test_reach_and_mass_differ_when_G_is_revisited():
    """A state that stays in G for all H steps: reach counts it once, mass H times over H."""
    P = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # two absorbing states, one action
    mdp = TabularMDP(P, np.zeros((2, 1)), [0.3, 0.7], 4)
    G = np.zeros((4, 2), dtype=bool)
    G[:, 0] = True
    G[2, 1] = True  # state 1 is in G only at step 2
    cov = coverage_of(mdp, np.ones((2, 1)), G)
    assert cov.reach == pytest.approx(1.0)
    assert cov.mass == pytest.approx((4 * 0.3 + 0.7) / 4)
    G[:, 0] = False
    G[0, 0] = G[3, 0] = True  # state 0 in G twice
    cov = coverage_of(mdp, np.ones((2, 1)), G)
    assert cov.reach == pytest.approx(1.0)
    assert cov.mass == pytest.approx((2 * 0.3 + 0.7) / 4)


# ---------------------------------------------------------------------------------------------
# Monte Carlo on larger instances (plain numpy simulation)
# ---------------------------------------------------------------------------------------------
def sample_rows(rng, cdf_rows):
    """One draw per row from categorical rows given by their CDFs (n, K)."""
    u = rng.random(cdf_rows.shape[0])
    idx = (u[:, None] >= cdf_rows).sum(axis=1)
    return np.minimum(idx, cdf_rows.shape[1] - 1)


def simulate(mdp: TabularMDP, pol, n: int, rng, G, h0=0, s0=None, a0=None):
    """n episodes from step h0 (from mu, or from state s0 with first action a0); returns
    (returns (n,), visit counts (H, S), hit-G indicator (n,))."""
    H, S = mdp.horizon, mdp.n_states
    P_cdf = np.cumsum(mdp.P, axis=-1)
    pol_cdf = np.cumsum(pol, axis=-1)
    s = sample_rows(rng, np.broadcast_to(np.cumsum(mdp.mu), (n, S))) if s0 is None else np.full(n, s0)
    ret = np.zeros(n)
    hit = np.zeros(n, dtype=bool)
    counts = np.zeros((H, S))
    for h in range(h0, H):
        counts[h] += np.bincount(s, minlength=S)
        hit |= G[h, s]
        a = np.full(n, a0) if (h == h0 and a0 is not None) else sample_rows(rng, pol_cdf[h, s])
        ret += mdp.R[s, a]
        s = sample_rows(rng, P_cdf[s, a])
    return ret, counts, hit


@pytest.mark.parametrize("seed", [11, 12])
def test_tabular_matches_monte_carlo(seed):
    S, A, H, n = 40, 4, 25, 40_000
    mdp, pol = random_tabular(S, A, H, seed, sparsity=0.6)
    rng = np.random.default_rng(1000 + seed)
    V, Q = evaluate(mdp, pol)
    d = occupancy(mdp, pol)
    G = improvable_set(mdp, pol, float(np.quantile(max_advantage(mdp, pol), 0.8)))
    cov = coverage(mdp, pol, float(np.quantile(max_advantage(mdp, pol), 0.8)))
    assert 0.05 < cov.reach < 0.999  # a non-trivial check

    ret, counts, hit = simulate(mdp, pol, n, rng, G)
    J = value(mdp, pol)
    assert abs(ret.mean() - J) < 5 * ret.std(ddof=1) / np.sqrt(n) + 1e-12

    freq = counts / n
    se = np.sqrt(d * (1 - d) / n)
    assert np.all(np.abs(freq - d) < 5 * se + 1.0 / n)

    p_hit = hit.mean()
    assert abs(p_hit - cov.reach) < 5 * np.sqrt(cov.reach * (1 - cov.reach) / n)
    per_episode_mass = (counts * G).sum() / (n * H)  # mean over episodes of (1/H) #steps in G
    assert abs(per_episode_mass - cov.mass) < 0.02  # mass is a mean of [0, 1] values: sd <= 0.5/sqrt(n)

    # Q and V at a mid-horizon state, by starting episodes there
    h, s = H // 2, int(np.argmax(d[H // 2]))
    for a in range(A):
        r, _, _ = simulate(mdp, pol, n // 4, rng, G, h0=h, s0=s, a0=a)
        assert abs(r.mean() - Q[h, s, a]) < 5 * r.std(ddof=1) / np.sqrt(n // 4) + 1e-12
    r, _, _ = simulate(mdp, pol, n // 4, rng, G, h0=h, s0=s)
    assert abs(r.mean() - V[h, s]) < 5 * r.std(ddof=1) / np.sqrt(n // 4) + 1e-12


# ---------------------------------------------------------------------------------------------
# Trees against their tabular form and against path enumeration
# ---------------------------------------------------------------------------------------------
def tree_paths(tree: TreeMDP, pol):
    """Every root-to-leaf path: yields (probability, nodes on the path, return)."""

    def rec(n, prob, nodes, ret):
        if tree.is_leaf[n]:
            yield prob, nodes + (n,), ret
            return
        for a in range(tree.n_actions):
            c = int(tree.children[n, a])
            if pol[n, a] > 0.0:
                yield from rec(c, prob * pol[n, a], nodes + (n,), ret + tree.reward[c])

    for root in np.flatnonzero(tree.mu > 0):
        yield from rec(int(root), float(tree.mu[root]), (), 0.0)


def lift_mask(tree: TreeMDP, G_tree):
    G = np.zeros((tree.horizon, tree.n_nodes + 1), dtype=bool)
    inner = np.flatnonzero(G_tree)
    G[tree.depth[inner], inner] = True
    return G


@PROPERTY
@given(
    A=st.integers(1, 4),
    max_depth=st.integers(1, 5),
    p_leaf=st.floats(0.0, 0.6),
    n_roots=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
@example(A=4, max_depth=5, p_leaf=0.1, n_roots=3, seed=5)
@example(A=1, max_depth=5, p_leaf=0.0, n_roots=1, seed=6)
def test_tree_matches_tabular_form(A, max_depth, p_leaf, n_roots, seed):
    tree, pol = random_tree(A, max_depth, seed, p_leaf, n_roots)
    N, H = tree.n_nodes, tree.horizon
    tab = tree.to_tabular()
    tpol = tree.tree_policy_to_tabular(pol)
    inner = np.flatnonzero(~tree.is_leaf)

    V, Q = evaluate(tree, pol)
    Vt, Qt = evaluate(tab, tpol)
    assert V.shape == (N,) and Q.shape == (N, A)
    np.testing.assert_allclose(V, Vt[tree.depth, np.arange(N)], rtol=0, atol=ATOL)
    np.testing.assert_allclose(Q[inner], Qt[tree.depth[inner], inner], rtol=0, atol=ATOL)
    np.testing.assert_array_equal(V[tree.is_leaf], 0.0)
    J = value(tree, pol)
    assert J == pytest.approx(value(tab, tpol), abs=ATOL)
    assert J == pytest.approx(sum(p * r for p, _, r in tree_paths(tree, pol)), abs=ATOL)

    d = occupancy(tree, pol)
    dt = occupancy(tab, tpol)
    assert d.shape == (N,)
    shallow = np.flatnonzero(tree.depth < H)
    np.testing.assert_allclose(d[shallow], dt[tree.depth[shallow], shallow], rtol=0, atol=ATOL)
    # tabular mass of a node sits only at the node's own depth; the rest is the absorbing state
    off_depth = dt[:, :N].copy()
    off_depth[tree.depth[shallow], shallow] = 0.0
    np.testing.assert_allclose(off_depth, 0.0, atol=ATOL)
    # tree occupancy by path enumeration (covers the leaves at depth H too)
    d_paths = np.zeros(N)
    for p, nodes, _ in tree_paths(tree, pol):
        d_paths[list(nodes)] += p
    np.testing.assert_allclose(d, d_paths, rtol=0, atol=ATOL)
    # every path ends in exactly one leaf
    assert d[tree.is_leaf].sum() == pytest.approx(1.0, abs=ATOL)

    adv = advantage(tree, pol)
    max_adv = adv.max(-1)
    for tau in (0.0, float(np.quantile(max_adv[inner], 0.5)) + 1e-6, float(max_adv.max()) + 1.0):
        G = improvable_set(tree, pol, tau)
        Gt = improvable_set(tab, tpol, tau)
        assert not G[tree.is_leaf].any()
        np.testing.assert_array_equal(G[inner], Gt[tree.depth[inner], inner])
        cov = coverage(tree, pol, tau)
        cov_t = coverage_of(tab, tpol, lift_mask(tree, G))
        assert cov.reach == pytest.approx(cov_t.reach, abs=ATOL)
        assert cov.mass == pytest.approx(cov_t.mass, abs=ATOL)
        reach_paths = sum(p for p, nodes, _ in tree_paths(tree, pol) if G[list(nodes)].any())
        assert cov.reach == pytest.approx(reach_paths, abs=ATOL)
        if tau > 0:  # leaves and the absorbing state are not improvable: the tabular form agrees
            cov_direct = coverage(tab, tpol, tau)
            assert cov.reach == pytest.approx(cov_direct.reach, abs=ATOL)
            assert cov.mass == pytest.approx(cov_direct.mass, abs=ATOL)


def test_tree_reach_counts_a_path_once():
    """Root and its child both improvable: reach counts the path once, mass twice."""
    children = np.array([[1, 2], [3, 4], [-1, -1], [-1, -1], [-1, -1]])
    tree = TreeMDP(children, np.array([0, 0, 0, 1.0, 0]))
    pol = np.full((5, 2), 0.5)
    G = np.array([True, True, False, False, False])
    cov = coverage_of(tree, pol, G)
    assert cov.reach == pytest.approx(1.0)
    assert cov.mass == pytest.approx((1.0 + 0.5) / 2)


# ---------------------------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------------------------
def test_bandit_closed_form():
    r = np.array([1.0, 0.25, -0.5])
    pi = np.array([0.2, 0.5, 0.3])
    mdp = TabularMDP(np.ones((1, 3, 1)), r[None, :], [1.0], 1)
    V, Q = evaluate(mdp, pi[None, :])
    v = float(pi @ r)  # 0.2 + 0.125 - 0.15 = 0.175
    assert v == pytest.approx(0.175)
    np.testing.assert_allclose(V, [[v], [0.0]], atol=1e-15)
    np.testing.assert_allclose(Q, r[None, None, :], atol=1e-15)
    np.testing.assert_allclose(advantage(mdp, pi[None, :]), (r - v)[None, None, :], atol=1e-15)
    np.testing.assert_allclose(occupancy(mdp, pi[None, :]), [[1.0]])
    # max_a A = 1 - 0.175 = 0.825
    for tau, expected in ((0.0, 1.0), (0.8, 1.0), (0.825, 1.0), (0.83, 0.0), (5.0, 0.0)):
        cov = coverage(mdp, pi[None, :], tau)
        assert (cov.reach, cov.mass) == (pytest.approx(expected), pytest.approx(expected))
    # the greedy policy picks the best arm; ties go to the lowest action
    np.testing.assert_array_equal(greedy_policy(mdp, Q), [[[1.0, 0.0, 0.0]]])
    np.testing.assert_array_equal(greedy_policy(mdp, np.array([[[0.0, 2.0, 2.0]]])), [[[0, 1, 0]]])


def chain(H: int, p: float):
    """States 0..H on a line plus a dead state H+1; start at 0.

    Action 0 moves right (s -> s+1) and pays 1 on arriving at H; action 1 falls into the dead
    state. H and the dead state are absorbing with zero reward. Policy: right with prob. p.
    Closed forms: V[h, s] = p^(H-s) for h <= s < H (else 0); Q[h, s, right] = p^(H-s-1),
    Q[h, s, fall] = 0; d[h, h] = p^h, d[h, dead] = 1 - p^h; J = p^H.
    """
    S, dead = H + 2, H + 1
    P = np.zeros((S, 2, S))
    R = np.zeros((S, 2))
    for s in range(H):
        P[s, 0, s + 1] = 1.0
        P[s, 1, dead] = 1.0
    P[H, :, H] = 1.0
    P[dead, :, dead] = 1.0
    R[H - 1, 0] = 1.0
    mu = np.eye(S)[0]
    pol = np.tile([p, 1.0 - p], (H, S, 1))
    return TabularMDP(P, R, mu, H), pol


@pytest.mark.parametrize("H, p", [(1, 0.5), (4, 0.7), (6, 0.3), (5, 1.0)])
def test_chain_closed_form(H, p):
    mdp, pol = chain(H, p)
    dead = H + 1
    V, Q = evaluate(mdp, pol)
    V_ref = np.zeros((H + 1, H + 2))
    Q_ref = np.zeros((H, H + 2, 2))
    for h in range(H):
        for s in range(h, H):
            V_ref[h, s] = p ** (H - s)
            Q_ref[h, s, 0] = p ** (H - s - 1)
    np.testing.assert_allclose(V, V_ref, atol=1e-14)
    np.testing.assert_allclose(Q, Q_ref, atol=1e-14)
    assert value(mdp, pol) == pytest.approx(p**H)

    d = occupancy(mdp, pol)
    d_ref = np.zeros((H, H + 2))
    for h in range(H):
        d_ref[h, h] = p**h
        d_ref[h, dead] = 1 - p**h
    np.testing.assert_allclose(d, d_ref, atol=1e-14)

    # on-path advantage of moving right: p^(H-h-1) (1-p), growing with h; G = {h >= h*}
    gain = np.array([p ** (H - h - 1) * (1 - p) for h in range(H)])
    for tau in (1e-3, 0.05, 0.1, 0.2, 0.3):
        G = improvable_set(mdp, pol, tau)
        on_path = G[np.arange(H), np.arange(H)]
        np.testing.assert_array_equal(on_path, gain >= tau)
        assert not G[:, dead].any()
        hs = np.flatnonzero(gain >= tau)
        cov = coverage(mdp, pol, tau)
        reach_ref = p ** hs[0] if hs.size else 0.0
        mass_ref = sum(p**h for h in hs) / H
        # off-path states (s != h) have zero occupancy, so they cannot change either reading
        assert cov.reach == pytest.approx(reach_ref, abs=1e-14)
        assert cov.mass == pytest.approx(mass_ref, abs=1e-14)


# ---------------------------------------------------------------------------------------------
# Identities and monotonicity
# ---------------------------------------------------------------------------------------------
@PROPERTY
@given(
    S=st.integers(1, 12),
    A=st.integers(1, 5),
    H=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_advantage_identities_tabular(S, A, H, seed):
    mdp, pol = random_tabular(S, A, H, seed)
    adv = advantage(mdp, pol)
    assert adv.shape == (H, S, A)
    np.testing.assert_allclose((pol * adv).sum(-1), 0.0, atol=1e-10)  # E_{a~pi} A = 0
    assert np.all(max_advantage(mdp, pol) >= -1e-12)  # hence max_a A >= 0
    assert improvable_set(mdp, pol, 0.0).all()  # tau = 0: every state
    # the greedy policy of Q attains max_a A
    greedy = greedy_policy(mdp, evaluate(mdp, pol)[1])
    np.testing.assert_allclose((greedy * adv).sum(-1), adv.max(-1), atol=1e-12)


@PROPERTY
@given(
    A=st.integers(1, 4),
    max_depth=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_advantage_identities_tree(A, max_depth, seed):
    tree, pol = random_tree(A, max_depth, seed)
    adv = advantage(tree, pol)
    inner = ~tree.is_leaf
    np.testing.assert_allclose((pol * adv).sum(-1)[inner], 0.0, atol=1e-10)
    np.testing.assert_array_equal(adv[tree.is_leaf], 0.0)
    assert np.all(max_advantage(tree, pol) >= -1e-12)
    np.testing.assert_array_equal(improvable_set(tree, pol, 0.0), inner)


def _taus(max_adv):
    top = float(max_adv.max())
    return np.concatenate([[0.0], np.unique(np.round(max_adv, 12)), np.linspace(0, 2 * top, 15), [top + 1.0]])


@PROPERTY
@given(
    S=st.integers(1, 10),
    A=st.integers(1, 4),
    H=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_coverage_non_increasing_in_tau_tabular(S, A, H, seed):
    mdp, pol = random_tabular(S, A, H, seed)
    taus = np.sort(_taus(max_advantage(mdp, pol)))
    covs = [coverage(mdp, pol, t) for t in taus]
    reach = np.array([c.reach for c in covs])
    mass = np.array([c.mass for c in covs])
    assert reach[0] == pytest.approx(1.0) and mass[0] == pytest.approx(1.0)  # tau = 0: everything
    assert reach[-1] == 0.0 and mass[-1] == 0.0  # tau above every advantage: nothing
    assert np.all(np.diff(reach) <= 1e-12) and np.all(np.diff(mass) <= 1e-12)
    assert np.all(mass <= reach + 1e-12)  # (1/H) sum_h P(s_h in G) <= P(some s_h in G)
    # the sets themselves are nested
    sets = [improvable_set(mdp, pol, t) for t in taus]
    assert all(np.all(b <= a) for a, b in zip(sets, sets[1:]))


@PROPERTY
@given(
    A=st.integers(1, 4),
    max_depth=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_coverage_non_increasing_in_tau_tree(A, max_depth, seed):
    tree, pol = random_tree(A, max_depth, seed)
    taus = np.sort(_taus(max_advantage(tree, pol)))
    covs = [coverage(tree, pol, t) for t in taus]
    reach = np.array([c.reach for c in covs])
    mass = np.array([c.mass for c in covs])
    assert reach[0] == pytest.approx(1.0)  # the root is improvable at tau = 0
    assert reach[-1] == 0.0 and mass[-1] == 0.0
    assert np.all(np.diff(reach) <= 1e-12) and np.all(np.diff(mass) <= 1e-12)
    assert np.all(mass <= reach + 1e-12)


def test_evaluate_accepts_precomputed_values():
    mdp, pol = random_tabular(5, 3, 4, seed=3)
    V, Q = evaluate(mdp, pol)
    np.testing.assert_array_equal(advantage(mdp, pol, V, Q), advantage(mdp, pol))
    np.testing.assert_array_equal(improvable_set(mdp, pol, 0.1, V, Q), improvable_set(mdp, pol, 0.1))
    d = occupancy(mdp, pol)
    G = improvable_set(mdp, pol, 0.1)
    assert coverage_of(mdp, pol, G, d=d) == coverage_of(mdp, pol, G)
