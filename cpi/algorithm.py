"""Conservative policy iteration (Kakade & Langford) with no, random, oracle and approximate resets.

One loop, :func:`run_cpi`. Iteration k, with pi = pi_k:

1. exact bookkeeping (cheap, for logging): J(pi), Q, the improvable set G = G_tau(pi) (>= tau),
   coverage (reach, mass), the reset distribution d and the rule's selection s(x)
   (:mod:`cpi.selectors`);
2. the target policy pi' and the policy advantage A_hat on the update set:
   ``mode="exact"``: pi' = argmax_a Q(x, a) wherever s(x) > 0, A_hat = exact E_{d_s}[A(x, pi')];
   ``mode="sampled"``: Q-rollouts at accepted reset states (:mod:`cpi.rollouts`), pi' greedy over
   per-state sample means (unsampled states keep pi), A_hat on held-out or fresh samples
   (:mod:`cpi.estimators`);
3. a step alpha (:mod:`cpi.step_rules`) and the update
   ``pi_{k+1}(x) = pi(x) + alpha s(x) (pi'(x) - pi(x))`` (sampled mode: s = 1, since pi' = pi
   wherever nothing was accepted; exact mode: s is the selector's acceptance probability, so the
   exact approximate-selector update is the expected update of the stochastic one).

Reset rule ``none`` (outcome signal only, the GRPO analogue): sampled mode runs n on-policy
episodes with no branching and credits every visited (x, a) with its return-to-go. Exact mode
uses the n -> infinity limit of that update (``none_exact="limit"``): greedy over the actions pi
already takes (pi(a|x) > 0) at every state; an alternative (``"start"``) updates step-0 states only.
See docs/cpi.md for why.

Stopping: K&L's ``A_hat < 2 eps / 3`` (when eps > 0), exact advantage <= ``adv_tol``, an empty
update set, ``target_J`` / ``target_gap`` reached, a budget spent (``max_q_rollouts``,
``max_env_steps``; the iteration that crosses a budget is completed), or ``max_iters``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numba as nb
import numpy as np
import pandas as pd

from cpi.estimators import (
    ESTIMATORS,
    advantage_of,
    estimate_from_samples,
    greedy_from_samples,
    none_step_weight,
    weighted_mean,
)
from cpi.evaluation import advantage, coverage_of, evaluate, improvable_set, occupancy, value
from cpi.mdp import MDP, TabularMDP, TreeMDP, check_policy, check_tau
from cpi.rollouts import on_policy_episodes, q_rollouts, sample_resets
from cpi.selectors import RESET_RULES, reset_distribution, selection
from cpi.step_rules import STEP_RULES, advantage_bound, line_search, theory_step

MODES = ("exact", "sampled")
ADV_ESTIMATES = ("heldout", "fresh")
NONE_EXACT = ("limit", "start")


@dataclass
class CPIConfig:
    """Options of :func:`run_cpi` (every field is a keyword option).

    policy0: initial policy; default ``mdp.meta["initial_policy"]`` or uniform.
    step: step rule, one of ``theory``, ``constant``, ``line_search`` (exact J; a tuned reference).
    alpha: the step for ``step="constant"``, in [0, 1].
    eps: accuracy target of K&L: the theory step uses ``A_hat - eps/3``, and the run stops when
        ``A_hat < 2 eps / 3``. 0 disables both (sampled runs then never stop on the advantage).
    max_iters: at most this many iterations (rows).
    n_samples: accepted reset states per iteration (``none``: on-policy episodes). With
        ``adv_estimate="heldout"`` half of them choose pi' and half estimate its advantage.
    estimator: ``uniform`` (one uniform-action Q-rollout per reset state, K&L) or ``group``
        (``group_size`` Q-rollouts per reset state, leave-one-out group baseline).
    group_size: Q-rollouts per reset state for the group estimator (>= 2).
    beta, gamma: requested false-discovery rate and recall of the ``approx`` selector.
    on_infeasible: ``clip`` (q > 1 is clipped to 1 and the realised beta reported) or ``raise``.
    target_J: stop once J(pi_k) >= target_J.
    target_gap: stop once J* - J(pi_k) <= target_gap (J* by backward induction).
    max_q_rollouts, max_env_steps: cumulative budgets.
    adv_estimate: ``heldout`` (the accepted states split in two halves) or ``fresh`` (a second
        batch of n_samples, twice the cost).
    none_exact: exact-mode meaning of reset ``none``: ``limit`` or ``start`` (see module doc).
    max_candidates: cap on reset candidates per batch (guards a selector that never accepts).
    adv_tol: exact mode stops when the exact policy advantage is <= adv_tol.
    """

    policy0: object = None
    step: str = "theory"
    alpha: float | None = None
    eps: float = 0.0
    max_iters: int = 50
    n_samples: int = 100
    estimator: str = "uniform"
    group_size: int = 4
    beta: float = 0.0
    gamma: float = 1.0
    on_infeasible: str = "clip"
    target_J: float | None = None
    target_gap: float | None = None
    max_q_rollouts: int | None = None
    max_env_steps: int | None = None
    adv_estimate: str = "heldout"
    none_exact: str = "limit"
    max_candidates: int = 10**7
    adv_tol: float = 1e-12


@dataclass
class CPIResult:
    """Output of :func:`run_cpi`.

    frame: one tidy row per iteration (columns in docs/cpi.md).
    policy: the final policy pi_K (canonical shape of the MDP).
    stop_reason: why the loop ended.
    J_star: the optimal value (backward induction).
    config: the options used (``policy0`` omitted).
    """

    frame: pd.DataFrame
    policy: np.ndarray
    stop_reason: str
    J_star: float
    config: dict


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def _choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {tuple(allowed)}, got {value!r}")
    return value


def _int_at_least(name: str, value, lo: int, optional: bool = False):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {value!r}")
    return int(value)


def _number(name: str, value, lo=-math.inf, hi=math.inf, optional: bool = False):
    if value is None and optional:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number in [{lo}, {hi}], got {value!r}") from None
    if not (math.isfinite(v) and lo <= v <= hi):
        raise ValueError(f"{name}: expected a number in [{lo}, {hi}], got {value!r}")
    return v


def make_config(reset: str, mode: str, options: dict) -> CPIConfig:
    """Build and validate a :class:`CPIConfig`; every error is a ValueError naming the field."""
    known = {f.name for f in fields(CPIConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown option; expected one of {sorted(known)}")
    cfg = CPIConfig(**options)
    _choice("step", cfg.step, STEP_RULES)
    _choice("estimator", cfg.estimator, ESTIMATORS)
    _choice("adv_estimate", cfg.adv_estimate, ADV_ESTIMATES)
    _choice("none_exact", cfg.none_exact, NONE_EXACT)
    _choice("on_infeasible", cfg.on_infeasible, ("clip", "raise"))
    cfg.eps = _number("eps", cfg.eps, 0.0)
    cfg.beta = _number("beta", cfg.beta, 0.0, 1.0)
    cfg.gamma = _number("gamma", cfg.gamma, 0.0, 1.0)
    cfg.adv_tol = _number("adv_tol", cfg.adv_tol, 0.0)
    cfg.max_iters = _int_at_least("max_iters", cfg.max_iters, 1)
    cfg.n_samples = _int_at_least("n_samples", cfg.n_samples, 1)
    cfg.group_size = _int_at_least("group_size", cfg.group_size, 1)
    cfg.max_candidates = _int_at_least("max_candidates", cfg.max_candidates, 1)
    cfg.max_q_rollouts = _int_at_least("max_q_rollouts", cfg.max_q_rollouts, 1, optional=True)
    cfg.max_env_steps = _int_at_least("max_env_steps", cfg.max_env_steps, 1, optional=True)
    cfg.target_J = _number("target_J", cfg.target_J, optional=True)
    cfg.target_gap = _number("target_gap", cfg.target_gap, 0.0, optional=True)
    if cfg.step == "constant":
        if cfg.alpha is None:
            raise ValueError("alpha: expected a number in [0, 1] with step='constant', got None")
        cfg.alpha = _number("alpha", cfg.alpha, 0.0, 1.0)
    elif cfg.alpha is not None:
        raise ValueError(f"alpha: only used with step='constant', got alpha={cfg.alpha!r} "
                         f"with step={cfg.step!r}")
    if mode == "sampled":
        if cfg.estimator == "group" and cfg.group_size < 2:
            raise ValueError(f"group_size: expected >= 2 for the group estimator, got {cfg.group_size}")
        # Held-out estimates need a non-empty second half; the outcome-only baseline (leave one
        # episode out) needs two episodes in the estimating half.
        per_half = 2 if reset == "none" else 1
        need = 2 * per_half if cfg.adv_estimate == "heldout" else per_half
        if cfg.n_samples < need:
            raise ValueError(f"n_samples: expected >= {need} for reset={reset!r} with "
                             f"adv_estimate={cfg.adv_estimate!r}, got {cfg.n_samples}")
    return cfg


# ---------------------------------------------------------------------------------------------
# Optimal value (for target_gap and the `gap` column)
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _tree_optimal(children, reward):  # pragma: no cover - compiled
    N, A = children.shape
    V = np.zeros(N)
    for n in range(N - 1, -1, -1):
        if children[n, 0] < 0:
            continue
        best = -np.inf
        for a in range(A):
            c = children[n, a]
            best = max(best, reward[c] + V[c])
        V[n] = best
    return V


def optimal_value(mdp: MDP) -> float:
    """J* = max_pi J(pi), by backward induction (reward units)."""
    if isinstance(mdp, TabularMDP):
        S, A = mdp.R.shape
        V = np.zeros(S)
        P2 = mdp.P.reshape(S * A, S)
        for _ in range(mdp.horizon):
            V = (mdp.R + (P2 @ V).reshape(S, A)).max(axis=1)
        return float(mdp.mu @ V)
    return float(mdp.mu @ _tree_optimal(mdp.children, mdp.reward))


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
def exact_iteration_state(mdp: MDP, pol: np.ndarray, tau: float):
    """The exact quantities one CPI iteration reads, for policy ``pol`` (shape of
    ``mdp.policy_shape``): ``(V, Q, adv, occ, G, cov, Gf, d)`` -- values and Q-values, advantages
    reshaped to (X, A), occupancy, the tau-improvable set and its coverage, G flattened to (X,),
    and the reset distribution d over the X decision points."""
    A = mdp.n_actions
    V, Q = evaluate(mdp, pol)
    adv = advantage(mdp, pol, V, Q).reshape(-1, A)
    occ = occupancy(mdp, pol)
    G = improvable_set(mdp, pol, tau, V, Q)
    cov = coverage_of(mdp, pol, G, occ)
    d = reset_distribution(mdp, pol, occ)
    return V, Q, adv, occ, G, cov, G.ravel(), d


def _start_mask(mdp: MDP) -> np.ndarray:
    """(X,) True at step-0 states (tabular h = 0; tree: roots)."""
    if isinstance(mdp, TabularMDP):
        m = np.zeros((mdp.horizon, mdp.n_states), dtype=np.bool_)
        m[0] = True
        return m.ravel()
    return (mdp.parent < 0) & ~mdp.is_leaf


def _mix(pf: np.ndarray, target: np.ndarray, w: np.ndarray) -> np.ndarray:
    """pi + w (pi' - pi) row-wise, cleaned of round-off; shapes (X, A), (X, A), (X,)."""
    new = pf + w[:, None] * (target - pf)
    new = np.clip(new, 0.0, None)
    return new / new.sum(axis=1, keepdims=True)


def _exact_target(pf, Qf, s, allowed):
    """Greedy argmax_a Q over allowed actions where s > 0; pi elsewhere. (X, A)."""
    Qm = np.where(allowed, Qf, -np.inf)
    greedy = np.zeros_like(pf)
    greedy[np.arange(pf.shape[0]), np.argmax(Qm, axis=1)] = 1.0
    return np.where((s > 0)[:, None], greedy, pf)


def _nan_ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def run_cpi(mdp: MDP, reset: str = "random", mode: str = "exact", tau: float = 0.0,
            seed: int = 0, **options) -> CPIResult:
    """Run CPI on ``mdp`` with a reset rule and a mode; see the module doc and docs/cpi.md.

    reset: ``none`` | ``random`` (CPI-RR) | ``oracle`` (CPI-CARO) | ``approx`` (beta, gamma).
    mode: ``exact`` (true Q) | ``sampled`` (Q-rollouts; every random draw comes from streams
        spawned from ``numpy.random.SeedSequence(seed)``, so a seed fixes the frame).
    tau: improvability threshold (>= 0) of G_tau(pi_k), recomputed every iteration.
    options: the fields of :class:`CPIConfig`.
    Returns a :class:`CPIResult` (``.frame``: one row per iteration; ``.policy``: final policy).
    """
    if not isinstance(mdp, TabularMDP | TreeMDP):
        raise ValueError(f"mdp: expected a TabularMDP or TreeMDP, got {type(mdp).__name__}")
    _choice("reset", reset, RESET_RULES)
    _choice("mode", mode, MODES)
    tau = check_tau(tau)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    cfg = make_config(reset, mode, options)
    if cfg.policy0 is not None:
        pol = check_policy(mdp, cfg.policy0, "policy0")
    elif mdp.meta.get("initial_policy") is not None:
        pol = check_policy(mdp, mdp.meta["initial_policy"], "meta['initial_policy']")
    else:
        pol = mdp.uniform_policy()
    shape = pol.shape
    A = mdp.n_actions
    H = mdp.horizon
    c_A = advantage_bound(mdp)
    J_star = optimal_value(mdp)
    leaf = mdp.is_leaf if isinstance(mdp, TreeMDP) else None
    rng_reset, rng_select, rng_q = (np.random.default_rng(s)
                                    for s in np.random.SeedSequence(seed).spawn(3))
    rows: list[dict] = []
    cum_q = cum_steps = 0
    stop_reason = "max_iters"
    J = value(mdp, pol)

    for k in range(cfg.max_iters):
        # -- stopping rules checked before spending anything ------------------------------------
        if cfg.target_J is not None and J >= cfg.target_J:
            stop_reason = "target_J"
            break
        if cfg.target_gap is not None and J_star - J <= cfg.target_gap:
            stop_reason = "target_gap"
            break
        if cfg.max_q_rollouts is not None and cum_q >= cfg.max_q_rollouts:
            stop_reason = "max_q_rollouts"
            break
        if cfg.max_env_steps is not None and cum_steps >= cfg.max_env_steps:
            stop_reason = "max_env_steps"
            break

        # -- exact bookkeeping --------------------------------------------------------------------
        V, Q, adv, occ, G, cov, Gf, d = exact_iteration_state(mdp, pol, tau)
        sel = selection(reset, Gf, d, cfg.beta, cfg.gamma, cfg.on_infeasible)
        s = sel.s.copy()
        if mode == "exact" and reset == "none" and cfg.none_exact == "start":
            s = _start_mask(mdp).astype(np.float64)
        if leaf is not None:
            s[leaf] = 0.0
        m_s = float(d @ s)
        pf = pol.reshape(-1, A)
        Qf = Q.reshape(-1, A)
        adv_true_G = weighted_mean(adv.max(axis=1), d * Gf)

        q_used = steps_used = n_cand = n_acc = 0
        precision, recall = sel.precision, sel.recall
        stop_now = None
        if m_s <= 0.0:
            target, w, adv_est = pf, np.zeros_like(s), float("nan")
            stop_now = "empty_update_set"
        elif mode == "exact":
            allowed = pf > 0 if reset == "none" else np.ones_like(pf, dtype=np.bool_)
            target = _exact_target(pf, Qf, s, allowed)
            w = s
            adv_est = weighted_mean(advantage_of(adv, target), d * s)
            if reset == "none":
                precision = _nan_ratio(float(d[Gf] @ s[Gf]), m_s)
                recall = _nan_ratio(float(d[Gf] @ s[Gf]), float(d[Gf].sum()))
        elif reset == "none":
            n = cfg.n_samples
            xs, acts, rtg, steps_used = on_policy_episodes(mdp, pol, n, rng_q)
            if cfg.adv_estimate == "heldout":
                n_tr = (n + 1) // 2
                tr, ho = slice(0, n_tr), slice(n_tr, n)
                hxs, hacts, hrtg = xs[ho], acts[ho], rtg[ho]
            else:
                tr = slice(0, n)
                hxs, hacts, hrtg, st2 = on_policy_episodes(mdp, pol, n, rng_q)
                steps_used += st2
            q_used = xs.shape[0] + (0 if cfg.adv_estimate == "heldout" else hxs.shape[0])
            target = greedy_from_samples(pf, xs[tr], acts[tr], rtg[tr])
            w = np.ones_like(s)
            adv_est = estimate_from_samples("none", pf, target, hxs, hacts, hrtg,
                                            none_step_weight(mdp, d, occ))
            visited = np.concatenate([xs.ravel(), hxs.ravel()] if cfg.adv_estimate == "fresh"
                                     else [xs.ravel()])
            visited = visited[visited >= 0]
            in_G = Gf[visited]
            n_cand = n_acc = int(visited.size)
            precision = float(in_G.mean()) if visited.size else float("nan")
            recall = 1.0 if in_G.any() else float("nan")
        else:
            g = 1 if cfg.estimator == "uniform" else cfg.group_size
            n = cfg.n_samples
            batches = [sample_resets(mdp, pol, n, s, Gf, rng_reset, rng_select,
                                     cfg.max_candidates)]
            if cfg.adv_estimate == "fresh":
                batches.append(sample_resets(mdp, pol, n, s, Gf, rng_reset, rng_select,
                                             cfg.max_candidates))
            states = np.concatenate([b.states for b in batches])
            acts, qs, qsteps = q_rollouts(mdp, pol, states, g, rng_q)
            n_cand = sum(b.n_candidates for b in batches)
            n_acc = int(states.size)
            q_used = int(acts.size)
            steps_used = sum(b.base_steps for b in batches) + qsteps
            acc_G = sum(b.accepted_in_G for b in batches)
            precision = _nan_ratio(acc_G, n_acc)
            recall = _nan_ratio(acc_G, sum(b.candidates_in_G for b in batches))
            n_tr = (batches[0].states.size + 1) // 2 if cfg.adv_estimate == "heldout" \
                else batches[0].states.size
            if n_acc < (2 if cfg.adv_estimate == "heldout" else 2 * n):
                target, w, adv_est = pf, np.zeros_like(s), float("nan")
                stop_now = "no_accepted_states"
            else:
                target = greedy_from_samples(pf, np.repeat(states[:n_tr], g), acts[:n_tr],
                                             qs[:n_tr])
                w = np.ones_like(s)
                adv_est = estimate_from_samples(cfg.estimator, pf, target, states[n_tr:],
                                                acts[n_tr:], qs[n_tr:])

        adv_true = weighted_mean(advantage_of(adv, target), d * s)
        adv_true_d = weighted_mean(advantage_of(adv, target), d)

        # -- step ---------------------------------------------------------------------------------
        if stop_now is None and cfg.eps > 0 and adv_est < 2.0 * cfg.eps / 3.0:
            stop_now = "advantage_below_2eps/3"
        if stop_now is None and mode == "exact" and adv_est <= cfg.adv_tol:
            stop_now = "converged"
        eps_step = cfg.eps if mode == "sampled" else 0.0
        alpha_theory = theory_step(adv_est, H, c_A, eps_step)
        if stop_now is not None:
            alpha = 0.0
        elif cfg.step == "theory":
            alpha = alpha_theory
        elif cfg.step == "constant":
            alpha = cfg.alpha
        else:
            def J_of(a, pf=pf, target=target, w=w):
                return value(mdp, _mix(pf, target, a * w).reshape(shape))
            alpha, _ = line_search(J_of, candidates=(alpha_theory,))
        new = _mix(pf, target, alpha * w).reshape(shape) if alpha > 0 else pol
        J_next = value(mdp, new) if alpha > 0 else J
        cum_q += q_used
        cum_steps += steps_used
        rows.append({
            "iteration": k, "J": J, "J_next": J_next, "improvement": J_next - J,
            "gap": J_star - J, "alpha": alpha, "alpha_theory": alpha_theory,
            "q_rollouts": q_used, "env_steps": steps_used,
            "q_rollouts_cum": cum_q, "env_steps_cum": cum_steps,
            "n_candidates": n_cand, "n_accepted": n_acc,
            "coverage_reach": cov.reach, "coverage_mass": cov.mass, "G_size": int(Gf.sum()),
            "update_mass": m_s, "sel_q": sel.q, "sel_q_requested": sel.q_requested,
            "precision": precision, "recall": recall,
            "adv_est": adv_est, "adv_true": adv_true, "adv_true_d": adv_true_d,
            "adv_true_G": adv_true_G,
            "reset": reset, "mode": mode, "estimator": cfg.estimator, "step": cfg.step,
            "tau": tau, "seed": int(seed), "beta": cfg.beta, "gamma": cfg.gamma,
            "n_samples": cfg.n_samples, "group_size": cfg.group_size,
        })
        pol, J = new, J_next
        if stop_now is not None:
            stop_reason = stop_now
            break

    config = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "policy0"}
    config.update(reset=reset, mode=mode, tau=tau, seed=int(seed))
    return CPIResult(pd.DataFrame(rows, columns=FRAME_COLUMNS), pol, stop_reason, J_star, config)


FRAME_COLUMNS = [
    "iteration", "J", "J_next", "improvement", "gap", "alpha", "alpha_theory",
    "q_rollouts", "env_steps", "q_rollouts_cum", "env_steps_cum", "n_candidates", "n_accepted",
    "coverage_reach", "coverage_mass", "G_size", "update_mass", "sel_q", "sel_q_requested",
    "precision", "recall", "adv_est", "adv_true", "adv_true_d", "adv_true_G",
    "reset", "mode", "estimator", "step", "tau", "seed", "beta", "gamma", "n_samples",
    "group_size",
]
