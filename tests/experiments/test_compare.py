"""experiments/compare.py on small fixture results made here (seeded), for both sides.

The fixtures follow the output schemas of ``experiments/cpi_sweep.py`` (``results.parquet`` with
the experiments first_error, budget_curves, approx_oracle; ``summary.json``) and of
``experiments/llm_srpo.py`` (``metrics.parquet``, ``resets.parquet``). They are synthetic: the
numbers only need the right shape, not the right science.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from experiments.compare import main, run_comparison  # noqa: E402
from experiments.comparison.schema import (  # noqa: E402
    CURVE_COLUMNS,
    RESET_COLUMNS,
    InputError,
    load_inputs,
)
from experiments.comparison.stats import (  # noqa: E402
    deviation_bucket,
    first_reach,
    selector_quality,
    speedup_point,
    wilson,
)

FIGURES = ("compare_localization", "compare_learning_curves", "compare_gradient_signal",
           "compare_phase_map")
METHODS_LLM = ("grpo", "rrpo", "srpo", "oracle")


# ------------------------------------------------------------------------------------ fixtures
def _cpi_fixture(root: Path, seed: int = 0) -> Path:
    """A tiny cpi_sweep output: first_error, budget_curves, approx_oracle rows + summary.json."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(3):
        for dev in range(-4, 5):
            v = 0.30 if dev <= 0 else 0.12
            n = int(rng.integers(80, 120))
            rows.append({"experiment": "first_error", "cell_id": f"fe{s}", "seed": s,
                         "horizon": 6, "p_correct": 0.7, "recover": 0.1, "n_traj": 300,
                         "deviation": dev, "n_resets": n, "k": 4,
                         "correction_exact": v, "pass_at_k_exact": 1 - (1 - v) ** 4,
                         "correction_sampled": v + rng.normal(0, 0.02),
                         "pass_at_k_sampled": float(np.clip(1 - (1 - v) ** 4
                                                            + rng.normal(0, 0.03), 0, 1)),
                         "clean_prefix": dev <= 0})
        rates = {"none": 0.02, "random": 0.04, "approx": 0.08, "oracle": 0.10}
        sel = {"none": (1.0, 1.0), "random": (0.2, 1.0), "approx": (0.7, 0.7), "oracle": (1, 1)}
        for m, rate in rates.items():
            for it in range(8):
                rows.append({"experiment": "budget_curves", "cell_id": f"bc{s}", "seed": s,
                             "p": 0.2, "tau": 0.1, "method": m, "reset": m, "iteration": it,
                             "J": 0.2 + (1 - np.exp(-rate * (it + 1))) + rng.normal(0, 0.005),
                             "q_rollouts": 100, "env_steps": 700,
                             "q_rollouts_cum": 100 * (it + 1), "env_steps_cum": 700 * (it + 1),
                             "coverage_reach": 0.2, "coverage_mass": 0.2,
                             "precision": sel[m][0] + rng.normal(0, 0.01), "recall": sel[m][1]})
        for p in (0.1, 0.3):
            for beta in (0.0, 0.5, 0.9):
                for gamma in (0.25, 1.0):
                    ratio = (1 - beta) * gamma / p
                    rows.append({"experiment": "approx_oracle", "cell_id": f"ao{s}", "seed": s,
                                 "p": p, "tau": 0.1, "beta": beta, "gamma": gamma,
                                 "improvement": ratio * 1e-4, "random_improvement": 1e-4,
                                 "ratio_to_random": ratio * np.exp(rng.normal(0, 0.1)),
                                 "ratio_to_oracle": (1 - beta) * gamma,
                                 "precision": 1 - beta, "recall": gamma,
                                 "beats_random": ratio > 1})
    d = root / "cpi"
    d.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(d / "results.parquet", index=False)
    summary = {"sample_complexity_ratio_slope": {"estimate": -1.9, "ci": [-2.2, -1.6],
                                                 "theory": -2, "n_points": 6},
               "approx_oracle_rate_slope": {"estimate": 0.97, "ci": [0.9, 1.05], "theory": 1,
                                            "n_points": 9}}
    (d / "summary.json").write_text(json.dumps(summary))
    return d


