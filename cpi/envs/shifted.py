r"""The shifted-coverage family: coverage set by a knob, with distribution shift and off-G signal.

:func:`cpi.envs.coverage_family` builds Theorem 1's claims into the environment: J is linear in
the CPI step (what the policy does never changes which states are visited), and every advantage
off the improvable set G is exactly zero. This family keeps the coverage knob but removes both.

Structure (layered tabular MDP, one layer per step h = 0 .. H-1; every state has a lucky and an
unlucky twin paying ``+-noise`` and resampled every step independently of the action, as in the
coverage family, so a Q-rollout carries p-independent noise):

* **Track (the improvable states).** The start distribution puts mass ``entry`` on the track at
  h = 0 and ``1 - entry`` on the side chain. On the track one action per step (drawn from the
  seed) is *right*: it keeps the trajectory on the track. Every other action leaves the track for
  the side chain with probability ``leak`` (distribution shift: what the policy does on G decides
  whether later G states are visited at all). Rewards on the track are solved backwards so that,
  under the uniform initial policy, ``max_a A = level = headroom * tau`` at *every* track state:
  the right action's immediate reward is ``gap - leak (V_track(h+1) - V_side(h+1))`` with
  ``gap = level / (1 - 1/A)`` (it may be negative: part of the right action's value is the
  future it keeps open).
* **Side chain (off G, not dead).** Transitions ignore the action. One action per step (seeded)
  is harmful, ``A = -(A - 1) side_level tau``; the other ``A - 1`` are equally good, each with
  ``A = side_level * tau``, ``0 <= side_level < 1`` (an advantage in ``(0, tau)``: improvable, but
  not tau-improvable). CPI-RR's update therefore changes states off G (it removes the harmful
  action's probability), and a sampled greedy chooser can pick the harmful action by noise.

What the knobs control, under the initial (uniform) policy pi_0:

* ``p`` = the **mass** reading of the coverage, ``(1/H) sum_h d_h(G_tau(pi_0)) = p`` exactly: the
  track survives a step with probability ``s = 1 - (1 - 1/A) leak``, so its mass is
  ``entry (1 - s^H) / (H (1 - s))`` and ``entry`` is solved from p (``p`` must not exceed the
  value at ``entry = 1``, ``meta["p_max"]``);
* ``tau`` and ``headroom``: ``G_tau(pi_0)`` is exactly the track (all steps);
* ``side_level``: the off-G advantages; ``leak``: the strength of the distribution shift;
* ``noise``, ``H``, ``A``.

Left free: the reach reading of the coverage (``meta["p_reach"] = entry``, larger than p), how
G and the coverage evolve under CPI (a track state stays improvable while its advantage, which
now depends on the policy at later track states, is >= tau), the per-sample variance of a
Q-rollout beyond the twin noise, and J(alpha) along any CPI direction (curved: the
probability of still being on the track at step h is a product over earlier steps, so moving
the policy toward the right action at every track state gives a polynomial in alpha).
"""

from __future__ import annotations

import numpy as np

from cpi.envs._knobs import check_horizon, check_int, check_real
from cpi.mdp import TabularMDP

__all__ = ["shifted_coverage"]


def _track_mass_factor(A: int, leak: float, H: int) -> float:
    """(1/H) sum_h s^h with s = 1 - (1 - 1/A) leak: the track's mass per unit of entry mass."""
    s = 1.0 - (1.0 - 1.0 / A) * leak
    return float(np.sum(s ** np.arange(H)) / H)


