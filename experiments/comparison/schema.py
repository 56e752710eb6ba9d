"""One schema for both sides, and the readers that map each side's outputs into it.

The comparison never draws from a side's raw files: it first maps them into the tables below
(documented in docs/compare.md), so that every figure and every number of ``comparison.md`` is
computed by the same code for the simulation and for the language model.

Reset-event table (:data:`RESET_COLUMNS`), one row per reset parent (LLM) or per measured reset
cell (simulation; ``weight`` says how many reset events the row stands for):

==================  =====  ==================================================================
column              type   meaning
==================  =====  ==================================================================
side                str    ``"simulation"`` or ``"language model"``
method              str    canonical localizer: ``random``, ``self``, ``oracle`` or ``placed``
                           (simulation resets put at a chosen offset from the first error)
seed                int    replicate
iteration           int    training iteration (0 when not applicable)
n                   float  steps (thoughts) in the failed parent chain; NaN if unknown
k                   float  reset step, 1..n: thoughts 1..k-1 are kept as the prefix
rel_pos             float  k / n, the relative reset position
first_error         float  the true first wrong step (1..n); NaN when the chain has none
deviation           float  k - first_error (negative: reset before the error)
clean               bool   deviation <= 0: the kept prefix contains no wrong step
suffix_pass_at_k    float  suffix-group pass@k (a 0/1 outcome, or a rate for aggregated rows)
suffix_success      float  per-suffix success rate of the group (NaN if unknown)
group_size          float  number of suffixes k of pass@k (NaN if unknown)
from_fallback       bool   the reset step came from a fallback, not from the localizer
weight              float  reset events the row stands for (1 for one parent)
==================  =====  ==================================================================

Learning-curve table (:data:`CURVE_COLUMNS`), one row per method x seed x iteration:

==================  =====  ==================================================================
side, method, seed  -      as above; ``method`` is one of ``none``, ``random``, ``self``, ``oracle``
iteration           int    training iteration
samples             float  cumulative rollouts (LLM) or Q-rollouts (simulation)
compute             float  cumulative generated tokens (LLM, all of them) or environment steps
score               float  held-out pass rate (LLM) or J (simulation)
==================  =====  ==================================================================

Gradient-signal table (:data:`SIGNAL_COLUMNS`, LLM only): side, method, seed, iteration,
signal_reset, signal_base (mean per-token (|A|/T)(1 - pi(y)) over active tokens of each group).

Phase-map table (:data:`PHASE_COLUMNS`, simulation only): one row per (p, beta, gamma, seed) with
``ratio_vs_random`` = the selector's improvement divided by random resets' improvement, and
``ratio_vs_oracle`` = divided by the exact oracle's (NaN where the sweep gives none).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

SIDES = ("simulation", "language model")
#: canonical methods of the learning curves, in plotting order
METHODS = ("none", "random", "self", "oracle")
METHOD_LABELS = {
    "none": "no reset (GRPO)",
    "random": "random reset (RRPO)",
    "self": "self / approx. selector (SRPO)",
    "oracle": "oracle reset",
    "placed": "placed at set offsets (shares by design)",
}

RESET_COLUMNS = (
    "side", "method", "seed", "iteration", "n", "k", "rel_pos", "first_error", "deviation",
    "clean", "suffix_pass_at_k", "suffix_success", "group_size", "from_fallback", "weight",
)
CURVE_COLUMNS = ("side", "method", "seed", "iteration", "samples", "compute", "score")
SIGNAL_COLUMNS = ("side", "method", "seed", "iteration", "signal_reset", "signal_base")
PHASE_COLUMNS = ("p", "beta", "gamma", "seed", "precision", "recall", "ratio_vs_random",
                 "ratio_vs_oracle")
#: the simulation's selectors as measured during the budget_curves runs (per method x seed)
SIM_SELECTOR_COLUMNS = ("method", "seed", "p", "coverage", "precision", "recall")

#: method names found in the two sides' outputs -> canonical name
METHOD_ALIASES = {
    "grpo": "none", "none": "none", "no_reset": "none", "no-reset": "none", "base": "none",
    "rrpo": "random", "random": "random", "rr": "random", "cpi-rr": "random", "cpi_rr": "random",
    "srpo": "self", "self": "self", "approx": "self", "approx_oracle": "self",
    "approximate": "self", "selector": "self",
    "oracle": "oracle", "caro": "oracle", "cpi-caro": "oracle", "cpi_caro": "oracle",
    "exact": "oracle",
    "entropy-reset": "entropy", "entropy": "entropy", "fixed-reset": "fixed", "fixed": "fixed",
}

LLM_METRICS_FILE = "metrics.parquet"
LLM_RESETS_FILE = "resets.parquet"
CPI_RESULTS_FILE = "results.parquet"
CPI_SUMMARY_FILE = "summary.json"

CPI_COMMAND = "python experiments/cpi_sweep.py --out DIR"
LLM_COMMAND = "python experiments/llm_srpo.py --out DIR"

#: the simulation experiments the comparison reads
CPI_EXPERIMENTS = ("first_error", "budget_curves", "approx_oracle")


class InputError(ValueError):
    """A comparison input is missing or malformed; the message names the directory/file/column."""


@dataclass
class ComparisonInputs:
    """Both sides mapped into the common schema (see the module docstring).

    Attributes:
        resets: reset-event table, both sides.
        curves: learning-curve table, both sides.
        signal: gradient-signal table (language model).
        phase: phase-map table (simulation).
        llm_metrics: the LLM's per-iteration metrics with canonical ``method`` (for coverage).
        summary: the simulation's ``summary.json``.
        sim_selectors: the simulation's realised coverage / precision / recall per reset rule
            and seed (:data:`SIM_SELECTOR_COLUMNS`, from budget_curves).
        sources: side -> directory read.
        notes: what was optional and absent, said in words for comparison.md.
    """

    resets: pd.DataFrame
    curves: pd.DataFrame
    signal: pd.DataFrame
    phase: pd.DataFrame
    llm_metrics: pd.DataFrame
    summary: dict
    sim_selectors: pd.DataFrame = field(default_factory=pd.DataFrame)
    sources: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


# ---------------------------------------------------------------------------------------- helpers
def canonical_method(name) -> str:
    """Canonical method name of a side's label (``"srpo"`` -> ``"self"``); unknown: lowercased."""
    key = str(name).strip().lower()
    return METHOD_ALIASES.get(key, key)


