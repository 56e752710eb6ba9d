"""P8 learning curves at a fixed Q-rollout budget: no reset / random / approximate / oracle reset.

Sampled CPI (``run_cpi(mode="sampled", step="constant")``) on the coverage family at p = 0.1
(headroom 4, tau 0.1); every reset rule gets the same budget of Q-rollouts (``none`` spends its
budget on whole on-policy episodes, the GRPO analogue; approx uses beta = 0.3, gamma = 0.7).
Rows: one per iteration (J against cumulative Q-rollouts).

Fair comparison (each method at its own tuned setting). A cell is one (constant step
``step_size``, batch ``batch``, ``split``, seed) and runs all four reset rules on one environment
instance. The grid of steps x batches is run twice, on two disjoint sets of instances:

* ``split="select"``: per method (and p), the setting with the highest mean *final* J (J after
  the last iteration within the budget) over the seeds; settings within ``TIE_FRAC`` of the
  initial gap J* - J_0 of the best count as tied and the tie goes to the larger area under the
  learning curve (mean J over the budget). Final J rather than area because the speed-up below
  is measured against the comparator's final score: tuning the comparator for its final score
  sets it the highest bar (an area-tuned comparator that rises fast and ends low would inflate
  every speed-up over it).
* ``split="report"``: the learning curves, speed-ups, final J and P4 decrease counts of each
  method *at the setting chosen on the select split*; selection and report never share an
  instance. The environment instance depends only on (p, tau, split, seed), so within a split
  every setting of one seed runs on the same instance and methods at different tuned settings
  are still compared pairwise by seed.

The shared setting step 0.5, batch 400 (the experiment's earlier single setting) is read from
the report split as a second, deliberately *untuned* comparison: it shows each reset rule's
sensitivity to a step that is unsafe under estimation noise.

Speed-up of a method over a comparator = Q-rollouts the comparator spent to first reach its own
final score / Q-rollouts the method needed to reach that score (paper, LLM: 2.3-2.7x for
self-reset over random reset). Seeds where the method never reaches it are left out of the mean
(``n_points`` says how many remain; ``n_seeds`` how many there were).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from cpi.envs import coverage_family
from experiments.sweep import plots
from experiments.sweep.cells import canonical_json
from experiments.sweep.common import METHOD_LABEL, child_seed, run_cpi_frame, split_seeds
from experiments.sweep.registry import Experiment
from experiments.sweep.stats import bootstrap_mean, fit_record

METHODS = ("none", "random", "approx", "oracle")
ENV = {"n_actions": 4, "horizon": 8, "noise": 0.5, "headroom": 4.0}
#: Constant steps tried for every method (1.0 = sampled policy iteration).
ALPHAS = {"tiny": (0.1, 0.5, 1.0), "quick": (0.05, 0.1, 0.2, 0.5, 1.0),
          "default": (0.05, 0.1, 0.2, 0.5, 1.0), "full": (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)}
#: Batch sizes (accepted reset states or episodes per iteration); at least ~8 iterations each.
BATCHES = {"tiny": (400,), "quick": (400, 1600, 6400), "default": (400, 1600, 6400, 25600),
           "full": (100, 400, 1600, 6400, 25600, 102400)}
BUDGETS = {"tiny": 20_000, "quick": 60_000, "default": 200_000, "full": 1_000_000}
SHARED = {"step_size": 0.5, "batch": 400}
SPLITS = ("select", "report")
TIE_FRAC = 0.01
#: Round-off tolerance when asking whether a run reached a score (J values equal to J* differ
#: in the last bits between methods).
REACH_TOL = 1e-9
PAIRS = (("oracle", "random"), ("approx", "random"), ("random", "none"), ("oracle", "none"),
         ("approx", "none"))
SETTING = ["step_size", "batch"]


def configs(size: str, p_values):
    ps = p_values or ((0.1,) if size != "full" else (0.05, 0.1, 0.3))
    return [{"p": float(p), "tau": 0.1, "batch": b, "budget": BUDGETS[size], "step_size": a,
             "split": split}
            for split in SPLITS for a in ALPHAS[size] for b in BATCHES[size] for p in ps]


def instance_seed(config: dict, seq: np.random.SeedSequence) -> int:
    """Environment seed from (base seed, experiment, p, tau, split, seed) only, so that every
    (step, batch) setting of one seed and split runs on the same instance."""
    base, exp_word = (int(w) for w in np.atleast_1d(seq.entropy)[:2])
    inst = {k: config[k] for k in ("p", "tau", "split")}
    word = zlib.crc32(canonical_json(inst).encode())
    env_seed, _ = split_seeds(np.random.SeedSequence([base, exp_word, word],
                                                     spawn_key=seq.spawn_key), 0)
    return env_seed


def run_cell(config: dict, seq: np.random.SeedSequence) -> pd.DataFrame:
    mdp = coverage_family(config["p"], config["tau"], seed=instance_seed(config, seq), **ENV)
    frames = []
    for i, method in enumerate(METHODS):
        f = run_cpi_frame(mdp, drop=("tau", "beta", "gamma"), reset=method, mode="sampled",
                          tau=config["tau"], seed=child_seed(seq, i), step="constant",
                          alpha=config["step_size"], n_samples=config["batch"], max_iters=10_000,
                          max_q_rollouts=config["budget"], beta=0.3, gamma=0.7)
        frames.append(f.assign(method=method))
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------ selection
def _with_defaults(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of older sweeps (one setting, no split) read as the shared setting's report split."""
    rows = rows.copy()
    if "step_size" not in rows:
        rows["step_size"] = SHARED["step_size"]
    if "split" not in rows:
        rows["split"] = "report"
    return rows


