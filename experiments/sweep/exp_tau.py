"""P5 tau trade-off: improvement per Q-rollout vs tau, with an interior optimum for CPI-CARO.

Environment: the multi-branch coverage family (4 improvable branches of equal mass 0.05 each,
levels tau0 * 2^k, so G_tau and p(tau) shrink as tau grows: a staircase from p = 0.2 to 0).
For each tau and method we measure, exactly and by simulation:

* ``improvement`` -- first-iteration J gain of exact CPI with the method's theory step at this tau
  (:mod:`experiments.sweep.exact_cpi`);
* ``q_rollouts`` -- Q-rollouts needed to estimate that iteration's policy advantage to 20%
  relative accuracy with probability 0.95 (variance method, as in the estimation experiment);
* ``improvement_per_sample`` = improvement / q_rollouts.

Larger tau: a stronger signal (fewer samples, ~1/tau^2) and a bigger safe step, but a smaller G
(p falls, and beyond the top level G is empty). The product has an interior maximum in tau.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from cpi.envs import coverage_family, initial_policy
from cpi.evaluation import occupancy
from cpi.selectors import selection
from experiments.sweep import plots
from experiments.sweep.common import METHOD_LABEL, split_seeds
from experiments.sweep.estimators import advantage_problem, advantage_terms
from experiments.sweep.exact_cpi import exact_iteration
from experiments.sweep.registry import Experiment
from experiments.sweep.stats import bootstrap_mean, curve_with_ci, fit_record, label, seed_table

REL_ACC, DELTA = 0.2, 0.05
ENV = {"p": 0.2, "tau": 0.02, "n_actions": 4, "horizon": 8, "noise": 0.5, "n_branches": 4,
       "gap_ratio": 2.0}


def configs(size: str, p_values):
    del p_values
    n = {"tiny": 4, "quick": 7, "default": 10, "full": 16}[size]
    taus = np.geomspace(0.01, 0.3, n)
    n_var = {"tiny": 3000, "quick": 8000, "default": 15000, "full": 50000}[size]
    return [{"tau_threshold": float(round(t, 6)), "n_var": n_var} for t in taus]


def run_cell(config: dict, seq: np.random.SeedSequence) -> pd.DataFrame:
    env_seed, rngs = split_seeds(seq, 4)
    mdp = coverage_family(seed=env_seed, **ENV)
    pol = initial_policy(mdp)
    tau = config["tau_threshold"]
    prob = advantage_problem(mdp, pol, tau)
    d = occupancy(mdp, pol).ravel() / mdp.horizon
    z = norm.ppf(1 - DELTA / 2)
    rows = []
    for i, method in enumerate(("random", "oracle")):
        sel = selection(method, prob.G, d)
        p = float(d[prob.G].sum())
        if sel.mass <= 0:
            rows.append({"method": method, "coverage": p, "improvement": 0.0,
                         "q_rollouts": np.nan, "improvement_per_sample": 0.0})
            continue
        it = exact_iteration(mdp, pol, method, tau)
        t = advantage_terms(mdp, prob, sel.s, config["n_var"], rngs[2 * i], rngs[2 * i + 1])
        a_true = prob.exact(sel.s, d)
        n_req = float(np.ceil(z**2 * t.terms.var(ddof=1) / (REL_ACC * a_true) ** 2))
        rows.append({"method": method, "coverage": p, "improvement": it.improvement,
                     "alpha": it.alpha, "a_true": a_true, "q_rollouts": n_req,
                     "improvement_per_sample": it.improvement / n_req})
    return pd.DataFrame(rows)


def analyze(rows: pd.DataFrame) -> dict:
    fits = {}
    for method, key in (("oracle", "caro"), ("random", "rr")):
        tab = seed_table(rows[rows["method"] == method], "tau_threshold", "improvement_per_sample")
        best = tab.columns[np.argmax(tab.to_numpy(), axis=1)].to_numpy(float)
        est, lo, hi = bootstrap_mean(best)
        interior = float(np.mean((best > tab.columns.min()) & (best < tab.columns.max())))
        fits[f"{key}_tau_optimum"] = fit_record(
            est, (lo, hi), None, tab.shape[1], interior_fraction=interior,
            description=f"tau maximising improvement per Q-rollout ({METHOD_LABEL[method]}); "
                        "interior_fraction = share of seeds whose optimum is inside the grid")
    # The optimum sits at the last tau before G empties: built into the branch staircase.
    return label(fits, {"caro_tau_optimum": {"kind": "identity"},
                        "rr_tau_optimum": {"kind": "measurement"}})


def plot(rows: pd.DataFrame, fits: dict, outdir: Path) -> list[Path]:
    fig, (a1, a2) = plots.new_figure(2, width=5.2)
    for method, key in (("random", "rr"), ("oracle", "caro")):
        sub = rows[rows["method"] == method]
        cur = curve_with_ci(seed_table(sub, "tau_threshold", "improvement_per_sample"))
        f = fits.get(f"{key}_tau_optimum")
        lab = METHOD_LABEL[method] + ("" if f is None else f"; optimum tau={f['estimate']:.2g}")
        plots.band(a1, cur.assign(y=cur["y"].where(cur["y"] > 0)), lab, plots.COLORS[method])
        cov = sub.groupby("tau_threshold")["coverage"].mean()
        if method == "oracle":
            a2.step(cov.index, cov.values, where="post", color="k", label="coverage p(tau) of G_tau")
    a1.set(xscale="log", yscale="log", xlabel="tau (reward units)",
           ylabel="J gain per Q-rollout (reward units)", title="Improvement per sample vs tau")
    a2.set(xscale="log", xlabel="tau (reward units)", ylabel="coverage p (probability)",
           title="p(tau): larger tau shrinks G")
    return plots.finish(fig, [a1, a2], outdir / "tau",
                        "P5 tau trade-off (4-branch coverage family, gap ratio 2)")


EXPERIMENT = Experiment("tau", "P5", "improvement per sample vs tau (interior optimum)",
                        configs, run_cell, analyze, plot)
