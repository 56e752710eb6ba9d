"""The coverage figure: the language model's reset speed-ups across coverage settings, on the
simulation's prediction made at the same p before the LM runs (issue 11).

Inputs: an ``experiments/llm_coverage.py`` output directory -- ``pre_rl.json`` (p of the
warm-started policy, both readings, and its self-localizer), ``prediction.json`` (the simulation
at those p), and, once trained, ``metrics.parquet`` / ``resets.parquet`` (a ``hard_step`` column
names the setting). The LM tables are mapped with :func:`experiments.comparison.schema.map_llm`,
setting by setting, and every LM number uses the estimators of :mod:`experiments.comparison.stats`
(the same ones the prediction used on the simulation's curves).

Figure ``compare_coverage.{png,pdf}``: left, speed-up vs p on log axes (rows: over random resets,
over no reset; columns: per rollout / Q-rollout, per generated token / env step), the
simulation's prediction as a band (95% bootstrap over seeds) and the LM's points (95% bootstrap
over seeds; horizontal bars: the interval of the pre-RL p); right, the phase map in (p, (1-beta)
gamma) coordinates, where the theory's boundary is the diagonal, with one LM self-localizer
point per setting (measured during training; hollow: before RL, where the prediction placed
it). Table ``compare_coverage.md`` / ``.json``: per setting and pair, predicted vs measured, the
log-log slopes across settings, and the verdict.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from experiments.artifacts import write_json  # noqa: E402
from experiments.comparison import stats as st  # noqa: E402
from experiments.comparison.figures import save_figure  # noqa: E402
from experiments.comparison.schema import (  # noqa: E402
    InputError,
    map_llm,
    read_parquet,
)

COVERAGE_COMMAND = "python experiments/llm_coverage.py --out DIR"
#: pairs drawn: (method, comparator) in the common names
PAIRS = (("oracle", "random"), ("self", "random"), ("oracle", "none"), ("self", "none"))
COLORS = {"oracle": "#9467bd", "self": "#2ca02c", "random": "#1f77b4", "none": "#7f7f7f"}
LABELS = {"oracle": "oracle reset", "self": "self-localized reset (SRPO)",
          "random": "random reset (RRPO)", "none": "no reset (GRPO)"}
AXES = {"samples": ("per rollout (LM) / Q-rollout (simulation)",
                    "rollouts / Q-rollouts"),
        "compute": ("per generated token (LM) / env step incl. reset search (simulation)",
                    "generated tokens / env steps")}


@dataclass
class CoverageInputs:
    """A coverage run in the common schema.

    Attributes:
        directory: the run directory.
        pre: ``pre_rl.json``.
        prediction: ``prediction.json``.
        curves: LM learning curves (common curve schema + ``hard_step``), or None before RL.
        resets: LM reset events (common reset schema + ``hard_step``), or None before RL.
        summary: ``summary.json`` of the LM runs, or None.
    """

    directory: Path
    pre: dict
    prediction: dict
    curves: pd.DataFrame | None = None
    resets: pd.DataFrame | None = None
    summary: dict | None = None

    @property
    def positions(self) -> list[int]:
        return [int(s["hard_step"]) for s in self.pre["settings"]]


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise InputError(f"coverage: missing file {path} ({what}; produce it with "
                         f"`{COVERAGE_COMMAND}`)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"coverage: cannot read {path} as JSON: {exc}") from exc
    if not isinstance(data, dict) or "settings" not in data and what != "LM summary":
        raise InputError(f"coverage: {path} has no 'settings' list")
    return data


def load_coverage(directory: str | Path, require_lm: bool = True) -> CoverageInputs:
    """Read a coverage run; every missing file or column is an :class:`InputError`."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"coverage input directory {d} does not exist (produce it with "
                         f"`{COVERAGE_COMMAND}`)")
    pre = _read_json(d / "pre_rl.json", "the pre-RL measurement")
    prediction = _read_json(d / "prediction.json", "the simulation's prediction")
    cov = CoverageInputs(d, pre, prediction)
    p_pre = {int(s["hard_step"]) for s in pre["settings"]}
    p_pred = {int(s["hard_step"]) for s in prediction["settings"]}
    if p_pre != p_pred:
        raise InputError(f"coverage: {d}/prediction.json covers hard steps {sorted(p_pred)} but "
                         f"pre_rl.json {sorted(p_pre)}; rerun the predict phase")
    if not require_lm:
        return cov
    cmd = COVERAGE_COMMAND.replace("DIR", str(d))
    metrics = read_parquet(d / "metrics.parquet", "coverage", cmd)
    resets = read_parquet(d / "resets.parquet", "coverage", cmd)
    for name, frame in (("metrics.parquet", metrics), ("resets.parquet", resets)):
        if "hard_step" not in frame.columns:
            raise InputError(f"coverage: {d / name}: missing column(s) hard_step")
    curves, events = [], []
    for j in sorted(set(metrics["hard_step"].astype(int))):
        m = map_llm(metrics[metrics["hard_step"] == j].reset_index(drop=True),
                    resets[resets["hard_step"] == j].reset_index(drop=True),
                    d / "metrics.parquet", d / "resets.parquet")
        curves.append(m["curves"].assign(hard_step=j))
        events.append(m["resets"].assign(hard_step=j))
    cov.curves = pd.concat(curves, ignore_index=True)
    cov.resets = pd.concat(events, ignore_index=True)
    missing = sorted(set(cov.positions) - set(cov.curves["hard_step"]))
    if missing:
        raise InputError(f"coverage: {d}/metrics.parquet has no runs for hard steps {missing}")
    summ = d / "summary.json"
    cov.summary = json.loads(summ.read_text()) if summ.is_file() else None
    return cov


