"""Figures of the ``theorem_algorithms`` experiment: ``theorem_algorithms.png`` (H = 3, every P2
family), ``theorem_algorithms_h6.png`` (H = 6, noise 0.1, coverage and concave families) and
``theorem_algorithms_scaling.png`` (tau, H, |Y| on the coverage family). PNG and PDF each."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from experiments.sweep import plots
from experiments.sweep.exp_theorem import H6_FAMILIES, P_FIXED, PREDICTION
from experiments.sweep.families import FAMILIES, FAMILY_LABEL
from experiments.sweep.stats import curve_with_ci
from experiments.sweep.theorem_fits import _table


def _p_figure(rows, fits, outdir, sweep, fams, pre, predictions, stem, title) -> list[Path]:
    fams = [f for f in fams if ((rows["sweep"] == sweep) & (rows["family"] == f)).any()]
    if not fams:
        return []
    fig, axes = plots.new_grid(2, len(fams), width=4.4, height=3.8)
    for j, fam in enumerate(fams):
        top, bot = axes[0, j], axes[1, j]
        for m, key in (("random", "rr_p_slope"), ("oracle", "caro_p_slope")):
            tab, x = _table(rows, sweep, fam, m, "q_to_target")
            cur = curve_with_ci(tab, x=x)
            rec = fits.get(pre + key, {}).get(fam)
            plots.band(top, cur, plots.slope_label(m, rec), plots.COLORS[m])
            if rec is not None and rec.get("theory") is not None:
                plots.theory_line(
                    top, cur, rec["theory"], None, color=plots.COLORS[m], anchor="first"
                )
        top.plot([], [], ls="--", color="0.3", label="dashed: composed bound (slope guide)")
        top.set(
            xscale="log",
            yscale="log",
            xlabel="coverage p_0 (mass of G)",
            ylabel="Q-rollouts to the common target",
            title=FAMILY_LABEL[fam],
        )
        rr, x = _table(rows, sweep, fam, "random", "q_to_target")
        caro, _ = _table(rows, sweep, fam, "oracle", "q_to_target")
        cur = curve_with_ci(rr, caro, x=x)
        rec = fits.get(pre + "ratio_slope", {}).get(fam)
        plots.band(bot, cur, plots.slope_label("RR/CARO", rec), "black")
        plots.theory_line(bot, cur, -3.0, "theory (composed bounds): -3", anchor="first")
        plots.theory_line(bot, cur, -2.0, "per-iteration ratio: -2", color="0.6", anchor="first")
        pr = predictions.get(fam)
        if pr is not None:
            plots.theory_line(
                bot,
                cur,
                pr,
                f"prediction (committed): {pr:.2f}",
                color="tab:green",
                anchor="first",
                ls=":",
            )
        bot.set(
            xscale="log",
            yscale="log",
            xlabel="coverage p_0 (mass of G)",
            ylabel="Q-rollouts RR / CARO",
        )
        plots.legend_below(bot)
    return plots.finish(fig, list(axes.ravel()), outdir / stem, title)


def _scaling_figure(rows, fits, outdir) -> list[Path]:
    sweeps = [s for s in ("tau", "horizon", "actions") if (rows["sweep"] == s).any()]
    if not sweeps:
        return []
    fig, axes = plots.new_figure(len(sweeps), width=4.6)
    for ax, sweep in zip(axes, sweeps):
        for m, name in (("random", "rr"), ("oracle", "caro")):
            tab, x = _table(rows, sweep, "coverage", m, "q_to_target")
            cur = curve_with_ci(tab, x=x)
            rec = fits.get(f"theorem_algorithms_{sweep}_slope", {}).get(name)
            plots.band(ax, cur, plots.slope_label(m, rec), plots.COLORS[m])
            if rec is not None and rec.get("theory") is not None:
                plots.theory_line(ax, cur, rec["theory"], None, color=plots.COLORS[m])
        ax.plot([], [], ls="--", color="0.3", label="dashed: composed bound")
        ax.set(
            xscale="log",
            yscale="log",
            ylabel="Q-rollouts to the common target",
            xlabel={
                "tau": "tau (reward units)",
                "horizon": "horizon H (steps)",
                "actions": "|Y| = number of actions",
            }[sweep],
        )
    return plots.finish(
        fig,
        list(axes),
        outdir / "theorem_algorithms_scaling",
        f"Theorem's algorithms on the coverage family (p = {P_FIXED})",
    )


def plot(rows: pd.DataFrame, fits: dict, outdir: Path) -> list[Path]:
    from experiments.sweep.predict_p2 import load_prediction

    h6 = {f: v.get("ratio") for f, v in load_prediction().get("theorem_h6", {}).items()}
    return (
        _p_figure(
            rows,
            fits,
            outdir,
            "p",
            FAMILIES,
            "theorem_algorithms_",
            PREDICTION,
            "theorem_algorithms",
            "Theorem 1's algorithms end to end, H = 3 (theory step "
            "from A_hat, eps-stopping; bands: 95% bootstrap over seeds)",
        )
        + _p_figure(
            rows,
            fits,
            outdir,
            "p_h6",
            H6_FAMILIES,
            "theorem_algorithms_h6_",
            h6,
            "theorem_algorithms_h6",
            "Theorem 1's algorithms at H = 6, noise 0.1, to "
            "J_0 + 0.05 (J* - J_0) (bands: 95% bootstrap over seeds)",
        )
        + _scaling_figure(rows, fits, outdir)
    )