def _llm_fixture(root: Path, seed: int = 1) -> Path:
    """A tiny llm_srpo output: metrics.parquet (method x seed x iteration) and resets.parquet."""
    rng = np.random.default_rng(seed)
    metrics, resets = [], []
    rate = {"grpo": 0.05, "rrpo": 0.07, "srpo": 0.12, "oracle": 0.15}
    for m in METHODS_LLM:
        for s in range(2):
            tokens = 0
            for it in range(6):
                tokens += 8 * 32 * 40 + int(rng.integers(0, 500))
                pr = 0.3 + 0.4 * (1 - np.exp(-rate[m] * (it + 1)))
                resetting = m != "grpo"
                metrics.append({
                    "iteration": it, "method": m, "seed": s, "rollouts": 8 * 32 * (it + 1),
                    "generated_tokens": tokens, "pass_rate": pr + rng.normal(0, 0.01),
                    "eval_pass_rate": pr + rng.normal(0, 0.01), "J": pr,
                    "reset_rate": 0.6 if resetting else 0.0, "reset_step": 3.0,
                    "reset_rel_pos": 0.5, "deviation": 0.0, "clean_prefix_rate": 0.5,
                    "suffix_pass_at_k": 0.25, "suffix_success": 0.1,
                    "localization_fallbacks": int(rng.integers(0, 3)) if m == "srpo" else 0,
                    "grad_signal_reset": (0.05 + rng.normal(0, 0.005)) if resetting else np.nan,
                    "grad_signal_base": 0.02 + rng.normal(0, 0.002),
                    "loss": 0.1, "kl": 0.0, "wall_time": 1.0 * it})
                if not resetting:
                    continue
                for _ in range(20):
                    n = int(rng.integers(3, 9))
                    fe = int(rng.integers(1, n + 1))
                    k = {"rrpo": int(rng.integers(1, n + 1)), "oracle": fe,
                         "srpo": int(np.clip(fe + rng.integers(-2, 3), 1, n))}[m]
                    dev = k - fe
                    succ = int(rng.binomial(4, 0.12 if dev <= 0 else 0.05))
                    resets.append({"method": m, "seed": s, "iteration": it, "n": n, "k": k,
                                   "first_error": float(fe), "deviation": float(dev),
                                   "clean": dev <= 0, "suffix_pass_at_k": float(succ > 0),
                                   "suffix_successes": succ})
    d = root / "llm"
    d.mkdir(parents=True)
    pd.DataFrame(metrics).to_parquet(d / "metrics.parquet", index=False)
    pd.DataFrame(resets).to_parquet(d / "resets.parquet", index=False)
    return d


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("compare_inputs")
    return _cpi_fixture(root), _llm_fixture(root)


# ------------------------------------------------------------------------------------- outputs
def _check_outputs(out: Path) -> None:
    for stem in FIGURES:
        for ext in ("png", "pdf"):
            f = out / f"{stem}.{ext}"
            assert f.is_file() and f.stat().st_size > 1000, f
    md = (out / "comparison.md").read_text()
    assert "| quantity | paper | simulation | language model | note |" in md
    for quantity in ("clean prefix", "erroneous prefix", "share of self-localizations",
                     "speed-up self-localized reset vs no reset",
                     "speed-up self-localized reset vs random reset", "gradient signal",
                     "coverage p", "precision 1−β of the self", "recall γ of the self",
                     "(1−β)γ − p for the self", "sample_complexity_ratio_slope"):
        line = next((ln for ln in md.splitlines() if ln.startswith("|") and quantity in ln), None)
        assert line is not None, f"no row for {quantity!r}"
    assert "28.7%" in md and "16.3%" in md and "2.70x" in md and "2.50x" in md
    assert "## Verdict on the phase map" in md
    data = json.loads((out / "comparison.json").read_text())
    assert {"rows", "selector", "verdict"} <= set(data)
    resets = pd.read_parquet(out / "resets_common.parquet")
    curves = pd.read_parquet(out / "curves_common.parquet")
    assert list(resets.columns) == list(RESET_COLUMNS)
    assert list(curves.columns) == list(CURVE_COLUMNS)
    assert set(resets["side"]) == set(curves["side"]) == {"simulation", "language model"}
    assert set(curves["method"]) == {"none", "random", "self", "oracle"}


