"""Estimates with intervals for the comparison: proportions, seeds, speed-ups, coverage.

* Proportions (pass@k, clean share, precision, recall) get a Wilson 95% score interval, with
  ``successes = sum(weight * outcome)`` and ``trials = sum(weight)`` so that aggregated simulation
  rows (one row standing for ``weight`` resets) and per-parent LLM rows use one formula.
* Means and ratios over seeds get a percentile bootstrap over seeds (the seed is the replicate).
* Speed-ups: "samples to reach the comparator's final score" (paper: steps on LiveCodeBench).
* The language model's coverage p, precision 1 - beta and recall gamma (docs/compare.md).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

Z95 = 1.959963984540054
N_BOOT = 1000

#: deviation buckets of the paper's figure: <= -4, -3 .. +3, >= +4
DEVIATION_BUCKETS = ("≤-4", "-3", "-2", "-1", "0", "+1", "+2", "+3", "≥+4")


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval (``n``: trials, seeds or rows behind it)."""

    value: float
    lo: float
    hi: float
    n: float = math.nan

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.value))

    def fmt(self, pct: bool = False, digits: int = 2, suffix: str = "") -> str:
        """``'28.7% [25.1, 32.6]'`` (pct) or ``'2.41x [1.90, 3.02]'`` (suffix='x')."""
        if not self.finite:
            return "n/a"
        scale, unit = (100.0, "%") if pct else (1.0, suffix)
        d = 1 if pct else digits
        v, lo, hi = (x * scale for x in (self.value, self.lo, self.hi))
        if np.isfinite(lo) and np.isfinite(hi):
            return f"{v:.{d}f}{unit} [{lo:.{d}f}, {hi:.{d}f}]"
        return f"{v:.{d}f}{unit}"


NAN_ESTIMATE = Estimate(math.nan, math.nan, math.nan, 0.0)


def wilson(successes: float, trials: float, z: float = Z95) -> Estimate:
    """Wilson score interval of a proportion (NaN estimate when ``trials == 0``)."""
    if trials <= 0:
        return NAN_ESTIMATE
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(max(p * (1 - p) / trials + z * z / (4 * trials * trials), 0.0)) / denom
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), trials)


def weighted_proportion(outcome: pd.Series, weight: pd.Series | None = None) -> Estimate:
    """Wilson interval of ``sum(w * outcome) / sum(w)`` over the rows with a known outcome."""
    y = pd.to_numeric(outcome, errors="coerce").astype(float)
    w = pd.Series(1.0, index=y.index) if weight is None else weight.astype(float)
    ok = y.notna() & w.notna()
    return wilson(float((y[ok] * w[ok]).sum()), float(w[ok].sum()))


def deviation_bucket(deviation: pd.Series) -> pd.Series:
    """Bucket label of each deviation (NaN stays NaN); buckets as in the paper's figure."""
    d = pd.to_numeric(deviation, errors="coerce")
    clipped = d.clip(-4, 4).round()
    labels = {-4: "≤-4", -3: "-3", -2: "-2", -1: "-1", 0: "0", 1: "+1", 2: "+2", 3: "+3",
              4: "≥+4"}
    return clipped.map(lambda v: labels.get(int(v)) if np.isfinite(v) else np.nan)


def ratio_of_sums(num: np.ndarray, den: np.ndarray, n_boot: int = N_BOOT,
                  seed: int = 0) -> Estimate:
    """``sum(num) / sum(den)`` with a percentile bootstrap over the units (entries) of the arrays.

    The unit is whatever one entry stands for: a seed (per-seed sums), or one row.
    """
    num = np.asarray(num, float)
    den = np.asarray(den, float)
    ok = np.isfinite(num) & np.isfinite(den)
    num, den = num[ok], den[ok]
    if len(num) == 0 or den.sum() == 0:
        return NAN_ESTIMATE
    value = float(num.sum() / den.sum())
    if len(num) < 2:
        return Estimate(value, math.nan, math.nan, float(len(num)))
    idx = np.random.default_rng(seed).integers(0, len(num), size=(n_boot, len(num)))
    with np.errstate(divide="ignore", invalid="ignore"):
        boots = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    boots = boots[np.isfinite(boots)]
    return Estimate(value, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)),
                    float(len(num)))