def step_curve(run: pd.DataFrame, grid: np.ndarray) -> np.ndarray:
    """J after the Q-rollouts on ``grid`` were spent (J_0 before the first iteration completes)."""
    x = run["q_rollouts_cum"].to_numpy(float)
    y = np.concatenate([[run["J"].iloc[0]], run["J_next"].to_numpy(float)])
    return y[np.searchsorted(x, grid, side="right")]


def run_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per run (split, p, method, setting, seed): final J, area, J decreases."""
    rows = _with_defaults(rows)
    out = []
    keys = ["split", "p", "method", *SETTING, "seed"]
    for key, run in rows.sort_values("iteration").groupby(keys, sort=True):
        budget = float(run["budget"].iloc[0])
        grid = np.linspace(0.0, budget, 201)
        dec = run["improvement"].to_numpy(float) < -1e-12
        out.append({**dict(zip(keys, key)), "final_J": float(run["J_next"].iloc[-1]),
                    "auc_J": float(step_curve(run, grid).mean()), "J0": float(run["J"].iloc[0]),
                    "J_star": float(run["J_star"].iloc[0]), "iterations": len(run),
                    "decreases": int(dec.sum()), "decrease_fraction": float(dec.mean()),
                    "below_start": bool(run["J_next"].iloc[-1] < run["J"].iloc[0] - 1e-12)})
    return pd.DataFrame(out)


def select_settings(rows: pd.DataFrame) -> dict:
    """``{(p, method): (step_size, batch)}`` chosen on the select split (report split if the
    rows have no select split): highest mean final J, ties (within TIE_FRAC of the initial gap)
    to the larger mean area under the curve."""
    tab = run_table(rows)
    split = "select" if (tab["split"] == "select").any() else "report"
    tab = tab[tab["split"] == split]
    means = tab.groupby(["p", "method", *SETTING])[["final_J", "auc_J", "J0", "J_star"]].mean()
    chosen = {}
    for (p, method), m in means.groupby(level=["p", "method"]):
        tol = TIE_FRAC * float((m["J_star"] - m["J0"]).mean())
        tied = m[m["final_J"] >= m["final_J"].max() - tol]
        best = tied["auc_J"].idxmax()
        chosen[(float(p), method)] = (float(best[2]), int(best[3]))
    return chosen


def tuned_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Report-split rows of each method at its selected setting (the tuned comparison)."""
    rows = _with_defaults(rows)
    chosen = select_settings(rows)
    keep = np.zeros(len(rows), dtype=bool)
    rep = (rows["split"] == "report").to_numpy()
    for (p, method), (a, b) in chosen.items():
        keep |= rep & (rows["p"].to_numpy() == p) & (rows["method"].to_numpy() == method) \
            & (rows["step_size"].to_numpy() == a) & (rows["batch"].to_numpy() == b)
    return rows[keep]


