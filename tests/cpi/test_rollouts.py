"""Monte Carlo kernels against exact quantities.

* ``simulate_returns``: the mean return of many episodes is within 5 standard errors of the exact
  J (tabular sparse MDP, full tree, tree with early leaves);
* the reset sampler: the empirical distribution of candidates matches the exact reset
  distribution d (total variation below a bound a few times its sampling scale ~ sqrt(X / n));
* the Q-rollout sampler: per-(state, action) means within 5 standard errors of exact Q;
* cost accounting on hand cases (deterministic counts);
* the alias tables of policies and state weights reproduce their probabilities exactly, and the
  batched Kakade-Langford kernel (``kl_estimates``) is unbiased for the exact policy advantage
  with the variance of a mean of n i.i.d. terms.

Failure probability of a correct kernel per check: < 1e-5 (5 sigma), TV bounds with similar slack.
"""

from __future__ import annotations

import numpy as np
import pytest

from cpi import TabularMDP, TreeMDP, evaluate, occupancy, value
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
from tests.cpi import builders


def sparse_tabular(S=12, A=3, H=6, branching=3, seed=0):
    rng = np.random.default_rng(seed)
    P = np.zeros((S, A, S))
    for s in range(S):
        for a in range(A):
            idx = rng.choice(S, branching, replace=False)
            P[s, a, idx] = rng.dirichlet(np.ones(branching))
    R = rng.normal(size=(S, A))
    mu = rng.dirichlet(np.ones(S))
    pol = rng.dirichlet(np.ones(A), size=(H, S))
    return TabularMDP(P, R, mu, H), pol


def full_tree(A=2, D=4, seed=0):
    """Complete A-ary tree with random leaf and internal rewards, and a random policy."""
    return builders.full_tree(A=A, D=D, seed=seed, internal_noise=0.1, with_policy=True)


def early_leaf_tree():
    """Depth-3 tree where some branches end at depth 1 or 2 (episodes of different lengths)."""
    # node: children
    # 0: 1, 2     1: leaf (depth 1)     2: 3, 4     3: 5, 6     4: leaf (depth 2)
    # 5, 6: leaves (depth 3)
    children = np.array([[1, 2], [-1, -1], [3, 4], [5, 6], [-1, -1], [-1, -1], [-1, -1]])
    reward = np.array([0.0, 1.0, 0.2, -0.3, 0.5, 2.0, -1.0])
    pol = np.array([[0.3, 0.7], [0.5, 0.5], [0.6, 0.4], [0.2, 0.8], [0.5, 0.5], [0.5, 0.5],
                    [0.5, 0.5]])
    return TreeMDP(children, reward), pol


CASES = {
    "tabular": sparse_tabular,
    "tree": full_tree,
    "tree_early_leaves": early_leaf_tree,
}


@pytest.mark.parametrize("case", CASES)
def test_simulate_returns_matches_exact_value(case):
    mdp, pol = CASES[case]()
    rng = np.random.default_rng(1)
    n = 200_000
    ret = simulate_returns(mdp, pol, n, rng)
    assert ret.shape == (n,)
    se = ret.std() / np.sqrt(n)
    assert abs(ret.mean() - value(mdp, pol)) < 5 * se + 1e-12