# ------------------------------------------------------------------------------ learning curves
def seed_tables(curves: pd.DataFrame, x: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(seed x iteration) tables of ``x`` and of the score, a stopped run carried forward.

    A run that stopped early (e.g. converged CPI) keeps its last score and spends nothing more,
    so its last values are carried forward; seed means then always average every seed.
    """
    tx = curves.pivot_table(index="seed", columns="iteration", values=x).ffill(axis=1)
    ty = curves.pivot_table(index="seed", columns="iteration", values="score").ffill(axis=1)
    return tx, ty


def mean_curve(curves: pd.DataFrame, x: str) -> pd.DataFrame:
    """Mean over seeds per iteration: columns iteration, x (mean of ``x``), score."""
    tx, ty = seed_tables(curves, x)
    return pd.DataFrame({"iteration": tx.columns, x: tx.mean(axis=0).to_numpy(),
                         "score": ty.mean(axis=0).to_numpy()})


def first_reach(xs: np.ndarray, ys: np.ndarray, target: float) -> float:
    """Smallest x at which the piecewise-linear curve (xs, ys) reaches ``target`` (NaN: never)."""
    xs = np.asarray(xs, float)
    ys = np.asarray(ys, float)
    above = np.nonzero(ys >= target - 1e-12)[0]
    if len(above) == 0:
        return math.nan
    i = int(above[0])
    if i == 0:
        return float(xs[0])
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0)) if y1 > y0 else float(x1)


def _speedup_from_means(xa, ya, xb, yb) -> float:
    ok_b = np.isfinite(yb) & np.isfinite(xb)
    ok_a = np.isfinite(ya) & np.isfinite(xa)
    if not ok_a.any() or not ok_b.any():
        return math.nan
    target = float(yb[ok_b][-1])
    x_comp = first_reach(xb[ok_b], yb[ok_b], target)
    x_meth = first_reach(xa[ok_a], ya[ok_a], target)
    if not (np.isfinite(x_comp) and np.isfinite(x_meth)) or x_meth <= 0:
        return math.nan
    return x_comp / x_meth


def speedup_point(curves: pd.DataFrame, method: str, comparator: str, x: str) -> float:
    """Samples (``x``) the comparator needs to reach its final score over those ``method`` needs.

    Curves are seed means per iteration. The comparator's cost is the first x at which its own
    mean curve reaches its final value; > 1 means ``method`` is faster. NaN if ``method`` never
    reaches it (or either curve is absent).
    """
    a = curves[curves["method"] == method]
    b = curves[curves["method"] == comparator]
    if a.empty or b.empty:
        return math.nan
    ma, mb = mean_curve(a, x), mean_curve(b, x)
    return _speedup_from_means(ma[x].to_numpy(float), ma["score"].to_numpy(float),
                               mb[x].to_numpy(float), mb["score"].to_numpy(float))


def speedup_draws(curves: pd.DataFrame, method: str, comparator: str, x: str,
                  n_boot: int = 400, seed: int = 0) -> tuple[float, np.ndarray, int]:
    """:func:`speedup_point` and its bootstrap-over-seeds draws (seeds paired across methods).

    Returns ``(value, draws, n_seeds)``; ``draws`` holds NaN where the method never reaches the
    target in that resample, and is empty with fewer than 2 shared seeds.
    """
    value = speedup_point(curves, method, comparator, x)
    tables = []
    for m in (method, comparator):
        sub = curves[curves["method"] == m]
        if sub.empty:
            return math.nan, np.array([]), 0
        tables.append(seed_tables(sub, x))
    seeds = tables[0][1].index.intersection(tables[1][1].index)
    if len(seeds) < 2:
        return value, np.array([]), len(seeds)
    arrs = [(tx.loc[seeds].to_numpy(float), ty.loc[seeds].to_numpy(float)) for tx, ty in tables]
    rng = np.random.default_rng(seed)
    boots = []
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(n_boot):
            pick = rng.integers(0, len(seeds), len(seeds))
            (xa, ya), (xb, yb) = ((np.nanmean(tx[pick], axis=0), np.nanmean(ty[pick], axis=0))
                                  for tx, ty in arrs)
            boots.append(_speedup_from_means(xa, ya, xb, yb))
    return value, np.asarray(boots, float), len(seeds)


def speedup_from_draws(value: float, boots: np.ndarray, n_seeds: int) -> Estimate:
    """The :func:`speedup` estimate from :func:`speedup_draws` output."""
    if len(boots) == 0:
        return Estimate(value, math.nan, math.nan, float(n_seeds))
    reached = np.isfinite(boots)
    if reached.mean() < 0.5:
        return Estimate(value, math.nan, math.nan, float(n_seeds))
    # resamples where the method never reaches the target count as the slowest outcome
    boots = np.where(reached, boots, 0.0)
    return Estimate(value, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)),
                    float(n_seeds))


def speedup(curves: pd.DataFrame, method: str, comparator: str, x: str,
            n_boot: int = 400, seed: int = 0) -> Estimate:
    """:func:`speedup_point` with a bootstrap-over-seeds interval (seeds paired across methods)."""
    return speedup_from_draws(*speedup_draws(curves, method, comparator, x, n_boot, seed))


def loglog_slope(xs, values, draws=None) -> Estimate:
    """Least-squares slope of log(value) vs log(x) across settings, with an interval from the
    settings' bootstrap draws (one independent resample per setting, combined draw by draw).

    Args:
        xs: (S,) positive x per setting.
        values: (S,) point values (the slope of these is the estimate).
        draws: (S, B) bootstrap draws per setting (NaN or <= 0: not usable); None: no interval.

    Returns an :class:`Estimate` whose ``n`` is the share of usable draws (every setting finite
    and > 0); no interval when fewer than half are usable.
    """
    lx = np.log(np.asarray(xs, float))
    vals = np.asarray(values, float)

    def fit(v):
        ok = np.isfinite(v) & (v > 0)
        if ok.sum() < 2 or np.ptp(lx[ok]) == 0:
            return math.nan
        return float(np.polyfit(lx[ok], np.log(v[ok]), 1)[0])

    est = fit(vals) if (np.isfinite(vals) & (vals > 0)).all() else math.nan
    if draws is None:
        return Estimate(est, math.nan, math.nan)
    d = np.asarray(draws, float)
    usable = (np.isfinite(d) & (d > 0)).all(axis=0)
    if d.size == 0 or usable.mean() < 0.5:
        return Estimate(est, math.nan, math.nan, float(usable.mean()) if d.size else 0.0)
    slopes = np.array([np.polyfit(lx, np.log(d[:, b]), 1)[0] for b in np.flatnonzero(usable)])
    return Estimate(est, float(np.percentile(slopes, 2.5)), float(np.percentile(slopes, 97.5)),
                    float(usable.mean()))


# ------------------------------------------------------------------ localizer vs improvable set
@dataclass(frozen=True)
class SelectorQuality:
    """The LLM localizer's place on the phase map (docs/compare.md, "Coverage and selector").

    coverage: p = sum_i f_i / sum_i n_i over failed parents with a known first error f_i
        (the share of a failed chain's reset positions k = 1..n that lie at or before the first
        error, i.e. in G); it is also the clean rate a uniform random reset would have.
    precision: 1 - beta = P(clean | the localizer's own answer chose k).
    recall: gamma = P(the localizer answers by itself, without a fallback | the parent has G).
    product: (1 - beta) * gamma; the selector beats random resets when product > coverage.
    margin: product - coverage (> 0: the side where resets beat random ones).
    """

    method: str
    coverage: Estimate
    precision: Estimate
    recall: Estimate
    product: Estimate
    margin: Estimate
    n_parents: int


def selector_quality(resets: pd.DataFrame, method: str, n_boot: int = N_BOOT,
                     seed: int = 0) -> SelectorQuality:
    """Coverage p, precision, recall and their product for one LLM localizer (see the class).

    Intervals: Wilson for precision and recall; a bootstrap over failed parents (the unit:
    thousands of parents, a handful of seeds) for p, the product and the margin.
    """
    rows = resets[(resets["method"] == method) & resets["first_error"].notna()
                  & resets["n"].notna() & (resets["n"] > 0)]
    if rows.empty:
        return SelectorQuality(method, NAN_ESTIMATE, NAN_ESTIMATE, NAN_ESTIMATE, NAN_ESTIMATE,
                               NAN_ESTIMATE, 0)
    n = rows["n"].to_numpy(float)
    g = np.minimum(rows["first_error"].to_numpy(float), n)   # reset positions k <= f: in G
    own = ~rows["from_fallback"].astype(bool).to_numpy()
    hit = (own & rows["clean"].astype(bool).to_numpy()).astype(float)
    precision = wilson(float(hit.sum()), float(own.sum()))
    recall = wilson(float(own.sum()), float(len(rows)))
    coverage = ratio_of_sums(g, n, n_boot, seed)
    product = ratio_of_sums(hit, np.ones_like(hit), n_boot, seed)
    idx = np.random.default_rng(seed).integers(0, len(n), size=(n_boot, len(n)))
    margins = hit[idx].mean(axis=1) - g[idx].sum(axis=1) / n[idx].sum(axis=1)
    margin = Estimate(product.value - coverage.value, float(np.percentile(margins, 2.5)),
                      float(np.percentile(margins, 97.5)), float(len(n)))
    return SelectorQuality(method, coverage, precision, recall, product, margin, len(rows))