def shared_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Report-split rows of every method at the shared step 0.5, batch 400."""
    rows = _with_defaults(rows)
    return rows[(rows["split"] == "report") & (rows["step_size"] == SHARED["step_size"])
                & (rows["batch"] == SHARED["batch"])]


# ------------------------------------------------------------------------------------ speed-ups
def samples_to_reach(f: pd.DataFrame, score: float) -> float:
    hit = np.flatnonzero(f["J_next"].to_numpy() >= score - REACH_TOL)
    return float(f["q_rollouts_cum"].iloc[hit[0]]) if len(hit) else np.nan


def speedups(rows: pd.DataFrame, method: str, comparator: str) -> np.ndarray:
    """Per (p, seed): comparator's Q-rollouts to its final score / method's to the same score."""
    out = []
    for _, cell in rows.groupby(["p", "seed"]):
        comp = cell[cell["method"] == comparator].sort_values("iteration")
        mine = cell[cell["method"] == method].sort_values("iteration")
        if comp.empty or mine.empty:
            continue
        final = float(comp["J_next"].iloc[-1])
        n_comp = samples_to_reach(comp, final)
        n_mine = samples_to_reach(mine, final)
        out.append(n_comp / n_mine if np.isfinite(n_mine) else np.nan)
    return np.asarray(out, float)


def _speedup_fits(rows: pd.DataFrame, suffix: str, what: str, extra: dict) -> dict:
    fits = {}
    for method, comp in PAIRS:
        s = speedups(rows, method, comp)
        est, lo, hi = bootstrap_mean(s)
        fits[f"speedup_{method}_vs_{comp}{suffix}"] = fit_record(
            est, (lo, hi), None, int(np.isfinite(s).sum()), n_seeds=len(s),
            description=f"Q-rollouts {comp} needs for its final score / Q-rollouts {method} "
                        f"needs, {what}; mean over seeds where {method} reaches it "
                        "(paper, LLM: 2.3-2.7x self/oracle vs random)", **extra)
    return fits


def _per_method_fits(runs: pd.DataFrame, suffix: str, what: str, settings: dict) -> dict:
    fits = {}
    for method in METHODS:
        r = runs[runs["method"] == method]
        if r.empty:
            continue
        extra = {"n_seeds": int(len(r))}
        if method in settings:
            extra["setting"] = settings[method]
        est, lo, hi = bootstrap_mean(r["decrease_fraction"].to_numpy())
        fits[f"decrease_fraction_{method}{suffix}"] = fit_record(
            est, (lo, hi), None, len(r), decreases_mean=float(r["decreases"].mean()),
            iterations_mean=float(r["iterations"].mean()),
            ends_below_start=int(r["below_start"].sum()), **extra,
            description=f"P4 under sampling: fraction of iterations where J decreased, {what} "
                        "(P4's 0 holds only for the conservative theory step)")
        est, lo, hi = bootstrap_mean(r["final_J"].to_numpy())
        fits[f"final_J_{method}{suffix}"] = fit_record(
            est, (lo, hi), None, len(r), J0=float(r["J0"].mean()),
            J_star=float(r["J_star"].mean()), **extra,
            description=f"J at the end of the Q-rollout budget, {what}")
    return fits


def _settings_by_method(chosen: dict) -> dict:
    out: dict = {}
    for (p, method), (a, b) in chosen.items():
        out.setdefault(method, []).append({"p": p, "step_size": a, "batch": b})
    return {m: v[0] if len(v) == 1 else v for m, v in out.items()}


def analyze(rows: pd.DataFrame) -> dict:
    rows = _with_defaults(rows)
    settings = _settings_by_method(select_settings(rows))
    shared = shared_rows(rows)
    tuned = tuned_rows(rows)
    n_sel = int(rows.loc[rows["split"] == "select", "seed"].nunique())
    sel_note = (f"settings chosen on {n_sel} separate select-split seeds" if n_sel
                else "settings chosen on the reported seeds")
    fits = _speedup_fits(shared, "", "all methods at the shared constant step 0.5, batch 400",
                         {"setting": dict(SHARED)})
    fits.update(_speedup_fits(tuned, "_tuned", "each method at its tuned (step, batch), "
                              + sel_note, {"settings": settings}))
    tab = run_table(rows)
    rep = tab[tab["split"] == "report"]
    fits.update(_per_method_fits(tuned_table(rep, rows), "_tuned", "tuned setting, " + sel_note,
                                 settings))
    fits.update(_per_method_fits(rep[(rep["step_size"] == SHARED["step_size"])
                                     & (rep["batch"] == SHARED["batch"])],
                                 "_shared", "shared step 0.5, batch 400",
                                 {m: dict(SHARED) for m in METHODS}))
    paper = {"approx_vs_random": 2.3, "approx_vs_none": 2.7}
    for key, rec in fits.items():
        rec["kind"] = "measurement"
        for pair, value in paper.items():
            if key.startswith(f"speedup_{pair}"):
                rec["paper"] = value  # the paper's LLM number (SRPO vs RRPO / GRPO), not theory
    return fits


def tuned_table(rep: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Report-split run table restricted to the selected setting per (p, method)."""
    chosen = select_settings(rows)
    mask = [chosen.get((float(r.p), r.method)) == (float(r.step_size), int(r.batch))
            for r in rep.itertuples()]
    return rep[np.asarray(mask, dtype=bool)]


