"""The four comparison figures, each drawn for the simulation and the language model side by side.

Every figure is saved as PNG and PDF. Proportions carry Wilson 95% intervals, curves a bootstrap
over seeds 95% band; the paper's numbers are drawn as red markers or dashed red lines and named in
the legend. A panel whose data a side does not produce says so in the panel instead of drawing
nothing silently.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from experiments import artifacts  # noqa: E402
from experiments.comparison import stats as st  # noqa: E402
from experiments.comparison.schema import METHOD_LABELS, METHODS, SIDES  # noqa: E402

PAPER = {
    "pass_clean": 0.287,        # suffix-group pass@4, clean prefix
    "pass_erroneous": 0.163,    # suffix-group pass@4, erroneous prefix
    "clean_share_self": 0.50,   # share of self-localizations that are clean
    "speedup_vs_grpo": 2.7,     # LiveCodeBench v6 medium, steps to GRPO's final score
    "speedup_vs_rrpo": 2.3,     # ... to RRPO's final score
    "grad_signal_ratio": 2.5,   # per-token gradient signal, reset group / base group
}
PAPER_STYLE = {"color": "#d62728", "ls": "--", "lw": 1.4}
COLORS = {"none": "#7f7f7f", "random": "#1f77b4", "self": "#2ca02c", "oracle": "#9467bd",
          "placed": "#ff7f0e"}
COMPUTE_LABEL = {"simulation": "environment steps (cumulative)",
                 "language model": "generated tokens (cumulative, all)"}
SAMPLES_LABEL = {"simulation": "Q-rollouts (cumulative)",
                 "language model": "rollouts (cumulative)"}
SCORE_LABEL = {"simulation": "J (expected return)", "language model": "held-out pass rate"}

plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
                     "legend.fontsize": 8, "figure.dpi": 110})


def save_figure(fig, out: Path, stem: str, footer: str | None = None,
                dpi: int = 150, note: str | None = None) -> list[Path]:
    """Save PNG (at ``dpi``) and PDF through :func:`experiments.artifacts.save_figure` (no dates,
    so reruns are byte-stable). Below the axes, one text block: ``note`` (a sentence about the
    figure), then ``footer`` (the runs it was drawn from) -- one block, so the two never print
    over each other."""
    lines = [x for x in (note, footer) if x]
    if lines:
        fig.text(0.01, 0.0, "\n".join(lines), fontsize=7, va="top", ha="left", color="0.25",
                 family="monospace", transform=fig.transFigure)
    return artifacts.save_figure(fig, Path(out) / stem, dpi=dpi, bbox_inches="tight")


def _empty(ax, text: str) -> None:
    """A panel a side has no data for: its title and a sentence, no frame (not an empty box)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9,
            color="0.35", wrap=True)
    ax.set_axis_off()


def _err(est: st.Estimate) -> tuple[float, float]:
    lo = est.value - est.lo if np.isfinite(est.lo) else 0.0
    hi = est.hi - est.value if np.isfinite(est.hi) else 0.0
    return max(lo, 0.0), max(hi, 0.0)


def _methods_present(frame: pd.DataFrame, order=(*METHODS, "placed")) -> list[str]:
    present = set(frame["method"].unique())
    return [m for m in order if m in present] + sorted(present - set(order))


def _pass_label(resets: pd.DataFrame) -> str:
    sizes = resets["group_size"].dropna().unique()
    return f"pass@{int(sizes[0])}" if len(sizes) == 1 else "pass@k"


