r"""The sampled algorithms of Theorem 1, as the theorem states them: CPI-RR and CPI-CARO with
Q-rollout estimates, a greedy chooser, the conservative step computed from the *estimated*
advantage, a per-iteration sample size set by the accuracy the step needs, and eps-stopping.

:func:`run_cpi` (``mode="sampled"``) is the general loop with a fixed batch; this module fixes
the remaining choices the way Theorem 1 / Kakade & Langford prescribe them (docs/cpi.md, section
"The theorem's algorithm"). Iteration k, with pi = pi_k:

1. **Chooser.** Accepted reset states (RR: x ~ d; CARO: x ~ d | G_tau(pi_k) via the oracle;
   approx: the selector), found by rolling in from mu and rejecting (every roll-in step is
   counted), one Q-rollout each with a uniform exploratory action; pi' = greedy over the
   per-state sample means (unsampled states keep pi).
2. **Estimate.** The policy advantage ``A_hat`` of pi' from *fresh* reset states and Q-rollouts
   (Kakade-Langford terms ``|Y| Q (pi' - pi)(a|x)``, unbiased given pi'). Chooser and estimate
   grow together in rounds -- n_k samples each, then doubling both -- until the
   normal-approximation half-width ``z_{1-delta/2} s / sqrt(n)`` of the estimate is at most
   eps / 3 (K&L's accuracy requirement) or ``n_max`` terms are used, so the chooser always has
   as many samples as the accuracy of its own evaluation requires. The next iteration starts
   from the n that sufficed.
3. **Stop** if ``A_hat < 2 eps / 3`` (K&L's eps-stopping; the iteration is logged with alpha = 0).
4. **Step.** ``alpha = clip((A_hat - eps/3) / (4 (H - 1) c_A), 0, 1)`` with ``c_A = H span``
   (:func:`cpi.step_rules.theory_step`, derived in docs/cpi.md section 4), and
   ``pi_{k+1} = pi + alpha (pi' - pi)``.

``eps`` is the method's accuracy target. Theorem 1's rates correspond to ``eps = tau p`` for
CPI-RR (it must resolve the diluted signal tau p, P1) and ``eps = tau`` for CPI-CARO (signal tau on
G); :func:`theorem_eps` returns these. The run also stops when the update set is empty (CARO with
G empty) or a budget is spent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from cpi.algorithm import exact_iteration_state, optimal_value
from cpi.envs import initial_policy
from cpi.estimators import greedy_from_samples
from cpi.evaluation import value
from cpi.mdp import MDP, TabularMDP, check_policy, check_tau
from cpi.rollouts import q_rollouts, sample_resets
from cpi.selectors import selection
from cpi.step_rules import advantage_bound, theory_step

__all__ = ["TheoremResult", "run_theorem_cpi", "theorem_eps"]

RULES = ("random", "oracle", "approx")

FRAME_COLUMNS = [
    "iteration", "J", "J_next", "improvement", "alpha", "adv_est", "adv_true", "eps",
    "n_choose", "n_estimate", "halfwidth", "q_rollouts", "env_steps", "q_rollouts_cum",
    "env_steps_cum", "coverage_mass", "coverage_reach", "update_mass", "adv_true_G",
    "guaranteed", "bound_theorem", "bound_sampled", "bound_sampled_floor",
]


def theorem_eps(reset: str, tau: float, p: float, beta: float = 0.0, gamma: float = 1.0) -> float:
    """The accuracy Theorem 1 assigns to each method: tau p (RR), tau (CARO), and for the
    approximate selector the signal it is guaranteed on its selected set, (1 - beta) tau."""
    if reset == "random":
        return tau * p
    if reset == "oracle":
        return tau
    if reset == "approx":
        return (1.0 - beta) * tau
    raise ValueError(f"reset: expected one of {RULES}, got {reset!r}")


@dataclass
class TheoremResult:
    """frame: one row per iteration (columns :data:`FRAME_COLUMNS`); policy: the final policy;
    stop_reason; J_star (optimal value); J0 (value of the initial policy)."""

    frame: pd.DataFrame
    policy: np.ndarray
    stop_reason: str
    J_star: float
    J0: float


def _draw(mdp, pol, n, s, Gf, rng_reset, rng_sel, rng_q, max_candidates):
    batch = sample_resets(mdp, pol, n, s, Gf, rng_reset, rng_sel, max_candidates)
    acts, qs, qsteps = q_rollouts(mdp, pol, batch.states, 1, rng_q)
    return batch.states, acts[:, 0], qs[:, 0], batch.base_steps + qsteps


def run_theorem_cpi(mdp: MDP, reset: str, tau: float, eps: float, delta: float = 0.1,
                    seed: int = 0, beta: float = 0.0, gamma: float = 1.0, n_first: int = 64,
                    n_max: int = 10**7, max_iters: int = 100_000,
                    max_q_rollouts: int | None = None, target_J: float | None = None,
                    max_candidates: int = 10**9) -> TheoremResult:
    """Run Theorem 1's sampled CPI-RR / CPI-CARO / approximate-selector algorithm (module doc).

    Args:
        mdp: a :class:`~cpi.mdp.TabularMDP` (trees are not supported here).
        reset: ``random`` (CPI-RR), ``oracle`` (CPI-CARO) or ``approx`` (beta, gamma).
        tau: threshold of G_tau(pi_k) (recomputed every iteration), > 0.
        eps: accuracy target, > 0 (see :func:`theorem_eps`).
        delta: failure probability of each iteration's estimate, in (0, 1).
        seed: seeds the three random streams (reset sampling, selector flips, Q-rollouts).
        n_first: the first iteration's sample size (chooser and first estimation round).
        n_max: cap on the estimation terms of one iteration.
        max_iters, max_q_rollouts: budgets; target_J: stop once J >= target_J.
    Returns:
        :class:`TheoremResult`. Per row: exact J before/after, alpha, the estimate and the exact
        policy advantage of the chosen pi' (``adv_true``, on the method's reset distribution),
        sample counts, exact coverage of G_tau(pi_k), ``guaranteed`` = the package's lower bound
        ``H m (alpha Abar - 2 alpha^2 (H-1) c_A)`` for the step taken and the exact Abar, and
        ``bound_theorem`` = Theorem 1's improvement with the K&L constant at this iteration's tau
        and p (tau^2 p^2 / (8 H R_max) for RR, tau^2 p / (8 H R_max) for CARO,
        (1 - beta) gamma tau^2 p / (16 H R_max) for approx) -- the *exact-advantage* constant,
        which a sampled step does not promise; ``bound_sampled`` = what Kakade & Langford's
        sampled step does promise when the estimate is within eps/3 of the exact advantage,
        ``m (A_hat - eps/3)^2 / (8 H R_max)`` with m the update set's mass (1 for RR, d(G) for
        CARO, whose A_hat is conditional on G; Theorem 1's bounds are this with A_hat - eps/3
        replaced by tau p or tau); ``bound_sampled_floor`` = ``m eps^2 / (72 H R_max)``, which
        it is at least whenever a step is taken (A_hat >= 2 eps / 3).
    """
    if not isinstance(mdp, TabularMDP):
        raise ValueError(f"mdp: expected a TabularMDP, got {type(mdp).__name__}")
    if reset not in RULES:
        raise ValueError(f"reset: expected one of {RULES}, got {reset!r}")
    tau = check_tau(tau)
    if tau <= 0:
        raise ValueError(f"tau: expected a number > 0, got {tau}")
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps: expected a number > 0, got {eps!r}")
    if not 0 < delta < 1:
        raise ValueError(f"delta: expected a number in (0, 1), got {delta!r}")
    for name, v in (("n_first", n_first), ("n_max", n_max), ("max_iters", max_iters)):
        if int(v) < 2:
            raise ValueError(f"{name}: expected an int >= 2, got {v!r}")
    pol = check_policy(mdp, initial_policy(mdp)).copy()
    A, H = mdp.n_actions, mdp.horizon
    c_A = advantage_bound(mdp)
    r_max = mdp.r_max
    z = float(norm.ppf(1.0 - delta / 2.0))
    rng_reset, rng_sel, rng_q = (np.random.default_rng(s)
                                 for s in np.random.SeedSequence(seed).spawn(3))
    J = J0 = value(mdp, pol)
    J_star = optimal_value(mdp)
    n_k = int(n_first)
    rows = []
    cum_q = cum_steps = 0
    stop = "max_iters"
    for k in range(int(max_iters)):
        if target_J is not None and J >= target_J:
            stop = "target_J"
            break
        if max_q_rollouts is not None and cum_q >= max_q_rollouts:
            stop = "max_q_rollouts"
            break
        V, Q, adv, occ, G, cov, Gf, d = exact_iteration_state(mdp, pol, tau)
        sel = selection(reset, Gf, d, beta, gamma)
        s = sel.s
        m_s = float(d @ s)
        if m_s <= 0.0:
            stop = "empty_update_set"
            break
        pf = pol.reshape(-1, A)
        # 1-2. chooser and estimate, grown together: round r draws n_round chooser samples and
        # n_round fresh estimation samples; pi' is greedy on all chooser samples so far and the
        # estimate uses all estimation samples (their (x, a, Q) do not depend on pi', so the
        # terms are recomputed for the current pi'); stop growing once the half-width of the
        # estimate is <= eps / 3.
        ch = ([], [], [])
        es = ([], [], [])
        q_used = steps_used = 0
        n_round = n_k
        while True:
            for store in (ch, es):
                x_, a_, q_, st_ = _draw(mdp, pol, n_round, s, Gf, rng_reset, rng_sel, rng_q,
                                        max_candidates)
                store[0].append(x_)
                store[1].append(a_)
                store[2].append(q_)
                q_used += int(x_.size)
                steps_used += int(st_)
            xs, acts, qs = (np.concatenate(v) for v in ch)
            target = greedy_from_samples(pf, xs, acts, qs)
            xe, ae, qe = (np.concatenate(v) for v in es)
            terms = qe * (A * (target[xe, ae] - pf[xe, ae]))
            half = z * terms.std(ddof=1) / np.sqrt(terms.size) if terms.size > 1 else np.inf
            if half <= eps / 3.0 or terms.size >= n_max:
                break
            n_round = min(terms.size, n_max - terms.size)  # double both samples
        a_hat = float(terms.mean())
        gain = np.einsum("xa,xa->x", target, adv)
        a_true = float((d * s) @ gain) / m_s
        adv_G = float((d * Gf) @ adv.max(axis=1)) / max(float(d @ Gf), 1e-300)
        stop_now = a_hat < 2.0 * eps / 3.0
        alpha = 0.0 if stop_now else theory_step(a_hat, H, c_A, eps)
        new = (pf + alpha * (target - pf)).reshape(pol.shape) if alpha > 0 else pol
        J_next = value(mdp, new) if alpha > 0 else J
        p_now = cov.mass
        if reset == "random":
            bound = tau**2 * p_now**2 / (8 * H * r_max)
        elif reset == "oracle":
            bound = tau**2 * p_now / (8 * H * r_max)
        else:
            bound = (1 - beta) * gamma * tau**2 * p_now / (16 * H * r_max)
        guaranteed = H * m_s * (alpha * a_true - 2 * alpha**2 * (H - 1) * c_A)
        # Kakade & Langford's guarantee for a step from an estimate accurate to eps / 3 (the
        # sampled constant), on the update set: with A_hat >= 2 eps / 3 it is >= the floor.
        bound_sampled = m_s * max(a_hat - eps / 3.0, 0.0) ** 2 / (8 * H * r_max)
        bound_floor = m_s * eps**2 / (72 * H * r_max)
        cum_q += q_used
        cum_steps += steps_used
        rows.append({
            "iteration": k, "J": J, "J_next": J_next, "improvement": J_next - J, "alpha": alpha,
            "adv_est": a_hat, "adv_true": a_true, "eps": eps, "n_choose": int(xs.size),
            "n_estimate": int(terms.size), "halfwidth": float(half), "q_rollouts": q_used,
            "env_steps": steps_used, "q_rollouts_cum": cum_q, "env_steps_cum": cum_steps,
            "coverage_mass": cov.mass, "coverage_reach": cov.reach, "update_mass": m_s,
            "adv_true_G": adv_G, "guaranteed": guaranteed, "bound_theorem": bound,
            "bound_sampled": bound_sampled, "bound_sampled_floor": bound_floor,
        })
        n_k = max(int(n_first), int(terms.size))
        if stop_now:
            stop = "advantage_below_2eps/3"
            break
        pol, J = np.ascontiguousarray(new), J_next
    frame = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    return TheoremResult(frame, pol, stop, J_star, J0)