# ------------------------------------------------------------------------------------ analysis
def _est(rec) -> st.Estimate:
    """An Estimate from a {value, lo, hi, n} dict (None -> NaN)."""
    if rec is None:
        return st.NAN_ESTIMATE
    if isinstance(rec, st.Estimate):
        return rec
    f = [math.nan if rec.get(k) is None else float(rec[k]) for k in ("value", "lo", "hi", "n")]
    return st.Estimate(*f)


def setting_table(cov: CoverageInputs, n_boot: int = 1000) -> tuple[pd.DataFrame, dict]:
    """One row per (setting, axis, pair): p, predicted and measured speed-up (Estimates).

    Returns the table and the LM's bootstrap draws ``{(axis, pair): (S, B) array}`` (settings
    in the order of the table's p) for the slopes.
    """
    pred = {int(s["hard_step"]): s for s in cov.prediction["settings"]}
    pre = {int(s["hard_step"]): s for s in cov.pre["settings"]}
    rows, draws = [], {}
    for j in cov.positions:
        p = _est(pre[j]["p_state"])
        for axis in ("samples", "compute"):
            for m, c in PAIRS:
                pair = f"{m}_vs_{c}"
                predicted = _est(pred[j]["speedup"][axis].get(pair))
                measured, boots = st.NAN_ESTIMATE, np.full(n_boot, np.nan)
                if cov.curves is not None:
                    cur = cov.curves[cov.curves["hard_step"] == j]
                    value, b, n = st.speedup_draws(cur, m, c, axis, n_boot=n_boot)
                    measured = st.speedup_from_draws(value, b, n)
                    if len(b):
                        boots = b
                draws.setdefault((axis, pair), []).append((measured.value, boots))
                rows.append({"hard_step": j, "p": p.value, "p_est": p, "axis": axis,
                             "method": m, "comparator": c, "pair": pair,
                             "predicted": predicted, "measured": measured})
    return pd.DataFrame(rows), draws


def lm_slopes(table: pd.DataFrame, draws: dict) -> dict:
    """LM log-log slopes of speed-up vs p across settings, per axis and pair."""
    out = {}
    for (axis, pair), vals in draws.items():
        sub = table[(table["axis"] == axis) & (table["pair"] == pair)]
        out.setdefault(axis, {})[pair] = st.loglog_slope(
            sub["p"].to_numpy(float), [v for v, _b in vals], np.vstack([b for _v, b in vals]))
    return out


