"""Sample complexity measured, not computed: the smallest n at which an estimator is accurate.

For an estimator that can be run ``reps`` times at sample size n in one call
(``sampler(n, reps) -> (reps,) estimates``, e.g. :func:`cpi.rollouts.kl_estimates`), the
*direct sample complexity* is the smallest n with

    P(|A_hat_n - A| <= tol) >= 1 - delta,

with ``tol = eps |A|`` (relative criterion) or an absolute ``tol`` (Theorem 1's criterion:
``c tau p`` for CPI-RR, ``c tau`` for CPI-CARO),

estimated by running the estimator ``reps`` (>= 200) times at each n tried. Search: start at
``n_start`` (a guess, e.g. half the plug-in value); while the success rate is below 1 - delta
double n, while it is above halve it, until a failing n_lo and a passing n_hi = 2 n_lo bracket
the answer; then bisect until n_hi <= (1 + rel_tol) n_lo. The answer is n_hi (the smallest n seen
to pass), with exact Clopper-Pearson intervals on the success rates at n_hi and n_lo. A search
that reaches ``n_max`` without passing is *censored* ("not reached").

:class:`NestedSampler` makes the search cheap: it keeps ``reps`` independent sample paths and
answers ``sampler(n, reps)`` with the means of their first n terms, drawing further terms (in
chunks) only when n exceeds what was drawn. Each answer is still ``reps`` i.i.d. estimates of
size n, so every success rate is the same binomial estimate as with fresh draws; only the rates
at different n share paths (which makes them move together). The search then costs about the
largest n it tries times ``reps`` terms, instead of the sum over every n tried, and two criteria
searched on the same paths cost one. The n tried are multiples of the chunk (``step``).

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
               rel_tol: float = 0.1, tol: float | None = None, step: int = 1,
               grow: float = 2.0) -> DirectResult:
    """Growth-then-bisection search for the direct sample complexity (module docstring).

    Args:
        sampler: ``sampler(n, reps) -> (estimates (reps,), env_steps)``.
        a_true: the exact value the estimator targets (non-zero).
        eps: relative accuracy (> 0), used when ``tol`` is None; delta: failure probability in
            (0, 1).
        reps: repetitions per n (>= 200 in the sweep).
        n_start: first n tried (>= 1); n_max: give up (censor) above this n.
        rel_tol: stop bisecting once n_hi <= (1 + rel_tol) n_lo.
        tol: absolute accuracy (> 0) instead of ``eps |a_true|`` (Theorem 1's criterion).
        step: every n tried is a multiple of ``step`` (a :class:`NestedSampler`'s chunk).
        grow: factor (> 1) by which n grows while it fails (2: doubling).
    """
    if a_true == 0 or not math.isfinite(a_true):
        raise ValueError(f"a_true: expected a finite non-zero target, got {a_true!r}")
    if tol is None:
        tol = eps * abs(a_true)
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol: expected a number > 0, got {tol!r}")
    if not grow > 1:
        raise ValueError(f"grow: expected a number > 1, got {grow!r}")
    step = max(1, int(step))
    target = 1.0 - delta
    cache: dict[int, int] = {}
    spent = [0, 0]
    trials: list[tuple[int, int]] = []
    k_max = max(1, int(n_max) // step)  # the search runs over k = n / step

    def successes(k: int) -> int:
        if k not in cache:
            n = k * step
            est, steps = sampler(n, reps)
            cache[k] = int(np.sum(np.abs(est - a_true) <= tol))
            spent[0] += n * reps
            spent[1] += int(steps)
            trials.append((n, cache[k]))
        return cache[k]

    def passes(k: int) -> bool:
        return successes(k) >= target * reps

    def result(k_hi: int, k_lo: int, censored: bool) -> DirectResult:
        s_hi = successes(k_hi)
        s_lo = successes(k_lo) if k_lo > 0 else reps
        ci_lo = clopper_pearson(s_lo, reps) if k_lo > 0 else (math.nan, math.nan)
        n = math.nan if censored else float(k_hi * step)
        return DirectResult(n, censored, reps, s_hi, clopper_pearson(s_hi, reps), k_lo * step,
                            s_lo, ci_lo, trials, spent[0], spent[1])

    k = int(min(max(1, int(n_start) // step), k_max))
    if passes(k):
        hi, lo = k, 0
        while hi > 1:  # shrink until a failure brackets the answer
            m = max(1, min(hi - 1, int(hi / grow)))
            if passes(m):
                hi = m
                continue
            lo = m
            break
    else:
        lo, hi = k, None
        while hi is None:
            if lo >= k_max:
                return result(lo, lo, True)
            m = min(max(lo + 1, int(math.ceil(lo * grow))), k_max)
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
    return result(hi, lo, False)


class NestedSampler:
    """``reps`` independent sample paths of an estimator's terms, extended on demand (module doc).

    ``draw(chunk, reps) -> (means (reps,), env_steps)`` draws ``chunk`` fresh terms per path and
    returns their per-path means (e.g. :func:`cpi.rollouts.kl_estimates` with n = chunk);
    calling the sampler with n (a multiple of ``chunk``) returns the means of the first n terms
    of each path. ``drawn`` counts the terms drawn, ``env_steps`` the steps they took.
    """

    def __init__(self, draw: Callable[[int, int], tuple[np.ndarray, int]], reps: int,
                 chunk: int):
        if int(chunk) < 1 or int(reps) < 1:
            raise ValueError(f"chunk, reps: expected ints >= 1, got {chunk!r}, {reps!r}")
        self.draw, self.reps, self.chunk = draw, int(reps), int(chunk)
        self.sums = [np.zeros(self.reps)]  # sums[k]: per-path sum of the first k chunks
        self.drawn = 0
        self.env_steps = 0

    def __call__(self, n: int, reps: int) -> tuple[np.ndarray, int]:
        if reps != self.reps or n % self.chunk or n < 1:
            raise ValueError(f"n, reps: expected a positive multiple of {self.chunk} and "
                             f"{self.reps} paths, got n={n}, reps={reps}")
        k = n // self.chunk
        steps = 0
        while len(self.sums) <= k:
            means, st = self.draw(self.chunk, self.reps)
            self.sums.append(self.sums[-1] + self.chunk * np.asarray(means, float))
            self.drawn += self.chunk * self.reps
            steps += int(st)
        self.env_steps += steps
        return self.sums[k] / n, steps
