"""Tests of experiments/cpi_sweep.py: schema, resume, backends, estimation slope, bad arguments.

They use the test-only ``tiny`` size (``--tiny``) and a subset of experiments, so the whole file
runs in about a minute on 2 cores.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from experiments.cpi_sweep import options_from_args  # noqa: E402
from experiments.sweep.backends import ray_available  # noqa: E402
from experiments.sweep.cells import CellStore  # noqa: E402
from experiments.sweep.registry import EXPERIMENT_NAMES, get_experiment  # noqa: E402
from experiments.sweep.runner import SweepOptions, plan, run_sweep  # noqa: E402

FAST = ("dilution", "estimation", "improvement", "first_error")
REQUIRED_KEYS = ("sample_complexity_ratio_slope", "improvement_ratio_slope",
                 "rr_samples_tau_slope", "caro_samples_tau_slope", "approx_oracle_rate_slope")


def _opts(out, **kw) -> SweepOptions:
    base = dict(out=Path(out), size="tiny", only=FAST, seeds=2, jobs=1, progress=False)
    base.update(kw)
    return SweepOptions(**base)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.reset_index(drop=True)


@pytest.fixture(scope="module")
def full_tiny(tmp_path_factory):
    """One uninterrupted tiny sweep of every experiment (the reference for the other tests)."""
    out = tmp_path_factory.mktemp("sweep_full")
    return run_sweep(_opts(out, only=EXPERIMENT_NAMES, jobs=2))


def test_registry_names_match_modules():
    for name in EXPERIMENT_NAMES:
        assert get_experiment(name).name == name


def test_output_schema(full_tiny):
    out = full_tiny.out
    res = pd.read_parquet(out / "results.parquet")
    assert list(res.columns[:3]) == ["experiment", "cell_id", "seed"]
    assert set(res["experiment"]) == set(EXPERIMENT_NAMES)
    assert res["seed"].min() >= 0
    # config columns present where they belong
    est = res[res["experiment"] == "estimation"]
    for col in ("p", "tau", "method", "q_rollouts", "env_steps_total"):
        assert est[col].notna().all(), col
    assert est["p"].between(0, 1, inclusive="right").all()
    summary = json.loads((out / "summary.json").read_text())
    for key in REQUIRED_KEYS:
        assert key in summary, key
    for key, rec in summary.items():
        assert set(rec) >= {"estimate", "ci", "theory", "n_points"}, key
        assert len(rec["ci"]) == 2
    for name in EXPERIMENT_NAMES:
        pngs = list((out / "figures").glob(f"{name}*.png"))
        pdfs = list((out / "figures").glob(f"{name}*.pdf"))
        assert pngs and pdfs, name
    assert res.groupby(["cell_id"]).ngroups == full_tiny.cells_total


def test_estimation_slope_interval_finite_and_negative(full_tiny):
    rec = full_tiny.summary["sample_complexity_ratio_slope"]
    lo, hi = rec["ci"]
    assert math.isfinite(lo) and math.isfinite(hi)
    assert lo <= rec["estimate"] <= hi
    assert hi < 0


def test_resume_equals_uninterrupted(tmp_path, full_tiny):
    out = tmp_path / "resumed"
    opts = _opts(out)
    # "kill" after 5 cells, then delete one finished cell, then rerun to completion
    first = run_sweep(_opts(out, max_cells=5))
    assert not first.complete and first.cells_run == 5
    store = CellStore(out)
    done = [c for c in plan(opts) if store.is_done(c)]
    store.path(done[0]).unlink()
    (store.path(done[1]).parent / ".stray.tmp").write_bytes(b"partial write")
    resumed = run_sweep(opts)
    assert resumed.complete
    again = run_sweep(opts)  # everything done: nothing recomputed, same rows
    assert again.cells_run == 0
    ref = full_tiny.results[full_tiny.results["experiment"].isin(FAST)].dropna(axis=1, how="all")
    got = resumed.results.dropna(axis=1, how="all")
    pd.testing.assert_frame_equal(_sorted(got), _sorted(ref[got.columns]), check_dtype=False)
    assert not got.duplicated(subset=[c for c in got.columns if c != "cell_id"] + ["cell_id"]).any()
    pd.testing.assert_frame_equal(_sorted(again.results), _sorted(resumed.results))


def test_jobs_do_not_change_rows(tmp_path, full_tiny):
    one = run_sweep(_opts(tmp_path / "j1", only=("estimation",), jobs=1))
    ref = full_tiny.results[full_tiny.results["experiment"] == "estimation"].dropna(axis=1, how="all")
    got = one.results.dropna(axis=1, how="all")
    pd.testing.assert_frame_equal(_sorted(got), _sorted(ref[got.columns]), check_dtype=False)


@pytest.mark.ray
@pytest.mark.skipif(not ray_available(), reason="ray is not installed (optional extra)")
def test_ray_backend_matches_joblib(tmp_path, full_tiny):
    names = ("estimation", "first_error")
    got = run_sweep(_opts(tmp_path / "ray", only=names, backend="ray", jobs=2))
    ref = full_tiny.results[full_tiny.results["experiment"].isin(names)].dropna(axis=1, how="all")
    pd.testing.assert_frame_equal(_sorted(got.results.dropna(axis=1, how="all")),
                                  _sorted(ref[got.results.dropna(axis=1, how="all").columns]),
                                  check_dtype=False)


@pytest.mark.parametrize("argv, message", [
    (["--only", "nonsense"], "unknown experiment"),
    (["--seeds", "-1"], "--seeds"),
    (["--p", "0"], "(0, 1]"),
    (["--p", "1.5"], "(0, 1]"),
    (["--base-seed", "-3"], "--base-seed"),
    (["--jobs", "0"], "--jobs"),
])
def test_invalid_arguments_error_early(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        options_from_args([*argv, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "cells").exists()


def test_unwritable_out_errors_early(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SystemExit):
        options_from_args(["--out", str(blocker / "sub")])
    assert "--out" in capsys.readouterr().err


def test_cli_tiny_runs_end_to_end(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "cpi_sweep.py"), "--tiny", "--only",
         "dilution", "--seeds", "2", "--jobs", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "results.parquet").exists() and (out / "summary.json").exists()
    assert "dilution_slope" in proc.stdout
