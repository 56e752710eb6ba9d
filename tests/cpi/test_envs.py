"""Tests of the environment families in cpi.envs (docs/envs.md)."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import cpi
from cpi.envs import (
    GYM_IDS,
    MDPEnv,
    coverage_at,
    coverage_curve,
    coverage_family,
    deep_sea,
    first_error_step,
    first_error_tree,
    garnet,
    initial_policy,
    path_actions,
    register_envs,
)


# ---------------------------------------------------------------------------------------------
# Coverage family
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.005, 0.05, 0.5])
def test_coverage_family_exact_at_reference_points(p):
    mdp = coverage_family(p, tau=0.1, n_actions=4, horizon=10, noise=0.5, seed=0)
    cov = cpi.coverage(mdp, mdp.meta["initial_policy"], 0.1)
    assert abs(cov.reach - p) < 1e-9
    assert abs(cov.mass - p) < 1e-9


@settings(max_examples=60, deadline=None)
@given(
    p=st.floats(0.005, 1.0),
    tau=st.floats(1e-3, 2.0),
    n_actions=st.integers(2, 6),
    horizon=st.integers(1, 8),
    n_branches=st.integers(1, 3),
    headroom=st.floats(1.0, 3.0),
    noise=st.floats(0.0, 2.0),
    seed=st.integers(0, 2**31),
)
def test_coverage_family_reach_equals_mass_equals_p(
    p, tau, n_actions, horizon, n_branches, headroom, noise, seed
):
    mdp = coverage_family(
        p, tau, n_actions, horizon, noise, seed, n_branches=n_branches, headroom=headroom
    )
    pol = mdp.meta["initial_policy"]
    cov = cpi.coverage(mdp, pol, tau)
    assert abs(cov.reach - p) < 1e-9
    assert abs(cov.mass - p) < 1e-9
    G = cpi.improvable_set(mdp, pol, tau)
    np.testing.assert_array_equal(G, mdp.meta["improvable_states"])
    # Branch 0's level at the initial policy is exactly headroom * tau; dead chain has A = 0.
    maxA = cpi.max_advantage(mdp, pol)
    chain = mdp.meta["state_chain"]
    np.testing.assert_allclose(maxA[:, chain == 0], 0.0, atol=1e-12)
    for k, level in enumerate(mdp.meta["branch_levels"]):
        np.testing.assert_allclose(maxA[:, chain == k + 1], level, rtol=1e-9)


def test_coverage_family_builds_in_the_dilution_equality():
    """The family's construction (an identity, not a test of P1): with unit headroom
    E_d[max_a A] = tau * p exactly (d the normalised occupancy), and = tau on G."""
    p, tau, H = 0.05, 0.2, 6
    mdp = coverage_family(p, tau=tau, horizon=H)
    pol = mdp.meta["initial_policy"]
    d = cpi.occupancy(mdp, pol) / H
    maxA = cpi.max_advantage(mdp, pol)
    G = cpi.improvable_set(mdp, pol, tau)
    assert np.sum(d * maxA) == pytest.approx(tau * p, rel=1e-9)
    assert np.sum(d * maxA * G) / np.sum(d * G) == pytest.approx(tau, rel=1e-9)


def test_coverage_family_only_mu_depends_on_p():
    """The noise (and everything but the start distribution) is independent of p."""
    a = coverage_family(0.005, seed=3)
    b = coverage_family(0.5, seed=3)
    np.testing.assert_array_equal(a.P, b.P)
    np.testing.assert_array_equal(a.R, b.R)
    assert not np.array_equal(a.mu, b.mu)
    # Dead-chain rewards are +-noise whatever the action: Q-rollouts there are not exactly zero.
    dead = a.meta["state_chain"] == 0
    np.testing.assert_allclose(np.abs(a.R[dead]), 0.5)


def test_coverage_family_noise_variance_of_returns():
    """Return variance from a dead start state is H noise^2 (Monte Carlo through MDPEnv)."""
    noise, H = 0.5, 4
    mdp = coverage_family(0.005, horizon=H, noise=noise, seed=1)
    env = MDPEnv(mdp)
    rng = np.random.default_rng(0)
    returns = []
    env.reset(seed=0)
    for _ in range(4000):
        obs, _ = env.reset()
        if mdp.meta["state_chain"][obs["state"]] != 0:
            continue
        total, done = 0.0, False
        while not done:
            obs, r, done, _, _ = env.step(int(rng.integers(mdp.n_actions)))
            total += r
        returns.append(total)
    assert np.var(returns) == pytest.approx(H * noise**2, rel=0.1)


def test_improvability_evolves_as_documented():
    """After a conservative step alpha towards the better action, max_a A = level (1 - alpha)."""
    tau, headroom, alpha = 0.1, 2.0, 0.3
    mdp = coverage_family(0.1, tau=tau, headroom=headroom, seed=2)
    pol0 = mdp.meta["initial_policy"]
    _, Q = cpi.evaluate(mdp, pol0)
    pol1 = (1 - alpha) * pol0 + alpha * cpi.greedy_policy(mdp, Q)
    chain = mdp.meta["state_chain"]
    maxA = cpi.max_advantage(mdp, pol1)
    np.testing.assert_allclose(maxA[:, chain == 1], headroom * tau * (1 - alpha), rtol=1e-9)
    assert cpi.coverage(mdp, pol1, tau).reach == pytest.approx(0.1, abs=1e-12)
    # With unit headroom the set empties after one step.
    mdp1 = coverage_family(0.1, tau=tau, headroom=1.0, seed=2)
    pol = mdp1.meta["initial_policy"]
    _, Q = cpi.evaluate(mdp1, pol)
    pol = (1 - alpha) * pol + alpha * cpi.greedy_policy(mdp1, Q)
    assert cpi.coverage(mdp1, pol, tau).reach == 0.0


def test_multi_branch_coverage_decreases_in_tau():
    tau, K, ratio = 0.02, 4, 2.0
    mdp = coverage_family(
        0.2, tau=tau, n_branches=K, gap_ratio=ratio, seed=0, branch_weights=[4, 3, 2, 1]
    )
    taus = np.geomspace(tau / 2, tau * ratio**K, 40)
    reach, mass = coverage_curve(mdp, taus)
    np.testing.assert_allclose(reach, mass, atol=1e-12)
    assert np.all(np.diff(reach) <= 1e-12)
    assert reach[0] == pytest.approx(0.2, abs=1e-9)
    assert reach[-1] == 0.0
    assert len(np.unique(np.round(reach, 9))) == K + 1
    np.testing.assert_allclose(reach, [coverage_at(mdp, t) for t in taus], atol=1e-9)
    np.testing.assert_allclose(mdp.meta["branch_masses"], [0.08, 0.06, 0.04, 0.02])


def test_coverage_family_value_closed_form():
    mdp = coverage_family(0.3, tau=0.1, n_actions=5, horizon=7, n_branches=2)
    gaps, m, H, A = mdp.meta["gaps"], mdp.meta["branch_masses"], 7, 5
    assert cpi.value(mdp, initial_policy(mdp)) == pytest.approx(np.sum(m * gaps) * H / A, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# First-error tree
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "H,A,C,q,r",
    [
        (5, 4, 1, 0.6, 0.0),
        (3, 5, 2, 0.7, 0.0),
        (4, 3, 1, 0.5, 0.25),
        (1, 2, 1, 0.9, 0.1),
        (6, 2, 1, 0.8, 0.0),
    ],
)
def test_first_error_success_probability(H, A, C, q, r):
    mdp = first_error_tree(horizon=H, n_actions=A, n_correct=C, recover=r, p_correct=q, seed=H)
    J = cpi.value(mdp, mdp.meta["initial_policy"])
    assert J == pytest.approx(q**H + (1 - q**H) * r, abs=1e-12)
    assert mdp.meta["success_probability"] == pytest.approx(J, abs=1e-12)
    assert mdp.n_nodes == (A ** (H + 1) - 1) // (A - 1)


def test_first_error_hand_case():
    mdp = first_error_tree(horizon=2, n_actions=2, n_correct=1, seed=0)
    c = mdp.meta["correct"]
    good0 = int(np.flatnonzero(c[0])[0])
    bad0 = 1 - good0
    n_good, n_bad = 1 + good0, 1 + bad0  # BFS children of the root
    assert first_error_step(mdp, 0) == 0
    assert first_error_step(mdp, n_good) == 0
    assert first_error_step(mdp, n_bad) == 1
    good1 = int(np.flatnonzero(c[n_good])[0])
    leaf_ok, leaf_late = 2 * n_good + 1 + good1, 2 * n_good + 2 - good1
    assert first_error_step(mdp, leaf_ok) == 0
    assert first_error_step(mdp, leaf_late) == 2
    for a in range(2):
        assert first_error_step(mdp, 2 * n_bad + 1 + a) == 1  # errors later do not move it
    assert mdp.reward[leaf_ok] == 1.0
    assert mdp.meta["on_track"].sum() == 3  # root, one depth-1 node, one leaf
    assert mdp.reward.sum() == 1.0
    assert path_actions(mdp, leaf_late) == [good0, 1 - good1]


def test_first_error_bookkeeping_matches_path_walk():
    mdp = first_error_tree(horizon=4, n_actions=3, n_correct=1, recover=0.3, seed=7)
    c = mdp.meta["correct"]
    for node in range(mdp.n_nodes):
        actions = path_actions(mdp, node)
        assert len(actions) == mdp.depth[node]
        n, first = 0, 0
        for step, a in enumerate(actions, start=1):
            if not c[n, a] and first == 0:
                first = step
            n = int(mdp.children[n, a])
        assert n == node
        assert first_error_step(mdp, node) == first
        assert mdp.meta["on_track"][node] == (first == 0)
        if mdp.is_leaf[node]:
            assert mdp.reward[node] == (1.0 if first == 0 else 0.3)


def test_first_error_advantages_closed_form():
    H, q, r = 5, 0.6, 0.2
    mdp = first_error_tree(horizon=H, p_correct=q, recover=r, seed=1)
    maxA = cpi.max_advantage(mdp, mdp.meta["initial_policy"])
    on, internal = mdp.meta["on_track"], ~mdp.is_leaf
    d = mdp.depth
    expected = (1 - r) * (1 - q) * q ** (H - d - 1.0)
    np.testing.assert_allclose(maxA[on & internal], expected[on & internal], rtol=1e-9)
    np.testing.assert_allclose(maxA[~on], 0.0, atol=1e-12)
    # G_tau = on-track nodes of depth >= d_tau; reach = q^d_tau.
    tau = (1 - r) * (1 - q) * q**2  # d_tau = H - 3 = 2
    cov = cpi.coverage(mdp, mdp.meta["initial_policy"], tau)
    assert cov.reach == pytest.approx(q**2, rel=1e-9)
    assert cov.mass == pytest.approx((q**2 + q**3 + q**4) / H, rel=1e-9)


def test_first_error_tree_agrees_with_tabular():
    mdp = first_error_tree(horizon=3, n_actions=3, recover=0.1, seed=4)
    pol = mdp.meta["initial_policy"]
    tab = mdp.to_tabular()
    V_tree, _ = cpi.evaluate(mdp, pol)
    V_tab, _ = cpi.evaluate(tab, mdp.tree_policy_to_tabular(pol))
    assert V_tab[0, 0] == pytest.approx(V_tree[0], abs=1e-12)
    assert cpi.value(tab, mdp.tree_policy_to_tabular(pol)) == pytest.approx(
        cpi.value(mdp, pol), abs=1e-12
    )


def test_first_error_size_guard():
    with pytest.raises(ValueError, match="max_nodes"):
        first_error_tree(horizon=12, n_actions=4)


# ---------------------------------------------------------------------------------------------
# Garnet and deep sea
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reward", ["uniform", "sparse", "state"])
def test_garnet_rows_stochastic_and_seeded(reward):
    a = garnet(12, 3, 4, 5, seed=1, reward=reward)
    b = garnet(12, 3, 4, 5, seed=1, reward=reward)
    c = garnet(12, 3, 4, 5, seed=2, reward=reward)
    np.testing.assert_allclose(a.P.sum(-1), 1.0, atol=1e-12)
    assert np.all(a.P >= 0)
    assert np.all((a.P > 0).sum(-1) <= 4) and np.all((a.P > 0).sum(-1) >= 3)  # a gap may be ~0
    np.testing.assert_array_equal(a.P, b.P)
    np.testing.assert_array_equal(a.R, b.R)
    np.testing.assert_array_equal(a.mu, b.mu)
    assert not np.array_equal(a.P, c.P)
    assert a.meta["initial_policy"].shape == (5, 12, 3)


def test_garnet_single_start_and_full_branching():
    g = garnet(6, 2, 6, 3, seed=0, start="single")
    assert g.mu[0] == 1.0
    assert np.all((g.P > 0).sum(-1) == 6)


def test_deep_sea_values_and_flipping():
    N = 8
    m = deep_sea(N, seed=0)
    assert cpi.value(m, m.meta["optimal_policy"]) == pytest.approx(0.99, abs=1e-12)
    assert cpi.value(m, initial_policy(m)) == pytest.approx(2.0**-N - 0.01 / 2, abs=1e-12)
    assert not np.array_equal(m.meta["right_action"], deep_sea(N, seed=1).meta["right_action"])
    assert np.all(deep_sea(N, randomize_actions=False).meta["right_action"] == 1)


# ---------------------------------------------------------------------------------------------
# Gymnasium
# ---------------------------------------------------------------------------------------------
def _make(env_id):
    if env_id == "credit-resets/MDP-v0":
        return gymnasium.make(env_id, mdp=first_error_tree(horizon=2, n_actions=2))
    return gymnasium.make(env_id)


@pytest.mark.parametrize("env_id", sorted(GYM_IDS))
def test_check_env_passes(env_id):
    env = _make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_register_is_idempotent_and_make_takes_kwargs():
    register_envs()
    register_envs()
    env = gymnasium.make("credit-resets/Coverage-v0", p=0.5, tau=0.3, horizon=3)
    assert env.unwrapped.mdp.meta["p"] == 0.5
    assert env.unwrapped.mdp.horizon == 3


def test_mdp_env_episode_and_monte_carlo_value():
    mdp = first_error_tree(horizon=3, n_actions=3, p_correct=0.7, seed=0)
    env = MDPEnv(mdp)
    pol = mdp.meta["initial_policy"]
    rng = np.random.default_rng(0)
    wins, n_ep = 0.0, 3000
    env.reset(seed=5)
    for _ in range(n_ep):
        obs, _ = env.reset()
        steps, done = 0, False
        while not done:
            a = int(rng.choice(3, p=pol[obs["state"]]))
            obs, r, done, trunc, _ = env.step(a)
            steps += 1
            assert obs["step"] == steps and not trunc
            wins += r
        assert steps == 3
    se = np.sqrt(0.343 * 0.657 / n_ep)
    assert abs(wins / n_ep - 0.343) < 5 * se


def test_mdp_env_seeded_reset_is_reproducible():
    env = MDPEnv(coverage_family(0.3, seed=0))
    starts_a = [env.reset(seed=s)[0]["state"] for s in range(20)]
    starts_b = [env.reset(seed=s)[0]["state"] for s in range(20)]
    assert starts_a == starts_b and len(set(starts_a)) > 1
    env.reset(seed=3)
    traj_a = [env.step(0)[0]["state"] for _ in range(5)]
    env.reset(seed=3)
    traj_b = [env.step(0)[0]["state"] for _ in range(5)]
    assert traj_a == traj_b


# ---------------------------------------------------------------------------------------------
# Bad knobs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "factory,kwargs,field",
    [
        (coverage_family, {"p": 0.0}, "p"),
        (coverage_family, {"p": 1.5}, "p"),
        (coverage_family, {"p": -0.1}, "p"),
        (coverage_family, {"p": 0.1, "tau": -0.1}, "tau"),
        (coverage_family, {"p": 0.1, "tau": 0.0}, "tau"),
        (coverage_family, {"p": 0.1, "n_actions": 1}, "n_actions"),
        (coverage_family, {"p": 0.1, "horizon": 0}, "horizon"),
        (coverage_family, {"p": 0.1, "noise": -1.0}, "noise"),
        (coverage_family, {"p": 0.1, "n_branches": 0}, "n_branches"),
        (coverage_family, {"p": 0.1, "gap_ratio": 1.0}, "gap_ratio"),
        (coverage_family, {"p": 0.1, "headroom": 0.5}, "headroom"),
        (coverage_family, {"p": 0.1, "n_branches": 2, "branch_weights": [1.0]}, "branch_weights"),
        (
            garnet,
            {"n_states": 5, "n_actions": 1, "branching": 2, "horizon": 3, "seed": 0},
            "n_actions",
        ),
        (
            garnet,
            {"n_states": 5, "n_actions": 2, "branching": 6, "horizon": 3, "seed": 0},
            "branching",
        ),
        (
            garnet,
            {"n_states": 5, "n_actions": 2, "branching": 2, "horizon": 0, "seed": 0},
            "horizon",
        ),
        (
            garnet,
            {"n_states": 0, "n_actions": 2, "branching": 1, "horizon": 1, "seed": 0},
            "n_states",
        ),
        (
            garnet,
            {
                "n_states": 5,
                "n_actions": 2,
                "branching": 2,
                "horizon": 3,
                "seed": 0,
                "reward": "gauss",
            },
            "reward",
        ),
        (first_error_tree, {"n_actions": 1}, "n_actions"),
        (first_error_tree, {"horizon": 0}, "horizon"),
        (first_error_tree, {"n_correct": 4}, "n_correct"),
        (first_error_tree, {"p_correct": 1.2}, "p_correct"),
        (first_error_tree, {"recover": -0.1}, "recover"),
        (deep_sea, {"size": 0}, "size"),
        (deep_sea, {"slip": 1.0}, "slip"),
        (deep_sea, {"move_cost": -1.0}, "move_cost"),
    ],
)
def test_bad_knobs_name_the_field(factory, kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        factory(**kwargs)


def test_mdp_env_rejects_bad_input():
    with pytest.raises(ValueError, match="mdp"):
        MDPEnv("not an mdp")
    env = MDPEnv(deep_sea(3))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(5)


# ---------------------------------------------------------------------------------------------
# Families where Theorem 1's claims are not built in (shifted, planted Garnet, lock)
# ---------------------------------------------------------------------------------------------
from cpi.envs import (  # noqa: E402
    combination_lock,
    concave_fork,
    planted_garnet,
    shifted_coverage,
)


def _cpi_direction_J(mdp, tau, alphas, where: str):
    """J(pi_0 + alpha mask (pi' - pi_0)) with pi' greedy in the exact Q of pi_0 and the mask all
    states ("rr") or G_tau(pi_0) ("caro")."""
    pol = initial_policy(mdp)
    V, Q = cpi.evaluate(mdp, pol)
    tgt = cpi.greedy_policy(mdp, Q)
    mask = np.ones(pol.shape[:-1], bool) if where == "rr" else cpi.improvable_set(mdp, pol, tau)
    return np.array([cpi.value(mdp, pol + a * mask[..., None] * (tgt - pol)) for a in alphas])


def _second_difference(mdp, tau, where):
    """Second difference of J over alpha = 0, 1/2, 1, relative to the change J(1) - J(0)
    (round-off gives ~1e-15; the threshold below is 1e-3)."""
    J = _cpi_direction_J(mdp, tau, (0.0, 0.5, 1.0), where)
    return (J[2] - 2 * J[1] + J[0]) / abs(J[2] - J[0])


NEW_FAMILIES = {
    "shifted": lambda seed: shifted_coverage(0.1, tau=0.1, seed=seed),
    "planted": lambda seed: planted_garnet(0.1, tau=0.1, seed=seed),
    "lock": lambda seed: combination_lock(3, tau=0.1, horizon=6, seed=seed),
    "concave": lambda seed: concave_fork(0.1, tau=0.1, seed=seed),
}


# Sign-checked curvature of J along the CPI update at pi_0 (issue 16): the second difference over
# alpha = 0, 1/2, 1 relative to J(1) - J(0). Positive: the update's terms reinforce each other
# (J bends up, a larger step never loses part of its first-order gain); negative: they are
# substitutes (J bends down, the conservative step matters); zero: linear.
@pytest.mark.parametrize("p", [0.02, 0.1, 0.4])
def test_shifted_bends_up_along_both_updates(p):
    for seed in range(3):
        mdp = shifted_coverage(p, tau=0.1, seed=seed)
        assert _second_difference(mdp, 0.1, "rr") > 0.02
        assert _second_difference(mdp, 0.1, "caro") > 0.2


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_lock_bends_up_along_the_rr_update_and_is_linear_along_the_oracle_update(depth):
    """Reaching the prize is a product over the lock's steps (convex along RR's update); the
    oracle moves only the prize state, whose gain is linear in alpha."""
    for seed in range(2):
        mdp = combination_lock(depth, tau=0.1, horizon=6, seed=seed)
        assert _second_difference(mdp, 0.1, "rr") > 0.1
        assert abs(_second_difference(mdp, 0.1, "caro")) < 1e-9


def test_planted_curvature_is_weak_and_of_either_sign():
    """A random MDP with a planted G: |second difference| below 0.15 of the change, and both
    signs occur over seeds (neither reliably convex nor concave)."""
    rr = [_second_difference(planted_garnet(0.1, tau=0.1, seed=s), 0.1, "rr") for s in range(10)]
    caro = [_second_difference(planted_garnet(0.1, tau=0.1, seed=s), 0.1, "caro")
            for s in range(10)]
    assert max(abs(v) for v in rr + caro) < 0.15
    assert min(rr) < -0.01 < 0.01 < max(rr)
    assert min(caro) < 0.0 < max(caro)


@pytest.mark.parametrize("p", [0.02, 0.2, 0.6])
def test_concave_fork_bends_down_along_both_updates_with_an_interior_best_step(p):
    """J(alpha) = entry (H - 1) [u bank + (1 - u) u gap], u = 1/A + alpha (1 - 1/A): a concave
    quadratic (relative second difference -1.875 at A = 4, H = 6) whose maximum alpha* ~ 0.63 is
    interior, so the full step alpha = 1 overshoots, although it still improves on pi_0."""
    for seed in range(3):
        mdp = concave_fork(p, tau=0.1, seed=seed)
        for where in ("rr", "caro"):
            assert _second_difference(mdp, 0.1, where) < -1.0
        alphas = np.linspace(0.0, 1.0, 201)
        J = _cpi_direction_J(mdp, 0.1, alphas, "rr")
        best = alphas[int(np.argmax(J))]
        assert best == pytest.approx(mdp.meta["alpha_star"], abs=0.01)
        assert 0.3 < best < 0.9
        assert J[0] < J[-1] < J.max() - 0.2 * (J.max() - J[0])
        # exactly the closed form of the module docstring
        m = mdp.meta
        u = 1 / 4 + alphas * 3 / 4
        closed = m["p_reach"] * 5 * (u * m["bank"] + (1 - u) * u * m["gap"])
        np.testing.assert_allclose(J, closed, atol=1e-12)


def test_coverage_family_is_linear_in_alpha_for_contrast():
    mdp = coverage_family(0.1, tau=0.1, headroom=3.0, seed=0)
    for where in ("rr", "caro"):
        assert abs(_second_difference(mdp, 0.1, where)) < 1e-9


def _reachable(mdp):
    return cpi.occupancy(mdp, initial_policy(mdp)) > 0


@settings(max_examples=15, deadline=None, derandomize=True)
@given(p=st.floats(0.005, 0.3), A=st.integers(3, 5), H=st.integers(2, 7),
       leak=st.floats(0.1, 1.0), seed=st.integers(0, 100))
def test_shifted_coverage_mass_is_p_and_G_is_the_track(p, A, H, leak, seed):
    tau, headroom = 0.1, 2.0
    mdp = shifted_coverage(min(p, 0.9 * shifted_coverage(0.001, n_actions=A, horizon=H,
                                                         leak=leak).meta["p_max"]),
                           tau=tau, n_actions=A, horizon=H, leak=leak, seed=seed,
                           headroom=headroom)
    pol = initial_policy(mdp)
    cov = cpi.coverage(mdp, pol, tau)
    assert cov.mass == pytest.approx(mdp.meta["p"], abs=1e-9)
    assert cov.reach == pytest.approx(mdp.meta["p_reach"], abs=1e-9)
    assert cov.reach > cov.mass  # the readings differ here
    live = _reachable(mdp)
    G = cpi.improvable_set(mdp, pol, tau)
    np.testing.assert_array_equal(G & live, mdp.meta["improvable_states"] & live)
    adv = cpi.advantage(mdp, pol)
    maxA = adv.max(axis=-1)
    np.testing.assert_allclose(maxA[G & live], headroom * tau, rtol=1e-9)
    off = ~G & live
    np.testing.assert_allclose(maxA[off], mdp.meta["side_level"] * tau, rtol=1e-9)  # in (0, tau)
    np.testing.assert_allclose(adv[off].min(axis=-1), -(A - 1) * maxA[off], rtol=1e-9)  # harmful


def test_shifted_coverage_rejects_p_above_its_maximum():
    p_max = shifted_coverage(0.01).meta["p_max"]
    with pytest.raises(ValueError, match="^p:"):
        shifted_coverage(p_max * 1.01)


@pytest.mark.parametrize("p", [0.02, 0.1, 0.3])
def test_planted_garnet_G_is_exactly_the_planted_states(p):
    tau, headroom = 0.1, 2.0
    for seed in range(3):
        mdp = planted_garnet(p, tau=tau, seed=seed, headroom=headroom)
        pol = initial_policy(mdp)
        live = _reachable(mdp)
        G = cpi.improvable_set(mdp, pol, tau)
        np.testing.assert_array_equal(G & live, mdp.meta["improvable_states"] & live)
        maxA = cpi.max_advantage(mdp, pol)
        np.testing.assert_allclose(maxA[G & live], headroom * tau, rtol=1e-9)
        assert maxA[~G & live].max() <= mdp.meta["off_level"] * tau + 1e-12
        assert maxA[~G & live].min() > 0  # off-G advantages in (0, tau), not zero
        assert cpi.advantage(mdp, pol)[live].min() < 0  # harmful actions exist
        cov = cpi.coverage(mdp, pol, tau)
        assert cov.mass == pytest.approx(mdp.meta["p_mass"], abs=1e-12)
        d = cpi.occupancy(mdp, pol) / mdp.horizon
        assert abs(cov.mass - p) <= d[live].max() + 1e-12  # within one state's mass


def test_planting_leaves_the_initial_values_unchanged():
    """The bonus is paid back at the planted state, so V^{pi_0} equals the unplanted MDP's."""
    mdp = planted_garnet(0.2, tau=0.1, seed=4)
    planted = mdp.meta["planted"]
    assert planted.any()
    # Rebuild the unplanted MDP from the same seed: planting only changes rewards at planted
    # states, keeping their uniform mean, so V^{pi_0} must be identical.
    R0 = mdp.R.copy()
    R0[planted] = R0[planted].mean(axis=1, keepdims=True)  # spread removed, mean kept
    other = cpi.TabularMDP(mdp.P, R0, mdp.mu, mdp.horizon)
    pol = initial_policy(mdp)
    np.testing.assert_allclose(cpi.evaluate(mdp, pol)[0], cpi.evaluate(other, pol)[0], atol=1e-12)
    # ... while the planted states' advantages changed (by construction to the level)
    assert not np.allclose(cpi.evaluate(mdp, pol)[1], cpi.evaluate(other, pol)[1])


@pytest.mark.parametrize("D,A", [(0, 2), (2, 2), (4, 2), (2, 3)])
def test_combination_lock_coverage_is_geometric_in_depth(D, A):
    tau, headroom, H = 0.1, 1.5, 6
    mdp = combination_lock(D, tau=tau, n_actions=A, horizon=H, headroom=headroom, seed=D)
    pol = initial_policy(mdp)
    cov = cpi.coverage(mdp, pol, tau)
    assert cov.reach == pytest.approx(A ** -D, rel=1e-12)
    assert cov.mass == pytest.approx(A ** -D / H, rel=1e-12)
    live = _reachable(mdp)
    G = cpi.improvable_set(mdp, pol, tau)
    np.testing.assert_array_equal(G & live, mdp.meta["improvable_states"] & live)
    # ancestors: max A = level A^-(D-d) on the lock at depth d < D; the diluted signal is
    # (D + 1) level p_mass, not level p_mass
    maxA = cpi.max_advantage(mdp, pol)
    for d in range(D):
        lock_d = np.flatnonzero((mdp.meta["state_step"] == d) & (mdp.meta["state_chain"] == 1))
        np.testing.assert_allclose(maxA[d, lock_d], headroom * tau * float(A) ** -(D - d))
    dflat = cpi.occupancy(mdp, pol) / H
    assert float((dflat * maxA).sum()) == pytest.approx((D + 1) * headroom * tau * cov.mass)


@pytest.mark.parametrize(
    "factory,kwargs,field",
    [
        (shifted_coverage, {"p": 0.1, "n_actions": 1}, "n_actions"),
        (shifted_coverage, {"p": 0.1, "leak": 0.0}, "leak"),
        (shifted_coverage, {"p": 0.1, "side_level": 1.0}, "side_level"),
        (shifted_coverage, {"p": 0.1, "horizon": 1}, "horizon"),
        (shifted_coverage, {"p": 0.0}, "p"),
        (planted_garnet, {"p": 1.0}, "p"),
        (planted_garnet, {"p": 0.1, "off_level": 1.0}, "off_level"),
        (planted_garnet, {"p": 0.1, "branching": 100}, "branching"),
        (combination_lock, {"depth": -1}, "depth"),
        (combination_lock, {"depth": 3, "horizon": 3}, "horizon"),
        (combination_lock, {"depth": 2, "headroom": 2.0}, "headroom"),
        (concave_fork, {"p": 0.0}, "p"),
        (concave_fork, {"p": 0.9}, "p"),
        (concave_fork, {"p": 0.1, "horizon": 2}, "horizon"),
        (concave_fork, {"p": 0.1, "headroom": 0.5}, "headroom"),
        (concave_fork, {"p": 0.1, "n_actions": 1}, "n_actions"),
    ],
)
def test_new_family_bad_knobs_name_the_field(factory, kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        factory(**kwargs)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(p=st.floats(0.005, 0.5), A=st.integers(2, 5), H=st.integers(3, 8),
       headroom=st.floats(1.0, 3.0), seed=st.integers(0, 100))
def test_concave_fork_mass_is_p_G_is_fork_and_work_chain_with_advantage_level(p, A, H, headroom,
                                                                             seed):
    tau = 0.1
    mdp = concave_fork(min(p, 0.9 * concave_fork(0.01, n_actions=A, horizon=H).meta["p_max"]),
                       tau=tau, n_actions=A, horizon=H, headroom=headroom, seed=seed)
    pol = initial_policy(mdp)
    cov = cpi.coverage(mdp, pol, tau)
    assert cov.mass == pytest.approx(mdp.meta["p_mass"], abs=1e-9)
    assert cov.reach == pytest.approx(mdp.meta["p_reach"], abs=1e-9)
    live = _reachable(mdp)
    G = cpi.improvable_set(mdp, pol, tau)
    np.testing.assert_array_equal(G & live, mdp.meta["improvable_states"] & live)
    maxA = cpi.max_advantage(mdp, pol)
    np.testing.assert_allclose(maxA[G & live], headroom * tau, rtol=1e-9)
    np.testing.assert_allclose(maxA[~G & live], 0.0, atol=1e-12)
    # the diluted signal is exactly level p, as on the clean family
    d = cpi.occupancy(mdp, pol) / H
    assert float((d * maxA).sum()) == pytest.approx(headroom * tau * cov.mass, rel=1e-9)
    # the optimal policy never banks: J* = entry (H - 1) gap
    assert cpi.optimal_value(mdp) == pytest.approx(
        mdp.meta["p_reach"] * (H - 1) * mdp.meta["gap"], rel=1e-9)