# ------------------------------------------------------------------------ 1. localization figure
def localization_figure(resets: pd.DataFrame, out: Path, footer: str | None = None) -> list[Path]:
    """The paper's 4-panel localization figure, one row per side.

    (a) relative reset position k/n, self vs random; (b) deviation from the true first error by
    bucket; (c) correction rate (suffix-group pass@k) by deviation bucket; (d) pass@k after a
    clean vs an erroneous prefix. The paper's numbers: 28.7% vs 16.3%, about 50% clean.
    """
    fig, axes = plt.subplots(2, 4, figsize=(19, 8.6))
    buckets = list(st.DEVIATION_BUCKETS)
    xb = np.arange(len(buckets))
    for row, side in enumerate(SIDES):
        r = resets[resets["side"] == side].copy()
        r["bucket"] = st.deviation_bucket(r["deviation"])
        ax_a, ax_b, ax_c, ax_d = axes[row]
        tag = f"{side}"
        passk = _pass_label(r) if len(r) else "pass@k"

        # (a) relative reset position
        pos = r[r["method"].isin(("self", "random", "oracle")) & r["rel_pos"].notna()]
        if pos.empty:
            _empty(ax_a, f"{side}: no localizer chooses reset positions here\n"
                         "(resets are placed at set offsets from the first error)")
        else:
            bins = np.linspace(0, 1, 11)
            for m in _methods_present(pos):
                sub = pos[pos["method"] == m]
                ax_a.hist(sub["rel_pos"], bins=bins, weights=sub["weight"], density=True,
                          histtype="step", lw=2, color=COLORS.get(m),
                          label=f"{METHOD_LABELS.get(m, m)} (n={int(sub['weight'].sum())}, "
                                f"mean {np.average(sub['rel_pos'], weights=sub['weight']):.2f})")
            ax_a.set_xlabel("relative reset position k / n")
            ax_a.set_ylabel("density")
            ax_a.set_ylim(top=ax_a.get_ylim()[1] * 1.45)  # room for the legend above the bars
            ax_a.legend(loc="upper left")
        ax_a.set_title(f"(a) {tag}: where resets land")

        # (b) deviation distribution (share of resets per bucket)
        dev = r[r["bucket"].notna()]
        if dev.empty:
            _empty(ax_b, f"{side}: no deviations (no first-error reference)")
        else:
            ms = _methods_present(dev)
            width = 0.8 / len(ms)
            for j, m in enumerate(ms):
                sub = dev[dev["method"] == m]
                total = float(sub["weight"].sum())
                ests = [st.wilson(float(sub.loc[sub["bucket"] == b, "weight"].sum()), total)
                        for b in buckets]
                vals = [e.value for e in ests]
                errs = np.array([_err(e) for e in ests]).T
                clean = st.weighted_proportion(sub["clean"].astype(float), sub["weight"])
                ax_b.bar(xb + (j - (len(ms) - 1) / 2) * width, vals, width, yerr=errs,
                         capsize=2, color=COLORS.get(m),
                         label=f"{METHOD_LABELS.get(m, m)}: clean {clean.fmt(pct=True)}")
            ax_b.axvline(4.5, color="0.3", lw=0.8, ls=":")
            ax_b.set_ylim(top=ax_b.get_ylim()[1] * 1.4)  # room for the legend above the bars
            ax_b.plot([], [], **PAPER_STYLE, label="paper: ≈50% of self-localizations clean")
            ax_b.set_xticks(xb, buckets)
            # which side is clean goes in the label: text inside the panel ran under the legend
            ax_b.set_xlabel("deviation = reset step − true first error (≤ 0 clean, > 0 erroneous)",
                            fontsize=9)
            ax_b.set_ylabel("share of resets")
            ax_b.legend(loc="upper right", fontsize=7)
        ax_b.set_title(f"(b) {tag}: deviation from the first error")

        # (c) correction rate by deviation bucket (all localizers pooled)
        if dev.empty:
            _empty(ax_c, f"{side}: no deviations")
        else:
            ests = [st.weighted_proportion(dev.loc[dev["bucket"] == b, "suffix_pass_at_k"],
                                           dev.loc[dev["bucket"] == b, "weight"]) for b in buckets]
            vals = np.array([e.value for e in ests])
            errs = np.array([_err(e) if e.finite else (0.0, 0.0) for e in ests]).T
            ok = np.isfinite(vals)
            # the resets per bucket go in the legend: one label per point printed over its
            # neighbours (and over the paper's line) where buckets are close
            ns = [int(e.n) for e in np.asarray(ests, dtype=object)[ok]]
            n_text = f"\n{min(ns)}-{max(ns)} resets per bucket" if ns else ""
            ax_c.errorbar(xb[ok], vals[ok], yerr=errs[:, ok], fmt="o-", capsize=3,
                          color="black", label=f"measured {passk}, Wilson 95%{n_text}")
            ax_c.hlines(PAPER["pass_clean"], -0.4, 4.4, **PAPER_STYLE,
                        label="paper pass@4: clean 28.7% / erroneous 16.3%")
            ax_c.hlines(PAPER["pass_erroneous"], 4.6, 8.4, **PAPER_STYLE)
            ax_c.axvline(4.5, color="0.3", lw=0.8, ls=":")
            ax_c.set_xticks(xb, buckets)
            ax_c.set_ylim(0, 1)
            ax_c.set_xlabel("deviation bucket")
            ax_c.set_ylabel(f"correction rate ({passk})")
            ax_c.legend(loc="upper right", fontsize=7)
        ax_c.set_title(f"(c) {tag}: correction rate by deviation")

        # (d) pass@k after clean vs erroneous prefixes
        if dev.empty:
            _empty(ax_d, f"{side}: no clean/erroneous labels")
        else:
            names = ["clean (dev ≤ 0)", "erroneous (dev > 0)"]
            ests = [st.weighted_proportion(dev.loc[dev["clean"] == c, "suffix_pass_at_k"],
                                           dev.loc[dev["clean"] == c, "weight"])
                    for c in (True, False)]
            vals = [e.value if e.finite else 0.0 for e in ests]
            errs = np.array([_err(e) if e.finite else (0.0, 0.0) for e in ests]).T
            ax_d.bar([0, 1], vals, 0.55, yerr=errs, capsize=4, color=["#2ca02c", "#d9a400"],
                     label="measured (Wilson 95%)")
            for x, e in enumerate(ests):
                ax_d.text(x, (e.hi if np.isfinite(e.hi) else e.value) + 0.02,
                          e.fmt(pct=True) + f"\nn={int(e.n) if e.finite else 0}",
                          ha="center", va="bottom", fontsize=8)
            ax_d.scatter([0, 1], [PAPER["pass_clean"], PAPER["pass_erroneous"]], marker="D",
                         s=60, color=PAPER_STYLE["color"], zorder=5,
                         label="paper: 28.7% vs 16.3%")
            ax_d.set_xticks([0, 1], names)
            ax_d.set_ylim(0, 1.05)
            ax_d.set_ylabel(f"suffix-group {passk}")
            ax_d.legend(loc="upper right", fontsize=7)
        ax_d.set_title(f"(d) {tag}: clean vs erroneous prefix")
    fig.suptitle("Localization: where resets land and what they correct "
                 "(top: CPI simulation, first-error tree; bottom: language model)", fontsize=12)
    fig.tight_layout()
    return save_figure(fig, out, "compare_localization", footer)


