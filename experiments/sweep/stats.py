"""Fits with uncertainty: log-log slopes and ratios, with percentile bootstrap over seeds.

The replicate is the seed: a bootstrap sample draws seeds with replacement (the same seeds for
every x value and for numerator and denominator, because within a seed the methods share the
environment instance), recomputes the per-x means and refits. Intervals are percentile intervals
of the refitted statistic. Every fitted law is reported as a :func:`fit_record`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

N_BOOT = 2000


def fit_record(estimate: float, ci: tuple[float, float], theory: float | None, n_points: int,
               **extra) -> dict:
    """The summary.json form of a fitted law: estimate, 95% CI, theory value, points used."""
    def clean(v):
        return None if v is None or not np.isfinite(v) else float(v)
    return {"estimate": clean(estimate), "ci": [clean(ci[0]), clean(ci[1])],
            "theory": None if theory is None else float(theory), "n_points": int(n_points), **extra}


def loglog_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and intercept of log y on log x over the points with x, y > 0."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return math.nan, math.nan
    slope, intercept = np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)
    return float(slope), float(intercept)


def linear_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return math.nan, math.nan
    slope, intercept = np.polyfit(x[ok], y[ok], 1)
    return float(slope), float(intercept)


def seed_table(df: pd.DataFrame, x: str, value: str, seed: str = "seed") -> pd.DataFrame:
    """Pivot to a (seed x x-value) table of ``value`` (mean over duplicate rows)."""
    return df.pivot_table(index=seed, columns=x, values=value, aggfunc="mean").sort_index(axis=1)


def _boot_indices(n_seeds: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n_seeds, size=(n_boot, n_seeds))


def bootstrap_slope(num: pd.DataFrame, den: pd.DataFrame | None = None, *, theory: float | None,
                    log: bool = True, n_boot: int = N_BOOT, seed: int = 0, x=None,
                    **extra) -> dict:
    """Slope of (mean num / mean den) against the column values, bootstrapped over seeds.

    Args:
        num: (seed x x-value) table; ``den`` the same shape (paired by seed), or ``None`` for a
            plain mean curve.
        log: fit log-log (power law); otherwise a straight line.
        x: the abscissa of each column (default: the column labels), e.g. a realised coverage
            when the columns are the configured one.
    """
    if den is not None:
        common = num.index.intersection(den.index)
        num, den = num.loc[common], den.loc[common.values][num.columns]
    x = np.asarray(num.columns if x is None else x, float)
    N = num.to_numpy(float)
    D = None if den is None else den.to_numpy(float)
    fit = loglog_slope if log else linear_slope

    def curve(rows: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.nanmean(N[rows], axis=0)
            if D is not None:
                y = y / np.nanmean(D[rows], axis=0)
        return y

    all_rows = np.arange(N.shape[0])
    y_hat = curve(all_rows)
    est = fit(x, y_hat)[0]
    rng = np.random.default_rng(seed)
    boots = np.array([fit(x, curve(r))[0] for r in _boot_indices(N.shape[0], n_boot, rng)])
    boots = boots[np.isfinite(boots)]
    ci = (np.percentile(boots, 2.5), np.percentile(boots, 97.5)) if len(boots) else (math.nan,) * 2
    n_points = int(np.sum(np.isfinite(y_hat) & ((y_hat > 0) if log else True)))
    return fit_record(est, ci, theory, n_points, n_seeds=int(N.shape[0]), **extra)


def bootstrap_mean(values: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-seed ``values`` and its 95% percentile-bootstrap interval."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[_boot_indices(len(v), n_boot, rng)].mean(axis=1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def curve_with_ci(num: pd.DataFrame, den: pd.DataFrame | None = None, n_boot: int = N_BOOT,
                  seed: int = 0, x=None) -> pd.DataFrame:
    """Per-x mean (or ratio of means) with 95% bootstrap-over-seeds band: columns x, y, lo, hi."""
    if den is not None:
        common = num.index.intersection(den.index)
        num, den = num.loc[common], den.loc[common][num.columns]
    N = num.to_numpy(float)
    D = None if den is None else den.to_numpy(float)
    rng = np.random.default_rng(seed)
    idx = _boot_indices(N.shape[0], n_boot, rng)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.nanmean(N, axis=0)
        bn = np.nanmean(N[idx], axis=1)
        if D is not None:
            y = y / np.nanmean(D, axis=0)
            bn = bn / np.nanmean(D[idx], axis=1)
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo = np.nanpercentile(bn, 2.5, axis=0)
            hi = np.nanpercentile(bn, 97.5, axis=0)
    xs = np.asarray(num.columns if x is None else x, float)
    return pd.DataFrame({"x": xs, "y": y, "lo": lo, "hi": hi})


def format_fit(rec: dict, digits: int = 2) -> str:
    """'-1.93 [-2.10, -1.75]' for legends and reports."""
    def f(v):
        return "nan" if v is None else f"{v:.{digits}f}"
    return f"{f(rec['estimate'])} [{f(rec['ci'][0])}, {f(rec['ci'][1])}]"
