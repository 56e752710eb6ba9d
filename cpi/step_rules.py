"""Step sizes of the conservative update pi_{k+1} = pi_k + alpha s (pi' - pi_k).

``theory`` (package convention, derived in docs/cpi.md from the finite-horizon
performance-difference lemma): with ``Abar`` the policy advantage on the update set, ``c_A`` a
bound on ``|A^pi(x, a)|`` and ``H`` the horizon,

    J(pi_{k+1}) - J(pi_k) >= H m_U (alpha Abar - 2 alpha^2 (H - 1) c_A),

maximised at ``alpha = Abar / (4 (H - 1) c_A)`` with guaranteed gain ``H m_U Abar^2 / (8 (H-1) c_A)``.
With an estimate ``A_hat`` accurate to ``eps/3`` the lower bound ``A_hat - eps/3`` replaces Abar
(Kakade & Langford). ``c_A = H * span`` with ``span = max(R_max, 0) - min(R_min, 0)`` (<= 2 r_max,
= r_max for rewards of one sign); H = 1 (a bandit) has no distribution shift, so alpha = 1.

``line_search``: the alpha in [0, 1] that maximises the exact J of the mixed policy (a grid,
which always contains the theory step and 1, then golden-section refinement around the best
grid point); it uses exact values, so it is a tuned reference, not a sample-based rule.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cpi.mdp import MDP, TabularMDP

STEP_RULES = ("theory", "constant", "line_search")  # run_cpi's rules (paper_step: sweep only)


def reward_span(mdp: MDP) -> float:
    """max(R_max, 0) - min(R_min, 0): the width of one step's reward range (0 included, since a
    tree episode that ends early collects nothing more). At least a tiny positive number."""
    r = mdp.R if isinstance(mdp, TabularMDP) else mdp.reward
    return max(max(float(r.max()), 0.0) - min(float(r.min()), 0.0), 1e-12)


def advantage_bound(mdp: MDP) -> float:
    """c_A = H * span >= |A^pi(x, a)| for every policy, state and action (reward units)."""
    return mdp.horizon * reward_span(mdp)


def theory_step(adv_hat: float, horizon: int, adv_bound: float, eps: float = 0.0) -> float:
    """alpha = clip((adv_hat - eps/3) / (4 (H - 1) c_A), 0, 1); for H = 1, 1 if adv_hat > eps/3.

    adv_hat: estimated (or exact, eps = 0) policy advantage on the update set, reward units.
    adv_bound: c_A, see :func:`advantage_bound`. NaN advantages give alpha = 0.
    """
    signal = adv_hat - eps / 3.0
    if not np.isfinite(signal) or signal <= 0.0:
        return 0.0
    if horizon <= 1:
        return 1.0
    return float(min(signal / (4.0 * (horizon - 1) * adv_bound), 1.0))


def paper_step(adv: float, horizon: int, r_max: float) -> float:
    """Kakade-Langford's step with THEORY.md section 2's finite-horizon translation
    (1 - gamma -> 1/H, R -> H R_max): ``alpha = clip(adv / (4 H^2 R_max), 0, 1)``.

    Not used by :func:`cpi.run_cpi`: docs/cpi.md section 4 derives the step we can prove safe,
    ``adv / (4 (H-1) H span)``; this form is what the paper's constants suggest, and the sweep's
    bound experiment checks whether it achieves Theorem 1's improvement with the K&L constant.
    """
    if not np.isfinite(adv) or adv <= 0.0:
        return 0.0
    return float(min(adv / (4.0 * horizon**2 * r_max), 1.0))


def guaranteed_improvement(adv: float, alpha: float, horizon: int, adv_bound: float,
                           update_mass: float) -> float:
    """The lower bound H m_U (alpha Abar - 2 alpha^2 (H - 1) c_A) on J(pi_{k+1}) - J(pi_k)."""
    return horizon * update_mass * (alpha * adv - 2.0 * alpha**2 * (horizon - 1) * adv_bound)


def line_search(J_of: Callable[[float], float], candidates=(), n_grid: int = 21,
                n_golden: int = 20) -> tuple[float, float]:
    """Maximise ``J_of(alpha)`` over alpha in [0, 1]: grid of ``n_grid`` points plus
    ``candidates`` (e.g. the theory step), then golden-section refinement between the best grid
    point's neighbours. Returns ``(alpha, J(alpha))``; never worse than any grid or candidate."""
    grid = np.unique(np.concatenate([np.linspace(0.0, 1.0, n_grid),
                                     np.clip(np.asarray(candidates, dtype=float), 0.0, 1.0)]))
    values = np.array([J_of(a) for a in grid])
    i = int(np.argmax(values))
    best_a, best_J = float(grid[i]), float(values[i])
    lo, hi = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, grid.size - 1)])
    invphi = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = hi - invphi * (hi - lo), lo + invphi * (hi - lo)
    Jc, Jd = J_of(c), J_of(d)
    for _ in range(n_golden):
        for a, J in ((c, Jc), (d, Jd)):
            if J > best_J:
                best_a, best_J = a, J
        if Jc >= Jd:
            hi, d, Jd = d, c, Jc
            c = hi - invphi * (hi - lo)
            Jc = J_of(c)
        else:
            lo, c, Jc = c, d, Jd
            d = lo + invphi * (hi - lo)
            Jd = J_of(d)
    for a, J in ((c, Jc), (d, Jd)):
        if J > best_J:
            best_a, best_J = a, J
    return best_a, best_J
