"""Figures of the ``direct`` experiment: ``direct.png`` (n vs p and the RR/CARO ratio under both
accuracy criteria), ``direct_tau.png`` (n vs tau) and ``direct_knobs.png`` (the ratio slope as a
function of each non-clean family's knob, measured and predicted). PNG and PDF each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.sweep import plots
from experiments.sweep.direct_fits import _knob_name, _uncensor, table
from experiments.sweep.families import FAMILIES, FAMILY_LABEL, KNOBS
from experiments.sweep.stats import curve_with_ci

SHORT = {"random": "RR", "oracle": "CARO", "approx": "approx"}


def _p_panel(top, bot, rows, fits, fam, first: bool) -> None:
    for m in ("random", "oracle", "approx"):
        tab, x = table(rows, fam, "p", m, "n_theorem")
        if tab.empty:
            continue
        cur = curve_with_ci(tab, x=x)
        plots.band(top, cur, f"{SHORT[m]}: theorem's criterion", plots.COLORS[m])
        if m == "random":
            plots.theory_line(
                top, cur, -2.0, "slope guide p^-2 (through the smallest p)", anchor="first"
            )
        if m != "approx":
            rel, _ = table(rows, fam, "p", m, "n_direct")
            rc = curve_with_ci(rel, x=x).dropna(subset=["y"])
            top.plot(
                rc["x"],
                rc["y"],
                ls=":",
                marker=".",
                color=plots.COLORS[m],
                lw=1,
                label=f"{SHORT[m]}: relative criterion",
            )
    top.set(
        xscale="log",
        yscale="log",
        xlabel="coverage p (mass of G)",
        ylabel="Q-rollouts for accuracy, 90%",
        title=FAMILY_LABEL[fam],
    )
    if first:
        top.legend(fontsize=6, loc="best")
    else:  # one legend for the row: the same methods and styles in every panel
        top.legend([], [], frameon=False)
    for col, key, color, ls, name in (
        ("n_theorem", "direct_theorem_ratio_slope", "black", "-", "theorem's criterion"),
        (
            "n_direct",
            "direct_sample_complexity_ratio_slope",
            "tab:orange",
            "--",
            "relative (practical)",
        ),
    ):
        rr, x = table(rows, fam, "p", "random", col)
        caro, _ = table(rows, fam, "p", "oracle", col)
        if rr.empty:
            continue
        cur = curve_with_ci(rr, caro, x=x)
        rec = fits.get(key, {}).get(fam)
        plots.band(bot, cur, plots.slope_label(name, rec), color, ls=ls)
        if col == "n_theorem":
            plots.theory_line(
                bot, cur, -2.0, "Theorem 1 / P2: slope -2 (through the smallest p)", anchor="first"
            )
            pred = (rec or {}).get("prediction")
            if pred is not None:
                plots.theory_line(
                    bot,
                    cur,
                    pred,
                    f"exact-moment prediction: {pred:.2f}",
                    color="tab:green",
                    anchor="first",
                    ls=":",
                )
    bot.set(xscale="log", yscale="log", xlabel="coverage p (mass of G)", ylabel="n(RR) / n(CARO)")
    plots.legend_below(bot)


def _p_figure(rows, fits, outdir) -> list[Path]:
    fams = [f for f in FAMILIES if ((rows["family"] == f) & (rows["sweep"] == "p")).any()]
    if not fams or "n_theorem" not in rows:
        return []
    fig, axes = plots.new_grid(2, len(fams), height=4.2)
    for j, fam in enumerate(fams):
        _p_panel(axes[0, j], axes[1, j], rows, fits, fam, j == 0)
    reps = int(rows["reps"].max()) if "reps" in rows else 200
    return plots.finish(
        fig,
        list(axes.ravel()),
        outdir / "direct",
        "P2 measured directly: Theorem 1's criterion |A_hat - A| <= tau p (RR), "
        f"tau (CARO) (solid) and the relative 0.5 |A| (dotted); {reps} "
        "repetitions per n; bands: 95% bootstrap over seeds",
    )


def _tau_figure(rows, fits, outdir) -> list[Path]:
    fams = [f for f in FAMILIES if ((rows["family"] == f) & (rows["sweep"] == "tau")).any()]
    if not fams or "n_theorem" not in rows:
        return []
    fig, axes = plots.new_figure(len(fams), width=4.4, height=5.0)
    for ax, fam in zip(axes, fams):
        for m, key in (
            ("random", "direct_theorem_rr_samples_tau_slope"),
            ("oracle", "direct_theorem_caro_samples_tau_slope"),
        ):
            tab, x = table(rows, fam, "tau", m, "n_theorem")
            if tab.empty:
                continue
            cur = curve_with_ci(tab, x=x)
            rec = fits.get(key, {}).get(fam)
            plots.band(ax, cur, plots.slope_label(SHORT[m], rec), plots.COLORS[m])
            rel, _ = table(rows, fam, "tau", m, "n_direct")
            rc = curve_with_ci(rel, x=x).dropna(subset=["y"])
            ax.plot(
                rc["x"],
                rc["y"],
                ls=":",
                color=plots.COLORS[m],
                lw=1,
                label=f"{SHORT[m]}: relative criterion",
            )
            plots.theory_line(
                ax,
                cur,
                -2.0,
                "P2 at fixed R_max: tau^-2 (not these instances)" if m == "random" else None,
                color=plots.COLORS[m],
            )
            if rec is not None and rec.get("theory_with_rmax") is not None:
                plots.theory_line(
                    ax,
                    cur,
                    rec["theory_with_rmax"],
                    "Thm 1 bound R_max^2/tau^2 on these instances" if m == "random" else None,
                    color="tab:green",
                )
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="tau (reward units)",
            ylabel="Q-rollouts (theorem's criterion)",
            title=FAMILY_LABEL[fam],
        )
        plots.legend_below(ax)
    return plots.finish(
        fig,
        list(axes),
        outdir / "direct_tau",
        "P2 vs tau, measured directly (p = 0.2, lock depth 2)",
    )


def _knob_panel(ax, fits, pred, fam) -> bool:
    knob, values, default = KNOBS[fam]
    names = [_knob_name(fam, v) for v in values] + ([f"{fam}/H=6"] if default is None else [])
    keys = [str(v) for v in values] + (["H=6"] if default is None else [])
    pos = np.arange(len(names), dtype=float)
    curve = pred.get("knobs", {}).get(fam, {}).get("curve", {})
    drawn = False
    for rkey, color, label, pkey, dx in (
        ("direct_knob_ratio_slope", "tab:orange", "relative (practical)", "relative", -0.06),
        ("direct_theorem_knob_ratio_slope", "black", "theorem's criterion", "theorem", 0.06),
    ):
        recs = [fits.get(rkey, {}).get(n) for n in names]
        est = np.array(
            [np.nan if r is None or r["estimate"] is None else r["estimate"] for r in recs]
        )
        lo = np.array([np.nan if r is None or r["ci"][0] is None else r["ci"][0] for r in recs])
        hi = np.array([np.nan if r is None or r["ci"][1] is None else r["ci"][1] for r in recs])
        if np.isfinite(est).any():
            drawn = True
            ax.errorbar(
                pos + dx,
                est,
                yerr=[est - lo, hi - est],
                fmt="o",
                color=color,
                ms=4,
                capsize=2,
                label=f"measured, {label}",
            )
        p = [curve.get(k, {}).get(pkey, np.nan) for k in keys]
        ax.plot(
            pos,
            p,
            ls="-",
            color=color,
            lw=1,
            alpha=0.6,
            label=f"predicted (exact moments), {label}",
        )
    sig = [curve.get(k, {}).get("signal_only", np.nan) for k in keys]
    ax.plot(pos, sig, ls=":", color="tab:green", label="predicted from the signal alone (relative)")
    ax.axhline(-2.0, ls="--", color="0.3", lw=1, label="Theorem 1 / P2: -2")
    ax.set_xticks(
        pos,
        [n.split("/")[1].split("=")[-1] if not n.endswith("H=6") else "H=6" for n in names],
        fontsize=8,
    )
    ax.set(
        xlabel=f"knob: {knob}" + (" (H - depth - 1; H=6: fixed horizon)" if fam == "lock" else ""),
        ylabel="slope of n(RR)/n(CARO) vs p",
        title=FAMILY_LABEL[fam],
    )
    plots.legend_below(ax)
    return drawn


def _knob_figure(fits, outdir) -> list[Path]:
    from experiments.sweep.predict_p2 import load_prediction

    fams = [
        f
        for f in KNOBS
        if any(k.startswith(f"{f}/") for k in fits.get("direct_knob_ratio_slope", {}))
    ]
    if not fams:
        return []
    pred = load_prediction()
    fig, axes = plots.new_figure(len(fams), width=4.6, height=4.8)
    for ax, fam in zip(axes, fams):
        _knob_panel(ax, fits, pred, fam)
    return plots.finish(
        fig,
        list(axes),
        outdir / "direct_knobs",
        "P2's ratio slope as a function of each family's knob (95% bootstrap "
        "intervals; predictions committed before the run)",
    )


def plot(rows: pd.DataFrame, fits: dict, outdir: Path) -> list[Path]:
    rows = _uncensor(rows)
    return (
        _p_figure(rows, fits, outdir) + _tau_figure(rows, fits, outdir) + _knob_figure(fits, outdir)
    )