# ------------------------------------------------------------------------------------ figure
def _curves(ax, sub: pd.DataFrame, grid: np.ndarray, labels: dict) -> None:
    rng = np.random.default_rng(0)
    for method in METHODS:
        runs = sub[sub["method"] == method]
        if runs.empty:
            continue
        c = np.array([step_curve(run.sort_values("iteration"), grid)
                      for _, run in runs.groupby(["p", "seed"])])
        m = c.mean(axis=0)
        idx = rng.integers(0, len(c), size=(1000, len(c)))
        boots = c[idx].mean(axis=1)
        lo, hi = np.percentile(boots, 2.5, axis=0), np.percentile(boots, 97.5, axis=0)
        ax.plot(grid, m, color=plots.COLORS[method], label=labels[method], lw=1.6)
        ax.fill_between(grid, lo, hi, color=plots.COLORS[method], alpha=0.15, lw=0)
    ax.axhline(sub["J_star"].mean(), color="0.3", ls="--", lw=1, label="optimal J*")
    j0 = float(sub.sort_values("iteration").groupby(["method", "seed"])["J"].first().mean())
    ax.axhline(j0, color="0.6", ls=":", lw=1, label="start J_0")
    ax.set(xscale="log", xlabel="cumulative Q-rollouts (samples, log scale)",
           ylabel="J (expected return, reward units)")


def _fmt(rec: dict | None) -> str:
    if not rec or rec["estimate"] is None:
        return "not reached"
    lo, hi = rec["ci"]
    return f"{rec['estimate']:.1f}x [{lo:.1f}, {hi:.1f}]"


def _speedup_legend(ax, fits: dict, suffix: str) -> None:
    """Legend under the axis: the curves, then the speed-ups with their 95% intervals."""
    ax.plot([], [], " ", label="speed-up = samples to the comparator's final J (95% CI):")
    for m, c in PAIRS:
        rec = fits.get(f"speedup_{m}_vs_{c}{suffix}")
        n = "" if not rec else f" ({rec['n_points']}/{rec.get('n_seeds', '?')} seeds reach it)"
        ax.plot([], [], " ", label=f"   {m} vs {c}: {_fmt(rec)}{n}")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1,
              frameon=False)


