"""From Q-rollouts to a greedy policy and a policy-advantage estimate (and their exact values).

Notation: pi = pi_k the current policy, pi' the target (greedy) policy, ``|Y|`` = A actions,
``x`` a flat state (see :mod:`cpi.rollouts`), ``d_s`` the accepted-state distribution of a reset
rule (:mod:`cpi.selectors`). The *policy advantage* of pi' on a rule is

    A_U(pi') = E_{x ~ d_s}[ A^pi(x, pi'(x)) ],   A^pi(x, pi'(x)) = sum_a pi'(a|x) A^pi(x, a),

the conditional advantage on the update set (CPI-RR: d_s = d).

Estimators (each unbiased for A_U(pi') when pi' does not depend on the samples used; the CPI
loop therefore estimates A_U on a held-out half or on fresh samples, see docs/cpi.md):

* ``uniform`` (Kakade-Langford): one Q-rollout per reset state, uniform action ``a_i``,
  ``A_hat = mean_i |Y| Q_i (pi'(a_i|x_i) - pi(a_i|x_i))``. Since ``sum_a (pi' - pi)(a|x) = 0``
  any baseline is allowed but none is available from a single rollout.
* ``group``: g >= 2 Q-rollouts at each reset state (a shared prefix, as GRPO/SRPO), baseline the
  group mean. The group mean contains ``Q_i`` itself, which would shrink the estimate by
  ``(g-1)/g``; the factor ``g/(g-1)`` undoes it, which is the same as a leave-one-out baseline
  (``Q_i - mean_{j != i} Q_j``), so the estimate stays unbiased.
* ``none`` (outcome only): n on-policy episodes from mu with no branching; each visit (x_t, a_t)
  carries the return-to-go ``G_t`` (unbiased for Q(x_t, a_t)); baseline the leave-one-out mean
  return of the other episodes (the group at the start state); importance weight 1/pi(a_t|x_t):
  ``A_hat = mean_episodes mean_t (G_t - b)(pi'(a_t|x_t) - pi(a_t|x_t)) / pi(a_t|x_t)``.
  In a tree with early leaves ``mean_t`` (weight 1/L) is replaced by the weight
  ``E[1/L | x_t] = d(x_t) / occ(x_t)`` (the length L depends on a_t, so 1/L would bias it).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from cpi.evaluation import advantage, improvable_set, occupancy
from cpi.mdp import MDP, TreeMDP, check_policy
from cpi.rollouts import on_policy_episodes, q_rollouts, sample_resets, tables
from cpi.selectors import reset_distribution, selection

ESTIMATORS = ("uniform", "group")


# ---------------------------------------------------------------------------------------------
# Exact quantities
# ---------------------------------------------------------------------------------------------
def advantage_of(adv_flat: np.ndarray, target_flat: np.ndarray) -> np.ndarray:
    """A^pi(x, pi'(x)) = sum_a pi'(a|x) A^pi(x, a) per flat state: (X,)."""
    return np.einsum("xa,xa->x", target_flat, adv_flat)


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    """sum w v / sum w, NaN when the weights vanish."""
    m = float(weights.sum())
    return float(weights @ values) / m if m > 0 else float("nan")


def true_policy_advantage(mdp: MDP, policy, target_policy, reset: str = "random",
                          tau: float = 0.0, beta: float = 0.0, gamma: float = 1.0) -> float:
    """Exact A_U(pi') = E_{x~d_s}[A^pi(x, pi'(x))] for reset rule ``reset`` (see module doc).

    ``none`` uses d (every visited state), like ``random``.
    """
    pol = check_policy(mdp, policy)
    tgt = check_policy(mdp, target_policy, "target_policy")
    A = mdp.n_actions
    adv = advantage(mdp, pol).reshape(-1, A)
    d = reset_distribution(mdp, pol)
    G = improvable_set(mdp, pol, tau).ravel()
    sel = selection(reset, G, d, beta, gamma)
    return weighted_mean(advantage_of(adv, tgt.reshape(-1, A)), d * sel.s)


# ---------------------------------------------------------------------------------------------
# Greedy policy from samples
# ---------------------------------------------------------------------------------------------
def sample_means(states: np.ndarray, actions: np.ndarray, qs: np.ndarray, n_actions: int):
    """Per (state, action) sample means of Q-samples.

    states, actions, qs: flat arrays of equal length (one entry per Q-sample).
    Returns ``(xs, means, counts)``: xs (m,) the distinct sampled states, means and counts
    (m, A) with ``means = -inf`` where an action was never observed.
    """
    xs, inv = np.unique(states, return_inverse=True)
    m = xs.shape[0]
    key = inv * n_actions + actions
    counts = np.bincount(key, minlength=m * n_actions).reshape(m, n_actions)
    sums = np.bincount(key, weights=qs, minlength=m * n_actions).reshape(m, n_actions)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
    return xs, means, counts


def greedy_from_samples(policy_flat: np.ndarray, states, actions, qs) -> np.ndarray:
    """pi': at each sampled state the observed action with the largest sample mean (ties to the
    lowest index); every other state keeps pi. Shapes: policy_flat (X, A); returns (X, A)."""
    X, A = policy_flat.shape
    states = np.asarray(states).ravel()
    if X * A <= 16 * states.size + 65536:  # a dense pass beats sorting the sampled states
        return _greedy_dense(np.ascontiguousarray(policy_flat, dtype=np.float64),
                             np.ascontiguousarray(states, dtype=np.int64),
                             np.ascontiguousarray(np.asarray(actions).ravel(), dtype=np.int64),
                             np.ascontiguousarray(np.asarray(qs, dtype=np.float64).ravel()))
    target = policy_flat.copy()
    keep = states >= 0
    if not keep.any():
        return target
    xs, means, _ = sample_means(states[keep], np.asarray(actions).ravel()[keep],
                                np.asarray(qs, dtype=np.float64).ravel()[keep], A)
    target[xs] = 0.0
    target[xs, np.argmax(means, axis=1)] = 1.0
    return target


@nb.njit(cache=True)
def _greedy_dense(policy_flat, states, actions, qs):  # pragma: no cover - compiled
    """:func:`greedy_from_samples` with per-(state, action) sums in an (X, A) table: the same
    sums (added in sample order, as ``np.bincount``), means and ``np.argmax`` choice (first
    maximum; a NaN mean wins as in numpy)."""
    X, A = policy_flat.shape
    sums = np.zeros((X, A))
    counts = np.zeros((X, A), dtype=np.int64)
    seen = np.zeros(X, dtype=np.bool_)
    for i in range(states.shape[0]):
        x = states[i]
        if x < 0:
            continue
        sums[x, actions[i]] += qs[i]
        counts[x, actions[i]] += 1
        seen[x] = True
    target = policy_flat.copy()
    for x in range(X):
        if not seen[x]:
            continue
        best = 0
        best_m = sums[x, 0] / counts[x, 0] if counts[x, 0] > 0 else -np.inf
        for a in range(1, A):
            if np.isnan(best_m):
                break
            m = sums[x, a] / counts[x, a] if counts[x, a] > 0 else -np.inf
            if np.isnan(m) or m > best_m:
                best, best_m = a, m
        for a in range(A):
            target[x, a] = 0.0
        target[x, best] = 1.0
    return target


# ---------------------------------------------------------------------------------------------
# Advantage estimators (pure functions of samples)
# ---------------------------------------------------------------------------------------------
def _delta(policy_flat, target_flat, xs, acts):
    return target_flat[xs, acts] - policy_flat[xs, acts]


def uniform_advantage(policy_flat, target_flat, states, actions, qs) -> float:
    """K&L estimator: mean_i |Y| Q_i (pi'(a_i|x_i) - pi(a_i|x_i)); shapes (n,) or (n, 1)."""
    A = policy_flat.shape[1]
    xs = np.asarray(states).ravel()
    acts = np.asarray(actions)[:, 0] if np.ndim(actions) == 2 else np.asarray(actions)
    q = np.asarray(qs)[:, 0] if np.ndim(qs) == 2 else np.asarray(qs)
    return float(np.mean(A * q * _delta(policy_flat, target_flat, xs, acts)))


def group_advantage(policy_flat, target_flat, states, actions, qs) -> float:
    """Group estimator: states (n,), actions and qs (n, g) with g >= 2; leave-one-out baseline
    (= group-mean baseline times g/(g-1)); mean over states of the per-group mean."""
    A = policy_flat.shape[1]
    qs = np.asarray(qs, dtype=np.float64)
    g = qs.shape[1]
    loo = (qs.sum(axis=1, keepdims=True) - qs) / (g - 1)
    xs = np.repeat(np.asarray(states), g).reshape(-1, g)
    delta = target_flat[xs, actions] - policy_flat[xs, actions]
    return float(np.mean(A * (qs - loo) * delta))


def none_step_weight(mdp: MDP, d: np.ndarray, occ: np.ndarray) -> np.ndarray | None:
    """Per-state step weight ``c(x) = E[1/L | x visited] = d(x) / occ(x)`` for the outcome-only
    estimator on a tree with early leaves (L = episode length); ``None`` (weight 1/L = 1/H)
    when every episode has length H (tabular MDPs, trees with all leaves at the horizon)."""
    if not isinstance(mdp, TreeMDP) or tables(mdp).full_depth:
        return None
    occ = np.asarray(occ, dtype=np.float64).ravel()
    return np.where(occ > 0, np.asarray(d, dtype=np.float64) / np.where(occ > 0, occ, 1.0), 0.0)


def none_advantage(policy_flat, target_flat, states, actions, rtg, step_weight=None) -> float:
    """Outcome-only estimator from on-policy episodes: states, actions, rtg (n, H), padding -1.

    Baseline: leave-one-out mean of the other episodes' returns ``rtg[:, 0]`` (needs n >= 2).
    Each episode contributes the mean over its own L steps, so states follow the reset
    distribution d. In a tree with early leaves the per-episode weight 1/L is correlated with
    the action taken (a short branch weighs more), which biases the estimate (as GRPO's length
    normalisation does); pass ``step_weight`` (X,) = :func:`none_step_weight` to weight step t
    by ``E[1/L | x_t]`` instead, which is unbiased for E_d[A(x, pi'(x))].
    """
    rtg = np.asarray(rtg, dtype=np.float64)
    n = rtg.shape[0]
    ret = rtg[:, 0]
    b = (ret.sum() - ret) / (n - 1)
    valid = states >= 0
    xs = np.where(valid, states, 0)
    acts = np.where(valid, actions, 0)
    pi = policy_flat[xs, acts]
    w = np.where(valid, (target_flat[xs, acts] - pi) / np.where(valid, pi, 1.0), 0.0)
    if step_weight is None:
        per_ep = ((rtg - b[:, None]) * w).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
    else:
        per_ep = ((rtg - b[:, None]) * w * np.asarray(step_weight)[xs]).sum(axis=1)
    return float(per_ep.mean())


def estimate_from_samples(estimator: str, policy_flat, target_flat, states, actions, qs,
                          step_weight=None) -> float:
    """Dispatch: ``uniform`` / ``group`` on Q-rollouts, ``none`` on episodes (``step_weight``:
    see :func:`none_advantage`)."""
    if estimator == "uniform":
        return uniform_advantage(policy_flat, target_flat, states, actions, qs)
    if estimator == "group":
        return group_advantage(policy_flat, target_flat, states, actions, qs)
    if estimator == "none":
        return none_advantage(policy_flat, target_flat, states, actions, qs, step_weight)
    raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {estimator!r}")


# ---------------------------------------------------------------------------------------------
# One-call estimate (used by the sweep)
# ---------------------------------------------------------------------------------------------
def estimate_policy_advantage(mdp: MDP, policy, target_policy, reset: str, n: int,
                              rng: np.random.Generator, tau: float = 0.0,
                              G: np.ndarray | None = None, estimator: str = "uniform",
                              group_size: int = 4, beta: float = 0.0, gamma: float = 1.0,
                              rng_select: np.random.Generator | None = None,
                              max_candidates: int = 10**9) -> tuple[float, int, int]:
    """Estimate A_U(pi') of a GIVEN ``target_policy`` from fresh samples under ``reset``.

    ``n`` is the number of accepted reset states (``none``: on-policy episodes, n >= 2). Each
    accepted state gets one Q-rollout (``uniform``) or ``group_size`` (``group``). ``G`` (the
    improvable-set mask, shaped like :func:`cpi.improvable_set`) defaults to ``G_tau(policy)``.
    Returns ``(estimate, q_rollouts, env_steps)``; env_steps counts the base rollouts to every
    candidate (accepted or rejected) plus the Q-rollouts. NaN estimate when nothing is accepted.
    """
    pol = check_policy(mdp, policy)
    tgt = check_policy(mdp, target_policy, "target_policy")
    A = mdp.n_actions
    pf, tf = pol.reshape(-1, A), tgt.reshape(-1, A)
    if reset == "none":
        if n < 2:
            raise ValueError(f"n: expected >= 2 episodes for reset='none', got {n}")
        xs, acts, rtg, steps = on_policy_episodes(mdp, pol, n, rng)
        occ = occupancy(mdp, pol)
        cw = none_step_weight(mdp, reset_distribution(mdp, pol, occ), occ)
        return none_advantage(pf, tf, xs, acts, rtg, cw), n, steps
    G = improvable_set(mdp, pol, tau) if G is None else np.asarray(G, dtype=np.bool_)
    d = reset_distribution(mdp, pol)
    sel = selection(reset, G, d, beta, gamma)
    s = sel.s.copy()
    if isinstance(mdp, TreeMDP):
        s[mdp.is_leaf] = 0.0
    g = 1 if estimator == "uniform" else int(group_size)
    if estimator == "group" and g < 2:
        raise ValueError(f"group_size: expected >= 2 for the group estimator, got {group_size}")
    if float(d @ s) <= 0.0:
        return float("nan"), 0, 0
    batch = sample_resets(mdp, pol, n, s, G, rng, rng if rng_select is None else rng_select,
                          max_candidates)
    if batch.states.size == 0:
        return float("nan"), 0, batch.base_steps
    acts, qs, qsteps = q_rollouts(mdp, pol, batch.states, g, rng)
    est = estimate_from_samples(estimator, pf, tf, batch.states, acts, qs)
    return est, int(acts.size), batch.base_steps + qsteps
