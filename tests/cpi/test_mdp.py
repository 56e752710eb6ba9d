"""MDP containers: validation (each bad field is a ValueError naming it) and the tree -> tabular lift.

The numerical agreement of trees with their tabular form (values, occupancy, improvable set,
coverage) is checked in test_evaluation.py; here we check the containers themselves.
"""

from __future__ import annotations

import numpy as np
import pytest

from cpi import TabularMDP, TreeMDP, check_policy, check_tau, coverage, coverage_of, evaluate
from cpi.mdp import check_horizon


def small_tabular(S: int = 3, A: int = 2, H: int = 4, seed: int = 0) -> TabularMDP:
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(S), size=(S, A))
    R = rng.normal(size=(S, A))
    mu = rng.dirichlet(np.ones(S))
    return TabularMDP(P, R, mu, H)


def binary_tree() -> TreeMDP:
    """Root 0 with children 1, 2; node 1 with leaves 3, 4; node 2 an early leaf (depth 1)."""
    children = np.array([[1, 2], [3, 4], [-1, -1], [-1, -1], [-1, -1]])
    reward = np.array([0.0, 0.0, 0.5, 1.0, 0.0])
    return TreeMDP(children, reward)


# ---------------------------------------------------------------------------------------------
# TabularMDP: accepted input
# ---------------------------------------------------------------------------------------------
def test_tabular_fields_are_read_only_float_arrays():
    mdp = small_tabular()
    for arr in (mdp.P, mdp.R, mdp.mu):
        assert arr.dtype == np.float64
        assert not arr.flags.writeable
        assert arr.flags.c_contiguous
    with pytest.raises(ValueError):
        mdp.P[0, 0, 0] = 1.0
    assert (mdp.n_states, mdp.n_actions, mdp.horizon) == (3, 2, 4)
    assert mdp.policy_shape() == (4, 3, 2)


def test_tabular_accepts_lists_ints_and_numpy_int_horizon():
    P = [[[1, 0], [0, 1]], [[0, 1], [0, 1]]]
    mdp = TabularMDP(P, [[1, 0], [0, 0]], [1, 0], np.int64(2))
    assert mdp.horizon == 2 and isinstance(mdp.horizon, int)
    np.testing.assert_array_equal(mdp.P, np.asarray(P, dtype=float))


def test_tabular_round_off_is_cleaned_to_exact_distributions():
    P = np.array([[[1.0 + 5e-9, -5e-9]], [[0.5, 0.5]]])  # within tolerance: accepted then cleaned
    mdp = TabularMDP(P, np.zeros((2, 1)), [1.0, 0.0], 1)
    assert mdp.P.min() >= 0.0
    np.testing.assert_allclose(mdp.P.sum(-1), 1.0, atol=1e-15)


def test_r_max_and_uniform_policy():
    mdp = TabularMDP(np.ones((2, 3, 2)) / 2, [[1, -4, 2], [0, 0, 0]], [0.5, 0.5], 3)
    assert mdp.r_max == 4.0
    pol = mdp.uniform_policy()
    assert pol.shape == (3, 2, 3)
    np.testing.assert_allclose(pol, 1 / 3)
    assert TabularMDP(np.ones((1, 1, 1)), [[0.0]], [1.0], 1).r_max > 0  # never exactly zero


# ---------------------------------------------------------------------------------------------
# TabularMDP: bad input, each a ValueError naming the field
# ---------------------------------------------------------------------------------------------
def _parts(S=2, A=2):
    P = np.full((S, A, S), 1.0 / S)
    R = np.zeros((S, A))
    mu = np.full(S, 1.0 / S)
    return P, R, mu


def test_non_stochastic_P():
    P, R, mu = _parts()
    P[1, 0] = [0.7, 0.7]
    with pytest.raises(ValueError, match=r"^P: .*summing to 1"):
        TabularMDP(P, R, mu, 2)