# ------------------------------------------------------------------------- 2. learning curves
def speedup_table(curves: pd.DataFrame, n_boot: int = 400) -> pd.DataFrame:
    """Speed-ups (method vs comparator) per side and axis, with bootstrap-over-seeds intervals.

    Rows: side, axis (samples / compute), method, comparator, estimate (an :class:`Estimate`).
    """
    pairs = [("self", "none"), ("self", "random"), ("oracle", "none"), ("oracle", "random"),
             ("random", "none")]
    rows = []
    for side in SIDES:
        c = curves[curves["side"] == side]
        for axis in ("samples", "compute"):
            for m, comp in pairs:
                if {m, comp} <= set(c["method"]):
                    rows.append({"side": side, "axis": axis, "method": m, "comparator": comp,
                                 "estimate": st.speedup(c, m, comp, axis, n_boot=n_boot)})
    return pd.DataFrame(rows, columns=["side", "axis", "method", "comparator", "estimate"])


def _curve_band(sub: pd.DataFrame, x: str, n_boot: int = 300, seed: int = 0):
    """Seed-mean curve of one method with a bootstrap-over-seeds 95% band."""
    piv_x, piv_y = st.seed_tables(sub, x)
    xs = piv_x.mean(axis=0).to_numpy()
    y = piv_y.to_numpy(float)
    mean = np.nanmean(y, axis=0)
    if y.shape[0] < 2:
        return xs, mean, mean, mean
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, y.shape[0], size=(n_boot, y.shape[0]))
    boots = np.nanmean(y[idx], axis=1)
    return xs, mean, np.nanpercentile(boots, 2.5, axis=0), np.nanpercentile(boots, 97.5, axis=0)


