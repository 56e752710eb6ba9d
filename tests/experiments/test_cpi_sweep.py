"""Tests of experiments/cpi_sweep.py: schema, resume, backends, bad arguments, and faults.

They use the test-only ``tiny`` size (``--tiny``) and a subset of experiments. Faults (issue 12):
SIGKILL of the driver leaves no worker behind; Ctrl-C (SIGINT to the driver) prints one line and
a rerun resumes; a corrupt or empty cell file is reported in one line and recomputed; progress is
plain text when stdout is not a terminal; --threads x --jobs may not exceed the cores.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from experiments.cpi_sweep import options_from_args, print_summary  # noqa: E402
from experiments.sweep.backends import ray_available  # noqa: E402
from experiments.sweep.cells import CellStore  # noqa: E402
from experiments.sweep.registry import EXPERIMENT_NAMES, get_experiment  # noqa: E402
from experiments.sweep.runner import SweepOptions, plan, run_sweep  # noqa: E402

FAST = ("dilution", "estimation", "improvement", "first_error")
REQUIRED_KEYS = ("sample_complexity_ratio_slope", "improvement_ratio_slope",
                 "rr_samples_tau_slope", "caro_samples_tau_slope", "approx_oracle_rate_slope",
                 # issue 8's new keys
                 "direct_sample_complexity_ratio_slope", "theorem_algorithms_ratio_slope",
                 "bound_holds_fraction", "actions_slope",
                 # issue 16's: the theorem's criterion, the knob curves, the sampled guarantee
                 "direct_theorem_ratio_slope", "direct_theorem_knob_ratio_slope",
                 "direct_knob_ratio_slope", "bound_holds_fraction_sampled_guarantee",
                 "bound_holds_fraction_sampled_floor", "full_step_shortfall")
#: Grouped keys ({family or method: record}) and a member each must have at tiny size.
GROUPED = {"direct_sample_complexity_ratio_slope": ("coverage", "shifted", "planted", "lock"),
           "theorem_algorithms_ratio_slope": ("coverage",),
           "bound_holds_fraction": ("rr", "caro", "approx"),
           "actions_slope": ("rr_samples", "caro_samples"),
           "direct_theorem_ratio_slope": ("coverage", "shifted", "planted", "lock"),
           "direct_knob_ratio_slope": ("shifted/side_level=0", "shifted/side_level=0.5"),
           "bound_holds_fraction_sampled_guarantee": ("rr", "caro"),
           "full_step_shortfall": ("concave/rr", "coverage/rr")}


def _opts(out, **kw) -> SweepOptions:
    base = dict(out=Path(out), size="tiny", only=FAST, seeds=2, jobs=1, progress=False)
    base.update(kw)
    return SweepOptions(**base)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.reset_index(drop=True)


@pytest.fixture(scope="module")
def full_tiny(tmp_path_factory):
    """One uninterrupted tiny sweep of every experiment (the reference for the other tests); the
    readability checks of every figure it draws ride along (``layout_problems``)."""
    from experiments import artifacts
    from experiments.figure_checks import layout_problems

    out = tmp_path_factory.mktemp("sweep_full")
    problems: list[str] = []

    def check(fig, stem):
        problems.extend(layout_problems(fig, stem.name))

    artifacts.FIGURE_CHECKS.append(check)
    try:
        result = run_sweep(_opts(out, only=EXPERIMENT_NAMES, jobs=2))
    finally:
        artifacts.FIGURE_CHECKS.remove(check)
    result.layout_problems = problems
    return result


def test_every_sweep_figure_reads(full_tiny):
    """No text over text, no empty panel, no offset axis, legend values short (figure_checks)."""
    pngs = [f for f in full_tiny.figures if f.suffix == ".png"]
    assert len(pngs) >= len(EXPERIMENT_NAMES)
    assert full_tiny.layout_problems == [], "\n".join(full_tiny.layout_problems)


def test_rerun_writes_the_same_bytes(tmp_path):
    """The same run twice: summary.json and every PNG and PDF byte-identical (sorted, rounded
    JSON; no dates in the figures), so a rerun that changes no result leaves git status clean."""
    only = ("bounds", "first_error")
    a = run_sweep(_opts(tmp_path / "a", only=only))
    b = run_sweep(_opts(tmp_path / "b", only=only))
    files = [Path("summary.json")] + [f.relative_to(a.out) for f in a.figures]
    assert len(files) >= 5
    for rel in files:
        assert (a.out / rel).read_bytes() == (b.out / rel).read_bytes(), rel
    assert b"CreationDate" not in (a.out / [f for f in files if f.suffix == ".pdf"][0]).read_bytes()


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
    for key, members in GROUPED.items():
        assert set(members) <= set(summary[key]), key
    from experiments.sweep.stats import iter_records

    n = 0
    for key, name, rec in iter_records(summary):
        assert set(rec) >= {"estimate", "ci", "theory", "n_points"}, (key, name)
        assert len(rec["ci"]) == 2
        assert rec.get("kind", "tested") in ("tested", "identity", "measurement", "determined"), (
            key, name)
        n += 1
    assert n >= len(summary)
    for rec in summary["bound_holds_fraction"].values():
        assert "ratio_median" in rec and rec["n_cells"] > 0
    for name in EXPERIMENT_NAMES:
        pngs = list((out / "figures").glob(f"{name}*.png"))
        pdfs = list((out / "figures").glob(f"{name}*.pdf"))
        assert pngs and pdfs, name
    assert res.groupby(["cell_id"]).ngroups == full_tiny.cells_total


def test_plug_in_slope_record_is_well_formed(full_tiny):
    """Plumbing of a summary record (finite, ordered interval). Not a check of Theorem 1: the
    plug-in slope on the coverage family is built in (the exact advantage is tau p and the noise
    does not depend on p); the direct measurement is tested in test_theorem_checks.py."""
    rec = full_tiny.summary["sample_complexity_ratio_slope"]
    assert rec["kind"] == "identity"
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


# ---------------------------------------------------------------------------------------------
# Threads, progress, summary (issue 12 items 4 and 7)
# ---------------------------------------------------------------------------------------------
def test_threads_must_be_positive_and_fit_the_cores(tmp_path, capsys):
    with pytest.raises(SystemExit):
        options_from_args(["--threads", "0", "--out", str(tmp_path / "a")])
    assert "--threads" in capsys.readouterr().err
    cores = os.cpu_count() or 1
    with pytest.raises(SystemExit):
        options_from_args(["--threads", str(cores), "--jobs", "2", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert "--threads x --jobs" in err and "cores" in err
    assert options_from_args(["--out", str(tmp_path / "c")]).threads == 1


def test_plain_text_progress_when_stdout_is_not_a_terminal(tmp_path, capsys):
    run_sweep(SweepOptions(out=tmp_path / "p", size="tiny", only=("dilution",), seeds=2, jobs=1,
                           progress=None))
    out = capsys.readouterr().out
    assert "[cpi sweep] 16/16 cells (100%)" in out
    assert "dilution done" in out
    assert "fitting and plotting dilution" in out
    assert "\r" not in out  # no bar redraws in a log


def test_summary_says_not_reached_and_labels_the_paper():
    import io

    buf = io.StringIO()
    print_summary({
        "a": {"estimate": None, "ci": [None, None], "theory": -2.0, "n_points": 0},
        "b": {"estimate": 0.5, "ci": [0.4, 0.6], "theory": None, "paper": 0.163, "n_points": 3,
              "kind": "measurement"},
        "c": {"fam": {"estimate": -1.9, "ci": [-2.1, -1.7], "theory": -2.0, "n_points": 4}},
    }, stream=buf)
    text = buf.getvalue()
    assert "nan" not in text
    assert "not reached" in text
    assert "paper 0.163" in text and "theory 0.163" not in text
    assert "c[fam]" in text and "holds; tested (could have failed)" in text


# ---------------------------------------------------------------------------------------------
# Faults (issue 12 items 6 and 9)
# ---------------------------------------------------------------------------------------------
def test_corrupt_or_empty_cell_files_are_reported_and_recomputed(tmp_path, capsys, full_tiny):
    opts = _opts(tmp_path / "c", only=("dilution",))
    run_sweep(opts)
    store = CellStore(opts.out)
    cells = plan(opts)
    store.path(cells[0]).write_bytes(b"not a parquet file")
    store.path(cells[1]).write_bytes(b"")
    capsys.readouterr()
    again = run_sweep(opts)
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("cell file")]
    assert len(lines) == 2 and all("recomputing it" in ln for ln in lines)
    assert any("empty file" in ln for ln in lines) and any("unreadable" in ln for ln in lines)
    assert again.complete and again.cells_run == 2
    ref = full_tiny.results[full_tiny.results["experiment"] == "dilution"].dropna(axis=1, how="all")
    got = again.results.dropna(axis=1, how="all")
    pd.testing.assert_frame_equal(_sorted(got), _sorted(ref[got.columns]), check_dtype=False)


def _children(pid: int) -> set[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.add(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent has not reaped it


def _start_long_sweep(out: Path, log: Path) -> subprocess.Popen:
    """A tiny sweep slow enough to be caught mid-run (budget curves, 2 worker processes)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(REPO / "experiments" / "cpi_sweep.py"), "--tiny", "--only",
         "budget_curves", "--seeds", "3", "--jobs", "2", "--out", str(out)],
        stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=out.parent, env=env,
        start_new_session=True,
        # A shell without job control starts background jobs with SIGINT ignored, and Python
        # then installs no KeyboardInterrupt handler: give the child the default disposition,
        # as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(pred, timeout: float) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores for 2 worker processes")
