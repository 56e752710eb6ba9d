"""The ladder figure (issue 19): speed-up of the oracle reset over GRPO vs p_reach, three rungs.

``ladder_figure(summary, out)`` draws from ``experiments/llm_ladder.py``'s ``summary.json``: two
panels (per rollout, per generated token), log-log axes, the CPI rung as a band (95% interval
over seeds, at the tabular policy's p_reach, where it was run), the tabular rung as a band (at the tabular policy's
p_reach), the language model as points with 95% intervals (at its measured p_reach), and the
line speed-up = 1. A speed-up with no value or interval (undefined in most resamples, or an LM setting
not run yet) is left out and counted in the footer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["ladder_figure", "ladder_rows"]

RUNGS = (
    ("cpi", "CPI (Theorem 1's algorithm)", "tab:blue"),
    ("tabular", "tabular policy, the LM's code", "tab:orange"),
    ("lm", "language model", "black"),
)


def ladder_rows(summary: dict, rung: str, axis: str, method: str = "oracle") -> list[tuple]:
    """``(p_reach, value, lo, hi)`` of one rung's speed-ups of ``method`` over GRPO, sorted by p
    (rows without a value or an interval are dropped)."""
    records = summary.get(rung) if rung == "lm" else summary["predictions"].get(rung)
    out = []
    for rec in records or []:
        if rec.get("method") != method or axis not in rec:
            continue
        key = f"{rec['hard_fraction']:g}"
        pre = summary["pre_rl"][key]
        # CPI runs at the tabular policy's p_reach (the prediction needs no LM)
        p = (pre["lm_p_reach"] if rung == "lm" else pre["tabular_p_reach"])["value"]
        e = rec[axis]
        if p is None or e["value"] is None or e["lo"] is None or e["hi"] is None:
            continue
        out.append((float(p), float(e["value"]), float(e["lo"]), float(e["hi"])))
    return sorted(out)


def ladder_figure(summary: dict, out: str | Path, footer: str = "") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    dropped = 0
    for ax, (axis, title) in zip(
        axes, (("per_rollout", "per rollout"), ("per_token", "per generated token"))
    ):
        for rung, label, color in RUNGS:
            rows = ladder_rows(summary, rung, axis)
            total = sum(
                1
                for r in (summary.get(rung) if rung == "lm" else summary["predictions"].get(rung))
                or []
                if r.get("method") == "oracle"
            )
            dropped += total - len(rows)
            if not rows:
                continue
            p, v, lo, hi = (np.array(c) for c in zip(*rows))
            if rung == "lm":
                ax.errorbar(
                    p, v, yerr=[v - lo, hi - v], fmt="o", color=color, capsize=3, label=label
                )
            else:
                ax.fill_between(p, lo, hi, color=color, alpha=0.25, lw=0)
                ax.plot(p, v, "-", color=color, marker=".", label=label)
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("p_reach before RL (log)")
        ax.set_title(f"oracle reset over GRPO, {title}")
    axes[0].set_ylabel("speed-up over GRPO at a common score (log)")
    axes[0].legend(fontsize=8, loc="best")
    note = f"{dropped} speed-up(s) undefined or not run are not drawn. " if dropped else ""
    fig.text(0.01, 0.01, (note + footer).strip(), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    from experiments.artifacts import save_figure

    return save_figure(fig, out / "ladder")