def learning_curves_figure(curves: pd.DataFrame, speedups: pd.DataFrame, out: Path,
                           footer: str | None = None) -> list[Path]:
    """Score vs samples and vs compute (compute-matched), both sides, with speed-up boxes."""
    fig, axes = plt.subplots(2, 2, figsize=(15, 11.5))
    for row, side in enumerate(SIDES):
        c = curves[curves["side"] == side]
        for col, axis in enumerate(("samples", "compute")):
            ax = axes[row, col]
            if c.empty:
                _empty(ax, f"{side}: no learning curves")
                continue
            for m in _methods_present(c, METHODS):
                xs, mean, lo, hi = _curve_band(c[c["method"] == m], axis)
                n_seeds = c.loc[c["method"] == m, "seed"].nunique()
                ax.plot(xs, mean, "-", color=COLORS.get(m), lw=2,
                        label=f"{METHOD_LABELS.get(m, m)} ({n_seeds} seeds)")
                ax.fill_between(xs, lo, hi, color=COLORS.get(m), alpha=0.18, lw=0)
            sp = speedups[(speedups["side"] == side) & (speedups["axis"] == axis)]
            lines = [f"{r.method} vs {r.comparator}: {r.estimate.fmt(suffix='x')}"
                     if r.estimate.finite else f"{r.method} vs {r.comparator}: not reached"
                     for r in sp.itertuples()]
            if side == "language model":
                lines.append("paper (LiveCodeBench, steps): 2.7x vs GRPO, 2.3x vs RRPO")
            head = ("speed-up = comparator's / method's "
                    f"{'samples' if axis == 'samples' else 'compute'} to reach the comparator's "
                    "final score (95% CI over seeds)")
            ax.text(0.0, -0.14, head + "\n" + "   ".join(lines[:3]) + "\n" + "   ".join(lines[3:]),
                    transform=ax.transAxes, ha="left", va="top", fontsize=7.5,
                    bbox={"facecolor": "white", "alpha": 0.9, "edgecolor": "0.7"})
            if side == "simulation":
                # Tuned methods use batches from 400 to 25,600 Q-rollouts: only a log axis shows
                # both the fast methods' first iterations and the slow ones' later progress.
                ax.set_xscale("log")
            ax.set_xlabel(SAMPLES_LABEL[side] if axis == "samples" else COMPUTE_LABEL[side])
            ax.set_ylabel(SCORE_LABEL[side])
            what = "per sample" if axis == "samples" else "compute-matched"
            ax.set_title(f"{side}: learning curves, {what} (mean, 95% band over seeds)")
            ax.legend(loc="upper left")
    fig.subplots_adjust(left=0.06, right=0.98, top=0.96, bottom=0.1, hspace=0.55, wspace=0.16)
    return save_figure(fig, out, "compare_learning_curves", footer)


# ------------------------------------------------------------------------- 3. gradient signal
def signal_ratio(signal: pd.DataFrame, method: str, n_boot: int = st.N_BOOT) -> st.Estimate:
    """Mean reset-group signal / mean base-group signal of ``method``, bootstrap over seeds."""
    sub = signal[(signal["method"] == method)].dropna(subset=["signal_reset", "signal_base"])
    sub = sub[(sub["signal_base"] > 0)]
    per_seed = sub.groupby("seed")[["signal_reset", "signal_base"]].sum()
    return st.ratio_of_sums(per_seed["signal_reset"].to_numpy(), per_seed["signal_base"].to_numpy(),
                            n_boot=n_boot)


