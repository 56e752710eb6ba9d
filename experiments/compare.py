"""Compare the CPI simulation with the language-model (SRPO) runs in one schema, five figures, two tables.

Usage::

    python experiments/compare.py                                   # runs/cpi_sweep + runs/llm
    python experiments/compare.py --cpi runs/cpi_sweep --llm runs/llm --out runs/compare
    python experiments/compare.py --only coverage --coverage runs/llm_coverage_quick --out DIR
    python experiments/compare.py --only methods --methods runs/llm_all --out DIR
    python experiments/compare.py --only ladder [--ladder runs/ladder]   # figures/ladder.*

Reads the tidy outputs of ``experiments/cpi_sweep.py`` (``results.parquet``, ``summary.json``) and
of ``experiments/llm_srpo.py`` (``metrics.parquet``, ``resets.parquet``), maps both into the common
reset-event and learning-curve tables (docs/compare.md), and writes into ``--out``:

* ``compare_localization.{png,pdf}`` -- the paper's 4-panel localization figure, both sides;
* ``compare_learning_curves.{png,pdf}`` -- score vs samples and vs compute, with speed-ups;
* ``compare_gradient_signal.{png,pdf}`` -- per-token gradient signal, reset vs base groups;
* ``compare_phase_map.{png,pdf}`` -- the LM's localizer on the simulation's (beta, gamma) map;
* ``comparison.md`` / ``comparison.json`` -- quantity, paper, simulation, language model;
* ``resets_common.parquet`` / ``curves_common.parquet`` -- the two sides in the common schema;
* ``compare_coverage.{png,pdf}``, ``compare_coverage.md`` / ``.json`` -- speed-up vs coverage p,
  the simulation's prediction and the language model's points, and the phase map, when the
  coverage experiment (``experiments/llm_coverage.py``, ``--coverage DIR``) has run;
* ``compare_methods.{png,pdf}``, ``compare_methods.md`` / ``.json`` -- every method of the
  registry (``llm_srpo.py --method all``, ``--methods DIR``): learning curves per rollout and per
  generated token, final J and speed-ups with intervals (``experiments/comparison/methods.py``);
* ``ladder.{png,pdf}`` (``--only ladder`` only) -- the oracle's speed-up over GRPO vs p_reach on
  three rungs, CPI, the tabular policy and the language model (``experiments/llm_ladder.py``,
  ``--ladder DIR``; ``experiments/comparison/ladder.py``).

The phase map also draws the branch rules (entropy, fixed position) measured on the language
model's failed chains by ``experiments/branch_rules.py lm`` (``--branch-rules DIR``) next to the
self-localizer, and their simulation counterparts (``figures/branch_rules.json``).

Published results are never replaced by a smoke run: the figures and tables are copied to the
repository's ``figures/`` only when every input they are drawn from is the full default run
(decided from what each run recorded: ``sweep.json``, the LLM runs' ``summary.json``; see
``experiments/comparison/provenance.py``); otherwise they are written under ``--out`` only and
the command says why. Every figure's footer and each table names the runs (configuration, seeds,
steps) it was drawn from. Every input problem (missing directory, file, experiment or column) is
reported, naming it, before anything is drawn.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from experiments.cli_checks import out_dir_problem, whole_number_problem  # noqa: E402
from experiments.comparison import figures as fg  # noqa: E402
from experiments.comparison import provenance as pv  # noqa: E402
from experiments.comparison import stats as st  # noqa: E402
from experiments.comparison.report import write_report  # noqa: E402
from experiments.comparison.schema import InputError, load_cpi, load_inputs  # noqa: E402

DEFAULT_CPI = Path("runs/cpi_sweep")
DEFAULT_LLM = Path("runs/llm")
DEFAULT_COVERAGE = Path("runs/llm_coverage")
DEFAULT_METHODS = Path("runs/llm_all")
DEFAULT_BRANCH_RULES = Path("runs/branch_rules")
DEFAULT_LADDER = Path("runs/ladder")
DEFAULT_OUT = Path("runs/compare")
DEFAULT_FIGURES = REPO_ROOT / "figures"
ONLY = ("all", "main", "coverage", "methods", "ladder")


@dataclass
class ComparisonResult:
    """What :func:`run_comparison` wrote.

    Attributes:
        figures: every figure file written under ``out_dir``.
        report, report_json: ``comparison.md`` / ``.json`` (None with ``only="coverage"``).
        quality: the LM localizers' place on the phase map (main comparison).
        speedups: the main comparison's speed-up table.
        provenance: one :class:`~experiments.comparison.provenance.RunProvenance` per input.
        copied: files copied to ``figures_copy``.
        not_copied: why nothing was copied there (empty when copied or not asked).
        coverage: the coverage analysis, when drawn.
    """

    figures: list[Path]
    report: Path | None
    report_json: Path | None
    quality: dict
    speedups: object
    provenance: list = field(default_factory=list)
    copied: list = field(default_factory=list)
    not_copied: str = ""
    coverage: dict | None = None


def _branch_rules(directory) -> dict:
    """The branch rules' LM qualities (``branch_rules.py lm``) and the simulation's test rows
    (``figures/branch_rules.json``), each None when absent."""
    import json

    import pandas as pd

    from experiments.comparison.schema import map_llm_resets

    lm = sim = None
    if directory is not None and (Path(directory) / "resets.parquet").is_file():
        mapped = map_llm_resets(pd.read_parquet(Path(directory) / "resets.parquet"))
        lm = {m: st.selector_quality(mapped, m) for m in ("entropy", "fixed", "self", "random")
              if m in set(mapped["method"])}
    sim_path = DEFAULT_FIGURES / "branch_rules.json"
    if sim_path.is_file():
        sim = pd.DataFrame(json.loads(sim_path.read_text())["rows"])
    return {"lm": lm, "sim": sim}


def _methods_group(result, methods_dir, out: Path, n_boot: int):
    """Draw the every-method comparison; returns its (files, provenance) group."""
    from experiments.comparison import methods as mt

    curves, _metrics, summary = mt.load_methods(methods_dir)
    line, published = mt.provenance_of(Path(methods_dir), summary)
    table = mt.methods_table(curves, n_boot=n_boot)
    figs = mt.methods_figure(curves, out, footer=line)
    md, _js = mt.write_methods_report(table, out, provenance=line)
    result.figures += figs
    prov = pv.RunProvenance(side="language model (every method)", directory=str(methods_dir),
                            kind="default" if published else "custom", description=line,
                            reasons=[] if published else
                            ["not the published `llm_srpo.py --method all` run"])
    result.provenance.append(prov)
    return (figs + [md], [prov])


def _is_published_dir(path: Path) -> bool:
    return Path(path).resolve() == Path(DEFAULT_FIGURES).resolve()


def run_comparison(cpi_dir: str | Path = DEFAULT_CPI, llm_dir: str | Path = DEFAULT_LLM,
                   out_dir: str | Path = DEFAULT_OUT, figures_copy: str | Path | None = None,
                   n_boot: int = 400, coverage_dir: str | Path | None = None,
                   only: str = "all", methods_dir: str | Path | None = None,
                   branch_rules_dir: str | Path | None = None) -> ComparisonResult:
    """Read the inputs, draw the figures and write the tables.

    Args:
        cpi_dir: output directory of ``experiments/cpi_sweep.py``.
        llm_dir: output directory of ``experiments/llm_srpo.py``.
        out_dir: where figures, ``comparison.md`` and the common-schema tables go.
        figures_copy: also copy the figures and tables here (``None``: do not copy). The
            repository's ``figures/`` receives them only if every input is the full default run.
        n_boot: bootstrap resamples for speed-up intervals.
        coverage_dir: output directory of ``experiments/llm_coverage.py`` (None: skip the
            coverage figure).
        only: ``all``, ``main`` (the four simulation-vs-LM figures), ``coverage`` or
            ``methods``.
        methods_dir: output directory of ``llm_srpo.py --method all`` (None: skip).
        branch_rules_dir: output directory of ``branch_rules.py lm`` (None: no branch-rule
            points on the phase map).

    Raises:
        InputError: a missing or malformed input, before any file is written.
    """
    if only not in ONLY:
        raise ValueError(f"only must be one of {ONLY}; got {only!r}")
    from experiments.comparison import coverage as cv

    inputs = cov = None
    main_provs: list[pv.RunProvenance] = []
    cov_provs: list[pv.RunProvenance] = []
    if only in ("all", "main"):
        inputs = load_inputs(cpi_dir, llm_dir)
        main_provs = [pv.sim_provenance(cpi_dir), pv.llm_provenance(llm_dir)]
    sim_phase = inputs.phase if inputs is not None else None
    if only in ("all", "coverage") and coverage_dir is not None:
        cov = cv.load_coverage(coverage_dir)
        if sim_phase is None and Path(cpi_dir).is_dir():
            try:  # the simulation's phase grid is optional background for the coverage figure
                sim_phase = load_cpi(cpi_dir)["phase"]
            except InputError:
                sim_phase = None
        cov_provs = [pv.coverage_provenance(coverage_dir)]
        if sim_phase is not None:
            cov_provs.append(pv.sim_provenance(cpi_dir))
    if inputs is None and cov is None and not (only in ("all", "methods") and methods_dir):
        raise InputError(f"coverage input directory {coverage_dir} not given or missing "
                         "(produce it with `python experiments/llm_coverage.py`)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # (files, provenance) per group: each group reaches the published figures/ only when
    # every run it is drawn from is the full default run
    groups: list[tuple[list[Path], list[pv.RunProvenance]]] = []
    result = ComparisonResult([], None, None, {}, None, main_provs + cov_provs)
    if inputs is not None:
        footer = pv.footer_text(main_provs)
        inputs.resets.to_parquet(out / "resets_common.parquet", index=False)
        inputs.curves.to_parquet(out / "curves_common.parquet", index=False)
        llm_resets = inputs.resets[inputs.resets["side"] == "language model"]
        quality = {m: st.selector_quality(llm_resets, m)
                   for m in ("self", "random", "oracle") if m in set(llm_resets["method"])}
        branch = _branch_rules(branch_rules_dir)
        speedups = fg.speedup_table(inputs.curves, n_boot=n_boot)
        figures: list[Path] = []
        figures += fg.localization_figure(inputs.resets, out, footer=footer)
        figures += fg.learning_curves_figure(inputs.curves, speedups, out, footer=footer)
        figures += fg.gradient_signal_figure(inputs.signal, out, footer=footer)
        figures += fg.phase_map_figure(inputs.phase, quality, out, inputs.sim_selectors,
                                       footer=footer, branch_quality=branch["lm"],
                                       branch_sim=branch["sim"])
        report, report_json = write_report(inputs, speedups, quality, figures, out,
                                           provenance=main_provs)
        result.figures += figures
        result.report, result.report_json = report, report_json
        result.quality, result.speedups = quality, speedups
        # the table (and its JSON, the source paper_repro.md is rendered from) travels with the
        # figures so the tracked folder holds the numbers too
        groups.append((figures + [report, report_json], main_provs))
    if cov is not None:
        figs, md, js, cres = cv.coverage_outputs(cov, out, provenance=cov_provs,
                                                  sim_phase=sim_phase, n_boot=max(n_boot, 200))
        result.figures += figs
        result.coverage = cres
        groups.append((figs + [md, js], cov_provs))

    if only in ("all", "methods") and methods_dir is not None:
        groups.append(_methods_group(result, methods_dir, out, n_boot))

    if figures_copy is not None:
        dest = Path(figures_copy)
        reasons = []
        for files, provs in groups:
            if _is_published_dir(dest) and not pv.all_default(provs):
                reasons += [f"{p.side} {p.directory}: {', '.join(p.reasons)}"
                            for p in provs if not p.is_default]
                continue
            dest.mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copy2(f, dest / f.name)
                result.copied.append(dest / f.name)
        if reasons:
            result.not_copied = (f"not copied to {dest} (the published figures change only with "
                                 f"full default runs): " + "; ".join(dict.fromkeys(reasons)))
    return result


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
    ap.add_argument("--coverage", type=Path, default=None, metavar="DIR",
                    help=f"llm_coverage output directory (default {DEFAULT_COVERAGE} when it "
                         "exists; the coverage figure is skipped otherwise)")
    ap.add_argument("--only", choices=ONLY, default="all",
                    help="draw only the main comparison, the coverage figure or the every-method "
                         "comparison")
    ap.add_argument("--methods", type=Path, default=None, metavar="DIR",
                    help=f"llm_srpo.py --method all output directory (default {DEFAULT_METHODS} "
                         "when it exists)")
    ap.add_argument("--branch-rules", type=Path, default=None, metavar="DIR",
                    help=f"branch_rules.py lm output (default {DEFAULT_BRANCH_RULES} when it "
                         "exists): the rules' points on the phase map")
    ap.add_argument("--ladder", type=Path, default=None, metavar="DIR",
                    help=f"llm_ladder.py output (default {DEFAULT_LADDER} when it has a "
                         "summary.json, else the published figures/ladder_summary.json)")
    return ap


def _ladder(args) -> int:
    """``--only ladder``: the three-rung figure from ``llm_ladder.py``'s summary.json; copied to
    figures/ only when the summary is the default size."""
    import json

    from experiments.comparison.ladder import ladder_figure

    src = args.ladder / "summary.json" if args.ladder is not None else None
    if src is None:
        src = DEFAULT_LADDER / "summary.json"
        if not src.is_file():
            src = DEFAULT_FIGURES / "ladder_summary.json"
    if not src.is_file():
        print(f"compare: input error: {src} does not exist; produce it with `python "
              "experiments/llm_ladder.py`", file=sys.stderr)
        return 2
    summary = json.loads(src.read_text())
    runs = summary.get("lm_runs", {})
    footer = (f"{src} ({summary.get('size')} size; LM runs finished "
              f"{runs.get('finished')} of {runs.get('expected')})")
    paths = ladder_figure(summary, args.out, footer=footer)
    for p in paths:
        print(f"wrote {p}")
    if summary.get("size") == "default" and not args.no_copy_figures:
        args.figures_dir.mkdir(parents=True, exist_ok=True)
        for p in paths:
            shutil.copy2(p, args.figures_dir / p.name)
            print(f"copied {p.name} to {args.figures_dir}")
    elif summary.get("size") != "default":
        print(f"not copied to {args.figures_dir}: {src} is not the default size")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if problem := whole_number_problem("--n-boot", args.n_boot, 10):
        print(f"compare: error: {problem}", file=sys.stderr)
        return 2
    if problem := out_dir_problem(args.out):  # before any input is read
        print(f"compare: error: {problem}", file=sys.stderr)
        return 2
    if args.only == "ladder":
        return _ladder(args)
    coverage = args.coverage
    if coverage is None and args.only != "main" and DEFAULT_COVERAGE.is_dir():
        coverage = DEFAULT_COVERAGE
    if args.only == "coverage" and coverage is None:
        print(f"compare: input error: --only coverage needs --coverage DIR ({DEFAULT_COVERAGE} "
              "does not exist; produce it with `python experiments/llm_coverage.py`)",
              file=sys.stderr)
        return 2
    methods = args.methods
    if methods is None and args.only in ("all", "methods") and DEFAULT_METHODS.is_dir():
        methods = DEFAULT_METHODS
    if args.only == "methods" and methods is None:
        print(f"compare: input error: --only methods needs --methods DIR ({DEFAULT_METHODS} does "
              "not exist; produce it with `python experiments/llm_srpo.py --method all`)",
              file=sys.stderr)
        return 2
    branch = args.branch_rules
    if branch is None and DEFAULT_BRANCH_RULES.is_dir():
        branch = DEFAULT_BRANCH_RULES
    try:
        result = run_comparison(args.cpi, args.llm, args.out,
                                None if args.no_copy_figures else args.figures_dir, args.n_boot,
                                coverage_dir=coverage, only=args.only, methods_dir=methods,
                                branch_rules_dir=branch)
    except InputError as exc:
        print(f"compare: input error: {exc}", file=sys.stderr)
        return 2
    for p in result.provenance:
        print(p.line())
    for f in [result.report, *result.figures]:
        if f is not None:
            print(f"wrote {f}")
    if result.coverage is not None:
        from experiments.comparison.coverage import overall_verdict

        print(f"coverage: {overall_verdict(result.coverage)}")
    if result.copied:
        print(f"copied {len(result.copied)} files to {result.copied[0].parent}")
    if result.not_copied:
        print(result.not_copied)
    return 0


if __name__ == "__main__":
    sys.exit(main())
