"""Test every prediction of Theorem 1 (THEORY.md section 5) by simulation and draw the figures.

Usage::

    python experiments/cpi_sweep.py                      # default: ~10 min on 2 cores
    python experiments/cpi_sweep.py --quick --out runs/q # ~3 min smoke run
    python experiments/cpi_sweep.py --full --jobs 16     # paper scale
    python experiments/cpi_sweep.py --only estimation tau --seeds 8
    python experiments/cpi_sweep.py --backend ray --ray-address auto

Outputs in ``--out`` (default ``runs/cpi_sweep``): ``results.parquet``, ``summary.json``,
``sweep.json``, ``figures/`` (PNG + PDF); the default run also copies the figures to the
repository's ``figures/``. A rerun with the same arguments resumes: finished cells (one parquet
file each under ``cells/``) are skipped. See docs/sweep.md.

The script puts the repository root on ``sys.path`` so that ``experiments.sweep`` imports
without installation (``cpi`` comes from the installed package or the same root).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from experiments.sweep.registry import EXPERIMENT_NAMES  # noqa: E402
from experiments.sweep.runner import (  # noqa: E402
    SweepArgumentError,
    SweepOptions,
    run_sweep,
    validate,
)
from experiments.sweep.stats import format_fit  # noqa: E402

DEFAULT_OUT = Path("runs/cpi_sweep")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="cpi_sweep",
        description="Check the predictions of Theorem 1 (CPI-RR vs CPI-CARO) by simulation.",
        epilog="experiments: " + ", ".join(EXPERIMENT_NAMES),
    )
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="size", action="store_const", const="quick",
                      help="smoke size, about 3 minutes on 2 cores")
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
    ap.add_argument("--jobs", type=int, default=2, metavar="N",
                    help="worker processes / local Ray CPUs (default 2)")
    ap.add_argument("--backend", choices=("joblib", "ray"), default="joblib")
    ap.add_argument("--ray-address", default=None, metavar="ADDR",
                    help="connect to this Ray cluster (default: start a local instance)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                    help=f"output directory (default {DEFAULT_OUT})")
    ap.add_argument("--no-copy-figures", action="store_true",
                    help="do not copy figures to figures/ (the default run copies them)")
    ap.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    return ap


def options_from_args(argv: list[str] | None = None) -> SweepOptions:
    """Parse and validate; every invalid argument exits through ``argparse`` with a message."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.ray_address and args.backend != "ray":
        ap.error("--ray-address needs --backend ray")
    copy = None
    if args.size == "default" and not args.no_copy_figures:
        copy = REPO_ROOT / "figures"
    opts = SweepOptions(
        out=args.out, size=args.size,
        only=tuple(args.only) if args.only is not None else EXPERIMENT_NAMES,
        seeds=args.seeds, jobs=args.jobs, backend=args.backend, ray_address=args.ray_address,
        base_seed=args.base_seed, p_values=tuple(args.p) if args.p is not None else None,
        figures_copy=copy, progress=False if args.no_progress else None,
    )
    try:
        return validate(opts)
    except SweepArgumentError as err:
        ap.error(str(err))
        raise  # unreachable; keeps type checkers happy


def main(argv: list[str] | None = None) -> int:
    opts = options_from_args(argv)
    result = run_sweep(opts)
    print(f"{result.cells_run} cells run, {result.cells_total} planned, "
          f"{result.seconds:.1f} s; outputs in {result.out}")
    for key, rec in result.summary.items():
        theory = "" if rec.get("theory") is None else f"  (theory {rec['theory']:g})"
        print(f"  {key:40s} {format_fit(rec)}{theory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