def test_simulate_returns_is_deterministic_given_the_generator():
    mdp, pol = sparse_tabular()
    a = simulate_returns(mdp, pol, 1000, np.random.default_rng(7))
    b = simulate_returns(mdp, pol, 1000, np.random.default_rng(7))
    c = simulate_returns(mdp, pol, 1000, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("dense", [False, True])
def test_alias_tables_reproduce_P(dense):
    """P(s') = sum over the row's k slots of (1/k) [keep * 1(succ = s') + (1 - keep) 1(alias = s')]."""
    mdp, _ = sparse_tabular(seed=3, branching=12 if dense else 3)
    tb = tables(mdp)
    S, A, _ = mdp.P.shape
    for r in range(S * A):
        lo, hi = tb.ptr[r], tb.ptr[r + 1]
        k = hi - lo
        rebuilt = np.zeros(S)
        np.add.at(rebuilt, tb.succ[lo:hi], tb.keep[lo:hi] / k)
        np.add.at(rebuilt, tb.alias[lo:hi], (1 - tb.keep[lo:hi]) / k)
        np.testing.assert_allclose(rebuilt, mdp.P.reshape(S * A, S)[r], atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_reset_sampler_follows_the_reset_distribution(case):
    mdp, pol = CASES[case]()
    d = reset_distribution(mdp, pol)
    assert d.sum() == pytest.approx(1.0)
    X = d.size
    n = 200_000
    ones = np.ones(X)
    rng = np.random.default_rng(2)
    batch = sample_resets(mdp, pol, n, ones, np.zeros(X, bool), rng, rng)
    assert batch.states.size == n and batch.n_candidates == n
    emp = np.bincount(batch.states, minlength=X) / n
    tv = 0.5 * np.abs(emp - d).sum()
    # E[TV] <= 0.5 sqrt(X_eff / n); 5x that is a generous but meaningful bound.
    support = int((d > 0).sum())
    assert tv < 2.5 * np.sqrt(support / n)
    assert np.all(emp[d == 0] == 0)


def test_early_leaf_tree_reset_distribution_by_hand():
    """Episodes 0->1 (p .3, L=1), 0->2->4 (p .28, L=2), 0->2->3->{5,6} (p .42, L=3)."""
    mdp, pol = early_leaf_tree()
    d = reset_distribution(mdp, pol)
    expected = np.zeros(7)
    expected[0] = 0.3 + 0.28 / 2 + 0.42 / 3
    expected[2] = 0.28 / 2 + 0.42 / 3
    expected[3] = 0.42 / 3
    np.testing.assert_allclose(d, expected, atol=1e-12)


@pytest.mark.parametrize("case", ["tabular", "tree"])
def test_q_rollouts_are_unbiased_for_Q(case):
    mdp, pol = CASES[case]()
    _, Q = evaluate(mdp, pol)
    Qf = Q.reshape(-1, mdp.n_actions)
    d = reset_distribution(mdp, pol)
    starts = np.flatnonzero(d > 0)[:5]
    g = 40_000
    acts, qs, _ = q_rollouts(mdp, pol, starts, g, np.random.default_rng(3))
    for i, x in enumerate(starts):
        for a in range(mdp.n_actions):
            sel = acts[i] == a
            m, se = qs[i, sel].mean(), qs[i, sel].std() / np.sqrt(sel.sum())
            assert abs(m - Qf[x, a]) < 5 * se + 1e-9


def test_episode_return_to_go_matches_simulated_returns():
    mdp, pol = sparse_tabular()
    xs, acts, rtg, steps = on_policy_episodes(mdp, pol, 100_000, np.random.default_rng(4))
    assert steps == 100_000 * mdp.horizon
    ret = rtg[:, 0]
    assert abs(ret.mean() - value(mdp, pol)) < 5 * ret.std() / np.sqrt(ret.size)
    # visited states at step h are distributed as d_h
    occ = occupancy(mdp, pol)
    h = 2
    emp = np.bincount(xs[:, h] - h * mdp.n_states, minlength=mdp.n_states) / xs.shape[0]
    assert 0.5 * np.abs(emp - occ[h]).sum() < 0.02


# ---------------------------------------------------------------------------------------------
# Cost accounting
# ---------------------------------------------------------------------------------------------
def test_accounting_on_a_hand_tree():
    """Root 0 -> {1, 2}, 1 -> {3, 4}, 2 -> {5, 6}; the policy always goes to 1 from the root.

    Accept only node 1: a candidate at depth 0 (node 0, cost 0) is rejected; a candidate at depth
    1 is node 1 (cost 1) and accepted. So base steps = n exactly, each Q-rollout costs 1 step.
    """
    children = np.array([[1, 2], [3, 4], [5, 6]] + [[-1, -1]] * 4)
    mdp = TreeMDP(children, np.array([0, 0, 0, 1.0, 0, 0, 0]))
    pol = np.array([[1.0, 0.0]] + [[0.5, 0.5]] * 6)
    sel = np.zeros(7)
    sel[1] = 1.0
    G = sel > 0
    n, g = 500, 3
    rng = np.random.default_rng(0)
    batch = sample_resets(mdp, pol, n, sel, G, rng, rng)
    assert np.all(batch.states == 1)
    assert batch.base_steps == n
    assert batch.accepted_in_G == n == batch.candidates_in_G
    assert batch.n_candidates > n  # about 2n: half the candidates sit at the root
    acts, qs, steps = q_rollouts(mdp, pol, batch.states, g, rng)
    assert acts.shape == (n, g) and steps == n * g
    np.testing.assert_array_equal(qs, (acts == 0).astype(float))


def test_random_reset_on_tabular_costs_exactly_H_per_accepted_state():
    """Base rollout to step h (h steps) + one Q-rollout to the end (H - h steps) = H."""
    from cpi.estimators import estimate_policy_advantage

    mdp, pol = sparse_tabular()
    n = 300
    _, q, steps = estimate_policy_advantage(mdp, pol, pol, "random", n, np.random.default_rng(0))
    assert q == n and steps == n * mdp.horizon
    _, q, steps = estimate_policy_advantage(mdp, pol, pol, "none", n, np.random.default_rng(0))
    assert q == n and steps == n * mdp.horizon


def test_run_cpi_counts_candidates_and_rollouts():
    from cpi.algorithm import run_cpi

    mdp, _ = sparse_tabular()
    res = run_cpi(mdp, reset="oracle", mode="sampled", tau=0.2, seed=0, max_iters=3,
                  n_samples=40, estimator="group", group_size=3)
    f = res.frame
    assert np.all(f.q_rollouts == 40 * 3)
    assert np.all(f.n_accepted == 40)
    assert np.all(f.n_candidates >= 40)
    # every accepted state costs H steps (base + one rollout); the 2 extra rollouts cost H - h >= 1
    assert np.all(f.env_steps >= 40 * mdp.horizon + 2 * 40)
    np.testing.assert_array_equal(f.q_rollouts_cum, np.cumsum(f.q_rollouts))
    np.testing.assert_array_equal(f.env_steps_cum, np.cumsum(f.env_steps))


def test_leaf_root_with_start_mass_is_an_early_leaf():
    """A root that is a leaf (episode of length 0) must not be walked off (node -1): the sampler
    rejects it, follows d elsewhere, and counts the real base-rollout steps."""
    children = np.array([[1, 2], [3, 4], [5, 6]] + [[-1, -1]] * 5)
    mu = np.zeros(8)
    mu[[0, 7]] = 0.5
    mdp = TreeMDP(children, np.array([0, 0, 0, 1.0, 0, 0, 0, 0]), mu=mu)
    pol = np.full((8, 2), 0.5)
    assert not tables(mdp).full_depth
    d = reset_distribution(mdp, pol)
    n = 20_000
    batch = sample_resets(mdp, pol, n, np.ones(8), np.zeros(8, bool), np.random.default_rng(0),
                          np.random.default_rng(1))
    assert batch.states.min() >= 0
    emp = np.bincount(batch.states, minlength=8) / n
    assert 0.5 * np.abs(emp - d / d.sum()).sum() < 0.02
    # every accepted candidate comes from root 0 (a 2-step episode), the leaf root costs nothing
    assert batch.base_steps == 2 * n
    assert abs(batch.n_candidates / n - 2) < 0.05


@pytest.mark.parametrize("case", CASES)
def test_base_steps_count_rejected_candidates(case):
    """Accept only the last step (tabular h = H - 1; tree: the deepest non-leaf level): every
    rejected candidate's base rollout (h steps, or the whole episode with early leaves) counts."""
    mdp, pol = CASES[case]()
    d = reset_distribution(mdp, pol)
    if isinstance(mdp, TabularMDP):
        sel = np.zeros(d.size)
        sel[(mdp.horizon - 1) * mdp.n_states:] = 1.0
        mean_cost = (mdp.horizon - 1) / 2  # h uniform in 0..H-1
    else:
        nonleaf = ~mdp.is_leaf
        sel = (nonleaf & (mdp.depth == mdp.depth[nonleaf].max())).astype(float)
        mean_cost = None
    n = 2_000
    batch = sample_resets(mdp, pol, n, sel, np.zeros(d.size, bool), np.random.default_rng(0),
                          np.random.default_rng(1))
    accepted_cost = int(np.sum(mdp.depth[batch.states])) if isinstance(mdp, TreeMDP) \
        else int(np.sum(batch.states // mdp.n_states))
    assert batch.n_candidates > 1.5 * n
    assert batch.base_steps > accepted_cost + (batch.n_candidates - n) // 4
    if mean_cost is not None:
        assert abs(batch.base_steps / batch.n_candidates - mean_cost) < 0.05 * mean_cost


@pytest.mark.parametrize("case", CASES)
def test_selector_flips_use_their_own_stream(case):
    """Common random numbers: the candidate sequence comes from the reset stream only, so a
    selector accepting with probability 1/2 keeps a subsequence of the all-accepting run's states
    (the flips come from rng_select and do not shift the reset stream)."""
    mdp, pol = CASES[case]()
    X = reset_distribution(mdp, pol).size
    G = np.zeros(X, bool)
    half = sample_resets(mdp, pol, 300, np.full(X, 0.5), G, np.random.default_rng(0),
                         np.random.default_rng(1))
    full = sample_resets(mdp, pol, half.n_candidates, np.ones(X), G, np.random.default_rng(0),
                         np.random.default_rng(2))
    it = iter(full.states)
    assert all(any(x == y for y in it) for x in half.states)  # ordered subsequence
    assert full.base_steps == half.base_steps


# ---------------------------------------------------------------------------------------------
# Alias tables and the batched estimator kernel
# ---------------------------------------------------------------------------------------------
def _alias_probabilities(packed: np.ndarray, k: int) -> np.ndarray:
    """Exact row probabilities encoded by a packed table: slot j gives j w.p. keep, else alias."""
    m = packed.size // k
    thresh = (packed >> np.uint64(32)).astype(np.float64) / 2.0**32
    alias = (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
    out = np.zeros((m, k))
    for r in range(m):
        for j in range(k):
            out[r, j] += thresh[r * k + j] / k
            out[r, alias[r * k + j]] += (1 - thresh[r * k + j]) / k
    return out


@pytest.mark.parametrize("k", [1, 2, 5, 64])
def test_alias_pack_encodes_the_row_probabilities(k):
    rng = np.random.default_rng(k)
    probs = rng.dirichlet(np.full(k, 0.3), size=7)
    probs[0] = 0.0
    probs[0, k - 1] = 1.0  # a deterministic row
    np.testing.assert_allclose(_alias_probabilities(alias_pack(probs), k), probs, atol=1e-9)


def _kl_case(case):
    mdp, pol = CASES[case]()
    A = mdp.n_actions
    V, Q = evaluate(mdp, pol)
    adv = (Q - (V[:-1, :, None] if isinstance(mdp, TabularMDP) else V[:, None]))
    adv = adv.reshape(-1, A)
    rng = np.random.default_rng(3)
    tgt = rng.dirichlet(np.ones(A), size=adv.shape[0])  # any target, not only greedy
    coef = A * (tgt - pol.reshape(-1, A))
    d = reset_distribution(mdp, pol)
    w = d * (rng.random(d.size) < 0.5)  # a selector: d restricted to a random set
    if isinstance(mdp, TreeMDP):
        w[mdp.is_leaf] = 0.0
        adv[mdp.is_leaf] = 0.0
    exact = float(w @ np.einsum("xa,xa->x", tgt, adv)) / w.sum()
    return mdp, pol, coef, w, exact


@pytest.mark.parametrize("case", CASES)
def test_kl_estimates_are_unbiased_with_the_iid_variance(case):
    mdp, pol, coef, w, exact = _kl_case(case)
    terms, _ = kl_estimates(mdp, pol, coef, w, 1, 100_000, np.random.default_rng(5))
    se = terms.std() / np.sqrt(terms.size)
    assert abs(terms.mean() - exact) < 5 * se
    # 400 estimates of size 250: their variance is the term variance / 250 (chi-square slack)
    est, _ = kl_estimates(mdp, pol, coef, w, 250, 400, np.random.default_rng(6))
    ratio = est.var(ddof=1) / (terms.var(ddof=1) / 250)
    assert 0.7 < ratio < 1.4
    assert abs(est.mean() - exact) < 5 * np.sqrt(terms.var() / (250 * 400))


def test_kl_estimates_are_deterministic_and_validate_input():
    mdp, pol, coef, w, _ = _kl_case("tabular")
    a = kl_estimates(mdp, pol, coef, w, 10, 20, np.random.default_rng(1))[0]
    b = kl_estimates(mdp, pol, coef, w, 10, 20, np.random.default_rng(1))[0]
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="^coef:"):
        kl_estimates(mdp, pol, coef[:-1], w, 10, 20, np.random.default_rng(1))
    with pytest.raises(ValueError, match="^weights:"):
        kl_estimates(mdp, pol, coef, np.zeros_like(w), 10, 20, np.random.default_rng(1))
    with pytest.raises(ValueError, match="^n, reps:"):
        kl_estimates(mdp, pol, coef, w, 0, 20, np.random.default_rng(1))
    tree, tpol, tcoef, tw, _ = _kl_case("tree")
    tw = tw.copy()
    tw[np.flatnonzero(tree.is_leaf)[0]] = 1.0
    with pytest.raises(ValueError, match="^reset_weights:"):
        kl_estimates(tree, tpol, tcoef, tw, 10, 20, np.random.default_rng(1))
