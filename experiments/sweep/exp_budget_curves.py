"""P8 learning curves at a fixed Q-rollout budget: no reset / random / approximate / oracle reset.

Sampled CPI (``run_cpi(mode="sampled", step="constant", alpha=0.5)``) on the coverage family at
p = 0.1 (headroom 4, tau 0.1), each reset rule at the same batch size and the same budget of
Q-rollouts (``none`` spends its budget on whole on-policy episodes, the GRPO analogue; approx
uses beta = 0.3, gamma = 0.7). Rows: one per iteration (J against cumulative Q-rollouts).
Speed-up of a method over a comparator = Q-rollouts the comparator spent to reach its own final
score / Q-rollouts the method needed to reach that score (paper, LLM: 2.3-2.7x for self-reset over
random reset).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cpi.envs import coverage_family
from experiments.sweep import plots
from experiments.sweep.common import METHOD_LABEL, child_seed, run_cpi_frame, split_seeds
from experiments.sweep.registry import Experiment
from experiments.sweep.stats import bootstrap_mean, fit_record

METHODS = ("none", "random", "approx", "oracle")
ENV = {"n_actions": 4, "horizon": 8, "noise": 0.5, "headroom": 4.0}


def configs(size: str, p_values):
    ps = p_values or ((0.1,) if size != "full" else (0.05, 0.1, 0.3))
    budget = {"tiny": 20_000, "quick": 60_000, "default": 200_000, "full": 1_000_000}[size]
    return [{"p": float(p), "tau": 0.1, "batch": 400, "budget": budget} for p in ps]


def run_cell(config: dict, seq: np.random.SeedSequence) -> pd.DataFrame:
    env_seed, _ = split_seeds(seq, 0)
    mdp = coverage_family(config["p"], config["tau"], seed=env_seed, **ENV)
    frames = []
    for i, method in enumerate(METHODS):
        f = run_cpi_frame(mdp, drop=("tau", "beta", "gamma"), reset=method, mode="sampled",
                          tau=config["tau"], seed=child_seed(seq, i), step="constant", alpha=0.5,
                          n_samples=config["batch"], max_iters=10_000,
                          max_q_rollouts=config["budget"], beta=0.3, gamma=0.7)
        frames.append(f.assign(method=method))
    return pd.concat(frames, ignore_index=True)


def samples_to_reach(f: pd.DataFrame, score: float) -> float:
    hit = np.flatnonzero(f["J_next"].to_numpy() >= score)
    return float(f["q_rollouts_cum"].iloc[hit[0]]) if len(hit) else np.nan


def speedups(rows: pd.DataFrame, method: str, comparator: str) -> np.ndarray:
    out = []
    for _, cell in rows.groupby("cell_id" if "cell_id" in rows else "seed"):
        comp = cell[cell["method"] == comparator]
        mine = cell[cell["method"] == method]
        final = float(comp["J_next"].iloc[-1])
        n_comp = samples_to_reach(comp, final)
        n_mine = samples_to_reach(mine, final)
        out.append(n_comp / n_mine if np.isfinite(n_mine) else np.nan)
    return np.asarray(out)


def analyze(rows: pd.DataFrame) -> dict:
    fits = {}
    for method, comp in (("oracle", "random"), ("approx", "random"), ("random", "none"),
                         ("oracle", "none")):
        s = speedups(rows, method, comp)
        est, lo, hi = bootstrap_mean(s)
        fits[f"speedup_{method}_vs_{comp}"] = fit_record(
            est, (lo, hi), None, int(np.isfinite(s).sum()),
            description=f"Q-rollouts {comp} needs for its final score / Q-rollouts {method} needs "
                        "(paper, LLM: 2.3-2.7x self/oracle vs random)")
    return fits


def plot(rows: pd.DataFrame, fits: dict, outdir: Path) -> list[Path]:
    fig, (ax,) = plots.new_figure(1, width=6.5, height=4.5)
    grid = np.linspace(0, rows["budget"].max(), 60)
    for method in METHODS:
        curves = []
        for _, cell in rows[rows["method"] == method].groupby("cell_id" if "cell_id" in rows else "seed"):
            x = np.concatenate([[0.0], cell["q_rollouts_cum"].to_numpy(float)])
            y = np.concatenate([[cell["J"].iloc[0]], cell["J_next"].to_numpy(float)])
            curves.append(np.interp(grid, x, y, right=y[-1]))
        c = np.array(curves)
        m = c.mean(axis=0)
        lo, hi = np.percentile(c, 2.5, axis=0), np.percentile(c, 97.5, axis=0)
        ax.plot(grid, m, color=plots.COLORS[method], label=METHOD_LABEL[method])
        ax.fill_between(grid, lo, hi, color=plots.COLORS[method], alpha=0.15, lw=0)
    f = fits.get("speedup_oracle_vs_random")
    if f and f["estimate"] is not None:
        ax.plot([], [], " ", label=f"oracle vs random speed-up {f['estimate']:.2f}x "
                                   f"[{f['ci'][0]:.2f}, {f['ci'][1]:.2f}]")
    ax.axhline(rows["J_star"].mean(), color="0.3", ls="--", lw=1, label="optimal J*")
    ax.set(xlabel="cumulative Q-rollouts", ylabel="J (expected return, reward units)",
           title=f"Learning curves at a fixed budget (p={rows['p'].iloc[0]:g}; band: seed range 95%)")
    return plots.finish(fig, [ax], outdir / "budget_curves", "P8 learning speed by reset rule")


EXPERIMENT = Experiment("budget_curves", "P8", "learning curves at a fixed rollout budget",
                        configs, run_cell, analyze, plot)
