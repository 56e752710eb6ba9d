"""Compare the CPI simulation with the language-model (SRPO) runs in one schema, four figures, one table.

Usage::

    python experiments/compare.py                                   # runs/cpi_sweep + runs/llm
    python experiments/compare.py --cpi runs/cpi_sweep --llm runs/llm --out runs/compare

Reads the tidy outputs of ``experiments/cpi_sweep.py`` (``results.parquet``, ``summary.json``) and
of ``experiments/llm_srpo.py`` (``metrics.parquet``, ``resets.parquet``), maps both into the common
reset-event and learning-curve tables (docs/compare.md), and writes into ``--out``:

* ``compare_localization.{png,pdf}`` -- the paper's 4-panel localization figure, both sides;
* ``compare_learning_curves.{png,pdf}`` -- score vs samples and vs compute, with speed-ups;
* ``compare_gradient_signal.{png,pdf}`` -- per-token gradient signal, reset vs base groups;
* ``compare_phase_map.{png,pdf}`` -- the LM's localizer on the simulation's (beta, gamma) map;
* ``comparison.md`` / ``comparison.json`` -- quantity, paper, simulation, language model;
* ``resets_common.parquet`` / ``curves_common.parquet`` -- the two sides in the common schema.

Figures are also copied to ``figures/`` unless ``--no-copy-figures``. Every input problem (missing
directory, file, experiment or column) is reported, naming it, before anything is drawn.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from experiments.comparison import figures as fg  # noqa: E402
from experiments.comparison import stats as st  # noqa: E402
from experiments.comparison.report import write_report  # noqa: E402
from experiments.comparison.schema import InputError, load_inputs  # noqa: E402

DEFAULT_CPI = Path("runs/cpi_sweep")
DEFAULT_LLM = Path("runs/llm")
DEFAULT_OUT = Path("runs/compare")
DEFAULT_FIGURES = REPO_ROOT / "figures"


@dataclass
class ComparisonResult:
    """What :func:`run_comparison` wrote: the figure files, the report files, the verdict."""

    figures: list[Path]
    report: Path
    report_json: Path
    quality: dict
    speedups: object


def run_comparison(cpi_dir: str | Path = DEFAULT_CPI, llm_dir: str | Path = DEFAULT_LLM,
                   out_dir: str | Path = DEFAULT_OUT, figures_copy: str | Path | None = None,
                   n_boot: int = 400) -> ComparisonResult:
    """Read both sides, draw the four figures and write the comparison table.

    Args:
        cpi_dir: output directory of ``experiments/cpi_sweep.py``.
        llm_dir: output directory of ``experiments/llm_srpo.py``.
        out_dir: where figures, ``comparison.md`` and the common-schema tables go.
        figures_copy: also copy the figures here (``None``: do not copy).
        n_boot: bootstrap resamples for speed-up intervals.

    Raises:
        InputError: a missing or malformed input, before any file is written.
    """
    inputs = load_inputs(cpi_dir, llm_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inputs.resets.to_parquet(out / "resets_common.parquet", index=False)
    inputs.curves.to_parquet(out / "curves_common.parquet", index=False)

    llm_resets = inputs.resets[inputs.resets["side"] == "language model"]
    quality = {m: st.selector_quality(llm_resets, m)
               for m in ("self", "random", "oracle") if m in set(llm_resets["method"])}
    speedups = fg.speedup_table(inputs.curves, n_boot=n_boot)

    figures: list[Path] = []
    figures += fg.localization_figure(inputs.resets, out)
    figures += fg.learning_curves_figure(inputs.curves, speedups, out)
    figures += fg.gradient_signal_figure(inputs.signal, out)
    figures += fg.phase_map_figure(inputs.phase, quality, out, inputs.sim_selectors)
    report, report_json = write_report(inputs, speedups, quality, figures, out)

    if figures_copy is not None:
        dest = Path(figures_copy)
        dest.mkdir(parents=True, exist_ok=True)
        for f in figures:
            shutil.copy2(f, dest / f.name)
        # The table travels with the figures so the tracked folder holds the numbers too.
        shutil.copy2(report, dest / "comparison.md")
    return ComparisonResult(figures, report, report_json, quality, speedups)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="compare",
        description="Set the CPI simulation and the language-model runs side by side.",
    )
    ap.add_argument("--cpi", type=Path, default=DEFAULT_CPI, metavar="DIR",
                    help=f"cpi_sweep output directory (default {DEFAULT_CPI})")
    ap.add_argument("--llm", type=Path, default=DEFAULT_LLM, metavar="DIR",
                    help=f"llm_srpo output directory (default {DEFAULT_LLM})")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                    help=f"output directory (default {DEFAULT_OUT})")
    ap.add_argument("--figures-dir", type=Path, default=DEFAULT_FIGURES, metavar="DIR",
                    help="also copy the figures here (default: the repository's figures/)")
    ap.add_argument("--no-copy-figures", action="store_true",
                    help="do not copy the figures anywhere besides --out")
    ap.add_argument("--n-boot", type=int, default=400, metavar="N",
                    help="bootstrap resamples for speed-up intervals (default 400)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n_boot < 10:
        print("compare: error: --n-boot must be at least 10", file=sys.stderr)
        return 2
    try:
        result = run_comparison(args.cpi, args.llm, args.out,
                                None if args.no_copy_figures else args.figures_dir, args.n_boot)
    except InputError as exc:
        print(f"compare: input error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {result.report}")
    for f in result.figures:
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
