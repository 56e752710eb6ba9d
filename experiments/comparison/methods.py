"""Every method of the registry on one task: learning curves, final J and speed-ups with CIs.

Input: the output directory of ``python experiments/llm_srpo.py --method all`` (default
``runs/llm_all``: ``metrics.parquet``, ``summary.json``). Output (``compare.py --only methods``):

* ``compare_methods.{png,pdf}``: held-out pass rate vs training rollouts and vs generated tokens
  (all of them: refinements, critiques, tree branches, discarded chains, localization replies),
  seed mean with a 95% bootstrap-over-seeds band, per method;
* ``compare_methods.md`` / ``.json``: per method, final J (seed mean, 95% bootstrap interval over
  seeds), generated tokens, and speed-ups vs GRPO and vs SRPO per rollout and per generated token
  (the comparator's cost to reach its own final J over the method's, ``stats.speedup``: 95%
  bootstrap over paired seeds; "not reached" when the method never gets there).

The release runs its baselines at different learning rates and temperatures; the CPU default
runs every method at the same ones (``--recipe paper`` gives each its release settings), which the
table says.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.comparison import stats as st
from experiments.comparison.schema import InputError, map_llm, read_parquet

#: the comparators each method is set against
COMPARATORS = ("none", "self")
ORDER = (
    "none",
    "random",
    "self",
    "oracle",
    "srpo-offset",
    "score",
    "critique-grpo",
    "spo-tree",
    "treerl",
    "entropy",
    "fixed",
)
LABELS = {
    "none": "GRPO",
    "random": "RRPO",
    "self": "SRPO",
    "oracle": "oracle resets",
    "srpo-offset": "SRPO, offset 1",
    "score": "SCoRe",
    "critique-grpo": "Critique-GRPO",
    "spo-tree": "SPO-Tree",
    "treerl": "TreeRL",
    "entropy": "entropy resets",
    "fixed": "fixed-position resets",
}
COMMAND = "python experiments/llm_srpo.py --method all"


def load_methods(directory: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """``(curves, metrics, summary)`` of an ``llm_srpo.py`` run (the common curve schema)."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError(
            f"methods input directory {d} does not exist (produce it with `{COMMAND}`)"
        )
    metrics = read_parquet(d / "metrics.parquet", "language model", COMMAND)
    resets_path = d / "resets.parquet"
    resets = (
        read_parquet(resets_path, "language model", COMMAND)
        if resets_path.is_file()
        else pd.DataFrame(
            columns=["method", "seed", "iteration", "n", "k", "first_error", "suffix_pass_at_k"]
        )
    )
    summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").is_file() else {}
    mapped = map_llm(metrics, resets, d / "metrics.parquet", resets_path)
    return mapped["curves"], mapped["metrics"], summary


def _present(curves: pd.DataFrame) -> list[str]:
    have = set(curves["method"])
    return [m for m in ORDER if m in have] + sorted(have - set(ORDER))


def _final(curves: pd.DataFrame, method: str, n_boot: int) -> st.Estimate:
    sub = curves[curves["method"] == method]
    last = sub.sort_values("iteration").groupby("seed").tail(1)["score"].to_numpy(float)
    if len(last) < 2:
        return st.Estimate(
            float(np.mean(last)) if len(last) else math.nan, math.nan, math.nan, float(len(last))
        )
    rng = np.random.default_rng(0)
    boots = last[rng.integers(0, len(last), size=(n_boot, len(last)))].mean(axis=1)
    return st.Estimate(
        float(last.mean()),
        float(np.percentile(boots, 2.5)),
        float(np.percentile(boots, 97.5)),
        float(len(last)),
    )


def _invert(e: st.Estimate) -> st.Estimate:
    """1 / a speed-up (the bounds swap; 0 becomes inf)."""
    with np.errstate(divide="ignore"):
        inv = [
            1.0 / x if np.isfinite(x) and x != 0 else (math.inf if x == 0 else math.nan)
            for x in (e.value, e.hi, e.lo)
        ]
    return st.Estimate(inv[0], inv[1], inv[2], e.n)


def _invert(e: st.Estimate) -> st.Estimate:
    """1 / a speed-up (the bounds swap; 0 becomes inf)."""

    def inv(x):
        if np.isnan(x):
            return math.nan
        return math.inf if x == 0 else 1.0 / x

    return st.Estimate(inv(e.value), inv(e.hi), inv(e.lo), e.n)


def methods_table(curves: pd.DataFrame, n_boot: int = 400) -> pd.DataFrame:
    """One row per method: final J, tokens, speed-ups vs GRPO and SRPO on both axes."""
    rows = []
    for m in _present(curves):
        sub = curves[curves["method"] == m]
        last = sub.sort_values("iteration").groupby("seed").tail(1)
        row = {
            "method": m,
            "label": LABELS.get(m, m),
            "seeds": int(sub["seed"].nunique()),
            "final_J": _final(curves, m, n_boot),
            "initial_J": float(sub[sub["iteration"] == 0]["score"].mean()),
            "rollouts": float(last["samples"].mean()),
            "generated_tokens": float(last["compute"].mean()),
        }
        for comp in COMPARATORS:
            for axis in ("samples", "compute"):
                key = f"speedup_vs_{comp}_{axis}"
                row[key] = (
                    st.speedup(curves, m, comp, axis, n_boot=n_boot)
                    if comp != m and comp in set(curves["method"])
                    else None
                )
        for axis in ("samples", "compute"):  # GRPO's cost to reach *this* method's final J
            row[f"at_own_final_vs_none_{axis}"] = (
                _invert(st.speedup(curves, "none", m, axis, n_boot=n_boot))
                if m != "none" and "none" in set(curves["method"])
                else None
            )
        rows.append(row)
    return pd.DataFrame(rows)


