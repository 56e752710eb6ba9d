r"""The combination lock: coverage of the improvable set falls geometrically with its depth.

A deep-sea-like exploration MDP (the lock of Osband et al.'s deep sea, made tabular and layered)
in which the credit sits deep: a *prize* state at depth D is the only tau-improvable state, and
the uniform initial policy reaches it with probability ``A^-D``. Sweeping the depth sweeps the
coverage geometrically, without any knob that sets p directly.

Structure (layered, H steps, lucky/unlucky twins paying ``+-noise`` at every state and resampled
every step independently of the action, so every Q-rollout carries p-independent noise):

* **Lock** (steps 0 .. D-1): one action per step (drawn from the seed) is right and keeps the
  trajectory on the lock; every other action drops it to the dead chain for good. No reward.
* **Prize** (the lock state at step D): one action (seeded) pays ``gap = level / (1 - 1/A)`` with
  ``level = headroom * tau``; every action then moves to the dead chain.
* **Dead chain**: all actions identical (twin noise only) until step H.

Under the uniform pi_0 (q = 1/A): the prize state has ``max_a A = level``; the lock state at
depth d < D has ``max_a A = level q^(D-d)`` (its right action keeps the prize reachable), so with
``1 <= headroom < A`` the improvable set ``G_tau(pi_0)`` is the prize state alone, and its
coverage is ``p_reach = A^-D`` (one visit per trajectory, so ``p_mass = A^-D / H``). The
*ancestors* of G carry advantage too: their total under d equals D times the prize's, so the
diluted signal E_d[max_a A] = (D + 1) level p_mass, not level p_mass (THEORY.md's P1 bound is
loose here by the factor D + 1 = 1 + log_A(1/p_reach)).

What the knobs control: the depth D (hence p), tau and headroom (hence G), H >= D + 1, A, noise.
Left free: how G evolves under CPI (as the prize action is learned, the lock states' advantages
grow and enter G, so the coverage of G_tau(pi_k) changes), the spread of advantages over the
ancestors, and J(alpha) along the random-reset direction (curved: reaching the prize is a product
over the lock's steps). Along the oracle direction at pi_0 (only the prize state moves) J is
linear in alpha.
"""

from __future__ import annotations

import numpy as np

from cpi.envs._knobs import check_horizon, check_int, check_real
from cpi.mdp import TabularMDP

__all__ = ["combination_lock"]


def combination_lock(
    depth: int,
    tau: float = 0.1,
    n_actions: int = 2,
    horizon: int | None = None,
    noise: float = 0.1,
    seed: int = 0,
    headroom: float = 1.5,
) -> TabularMDP:
    """A combination lock whose only tau-improvable state (under pi_0) sits at ``depth``.

    Args:
        depth: D >= 0, step of the prize state (coverage ``p_reach = n_actions^-D``).
        tau: threshold tau > 0 (reward units).
        n_actions: A >= 2.
        horizon: H >= D + 1 decisions (default D + 2); keep it fixed across a depth sweep so that
            the noise of a Q-rollout does not change with p.
        noise: ``+-noise`` twin reward, >= 0 (reward units).
        seed: seed of the draw of the right action per lock step and the prize action.
        headroom: in [1, A), ``max_a A = headroom * tau`` at the prize under pi_0 (below A so that
            no lock state reaches tau).

    Returns:
        ``TabularMDP`` with ``S = 4 H`` states: state ``(h, c, t)`` has index ``(2 h + c) 2 + t``,
        chain ``c = 0`` dead, ``1`` lock (the lock state at step D is the prize), twin ``t``.
        ``meta``: the knobs, ``family="lock"``, ``initial_policy`` (uniform), ``p_reach``,
        ``p_mass``, ``right_action`` (D,), ``prize_action``, ``level``, ``state_step``,
        ``state_chain``, ``state_twin`` and ``improvable_states`` (H, S) bool = G_tau(pi_0).
    """
    D = check_int("depth", depth, 0)
    tau = check_real("tau", tau, 0.0, low_open=True)
    A = check_int("n_actions", n_actions, 2)
    H = D + 2 if horizon is None else check_horizon(horizon)
    if H < D + 1:
        raise ValueError(f"horizon: expected an int >= depth + 1 = {D + 1}, got {H}")
    noise = check_real("noise", noise, 0.0)
    headroom = check_real("headroom", headroom, 1.0, float(A), high_open=True)
    rng = np.random.default_rng(seed)
    right = rng.integers(0, A, size=D)
    prize = int(rng.integers(0, A))
    level = headroom * tau
    gap = level / (1.0 - 1.0 / A)

    def index(h, c, t):
        return (2 * h + c) * 2 + t

    S = 4 * H
    P = np.zeros((S, A, S))
    R = np.zeros((S, A))
    sign = np.array([1.0, -1.0])
    for h in range(H):
        for t in range(2):
            dead, lock = index(h, 0, t), index(h, 1, t)
            R[dead, :] = sign[t] * noise
            R[lock, :] = sign[t] * noise
            if h == D:
                R[lock, prize] += gap
            if h + 1 < H:
                for t2 in range(2):
                    P[dead, :, index(h + 1, 0, t2)] = 0.5
                    if h < D:
                        P[lock, :, index(h + 1, 0, t2)] = 0.5
                        P[lock, right[h], index(h + 1, 0, t2)] = 0.0
                        P[lock, right[h], index(h + 1, 1, t2)] = 0.5
                    else:
                        P[lock, :, index(h + 1, 0, t2)] = 0.5
            else:
                P[dead, :, dead] = 1.0
                P[lock, :, lock] = 1.0
    mu = np.zeros(S)
    mu[[index(0, 1, 0), index(0, 1, 1)]] = 0.5
    state_step = np.repeat(np.arange(H), 4)
    state_chain = np.tile(np.repeat([0, 1], 2), H)
    state_twin = np.tile([0, 1], 2 * H)
    G = np.zeros((H, S), dtype=bool)
    G[D, [index(D, 1, 0), index(D, 1, 1)]] = True
    p_reach = float(A) ** (-D)
    meta = {
        "family": "lock",
        "depth": D,
        "tau": tau,
        "n_actions": A,
        "horizon": H,
        "noise": noise,
        "seed": seed,
        "headroom": headroom,
        "level": level,
        "p_reach": p_reach,
        "p_mass": p_reach / H,
        "initial_policy": np.full((H, S, A), 1.0 / A),
        "right_action": right,
        "prize_action": prize,
        "state_step": state_step,
        "state_chain": state_chain,
        "state_twin": state_twin,
        "improvable_states": G,
    }
    return TabularMDP(P, R, mu, H, name=f"lock-D{D}-A{A}-H{H}-tau{tau:g}-seed{seed}", meta=meta)
