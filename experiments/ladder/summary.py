"""Speed-ups of the ladder's rungs with 95% intervals, per rollout and per generated token.

A speed-up of ``method`` over GRPO (CPI: over no reset) at a common target: the rollouts (tokens)
GRPO's seed-mean curve needs to reach the target over those the method's seed-mean curve needs;
> 1: the method is faster. The target is the *lower* of the two seed-mean final scores, so a
method that ends below GRPO gets a speed-up below 1 instead of "not reached" (the estimator of
``experiments.comparison.stats.speedup`` uses GRPO's own final score and leaves those NaN; with
a method that ends above GRPO the two agree). A target at or below the starting score (neither
curve rose) gives NaN. Interval: percentile bootstrap over seeds, paired across methods.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from experiments.comparison import stats as st

__all__ = ["speedup_table", "estimate_dict", "common_target_speedup", "AXES"]

#: speed-up axes: column of the curves -> name in the summary
AXES = {"rollouts": "per_rollout", "generated_tokens": "per_token"}


def estimate_dict(e: st.Estimate) -> dict:
    def clean(v):
        return None if v is None or not math.isfinite(float(v)) else float(v)

    return {"value": clean(e.value), "lo": clean(e.lo), "hi": clean(e.hi), "n": clean(e.n)}


def speedup_table(
    curves: pd.DataFrame,
    by: str,
    methods=("rrpo", "srpo", "oracle"),
    comparator: str = "grpo",
    n_boot: int = 1000,
) -> list[dict]:
    """One record per (setting ``by``, method): ``{by, method, per_rollout, per_token, final}``.

    ``curves``: columns method, seed, iteration, score, rollouts, generated_tokens and ``by``.
    ``final``: each method's seed-mean final score with a bootstrap interval over seeds.
    """
    out = []
    for value, sub in curves.groupby(by, sort=True):
        for method in methods:
            rec = {by: float(value), "method": method}
            for x, name in AXES.items():
                rec[name] = estimate_dict(common_target_speedup(sub, method, comparator, x, n_boot))
            last = sub[sub["method"] == method].sort_values("iteration").groupby("seed").last()
            rec["final"] = estimate_dict(_mean_ci(last["score"].to_numpy(float), n_boot))
            out.append(rec)
        last = sub[sub["method"] == comparator].sort_values("iteration").groupby("seed").last()
        out.append(
            {
                by: float(value),
                "method": comparator,
                "final": estimate_dict(_mean_ci(last["score"].to_numpy(float), n_boot)),
            }
        )
    return out


def _mean_ci(x: np.ndarray, n_boot: int) -> st.Estimate:
    return st.ratio_of_sums(x, np.ones(len(x)), n_boot, 0)


def _at_common_target(xa, ya, xb, yb) -> float:
    """Speed-up of curve a over curve b at the lower of their final scores (module docstring)."""
    ok_a, ok_b = np.isfinite(xa) & np.isfinite(ya), np.isfinite(xb) & np.isfinite(yb)
    if not ok_a.any() or not ok_b.any():
        return math.nan
    xa, ya, xb, yb = xa[ok_a], ya[ok_a], xb[ok_b], yb[ok_b]
    target = min(float(ya[-1]), float(yb[-1]))
    if target <= max(float(ya[0]), float(yb[0])) + 1e-12:
        return math.nan
    x_a, x_b = st.first_reach(xa, ya, target), st.first_reach(xb, yb, target)
    if not (np.isfinite(x_a) and np.isfinite(x_b)) or x_a <= 0:
        return math.nan
    return x_b / x_a


def common_target_speedup(
    curves: pd.DataFrame, method: str, comparator: str, x: str, n_boot: int = 1000, seed: int = 0
) -> st.Estimate:
    """Speed-up of ``method`` over ``comparator`` on axis ``x`` (module docstring)."""
    tables = []
    for m in (method, comparator):
        sub = curves[curves["method"] == m]
        if sub.empty:
            return st.NAN_ESTIMATE
        tables.append(st.seed_tables(sub, x))
    seeds = tables[0][1].index.intersection(tables[1][1].index)
    arrs = [(tx.loc[seeds].to_numpy(float), ty.loc[seeds].to_numpy(float)) for tx, ty in tables]

    def at(pick):
        (xa, ya), (xb, yb) = ((np.nanmean(tx[pick], 0), np.nanmean(ty[pick], 0)) for tx, ty in arrs)
        return _at_common_target(xa, ya, xb, yb)

    value = at(np.arange(len(seeds)))
    if len(seeds) < 2:
        return st.Estimate(value, math.nan, math.nan, float(len(seeds)))
    rng = np.random.default_rng(seed)
    boots = np.array([at(rng.integers(0, len(seeds), len(seeds))) for _ in range(n_boot)])
    if np.isfinite(boots).mean() < 0.5:
        return st.Estimate(value, math.nan, math.nan, float(len(seeds)))
    boots = boots[np.isfinite(boots)]
    return st.Estimate(
        value,
        float(np.percentile(boots, 2.5)),
        float(np.percentile(boots, 97.5)),
        float(len(seeds)),
    )