def test_function_entry_point(inputs, tmp_path, monkeypatch):
    from experiments import artifacts
    from experiments.figure_checks import layout_problems

    problems: list[str] = []  # every figure is checked for readability as it is saved
    monkeypatch.setattr(artifacts, "FIGURE_CHECKS",
                        [lambda fig, stem: problems.extend(layout_problems(fig, stem.name))])
    cpi, llm = inputs
    figs = tmp_path / "figs"
    result = run_comparison(cpi, llm, tmp_path / "out", figures_copy=figs, n_boot=50)
    _check_outputs(tmp_path / "out")
    assert problems == [], "\n".join(problems)
    expected = sorted([f.name for f in result.figures] + ["comparison.md", "comparison.json"])
    assert sorted(p.name for p in figs.iterdir()) == expected
    # every comparison key paper_repro.md cites is one the writer produces (the committed file
    # was first rebuilt from comparison.md: its keys must be the writer's)
    from experiments.repro.sources import resolve
    from tests.experiments.test_report import template_keys

    data = json.loads((tmp_path / "out" / "comparison.json").read_text())
    for key in template_keys("comparison"):
        if key.startswith("values."):
            resolve(data, key.split(".")[0] + "." + key.split(".")[1])  # the row exists
        else:
            resolve(data, key.split("[")[0].rsplit(".", 1)[0])  # e.g. correction_by_deviation.lm
    committed = json.loads((REPO / "figures" / "comparison.json").read_text())
    assert set(committed["values"]) <= set(data["values"])
    q = result.quality["self"]
    assert 0 < q.coverage.value < 1 and q.precision.lo <= q.precision.value <= q.precision.hi
    # the fixture's self-localizer lands within +-2 of the first error: well above random
    assert q.precision.value > result.quality["random"].precision.value
    assert result.quality["oracle"].precision.value == 1.0


def test_cli_subprocess(inputs, tmp_path):
    cpi, llm = inputs
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "compare.py"), "--cpi", str(cpi),
         "--llm", str(llm), "--out", str(out), "--no-copy-figures", "--n-boot", "30"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "comparison.md" in proc.stdout
    _check_outputs(out)


# ------------------------------------------------------------------------------ bad inputs
def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("case, pattern", [
    ("missing_dir", r"does not exist"),
    ("missing_metrics", r"missing file .*metrics\.parquet"),
    ("missing_resets", r"missing file .*resets\.parquet"),
    ("missing_column", r"metrics\.parquet: missing column\(s\) generated_tokens"),
    ("resets_column", r"resets\.parquet: missing column\(s\) first_error"),
    ("corrupt", r"cannot read .*resets\.parquet"),
    ("bad_k", r"reset step k outside 1\.\.n"),
])
def test_malformed_llm_input(inputs, tmp_path, case, pattern):
    cpi, llm = inputs
    bad = tmp_path / "llm_bad"
    if case != "missing_dir":
        _copy(llm, bad)
    if case == "missing_metrics":
        (bad / "metrics.parquet").unlink()
    elif case == "missing_resets":
        (bad / "resets.parquet").unlink()
    elif case == "missing_column":
        pd.read_parquet(bad / "metrics.parquet").drop(columns="generated_tokens").to_parquet(
            bad / "metrics.parquet")
    elif case == "resets_column":
        pd.read_parquet(bad / "resets.parquet").drop(columns="first_error").to_parquet(
            bad / "resets.parquet")
    elif case == "corrupt":
        (bad / "resets.parquet").write_bytes(b"not parquet")
    elif case == "bad_k":
        r = pd.read_parquet(bad / "resets.parquet")
        r.loc[0, "k"] = r.loc[0, "n"] + 5
        r.to_parquet(bad / "resets.parquet")
    with pytest.raises(InputError, match=pattern):
        load_inputs(cpi, bad)
    out = tmp_path / "never"
    with pytest.raises(InputError):
        run_comparison(cpi, bad, out)
    assert not out.exists(), "nothing may be written for a bad input"


