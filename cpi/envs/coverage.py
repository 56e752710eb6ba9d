r"""The coverage family: MDPs whose on-policy coverage of the improvable set is set by a knob.

This is the instrument that checks Theorem 1 (THEORY.md section 3): it lets a sweep vary the
coverage ``p`` of the tau-improvable set G_tau(pi_0) *exactly*, with both readings equal
(``reach == mass == p``), while the noise of a Q-rollout stays fixed.

Structure (a layered tabular MDP, one layer per step h = 0 .. H-1):

* **Chains.** The start distribution sends mass ``p`` into the *improvable* chain(s) and ``1 - p``
  into the *dead* chain. No action ever moves a trajectory between chains, so a trajectory is either
  in an improvable chain at every one of its H steps or at none of them: ``reach = mass = p``.
* **Improvable chain(s).** At every step one action, drawn per (step, branch) from the seed, pays
  an extra ``gap``; the other ``A - 1`` actions pay nothing extra. Actions do not affect where the
  chain goes, so ``A^pi(h, s, a)`` is the immediate gap term alone. Under the initial (uniform)
  policy ``max_a A = gap (1 - 1/A)``; the gap is chosen so that this equals ``level = headroom *
  tau`` exactly (``headroom = 1`` by default: the maximal advantage is exactly tau and the
  dilution bound ``E_d[max_a A] >= tau p`` of prediction P1 holds with equality).
* **Dead chain.** Every action has the same reward and the same transitions, so ``A = 0``: its
  states are never tau-improvable for ``tau > 0``.
* **Noise that does not depend on p.** Every state has a "lucky" and an "unlucky" twin. Acting in
  the lucky (unlucky) twin pays ``+noise`` (``-noise``) on top of the above, and each step moves
  to the lucky or unlucky twin of the next layer with probability 1/2, whatever the action. A
  Q-rollout from step h therefore carries zero-mean noise of variance ``(H - 1 - h) noise^2``
  from the twins (plus, in an improvable chain, the spread of the rollout policy's gap rewards),
  in *both* chains. Without it, Q-rollouts at dead states would be exactly zero, an estimator
  could tell dead states apart for free, and random resets would cost only ~1/p samples instead
  of the theorem's ~1/p^2. (At the last step h = H-1 a Q-rollout has no future and is exact.)
  Because the twin is resampled independently of the action, the noise never changes an
  advantage.

**Several improvable branches (for the tau trade-off, prediction P5).** With ``n_branches = K >
1`` the improvable mass ``p`` is split over K chains (``branch_weights``, equal by default) whose
levels are geometric: branch k (k = 0 .. K-1) has ``max_a A = headroom * tau * gap_ratio**k``
under the initial policy. At threshold ``t`` the coverage is the mass of the branches with level
``>= t``: a staircase that equals ``p`` for ``t <= headroom * tau`` and falls to 0 above the top
level (``meta["branch_levels"]``, ``meta["branch_masses"]``; exact values from
:func:`coverage_curve`, closed form from :func:`coverage_at`). Raising tau thus shrinks G and p,
while a CPI step that resolves a larger tau needs fewer samples.

**How tau-improvability evolves under CPI.** Only the probability ``q`` of the better action in
each improvable state matters: ``max_a A = gap (1 - q)``. A conservative update towards the
greedy (correct) action, ``pi <- (1 - alpha) pi + alpha pi'``, maps ``1 - q`` to ``(1 - alpha)(1 - q)``,
so after updates with steps ``alpha_1 .. alpha_k`` a state of a branch with initial level ``L``
has ``max_a A = L prod_i (1 - alpha_i)``. It stays in ``G_tau`` while ``prod_i (1 - alpha_i) >=
tau / L``; with ``headroom = 1`` (``L = tau`` for a single branch) it drops out after the first
update with ``alpha > 0``, and the coverage of ``G_tau`` jumps from ``p`` to 0. Choose
``headroom > 1`` to keep the set alive for several iterations (coverage stays exactly p while it
is alive, since the whole chain leaves G at the same time at a given step). The value of a policy
is ``J = sum_k m_k sum_h gap_k q_{h,k}`` (the noise has mean zero), so ``J(pi_0) = sum_k m_k H gap_k / A``
and the optimum is ``sum_k m_k H gap_k``.
"""

