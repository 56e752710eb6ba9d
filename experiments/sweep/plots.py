"""Figure helpers: measured curves with bootstrap bands, labelled theory lines, fitted slopes.

Every figure is saved as PNG and PDF; titles say what is measured, axes carry units, power laws
are drawn on log-log axes with the theory slope anchored at the data (the theorem fixes slopes,
not constants) and the fitted slope with its 95% interval in the legend.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from experiments.artifacts import save_figure  # noqa: E402
from experiments.sweep.stats import format_fit  # noqa: E402

COLORS = {"random": "tab:blue", "RR": "tab:blue", "oracle": "tab:red", "CARO": "tab:red",
          "approx": "tab:purple", "none": "tab:gray", "ratio": "black"}


def new_figure(ncols: int = 1, width: float = 5.2, height: float = 4.0):
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, axes[0]


def new_grid(nrows: int, ncols: int, width: float = 4.4, height: float = 3.6):
    """A (nrows, ncols) array of axes."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes


def band(ax, curve: pd.DataFrame, label: str, color=None, marker="o", ls="-") -> None:
    """Plot a :func:`stats.curve_with_ci` frame: mean line with markers and a 95% band."""
    c = curve.dropna(subset=["y"])
    ax.plot(c["x"], c["y"], marker=marker, ls=ls, color=color, label=label, ms=4)
    ax.fill_between(c["x"], c["lo"], c["hi"], color=color, alpha=0.2, lw=0)


def theory_line(ax, curve: pd.DataFrame, slope: float, label: str, color="0.3",
                anchor: str = "mean", ls="--") -> None:
    """Power law x^slope drawn as a slope guide: through the geometric mean of the measured
    points (``anchor="mean"``) or through the measured point at the smallest x
    (``anchor="first"``; a theory fixes slopes, not constants, so say which in the label)."""
    c = curve.dropna(subset=["y"])
    c = c[(c["x"] > 0) & (c["y"] > 0)].sort_values("x")
    if len(c) < 2:
        return
    lx, ly = np.log(c["x"].to_numpy()), np.log(c["y"].to_numpy())
    x0, y0 = (lx[0], ly[0]) if anchor == "first" else (lx.mean(), ly.mean())
    x = np.geomspace(c["x"].min(), c["x"].max(), 50)
    y = np.exp(y0 + slope * (np.log(x) - x0))
    ax.plot(x, y, ls=ls, color=color, lw=1.2, label=label)


def legend_below(ax, ncol: int = 1) -> None:
    """Legend under the axes, so it never covers data."""
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol,
              frameon=False)


def short(x: float) -> str:
    """A value for a legend: at most 2 decimals, trailing zeros dropped (-3, 0.04, -2.96)."""
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def slope_label(name: str, rec: dict | None) -> str:
    if rec is None:
        return name
    theory = "" if rec.get("theory") is None else f"; theory {short(rec['theory'])}"
    return f"{name}: slope {format_fit(rec)}{theory}"


def log_ticks(axis, lim) -> None:
    """Readable ticks on a log axis: over less than ~2 decades, ticks at 1, 2, 5 x 10^k labelled
    in plain numbers (matplotlib would otherwise show one or no major tick); always without
    crowded minor labels."""
    lo, hi = (min(lim), max(lim))
    if isinstance(axis.get_major_locator(), mticker.FixedLocator):  # ticks set by the caller
        axis.set_minor_formatter(mticker.NullFormatter())
        return
    if lo > 0 and hi / lo < 100:
        decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
        nice = [m * 10.0 ** k for k in decades for m in (1, 2, 5) if lo <= m * 10.0 ** k <= hi]
        # under a decade 1-2-5 may leave a single tick, and matplotlib then falls back to a
        # dense linear grid whose labels print over each other: a few round ticks instead
        axis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)) if len(nice) >= 2
                               else mticker.MaxNLocator(nbins=3, steps=[1, 2, 2.5, 5, 10]))
        axis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(mticker.NullFormatter())


def finish(fig, ax_list, path_stem: Path, title: str | None = None) -> list[Path]:
    """Legends (where an axis has none yet), grid, tight layout, save PNG + PDF; return the
    two paths."""
    for ax in ax_list:
        if ax.get_legend() is None and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
        ax.grid(True, which="both", alpha=0.25)
        for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            if axis.get_scale() == "log":
                log_ticks(axis, lim)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    # no dates or versions in either file: a rerun that changes nothing leaves them unchanged
    return save_figure(fig, path_stem, dpi=130)
