"""Garnet-style random tabular MDPs (Archibald, McKinnon & Thomas 1995; Bhatnagar et al. 2009).

Generic, unstructured test beds: every (state, action) pair has ``branching`` distinct random
successor states with random probabilities. Used to check the CPI machinery (monotone
improvement, estimator unbiasedness) on MDPs that have no special structure, and whose coverage
of the improvable set is whatever it happens to be (it is not set by a knob; see
:func:`cpi.envs.coverage_family` for that).
"""

from __future__ import annotations

import numpy as np

from cpi.envs._knobs import check_horizon, check_int
from cpi.mdp import TabularMDP

__all__ = ["garnet"]

_REWARDS = ("uniform", "sparse", "state")
_STARTS = ("uniform", "single")


def garnet(
    n_states: int,
    n_actions: int,
    branching: int,
    horizon: int,
    seed: int,
    reward: str = "uniform",
    start: str = "uniform",
) -> TabularMDP:
    """A random Garnet MDP, reproducible from ``seed``.

    Construction (one ``numpy.random.Generator`` from ``seed``, no global state): for each
    (s, a), ``branching`` distinct successors are drawn uniformly without replacement and their
    probabilities are the gaps of ``branching - 1`` sorted uniform cut points of [0, 1] (a
    uniform draw from the simplex, Dirichlet(1, ..., 1)).

    Args:
        n_states: S >= 1.
        n_actions: A >= 2.
        branching: successors per (s, a), in [1, S].
        horizon: H >= 1 decisions per episode.
        seed: seed of the generator.
        reward: ``"uniform"`` -- ``R[s, a] ~ U[0, 1]`` i.i.d.; ``"sparse"`` -- ``R[s, a] = 1`` on a
            random 10% of the pairs (at least one) and 0 elsewhere; ``"state"`` -- ``R[s, a] = r(s)``
            with ``r(s) ~ U[0, 1]`` (actions matter only through transitions).
        start: ``"uniform"`` -- ``mu`` uniform over states; ``"single"`` -- all mass on state 0.

    Returns:
        ``TabularMDP`` with ``P`` (S, A, S), ``R`` (S, A) in reward units in [0, 1], ``mu`` (S,).
        ``meta``: ``family="garnet"``, the knobs, and ``initial_policy`` = uniform (H, S, A).
    """
    S = check_int("n_states", n_states, 1)
    A = check_int("n_actions", n_actions, 2)
    B = check_int("branching", branching, 1, S)
    H = check_horizon(horizon)
    if reward not in _REWARDS:
        raise ValueError(f"reward: expected one of {_REWARDS}, got {reward!r}")
    if start not in _STARTS:
        raise ValueError(f"start: expected one of {_STARTS}, got {start!r}")
    rng = np.random.default_rng(seed)

    P = np.zeros((S, A, S))
    # B distinct successors per (s, a): the first B entries of a random permutation.
    succ = np.argsort(rng.random((S, A, S)), axis=-1)[..., :B]
    cuts = np.sort(rng.random((S, A, B - 1)), axis=-1)
    edges = np.concatenate([np.zeros((S, A, 1)), cuts, np.ones((S, A, 1))], axis=-1)
    probs = np.diff(edges, axis=-1)
    np.put_along_axis(P, succ, probs, axis=-1)

    if reward == "uniform":
        R = rng.random((S, A))
    elif reward == "sparse":
        R = np.zeros(S * A)
        k = max(1, int(round(0.1 * S * A)))
        R[rng.choice(S * A, size=k, replace=False)] = 1.0
        R = R.reshape(S, A)
    else:
        R = np.repeat(rng.random(S)[:, None], A, axis=1)

    if start == "uniform":
        mu = np.full(S, 1.0 / S)
    else:
        mu = np.zeros(S)
        mu[0] = 1.0

    meta = {
        "family": "garnet",
        "n_states": S,
        "n_actions": A,
        "branching": B,
        "horizon": H,
        "seed": seed,
        "reward": reward,
        "start": start,
        "initial_policy": np.full((H, S, A), 1.0 / A),
    }
    return TabularMDP(P, R, mu, H, name=f"garnet-S{S}-A{A}-B{B}-H{H}-seed{seed}", meta=meta)