def gradient_signal_figure(signal: pd.DataFrame, out: Path,
                           footer: str | None = None) -> list[Path]:
    """Per-token gradient signal (|A|/T)(1 - pi(y)) of reset vs base groups (language model)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    methods = [m for m in ("self", "random", "oracle")
               if m in set(signal["method"]) and
               signal.loc[signal["method"] == m, "signal_reset"].notna().any()]
    if not methods:
        _empty(ax1, "language model: no reset-group gradient signal logged")
        _empty(ax2, "")
    else:
        for m in methods:
            sub = signal[signal["method"] == m]
            for group, ls in (("signal_reset", "-"), ("signal_base", ":")):
                g = sub.groupby("iteration")[group]
                mean, sem = g.mean(), g.sem().fillna(0)
                ax1.plot(mean.index, mean, ls, color=COLORS.get(m), lw=1.8,
                         label=f"{m}: {'reset' if group == 'signal_reset' else 'base'} group")
                ax1.fill_between(mean.index, mean - 1.96 * sem, mean + 1.96 * sem,
                                 color=COLORS.get(m), alpha=0.12, lw=0)
        ax1.set_xlabel("training iteration")
        ax1.set_ylabel("mean per-token signal (|A|/T)(1 − π(y))")
        ax1.set_title("language model: gradient signal per active token")
        ax1.legend(fontsize=7)
        ests = [signal_ratio(signal, m) for m in methods]
        vals = [e.value for e in ests]
        errs = np.array([_err(e) for e in ests]).T
        ax2.bar(range(len(methods)), vals, 0.55, yerr=errs, capsize=4,
                color=[COLORS.get(m) for m in methods], label="measured (bootstrap 95% over seeds)")
        for i, e in enumerate(ests):
            ax2.text(i, (e.hi if np.isfinite(e.hi) else e.value) * 1.02, e.fmt(suffix="x"),
                     ha="center", va="bottom", fontsize=8)
        ax2.axhline(PAPER["grad_signal_ratio"], **PAPER_STYLE, label="paper: ≈2.5x")
        ax2.axhline(1.0, color="0.4", lw=0.8)
        top = max([PAPER["grad_signal_ratio"]] + [e.hi if np.isfinite(e.hi) else e.value
                                                  for e in ests if e.finite])
        ax2.set_ylim(0, top * 1.3)
        ax2.set_xticks(range(len(methods)), [METHOD_LABELS[m] for m in methods], fontsize=8)
        ax2.set_ylabel("reset-group signal / base-group signal")
        ax2.set_title("ratio over all iterations")
        ax2.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    note = ("The simulation has no per-token gradient; its analogue is P1 (advantage at accepted "
            "reset states is ~1/p larger than the diluted average), reported in paper_repro.md.")
    return save_figure(fig, out, "compare_gradient_signal", footer, note=note)


# ------------------------------------------------------------------------------ 4. phase map
def _branch_points(ax1, ax2, branch_quality: dict | None, branch_sim) -> None:
    """The branch rules: the LM's (entropy, fixed position; ``branch_rules.py lm``) on the left
    panel, the simulation's rule-vs-random ratios (``figures/branch_rules.json``) on the right."""
    style = {"entropy": ("^", "#d62728"), "fixed": ("v", "#8c564b")}
    for m, q in (branch_quality or {}).items():
        if m not in style or not (q.precision.finite and q.recall.finite):
            continue
        marker, color = style[m]
        ax1.errorbar([q.recall.value], [q.precision.value],
                     xerr=np.array(_err(q.recall))[:, None],
                     yerr=np.array(_err(q.precision))[:, None], fmt=marker, ms=10, color=color,
                     mec="black", capsize=3, zorder=5,
                     label=f"LM {m} rule (initial policy): 1−β = {q.precision.fmt(digits=2)}, "
                           f"γ = {q.recall.fmt(digits=2)}, p = {q.coverage.fmt(digits=2)}")
        if q.product.finite and q.coverage.finite and q.coverage.value > 0:
            ax2.axvline(q.product.value / q.coverage.value, color=color, lw=1.5, ls="--",
                        label=f"LM {m} rule: (1−β)γ/p = {q.product.value / q.coverage.value:.2f}")
    if branch_sim is not None and len(branch_sim):
        for rule, sub in branch_sim.assign(
                family=branch_sim["rule"].str.split("@").str[0]).groupby("family"):
            marker, color = style.get(rule, ("x", "0.4"))
            ax2.scatter(sub["precision"] / sub["p"],
                        sub["ratio_vs_random_theory"].clip(lower=1e-3), marker=marker, s=16,
                        facecolor="none", edgecolor=color, alpha=0.7,
                        label=f"simulation {rule} rule vs random resets on failed paths "
                              f"({len(sub)} cases)")


