"""The every-method comparison (experiments/comparison/methods.py) on hand-made curves."""

import math

import numpy as np
import pandas as pd
import pytest

from experiments.comparison import methods as mt


def _curves():
    rows = []
    # GRPO: J = 0.1 per 100 rollouts; "fast": twice as fast per rollout, half the tokens per
    # rollout; "slow" never reaches GRPO's final J
    for seed in (0, 1, 2):
        for it in range(5):
            x = 100.0 * it
            for m, score, tok in (
                ("none", 0.001 * x, 10 * x),
                ("fast", min(0.002 * x, 0.4), 5 * x),
                ("slow", 0.0005 * x, 10 * x),
            ):
                rows.append(
                    {
                        "side": "language model",
                        "method": m,
                        "seed": seed,
                        "iteration": it,
                        "samples": x,
                        "compute": tok,
                        "score": score + 0.001 * seed,
                    }
                )
    return pd.DataFrame(rows)


def test_table_speedups_final_j_and_the_reversed_target():
    table = mt.methods_table(_curves(), n_boot=50).set_index("method")
    # GRPO's final J is 0.401 (seed mean) at 400 rollouts; "fast" reaches it at 200 -> 2x
    assert table.loc["fast", "speedup_vs_none_samples"].value == pytest.approx(2.0, rel=0.02)
    assert table.loc["fast", "speedup_vs_none_compute"].value == pytest.approx(4.0, rel=0.02)
    assert math.isnan(table.loc["slow", "speedup_vs_none_samples"].value)  # never reached
    # slow's final J (0.201) is reached by GRPO at 200 rollouts, slow needed 400: 0.5x
    assert table.loc["slow", "at_own_final_vs_none_samples"].value == pytest.approx(0.5, rel=0.02)
    assert table.loc["none", "final_J"].value == pytest.approx(0.401)
    assert table.loc["none", "speedup_vs_none_samples"] is None


def test_report_and_figure_are_written(tmp_path):
    curves = _curves()
    table = mt.methods_table(curves, n_boot=20)
    md, js = mt.write_methods_report(table, tmp_path, provenance="runs: test")
    text = md.read_text()
    assert "| GRPO |" in text and "not reached" in text and "2.00x" in text
    paths = mt.methods_figure(curves, tmp_path, footer="test")
    assert all(p.is_file() for p in paths) and js.is_file()
    assert mt._fmt(mt._invert(mt.st.Estimate(2.0, 0.0, 4.0, 3))) == "0.50x [0.25, inf]"
    assert np.isinf(mt._invert(mt.st.Estimate(0.0, 0.0, 1.0, 3)).value)