def lm_quality(cov: CoverageInputs) -> dict[int, dict[str, st.SelectorQuality]]:
    """Per setting: the LM localizers' (p, 1-beta, gamma) measured on training resets."""
    out = {}
    if cov.resets is None:
        return out
    for j in cov.positions:
        r = cov.resets[cov.resets["hard_step"] == j]
        out[j] = {m: st.selector_quality(r, m) for m in ("self", "random", "oracle")
                  if m in set(r["method"])}
    return out


def _verdict_slope(sim: st.Estimate, lm: st.Estimate) -> str:
    if not lm.finite or not np.isfinite(lm.lo):
        return "undecided (the LM's speed-up is not reached at some setting in too many resamples)"
    if not sim.finite or not np.isfinite(sim.lo):
        return "no simulation slope to compare"
    lm_sign = 1 if lm.lo > 0 else -1 if lm.hi < 0 else 0
    sim_sign = 1 if sim.lo > 0 else -1 if sim.hi < 0 else 0
    overlap = lm.lo <= sim.hi and sim.lo <= lm.hi
    if lm_sign == 0:
        return ("LM flat within its interval" + (" (the simulation predicts "
                + ("a decrease" if sim_sign < 0 else "an increase") + ")" if sim_sign else ""))
    if sim_sign and lm_sign == sim_sign:
        return "follows (same sign, intervals overlap)" if overlap else \
            "same direction, different size (intervals do not overlap)"
    if sim_sign and lm_sign != sim_sign:
        return "opposite to the simulation"
    return "LM has a slope where the simulation is flat"


def analyze(cov: CoverageInputs, n_boot: int = 1000) -> dict:
    """Everything the figure and the table need."""
    table, draws = setting_table(cov, n_boot)
    slopes = lm_slopes(table, draws) if cov.curves is not None else {}
    sim_slopes = {a: {k: _est(v) for k, v in d.items()}
                  for a, d in cov.prediction.get("slopes", {}).items()}
    verdicts = {}
    for axis in ("samples", "compute"):
        for m, c in PAIRS:
            pair = f"{m}_vs_{c}"
            if slopes:
                verdicts[(axis, pair)] = _verdict_slope(
                    sim_slopes.get(axis, {}).get(pair, st.NAN_ESTIMATE), slopes[axis][pair])
    inside = []
    for r in table.itertuples():
        pr, me = r.predicted, r.measured
        if pr.finite and me.finite and np.isfinite(pr.lo) and np.isfinite(me.lo):
            inside.append(bool(me.lo <= pr.hi and pr.lo <= me.hi))
    return {"table": table, "lm_slopes": slopes, "sim_slopes": sim_slopes,
            "verdicts": verdicts, "quality": lm_quality(cov),
            "overlap_share": (float(np.mean(inside)), len(inside)) if inside else (math.nan, 0)}


# ------------------------------------------------------------------------------------ drawing
def _yerr(e: st.Estimate, floor: float) -> tuple[float, float]:
    lo = e.lo if np.isfinite(e.lo) else e.value
    hi = e.hi if np.isfinite(e.hi) else e.value
    lo = max(lo, floor)
    return max(e.value - lo, 0.0), max(hi - e.value, 0.0)


