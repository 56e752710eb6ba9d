"""Checks that a figure reads: no text printed over other text, no empty panel, no axis offset.

:func:`layout_problems` draws the figure and returns one line per problem:

* two text boxes that overlap (titles, axis labels, tick labels, annotations, figure texts,
  legends as whole boxes), measured with the renderer's window extents in pixels;
* an axes drawn with its frame but holding no data (no line, bar, image, collection or patch
  beyond its background) -- an empty box;
* an axis offset text with an additive part (``1e-12+1``): the axis range is a rounding error
  around a constant and the tick labels are unreadable;
* a legend entry that prints a number with more than 3 decimals (``theory 0.000189``).

Tests run it on every figure writer through :data:`experiments.artifacts.FIGURE_CHECKS`.
"""

from __future__ import annotations

import re

#: overlap smaller than this many square pixels is a touch, not an overlap
MIN_OVERLAP_PX2 = 4.0
_LONG_DECIMAL = re.compile(r"\d\.\d{4,}")


def _visible_text(t) -> bool:
    return t.get_visible() and bool(t.get_text().strip())


def _drawn_ticklabels(axis) -> list:
    """The tick labels the axis draws (inside its view limits), not every label it holds."""
    try:
        ticks = axis._update_ticks()  # the ticks a draw uses (matplotlib >= 3.1)
    except AttributeError:  # pragma: no cover - another matplotlib: all labels
        return list(axis.get_ticklabels())
    labels = []
    for tick in ticks:
        labels += [
            lab
            for lab, on in (
                (tick.label1, tick.label1.get_visible()),
                (tick.label2, tick.label2.get_visible()),
            )
            if on
        ]
    return labels


def _boxes(fig, renderer) -> list[tuple[str, object]]:
    """(name, window extent) of every visible text box of the figure."""
    out = []
    suptitle = getattr(fig, "_suptitle", None)
    for i, t in enumerate(fig.texts):
        if t is not suptitle and _visible_text(t):
            out.append((f"figure text {i} {t.get_text()[:30]!r}", t.get_window_extent(renderer)))
    if getattr(fig, "_suptitle", None) is not None and _visible_text(fig._suptitle):
        out.append(("suptitle", fig._suptitle.get_window_extent(renderer)))
    for k, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        tag = f"axes {k} ({ax.get_title()[:25]!r})"
        texts = [
            ("title", ax.title),
            ("xlabel", ax.xaxis.label),
            ("ylabel", ax.yaxis.label),
            ("x offset", ax.xaxis.get_offset_text()),
            ("y offset", ax.yaxis.get_offset_text()),
        ]
        texts += [(f"text {t.get_text()[:30]!r}", t) for t in ax.texts]
        if ax.axison:
            texts += [(f"xtick {t.get_text()!r}", t) for t in _drawn_ticklabels(ax.xaxis)]
            texts += [(f"ytick {t.get_text()!r}", t) for t in _drawn_ticklabels(ax.yaxis)]
        for name, t in texts:
            if _visible_text(t):
                out.append((f"{tag} {name}", t.get_window_extent(renderer)))
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            out.append((f"{tag} legend", legend.get_window_extent(renderer)))
    for i, legend in enumerate(fig.legends):
        out.append((f"figure legend {i}", legend.get_window_extent(renderer)))
    return out


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _is_empty(ax) -> bool:
    if not ax.get_visible() or not ax.axison:
        return False
    data = list(ax.lines) + list(ax.collections) + list(ax.images) + list(ax.patches)
    return not any(a.get_visible() for a in data)


def layout_problems(fig, name: str = "figure") -> list[str]:
    """One line per readability problem of ``fig`` (see the module doc); empty when it reads."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    problems = []
    boxes = _boxes(fig, renderer)
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            (na, a), (nb, b) = boxes[i], boxes[j]
            if _overlap(a, b) > MIN_OVERLAP_PX2:
                problems.append(f"{name}: {na} overlaps {nb}")
    for k, ax in enumerate(fig.axes):
        if _is_empty(ax):
            problems.append(f"{name}: axes {k} ({ax.get_title()[:40]!r}) is an empty box")
        for axis in (ax.xaxis, ax.yaxis):
            off = axis.get_offset_text()
            text = off.get_text().replace("\u2212", "-")
            if off.get_visible() and ("+" in text or text.startswith("-") and "e" not in text):
                problems.append(
                    f"{name}: axes {k} axis offset {text!r} (the range is a rounding "
                    "error around a constant: set the limits)"
                )
        legend = ax.get_legend()
        if legend is not None:
            for t in legend.get_texts():
                if _LONG_DECIMAL.search(t.get_text()):
                    problems.append(
                        f"{name}: axes {k} legend {t.get_text()!r}: more than 3 decimals"
                    )
    return problems
