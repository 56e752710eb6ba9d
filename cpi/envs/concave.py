r"""The concave fork: J bends *down* along the CPI update at pi_0, so the conservative step matters.

On :func:`cpi.envs.coverage_family` J is linear in the CPI step; on the shifted, planted and lock
families it bends *up* (reaching G is a product of right choices, so the update's terms reinforce
each other). In both cases a larger step never loses part of its first-order gain, and the
second-order term of the conservative step's lemma never binds. This family makes the two
updates *substitutes*, so that J(alpha) is concave along the update and the best step is interior.

Structure (layered tabular MDP, one layer per step h = 0 .. H-1; every state has a lucky and an
unlucky twin paying ``+-noise`` and resampled every step independently of the action, as in the
coverage family):

* **Fork** (h = 0, mass ``entry`` of the start distribution): the *fork action* (drawn from the
  seed) leads to the **bank** chain, every other action to the **work** chain. No reward.
* **Work chain** (h = 1 .. H-1): one action per step (seeded) pays ``gap = level / (1 - 1/A)``,
  ``level = headroom * tau``; the others nothing. Under the uniform pi_0 its states have
  ``max_a A = level``.
* **Bank chain** (h = 1 .. H-1): every action pays the same ``bank`` per step (no advantage).
  ``bank = gap / A + level / ((1 - 1/A) (H - 1))`` makes the fork's advantage under pi_0 exactly
  ``level`` too: banking beats the *uniform* work chain by ``level / (1 - 1/A)`` over the episode.
* **Dead chain** (mass ``1 - entry``): twin noise only, no advantage.

So ``G_tau(pi_0)`` = the fork and the work chain (every state there has ``max_a A = level``), and
the greedy update at pi_0 moves the fork towards the bank *and* the work chain towards its paying
action. The two are substitutes: once the work chain is good (``bank < gap`` whenever
``1/A + 1/(H - 1) < 1``), banking is the worse choice. Along the update, with ``u(alpha) = 1/A +
alpha (1 - 1/A)`` the probability of the greedy action at the fork and at each work state,

    J(alpha) = entry (H - 1) [u bank + (1 - u) u gap]    (the noise has mean 0),

a concave quadratic with maximum at ``u* = (bank + gap) / (2 gap)`` (alpha* ~ 0.63 at A = 4,
H = 6): the full step alpha = 1 (policy iteration) still improves on pi_0 but overshoots, and
the fork's greedy action flips to the work chain once the work chain's policy is good enough
(the optimal policy never banks). The same J holds along the oracle's update (the states off G
have no advantage).

What the knobs control, under pi_0: ``p`` = the mass reading of the coverage of G_tau(pi_0),
``(1/H) sum_h d_h(G) = entry (1 + (1 - 1/A)(H - 1)) / H``, exactly (``p <= meta["p_max"]``, the
value at entry = 1); the reach reading is ``entry``; every G state has ``max_a A = level``, every
other state 0 (so the diluted signal is exactly ``level p``, as on the clean family); tau,
headroom, H, A, noise. Left free: how G and its coverage evolve under CPI (the work chain's mass
shrinks as the fork learns to bank, then grows back when it flips), and the per-sample variance
beyond the twin noise.
"""

from __future__ import annotations

import numpy as np

from cpi.envs._knobs import check_horizon, check_int, check_real
from cpi.mdp import TabularMDP

__all__ = ["concave_fork"]

#: Chain indices of the state layout.
DEAD, FORK, WORK, BANK = 0, 1, 2, 3


def _g_mass_factor(A: int, H: int) -> float:
    """(1/H) sum_h d_h(G) per unit of entry mass under the uniform policy: the fork at h = 0
    plus the work chain (reached with probability 1 - 1/A) at h = 1 .. H-1."""
    return (1.0 + (1.0 - 1.0 / A) * (H - 1)) / H