@pytest.mark.parametrize("case, pattern", [
    ("missing_summary", r"missing file .*summary\.json"),
    ("bad_summary", r"cannot read .*summary\.json"),
    ("missing_experiment", r"no rows of experiment 'approx_oracle'"),
    ("missing_column", r"budget_curves\].*missing column\(s\) J"),
])
def test_malformed_cpi_input(inputs, tmp_path, case, pattern):
    cpi, llm = inputs
    bad = _copy(cpi, tmp_path / "cpi_bad")
    res = pd.read_parquet(bad / "results.parquet")
    if case == "missing_summary":
        (bad / "summary.json").unlink()
    elif case == "bad_summary":
        (bad / "summary.json").write_text("{not json")
    elif case == "missing_experiment":
        res[res["experiment"] != "approx_oracle"].to_parquet(bad / "results.parquet")
    elif case == "missing_column":
        res.drop(columns="J").to_parquet(bad / "results.parquet")
    with pytest.raises(InputError, match=pattern):
        load_inputs(bad, llm)


def test_cli_reports_input_error(inputs, tmp_path, capsys):
    cpi, _ = inputs
    rc = main(["--cpi", str(cpi), "--llm", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
               "--no-copy-figures"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "input error" in err and "nope" in err


# --------------------------------------------------------------------------------- statistics
def test_wilson_and_buckets():
    e = wilson(29, 100)
    assert e.lo < 0.29 < e.hi and abs(e.lo - 0.2101) < 1e-3 and abs(e.hi - 0.3854) < 1e-3
    assert not wilson(0, 0).finite
    b = deviation_bucket(pd.Series([-9, -3, 0, 2, 7, np.nan]))
    assert b.tolist()[:5] == ["≤-4", "-3", "0", "+2", "≥+4"] and pd.isna(b.iloc[5])


def test_speedup_and_first_reach():
    assert first_reach(np.array([0, 10, 20]), np.array([0.0, 0.5, 1.0]), 0.75) == 15
    assert np.isnan(first_reach(np.array([0, 1]), np.array([0.0, 0.1]), 0.5))
    it = np.arange(5)
    fast = pd.DataFrame({"method": "self", "seed": 0, "iteration": it, "samples": 10 * (it + 1),
                         "score": np.minimum(1.0, 0.5 * (it + 1))})
    slow = pd.DataFrame({"method": "none", "seed": 0, "iteration": it, "samples": 10 * (it + 1),
                         "score": 0.2 * (it + 1)})
    # slow reaches its final 1.0 at 50 samples; fast reaches 1.0 at 20 -> 2.5x
    assert speedup_point(pd.concat([fast, slow]), "self", "none", "samples") == pytest.approx(2.5)


def test_selector_quality_definitions():
    # 4 parents with n = 4 and first error 2: p = 2/4; the localizer: 2 clean, 1 wrong, 1 fallback
    r = pd.DataFrame({"method": "self", "seed": 0, "n": 4.0, "first_error": 2.0,
                      "k": [1.0, 2.0, 3.0, 1.0], "from_fallback": [False, False, False, True]})
    r["clean"] = (r["k"] - r["first_error"]) <= 0
    q = selector_quality(r, "self", n_boot=50)
    assert q.coverage.value == pytest.approx(0.5)
    assert q.precision.value == pytest.approx(2 / 3)
    assert q.recall.value == pytest.approx(3 / 4)
    assert q.product.value == pytest.approx(0.5) and q.margin.value == pytest.approx(0.0)
