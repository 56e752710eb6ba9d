"""The CPI loop, its estimators, selectors and step rules.

* exact CPI with the theory step never lowers J (hypothesis over random MDPs, every reset rule);
  exact oracle CPI changes the policy only on G; the line search is never worse than the theory
  step; the theory step formula and its improvement bound;
* the sampled policy-advantage estimators are unbiased: the mean of many independent estimates
  is within 5 standard errors of the exact value (uniform and group, RR and CARO, and none);
* the approximate selector's realised FDR and recall match the requested ones (exactly under d,
  and within 5 standard errors over samples); beta = 0, gamma = 1 reproduces the oracle frame;
* bad input raises a ValueError naming the field; one seed gives identical frames;
* end-to-end: sampled CPI-CARO and CPI-RR raise J over 10 iterations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpi import TabularMDP, TreeMDP, advantage, greedy_policy, improvable_set, value
from cpi.algorithm import FRAME_COLUMNS, optimal_value, run_cpi
from cpi.estimators import estimate_policy_advantage, true_policy_advantage
from cpi.rollouts import sample_resets
from cpi.selectors import reset_distribution, selection, selector_q
from cpi.step_rules import advantage_bound, guaranteed_improvement, theory_step
from tests.cpi.builders import full_tree

PROPERTY = settings(max_examples=25, deadline=None, derandomize=True)
RULES = ("random", "oracle", "approx", "none")


def random_tabular(S=6, A=3, H=4, seed=0, sparsity=0.3):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(S), size=(S, A)) * (rng.random((S, A, S)) > sparsity)
    w[..., 0] += 1e-3
    P = w / w.sum(-1, keepdims=True)
    R = rng.normal(size=(S, A))
    mu = rng.dirichlet(np.ones(S))
    return TabularMDP(P, R, mu, H)


def binary_tree(D=4, seed=0, A=2):
    return full_tree(A=A, D=D, seed=seed, bernoulli=0.3)


# ---------------------------------------------------------------------------------------------
# Exact CPI
# ---------------------------------------------------------------------------------------------
@PROPERTY
@given(S=st.integers(2, 5), A=st.integers(2, 3), H=st.integers(1, 5), seed=st.integers(0, 10**6),
       tau_frac=st.sampled_from([0.0, 0.1, 0.5]), rule=st.sampled_from(RULES))
def test_exact_theory_step_never_lowers_J(S, A, H, seed, tau_frac, rule):
    mdp = random_tabular(S, A, H, seed)
    tau = tau_frac * mdp.r_max
    res = run_cpi(mdp, reset=rule, mode="exact", tau=tau, seed=0, max_iters=6, beta=0.2,
                  gamma=0.8)
    f = res.frame
    assert np.all(f.improvement >= -1e-10)
    # and it obeys the finite-horizon K&L bound it was derived from
    bound = [guaranteed_improvement(r.adv_est, r.alpha, H, advantage_bound(mdp), r.update_mass)
             for r in f.itertuples()]
    bound = np.nan_to_num(np.array(bound), nan=0.0)  # NaN: empty update set, no step
    assert np.all(f.improvement.to_numpy() >= bound - 1e-10)
    assert value(mdp, res.policy) <= optimal_value(mdp) + 1e-10


@pytest.mark.parametrize("rule", RULES)
def test_exact_theory_step_on_a_tree(rule):
    mdp = binary_tree(D=5, seed=1)
    res = run_cpi(mdp, reset=rule, mode="exact", tau=0.05, max_iters=10, beta=0.3, gamma=0.6)
    assert np.all(res.frame.improvement >= -1e-12)
    assert res.frame.improvement.sum() > 0


def test_exact_none_start_variant_updates_step_zero_only():
    mdp = random_tabular(seed=5)
    pol0 = mdp.uniform_policy()
    res = run_cpi(mdp, reset="none", mode="exact", max_iters=1, step="constant", alpha=0.5,
                  none_exact="start")
    changed = np.any(res.policy != pol0, axis=-1)
    assert changed[0].any() and not changed[1:].any()
    assert res.frame.improvement.iloc[0] > 0


def test_exact_none_limit_cannot_credit_untried_actions():
    """With a deterministic start policy the outcome-only limit has nothing to compare."""
    mdp = random_tabular(seed=6)
    pol0 = np.zeros(mdp.policy_shape())
    pol0[..., 0] = 1.0
    res = run_cpi(mdp, reset="none", mode="exact", policy0=pol0, max_iters=3)
    assert res.stop_reason == "converged" and len(res.frame) == 1
    rr = run_cpi(mdp, reset="random", mode="exact", policy0=pol0, max_iters=3)
    assert rr.frame.improvement.iloc[0] > 0


def test_exact_oracle_updates_only_on_G():
    mdp = random_tabular(S=8, H=5, seed=11)
    pol0 = mdp.uniform_policy()
    tau = 0.4
    G = improvable_set(mdp, pol0, tau)
    assert 0 < G.sum() < G.size
    res = run_cpi(mdp, reset="oracle", mode="exact", tau=tau, max_iters=1, step="constant",
                  alpha=0.5)
    changed = np.any(np.abs(res.policy - pol0) > 0, axis=-1)
    assert not np.any(changed & ~G)
    assert np.all(changed[G])
    # the exact update moves half way toward argmax Q on G
    greedy = greedy_policy(mdp, advantage(mdp, pol0))
    np.testing.assert_allclose(res.policy[G], 0.5 * pol0[G] + 0.5 * greedy[G], atol=1e-12)


@pytest.mark.parametrize("rule", ["random", "oracle"])
def test_line_search_candidates_include_the_theory_step(rule):
    """Implementation property: the theory step is one of the line search's candidates, so the
    searched step never does worse (an identity of the code, not a claim of the theorem)."""
    for seed in range(4):
        mdp = random_tabular(S=5, H=4, seed=seed)
        kw = dict(reset=rule, mode="exact", tau=0.2, max_iters=1)
        th = run_cpi(mdp, step="theory", **kw).frame.improvement.iloc[0]
        ls = run_cpi(mdp, step="line_search", **kw).frame
        assert ls.improvement.iloc[0] >= th - 1e-12
        assert 0.0 <= ls.alpha.iloc[0] <= 1.0


def test_theory_step_formula():
    assert theory_step(0.5, horizon=1, adv_bound=3.0) == 1.0  # a bandit: no distribution shift
    assert theory_step(0.5, horizon=3, adv_bound=2.0) == pytest.approx(0.5 / (4 * 2 * 2.0))
    assert theory_step(0.5, horizon=3, adv_bound=2.0, eps=0.3) == pytest.approx(0.4 / 16)
    assert theory_step(-0.1, horizon=3, adv_bound=2.0) == 0.0
    assert theory_step(float("nan"), horizon=3, adv_bound=2.0) == 0.0
    assert theory_step(1e9, horizon=3, adv_bound=2.0) == 1.0


def test_step_ratio_is_the_advantage_ratio():
    """Identity of the step formula (alpha is proportional to the policy advantage on the update
    set), so alpha_CARO / alpha_RR = Abar_G / Abar_d: checks the code, not Theorem 1."""
    mdp = random_tabular(S=8, H=5, seed=2)
    rr = run_cpi(mdp, reset="random", mode="exact", tau=0.5, max_iters=1).frame.iloc[0]
    caro = run_cpi(mdp, reset="oracle", mode="exact", tau=0.5, max_iters=1).frame.iloc[0]
    assert caro.alpha > rr.alpha
    # RR's greedy also improves off G, so the ratio is at most 1/p and at least adv_G/adv_d
    assert caro.alpha / rr.alpha == pytest.approx(caro.adv_est / rr.adv_est)


def test_stopping_rules():
    mdp = random_tabular(seed=3)
    J0 = value(mdp, mdp.uniform_policy())
    res = run_cpi(mdp, reset="random", mode="exact", target_J=J0 - 1.0)
    assert res.stop_reason == "target_J" and len(res.frame) == 0
    res = run_cpi(mdp, reset="random", mode="exact", step="constant", alpha=1.0, max_iters=50)
    assert res.stop_reason == "converged"
    assert value(mdp, res.policy) == pytest.approx(optimal_value(mdp))
    res = run_cpi(mdp, reset="random", mode="sampled", n_samples=10, max_q_rollouts=25)
    assert res.stop_reason == "max_q_rollouts" and len(res.frame) == 3
    res = run_cpi(mdp, reset="random", mode="sampled", n_samples=10, eps=1e6)
    assert res.stop_reason == "advantage_below_2eps/3" and res.frame.alpha.iloc[0] == 0.0


# ---------------------------------------------------------------------------------------------
# Sampled estimators are unbiased
# ---------------------------------------------------------------------------------------------
def _fixed_target(mdp, seed=0):
    """A deterministic target policy that is neither greedy nor the current one."""
    rng = np.random.default_rng(seed)
    t = np.zeros(mdp.policy_shape())
    idx = rng.integers(0, mdp.n_actions, size=mdp.policy_shape()[:-1])
    np.put_along_axis(t, idx[..., None], 1.0, axis=-1)
    return t


@pytest.mark.parametrize("rule,estimator", [("random", "uniform"), ("random", "group"),
                                            ("oracle", "uniform"), ("oracle", "group"),
                                            ("approx", "group"), ("none", "uniform")])
def test_policy_advantage_estimators_are_unbiased(rule, estimator):
    mdp = random_tabular(S=6, A=3, H=4, seed=21)
    rng0 = np.random.default_rng(0)
    pol = rng0.dirichlet(np.ones(3), size=(4, 6))
    tgt = 0.5 * _fixed_target(mdp) + 0.5 * greedy_policy(mdp, advantage(mdp, pol))
    tau = 0.3
    kw = dict(tau=tau, beta=0.25, gamma=0.7)
    exact = true_policy_advantage(mdp, pol, tgt, rule, **kw)
    rng = np.random.default_rng(1)
    est = np.array([estimate_policy_advantage(mdp, pol, tgt, rule, 50, rng, estimator=estimator,
                                              group_size=3, **kw)[0] for _ in range(400)])
    se = est.std() / np.sqrt(est.size)
    assert abs(est.mean() - exact) < 5 * se
    assert se < 0.2 * abs(exact) + 0.02  # the test has power


def test_tree_estimators_are_unbiased():
    mdp = binary_tree(D=5, seed=3)
    pol = np.random.default_rng(0).dirichlet(np.ones(2), size=mdp.n_nodes)
    tgt = greedy_policy(mdp, advantage(mdp, pol))
    for rule in ("random", "oracle"):
        exact = true_policy_advantage(mdp, pol, tgt, rule, tau=0.05)
        rng = np.random.default_rng(2)
        est = np.array([estimate_policy_advantage(mdp, pol, tgt, rule, 50, rng, tau=0.05,
                                                  estimator="group", group_size=2)[0]
                        for _ in range(300)])
        assert abs(est.mean() - exact) < 5 * est.std() / np.sqrt(est.size)


# ---------------------------------------------------------------------------------------------
# Approximate selector
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("beta,gamma", [(0.0, 1.0), (0.2, 0.8), (0.5, 0.5), (0.1, 0.3)])
def test_approx_selector_realises_requested_beta_and_gamma(beta, gamma):
    mdp = random_tabular(S=8, H=5, seed=4)
    pol = mdp.uniform_policy()
    G = improvable_set(mdp, pol, 1.5).ravel()
    d = reset_distribution(mdp, pol)
    p = float(d[G].sum())
    assert 0.2 < p < 0.5  # every requested (beta, gamma) below is feasible (q <= 1)
    sel = selection("approx", G, d, beta, gamma)
    assert sel.q == pytest.approx(selector_q(beta, gamma, p))
    assert sel.precision == pytest.approx(1 - beta) and sel.recall == pytest.approx(gamma)
    rng = np.random.default_rng(5)
    n = 40_000
    b = sample_resets(mdp, pol, n, sel.s, G, rng, np.random.default_rng(6))
    prec, rec = b.accepted_in_G / n, b.accepted_in_G / b.candidates_in_G
    assert abs(prec - (1 - beta)) < 5 * np.sqrt(beta * (1 - beta) / n) + 1e-12
    assert abs(rec - gamma) < 5 * np.sqrt(gamma * (1 - gamma) / b.candidates_in_G) + 1e-12


def test_infeasible_selector_is_clipped_or_rejected():
    G = np.array([True, False, False, False])
    d = np.array([0.7, 0.1, 0.1, 0.1])  # p = 0.7: beta = 0.9 would need q = 0.9*0.7/(0.1*0.3) > 1
    sel = selection("approx", G, d, 0.9, 1.0)
    assert sel.q == 1.0 and sel.q_requested > 1.0
    assert sel.precision == pytest.approx(0.7)
    with pytest.raises(ValueError, match="beta"):
        selection("approx", G, d, 0.9, 1.0, on_infeasible="raise")


@pytest.mark.parametrize("mode", ["exact", "sampled"])
def test_approx_with_perfect_selector_equals_oracle(mode):
    mdp = random_tabular(S=6, H=4, seed=8)
    kw = dict(mode=mode, tau=0.3, seed=3, max_iters=4, n_samples=30)
    a = run_cpi(mdp, reset="approx", beta=0.0, gamma=1.0, **kw).frame
    o = run_cpi(mdp, reset="oracle", **kw).frame
    skip = ["reset", "sel_q_requested"]
    pd.testing.assert_frame_equal(a.drop(columns=skip), o.drop(columns=skip))


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,field", [
    (dict(reset="sometimes"), "reset"),
    (dict(mode="guess"), "mode"),
    (dict(tau=-0.1), "tau"),
    (dict(estimator="magic"), "estimator"),
    (dict(step="big"), "step"),
    (dict(reset="approx", beta=1.5), "beta"),
    (dict(reset="approx", beta=-0.1), "beta"),
    (dict(reset="approx", gamma=2.0), "gamma"),
    (dict(n_samples=0), "n_samples"),
    (dict(mode="sampled", n_samples=1), "n_samples"),
    (dict(mode="sampled", reset="none", n_samples=3), "n_samples"),
    (dict(step="constant"), "alpha"),
    (dict(step="constant", alpha=1.5), "alpha"),
    (dict(alpha=0.1), "alpha"),
    (dict(max_iters=0), "max_iters"),
    (dict(eps=-1.0), "eps"),
    (dict(mode="sampled", estimator="group", group_size=1), "group_size"),
    (dict(seed=-1), "seed"),
    (dict(adv_estimate="both"), "adv_estimate"),
    (dict(n_sampels=10), "n_sampels"),
    (dict(policy0=np.ones((2, 2))), "policy0"),
])
def test_bad_input_raises_a_value_error_naming_the_field(kwargs, field):
    mdp = random_tabular()
    with pytest.raises(ValueError, match=field):
        run_cpi(mdp, **kwargs)


def test_bad_mdp_is_rejected():
    with pytest.raises(ValueError, match="mdp"):
        run_cpi("not an mdp")


# ---------------------------------------------------------------------------------------------
# Determinism, frame and end to end
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", RULES)
def test_same_seed_same_frame_and_different_seed_differs(rule):
    mdp = random_tabular(S=6, H=4, seed=9)
    kw = dict(reset=rule, mode="sampled", tau=0.2, max_iters=3, n_samples=20, beta=0.2,
              gamma=0.7, estimator="group", group_size=2)
    a = run_cpi(mdp, seed=1, **kw)
    b = run_cpi(mdp, seed=1, **kw)
    c = run_cpi(mdp, seed=2, **kw)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    np.testing.assert_array_equal(a.policy, b.policy)
    assert not a.frame.adv_est.equals(c.frame.adv_est)
    assert list(a.frame.columns) == FRAME_COLUMNS


def test_frame_is_tidy_and_logs_the_run():
    mdp = random_tabular(seed=10)
    f = run_cpi(mdp, reset="oracle", mode="exact", tau=0.2, max_iters=3).frame
    assert len(f) == 3 and list(f.iteration) == [0, 1, 2]
    np.testing.assert_allclose(f.J.to_numpy()[1:], f.J_next.to_numpy()[:-1])
    np.testing.assert_allclose(f.improvement, f.J_next - f.J)
    assert np.all(f.adv_est == f.adv_true)  # exact mode
    assert np.all(f.adv_true_G >= 0.2 - 1e-12)  # the definition of G (max A >= tau), logged right
    assert np.all(f.adv_true_d * 0 == 0)
    assert np.all((f.reset == "oracle") & (f["mode"] == "exact") & (f.tau == 0.2))


@pytest.mark.parametrize("rule", ["oracle", "random"])
def test_sampled_cpi_improves_J_end_to_end(rule):
    mdp = random_tabular(S=5, A=3, H=3, seed=12)
    res = run_cpi(mdp, reset=rule, mode="sampled", tau=0.3, seed=0, max_iters=10,
                  n_samples=200, estimator="group", group_size=3)
    f = res.frame
    assert len(f) == 10
    assert value(mdp, res.policy) > f.J.iloc[0]
    assert np.all(f.alpha > 0)


def test_sampled_cpi_on_a_tree_with_a_large_step_learns():
    mdp = binary_tree(D=5, seed=2)
    res = run_cpi(mdp, reset="oracle", mode="sampled", tau=0.05, max_iters=10, n_samples=100,
                  estimator="group", group_size=2, step="constant", alpha=0.5)
    assert value(mdp, res.policy) > res.frame.J.iloc[0] + 0.05


def test_none_estimator_is_unbiased_on_a_tree_with_early_leaves():
    """Outcome-only estimate on episodes of different lengths: the per-episode 1/L weight depends
    on the action (the 1-step branch weighs 1, the 3-step ones 1/3) and was biased (1.07 vs 0.95,
    75 standard errors); with the E[1/L | x] step weight it is unbiased."""
    children = np.array([[1, 2], [-1, -1], [3, 4], [5, 6], [-1, -1], [-1, -1], [-1, -1]])
    mdp = TreeMDP(children, np.array([0.0, 1.0, 0.2, -0.3, 0.5, 2.0, -1.0]))
    pol = np.array([[0.3, 0.7], [0.5, 0.5], [0.6, 0.4], [0.2, 0.8]] + [[0.5, 0.5]] * 3)
    tgt = greedy_policy(mdp, advantage(mdp, pol))
    exact = true_policy_advantage(mdp, pol, tgt, "none")
    rng = np.random.default_rng(0)
    est = np.array([estimate_policy_advantage(mdp, pol, tgt, "none", 200, rng)[0]
                    for _ in range(1000)])
    se = est.std() / np.sqrt(est.size)
    assert abs(est.mean() - exact) < 5 * se
    assert se < 0.01 * abs(exact)


@PROPERTY
@given(S=st.integers(2, 5), A=st.integers(2, 3), H=st.integers(2, 5), seed=st.integers(0, 10**6))
def test_improvement_bound_holds_for_arbitrary_targets_and_fractional_selection(S, A, H, seed):
    """The finite-horizon lemma behind the theory step, tested where it is not vacuous: a
    non-greedy target (A(x, pi') < 0 somewhere), s in [0, 1], any alpha (exact greedy CPI
    improves for every alpha, so run_cpi alone cannot falsify the bound). With c_A / 40 in place
    of c_A this fails on such instances."""
    mdp = random_tabular(S, A, H, seed)
    rng = np.random.default_rng(seed)
    pol = rng.dirichlet(0.5 * np.ones(A), size=(H, S))
    tgt = rng.dirichlet(0.3 * np.ones(A), size=(H, S))
    s = rng.random(H * S) * (rng.random(H * S) < 0.6)
    pf, tf = pol.reshape(-1, A), tgt.reshape(-1, A)
    d = reset_distribution(mdp, pol)
    m_s = float(d @ s)
    if m_s == 0:
        return
    adv_bar = float((d * s) @ np.einsum("xa,xa->x", tf, advantage(mdp, pol).reshape(-1, A))) / m_s
    c_A = advantage_bound(mdp)
    J0 = value(mdp, pol)
    for alpha in (theory_step(adv_bar, H, c_A), rng.random(), 1.0):
        new = (pf + alpha * s[:, None] * (tf - pf)).reshape(pol.shape)
        gain = value(mdp, new) - J0
        assert gain >= guaranteed_improvement(adv_bar, alpha, H, c_A, m_s) - 1e-10


@pytest.mark.parametrize("p", [0.005, 0.05, 0.5])
def test_coverage_family_step_and_improvement_ratios_are_one_over_p_by_construction(p):
    """An identity of the coverage family (J linear in the step, zero advantage off G), so this
    checks the code (exact mode, theory step), not Theorem 1: the CARO/RR step and improvement
    ratios are 1/p to round-off. Theorem 1 is put at risk where it is not built in:
    tests/experiments/test_theorem_checks.py and the sweep's direct / theorem_algorithms runs."""
    from cpi.envs import coverage_family

    mdp = coverage_family(p=p, tau=0.1, n_actions=4, horizon=10, seed=0)
    rr = run_cpi(mdp, reset="random", mode="exact", tau=0.1, max_iters=1).frame.iloc[0]
    caro = run_cpi(mdp, reset="oracle", mode="exact", tau=0.1, max_iters=1).frame.iloc[0]
    assert caro.coverage_mass == pytest.approx(p) and caro.update_mass == pytest.approx(p)
    assert 0 < caro.alpha < 1
    assert caro.alpha / rr.alpha == pytest.approx(1 / p, rel=1e-9)
    assert caro.improvement / rr.improvement == pytest.approx(1 / p, rel=1e-6)
