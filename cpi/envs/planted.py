r"""Planted Garnet: a random layered MDP with an improvable set planted at a chosen coverage.

A Garnet MDP has no structure to build a claim into; this family plants one, and only one,
thing: which states are tau-improvable, at a chosen coverage. Everything else (variance of a
Q-rollout, how the advantage is spread over the other states, distribution shift) is whatever the
random MDP gives.

Construction (one ``numpy.random.Generator`` from ``seed``):

1. **Layered Garnet.** ``n_states`` states per layer, one layer per step h = 0 .. H-1, so a state
   determines its step. Each (s, a) in layer h < H-1 has ``branching`` distinct successors in layer
   h+1 with Dirichlet(1) probabilities; ``mu`` is uniform on layer 0. Base rewards are U[0, 1].
2. **Off-G advantages in (0, tau).** Under the uniform initial policy pi_0 every state has an
   advantage ``max_a A > 0`` (generically); all rewards are scaled by one factor so that the
   largest of them over reachable states is ``off_level * tau`` (``off_level < 1``). Rewards keep
   their random spread, so some actions are harmful (``A < 0``) everywhere.
3. **Planting.** States are taken in a random order (reachable states only) until their mass
   ``(1/H) sum d_h(s)`` under pi_0 reaches ``p``; the last one is kept or dropped, whichever lands
   closer to p. At a planted state the action with the largest natural advantage gets a bonus
   ``b = (level - max_a A) / (1 - 1/A)`` and every action pays ``b / A`` back, so the state's mean
   reward under pi_0 is unchanged: **V^{pi_0} is unchanged everywhere**, hence so are all other
   advantages, while the planted state's ``max_a A`` becomes exactly ``level = headroom * tau``.

What the knobs control, under pi_0: ``G_tau(pi_0)`` = the planted states, exactly; its mass
coverage ``meta["p_mass"]`` is p up to the mass of one state (the realised value is what a sweep
should use); the off-G advantages lie in (0, off_level * tau]; tau, headroom, H, A.

Left free: the reach reading of the coverage (``meta["p_reach"]``; a trajectory may cross
several planted states), the transitions, the per-sample variance of Q-rollouts (no added noise),
how the advantages of the other states are spread, and J(alpha) along a CPI direction (curved:
the policy at a planted state changes which later states are visited).
"""

from __future__ import annotations

import numpy as np

from cpi.envs._knobs import check_horizon, check_int, check_real
from cpi.evaluation import coverage_of, evaluate, occupancy
from cpi.mdp import TabularMDP

__all__ = ["planted_garnet"]


def planted_garnet(
    p: float,
    tau: float = 0.1,
    n_states: int = 30,
    n_actions: int = 4,
    branching: int = 3,
    horizon: int = 5,
    seed: int = 0,
    headroom: float = 2.0,
    off_level: float = 0.5,
) -> TabularMDP:
    """A layered Garnet MDP whose improvable set ``G_tau(pi_0)`` is planted at coverage ~p.

    Args:
        p: target mass coverage of G_tau(pi_0), in (0, 1) (realised to within one state's mass;
            see ``meta["p_mass"]``).
        tau: threshold tau > 0 (reward units).
        n_states: states per layer, >= 2.
        n_actions: A >= 2.
        branching: successors per (s, a), in [1, n_states].
        horizon: H >= 2 layers / decisions.
        seed: seed of the generator (transitions, rewards, planting order).
        headroom: >= 1, ``max_a A = headroom * tau`` at planted states under pi_0.
        off_level: in (0, 1), largest off-G ``max_a A`` in units of tau.

    Returns:
        ``TabularMDP`` with ``S = H * n_states`` states (layer h holds ``h n .. (h+1) n - 1``).
        ``meta``: the knobs, ``family="planted_garnet"``, ``initial_policy`` (uniform), ``p_mass``
        and ``p_reach`` (realised coverage of G_tau(pi_0), both readings), ``planted`` (S,) bool,
        ``state_step`` (S,), ``reward_scale`` and ``improvable_states`` (H, S) bool.
    """
    p = check_real("p", p, 0.0, 1.0, low_open=True, high_open=True)
    tau = check_real("tau", tau, 0.0, low_open=True)
    n = check_int("n_states", n_states, 2)
    A = check_int("n_actions", n_actions, 2)
    B = check_int("branching", branching, 1, n)
    H = check_horizon(horizon)
    if H < 2:
        raise ValueError(f"horizon: expected an int >= 2, got {H}")
    headroom = check_real("headroom", headroom, 1.0)
    off_level = check_real("off_level", off_level, 0.0, 1.0, low_open=True, high_open=True)
    rng = np.random.default_rng(seed)

    S = H * n
    P = np.zeros((S, A, S))
    for h in range(H):
        rows = np.arange(h * n, (h + 1) * n)
        if h == H - 1:
            P[rows, :, rows] = 1.0  # the episode is over; any stochastic row will do
            continue
        succ = np.argsort(rng.random((n, A, n)), axis=-1)[..., :B] + (h + 1) * n
        probs = rng.dirichlet(np.ones(B), size=(n, A))
        for i in range(n):
            for a in range(A):
                P[rows[i], a, succ[i, a]] = probs[i, a]
    R = rng.random((S, A))
    mu = np.zeros(S)
    mu[:n] = 1.0 / n
    state_step = np.repeat(np.arange(H), n)
    pol0 = np.full((H, S, A), 1.0 / A)

    base = TabularMDP(P, R, mu, H)
    V, Q = evaluate(base, pol0)
    own = Q[state_step, np.arange(S)]  # (S, A): Q at the state's own step
    adv = own - V[state_step, np.arange(S)][:, None]
    d = occupancy(base, pol0)[state_step, np.arange(S)]  # (S,) visit probability
    reach_ok = d > 0
    scale = off_level * tau / float(adv.max(axis=1)[reach_ok].max())
    R = R * scale
    adv = adv * scale

    order = rng.permutation(np.flatnonzero(reach_ok))
    mass = d[order] / H
    csum = np.cumsum(mass)
    k = int(np.searchsorted(csum, p))  # first prefix reaching p
    k = min(k, len(order) - 1)
    if k > 0 and abs(csum[k - 1] - p) <= abs(csum[k] - p):
        k -= 1
    planted_states = order[: k + 1]
    level = headroom * tau
    for s in planted_states:
        a_star = int(np.argmax(adv[s]))
        bonus = (level - adv[s, a_star]) / (1.0 - 1.0 / A)
        R[s, a_star] += bonus
        R[s] -= bonus / A
    planted = np.zeros(S, dtype=bool)
    planted[planted_states] = True
    G = np.zeros((H, S), dtype=bool)
    G[state_step[planted], np.flatnonzero(planted)] = True

    meta = {
        "family": "planted_garnet",
        "p": p,
        "tau": tau,
        "n_states": n,
        "n_actions": A,
        "branching": B,
        "horizon": H,
        "seed": seed,
        "headroom": headroom,
        "off_level": off_level,
        "level": level,
        "reward_scale": scale,
        "initial_policy": pol0,
        "planted": planted,
        "state_step": state_step,
        "improvable_states": G,
    }
    mdp = TabularMDP(P, R, mu, H, name=f"planted-garnet-p{p:g}-n{n}-A{A}-H{H}-seed{seed}",
                     meta=meta)
    cov = coverage_of(mdp, pol0, G)
    meta["p_mass"], meta["p_reach"] = cov.mass, cov.reach
    return mdp