def methods_figure(curves: pd.DataFrame, out: Path, footer: str | None = None) -> list[Path]:
    import matplotlib.pyplot as plt

    from experiments.comparison.figures import _curve_band, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(14, 5.8), sharey=True)
    cmap = plt.get_cmap("tab10")
    for i, m in enumerate(_present(curves)):
        sub = curves[curves["method"] == m]
        for ax, axis in zip(axes, ("samples", "compute")):
            xs, mean, lo, hi = _curve_band(sub, axis)
            ax.plot(
                xs,
                mean,
                "-o",
                ms=3,
                color=cmap(i % 10),
                lw=1.8,
                label=f"{LABELS.get(m, m)} ({sub['seed'].nunique()} seeds)",
            )
            ax.fill_between(xs, lo, hi, color=cmap(i % 10), alpha=0.12, lw=0)
    axes[0].set_xlabel("training rollouts (cumulative; 8 terminal rollouts per prompt)")
    axes[1].set_xlabel(
        "generated tokens (cumulative, all: refinements, branches, discarded, localization)"
    )
    axes[0].set_ylabel("held-out greedy pass@1 (J)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2, loc="lower right")
    fig.suptitle(
        "every method of the registry on the CPU default task (mean, 95% bootstrap band over seeds)"
    )
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    return save_figure(fig, out, "compare_methods", footer=footer)


def _fmt(e, suffix: str = "x") -> str:
    if e is None:
        return "—"
    if not np.isfinite(e.value):
        return "not reached"
    if np.isnan(e.lo) or np.isnan(e.hi):
        return f"{e.value:.2f}{suffix}"
    return f"{e.value:.2f}{suffix} [{e.lo:.2f}, {e.hi:.2f}]"


def write_methods_report(
    table: pd.DataFrame, out: Path, provenance: str = "", recipe_note: str = ""
) -> tuple[Path, Path]:
    lines = [
        "# Every method on the CPU default task",
        "",
        provenance,
        "",
        recipe_note
        or (
            "Every method at the CPU comparison's lr and temperature, "
            "compute-matched at 8 terminal rollouts per prompt (the release ran "
            "Critique-GRPO and SPO-Tree at lr 1e-6, Critique-GRPO at "
            "temperature 1.0: `--recipe paper`)."
        ),
        "",
        "| method | seeds | J start | final J [95% CI] | generated tokens | vs GRPO per "
        "rollout | vs GRPO per token | vs SRPO per rollout | vs SRPO per token | GRPO's "
        "rollouts / the method's, to its final J | GRPO's tokens / the method's, to its "
        "final J |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.label} | {r.seeds} | {r.initial_J:.3f} | {r.final_J.fmt(digits=3)} | "
            f"{r.generated_tokens:,.0f} | {_fmt(r.speedup_vs_none_samples)} | "
            f"{_fmt(r.speedup_vs_none_compute)} | {_fmt(r.speedup_vs_self_samples)} | "
            f"{_fmt(r.speedup_vs_self_compute)} | {_fmt(r.at_own_final_vs_none_samples)} | "
            f"{_fmt(r.at_own_final_vs_none_compute)} |"
        )
    lines += [
        "",
        "Speed-up = the comparator's rollouts (or generated tokens) to reach its own "
        "final J over the method's; > 1: the method is faster; 95% bootstrap over paired "
        'seeds; "not reached": the method\'s seed-mean curve never reaches it.',
        " The last two columns turn the target round: what GRPO spends to reach the method's "
        'own final J over what the method spent (> 1: the method got there cheaper; "not '
        "reached\": GRPO's seed-mean curve never got there; a 0 or inf bound: resamples where "
        "one side never reached the target).",
    ]
    md = out / "compare_methods.md"
    md.write_text("\n".join(lines) + "\n")

    def enc(v):
        if isinstance(v, st.Estimate):
            return {
                "value": None if not np.isfinite(v.value) else v.value,
                "ci95": [
                    None if not np.isfinite(v.lo) else v.lo,
                    None if not np.isfinite(v.hi) else v.hi,
                ],
            }
        return v

    js = out / "compare_methods.json"
    js.write_text(
        json.dumps(
            {
                "provenance": provenance,
                "methods": [
                    {k: enc(v) for k, v in row.items()} for row in table.to_dict(orient="records")
                ],
            },
            indent=1,
        )
        + "\n"
    )
    return md, js


def provenance_of(directory: Path, summary: dict) -> tuple[str, bool]:
    """A line naming the run, and whether it is the published comparison (``--method all``
    with nothing else that changes results, 5 seeds, full length)."""
    run = summary.get("run", {})
    published = run.get("published") == "all" and not run.get("quick", False)
    line = (
        f"runs: {directory} ({run.get('command', '?')}; methods "
        f"{'/'.join(run.get('methods', [])) or '?'}; seeds {len(run.get('seeds', []))}; "
        f"steps {run.get('steps', '?')}; {'published comparison' if published else 'not the published comparison'})"
    )
    return line, published
