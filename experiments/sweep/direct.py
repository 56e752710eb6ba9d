"""Sample complexity measured, not computed: the smallest n at which an estimator is accurate.

For an estimator that can be run ``reps`` times at sample size n in one call
(``sampler(n, reps) -> (reps,) estimates``, e.g. :func:`cpi.rollouts.kl_estimates`), the
*direct sample complexity* is the smallest n with

    P(|A_hat_n - A| <= eps |A|) >= 1 - delta,

estimated by running the estimator ``reps`` (>= 200) times at each n tried. Search: start at
``n_start`` (a guess, e.g. half the plug-in value); while the success rate is below 1 - delta
double n, while it is above halve it, until a failing n_lo and a passing n_hi = 2 n_lo bracket
the answer; then bisect until n_hi <= (1 + rel_tol) n_lo. The answer is n_hi (the smallest n seen
to pass), with exact Clopper-Pearson intervals on the success rates at n_hi and n_lo. A search
that reaches ``n_max`` without passing is *censored* ("not reached").

Success rates are noisy (binomial, reps draws), so the found n carries that noise; the sweep
replicates over seeds and reports bootstrap intervals of the fitted slopes on top.

The *plug-in* value, kept as a labelled second column, is the normal-approximation formula
``n = z_{1 - delta/2}^2 s^2 / (eps A)^2`` with s^2 the variance of single terms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import beta as beta_dist
from scipy.stats import norm


def clopper_pearson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for k successes in n trials."""
    a = (1.0 - conf) / 2.0
    lo = 0.0 if k == 0 else float(beta_dist.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta_dist.ppf(1.0 - a, k + 1, n - k))
    return lo, hi


def plug_in_n(term_var: float, a_true: float, eps: float, delta: float) -> float:
    """z_{1-delta/2}^2 s^2 / (eps A)^2 (the normal-approximation sample size)."""
    z = norm.ppf(1.0 - delta / 2.0)
    return float(math.ceil(z**2 * term_var / (eps * a_true) ** 2))


def hoeffding_n(term_bound: float, a_true: float, eps: float, delta: float) -> float:
    """Hoeffding's sample size for a mean of i.i.d. terms in [-B, B] to be within eps |A| of A
    with probability >= 1 - delta: 2 B^2 ln(2 / delta) / (eps A)^2. With the Kakade-Langford
    terms |Y| Q (pi' - pi)(a|x), B = |Y| H R_max: Theorem 1's O~(|Y| H^2 R_max^2 / Delta^2) with
    the constant of a concentration inequality (THEORY.md section 2 writes K&L's |Y|^2 form;
    this one is |Y|^2 H^2 R_max^2). A correct estimator never needs more: a direct n above it
    would be a bug (or binomial noise in the success rate at n close to it)."""
    return float(2.0 * term_bound**2 * math.log(2.0 / delta) / (eps * a_true) ** 2)


@dataclass
class DirectResult:
    """Outcome of :func:`smallest_n`.

    n: the smallest sample size seen to reach the success rate (NaN when censored).
    censored: True when n_max failed (the estimator needs more than n_max samples).
    successes_hi, rate_ci_hi: successes out of ``reps`` at n and their Clopper-Pearson interval.
    n_lo, successes_lo, rate_ci_lo: the largest failing n (0 if even n = 1 passed) and its rate.
    trials: every (n, successes) evaluated, in order. samples_spent: total terms drawn.
    env_steps_spent: Q-rollout steps reported by the sampler.
    """

    n: float
    censored: bool
    reps: int
    successes_hi: int
    rate_ci_hi: tuple[float, float]
    n_lo: int
    successes_lo: int
    rate_ci_lo: tuple[float, float]
    trials: list = field(default_factory=list)
    samples_spent: int = 0
    env_steps_spent: int = 0


def smallest_n(sampler: Callable[[int, int], tuple[np.ndarray, int]], a_true: float, eps: float,
               delta: float, reps: int = 200, n_start: int = 4, n_max: int = 10**6,
               rel_tol: float = 0.1) -> DirectResult:
    """Doubling-then-bisection search for the direct sample complexity (module docstring).

    Args:
        sampler: ``sampler(n, reps) -> (estimates (reps,), env_steps)``.
        a_true: the exact value the estimator targets (non-zero).
        eps: relative accuracy (> 0); delta: failure probability in (0, 1).
        reps: repetitions per n (>= 200 in the sweep).
        n_start: first n tried (>= 1); n_max: give up (censor) above this n.
        rel_tol: stop bisecting once n_hi <= (1 + rel_tol) n_lo.
    """
    if a_true == 0 or not math.isfinite(a_true):
        raise ValueError(f"a_true: expected a finite non-zero target, got {a_true!r}")
    target = 1.0 - delta
    cache: dict[int, int] = {}
    spent = [0, 0]
    trials: list[tuple[int, int]] = []

    def successes(n: int) -> int:
        if n not in cache:
            est, steps = sampler(n, reps)
            cache[n] = int(np.sum(np.abs(est - a_true) <= eps * abs(a_true)))
            spent[0] += n * reps
            spent[1] += int(steps)
            trials.append((n, cache[n]))
        return cache[n]

    def passes(n: int) -> bool:
        return successes(n) >= target * reps

    n = int(min(max(1, n_start), n_max))
    if passes(n):
        hi = n
        lo = 0
        while hi > 1:  # halve until a failure brackets the answer
            m = max(1, hi // 2)
            if passes(m):
                hi = m
                continue
            lo = m
            break
    else:
        lo = n
        hi = None
        while hi is None:
            if lo >= n_max:
                k = successes(lo)
                return DirectResult(math.nan, True, reps, k, clopper_pearson(k, reps), lo, k,
                                    clopper_pearson(k, reps), trials, spent[0], spent[1])
            m = min(2 * lo, n_max)
            if passes(m):
                hi = m
            else:
                lo = m
    while lo > 0 and hi - lo > 1 and hi > (1.0 + rel_tol) * lo:
        m = (lo + hi) // 2
        if passes(m):
            hi = m
        else:
            lo = m
    k_hi = successes(hi)
    k_lo = successes(lo) if lo > 0 else reps
    return DirectResult(float(hi), False, reps, k_hi, clopper_pearson(k_hi, reps), lo, k_lo,
                        clopper_pearson(k_lo, reps) if lo > 0 else (math.nan, math.nan), trials,
                        spent[0], spent[1])