def concave_fork(
    p: float,
    tau: float = 0.1,
    n_actions: int = 4,
    horizon: int = 6,
    noise: float = 0.1,
    seed: int = 0,
    headroom: float = 2.0,
) -> TabularMDP:
    """A layered MDP with coverage mass ``p`` of ``G_tau(pi_0)`` along whose CPI update J is
    concave (see the module docstring).

    Args:
        p: mass reading of the coverage of G_tau(pi_0), in (0, p_max] (probability).
        tau: threshold tau > 0 (reward units).
        n_actions: A >= 2.
        horizon: H >= 3 (a fork and at least two work steps, so that ``bank < gap`` can hold).
        noise: ``+-noise`` twin reward, >= 0 (reward units).
        seed: seed of the draw of the fork action and the work chain's paying action per step.
        headroom: >= 1, ``max_a A = headroom * tau`` on G under pi_0.

    Returns:
        ``TabularMDP`` with ``S = 8 H`` states; state ``(h, c, t)`` has index ``(4 h + c) 2 + t``
        with chain ``c`` = 0 dead, 1 fork (used at h = 0 only), 2 work, 3 bank and twin ``t`` (0
        lucky, 1 unlucky). ``meta``: the knobs, ``family="concave"``, ``initial_policy``
        (uniform, (H, S, A)), ``p_mass`` (= p), ``p_reach`` (= entry), ``p_max``,
        ``fork_action``, ``work_action`` (H,) (entry 0 unused), ``gap``, ``bank``, ``level``,
        ``alpha_star`` (the best step along the update at pi_0), ``state_step``, ``state_chain``,
        ``state_twin`` (S,) and ``improvable_states`` (H, S) bool = G_tau(pi_0).
    """
    tau = check_real("tau", tau, 0.0, low_open=True)
    A = check_int("n_actions", n_actions, 2)
    H = check_horizon(horizon)
    if H < 3:
        raise ValueError(f"horizon: expected an int >= 3 (a fork and two work steps), got {H}")
    noise = check_real("noise", noise, 0.0)
    headroom = check_real("headroom", headroom, 1.0)
    kappa = _g_mass_factor(A, H)
    p = check_real("p", p, 0.0, kappa * (1.0 + 1e-12), low_open=True)
    entry = min(p / kappa, 1.0)
    rng = np.random.default_rng(seed)
    fork_action = int(rng.integers(0, A))
    work_action = rng.integers(0, A, size=H)

    level = headroom * tau
    gap = level / (1.0 - 1.0 / A)
    bank = gap / A + level / ((1.0 - 1.0 / A) * (H - 1))
    u0 = 1.0 / A
    u_star = min((bank + gap) / (2.0 * gap), 1.0)
    alpha_star = (u_star - u0) / (1.0 - u0)

    def index(h, c, t):
        return (4 * h + c) * 2 + t

    S = 8 * H
    P = np.zeros((S, A, S))
    R = np.zeros((S, A))
    sign = np.array([1.0, -1.0])
    for h in range(H):
        for c in (DEAD, FORK, WORK, BANK):
            for t in range(2):
                s = index(h, c, t)
                R[s, :] = sign[t] * noise
                if c == WORK:
                    R[s, work_action[h]] += gap
                elif c == BANK:
                    R[s, :] += bank
                if h + 1 == H:
                    P[s, :, s] = 1.0  # the episode is over; any stochastic row will do
                    continue
                nxt = WORK if c == FORK else c
                for t2 in range(2):
                    P[s, :, index(h + 1, nxt, t2)] = 0.5
                    if c == FORK:
                        P[s, fork_action, index(h + 1, WORK, t2)] = 0.0
                        P[s, fork_action, index(h + 1, BANK, t2)] = 0.5
    mu = np.zeros(S)
    mu[[index(0, DEAD, 0), index(0, DEAD, 1)]] = 0.5 * (1.0 - entry)
    mu[[index(0, FORK, 0), index(0, FORK, 1)]] = 0.5 * entry

    state_step = np.repeat(np.arange(H), 8)
    state_chain = np.tile(np.repeat(np.arange(4), 2), H)
    state_twin = np.tile([0, 1], 4 * H)
    G = np.zeros((H, S), dtype=bool)
    G[0, [index(0, FORK, 0), index(0, FORK, 1)]] = True
    for h in range(1, H):
        G[h, [index(h, WORK, 0), index(h, WORK, 1)]] = True
    meta = {
        "family": "concave",
        "p": p,
        "tau": tau,
        "n_actions": A,
        "horizon": H,
        "noise": noise,
        "seed": seed,
        "headroom": headroom,
        "level": level,
        "gap": gap,
        "bank": bank,
        "alpha_star": alpha_star,
        "p_mass": p,
        "p_reach": entry,
        "p_max": kappa,
        "initial_policy": np.full((H, S, A), 1.0 / A),
        "fork_action": fork_action,
        "work_action": work_action,
        "state_step": state_step,
        "state_chain": state_chain,
        "state_twin": state_twin,
        "improvable_states": G,
    }
    name = f"concave-p{p:g}-tau{tau:g}-A{A}-H{H}-seed{seed}"
    return TabularMDP(P, R, mu, H, name=name, meta=meta)
