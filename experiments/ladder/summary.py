"""Speed-ups of the ladder's rungs with 95% intervals, per rollout and per generated token.

A speed-up of ``method`` over GRPO (CPI: over no reset) is the estimator of
``experiments.comparison.stats.speedup``: the rollouts (tokens) GRPO's seed-mean curve needs to
reach its own final score over those the method's seed-mean curve needs; > 1: the method is
faster; percentile bootstrap over seeds, paired. NaN (``lo``/``hi`` NaN) when the method does not
reach the target in most resamples.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from experiments.comparison import stats as st

__all__ = ["speedup_table", "estimate_dict", "AXES"]

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
                rec[name] = estimate_dict(st.speedup(sub, method, comparator, x, n_boot))
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