def test_sigkill_of_the_driver_leaves_no_worker_behind(tmp_path):
    out = tmp_path / "killed"
    proc = _start_long_sweep(out, tmp_path / "log")
    try:
        assert _wait_for(lambda: len(_children(proc.pid)) >= 2, 120), "workers never started"
        assert _wait_for(lambda: (out / "cells").exists(), 120)
        time.sleep(1.0)
        workers = _children(proc.pid)
        assert len(workers) >= 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        gone = _wait_for(lambda: not any(_alive(w) for w in workers), 10)
        assert gone, f"still running after SIGKILL of the driver: {[w for w in workers if _alive(w)]}"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores for 2 worker processes")
def test_ctrl_c_prints_one_line_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "interrupted"
    log = tmp_path / "log"
    proc = _start_long_sweep(out, log)
    try:
        cells = out / "cells" / "budget_curves"
        assert _wait_for(lambda: cells.exists() and len(list(cells.glob("*.parquet"))) >= 2, 180)
        os.kill(proc.pid, signal.SIGINT)  # the driver only, as a terminal would not guarantee
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert rc == 130, text
    assert "Traceback" not in text, text
    last = [ln for ln in text.splitlines() if ln.startswith("interrupted")]
    assert len(last) == 1 and "rerun the same command to resume" in last[0]
    saved = len(list((out / "cells" / "budget_curves").glob("*.parquet")))
    total = len(plan(SweepOptions(out=out, size="tiny", only=("budget_curves",), seeds=3)))
    assert f"interrupted: {saved} of {total} cells are saved in {out}" in last[0]
    assert 0 < saved < total
    rerun = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "cpi_sweep.py"), "--tiny", "--only",
         "budget_curves", "--seeds", "3", "--jobs", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{total - saved} of {total} cells to run ({saved} already saved)" in rerun.stdout
    assert (out / "results.parquet").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and /dev/shm")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores for 2 worker processes")