from __future__ import annotations

import numpy as np

from cpi.envs._knobs import check_horizon, check_int, check_real, initial_policy
from cpi.evaluation import coverage
from cpi.mdp import MDP, TabularMDP

__all__ = ["coverage_at", "coverage_curve", "coverage_family"]


def coverage_family(
    p: float,
    tau: float = 0.1,
    n_actions: int = 4,
    horizon: int = 10,
    noise: float = 0.5,
    seed: int = 0,
    n_branches: int = 1,
    gap_ratio: float = 2.0,
    branch_weights=None,
    headroom: float = 1.0,
) -> TabularMDP:
    """A layered tabular MDP whose coverage of ``G_tau(pi_0)`` under ``pi_0`` is exactly ``p``.

    See the module docstring for the construction, the noise model and how improvability evolves.

    Args:
        p: coverage of the tau-improvable set under the initial policy, in (0, 1]
            (``reach == mass == p`` up to float round-off; tested for p in [0.005, 0.5]).
        tau: threshold tau > 0 at which the coverage is p (reward units).
        n_actions: A >= 2.
        horizon: H >= 1.
        noise: ``+-noise`` reward of the lucky/unlucky twins, >= 0 (reward units); does not
            depend on p.
        seed: seed of the generator that picks the better action per (step, branch).
        n_branches: K >= 1 improvable chains with geometric levels (see module docstring).
        gap_ratio: ratio > 1 between the levels of consecutive branches.
        branch_weights: (K,) positive relative masses of the branches (default equal); they are
            normalised to sum to p.
        headroom: >= 1, level of branch 0 in units of tau (``max_a A = headroom * tau`` at pi_0).

    Returns:
        ``TabularMDP`` with ``S = 2 H (K + 1)`` states; state ``s`` is
        ``(step h, chain c, twin t)`` with index ``(h (K + 1) + c) 2 + t``, chain ``c = 0`` dead and
        ``c = k + 1`` improvable branch k, twin ``t = 0`` lucky (+noise) and 1 unlucky (-noise).
        ``meta`` holds the knobs and ``family="coverage"``, ``initial_policy`` (uniform,
        (H, S, A)), ``best_action`` (H, K) int, ``gaps`` (K,), ``branch_levels`` (K,),
        ``branch_masses`` (K,), per-state ``state_step`` (S,), ``state_chain`` (S,),
        ``state_twin`` (S,) and ``improvable_states`` (H, S) bool = ``G_tau(pi_0)`` (as
        :func:`cpi.improvable_set` returns it: every improvable-chain state at every step h,
        including the unreachable pairs where ``state_step[s] != h``).
    """
    p = check_real("p", p, 0.0, 1.0, low_open=True)
    tau = check_real("tau", tau, 0.0, low_open=True)
    A = check_int("n_actions", n_actions, 2)
    H = check_horizon(horizon)
    noise = check_real("noise", noise, 0.0)
    K = check_int("n_branches", n_branches, 1)
    ratio = check_real("gap_ratio", gap_ratio, 1.0, low_open=True)
    headroom = check_real("headroom", headroom, 1.0)
    if branch_weights is None:
        w = np.full(K, 1.0 / K)
    else:
        w = np.asarray(branch_weights, dtype=np.float64)
        if w.shape != (K,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(
                f"branch_weights: expected {K} finite positive numbers (one per branch), got {branch_weights!r}"
            )
        w = w / w.sum()
    rng = np.random.default_rng(seed)

    masses = p * w  # (K,)
    levels = headroom * tau * ratio ** np.arange(K)  # max_a A at the uniform policy
    gaps = levels / (1.0 - 1.0 / A)
    best = rng.integers(0, A, size=(H, K))  # (H, K)

    C = K + 1
    S = 2 * H * C

    def index(h, c, t):
        return (h * C + c) * 2 + t

    P = np.zeros((S, A, S))
    R = np.zeros((S, A))
    state_step = np.zeros(S, dtype=np.int64)
    state_chain = np.zeros(S, dtype=np.int64)
    state_twin = np.zeros(S, dtype=np.int64)
    sign = np.array([1.0, -1.0])
    for h in range(H):
        for c in range(C):
            for t in range(2):
                s = index(h, c, t)
                state_step[s], state_chain[s], state_twin[s] = h, c, t
                R[s, :] = sign[t] * noise
                if c > 0:
                    R[s, best[h, c - 1]] += gaps[c - 1]
                if h + 1 < H:
                    P[s, :, index(h + 1, c, 0)] = 0.5
                    P[s, :, index(h + 1, c, 1)] = 0.5
                else:  # the episode is over; any stochastic row will do
                    P[s, :, s] = 1.0
    mu = np.zeros(S)
    mu[index(0, 0, 0)] = mu[index(0, 0, 1)] = 0.5 * (1.0 - p)
    for k in range(K):
        mu[index(0, k + 1, 0)] = mu[index(0, k + 1, 1)] = 0.5 * masses[k]

    meta = {
        "family": "coverage",
        "p": p,
        "tau": tau,
        "n_actions": A,
        "horizon": H,
        "noise": noise,
        "seed": seed,
        "n_branches": K,
        "gap_ratio": ratio,
        "branch_weights": w,
        "headroom": headroom,
        "initial_policy": np.full((H, S, A), 1.0 / A),
        "best_action": best,
        "gaps": gaps,
        "branch_levels": levels,
        "branch_masses": masses,
        "state_step": state_step,
        "state_chain": state_chain,
        "state_twin": state_twin,
        "improvable_states": np.repeat((state_chain > 0)[None, :], H, axis=0),
    }
    name = f"coverage-p{p:g}-tau{tau:g}-A{A}-H{H}-K{K}-seed{seed}"
    return TabularMDP(P, R, mu, H, name=name, meta=meta)


def coverage_at(mdp: TabularMDP, tau: float) -> float:
    """Closed-form coverage of ``G_tau(pi_0)`` for a :func:`coverage_family` MDP under its initial
    policy: the total mass of the branches whose level is ``>= tau`` (``tau > 0``)."""
    if mdp.meta.get("family") != "coverage":
        raise ValueError(
            "mdp: expected an MDP built by coverage_family (meta['family'] == 'coverage')"
        )
    tau = check_real("tau", tau, 0.0, low_open=True)
    levels = np.asarray(mdp.meta["branch_levels"])
    masses = np.asarray(mdp.meta["branch_masses"])
    return float(masses[levels >= tau * (1.0 - 1e-12)].sum())


def coverage_curve(mdp: MDP, taus, policy=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact coverage of ``G_tau(policy)`` for each threshold in ``taus``.

    Args:
        mdp: any ``TabularMDP`` or ``TreeMDP``.
        taus: (T,) thresholds >= 0 (reward units).
        policy: the policy (default: ``meta["initial_policy"]`` or uniform).

    Returns:
        ``(reach, mass)``, two (T,) float arrays (THEORY.md section 1 readings).
    """
    pol = initial_policy(mdp) if policy is None else policy
    taus = np.atleast_1d(np.asarray(taus, dtype=np.float64))
    reach = np.empty(taus.shape[0])
    mass = np.empty(taus.shape[0])
    for i, t in enumerate(taus):
        cov = coverage(mdp, pol, float(t))
        reach[i], mass[i] = cov.reach, cov.mass
    return reach, mass