def test_negative_probability_in_P_even_if_row_sums_to_one():
    P, R, mu = _parts()
    P[0, 1] = [1.2, -0.2]
    with pytest.raises(ValueError, match=r"^P: .*>= 0"):
        TabularMDP(P, R, mu, 2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_P_R_mu(bad):
    for field in ("P", "R", "mu"):
        P, R, mu = _parts()
        arrays = {"P": P, "R": R, "mu": mu}
        arrays[field].flat[0] = bad
        with pytest.raises(ValueError, match=rf"^{field}: .*finite"):
            TabularMDP(arrays["P"], arrays["R"], arrays["mu"], 2)


@pytest.mark.parametrize(
    "P_shape", [(2, 2), (2, 2, 3), (3, 2, 2), (2, 2, 2, 1), (0, 2, 0), (2, 0, 2)]
)
def test_wrong_shape_P(P_shape):
    P = np.ones(P_shape) / max(P_shape[-1], 1)
    with pytest.raises(ValueError, match=r"^P: "):
        TabularMDP(P, np.zeros((2, 2)), [0.5, 0.5], 2)


@pytest.mark.parametrize("R_shape", [(2,), (2, 3), (3, 2), (2, 2, 1)])
def test_wrong_shape_R(R_shape):
    P, _, mu = _parts()
    with pytest.raises(ValueError, match=r"^R: "):
        TabularMDP(P, np.zeros(R_shape), mu, 2)


@pytest.mark.parametrize("mu", [[1.0], [0.2, 0.3, 0.5], [[0.5, 0.5]]])
def test_wrong_shape_mu(mu):
    P, R, _ = _parts()
    with pytest.raises(ValueError, match=r"^mu: "):
        TabularMDP(P, R, mu, 2)


@pytest.mark.parametrize("mu", [[0.5, 0.6], [1.5, -0.5], [0.0, 0.0]])
def test_mu_not_a_distribution(mu):
    P, R, _ = _parts()
    with pytest.raises(ValueError, match=r"^mu: .*(summing to 1|>= 0)"):
        TabularMDP(P, R, mu, 2)


@pytest.mark.parametrize("horizon", [0, -1, -10, 2.0, 2.5, "3", None, True, np.float64(3.0)])
def test_bad_horizon(horizon):
    P, R, mu = _parts()
    with pytest.raises(ValueError, match=r"^horizon: expected an int >= 1"):
        TabularMDP(P, R, mu, horizon)


def test_check_horizon_accepts_ints():
    assert check_horizon(1) == 1
    assert check_horizon(np.int32(7)) == 7


# ---------------------------------------------------------------------------------------------
# Policies and tau
# ---------------------------------------------------------------------------------------------
def test_check_policy_broadcasts_stationary_policy():
    mdp = small_tabular(S=3, A=2, H=4)
    stat = np.array([[0.2, 0.8], [1.0, 0.0], [0.5, 0.5]])
    pol = check_policy(mdp, stat)
    assert pol.shape == (4, 3, 2)
    np.testing.assert_array_equal(pol, np.broadcast_to(stat, (4, 3, 2)))
    # evaluating the stationary form equals evaluating its explicit (H, S, A) tiling
    V1, Q1 = evaluate(mdp, stat)
    V2, Q2 = evaluate(mdp, np.tile(stat, (4, 1, 1)))
    np.testing.assert_array_equal(V1, V2)
    np.testing.assert_array_equal(Q1, Q2)


@pytest.mark.parametrize("shape", [(3,), (2, 3), (3, 3), (4, 3, 3), (5, 3, 2), (3, 2, 4)])
def test_policy_wrong_shape_tabular(shape):
    mdp = small_tabular(S=3, A=2, H=4)
    with pytest.raises(ValueError, match=r"^policy: expected shape"):
        check_policy(mdp, np.ones(shape) / shape[-1])
    with pytest.raises(ValueError, match=r"^policy: "):
        evaluate(mdp, np.ones(shape) / shape[-1])


def test_policy_not_stochastic_negative_or_nan():
    mdp = small_tabular(S=3, A=2, H=4)
    pol = mdp.uniform_policy()
    pol[2, 1] = [0.9, 0.9]
    with pytest.raises(ValueError, match=r"^policy: .*summing to 1"):
        check_policy(mdp, pol)
    pol = mdp.uniform_policy()
    pol[0, 0] = [1.5, -0.5]
    with pytest.raises(ValueError, match=r"^policy: .*>= 0"):
        check_policy(mdp, pol)
    pol = mdp.uniform_policy()
    pol[1, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"^policy: .*finite"):
        check_policy(mdp, pol)


def test_policy_name_is_used_in_messages():
    mdp = small_tabular()
    with pytest.raises(ValueError, match=r"^pi_next: "):
        check_policy(mdp, np.ones((1, 1)), name="pi_next")


def test_check_policy_rejects_non_mdp():
    with pytest.raises(ValueError, match=r"^mdp: "):
        check_policy("not an mdp", np.ones((2, 2)) / 2)


@pytest.mark.parametrize("tau", [-1e-9, -1.0, np.nan, np.inf, -np.inf, "a", None, [0.1, 0.2]])
def test_bad_tau(tau):
    with pytest.raises(ValueError, match=r"^tau: "):
        check_tau(tau)
    mdp = small_tabular()
    with pytest.raises(ValueError, match=r"^tau: "):
        coverage(mdp, mdp.uniform_policy(), tau)


@pytest.mark.parametrize("tau", [0, 0.0, 0.3, np.float32(2.0), 10])
def test_good_tau(tau):
    assert check_tau(tau) == float(tau)


def test_coverage_of_wrong_mask_shape():
    mdp = small_tabular(S=3, A=2, H=4)
    with pytest.raises(ValueError, match=r"^G: "):
        coverage_of(mdp, mdp.uniform_policy(), np.ones((3, 4), dtype=bool))


# ---------------------------------------------------------------------------------------------
# TreeMDP
# ---------------------------------------------------------------------------------------------
def test_tree_derived_arrays():
    tree = binary_tree()
    np.testing.assert_array_equal(tree.depth, [0, 1, 1, 2, 2])
    np.testing.assert_array_equal(tree.parent, [-1, 0, 0, 1, 1])
    np.testing.assert_array_equal(tree.is_leaf, [False, False, True, True, True])
    np.testing.assert_array_equal(tree.mu, [1, 0, 0, 0, 0])
    assert tree.horizon == 2 and tree.n_nodes == 5 and tree.n_actions == 2
    assert tree.r_max == 1.0
    for arr in (tree.children, tree.reward, tree.mu, tree.depth, tree.parent):
        assert not arr.flags.writeable


def test_tree_to_tabular_structure():
    tree = binary_tree()
    tab = tree.to_tabular()
    N = tree.n_nodes
    assert tab.n_states == N + 1 and tab.n_actions == 2 and tab.horizon == tree.horizon
    # internal nodes move deterministically to their children, receiving the child's reward
    assert tab.P[0, 0, 1] == 1.0 and tab.P[0, 1, 2] == 1.0
    assert tab.R[0, 1] == 0.5 and tab.R[1, 0] == 1.0 and tab.R[1, 1] == 0.0
    # leaves and the absorbing state go to the absorbing state with zero reward
    for n in (2, 3, 4, N):
        np.testing.assert_array_equal(tab.P[n, :, N], 1.0)
        np.testing.assert_array_equal(tab.R[n], 0.0)
    np.testing.assert_array_equal(tab.mu, [1, 0, 0, 0, 0, 0])
    pol = np.array([[0.3, 0.7], [0.1, 0.9], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    lifted = tree.tree_policy_to_tabular(pol)
    assert lifted.shape == (2, N + 1, 2)
    np.testing.assert_array_equal(lifted[1, :N], pol)
    np.testing.assert_allclose(lifted[:, N], 0.5)


def test_tree_to_tabular_size_limit():
    with pytest.raises(ValueError, match=r"^to_tabular: "):
        binary_tree().to_tabular(max_states=5)


def test_tree_child_index_not_larger_than_parent():
    children = np.array([[1, 2], [-1, -1], [1, 3], [-1, -1]])  # node 2 points back to node 1
    with pytest.raises(ValueError, match=r"^children: .*topological order"):
        TreeMDP(children, np.zeros(4))
    with pytest.raises(ValueError, match=r"^children: .*topological order"):
        TreeMDP(np.array([[0, 1], [-1, -1]]), np.zeros(2))  # self loop


def test_tree_partial_children_row():
    children = np.array([[1, 2], [3, -1], [-1, -1], [-1, -1]])
    with pytest.raises(ValueError, match=r"^children: node 1 has some but not all"):
        TreeMDP(children, np.zeros(4))


def test_tree_start_mass_on_non_root():
    with pytest.raises(ValueError, match=r"^mu: .*root"):
        TreeMDP(binary_tree().children, np.zeros(5), mu=[0.5, 0.5, 0, 0, 0])


def test_tree_two_roots_accepted_and_bad_mu_rejected():
    children = np.array([[2, 3], [4, 5], [-1, -1], [-1, -1], [-1, -1], [-1, -1]])
    tree = TreeMDP(children, np.arange(6.0), mu=[0.25, 0.75, 0, 0, 0, 0])
    np.testing.assert_array_equal(tree.parent, [-1, -1, 0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"^mu: .*summing to 1"):
        TreeMDP(children, np.zeros(6), mu=[0.25, 0.25, 0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"^mu: .*>= 0"):
        TreeMDP(children, np.zeros(6), mu=[1.5, -0.5, 0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"^mu: expected shape"):
        TreeMDP(children, np.zeros(6), mu=[1.0, 0.0])
    with pytest.raises(ValueError, match=r"^mu: .*finite"):
        TreeMDP(children, np.zeros(6), mu=[np.nan, 1, 0, 0, 0, 0])


def test_tree_two_parents():
    children = np.array([[1, 2], [2, 3], [-1, -1], [-1, -1]])
    with pytest.raises(ValueError, match=r"^children: node 2 has two parents"):
        TreeMDP(children, np.zeros(4))


@pytest.mark.parametrize(
    "children",
    [
        np.array([1, -1]),  # 1-d
        np.zeros((0, 2), dtype=int),  # no nodes
        np.zeros((2, 0), dtype=int),  # no actions
        np.array([[1.0, 2.0], [-1, -1], [-1, -1]]),  # float dtype
        np.array([[1, 5], [-1, -1], [-1, -1]]),  # out of range
        np.array([[1, -2], [-1, -1], [-1, -1]]),  # below -1
        np.array([[-1, -1]]),  # a lone root: horizon 0
    ],
)
def test_tree_bad_children(children):
    with pytest.raises(ValueError, match=r"^children: "):
        TreeMDP(children, np.zeros(max(children.shape[0], 1)))


@pytest.mark.parametrize("reward", [np.zeros(4), np.zeros((5, 1)), [0, 0, np.nan, 0, 0]])
def test_tree_bad_reward(reward):
    with pytest.raises(ValueError, match=r"^reward: "):
        TreeMDP(binary_tree().children, reward)


def test_tree_policy_validation():
    tree = binary_tree()
    with pytest.raises(ValueError, match=r"^policy: expected shape \(N, A\)"):
        check_policy(tree, np.full((4, 2), 0.5))
    with pytest.raises(ValueError, match=r"^policy: expected shape \(N, A\)"):
        check_policy(tree, np.full((2, 5, 2), 0.5))
    pol = tree.uniform_policy()
    pol[1] = [0.2, 0.2]  # an internal row
    with pytest.raises(ValueError, match=r"^policy: .*summing to 1"):
        check_policy(tree, pol)
    pol = tree.uniform_policy()
    pol[3] = [0.0, 0.0]  # a leaf row is never used: accepted
    check_policy(tree, pol)
    pol[4] = [np.nan, 0.0]  # ... but must be finite
    with pytest.raises(ValueError, match=r"^policy: .*finite"):
        check_policy(tree, pol)
