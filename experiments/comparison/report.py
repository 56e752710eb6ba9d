"""``comparison.md`` (and ``comparison.json``): quantity, paper, simulation, language model.

Every cell carries its 95% interval (Wilson for proportions, bootstrap over seeds for means and
ratios, bootstrap over failed parents for the LLM's coverage and selector product). A quantity a
side cannot measure is written ``n/a`` with the reason in the notes, never left blank.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.artifacts import write_json
from experiments.comparison import stats as st
from experiments.comparison.figures import PAPER, signal_ratio
from experiments.comparison.schema import SIDES, ComparisonInputs

#: summary.json laws of the sweep shown in the table: key -> description
SWEEP_LAWS = {
    "sample_complexity_ratio_slope": "P2: log-log slope of RR/CARO Q-rollouts vs p",
    "improvement_ratio_slope": "P3: log-log slope of CARO/RR improvement vs p (theory steps)",
    "rr_samples_tau_slope": "P2: log-log slope of RR Q-rollouts vs tau (theory: Theorem 1's "
                            "R_max^2 / tau^2 on these instances; tau^-2 at fixed R_max not tested)",
    "caro_samples_tau_slope": "P2: log-log slope of CARO Q-rollouts vs tau (theory: Theorem 1's "
                              "R_max^2 / tau^2 on these instances; tau^-2 at fixed R_max not "
                              "tested)",
    "approx_oracle_rate_slope": "P6: slope of improvement ratio vs (1-beta) gamma",
    "approx_phase_boundary_agreement": "P6: share of grid points where 'beats random' = "
                                       "((1-beta) gamma > p)",
    "env_steps_ratio_slope": "P2: log-log slope of RR/CARO env steps vs p (incl. reset search)",
    "dilution_over_tau_p": "P1: E_d[max A] / (tau p) (bound >= 1)",
    "dilution_conditional_over_tau": "P1: E[max A | G] / tau (bound >= 1)",
    "monotone_violation_rate": "P4: share of theory-step iterations where J decreased",
}


def _law(summary: dict, key: str) -> tuple[st.Estimate, float | None]:
    rec = summary.get(key)
    if not isinstance(rec, dict) or rec.get("estimate") is None:
        return st.NAN_ESTIMATE, None
    ci = rec.get("ci") or [None, None]
    lo = math.nan if ci[0] is None else float(ci[0])
    hi = math.nan if ci[1] is None else float(ci[1])
    return st.Estimate(float(rec["estimate"]), lo, hi, rec.get("n_points", math.nan)), rec.get("theory")


def _side(resets: pd.DataFrame, side: str) -> pd.DataFrame:
    return resets[resets["side"] == side]


def _pass_by_clean(r: pd.DataFrame, clean: bool) -> st.Estimate:
    sub = r[r["clean"].notna() & (r["clean"] == clean)]
    return st.weighted_proportion(sub["suffix_pass_at_k"], sub["weight"])


def _clean_share(r: pd.DataFrame, method: str) -> st.Estimate:
    sub = r[(r["method"] == method) & r["clean"].notna()]
    return st.weighted_proportion(sub["clean"].astype(float), sub["weight"])


def _mean_rel_pos(r: pd.DataFrame, method: str) -> st.Estimate:
    sub = r[(r["method"] == method) & r["rel_pos"].notna()]
    per_seed = (sub.assign(num=sub["rel_pos"] * sub["weight"])
                .groupby("seed")[["num", "weight"]].sum())
    return st.ratio_of_sums(per_seed["num"].to_numpy(), per_seed["weight"].to_numpy())


def _fallback_rate(inputs: ComparisonInputs, method: str) -> st.Estimate:
    """Localization fallbacks / resets of ``method`` (per-reset flags, else the metrics' counts)."""
    r = _side(inputs.resets, "language model")
    r = r[r["method"] == method]
    if r.empty:
        return st.NAN_ESTIMATE
    if r["from_fallback"].any() or "localization_fallbacks" not in inputs.llm_metrics.columns:
        return st.wilson(float(r["from_fallback"].sum()), float(len(r)))
    m = inputs.llm_metrics
    n_fb = float(pd.to_numeric(m.loc[m["method"] == method, "localization_fallbacks"],
                               errors="coerce").sum())
    return st.wilson(min(n_fb, float(len(r))), float(len(r)))


def build_quantities(inputs: ComparisonInputs, speedups: pd.DataFrame, quality: dict) -> list[dict]:
    """The rows of the comparison table: quantity, paper, simulation, language model, notes."""
    rows: list[dict] = []

    def add(key, name, paper, sim, llm, note="", kind="num"):
        rows.append({"key": key, "quantity": name, "paper": paper, "simulation": sim,
                     "language model": llm, "note": note, "kind": kind})

    res = {s: _side(inputs.resets, s) for s in SIDES}
    group = res["language model"]["group_size"].dropna().unique()
    passk = f"pass@{int(group[0])}" if len(group) == 1 else "pass@k"
    add("pass_clean", f"suffix-group {passk}, clean prefix (deviation ≤ 0)",
        st.Estimate(PAPER["pass_clean"], math.nan, math.nan),
        *(_pass_by_clean(res[s], True) for s in SIDES), "Wilson 95%", kind="pct")
    add("pass_erroneous", f"suffix-group {passk}, erroneous prefix (deviation > 0)",
        st.Estimate(PAPER["pass_erroneous"], math.nan, math.nan),
        *(_pass_by_clean(res[s], False) for s in SIDES), "Wilson 95%", kind="pct")
    add("clean_share_self", "share of self-localizations that are clean",
        st.Estimate(PAPER["clean_share_self"], math.nan, math.nan),
        *(_clean_share(res[s], "self") for s in SIDES),
        "simulation: the approximate selector, where the sweep logs its resets", kind="pct")
    add("clean_share_random", "share of random resets that are clean", None,
        *(_clean_share(res[s], "random") for s in SIDES), "≈ coverage p by construction", kind="pct")
    for m in ("self", "random"):
        add(f"rel_pos_{m}", f"mean relative reset position k/n, {m}", None,
            *(_mean_rel_pos(res[s], m) for s in SIDES), "bootstrap over seeds")
    labels = {"none": "no reset", "random": "random reset", "self": "self-localized reset",
              "oracle": "oracle reset"}
    paper_sp = {("self", "none"): st.Estimate(PAPER["speedup_vs_grpo"], math.nan, math.nan),
                ("self", "random"): st.Estimate(PAPER["speedup_vs_rrpo"], math.nan, math.nan)}
    for axis, unit in (("samples", "rollouts / Q-rollouts"),
                       ("compute", "generated tokens / env steps")):
        for (m, comp) in (("self", "none"), ("self", "random"), ("oracle", "none"),
                          ("oracle", "random"), ("random", "none")):
            cells = []
            for s in SIDES:
                hit = speedups[(speedups["side"] == s) & (speedups["axis"] == axis)
                               & (speedups["method"] == m) & (speedups["comparator"] == comp)]
                est = hit["estimate"].iloc[0] if len(hit) else st.NAN_ESTIMATE
                cells.append("not reached" if len(hit) and not est.finite else est)
            paper = paper_sp.get((m, comp)) if axis == "samples" else None
            add(f"speedup_{axis}_{m}_vs_{comp}",
                f"speed-up {labels[m]} vs {labels[comp]} ({unit} to the comparator's final score)",
                paper, *cells,
                "paper: LiveCodeBench v6 steps" if paper is not None else "bootstrap over seeds",
                kind="x")
    for m in ("self", "random", "oracle"):
        if m != "self" and not (inputs.signal["method"] == m).any():
            continue
        add(f"grad_signal_ratio_{m}", f"per-token gradient signal, reset / base group ({m})",
            st.Estimate(PAPER["grad_signal_ratio"], math.nan, math.nan) if m == "self" else None,
            None, signal_ratio(inputs.signal, m), "simulation: no per-token gradient (see P1)",
            kind="x")
    q = quality.get("self")
    sel = inputs.sim_selectors

    def sim_mean(method: str, fn) -> st.Estimate:
        """Mean over seeds of ``fn(rows)`` for one simulation reset rule (budget_curves)."""
        sub = sel[sel["method"] == method] if len(sel) else sel
        if len(sub) == 0:
            return st.NAN_ESTIMATE
        vals = fn(sub).to_numpy(float)
        return st.ratio_of_sums(vals, np.ones_like(vals))

    p_grid = sorted(inputs.phase["p"].unique()) if not inputs.phase.empty else []
    add("coverage_p", "coverage p (LM: share of failed-chain reset positions at or before the "
        "first error; simulation: on-policy mass of G)", None, sim_mean("self", lambda f: f["coverage"]),
        q.coverage if q else None,
        "simulation: budget_curves; phase grid p ∈ {" + ", ".join(f"{p:g}" for p in p_grid)
        + "}; LM: bootstrap over failed parents", kind="num")
    for m in ("self", "random", "oracle"):
        qq = quality.get(m)
        if qq is None and not (len(sel) and (sel["method"] == m).any()):
            continue
        add(f"precision_{m}", f"precision 1−β of the {m} localizer / selector", None,
            sim_mean(m, lambda f: f["precision"]), qq.precision if qq else None,
            "LM: clean | own answer, Wilson 95%; simulation: mean over seeds", kind="pct")
        add(f"recall_{m}", f"recall γ of the {m} localizer / selector", None,
            sim_mean(m, lambda f: f["recall"]), qq.recall if qq else None,
            "LM: own answer | parent has G, Wilson 95%", kind="pct")
        add(f"margin_{m}", f"(1−β)γ − p for the {m} localizer / selector (> 0: beats random "
            "resets)", None,
            sim_mean(m, lambda f: f["precision"] * f["recall"] - f["coverage"]),
            qq.margin if qq else None, "LM: bootstrap over failed parents")
    add("fallback_rate_self", "localization fallback rate (self)", None, None,
        _fallback_rate(inputs, "self"),
        "the release does not report it (fallbacks become silent restarts)", kind="pct")
    for key, desc in SWEEP_LAWS.items():
        est, theory = _law(inputs.summary, key)
        add(f"sweep_{key}", desc + f" [{key}]",
            None if theory is None else f"theory {theory:g}", est, None,
            "summary.json, bootstrap over seeds")
    return rows


def _cell(v, kind: str) -> str:
    """Table text of one value: an Estimate as '28.7% [25.1, 32.6]', '2.41x [..]' or '0.094 [..]'."""
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if isinstance(v, st.Estimate):
        if kind == "pct":
            return v.fmt(pct=True)
        if kind == "x":
            return v.fmt(digits=2, suffix="x")
        return v.fmt(digits=3)
    return str(v)


def _verdict(quality: dict) -> str:
    q = quality.get("self")
    if q is None or not q.margin.finite:
        return ("The language model's self-localizer could not be placed on the phase map "
                "(no self-localized parents with a known first error).")
    side = ("on the side where resets beat random ones ((1−β)γ > p)" if q.margin.lo > 0 else
            "on the side where resets do NOT beat random ones ((1−β)γ < p)" if q.margin.hi < 0
            else "on the boundary within its interval (undecided)")
    return (f"The language model's self-localizer sits {side}: (1−β)γ = {q.product.fmt(digits=3)} "
            f"vs p = {q.coverage.fmt(digits=3)} (margin {q.margin.fmt(digits=3)}, "
            f"{q.n_parents} failed parents with a known first error).")


def _jsonable(obj):
    """Estimates become {value, lo, hi, n} dicts; NaN becomes null (strict JSON)."""
    if isinstance(obj, st.Estimate):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_report(inputs: ComparisonInputs, speedups: pd.DataFrame, quality: dict,
                 figures: list[Path], out: Path, provenance: list | None = None
                 ) -> tuple[Path, Path]:
    """Write ``comparison.md`` and ``comparison.json`` into ``out``; return their paths.

    ``provenance``: the input runs (:class:`experiments.comparison.provenance.RunProvenance`),
    listed at the top of the table with their configuration, seeds and steps.
    """
    rows = build_quantities(inputs, speedups, quality)
    provenance = provenance or []
    lines = [
        "# Simulation vs language model",
        "",
        "Drawn from:",
        "",
        *[f"- {p.line()}" for p in provenance],
        "",
        f"Inputs: simulation `{inputs.sources.get('simulation')}`, "
        f"language model `{inputs.sources.get('language model')}`. "
        "Regenerate with `python experiments/compare.py --cpi "
        f"{inputs.sources.get('simulation')} --llm {inputs.sources.get('language model')} "
        f"--out {out}`. Definitions: docs/compare.md.",
        "",
        "Intervals are 95%: Wilson for proportions, percentile bootstrap over seeds for means, "
        "ratios and speed-ups, bootstrap over failed parents for the LM's coverage and selector. "
        "`—`: the quantity does not exist on that side (or the paper gives no number); "
        "`n/a`: it exists but these runs give no estimate.",
        "",
        "| quantity | paper | simulation | language model | note |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        kind = r["kind"]
        lines.append(f"| {r['quantity']} | {_cell(r['paper'], kind)} | "
                     f"{_cell(r['simulation'], kind)} | {_cell(r['language model'], kind)} | "
                     f"{r['note']} |")
    lines += ["", "## Verdict on the phase map", "", _verdict(quality), ""]
    if inputs.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in inputs.notes] + [""]
    lines += ["## Figures", ""] + [f"- `{f.name}`" for f in figures if f.suffix == ".png"] + [""]
    md = out / "comparison.md"
    md.write_text("\n".join(lines))

    js = out / "comparison.json"
    write_json(js, _jsonable({
        "rows": rows,
        "values": values_by_key(rows),
        "correction_by_deviation": correction_by_deviation(inputs.resets),
        "selector": {m: asdict(q) for m, q in quality.items()},
        "verdict": _verdict(quality),
        "provenance": [asdict(p) for p in provenance],
    }))
    return md, js


def correction_by_deviation(resets: pd.DataFrame) -> dict:
    """``{"sim"|"lm": {bucket: Estimate}}``: suffix-group pass@k by deviation bucket, every
    localizer pooled, Wilson 95% (panel (c) of compare_localization.png)."""
    out = {}
    for side, short in zip(SIDES, ("sim", "lm")):
        r = _side(resets, side)
        bucket = st.deviation_bucket(r["deviation"])
        out[short] = {b: st.weighted_proportion(r.loc[bucket == b, "suffix_pass_at_k"],
                                                r.loc[bucket == b, "weight"])
                      for b in st.DEVIATION_BUCKETS if (bucket == b).any()}
    return out


def values_by_key(rows: list[dict]) -> dict:
    """``{row key: {"paper", "sim", "lm"}}``: the table's cells under stable names, the source
    paper_repro.md reads (``{{comparison:values.pass_clean.lm|pct}}``). A cell is an Estimate
    (``{value, lo, hi, n}`` in the JSON), ``"not reached"``, text, or null."""
    return {r["key"]: {"paper": r["paper"], "sim": r["simulation"], "lm": r["language model"],
                       "kind": r["kind"]} for r in rows}
