"""Branch rules as selectors on trees (cpi.selectors): choices, reset distributions and quality
against brute force over every root-to-leaf path."""

import numpy as np
import pytest

from cpi.envs import first_error_tree, initial_policy
from cpi.evaluation import occupancy
from cpi.selectors import (
    branch_choice,
    branch_distribution,
    branch_quality,
    node_entropy,
    reset_distribution,
    selection_from,
)


def _tree(seed, horizon=4, actions=3, noise=1.0):
    mdp = first_error_tree(horizon=horizon, n_actions=actions, p_correct=0.6, seed=seed)
    rng = np.random.default_rng(seed)
    logits = np.log(initial_policy(mdp)) + noise * rng.normal(size=mdp.policy_shape())
    pol = np.exp(logits)
    return mdp, pol / pol.sum(axis=1, keepdims=True)


def _path(mdp, leaf):
    out, n = [], int(mdp.parent[leaf])
    while n >= 0:
        out.append(n)
        n = int(mdp.parent[n])
    return out[::-1]  # internal nodes, root first


def _brute(mdp, pol, rule, depth=None, leaves=None):
    ent = -(pol * np.log(pol)).sum(axis=1)
    occ = occupancy(mdp, pol)
    leaves = mdp.is_leaf if leaves is None else leaves
    w = {int(l): occ[l] for l in np.flatnonzero(leaves)}
    total = sum(w.values())
    nu = np.zeros(mdp.n_nodes)
    choice = {}
    for leaf, weight in w.items():
        path = _path(mdp, leaf)
        if rule == "entropy":
            best = path[0]
            for n in path:  # strict > keeps the shallowest on ties
                if ent[n] > ent[best]:
                    best = n
            choice[leaf] = best
            nu[best] += weight / total
        elif rule == "fixed":
            choice[leaf] = path[min(depth, len(path) - 1)]
            nu[choice[leaf]] += weight / total
        else:
            for n in path:
                nu[n] += weight / total / len(path)
    return choice, nu


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "rule,depth", [("entropy", None), ("fixed", 0), ("fixed", 2), ("fixed", 9), ("random", None)]
)
def test_branch_rules_equal_brute_force(seed, rule, depth):
    mdp, pol = _tree(seed)
    fail = mdp.is_leaf & (mdp.meta["first_error_step"] > 0)
    choice, nu = _brute(mdp, pol, rule, depth, fail)
    if rule != "random":
        got = branch_choice(mdp, pol, rule, depth)
        assert all(got[leaf] == c for leaf, c in choice.items())
        assert (got[~mdp.is_leaf] == -1).all()
    np.testing.assert_allclose(branch_distribution(mdp, pol, rule, fail, depth), nu, atol=1e-12)


def test_entropy_ties_take_the_shallowest_node():
    mdp = first_error_tree(horizon=3, n_actions=2, p_correct=0.7, seed=0)
    pol = initial_policy(mdp)  # the same distribution at every node: every entropy ties
    got = branch_choice(mdp, pol, "entropy")
    assert (got[mdp.is_leaf] == 0).all()
    assert np.isneginf(node_entropy(mdp, pol)[mdp.is_leaf]).all()


@pytest.mark.parametrize("seed", [0, 3])
def test_quality_against_clean_states_by_brute_force(seed):
    mdp, pol = _tree(seed, horizon=5)
    fail = mdp.is_leaf & (mdp.meta["first_error_step"] > 0)
    clean = mdp.meta["on_track"]
    occ = occupancy(mdp, pol)
    # coverage p = E[first error step] / E[steps] over failed trajectories (all of length H)
    e = mdp.meta["first_error_step"][fail]
    p = float((occ[fail] * e).sum() / (occ[fail] * mdp.depth[fail]).sum())
    for rule, depth in (("entropy", None), ("fixed", 1), ("random", None)):
        q = branch_quality(mdp, pol, rule, clean, fail, depth)
        _, nu = _brute(mdp, pol, rule, depth, fail)
        assert q.precision == pytest.approx(float(nu[clean].sum()), abs=1e-12)
        assert q.p == pytest.approx(p, rel=1e-12) and q.recall == 1.0
    random = branch_quality(mdp, pol, "random", clean, fail)
    assert random.precision == pytest.approx(p, rel=1e-12)  # random sits on the boundary
    assert not random.beats_random_predicted or random.precision > p


def test_selection_from_reproduces_the_reset_distribution():
    mdp, pol = _tree(1)
    d = reset_distribution(mdp, pol)
    nu = branch_distribution(mdp, pol, "entropy")
    sel = selection_from(nu, d, mdp.meta["on_track"])
    w = d * sel.s
    np.testing.assert_allclose(w / w.sum(), nu, atol=1e-12)
    assert sel.s.max() == pytest.approx(1.0) and (sel.s >= 0).all()
