"""Test every prediction of Theorem 1 (THEORY.md section 5) by simulation and draw the figures.

Usage::

    python experiments/cpi_sweep.py                      # default size (run time: README.md)
    python experiments/cpi_sweep.py --quick              # smoke run -> runs/cpi_sweep_quick
    python experiments/cpi_sweep.py --full --jobs 16     # paper scale
    python experiments/cpi_sweep.py --only estimation tau --seeds 8
    python experiments/cpi_sweep.py --backend ray --ray-address auto

Run times measured on a quiet 2-core machine are in README.md and docs/sweep.md (one place
each, the same numbers); on a shared machine expect several times longer. ``--jobs`` worker
processes each use ``--threads`` numerical threads (default 1): their product may not exceed the
machine's cores. Progress: a bar on a terminal, one plain line per experiment (and per 5% of the
cells) in logs. Ctrl-C stops cleanly; rerunning the same command resumes from the saved cells.

Outputs in ``--out`` (default ``runs/cpi_sweep``; ``runs/cpi_sweep_quick``, ``_full`` or
``_custom`` for any other size, which never writes into the default run's folder):
``results.parquet``, ``summary.json``, ``sweep.json``, ``figures/`` (PNG + PDF); only the default
size copies the figures and the summary to the repository's ``figures/`` (an ``--only`` subset
updates its own experiments' keys of the published summary and keeps the others). A rerun with the same arguments resumes: finished cells (one parquet
file each under ``cells/``) are skipped. See docs/sweep.md.

The script puts the repository root on ``sys.path`` so that ``experiments.sweep`` imports
without installation (``cpi`` comes from the installed package or the same root).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path


def _early_threads(argv: list[str]) -> None:
    """Apply --threads to BLAS/OpenMP/numba before numpy and numba are imported (they read these
    variables at import); the validated value is applied again in every worker."""
    value = "1"
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
    if value.isdigit() and int(value) >= 1:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
            os.environ[var] = value


if __name__ == "__main__":
    _early_threads(sys.argv[1:])

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from experiments.sweep.registry import DEFAULT_SEEDS, EXPERIMENT_NAMES  # noqa: E402
from experiments.sweep.runner import (  # noqa: E402
    SweepArgumentError,
    SweepInterrupted,
    SweepOptions,
    run_sweep,
    validate,
)
from experiments.sweep.stats import format_fit, iter_records, verdict  # noqa: E402

DEFAULT_OUT = Path("runs/cpi_sweep")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="cpi_sweep",
        description="Check the predictions of Theorem 1 (CPI-RR vs CPI-CARO) by simulation.",
        epilog="experiments: " + ", ".join(EXPERIMENT_NAMES),
    )
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="size", action="store_const", const="quick",
                      help="smoke size (run time: README.md)")
    size.add_argument("--full", dest="size", action="store_const", const="full",
                      help="paper-scale sweep (hours on 2 cores)")
    size.add_argument("--tiny", dest="size", action="store_const", const="tiny",
                      help=argparse.SUPPRESS)  # test-suite size
    ap.set_defaults(size="default")
    ap.add_argument("--only", nargs="+", metavar="NAME", default=None,
                    help="run only these experiments (default: all)")
    ap.add_argument("--seeds", type=int, default=None, metavar="N",
                    help="replicates per configuration (default: 3 quick, 5 default, 20 full)")
    ap.add_argument("--base-seed", type=int, default=0, metavar="S",
                    help="root of every cell's random stream (default 0)")
    ap.add_argument("--p", type=float, nargs="+", default=None, metavar="P",
                    help="override the coverage grid of the p sweeps (each in (0, 1])")
    cores = os.cpu_count() or 1
    ap.add_argument("--jobs", type=int, default=min(2, cores), metavar="N",
                    help=f"worker processes / local Ray CPUs (default {min(2, cores)})")
    ap.add_argument("--threads", type=int, default=1, metavar="N",
                    help="numerical threads per worker (numba, BLAS; default 1); "
                         "--threads x --jobs may not exceed the cores")
    ap.add_argument("--backend", choices=("joblib", "ray"), default="joblib")
    ap.add_argument("--ray-address", default=None, metavar="ADDR",
                    help="connect to this Ray cluster (default: start a local instance)")
    ap.add_argument("--out", type=Path, default=None, metavar="DIR",
                    help=f"output directory (default {DEFAULT_OUT} for the default size, "
                         "runs/cpi_sweep_<size> for --quick / --full, runs/cpi_sweep_custom for "
                         "other --seeds, --p or --base-seed); another size never writes into "
                         f"{DEFAULT_OUT}")
    ap.add_argument("--no-copy-figures", action="store_true",
                    help="do not copy figures to figures/ (the default run copies them)")
    ap.add_argument("--no-progress", action="store_true",
                    help="no progress output (default: a bar on a terminal, plain lines in logs)")
    return ap


def options_from_args(argv: list[str] | None = None) -> SweepOptions:
    """Parse and validate; every invalid argument exits through ``argparse`` with a message."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.ray_address and args.backend != "ray":
        ap.error("--ray-address needs --backend ray")
    custom = [flag for flag, changed in (
        ("--seeds", args.seeds is not None and args.seeds != DEFAULT_SEEDS["default"]),
        ("--p", args.p is not None), ("--base-seed", args.base_seed != 0)) if changed]
    default_size = args.size == "default" and not custom
    out = args.out
    if out is None:
        out = DEFAULT_OUT if default_size else Path(
            f"{DEFAULT_OUT}_{args.size if args.size != 'default' else 'custom'}")
    elif not default_size and out.resolve() == DEFAULT_OUT.resolve():
        why = f"--{args.size}" if args.size != "default" else " ".join(custom)
        ap.error(f"{DEFAULT_OUT} holds the default run; a run with {why} writes elsewhere "
                 "(omit --out, or pass another directory)")
    copy = None
    if default_size and not args.no_copy_figures:
        copy = REPO_ROOT / "figures"
    opts = SweepOptions(
        out=out, size=args.size,
        only=tuple(args.only) if args.only is not None else EXPERIMENT_NAMES,
        seeds=args.seeds, jobs=args.jobs, backend=args.backend, ray_address=args.ray_address,
        base_seed=args.base_seed, p_values=tuple(args.p) if args.p is not None else None,
        figures_copy=copy, progress=False if args.no_progress else None, threads=args.threads,
    )
    try:
        return validate(opts)
    except SweepArgumentError as err:
        ap.error(str(err))
        raise  # unreachable; keeps type checkers happy


