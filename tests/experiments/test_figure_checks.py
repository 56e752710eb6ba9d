"""The readability check of figures fails on what it should (overlap, empty box, offset axis, long
legend values) and passes on the figures drawn from committed data; the shared save_figure writes
no dates. (The sweep's figures: tests/experiments/test_cpi_sweep.py; the comparison's:
tests/experiments/test_compare.py.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from experiments import artifacts  # noqa: E402
from experiments.figure_checks import layout_problems  # noqa: E402


def _clean_figure():
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    a.plot([1, 2, 3], [1, 4, 9], label="data")
    a.set(title="left", xlabel="x", ylabel="y")
    a.legend()
    b.bar([0, 1], [2, 3])
    b.set(title="right")
    fig.tight_layout()
    return fig


def test_a_clean_figure_passes():
    fig = _clean_figure()
    assert layout_problems(fig) == []
    plt.close(fig)


def test_an_injected_overlap_fails():
    fig = _clean_figure()
    fig.text(0.01, 0.0, "footer line one", fontsize=8)
    fig.text(0.01, 0.0, "footer line two printed over it", fontsize=8)  # the old footer bug
    problems = layout_problems(fig, "f")
    assert any("footer line one" in p and "overlaps" in p for p in problems), problems
    plt.close(fig)
    fig = _clean_figure()
    ax = fig.axes[0]
    ax.text(2, 4, "annotation", fontsize=12)
    ax.text(2, 4, "annotation again", fontsize=12)
    assert any("overlaps" in p for p in layout_problems(fig)), "two texts at one point"
    plt.close(fig)


def test_an_empty_box_an_offset_axis_and_long_legend_values_fail():
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(12, 3))
    a.set_title("(a) nothing here")  # an empty box
    b.plot([1, 2, 3], [1 + 1e-13, 1, 1 - 1e-13])  # the axis offsets to 1e-13+1
    c.plot([1, 2], [1, 2], label="theory 0.000189")
    c.legend()
    fig.tight_layout()
    problems = "\n".join(layout_problems(fig))
    assert "is an empty box" in problems
    assert "axis offset" in problems
    assert "more than 3 decimals" in problems
    plt.close(fig)
    fig, ax = plt.subplots()
    ax.set_title("a side without data")
    ax.text(0.5, 0.5, "no data on this side", transform=ax.transAxes, ha="center")
    ax.set_axis_off()  # what the comparison figures draw instead of an empty box
    assert layout_problems(fig) == []
    plt.close(fig)


def test_save_figure_writes_no_dates_and_runs_the_checks(tmp_path):
    seen = []
    artifacts.FIGURE_CHECKS.append(lambda fig, stem: seen.append(stem.name))
    try:
        png, pdf = artifacts.save_figure(_clean_figure(), tmp_path / "f")
        png2, pdf2 = artifacts.save_figure(_clean_figure(), tmp_path / "g")
    finally:
        artifacts.FIGURE_CHECKS.clear()
    assert seen == ["f", "g"]
    assert png.read_bytes() == png2.read_bytes() and pdf.read_bytes() == pdf2.read_bytes()
    assert b"CreationDate" not in pdf.read_bytes() and b"matplotlib" not in png.read_bytes()


def _check_all(monkeypatch) -> list[str]:
    problems: list[str] = []
    monkeypatch.setattr(
        artifacts,
        "FIGURE_CHECKS",
        [lambda fig, stem: problems.extend(layout_problems(fig, stem.name))],
    )
    return problems


def test_coverage_prediction_figure_from_committed_data_reads(tmp_path, monkeypatch):
    from experiments.comparison.coverage import prediction_figure

    problems = _check_all(monkeypatch)
    pre = json.loads((REPO / "figures" / "coverage_pre_rl.json").read_text())
    prediction = json.loads((REPO / "figures" / "coverage_prediction.json").read_text())
    paths = prediction_figure(pre, prediction, tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert problems == [], "\n".join(problems)


def test_llm_learning_curves_figure_reads(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from experiments.llm_srpo import plot_curves

    problems = _check_all(monkeypatch)
    rows = [
        {
            "method": m,
            "seed": s,
            "iteration": it,
            "rollouts": 128 * it,
            "generated_tokens": 5000 * it + 100 * s,
            "J": 0.4 + 0.01 * it + 0.02 * s,
        }
        for m in ("grpo", "rrpo", "srpo", "oracle")
        for s in range(2)
        for it in range(6)
    ]
    plot_curves(pd.DataFrame(rows), tmp_path, footer="python experiments/llm_srpo.py (test)")
    assert problems == [], "\n".join(problems)
    assert np.isfinite((tmp_path / "learning_curves.png").stat().st_size)
