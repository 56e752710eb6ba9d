"""The simulation's prediction at the language model's coverage values, written before the LM runs.

For each setting of the coverage family, the warm-started policy's coverage p (state reading,
measured before any RL by :mod:`experiments.coverage_study.measure`) and its self-localizer's
(beta, gamma) are carried to the simulation:

* **learning curves** (as the sweep's P8 ``budget_curves``): sampled CPI with a constant step on
  ``cpi.envs.coverage_family(p, tau=0.1, n_actions=4, horizon=8, noise=0.5, headroom=4)`` for the
  reset rules none (GRPO analogue), random (RRPO), approx with the setting's (beta, gamma)
  (SRPO) and oracle, every rule at its own tuned (step, batch): chosen on ``select`` instances
  by the highest mean final J (ties within 1% of the initial gap to the larger area under the
  curve), then run on separate ``report`` instances. Speed-ups are read off the report curves
  with the estimator of ``experiments/compare.py`` (seed-mean curves; the comparator's samples to
  reach its own final score over the method's; percentile bootstrap over seeds, paired), on both
  axes: Q-rollouts (samples) and environment steps including the search for accepted reset
  states (compute).
* **phase map** (as the sweep's P6 ``approx_oracle``): one exact CPI iteration with the theory
  step: the improvement of the approximate selector and of the oracle relative to random resets,
  and the theory's verdict "beats random iff (1 - beta) gamma > p".

Everything runs through the public ``cpi`` API (``cpi.run_cpi``, ``cpi.envs.coverage_family``);
nothing here depends on ``experiments/sweep``. Cells are cached as parquet under
``<out>/prediction_cells/`` so a killed run resumes.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.comparison import stats as st

__all__ = ["ENV", "TAU", "PredictionSize", "SIZES", "predict", "PAIRS", "SIM_METHODS"]

#: the coverage family of the sweep's budget_curves / approx_oracle experiments
ENV = {"n_actions": 4, "horizon": 8, "noise": 0.5, "headroom": 4.0}
TAU = 0.1
#: simulation reset rule -> the common method name (docs/compare.md)
SIM_METHODS = {"none": "none", "random": "random", "approx": "self", "oracle": "oracle"}
#: (method, comparator) pairs of the prediction (common names)
PAIRS = (("oracle", "random"), ("self", "random"), ("oracle", "none"), ("self", "none"),
         ("random", "none"))
TIE_FRAC = 0.01


@dataclass(frozen=True)
class PredictionSize:
    """Size of the simulation prediction.

    Attributes:
        alphas: constant steps tried per reset rule.
        batches: accepted reset states (none: episodes) per iteration tried per reset rule.
        budget: Q-rollouts per run.
        select_seeds, report_seeds: instances used to choose the setting / to report.
        n_boot: bootstrap resamples of the speed-up intervals.
    """

    alphas: tuple[float, ...]
    batches: tuple[int, ...]
    budget: int
    select_seeds: int
    report_seeds: int
    n_boot: int = 1000


SIZES = {
    "quick": PredictionSize(alphas=(1.0,), batches=(200, 800), budget=4_000, select_seeds=2,
                            report_seeds=2, n_boot=100),
    "default": PredictionSize(alphas=(0.2, 0.5, 1.0), batches=(400, 1600, 6400), budget=50_000,
                              select_seeds=3, report_seeds=6, n_boot=1000),
}


def _instance_seed(p: float, split: str, seed: int) -> int:
    """Environment seed from (p, split, seed) only: every (step, batch) of one seed and split
    runs on the same instance, and select and report never share one."""
    word = zlib.crc32(json.dumps([round(p, 12), split]).encode())
    return int(np.random.SeedSequence([20260, word, seed]).generate_state(1)[0] % (2**31))


def run_cell(p: float, beta: float, gamma: float, split: str, seed: int, alpha: float,
             batch: int, budget: int) -> pd.DataFrame:
    """The four reset rules on one instance at one (step, batch): one row per iteration."""
    from cpi import run_cpi
    from cpi.envs import coverage_family

    mdp = coverage_family(p, TAU, seed=_instance_seed(p, split, seed), **ENV)
    frames = []
    for i, reset in enumerate(SIM_METHODS):
        res = run_cpi(mdp, reset=reset, mode="sampled", tau=TAU, seed=seed * 16 + i,
                      step="constant", alpha=alpha, n_samples=batch, max_iters=100_000,
                      max_q_rollouts=budget, beta=beta, gamma=gamma)
        f = res.frame[["iteration", "J", "J_next", "q_rollouts_cum", "env_steps_cum",
                       "coverage_mass", "precision", "recall"]].copy()
        f["J_star"] = res.J_star
        frames.append(f.assign(method=SIM_METHODS[reset]))
    return pd.concat(frames, ignore_index=True).assign(
        p=p, split=split, seed=seed, alpha=alpha, batch=batch, budget=budget)


def _final_and_area(run: pd.DataFrame, budget: float) -> tuple[float, float]:
    run = run.sort_values("iteration")
    x = run["q_rollouts_cum"].to_numpy(float)
    y = np.concatenate([[run["J"].iloc[0]], run["J_next"].to_numpy(float)])
    grid = np.linspace(0.0, budget, 201)
    return float(y[-1]), float(y[np.searchsorted(x, grid, side="right")].mean())


def choose_settings(rows: pd.DataFrame) -> dict[str, tuple[float, int]]:
    """``{method: (alpha, batch)}`` from the select split: best mean final J, ties (within
    ``TIE_FRAC`` of the initial gap) to the larger mean area under the curve."""
    sel = rows[rows["split"] == "select"]
    recs = []
    for (m, a, b, s), run in sel.groupby(["method", "alpha", "batch", "seed"]):
        final, area = _final_and_area(run, float(run["budget"].iloc[0]))
        recs.append({"method": m, "alpha": a, "batch": b, "seed": s, "final": final,
                     "area": area, "gap": float(run["J_star"].iloc[0] - run["J"].iloc[0])})
    tab = pd.DataFrame(recs).groupby(["method", "alpha", "batch"])[["final", "area", "gap"]].mean()
    chosen = {}
    for m, t in tab.groupby(level="method"):
        tol = TIE_FRAC * float(t["gap"].mean())
        tied = t[t["final"] >= t["final"].max() - tol]
        best = tied["area"].idxmax()
        chosen[m] = (float(best[1]), int(best[2]))
    return chosen


def report_curves(rows: pd.DataFrame, chosen: dict) -> pd.DataFrame:
    """Report-split curves at each method's chosen setting, in the common curve schema
    (method, seed, iteration, samples, compute, score); iteration 0 is the start (no cost)."""
    out = []
    rep = rows[rows["split"] == "report"]
    for m, (a, b) in chosen.items():
        sub = rep[(rep["method"] == m) & (rep["alpha"] == a) & (rep["batch"] == b)]
        for s, run in sub.groupby("seed"):
            run = run.sort_values("iteration")
            out.append(pd.DataFrame({"method": m, "seed": int(s), "iteration": [0],
                                     "samples": [0.0], "compute": [0.0],
                                     "score": [float(run["J"].iloc[0])]}))
            out.append(pd.DataFrame({
                "method": m, "seed": int(s), "iteration": run["iteration"].to_numpy() + 1,
                "samples": run["q_rollouts_cum"].to_numpy(float),
                "compute": run["env_steps_cum"].to_numpy(float),
                "score": run["J_next"].to_numpy(float)}))
    return pd.concat(out, ignore_index=True)


def exact_phase(p: float, beta: float, gamma: float, seed: int = 0) -> dict:
    """One exact CPI iteration (theory step): improvement of approx(beta, gamma) and of the
    oracle relative to random resets, and the realised precision / recall of the selector."""
    from cpi import run_cpi
    from cpi.envs import coverage_family

    mdp = coverage_family(p, TAU, seed=seed, **ENV)
    imp, real = {}, {}
    for reset in ("random", "oracle", "approx"):
        f = run_cpi(mdp, reset=reset, mode="exact", tau=TAU, seed=0, step="theory", max_iters=1,
                    beta=beta, gamma=gamma).frame
        imp[reset] = float(f["improvement"].iloc[0])
        real[reset] = (float(f["precision"].iloc[0]), float(f["recall"].iloc[0]))
    return {"ratio_self_vs_random": imp["approx"] / imp["random"],
            "ratio_oracle_vs_random": imp["oracle"] / imp["random"],
            "realised_precision": real["approx"][0], "realised_recall": real["approx"][1],
            "theory_beats_random": bool((1 - beta) * gamma > p),
            "margin": (1 - beta) * gamma - p}


def _estimate(e: st.Estimate) -> dict:
    return {k: (None if not np.isfinite(v) else float(v)) for k, v in asdict(e).items()}


def predict(settings: list[dict], size: PredictionSize, out: Path,
            progress: Callable[[str], None] = print) -> dict:
    """Run the prediction for every setting; cache cells; return the JSON-able record.

    Args:
        settings: one dict per LM setting with ``hard_step``, ``p`` (state reading, pre-RL),
            ``beta`` and ``gamma`` of the pre-RL self-localizer.
        size: grid and seeds.
        out: directory for ``prediction_cells/`` (the cache) and nothing else.
    """
    cells = Path(out) / "prediction_cells"
    cells.mkdir(parents=True, exist_ok=True)
    records, curves = [], []
    draws: dict = {}
    n_cells = len(settings) * (size.select_seeds + size.report_seeds) * len(size.alphas) * len(
        size.batches)
    done = 0
    for s in settings:
        p = float(s["p"])
        beta = float(np.clip(s["beta"], 0.0, 0.999))
        gamma = float(np.clip(s["gamma"], 0.001, 1.0))
        frames = []
        for split, n in (("select", size.select_seeds), ("report", size.report_seeds)):
            for seed in range(n):
                for a in size.alphas:
                    for b in size.batches:
                        key = f"p{p:.6f}_b{beta:.4f}_g{gamma:.4f}_{split}_s{seed}_a{a:g}_n{b}_B{size.budget}"
                        path = cells / f"{key}.parquet"
                        frame = None
                        if path.is_file():
                            try:
                                frame = pd.read_parquet(path)
                            except Exception:  # a torn write: recompute the cell
                                frame = None
                        if frame is None:
                            frame = run_cell(p, beta, gamma, split, seed, a, b, size.budget)
                            tmp = path.with_suffix(".tmp")
                            frame.to_parquet(tmp, index=False)
                            tmp.replace(path)
                        frames.append(frame)
                        done += 1
                progress(f"prediction: hard step {s['hard_step']} (p = {p:.3f}): {split} seed "
                         f"{seed} done ({done}/{n_cells} cells)")
        rows = pd.concat(frames, ignore_index=True)
        chosen = choose_settings(rows)
        cur = report_curves(rows, chosen)
        speed = {}
        for axis in ("samples", "compute"):
            speed[axis] = {}
            for m, c in PAIRS:
                value, boots, n = st.speedup_draws(cur, m, c, axis, n_boot=size.n_boot)
                speed[axis][f"{m}_vs_{c}"] = _estimate(st.speedup_from_draws(value, boots, n))
                draws.setdefault((axis, f"{m}_vs_{c}"), []).append(
                    (value, boots if len(boots) else np.full(size.n_boot, np.nan)))
        rep = rows[rows["split"] == "report"]
        finals = {}
        for m, (a, b) in chosen.items():
            sub = rep[(rep["method"] == m) & (rep["alpha"] == a) & (rep["batch"] == b)]
            last = sub.sort_values("iteration").groupby("seed").tail(1)["J_next"].to_numpy(float)
            finals[m] = _estimate(st.ratio_of_sums(last, np.ones_like(last), size.n_boot))
        self_rows = rep[rep["method"] == "self"]
        records.append({
            "hard_step": int(s["hard_step"]), "p": p, "beta": beta, "gamma": gamma,
            "settings": {m: {"alpha": a, "batch": b} for m, (a, b) in chosen.items()},
            "speedup": speed, "final_J": finals,
            "J0": float(rows["J"].iloc[0]), "J_star": float(rows["J_star"].iloc[0]),
            "sim_selector": {"precision": float(self_rows["precision"].mean()),
                             "recall": float(self_rows["recall"].mean())},
            "phase": exact_phase(p, beta, gamma),
        })
        curves.append(cur.assign(hard_step=int(s["hard_step"]), p=p))
    curves_df = pd.concat(curves, ignore_index=True)
    curves_df.to_parquet(Path(out) / "prediction_curves.parquet", index=False)
    ps = [r["p"] for r in records]
    slopes = {axis: {} for axis in ("samples", "compute")}
    for (axis, pair), vals in draws.items():
        slopes[axis][pair] = _estimate(st.loglog_slope(
            ps, [v for v, _b in vals], np.vstack([b for _v, b in vals])))
    return {"settings": records, "size": asdict(size), "env": {**ENV, "tau": TAU},
            "pairs": [f"{m}_vs_{c}" for m, c in PAIRS], "slopes": slopes,
            "slope_definition": "least-squares slope of log(speed-up) vs log(p) across the "
                                "settings; 95% interval from the per-setting bootstrap draws "
                                "(n: share of draws where every setting reaches the target)"}


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    raise TypeError(type(o).__name__)