def plot(rows: pd.DataFrame, fits: dict, outdir: Path) -> list[Path]:
    rows = _with_defaults(rows)
    fig, (a1, a2, a3) = plots.new_figure(3, width=5.6, height=7.6)
    budget = float(rows["budget"].max())
    grid = np.geomspace(min(100.0, float(rows["batch"].min())), budget, 240)
    chosen = select_settings(rows)
    tuned = tuned_rows(rows)
    shared = shared_rows(rows)
    tab = run_table(rows)

    def tuned_label(m):
        s = [(a, b) for (_p, mm), (a, b) in chosen.items() if mm == m]
        desc = ", ".join(f"α={a:g}, batch {b}" for a, b in s)
        return f"{METHOD_LABEL[m]}: {desc}"

    _curves(a1, tuned, grid, {m: tuned_label(m) for m in METHODS})
    n_rep = tuned["seed"].nunique()
    a1.set_title(f"(a) each method at its tuned step α and batch\n(report seeds, n={n_rep}; "
                 "band: 95% bootstrap of the mean)", fontsize=9)
    _speedup_legend(a1, fits, "_tuned")

    _curves(a2, shared, grid, {m: f"{METHOD_LABEL[m]}: α=0.5, batch 400" for m in METHODS})
    a2.set_title("(b) all methods at one shared step α=0.5, batch 400\n(untuned: sensitivity "
                 "to a step unsafe under noise)", fontsize=9)
    _speedup_legend(a2, fits, "")
    lo_y = min(a1.get_ylim()[0], a2.get_ylim()[0])
    hi_y = max(a1.get_ylim()[1], a2.get_ylim()[1])
    a1.set_ylim(lo_y, hi_y)
    a2.set_ylim(lo_y, hi_y)

    split = "select" if (tab["split"] == "select").any() else "report"
    sel = tab[tab["split"] == split]
    means = sel.groupby(["method", *SETTING])["final_J"].mean().reset_index()
    for method in METHODS:
        m = means[means["method"] == method]
        if m.empty:
            continue
        best = m.loc[m.groupby("step_size")["final_J"].idxmax()].sort_values("step_size")
        pick = [(a, b) for (_p, mm), (a, b) in chosen.items() if mm == method]
        sel_txt = ", ".join(f"α={a:g}, batch {b}" for a, b in pick)
        a3.plot(best["step_size"], best["final_J"], marker="o", ms=4, color=plots.COLORS[method],
                label=f"{METHOD_LABEL[method]} (selected {sel_txt})")
        for a, b in pick:
            y = float(m[(m["step_size"] == a) & (m["batch"] == b)]["final_J"].iloc[0])
            a3.plot([a], [y], marker="*", ms=14, color=plots.COLORS[method], mec="black",
                    ls="none")
    a3.plot([], [], marker="*", ms=10, color="0.5", mec="black", ls="none",
            label="selected (step, batch)")
    a3.axhline(sel["J_star"].mean(), color="0.3", ls="--", lw=1, label="optimal J*")
    a3.set(xscale="log", xlabel="constant step α (log scale)",
           ylabel="final J at the budget (reward units)")
    batches = sorted(set(sel["batch"]))
    a3.set_title(f"(c) tuning on {split} seeds (n={sel['seed'].nunique()}): final J vs α,\n"
                 f"best batch per α (batches {', '.join(str(int(b)) for b in batches)})",
                 fontsize=9)
    a3.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1,
              frameon=False)
    paths = plots.finish(fig, [a1, a2, a3], outdir / "budget_curves",
                         f"P8 learning speed by reset rule at a fixed budget "
                         f"({budget:,.0f} Q-rollouts, p={rows['p'].iloc[0]:g})")
    return paths


EXPERIMENT = Experiment("budget_curves", "P8", "learning curves at a fixed rollout budget",
                        configs, run_cell, analyze, plot)