def test_sigterm_cleans_up_like_ctrl_c_and_a_rerun_resumes(tmp_path):
    """SIGTERM (a scheduler's or `kill`'s stop) runs the Ctrl-C cleanup: one line, exit 143, no
    worker left, none of the run's shared-memory files (joblib's memmapping folders and loky's
    semaphores are named after the driver's pid) and no temporary file; a rerun resumes."""
    out = tmp_path / "terminated"
    log = tmp_path / "log"
    proc = _start_long_sweep(out, log)
    try:
        cells = out / "cells" / "budget_curves"
        assert _wait_for(lambda: cells.exists() and len(list(cells.glob("*.parquet"))) >= 2, 180)
        workers = _children(proc.pid)
        assert workers, "no worker processes to check"
        os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert rc == 143, text
    assert "Traceback" not in text and "leaked" not in text, text
    last = [ln for ln in text.splitlines() if ln.startswith("terminated")]
    assert len(last) == 1 and "rerun the same command to resume" in last[0], text
    assert "CPU" in last[0] and "wall" in last[0]
    assert _wait_for(lambda: not any(_alive(w) for w in workers), 10), "workers left running"
    if os.path.isdir("/dev/shm"):
        left = [n for n in os.listdir("/dev/shm") if f"_{proc.pid}_" in n or f"-{proc.pid}-" in n]
        assert not left, f"shared memory left behind: {left}"
    assert not list(out.rglob("*.tmp"))
    saved = len(list(cells.glob("*.parquet")))
    total = len(plan(SweepOptions(out=out, size="tiny", only=("budget_curves",), seeds=3)))
    assert f"terminated: {saved} of {total} cells are saved" in last[0]
    rerun = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "cpi_sweep.py"), "--tiny", "--only",
         "budget_curves", "--seeds", "3", "--jobs", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{total - saved} of {total} cells to run ({saved} already saved)" in rerun.stdout
    assert "run time: wall" in rerun.stdout and "cores busy" in rerun.stdout
    rows = pd.read_parquet(out / "results.parquet")
    assert rows["cell_id"].nunique() == total