def _check_dir(path: Path, side: str, command: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{side} input directory {path} does not exist (produce it with `{command}`)")
    if not path.is_dir():
        raise InputError(f"{side} input {path} is not a directory")
    return path


def read_parquet(path: Path, side: str, command: str) -> pd.DataFrame:
    """Read one parquet file; a missing or unreadable file is an :class:`InputError` naming it."""
    if not path.is_file():
        raise InputError(f"{side}: missing file {path} (produce it with `{command}`)")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise InputError(f"{side}: cannot read {path} as parquet: {exc}") from exc
    if len(frame) == 0:
        raise InputError(f"{side}: {path} has no rows")
    return frame


def require_columns(frame: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    """Raise an :class:`InputError` naming every column of ``columns`` absent from ``frame``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"{where}: missing column(s) {', '.join(missing)} "
            f"(present: {', '.join(map(str, frame.columns))})"
        )


def pick_column(frame: pd.DataFrame, candidates: Sequence[str], where: str,
                what: str, required: bool = True) -> str | None:
    """The first of ``candidates`` present in ``frame``; if none and ``required``: InputError."""
    for c in candidates:
        if c in frame.columns:
            return c
    if required:
        raise InputError(
            f"{where}: missing column for {what} (expected one of {', '.join(candidates)}; "
            f"present: {', '.join(map(str, frame.columns))})"
        )
    return None


def _numeric(frame: pd.DataFrame, column: str, where: str) -> pd.Series:
    """``frame[column]`` as float; non-numeric content is an InputError naming the column."""
    try:
        return pd.to_numeric(frame[column], errors="raise").astype(float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: column {column} is not numeric ({exc})") from exc


def _as_bool(series: pd.Series) -> pd.Series:
    if series.dtype == bool:
        return series
    return series.astype(str).str.lower().isin(("true", "1", "1.0", "yes"))


def _finish_resets(frame: pd.DataFrame) -> pd.DataFrame:
    """Derive rel_pos, deviation and clean where missing; order the columns."""
    out = frame.copy()
    for col in RESET_COLUMNS:
        if col not in out.columns:
            out[col] = np.nan
    dev_missing = out["deviation"].isna() & out["k"].notna() & out["first_error"].notna()
    out.loc[dev_missing, "deviation"] = out.loc[dev_missing, "k"] - out.loc[dev_missing, "first_error"]
    rel_missing = out["rel_pos"].isna() & out["k"].notna() & (out["n"] > 0)
    out.loc[rel_missing, "rel_pos"] = out.loc[rel_missing, "k"] / out.loc[rel_missing, "n"]
    # "clean" is recomputed from the deviation wherever one exists, so both sides use one rule.
    has_dev = out["deviation"].notna()
    clean = pd.Series(np.nan, index=out.index, dtype=object)
    clean[has_dev] = out.loc[has_dev, "deviation"] <= 0
    out["clean"] = clean
    out["from_fallback"] = _as_bool(out["from_fallback"].astype(object).where(
        out["from_fallback"].notna(), False))
    out["weight"] = out["weight"].fillna(1.0).astype(float)
    out["seed"] = out["seed"].astype(int)
    out["iteration"] = out["iteration"].fillna(0).astype(int)
    return out[list(RESET_COLUMNS)].reset_index(drop=True)


# ----------------------------------------------------------------------------- language model
def load_llm(directory: str | Path) -> dict[str, pd.DataFrame]:
    """Read ``metrics.parquet`` and ``resets.parquet`` of ``experiments/llm_srpo.py``.

    Returns ``{"resets", "curves", "signal", "metrics"}`` in the common schema. Every missing
    file or required column raises :class:`InputError` naming it.
    """
    side = "language model"
    d = _check_dir(Path(directory), side, LLM_COMMAND)
    mpath, rpath = d / LLM_METRICS_FILE, d / LLM_RESETS_FILE
    metrics = read_parquet(mpath, side, LLM_COMMAND)
    resets = read_parquet(rpath, side, LLM_COMMAND)
    return map_llm(metrics, resets, mpath, rpath)


def map_llm(metrics: pd.DataFrame, resets: pd.DataFrame, mpath: Path | str = LLM_METRICS_FILE,
            rpath: Path | str = LLM_RESETS_FILE) -> dict[str, pd.DataFrame]:
    """Map an LLM run's metrics and reset tables into the common schema (see :func:`load_llm`;
    ``mpath`` / ``rpath`` only name the sources in error messages)."""
    side = "language model"
    where = f"{side}: {mpath}"
    require_columns(metrics, ("iteration", "method", "seed", "rollouts", "generated_tokens",
                              "pass_rate"), where)
    score_col = pick_column(metrics, ("eval_pass_rate", "pass_rate", "J"), where, "the score")
    for col in ("iteration", "seed", "rollouts", "generated_tokens", "pass_rate", score_col):
        _numeric(metrics, col, where)
    metrics = metrics.copy()
    metrics["method"] = metrics["method"].map(canonical_method)

    curves = pd.DataFrame({
        "side": side,
        "method": metrics["method"],
        "seed": metrics["seed"].astype(int),
        "iteration": metrics["iteration"].astype(int),
        "samples": _numeric(metrics, "rollouts", where),
        "compute": _numeric(metrics, "generated_tokens", where),
        "score": _numeric(metrics, score_col, where),
    })
    # eval_pass_rate may be logged only every few iterations: keep the evaluated rows.
    curves = curves[curves["score"].notna()].reset_index(drop=True)

    sig_cols = [c for c in ("grad_signal_reset", "grad_signal_base") if c in metrics.columns]
    if len(sig_cols) == 2:
        signal = pd.DataFrame({
            "side": side, "method": metrics["method"], "seed": metrics["seed"].astype(int),
            "iteration": metrics["iteration"].astype(int),
            "signal_reset": _numeric(metrics, "grad_signal_reset", where),
            "signal_base": _numeric(metrics, "grad_signal_base", where),
        })
    else:
        signal = pd.DataFrame(columns=list(SIGNAL_COLUMNS))

    return {"resets": map_llm_resets(resets, rpath), "curves": curves, "signal": signal,
            "metrics": metrics}


def map_llm_resets(resets: pd.DataFrame, rpath: Path | str = LLM_RESETS_FILE) -> pd.DataFrame:
    """An LLM reset table (``resets.parquet``) in the common schema (``map_llm``)."""
    side = "language model"
    where = f"{side}: {rpath}"
    require_columns(resets, ("method", "seed", "iteration", "n", "k", "first_error",
                             "suffix_pass_at_k"), where)
    for col in ("seed", "iteration", "n", "k", "first_error", "suffix_pass_at_k"):
        _numeric(resets, col, where)
    n = _numeric(resets, "n", where)
    k = _numeric(resets, "k", where)
    if ((k < 1) | (k > n)).any():
        bad = resets.loc[(k < 1) | (k > n), ["n", "k"]].head(3).to_dict("records")
        raise InputError(f"{where}: reset step k outside 1..n in {int(((k < 1) | (k > n)).sum())} "
                         f"row(s), e.g. {bad}")
    group = None
    for c in ("group_size", "n_suffixes", "num_suffixes"):
        if c in resets.columns:
            group = _numeric(resets, c, where)
            break
    success = None
    if "suffix_success" in resets.columns:
        success = _numeric(resets, "suffix_success", where)
    elif "suffix_successes" in resets.columns and group is not None:
        success = _numeric(resets, "suffix_successes", where) / group
    elif "suffix_successes" in resets.columns:
        success = _numeric(resets, "suffix_successes", where) / 4.0  # the paper's 1x4 default
    fallback = None
    for c in ("from_fallback", "fallback"):
        if c in resets.columns:
            fallback = _as_bool(resets[c])
            break
    if fallback is None and "source" in resets.columns:
        fallback = resets["source"].astype(str).str.contains("fallback")
    mapped = pd.DataFrame({
        "side": side,
        "method": resets["method"].map(canonical_method),
        "seed": resets["seed"].astype(int),
        "iteration": resets["iteration"].astype(int),
        "n": n, "k": k,
        "first_error": _numeric(resets, "first_error", where),
        "deviation": _numeric(resets, "deviation", where) if "deviation" in resets.columns
        else np.nan,
        "suffix_pass_at_k": _numeric(resets, "suffix_pass_at_k", where),
        "suffix_success": np.nan if success is None else success,
        "group_size": np.nan if group is None else group,
        "from_fallback": False if fallback is None else fallback,
        "weight": 1.0,
    })
    return _finish_resets(mapped)


# --------------------------------------------------------------------------------- simulation
def _cpi_rows(results: pd.DataFrame, experiment: str, path: Path) -> pd.DataFrame:
    rows = results[results["experiment"] == experiment]
    if len(rows) == 0:
        present = ", ".join(sorted(map(str, results["experiment"].unique())))
        raise InputError(
            f"simulation: {path} has no rows of experiment {experiment!r} (present: {present}); "
            f"run `python experiments/cpi_sweep.py --only {experiment} --out {path.parent}`"
        )
    return rows.dropna(axis=1, how="all").reset_index(drop=True)


def _cpi_method(rows: pd.DataFrame, where: str, required: bool = True) -> pd.Series | None:
    col = pick_column(rows, ("method", "reset", "localizer", "selector"), where,
                      "the reset method", required=required)
    return None if col is None else rows[col].map(canonical_method)


def _cpi_first_error(rows: pd.DataFrame, where: str) -> pd.DataFrame:
    """Simulation reset events (P7): suffix-group pass@k by deviation from the first error.

    The sweep's ``first_error`` rows are aggregates: one row per (tree, seed, deviation) with the
    number of resets (``n_resets``) and the *sampled* suffix-group pass@k and per-suffix
    correction rate (the sampled columns are preferred so that the Wilson interval counts real
    Bernoulli outcomes, as on the LLM side). Resets are placed at set deviations, so the
    method is ``placed`` unless the rows name a reset method. In these rows ``k`` is the
    group size of pass@k (there is no ``first_error`` column), not a reset step.
    """
    dev_col = pick_column(rows, ("deviation", "offset", "reset_offset"), where,
                          "the deviation from the first error", required=False)
    if dev_col is None:
        require_columns(rows, ("k", "first_error", "n"), where)
    pass_col = pick_column(rows, ("suffix_pass_at_k", "pass_at_k_sampled", "pass_at_k",
                                  "pass_at_k_exact"), where, "the suffix-group pass@k")
    success_col = pick_column(rows, ("suffix_success", "correction_sampled", "correction",
                                     "correction_exact"), where, "", required=False)
    weight_col = pick_column(rows, ("n_resets", "n_parents", "n_trials", "trials", "count"),
                             where, "the number of reset events", required=False)
    k_is_step = "first_error" in rows.columns
    group_col = pick_column(rows, ("group_size", "n_suffixes", "pass_at")
                            + (() if k_is_step else ("k",)), where, "", required=False)
    method = _cpi_method(rows, where, required=False)
    mapped = pd.DataFrame({
        "side": "simulation",
        "method": "placed" if method is None else method,
        "seed": _numeric(rows, "seed", where).astype(int),
        "iteration": _numeric(rows, "iteration", where) if "iteration" in rows.columns else 0,
        "suffix_pass_at_k": _numeric(rows, pass_col, where),
        "suffix_success": _numeric(rows, success_col, where) if success_col else np.nan,
        "group_size": _numeric(rows, group_col, where) if group_col else np.nan,
        "weight": _numeric(rows, weight_col, where) if weight_col else 1.0,
    })
    if k_is_step:
        for col in ("n", "k", "first_error"):
            mapped[col] = _numeric(rows, col, where)
    for src in ("rel_pos", "reset_rel_pos"):
        if src in rows.columns:
            mapped["rel_pos"] = _numeric(rows, src, where)
            break
    if dev_col is not None:
        mapped["deviation"] = _numeric(rows, dev_col, where)
    return _finish_resets(mapped)


def _cpi_curves(rows: pd.DataFrame, where: str) -> pd.DataFrame:
    """Simulation learning curves (P8): J against cumulative Q-rollouts and environment steps."""
    require_columns(rows, ("seed", "iteration", "J"), where)
    method = _cpi_method(rows, where)
    samples_col = pick_column(rows, ("cum_q_rollouts", "cumulative_q_rollouts", "q_rollouts_cum",
                                     "total_q_rollouts", "q_rollouts"), where, "Q-rollouts")
    compute_col = pick_column(rows, ("cum_env_steps", "cumulative_env_steps", "env_steps_cum",
                                     "total_env_steps", "env_steps"), where,
                              "environment steps")
    frame = pd.DataFrame({
        "side": "simulation", "method": method,
        "seed": _numeric(rows, "seed", where).astype(int),
        "iteration": _numeric(rows, "iteration", where).astype(int),
        "samples": _numeric(rows, samples_col, where),
        "compute": _numeric(rows, compute_col, where),
        "score": _numeric(rows, "J", where),
        "cell": rows["cell_id"] if "cell_id" in rows.columns else rows["seed"].astype(str),
        "p": _numeric(rows, "p", where) if "p" in rows.columns else np.nan,
    })
    frame = frame.sort_values(["cell", "method", "iteration"])
    # per-iteration counts become cumulative ones (cumulative columns are used as they are)
    for col, src in (("samples", samples_col), ("compute", compute_col)):
        if not any(tag in src for tag in ("cum", "total")):
            frame[col] = frame.groupby(["cell", "method"])[col].cumsum()
    return frame.drop(columns="cell").reset_index(drop=True)


def _one_coverage(frame: pd.DataFrame, notes: list, what: str) -> pd.DataFrame:
    """Keep one p of a sweep that ran several (the one nearest the median); say so in ``notes``."""
    ps = sorted(frame["p"].dropna().unique())
    if len(ps) <= 1:
        return frame
    keep = ps[int(np.argmin([abs(p - float(np.median(ps))) for p in ps]))]
    notes.append(f"simulation {what}: the sweep ran p in {{{', '.join(f'{p:g}' for p in ps)}}}; "
                 f"the comparison uses p = {keep:g}")
    return frame[frame["p"] == keep]


def _cpi_selectors(rows: pd.DataFrame, where: str) -> pd.DataFrame:
    """Mean realised coverage, precision and recall of each reset rule per seed (budget_curves)."""
    if not {"precision", "recall"} <= set(rows.columns):
        return pd.DataFrame(columns=list(SIM_SELECTOR_COLUMNS))
    cov = pick_column(rows, ("coverage_mass", "coverage_reach", "coverage"), where, "",
                      required=False)
    frame = pd.DataFrame({
        "method": _cpi_method(rows, where), "seed": rows["seed"].astype(int),
        "p": _numeric(rows, "p", where) if "p" in rows.columns else np.nan,
        "coverage": _numeric(rows, cov, where) if cov else np.nan,
        "precision": _numeric(rows, "precision", where),
        "recall": _numeric(rows, "recall", where),
    })
    return frame.groupby(["method", "seed", "p"], as_index=False, dropna=False).mean()


def _cpi_phase(rows: pd.DataFrame, where: str) -> pd.DataFrame:
    """Simulation phase map (P6): the selector's improvement relative to random and oracle resets."""
    require_columns(rows, ("p", "beta", "gamma", "seed"), where)
    direct_random = pick_column(rows, ("ratio_to_random", "ratio_vs_random",
                                       "improvement_vs_random"), where, "", required=False)
    direct_oracle = pick_column(rows, ("ratio_to_oracle", "ratio_vs_oracle",
                                       "improvement_vs_oracle", "relative_improvement"),
                                where, "", required=False)
    out = rows[["p", "beta", "gamma", "seed"]].astype(float).copy()
    # the realised precision / recall of the sampled selector, where the sweep logs them
    # (they are what the LM's point measures); else the nominal 1 - beta and gamma
    out["precision"] = (_numeric(rows, "precision", where) if "precision" in rows.columns
                        else 1 - out["beta"])
    out["recall"] = _numeric(rows, "recall", where) if "recall" in rows.columns else out["gamma"]
    if direct_random or direct_oracle:
        out["ratio_vs_random"] = _numeric(rows, direct_random, where) if direct_random else np.nan
        out["ratio_vs_oracle"] = _numeric(rows, direct_oracle, where) if direct_oracle else np.nan
    else:
        # improvement per row, method per row: divide the selector's by random's and oracle's
        gain_col = pick_column(rows, ("improvement", "delta_J", "gain", "dJ"), where,
                               "the improvement (or ratio_vs_random / ratio_vs_oracle)")
        method = _cpi_method(rows, where)
        tab = rows.assign(_m=method, _g=_numeric(rows, gain_col, where))
        keys = ["p", "seed"]
        base = tab[tab["_m"].isin(("random", "oracle"))].groupby(keys + ["_m"])["_g"].mean()
        base = base.unstack("_m")
        sel = tab[tab["_m"] == "self"].groupby(keys + ["beta", "gamma"])["_g"].mean().reset_index()
        sel = sel.join(base, on=keys)
        out = sel[["p", "beta", "gamma", "seed"]].astype(float).copy()
        out["precision"], out["recall"] = 1 - out["beta"], out["gamma"]
        with np.errstate(divide="ignore", invalid="ignore"):
            out["ratio_vs_random"] = sel["_g"] / sel["random"] if "random" in sel else np.nan
            out["ratio_vs_oracle"] = sel["_g"] / sel["oracle"] if "oracle" in sel else np.nan
    out = out.groupby(["p", "beta", "gamma", "seed"], as_index=False).mean()
    return out[list(PHASE_COLUMNS)]


def load_cpi(directory: str | Path) -> dict:
    """Read ``results.parquet`` and ``summary.json`` of ``experiments/cpi_sweep.py``.

    Uses the experiments ``first_error`` (reset events), ``budget_curves`` (learning curves) and
    ``approx_oracle`` (phase map). Returns ``{"resets", "curves", "phase", "summary"}``.
    """
    side = "simulation"
    d = _check_dir(Path(directory), side, CPI_COMMAND)
    rpath, spath = d / CPI_RESULTS_FILE, d / CPI_SUMMARY_FILE
    results = read_parquet(rpath, side, CPI_COMMAND)
    if not spath.is_file():
        raise InputError(f"{side}: missing file {spath} (produce it with `{CPI_COMMAND}`)")
    try:
        summary = json.loads(spath.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{side}: cannot read {spath} as JSON: {exc}") from exc
    if not isinstance(summary, dict):
        raise InputError(f"{side}: {spath} must hold a JSON object, got {type(summary).__name__}")
    require_columns(results, ("experiment", "seed"), f"{side}: {rpath}")

    fe = _cpi_rows(results, "first_error", rpath)
    bc = _cpi_rows(results, "budget_curves", rpath)
    ao = _cpi_rows(results, "approx_oracle", rpath)
    notes: list[str] = []
    if "step_size" in bc.columns and len(bc):
        # budget_curves runs a grid of (step, batch) settings on two splits of seeds: keep the
        # report-split curves of each reset rule at its tuned setting (the fair comparison)
        from experiments.sweep.exp_budget_curves import select_settings, tuned_rows

        chosen = select_settings(bc)
        bc = tuned_rows(bc)
        notes.append("simulation learning curves: each reset rule at its tuned constant step "
                     "and batch (budget_curves report seeds): "
                     + "; ".join(f"{m} α={a:g}, batch {b}" for (_p, m), (a, b) in chosen.items()))
    where_bc = f"{side}: {rpath} [experiment budget_curves]"
    curves = _one_coverage(_cpi_curves(bc, where_bc), notes, "learning curves")
    selectors = _cpi_selectors(bc, where_bc)
    if len(selectors):
        selectors = selectors[selectors["p"].isin(curves["p"].unique())
                              | selectors["p"].isna()]
    return {
        "resets": _cpi_first_error(fe, f"{side}: {rpath} [experiment first_error]"),
        "curves": curves[list(CURVE_COLUMNS)].reset_index(drop=True),
        "phase": _cpi_phase(ao, f"{side}: {rpath} [experiment approx_oracle]"),
        "selectors": selectors.reset_index(drop=True),
        "summary": summary,
        "notes": notes,
    }


def load_inputs(cpi_dir: str | Path, llm_dir: str | Path) -> ComparisonInputs:
    """Read, check and map both sides (all errors are raised here, before any drawing)."""
    cpi = load_cpi(cpi_dir)
    llm = load_llm(llm_dir)
    return ComparisonInputs(
        resets=pd.concat([cpi["resets"], llm["resets"]], ignore_index=True),
        curves=pd.concat([cpi["curves"], llm["curves"]], ignore_index=True),
        signal=llm["signal"],
        phase=cpi["phase"],
        llm_metrics=llm["metrics"],
        summary=cpi["summary"],
        sim_selectors=cpi["selectors"],
        sources={"simulation": str(cpi_dir), "language model": str(llm_dir)},
        notes=list(cpi["notes"]),
    )
