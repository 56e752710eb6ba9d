"""Fits with uncertainty: log-log slopes and ratios, with percentile bootstrap over seeds.

The replicate is the seed: a bootstrap sample draws seeds with replacement (the same seeds for
every x value and for numerator and denominator, because within a seed the methods share the
environment instance), recomputes the per-x means and refits. Intervals are percentile intervals
of the refitted statistic. Every fitted law is reported as a :func:`fit_record`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

N_BOOT = 2000


def fit_record(estimate: float, ci: tuple[float, float], theory: float | None, n_points: int,
               **extra) -> dict:
    """The summary.json form of a fitted law: estimate, 95% CI, theory value, points used."""
    def clean(v):
        return None if v is None or not np.isfinite(v) else float(v)
    return {"estimate": clean(estimate), "ci": [clean(ci[0]), clean(ci[1])],
            "theory": None if theory is None else round(float(theory), 10) + 0.0,  # no -0.0
            "n_points": int(n_points), **extra}


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


def _rowwise_slopes(x: np.ndarray, Y: np.ndarray, log: bool) -> np.ndarray:
    """Least-squares slope of each row of Y (n_boot, n_x) against x, over the usable points of
    that row (finite; positive x and y for a log-log fit); NaN where fewer than 2 remain.
    Same fit as :func:`loglog_slope` / :func:`linear_slope`, vectorised over rows."""
    X = np.broadcast_to(np.asarray(x, float), Y.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.isfinite(X) & np.isfinite(Y)
        if log:
            ok &= (X > 0) & (Y > 0)
            X = np.where(ok, np.log(np.where(ok, X, 1.0)), 0.0)
            Y = np.where(ok, np.log(np.where(ok, Y, 1.0)), 0.0)
        else:
            X, Y = np.where(ok, X, 0.0), np.where(ok, Y, 0.0)
        n = ok.sum(axis=1)
        mx = X.sum(axis=1) / np.maximum(n, 1)
        my = Y.sum(axis=1) / np.maximum(n, 1)
        dx = np.where(ok, X - mx[:, None], 0.0)
        dy = np.where(ok, Y - my[:, None], 0.0)
        sxx = (dx * dx).sum(axis=1)
        out = (dx * dy).sum(axis=1) / sxx
    out[(n < 2) | (sxx <= 0)] = np.nan
    return out


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
    idx = _boot_indices(N.shape[0], n_boot, rng)  # (n_boot, n_seeds)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yb = np.nanmean(N[idx], axis=1)  # (n_boot, n_x)
        if D is not None:
            yb = yb / np.nanmean(D[idx], axis=1)
    boots = _rowwise_slopes(x, yb, log)
    boots = boots[np.isfinite(boots)]
    ci = (np.percentile(boots, 2.5), np.percentile(boots, 97.5)) if len(boots) else (math.nan,) * 2
    n_points = int(np.sum(np.isfinite(y_hat) & ((y_hat > 0) if log else True)))
    xs_ok = x[np.isfinite(y_hat) & np.isfinite(x)]
    extra.setdefault("x_range", [float(xs_ok.min()), float(xs_ok.max())] if len(xs_ok) else None)
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
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo = np.nanpercentile(bn, 2.5, axis=0)
        hi = np.nanpercentile(bn, 97.5, axis=0)
    xs = np.asarray(num.columns if x is None else x, float)
    return pd.DataFrame({"x": xs, "y": y, "lo": lo, "hi": hi})


def format_fit(rec: dict, digits: int = 2) -> str:
    """'-1.93 [-2.10, -1.75]' for legends and reports ('not reached' where there is no value)."""
    def f(v):
        return "not reached" if v is None or (isinstance(v, float) and not np.isfinite(v)) \
            else f"{v:.{digits}f}"
    est = f(rec.get("estimate"))
    ci = rec.get("ci") or [None, None]
    if ci[0] is None and ci[1] is None:
        return est
    return f"{est} [{f(ci[0])}, {f(ci[1])}]"


# ------------------------------------------------------------------------------------ verdicts
#: What a record can say, by ``kind`` (paper_repro.md's verdict categories).
KIND_LABEL = {
    "tested": "tested (could have failed)",
    "identity": "identity of the environment (checks the code only)",
    "determined": "determined by the construction's knob (computable from the exact signal "
                  "before sampling; the sample checks the computation)",
    "measurement": "measurement (no theory value to test)",
    "not tested": "not tested",
}


def label(fits: dict, labels: dict) -> dict:
    """Add verdict fields (``kind``, ``relation``, ``fraction``, ``paper``, ``theory``...) to
    existing records: ``labels`` maps a key (or a key prefix ending in ``*``) to the fields."""
    for key, fields in labels.items():
        keys = [k for k in fits if k.startswith(key[:-1])] if key.endswith("*") else [key]
        for k in keys:
            if k in fits and isinstance(fits[k], dict):
                fits[k].update(fields)
    return fits


#: What a record's ``theory`` value *is* (field ``claim``); it decides the verdict's words, so
#: that "the theorem's bound is violated" is never confused with "the predicted scaling does not
#: appear". Theorem 1's table gives UPPER bounds on Q-rollouts (O~) and LOWER bounds on the
#: improvement (Omega); THEORY.md section 5 turns them into slope predictions (P2's -2, P3's -1,
#: P6's boundary), which are tightness claims, not bounds.
#:
#: * ``"bound"`` -- theory is a bound with its constants (or a guarantee such as P4), compared
#:   cell by cell: missing it means the bound is violated.
#: * ``"bound_slope"`` -- theory is the log-log slope of one of Theorem 1's bounds, evaluated on
#:   the instances measured. Fields: ``bound`` (``"upper"``: on a cost; ``"lower"``: on an
#:   improvement) and ``regime`` (``"small"``: the knob's interesting end is x -> 0, as for p and
#:   tau; ``"large"``: x grows, as for H, |Y|, R_max). A bound whose constant is free fixes no
#:   slope: a measured slope on the bound's side (cost growing no faster towards the regime,
#:   improvement shrinking no faster) respects it and only says the bound is not tight here; a
#:   slope beyond it means measured / bound drifts across the range, which is not a violation
#:   by itself (compare the bounds with constants).
#: * ``"prediction"`` -- theory is a prediction derived from the bounds (a ratio of two bounds, a
#:   comparison of two lower bounds, a composed rate): missing it says the prediction (tightness)
#:   fails on this instance, never that Theorem 1 does.
#: * ``"reference"`` -- theory is a bound whose constant the measured algorithm does not
#:   promise (the exact-advantage K&L constant on *sampled* runs, whose guarantee is the
#:   sampled one, (A_hat - eps/3)^2 / (8 H R_max)): a labelled reference column; falling below it
#:   is reported as such, never as "bound violated".
#: * absent -- an identity or exact equality: "holds" / "does not hold".
CLAIMS = ("bound", "bound_slope", "prediction", "reference")


def agrees(rec: dict) -> bool | None:
    """Does the estimate agree with the theory value? ``None`` when there is nothing to compare.

    ``relation`` (default ``"equal"``): ``"equal"`` -- the 95% interval contains the theory value
    or the estimate is within max(0.15, 10% of |theory|) of it; ``"at_least"`` / ``"at_most"`` --
    the estimate is on the right side of it (with that tolerance).
    """
    est, th = rec.get("estimate"), rec.get("theory")
    if est is None or th is None:
        return None
    tol = max(0.15, 0.1 * abs(th))
    rel = rec.get("relation", "equal")
    if rel == "at_least":
        return est >= th - 1e-9
    if rel == "at_most":
        return est <= th + 1e-9
    if rec.get("fraction"):  # fractions of cells: exact claim, no tolerance
        return abs(est - th) <= 1e-12
    lo, hi = (rec.get("ci") or [None, None])[:2]
    inside = lo is not None and hi is not None and lo <= th <= hi
    return bool(inside or abs(est - th) <= tol)


def bound_side(rec: dict) -> str | None:
    """For a ``bound_slope`` record: ``"tight"`` (the measured slope agrees with the bound's),
    ``"respected"`` (on the bound's side: the bound holds in scaling but is not tight here) or
    ``"beyond"`` (measured / bound drifts across the range towards the regime); ``None`` when
    there is nothing to compare."""
    ok = agrees({k: v for k, v in rec.items() if k != "relation"})
    if ok is None:
        return None
    if ok:
        return "tight"
    gap = rec["estimate"] - rec["theory"]
    # An upper bound on a cost is respected when the cost grows no faster towards the regime:
    # x -> 0 (regime small) needs a slope >= the bound's; x -> infinity needs <=. A lower bound
    # on an improvement is the mirror image.
    respected = gap > 0 if rec.get("regime", "small") == "small" else gap < 0
    if rec.get("bound", "upper") == "lower":
        respected = not respected
    return "respected" if respected else "beyond"


def _drift(rec: dict) -> str:
    """' (measured / bound moves 3.1x across x = a..b)' when the record knows its x range."""
    xr = rec.get("x_range")
    if not xr or xr[0] is None or xr[1] is None or xr[0] <= 0:
        return ""
    f = (xr[1] / xr[0]) ** abs(rec["estimate"] - rec["theory"])
    return f" (measured / bound moves {f:.1f}x across x = {xr[0]:.3g}..{xr[1]:.3g})"


def outcome(rec: dict) -> str | None:
    """The outcome phrase of a record against its ``theory`` (``claim``-dependent wording)."""
    claim = rec.get("claim")
    if claim == "bound_slope":
        side = bound_side(rec)
        if side is None:
            return None
        return {"tight": "bound respected (in scaling); its slope reached (tight here)",
                "respected": "bound respected (in scaling); its slope not reached (not tight here)",
                "beyond": "slope beyond the bound's over this range" + _drift(rec)
                          + "; not a violation by itself (the bound's constant is free)"}[side]
    ok = agrees(rec)
    if ok is None:
        return None
    if claim == "bound":
        if ok:
            return "bound holds"
        return "bound violated" + (" in some cells" if rec.get("fraction") else "")
    if claim == "reference":
        if ok:
            return "reference constant met"
        return ("below the reference constant in some cells (a labelled reference column, not "
                "the measured algorithm's guarantee: no bound is violated)")
    if claim == "prediction":
        what = "prediction" if rec.get("fraction") else "predicted slope"
        return (f"{what} met" if ok else
                f"{what} not met (derived from the bounds, not a bound: Theorem 1 is not "
                "contradicted by this)")
    return "holds" if ok else "does not hold"


def verdict(rec: dict) -> str:
    """One-phrase verdict of a record: e.g. 'holds; tested (could have failed)' or 'bound
    respected (in scaling); its slope not reached (not tight here); tested (could have failed)'.

    Appended where present: each alternative reading of the theory (``alternatives``: list of
    ``{"label", "theory"}``, e.g. |Y| squared), the part of the claim this record does *not*
    test (``not_tested``), and whether our own prediction written in docs/sweep.md was met.
    """
    kind = KIND_LABEL.get(rec.get("kind", "tested"), rec.get("kind", "tested"))
    if rec.get("estimate") is None:
        return f"not reached; {kind}"
    parts = []
    out = outcome(rec)
    if out is not None:
        parts.append(out)
    for alt in rec.get("alternatives") or []:
        alt_out = outcome({**rec, "theory": alt["theory"], "alternatives": None})
        if alt_out is not None:
            parts.append(f"with {alt['label']} ({alt['theory']:.3g}): {alt_out}")
    parts.append(kind)
    if rec.get("not_tested"):
        parts.append(f"not tested: {rec['not_tested']}")
    if rec.get("prediction") is not None:
        met = agrees({**rec, "theory": rec["prediction"], "relation": "equal"})
        parts.append(f"our written prediction {'met' if met else 'missed'}")
    return "; ".join(parts)


def iter_records(summary: dict):
    """(key, name or None, record) for every record, flattening grouped ones
    ({family: record} or {method: record})."""
    for key, val in summary.items():
        if isinstance(val, dict) and "estimate" in val:
            yield key, None, val
        elif isinstance(val, dict):
            for name, rec in val.items():
                if isinstance(rec, dict) and "estimate" in rec:
                    yield key, name, rec


def format_value(v, digits: int = 2) -> str:
    return "not reached" if v is None or (isinstance(v, float) and not np.isfinite(v)) \
        else f"{v:.{digits}f}"