def _speedup_panel(ax, table: pd.DataFrame, axis: str, comparator: str, has_lm: bool,
                   floor: float) -> None:
    sub = table[(table["axis"] == axis) & (table["comparator"] == comparator)]
    for m in ("oracle", "self"):
        s = sub[sub["method"] == m].sort_values("p")
        pr = list(s["predicted"])
        ok = np.array([e.finite for e in pr])
        if ok.any():
            x = s["p"].to_numpy(float)[ok]
            v = np.array([e.value for e in pr])[ok]
            lo = np.array([max(e.lo, floor) if np.isfinite(e.lo) else e.value for e in pr])[ok]
            hi = np.array([e.hi if np.isfinite(e.hi) else e.value for e in pr])[ok]
            ax.plot(x, v, "-", color=COLORS[m], lw=1.6, alpha=0.9,
                    label=f"simulation: {LABELS[m]} (prediction)")
            ax.fill_between(x, lo, hi, color=COLORS[m], alpha=0.15, lw=0)
        if not has_lm:
            continue
        for r in s.itertuples():
            e, pe = r.measured, r.p_est
            xerr = np.array([[r.p - pe.lo if np.isfinite(pe.lo) else 0.0],
                             [pe.hi - r.p if np.isfinite(pe.hi) else 0.0]])
            if e.finite and e.value > 0:
                ax.errorbar([r.p], [max(e.value, floor)],
                            yerr=np.array(_yerr(e, floor))[:, None], xerr=xerr,
                            fmt="*" if m == "self" else "P", ms=11 if m == "self" else 8,
                            color=COLORS[m], mec="black", capsize=3, zorder=5)
            else:  # never reaches the comparator's final score: drawn at the floor
                ax.plot([r.p], [floor * 1.15], "v", color=COLORS[m], mec="black", ms=8,
                        zorder=5)
        ax.plot([], [], "*" if m == "self" else "P", color=COLORS[m], mec="black",
                label=f"language model: {LABELS[m]} (▼: not reached)")
    ax.axhline(1.0, color="0.3", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("coverage p (state reading, before RL)")
    ax.set_ylabel(f"speed-up over {LABELS[comparator]}\n({AXES[axis][1]} to its final score)",
                  fontsize=8)
    what = "per sample" if axis == "samples" else "per unit of compute"
    ax.set_title(f"over {LABELS[comparator]}, {what}", fontsize=9)
    ax.legend(fontsize=6.5, loc="best")


def _phase_panel(ax, cov: CoverageInputs, quality: dict, sim_phase: pd.DataFrame | None) -> None:
    ps = [s["p_state"]["value"] for s in cov.pre["settings"]]
    lo_p = min([p for p in ps if p and p > 0] + [0.05]) / 2
    grid = np.geomspace(lo_p, 1.0, 100)
    ax.fill_between(grid, grid, 1.2, color="#2ca02c", alpha=0.07, lw=0,
                    label="(1−β)γ > p: the selector beats random resets (theory)")
    ax.plot(grid, grid, "k-", lw=1.2, label="boundary (1−β)γ = p")
    if sim_phase is not None and len(sim_phase):
        ph = sim_phase.groupby(["p", "beta", "gamma"], as_index=False)[
            ["precision", "recall", "ratio_vs_random"]].mean()
        q = ph["precision"] * ph["recall"]
        val = np.log2(ph["ratio_vs_random"].clip(lower=1e-3))
        lim = max(1.0, float(np.nanmax(np.abs(val)))) if val.notna().any() else 1.0
        sc = ax.scatter(ph["p"], q, c=val, cmap="RdBu", vmin=-lim, vmax=lim, s=18,
                        edgecolor="0.5", lw=0.3, zorder=2)
        cb = plt.colorbar(sc, ax=ax, fraction=0.04, pad=0.02)
        cb.set_label("simulation (sweep P6): log2(selector / random improvement)", fontsize=7)
    for s in cov.pre["settings"]:
        j = int(s["hard_step"])
        p0 = _est(s["p_state"])
        sl = s["self_localizer"]
        prod0 = _est(sl.get("product"))
        if p0.finite and prod0.finite:
            ax.plot([p0.value], [max(prod0.value, lo_p)], "*", ms=12, mfc="none",
                    mec=COLORS["self"], mew=1.4, zorder=4)
            right = p0.value > 0.5  # near the right edge: label to the left, inside the panel
            ax.annotate(f"j={j}", (p0.value, max(prod0.value, lo_p)), textcoords="offset points",
                        xytext=(-8 if right else 6, -10), ha="right" if right else "left",
                        fontsize=7, color="0.25")
        qs = quality.get(j, {})
        for m, marker in (("self", "*"), ("random", "s"), ("oracle", "P")):
            qq = qs.get(m)
            if qq is None or not (qq.coverage.finite and qq.product.finite):
                continue
            ax.errorbar([qq.coverage.value], [max(qq.product.value, lo_p)],
                        xerr=np.array(_yerr(qq.coverage, 1e-6))[:, None],
                        yerr=np.array(_yerr(qq.product, lo_p))[:, None], fmt=marker,
                        ms=12 if m == "self" else 7, color=COLORS[m], mec="black", capsize=2,
                        zorder=5)
            if m == "self" and p0.finite and prod0.finite:
                ax.plot([p0.value, qq.coverage.value],
                        [max(prod0.value, lo_p), max(qq.product.value, lo_p)], ":",
                        color=COLORS["self"], lw=0.8)
    ax.plot([], [], "*", ms=10, mfc="none", mec=COLORS["self"],
            label="LM self-localizer before RL (where the prediction placed it)")
    if quality:
        for m, marker in (("self", "*"), ("random", "s"), ("oracle", "P")):
            ax.plot([], [], marker, color=COLORS[m], mec="black",
                    label=f"LM {m} during training: (p, (1−β)γ)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo_p, 1.1)
    ax.set_ylim(lo_p, 1.2)
    ax.set_xlabel("coverage p (state reading)")
    ax.set_ylabel("(1−β)γ = P(the localizer's own answer is clean)")
    ax.set_title("phase map (theory: a selector beats random resets above the diagonal)",
                 fontsize=9)
    ax.legend(fontsize=6.5, loc="lower right")


def draw(cov: CoverageInputs, result: dict, out: Path, stem: str, title: str,
         footer: str | None = None, sim_phase: pd.DataFrame | None = None) -> list[Path]:
    """The figure: speed-up vs p (2 x 2) and the phase map; PNG and PDF."""
    table = result["table"]
    has_lm = cov.curves is not None
    vals = [e for col in ("predicted", "measured") for e in table[col] if e.finite]
    los = [e.lo for e in vals if np.isfinite(e.lo) and e.lo > 0] + [e.value for e in vals
                                                                   if e.value > 0]
    floor = max(min(los + [0.5]) / 2, 1e-3) if los else 0.1
    fig = plt.figure(figsize=(16, 9.5))
    gs = fig.add_gridspec(2, 3, width_ratios=[1, 1, 1.15], wspace=0.3, hspace=0.35)
    for r, comp in enumerate(("random", "none")):
        for c, axis in enumerate(("samples", "compute")):
            _speedup_panel(fig.add_subplot(gs[r, c]), table, axis, comp, has_lm, floor)
    _phase_panel(fig.add_subplot(gs[:, 2]), cov, result["quality"], sim_phase)
    lines = []
    for axis in ("samples", "compute"):
        parts = []
        for m, c in PAIRS:
            pair = f"{m}_vs_{c}"
            sim = result["sim_slopes"].get(axis, {}).get(pair, st.NAN_ESTIMATE)
            txt = f"{m} vs {c}: sim {sim.fmt(digits=2)}"
            if has_lm:
                txt += f", LM {result['lm_slopes'][axis][pair].fmt(digits=2)}"
            parts.append(txt)
        lines.append(f"log-log slope of speed-up vs p, {AXES[axis][1]}: " + "; ".join(parts))
    fig.suptitle(title, fontsize=12)
    text = "\n".join(lines) + ("\n" + footer if footer else "")
    fig.text(0.01, 0.02, text, fontsize=7, va="top", ha="left", family="monospace")
    return save_figure(fig, out, stem, dpi=130)


def prediction_figure(pre: dict, prediction: dict, out: Path) -> list[Path]:
    """The prediction alone (before any LM run): ``prediction.{png,pdf}`` in ``out``."""
    cov = CoverageInputs(Path(out), pre, prediction)
    result = analyze(cov, n_boot=10)
    return draw(cov, result, Path(out), "prediction",
                "PREDICTION (simulation at the LM's pre-RL coverage, written before the LM runs)",
                footer=f"pre-RL measurement and prediction: {out}")


def coverage_outputs(cov: CoverageInputs, out: Path, provenance: list | None = None,
                     sim_phase: pd.DataFrame | None = None, n_boot: int = 1000):
    """Figure and table of a trained coverage run; returns (figure paths, md, json, result).

    ``provenance``: the input runs (``experiments.comparison.provenance.RunProvenance``), named
    in the figure's footer and at the top of the table.
    """
    from experiments.comparison.provenance import footer_text

    provenance = provenance or []
    result = analyze(cov, n_boot)
    figs = draw(cov, result, out, "compare_coverage",
                "Speed-up of resets vs coverage p: simulation's prediction (bands) and the "
                "language model (points)", footer=footer_text(provenance) if provenance else None,
                sim_phase=sim_phase)
    md, js = write_table(cov, result, out, [p.line() for p in provenance])
    return figs, md, js, result


# ------------------------------------------------------------------------------------ table
def _fmt_x(e: st.Estimate) -> str:
    if not e.finite:
        return "not reached"
    return e.fmt(digits=2, suffix="x")


def cell_verdict(predicted: st.Estimate, measured: st.Estimate) -> str:
    """Where the LM's speed-up lies against the predicted interval at one setting: ``below``,
    ``inside``, ``above`` or ``n/a``. "Not reached" (the method's seed-mean curve never reaches
    the comparator's final score within the shared budget) means a speed-up below 1, since the
    comparator reaches it within the budget: it counts as ``below`` a prediction above 1."""
    if not predicted.finite or not np.isfinite(predicted.lo):
        return "n/a"
    if not measured.finite:
        return "below" if predicted.lo > 1 else "n/a"
    lo = measured.lo if np.isfinite(measured.lo) else measured.value
    hi = measured.hi if np.isfinite(measured.hi) else measured.value
    if hi < predicted.lo:
        return "below"
    if lo > predicted.hi:
        return "above"
    return "inside"


def cell_counts(result: dict) -> dict:
    """``{axis: {pair: {verdict: count}}}`` of :func:`cell_verdict` over the settings (every
    verdict present, zero when it does not occur)."""
    out: dict = {}
    for r in result["table"].itertuples():
        v = cell_verdict(r.predicted, r.measured)
        d = out.setdefault(r.axis, {}).setdefault(
            r.pair, {"below": 0, "inside": 0, "above": 0, "n/a": 0})
        d[v] += 1
    return out


def cell_totals(result: dict) -> dict:
    """``{axis: {verdict: count}}``: :func:`cell_counts` summed over the pairs."""
    out: dict = {}
    for axis, pairs in cell_counts(result).items():
        tot = out.setdefault(axis, {"below": 0, "inside": 0, "above": 0, "n/a": 0})
        for d in pairs.values():
            for k, c in d.items():
                tot[k] = tot.get(k, 0) + c
    return out


def overall_verdict(result: dict) -> str:
    """One paragraph: the slope verdict of every pair on both axes, and the interval overlap."""
    v = result["verdicts"]
    if not v:
        return "No LM runs yet: prediction only."
    parts = []
    for axis, name in (("samples", "per rollout"), ("compute", "per generated token")):
        pairs = "; ".join(f"{m} vs {c}: {v.get((axis, f'{m}_vs_{c}'), 'n/a')}" for m, c in PAIRS)
        parts.append(f"Slope of speed-up vs p, LM against the simulation, {name}: {pairs}.")
    totals = cell_totals(result)
    for axis, name in (("samples", "per rollout"), ("compute", "per generated token")):
        tot = totals.get(axis, {})
        parts.append(f"Settings x pairs, {name}: the LM's speed-up is below the predicted "
                     f"interval in {tot.get('below', 0)}, inside it in {tot.get('inside', 0)}, "
                     f"above it in {tot.get('above', 0)} (n/a {tot.get('n/a', 0)}; a speed-up "
                     "not reached counts as below a prediction above 1).")
    share, n = result["overlap_share"]
    if n:
        parts.append(f"The LM's interval overlaps the predicted one in {share:.0%} of the {n} "
                     "(setting, pair, axis) cells where both have one.")
    return " ".join(parts)


def write_table(cov: CoverageInputs, result: dict, out: Path,
                sources: list[str] | None = None) -> tuple[Path, Path]:
    """``compare_coverage.md`` and ``.json`` in ``out``; ``sources``: one line per input run."""
    pre = {int(s["hard_step"]): s for s in cov.pre["settings"]}
    lines = ["# Coverage: the simulation's p-dependence on the language model", ""]
    if sources:
        lines += ["Drawn from:", ""] + [f"- {ln}" for ln in sources] + [""]
    lines += ["Definitions: docs/compare.md (\"Coverage experiment\"). Intervals are 95%.", "",
              "## Coverage before RL (both readings) and the self-localizer", "",
              "| hard step | p (state reading) | p (model) | p_reach | p_mass | hard-step error "
              "| easy-step error | self 1−β | self γ | (1−β)γ − p |", "|---|---|---|---|---|---|---|---|---|---|"]
    for j, s in pre.items():
        sl = s["self_localizer"]
        lines.append(
            f"| {j} | {_est(s['p_state']).fmt(digits=3)} | "
            f"{_est(s['p_state_model']).fmt(digits=3)} | {_est(s['p_reach']).fmt(digits=3)} | "
            f"{_est(s['p_mass']).fmt(digits=3)} | {s['hard_step_error_model']:.3f} | "
            f"{s['easy_step_error_model']:.4f} | {_est(sl['precision']).fmt(digits=2)} | "
            f"{_est(sl['recall']).fmt(digits=2)} | {_est(sl['margin']).fmt(digits=3)} |")
    table = result["table"]
    for axis in ("samples", "compute"):
        lines += ["", f"## Speed-ups, {AXES[axis][1]}: predicted (simulation) / measured (LM)",
                  "", "| hard step | p | " + " | ".join(f"{m} vs {c}" for m, c in PAIRS) + " |",
                  "|---|---|" + "---|" * len(PAIRS)]
        for j in cov.positions:
            sub = table[(table["hard_step"] == j) & (table["axis"] == axis)]
            cells = []
            for m, c in PAIRS:
                r = sub[sub["pair"] == f"{m}_vs_{c}"].iloc[0]
                cells.append(f"{_fmt_x(r.predicted)} / {_fmt_x(r.measured)}")
            lines.append(f"| {j} | {sub['p'].iloc[0]:.3f} | " + " | ".join(cells) + " |")
        counts = cell_counts(result).get(axis, {})
        lines += ["", "| pair | slope vs p, simulation | slope vs p, LM | verdict | settings: "
                  "LM below / inside / above the prediction |", "|---|---|---|---|---|"]
        for m, c in PAIRS:
            pair = f"{m}_vs_{c}"
            sim = result["sim_slopes"].get(axis, {}).get(pair, st.NAN_ESTIMATE)
            lm = result["lm_slopes"].get(axis, {}).get(pair, st.NAN_ESTIMATE)
            k = counts.get(pair, {})
            lines.append(f"| {m} vs {c} | {sim.fmt(digits=2)} | {lm.fmt(digits=2)} | "
                         f"{result['verdicts'].get((axis, pair), '—')} | {k.get('below', 0)} / "
                         f"{k.get('inside', 0)} / {k.get('above', 0)} |")
    if result["quality"]:
        lines += ["", "## Localizers during training (failed parents of the reset methods)", "",
                  "| hard step | p (RRPO parents) | random: clean share | self 1−β | self γ | "
                  "self (1−β)γ | margin (1−β)γ − p (self parents) | predicted side (pre-RL) | "
                  "SRPO vs RRPO per rollout |", "|---|---|---|---|---|---|---|---|---|"]
        for j in cov.positions:
            q = result["quality"].get(j, {})
            qs, qr = q.get("self"), q.get("random")
            pre_margin = _est(pre[j]["self_localizer"]["margin"])
            side = ("beats random" if pre_margin.value > 0 else "does not beat random") \
                if pre_margin.finite else "n/a"
            sp = table[(table["hard_step"] == j) & (table["axis"] == "samples")
                       & (table["pair"] == "self_vs_random")]["measured"].iloc[0]
            lines.append(
                f"| {j} | {qr.coverage.fmt(digits=3) if qr else '—'} | "
                f"{qr.precision.fmt(pct=True) if qr else '—'} | "
                f"{qs.precision.fmt(digits=2) if qs else '—'} | "
                f"{qs.recall.fmt(digits=2) if qs else '—'} | "
                f"{qs.product.fmt(digits=3) if qs else '—'} | "
                f"{qs.margin.fmt(digits=3) if qs else '—'} | {side} | {_fmt_x(sp)} |")
    lines += ["", "## Verdict", "", overall_verdict(result), ""]
    md = out / "compare_coverage.md"
    md.write_text("\n".join(lines))
    js = out / "compare_coverage.json"

    def enc(o):
        if isinstance(o, st.Estimate):
            return {k: (None if not np.isfinite(v) else float(v)) for k, v in asdict(o).items()}
        if isinstance(o, st.SelectorQuality):
            return {k: enc(v) for k, v in asdict(o).items()}
        if isinstance(o, dict):
            return {str(k) if not isinstance(k, tuple) else "/".join(k): enc(v)
                    for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [enc(v) for v in o]
        if isinstance(o, (np.floating, float)):
            return float(o) if np.isfinite(o) else None
        if isinstance(o, np.integer):
            return int(o)
        return o

    rows = [{k: (enc(v) if isinstance(v, st.Estimate) else v) for k, v in r.items()}
            for r in table.drop(columns=["p_est"]).to_dict("records")]
    write_json(js, enc({
        "rows": rows, "lm_slopes": result["lm_slopes"], "sim_slopes": result["sim_slopes"],
        "verdicts": result["verdicts"], "verdict": overall_verdict(result),
        "cell_counts": cell_counts(result),
        "cell_totals": cell_totals(result),
        "measured_range": measured_range(table),
        "scores": final_scores(cov),
        "quality": {str(j): {m: asdict(q) for m, q in d.items()}
                    for j, d in result["quality"].items()},
        "sources": sources or [],
    }))
    return md, js


def measured_range(table: pd.DataFrame) -> dict:
    """``{axis: [min, max]}`` of the LM's speed-ups where reached (null when none is)."""
    out = {}
    for axis in ("samples", "compute"):
        vals = [r.measured.value for r in table[table["axis"] == axis].itertuples()
                if r.measured.finite]
        out[axis] = [min(vals), max(vals)] if vals else None
    return out


def final_scores(cov: CoverageInputs) -> dict:
    """Held-out J of the LM runs: per setting and method the start and final seed means (the
    final with its 95% bootstrap interval over seeds) and the seeds' standard deviation, and
    their ranges over all settings and methods (``range``). Empty before the LM runs."""
    if cov.curves is None:
        return {}
    out: dict = {}
    starts, finals, sds = [], [], []
    for j in cov.positions:
        cur = cov.curves[(cov.curves["hard_step"] == j) & cov.curves["score"].notna()]
        for m in sorted(set(cur["method"])):
            c = cur[cur["method"] == m].sort_values("iteration")
            first = c.groupby("seed")["score"].first().to_numpy(float)
            last = c.groupby("seed")["score"].last().to_numpy(float)
            final = st.ratio_of_sums(last, np.ones_like(last))
            sd = float(np.std(last, ddof=1)) if len(last) > 1 else math.nan
            out.setdefault(str(j), {})[m] = {"start": float(first.mean()), "final": final,
                                             "seed_sd": sd}
            starts.append(float(first.mean()))
            finals.append(final.value)
            sds.append(sd)
    sds = [x for x in sds if np.isfinite(x)]
    out["range"] = {"start": [min(starts), max(starts)], "final": [min(finals), max(finals)],
                    "seed_sd": [min(sds), max(sds)] if sds else None}
    return out