def phase_map_figure(phase: pd.DataFrame, quality: dict, out: Path,
                     sim_selectors: pd.DataFrame | None = None,
                     footer: str | None = None, branch_quality: dict | None = None,
                     branch_sim: pd.DataFrame | None = None) -> list[Path]:
    """The LLM's localizers on the simulation's (beta, gamma) phase map.

    Branch rules (``experiments/branch_rules.py``), when given: the LM's entropy and
    fixed-position rules on the left panel, the simulation's rule / random improvement ratios
    against (1 - beta) gamma / p on the right one.

    Left: recall gamma (x) vs precision 1 - beta (y); the simulation's grid points (realised
    precision and recall of the sampled selector where logged) coloured by
    their measured improvement relative to random resets, the boundary (1 - beta) gamma = p for
    the simulation's p values and the LLM's measured p, and the LLM's localizers with intervals.
    Right: the simulation's ratio to random vs (1 - beta) gamma / p (all p collapse onto one
    boundary at 1), with the LLM self-localizer's (1 - beta) gamma / p as a vertical band.
    """
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 8))
    g = np.linspace(0.01, 1, 200)
    q_self = quality.get("self")
    p_llm = q_self.coverage if q_self is not None else st.NAN_ESTIMATE

    ph = phase.copy()
    if not ph.empty:
        agg = ph.groupby(["p", "beta", "gamma"], as_index=False)[
            ["precision", "recall", "ratio_vs_random", "ratio_vs_oracle"]].mean()
        ps = sorted(agg["p"].unique())
        p_show = ps[int(np.argmin([abs(p - p_llm.value) for p in ps]))] if p_llm.finite else ps[0]
        sel = agg[agg["p"] == p_show]
        if sel["ratio_vs_random"].notna().any():
            vals = np.log2(sel["ratio_vs_random"].clip(lower=1e-3))
            lim = max(1.0, float(np.nanmax(np.abs(vals))))
            sc = ax1.scatter(sel["recall"], sel["precision"], c=vals, cmap="RdBu", vmin=-lim,
                             vmax=lim, s=90, edgecolor="0.3", zorder=3)
            cb = fig.colorbar(sc, ax=ax1)
            cb.set_label(f"simulation, p = {p_show:g}: log2(selector improvement / random's)")
        for p in ps:
            lw = 2 if p == p_show else 0.8
            ax1.plot(g, np.clip(p / g, 0, 1.2), color="0.25", lw=lw,
                     ls="-" if p == p_show else ":")
            ax1.text(1.0, min(p, 1.0), f" p={p:g}", fontsize=7, va="center")
    if p_llm.finite:
        ax1.plot(g, np.clip(p_llm.value / g, 0, 1.2), color="#2ca02c", lw=2, ls="--",
                 label=f"boundary (1−β)γ = p at the LM's p = {p_llm.fmt(digits=3)}")
        if np.isfinite(p_llm.lo):
            ax1.fill_between(g, np.clip(p_llm.lo / g, 0, 1.2), np.clip(p_llm.hi / g, 0, 1.2),
                             color="#2ca02c", alpha=0.12, lw=0)
    markers = {"self": "*", "random": "s", "oracle": "P"}
    if sim_selectors is not None and len(sim_selectors):
        for m, sub in sim_selectors.groupby("method"):
            if m not in markers or sub[["precision", "recall"]].isna().all().all():
                continue
            ax1.scatter(sub["recall"].mean(), sub["precision"].mean(), marker=markers[m], s=70,
                        facecolor="none", edgecolor=COLORS.get(m), lw=1.8, zorder=4,
                        label=f"simulation {m} (budget_curves, p = {sub['p'].mean():g}): "
                              f"1−β = {sub['precision'].mean():.2f}, γ = {sub['recall'].mean():.2f}")
    for m, q in quality.items():
        if not (q.precision.finite and q.recall.finite):
            continue
        ax1.errorbar([q.recall.value], [q.precision.value],
                     xerr=np.array(_err(q.recall))[:, None], yerr=np.array(_err(q.precision))[:, None],
                     fmt=markers.get(m, "o"), ms=14 if m == "self" else 9, color=COLORS.get(m),
                     mec="black", capsize=3, zorder=5,
                     label=f"LM {m}: 1−β = {q.precision.fmt(digits=2)}, γ = {q.recall.fmt(digits=2)}")
    _branch_points(ax1, ax2, branch_quality, branch_sim)
    ax1.set_xlim(0, 1.08)
    ax1.set_ylim(0, 1.08)
    ax1.set_xlabel("recall γ = P(x ∈ S | x ∈ G)")
    ax1.set_ylabel("precision 1 − β = P(x ∈ G | x ∈ S)")
    ax1.set_title("selector quality on the (β, γ) phase map\nabove a curve: (1−β)γ > p, "
                  "resets beat random ones")
    ax1.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.12), ncol=1)

    if not ph.empty and ph["ratio_vs_random"].notna().any():
        agg2 = ph.assign(x=((1 - ph["beta"]) * ph["gamma"] / ph["p"]).round(6))
        for p, sub in agg2.groupby("p"):
            m = sub.groupby("x")["ratio_vs_random"].agg(["mean", "sem"]).reset_index()
            ax2.errorbar(m["x"], m["mean"], yerr=1.96 * m["sem"].fillna(0), fmt="o", ms=4,
                         capsize=2, label=f"simulation p = {p:g}")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.axhline(1, color="0.3", lw=0.8)
        ax2.axvline(1, color="0.3", lw=0.8, ls=":")
        ax2.set_xlabel("(1−β)γ / p   (> 1: theory says the selector beats random)")
        ax2.set_ylabel("improvement of the selector / of random resets")
        ax2.set_title("simulation: the phase boundary; LM self-localizer as a band")
    else:
        ax2.set_xscale("log")
        ax2.axvline(1, color="0.3", lw=0.8, ls=":")
        ax2.set_xlabel("(1−β)γ / p")
        ax2.set_title("no simulation ratio-to-random measured")
    if q_self is not None and q_self.product.finite and p_llm.finite and p_llm.value > 0:
        x = q_self.product.value / p_llm.value
        lo = q_self.product.lo / p_llm.hi if np.isfinite(p_llm.hi) else x
        hi = q_self.product.hi / p_llm.lo if np.isfinite(p_llm.lo) and p_llm.lo > 0 else x
        ax2.axvspan(max(lo, 1e-3), hi, color="#2ca02c", alpha=0.2,
                    label=f"LM self: (1−β)γ/p = {x:.2f} [{lo:.2f}, {hi:.2f}]")
        ax2.axvline(x, color="#2ca02c", lw=2)
    ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.12))
    fig.subplots_adjust(left=0.06, right=0.98, top=0.9, bottom=0.32, wspace=0.25)
    return save_figure(fig, out, "compare_phase_map", footer)
