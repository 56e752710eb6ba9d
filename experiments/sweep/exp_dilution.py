"""P1 dilution: E_{d^pi}[max_a A] >= tau p_pi, and >= tau conditioned on G_tau.

Exact computation, no sampling: for the initial policy of each environment we compute the
occupancy d_h(s), the maximal advantage max_a A(h, s) and G_tau, then

* ``diluted = (1/H) sum_h sum_s d_h(s) max_a A(h, s)`` -- the expected maximal advantage under
  the on-policy state distribution (the mass-normalised d^pi that CPI-RR resets from);
* ``conditional = E[max_a A | x in G]`` under the same distribution;
* both readings of coverage, ``p_reach`` and ``p_mass``.

Environments: the coverage family over a p x tau grid (where the bound is tight by construction:
``diluted = tau p``), Garnet MDPs (no structure; tau set to a quantile of max_a A) and the
first-error tree (where reach != mass). The Garnet and tree rows test the *inequality* under
both readings of p: ``diluted >= tau p_mass`` always holds (G's mass times a value >= tau), while
``diluted >= tau p_reach`` can fail when a trajectory visits G several times -- this is how the
reading of p changes the claim.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cpi.envs import coverage_family, first_error_tree, garnet, initial_policy
from cpi.evaluation import coverage_of, evaluate, max_advantage, occupancy
from cpi.mdp import TabularMDP
from experiments.sweep import plots
from experiments.sweep.common import p_grid, split_seeds
from experiments.sweep.registry import Experiment
from experiments.sweep.stats import bootstrap_mean, bootstrap_slope, fit_record, label, seed_table


def configs(size: str, p_values):
    ps = p_grid(size, p_values, tiny=(0.02, 0.2), quick=(0.01, 0.03, 0.1, 0.3),
                default=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
                full=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0))
    taus = (0.05, 0.2) if size in ("tiny", "quick") else (0.02, 0.05, 0.1, 0.2)
    out = [{"env": "coverage", "p": p, "tau": t} for p in ps for t in taus]
    quantiles = (0.5, 0.9) if size in ("tiny", "quick") else (0.25, 0.5, 0.75, 0.9)
    out += [{"env": "garnet", "tau_quantile": q} for q in quantiles]
    out += [{"env": "first_error", "tau_quantile": q} for q in quantiles]
    return out


def _measure(mdp, tau: float) -> dict:
    pol = initial_policy(mdp)
    V, Q = evaluate(mdp, pol)
    d = occupancy(mdp, pol)
    m = max_advantage(mdp, pol, V, Q)
    G = m >= tau - 1e-10
    if not isinstance(mdp, TabularMDP):
        G &= ~mdp.is_leaf
    cov = coverage_of(mdp, pol, G, d)
    H = mdp.horizon
    diluted = float((d * m).sum()) / H
    g_mass = float(d[G].sum())
    conditional = float((d * m)[G].sum()) / g_mass if g_mass > 0 else np.nan
    return {"tau_used": tau, "diluted": diluted, "conditional": conditional,
            "p_reach": cov.reach, "p_mass": cov.mass,
            "bound_mass": tau * cov.mass, "bound_reach": tau * cov.reach,
            "holds_mass": bool(diluted >= tau * cov.mass - 1e-12),
            "holds_reach": bool(diluted >= tau * cov.reach - 1e-12),
            "holds_conditional": bool(g_mass == 0 or conditional >= tau - 1e-10)}


def run_cell(config: dict, seq: np.random.SeedSequence) -> pd.DataFrame:
    env_seed, _ = split_seeds(seq, 0)
    if config["env"] == "coverage":
        mdp = coverage_family(config["p"], config["tau"], n_actions=4, horizon=8, noise=0.5,
                              seed=env_seed)
        return pd.DataFrame([_measure(mdp, config["tau"])])
    if config["env"] == "garnet":
        mdp = garnet(30, 4, 3, 6, seed=env_seed, reward="sparse", start="single")
    else:
        mdp = first_error_tree(horizon=6, n_actions=3, p_correct=0.7, seed=env_seed)
    pol = initial_policy(mdp)
    m = max_advantage(mdp, pol)
    d = occupancy(mdp, pol)
    live = (d > 0) & (m > 1e-12)
    tau = float(np.quantile(m[live], config["tau_quantile"])) if live.any() else 0.0
    return pd.DataFrame([_measure(mdp, tau)])


def analyze(rows: pd.DataFrame) -> dict:
    fits = {}
    cov = rows[rows["env"] == "coverage"]
    if len(cov):
        t0 = sorted(cov["tau"].unique())[0]
        sub = cov[cov["tau"] == t0]
        fits["dilution_slope"] = bootstrap_slope(
            seed_table(sub, "p", "diluted"), theory=1.0,
            description=f"log-log slope of E_d[max A] vs p on the coverage family (tau={t0})")
        ratio = (cov["diluted"] / (cov["tau"] * cov["p"])).to_numpy()
        est, lo, hi = bootstrap_mean(ratio)
        fits["dilution_over_tau_p"] = fit_record(
            est, (lo, hi), 1.0, len(ratio),
            description="mean of E_d[max A] / (tau p) on the coverage family (bound: >= 1)")
        cond = (cov["conditional"] / cov["tau"]).to_numpy()
        est, lo, hi = bootstrap_mean(cond)
        fits["dilution_conditional_over_tau"] = fit_record(
            est, (lo, hi), 1.0, len(cond),
            description="mean of E[max A | G] / tau on the coverage family (bound: >= 1)")
    other = rows[rows["env"] != "coverage"]
    for reading in ("mass", "reach"):
        v = other[f"holds_{reading}"].astype(float).to_numpy()
        est, lo, hi = bootstrap_mean(v)
        fits[f"dilution_bound_holds_{reading}"] = fit_record(
            est, (lo, hi), 1.0, len(v),
            description=f"fraction of Garnet / first-error instances with E_d[max A] >= tau p_{reading}")
    return label(fits, {
        "dilution_slope": {"kind": "identity"},
        "dilution_over_tau_p": {"kind": "identity", "relation": "at_least"},
        "dilution_conditional_over_tau": {"kind": "identity", "relation": "at_least"},
        # E_d[max A] >= sum over G of d max A >= tau d(G): true for every MDP (max A >= 0)
        "dilution_bound_holds_mass": {"kind": "identity", "fraction": True},
        # the reach reading is not the one the package's Theorem 1 uses (THEORY.md section 1):
        # failing it is a violation of P1's bound under that reading
        "dilution_bound_holds_reach": {"kind": "tested", "fraction": True, "claim": "bound"},
    })


def plot(rows: pd.DataFrame, fits: dict, outdir: Path) -> list[Path]:
    fig, (a1, a2, a3) = plots.new_figure(3, width=4.6)
    cov = rows[rows["env"] == "coverage"]
    # measured values as hollow markers, the theory as dashed lines drawn on top in the same
    # colour: on the clean family they coincide, and the line must stay visible
    markers = "osD^v<>"
    for i, (tau, sub) in enumerate(cov.groupby("tau")):
        g = sub.groupby("p")["diluted"].agg(["mean", "min", "max"]).reset_index()
        label = (plots.slope_label(f"tau={tau:g}", fits.get("dilution_slope")) if i == 0
                 else f"tau={tau:g}")
        a1.errorbar(g["p"], g["mean"], yerr=[(g["mean"] - g["min"]).clip(lower=0),
                                             (g["max"] - g["mean"]).clip(lower=0)],
                    marker=markers[i % len(markers)], ms=6, ls="none", mfc="none",
                    color=f"C{i}", label=label, zorder=2)
        a1.plot(g["p"], tau * g["p"], ls="--", color=f"C{i}", lw=1.2, zorder=3)
    a1.plot([], [], ls="--", color="0.3", label="dashed: theory bound tau*p (same colour)")
    a1.set(xscale="log", yscale="log", xlabel="coverage p of G_tau (probability)",
           ylabel="E_d[max_a A] (reward units)", title="Coverage family: diluted advantage")
    plots.legend_below(a1)
    top = 1.0
    for i, (tau, sub) in enumerate(cov.groupby("tau")):
        g = sub.groupby("p")["conditional"].mean()
        top = max(top, float(np.nanmax(g.values / tau, initial=1.0)))
        a2.plot(g.index, g.values / tau, marker=markers[i % len(markers)], ms=9 - 1.5 * i,
                ls="none", mfc="none", color=f"C{i}", label=f"tau={tau:g}", zorder=2)
    a2.axhline(1.0, ls="--", color="0.2", lw=1.2, zorder=3, label="theory bound: >= 1")
    # fixed limits around the bound: an identity sits at 1 to the last digit, and autoscaling
    # would zoom into rounding error (an unreadable 1e-12 offset on the axis)
    a2.set_ylim(0, 1.5 * top)
    a2.ticklabel_format(axis="y", style="plain", useOffset=False)
    a2.set(xscale="log", xlabel="coverage p (probability)", ylabel="E[max_a A | x in G] / tau",
           title="Conditioned on G (bound >= 1)")
    plots.legend_below(a2, ncol=2)
    other = rows[rows["env"] != "coverage"]
    for env, marker in (("garnet", "o"), ("first_error", "s")):
        sub = other[other["env"] == env]
        a3.scatter(sub["bound_mass"], sub["diluted"], marker=marker, s=14,
                   label=f"{env}: vs tau*p_mass")
        a3.scatter(sub["bound_reach"], sub["diluted"], marker=marker, s=14, facecolors="none",
                   edgecolors="k", label=f"{env}: vs tau*p_reach")
    lim = [max(1e-5, float(np.nanmin(other[["bound_mass", "diluted"]].to_numpy()[
        other[["bound_mass", "diluted"]].to_numpy() > 0], initial=1e-3))),
        float(np.nanmax(other[["bound_reach", "diluted"]].to_numpy(), initial=1.0))]
    a3.plot(lim, lim, ls="--", color="0.4", label="y = x (bound tight)")
    a3.set(xscale="log", yscale="log", xlabel="tau * p (reward units)",
           ylabel="E_d[max_a A] (reward units)", title="Unstructured MDPs: points above y=x hold")
    return plots.finish(fig, [a1, a2, a3], outdir / "dilution",
                        "P1 dilution: exact E_d[max A] under the initial policy")


EXPERIMENT = Experiment("dilution", "P1", "E_d[max A] vs tau*p and conditioned on G (exact)",
                        configs, run_cell, analyze, plot)