def print_summary(summary: dict, stream=None) -> None:
    """One line per fitted law: value [95% CI], the theory or the paper's number (labelled as
    such), and the verdict (holds / does not hold; tested / identity / measurement)."""
    stream = stream or sys.stdout
    for key, name, rec in iter_records(summary):
        label = key if name is None else f"{key}[{name}]"
        ref = []
        if rec.get("theory") is not None:
            ref.append(f"theory {rec['theory']:.3g}")
        if rec.get("prediction") is not None:
            ref.append(f"prediction {rec['prediction']:g}")
        if rec.get("paper") is not None:
            ref.append(f"paper {rec['paper']:g}")
        ref_txt = f" ({'; '.join(ref)})" if ref else ""
        print(f"  {label:58s} {format_fit(rec)}{ref_txt} -> {verdict(rec)}", file=stream)


def time_line(seconds: float, cpu: float) -> str:
    """``wall 12.3 s, CPU 23.4 s (1.90 cores busy)``."""
    busy = f" ({cpu / seconds:.2f} cores busy)" if seconds > 0 else ""
    return f"wall {seconds:.1f} s, CPU {cpu:.1f} s{busy}"


def main(argv: list[str] | None = None) -> int:
    opts = options_from_args(argv)
    try:
        result = run_sweep(opts)
    except SweepInterrupted as stop:
        what = "terminated" if stop.signal == signal.SIGTERM else "interrupted"
        print(f"\n{what}: {stop.saved} of {stop.total} cells are saved in {stop.out}; "
              f"rerun the same command to resume ({time_line(stop.seconds, stop.cpu_seconds)})",
              file=sys.stderr)
        return 128 + int(stop.signal)
    if not result.complete:
        print(f"{result.cells_run} cells run; {result.cells_total} planned, not all done "
              f"(rerun to finish); outputs in {result.out}; "
              f"{time_line(result.seconds, result.cpu_seconds)}")
        return 0
    print(f"{result.cells_run} cells run, {result.cells_total} planned; outputs in {result.out}")
    print_summary(result.summary)
    print(f"run time: {time_line(result.seconds, result.cpu_seconds)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as stop:  # Ctrl-C/SIGTERM outside the cells: nothing half-written
        term = type(stop).__name__ == "Terminated"
        print(f"\n{'terminated' if term else 'interrupted'}; finished cells are saved, rerun "
              "the same command to resume", file=sys.stderr)
        sys.exit(143 if term else 130)
