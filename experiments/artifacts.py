"""Byte-stable artefacts: every summary file and every figure the experiments write.

The same run on the same platform writes the same bytes, so a rerun that changes no result
leaves ``git status`` clean:

* :func:`stable_json` -- JSON with sorted keys, NaN/inf as null, and floats rounded by
  :func:`round_floats` (the rule is in its docstring and in docs/report.md);
* :func:`save_figure` -- PNG and PDF without a creation date or software version (matplotlib
  writes both by default), the one place every figure writer saves through.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

#: significant digits every stored float keeps at most
SIG_DIGITS = 6
#: decimal places kept below the first significant digit of an interval's half-width
GUARD_DIGITS = 3


def _sig(x: float, digits: int = SIG_DIGITS) -> float:
    return float(f"{x:.{digits}g}")


def _decimals_for(half_width: float) -> int:
    """Decimal places that keep GUARD_DIGITS digits below the half-width's first digit."""
    return GUARD_DIGITS - int(math.floor(math.log10(half_width)))


def _round_record(rec: dict, value_key: str, lo: Any, hi: Any) -> dict | None:
    """Round an estimate record by its interval; None when the rule does not apply."""
    v = rec.get(value_key)
    if not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
        for x in (v, lo, hi)
    ):
        return None
    half = (hi - lo) / 2
    if not half > 0:
        return None
    places = _decimals_for(half)

    def r(x):
        return _sig(round(float(x), places))

    return {"value": r(v), "lo": r(lo), "hi": r(hi)}


def round_floats(obj: Any) -> Any:
    """Round every float in ``obj`` (recursively) to the digits its interval supports.

    The rule: a record with an interval -- ``{"estimate": e, "ci": [lo, hi]}`` (the sweep's
    summaries) or ``{"value": v, "lo": lo, "hi": hi}`` (comparison, coverage) -- keeps its
    estimate and bounds to three decimal places below the first significant digit of the
    interval's half-width (a slope -1.63562 with half-width 0.037 keeps 5 decimals; the tables
    show at most two places below that digit, so the stored value rounds to the same text as
    the unrounded one except in rare ties); every other
    float, and every float of a zero-width or absent interval, keeps 6 significant digits. No
    stored float keeps more than 6 significant digits: the last digits of a float differ with
    the order of a sum (threads, BLAS, Numba), and no table shows more than 4.
    NaN and inf become None (strict JSON); numpy scalars become Python numbers.
    """
    try:
        import numpy as np
    except ModuleNotFoundError:  # pragma: no cover - numpy is a core dependency
        np = None
    if np is not None and isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return _sig(obj) if math.isfinite(obj) else None
    if isinstance(obj, (list, tuple)):
        return [round_floats(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {str(k): round_floats(v) for k, v in obj.items()}
    ci = obj.get("ci")
    if "estimate" in obj and isinstance(ci, (list, tuple)) and len(ci) == 2:
        r = _round_record(obj, "estimate", ci[0], ci[1])
        if r is not None:
            out["estimate"], out["ci"] = r["value"], [r["lo"], r["hi"]]
    elif "value" in obj and "lo" in obj and "hi" in obj:
        r = _round_record(obj, "value", obj["lo"], obj["hi"])
        if r is not None:
            out.update(r)
    return out


def stable_json(obj: Any, indent: int = 2) -> str:
    """``obj`` as JSON text that depends only on its values: sorted keys, rounded floats."""
    return json.dumps(round_floats(obj), indent=indent, sort_keys=True, allow_nan=False) + "\n"


def write_json(path: Path, obj: Any) -> Path:
    """Write :func:`stable_json` of ``obj`` to ``path``; return the path."""
    path = Path(path)
    path.write_text(stable_json(obj))
    return path


#: callables ``check(fig, stem)`` run on every figure before it is saved (the figure tests add
#: :func:`experiments.figure_checks.layout_problems` here); empty in normal runs
FIGURE_CHECKS: list = []

#: metadata matplotlib would otherwise stamp into every file (dates, its version)
PDF_METADATA = {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}
PNG_METADATA = {"Software": None}


def save_figure(fig, stem: Path, dpi: int = 130, close: bool = True, **savefig_kw) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.pdf`` with no date or version in either.

    Args:
        fig: a matplotlib figure.
        stem: path without suffix; its folder is created.
        dpi: PNG resolution (the PDF is vector).
        close: close the figure afterwards.
        savefig_kw: passed to ``savefig`` (e.g. ``bbox_inches="tight"``).

    Returns:
        The PNG and PDF paths.
    """
    import matplotlib.pyplot as plt

    stem = Path(stem)
    for check in FIGURE_CHECKS:
        check(fig, stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")
    fig.savefig(png, dpi=dpi, metadata=PNG_METADATA, **savefig_kw)
    fig.savefig(pdf, metadata=PDF_METADATA, **savefig_kw)
    if close:
        plt.close(fig)
    return [png, pdf]