def shifted_coverage(
    p: float,
    tau: float = 0.1,
    n_actions: int = 4,
    horizon: int = 6,
    noise: float = 0.1,
    seed: int = 0,
    headroom: float = 2.0,
    leak: float = 0.4,
    side_level: float = 0.5,
) -> TabularMDP:
    """A layered MDP with coverage mass ``p`` of ``G_tau(pi_0)``, distribution shift on G and
    non-zero advantages off G (see the module docstring).

    Args:
        p: mass reading of the coverage of G_tau(pi_0), in (0, p_max] (probability).
        tau: threshold tau > 0 (reward units).
        n_actions: A >= 2.
        horizon: H >= 2.
        noise: ``+-noise`` twin reward, >= 0 (reward units).
        seed: seed of the draw of the right (track) and harmful (side) action per step.
        headroom: >= 1, ``max_a A = headroom * tau`` on the track under pi_0.
        leak: in (0, 1], probability that a non-right action on the track leaves it.
        side_level: in [0, 1), off-G best advantage in units of tau (the harmful action's is
            ``-(A - 1) side_level tau``).

    Returns:
        ``TabularMDP`` with ``S = 4 H`` states; state ``(h, c, t)`` has index
        ``(2 h + c) 2 + t`` with chain ``c = 0`` side, ``1`` track and twin ``t = 0`` lucky,
        ``1`` unlucky. ``meta``: the knobs, ``family="shifted"``, ``initial_policy`` (uniform,
        (H, S, A)), ``p_mass`` (= p), ``p_reach`` (= entry), ``p_max``, ``right_action`` (H,),
        ``side_harmful`` (H,), ``level``, ``state_step``, ``state_chain``,
        ``state_twin`` (S,) and ``improvable_states`` (H, S) bool = G_tau(pi_0).
    """
    tau = check_real("tau", tau, 0.0, low_open=True)
    A = check_int("n_actions", n_actions, 2)
    H = check_horizon(horizon)
    if H < 2:
        raise ValueError(f"horizon: expected an int >= 2 (a track needs a next step), got {H}")
    noise = check_real("noise", noise, 0.0)
    headroom = check_real("headroom", headroom, 1.0)
    leak = check_real("leak", leak, 0.0, 1.0, low_open=True)
    side_level = check_real("side_level", side_level, 0.0, 1.0, high_open=True)
    kappa = _track_mass_factor(A, leak, H)
    p = check_real("p", p, 0.0, kappa * (1.0 + 1e-12), low_open=True)
    entry = min(p / kappa, 1.0)
    rng = np.random.default_rng(seed)
    right = rng.integers(0, A, size=H)
    harmful = rng.integers(0, A, size=H)

    level = headroom * tau
    gap = level / (1.0 - 1.0 / A)
    # Side rewards: 0, and -A * side_level * tau for the harmful action; the uniform mean is
    # m = -side_level tau, so A = side_level tau for the others and -(A - 1) side_level tau for it.
    r_harm = -A * side_level * tau
    m = r_harm / A

    def index(h, c, t):
        return (2 * h + c) * 2 + t

    S = 4 * H
    P = np.zeros((S, A, S))
    R = np.zeros((S, A))
    V_side = np.zeros(H + 1)
    V_track = np.zeros(H + 1)
    r_right = np.zeros(H)
    for h in range(H - 1, -1, -1):
        V_side[h] = m + V_side[h + 1]
        cont = leak * (V_track[h + 1] - V_side[h + 1])  # what a non-right action gives up
        r_right[h] = gap - cont
        q_right = r_right[h] + V_track[h + 1]
        q_other = V_track[h + 1] - cont
        V_track[h] = q_right / A + (1.0 - 1.0 / A) * q_other

    state_step = np.repeat(np.arange(H), 4)
    state_chain = np.tile(np.repeat([0, 1], 2), H)
    state_twin = np.tile([0, 1], 2 * H)
    sign = np.array([1.0, -1.0])
    for h in range(H):
        for t in range(2):
            side, track = index(h, 0, t), index(h, 1, t)
            R[side, :] = sign[t] * noise
            R[side, harmful[h]] += r_harm
            R[track, :] = sign[t] * noise
            R[track, right[h]] += r_right[h]
            if h + 1 < H:
                for t2 in range(2):
                    P[side, :, index(h + 1, 0, t2)] = 0.5
                    P[track, :, index(h + 1, 1, t2)] = 0.5 * (1.0 - leak)
                    P[track, :, index(h + 1, 0, t2)] = 0.5 * leak
                    P[track, right[h], index(h + 1, 1, t2)] = 0.5
                    P[track, right[h], index(h + 1, 0, t2)] = 0.0
            else:
                P[side, :, side] = 1.0
                P[track, :, track] = 1.0
    mu = np.zeros(S)
    mu[[index(0, 0, 0), index(0, 0, 1)]] = 0.5 * (1.0 - entry)
    mu[[index(0, 1, 0), index(0, 1, 1)]] = 0.5 * entry

    meta = {
        "family": "shifted",
        "p": p,
        "tau": tau,
        "n_actions": A,
        "horizon": H,
        "noise": noise,
        "seed": seed,
        "headroom": headroom,
        "leak": leak,
        "side_level": side_level,
        "level": level,
        "p_mass": p,
        "p_reach": entry,
        "p_max": kappa,
        "initial_policy": np.full((H, S, A), 1.0 / A),
        "right_action": right,
        "side_harmful": harmful,
        "state_step": state_step,
        "state_chain": state_chain,
        "state_twin": state_twin,
        "improvable_states": np.repeat((state_chain == 1)[None, :], H, axis=0),
    }
    name = f"shifted-p{p:g}-tau{tau:g}-A{A}-H{H}-leak{leak:g}-seed{seed}"
    return TabularMDP(P, R, mu, H, name=name, meta=meta)
