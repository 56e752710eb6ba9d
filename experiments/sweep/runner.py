"""Plan, run, assemble, fit and draw: the sweep from options to files.

``run_sweep(SweepOptions(...))`` is what ``experiments/cpi_sweep.py`` calls; tests call it
directly with ``size="tiny"``. Outputs in ``options.out``:

* ``cells/<experiment>/<cell_id>.parquet`` -- finished cells (the resumable state);
* ``results.parquet`` -- all planned cells' rows, in plan order (one row per cell x iteration
  or cell x measurement point, with the id and config columns first);
* ``summary.json`` -- ``{law: {"estimate", "ci": [lo, hi], "theory", "n_points", ...}}``;
* ``sweep.json`` -- the options, cell counts and timings of the run;
* ``figures/<experiment>*.png|pdf``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from experiments.artifacts import stable_json
from experiments.sweep.backends import BACKENDS, ray_available, run_cells
from experiments.sweep.cells import Cell, CellStore, atomic_write_bytes, write_parquet_atomic
from experiments.sweep.registry import DEFAULT_SEEDS, EXPERIMENT_NAMES, SIZES, get_experiment


class SweepArgumentError(ValueError):
    """An invalid sweep option, raised before any cell runs."""


class SweepInterrupted(Exception):
    """Ctrl-C during the cells: ``saved`` of ``total`` planned cells are on disk in ``out``."""

    def __init__(self, saved: int, total: int, out: Path):
        super().__init__(f"{saved} of {total} cells saved in {out}")
        self.saved, self.total, self.out = saved, total, out


@dataclass
class SweepOptions:
    """Everything that defines a sweep (the CLI flags, one field each).

    Attributes:
        out: output directory (created; must be writable).
        size: ``"tiny"`` (tests), ``"quick"`` (smoke run), ``"default"`` (run times: README.md),
            ``"full"`` (paper scale).
        only: experiment names to run (default: all, in registry order).
        seeds: replicates per config (default: :data:`~experiments.sweep.registry.DEFAULT_SEEDS`).
        jobs: worker processes (joblib) or CPUs of a local Ray instance.
        backend: ``"joblib"`` or ``"ray"``.
        ray_address: an existing Ray cluster (``None``: start a local instance).
        base_seed: root of every cell's seed; same value -> same rows.
        p_values: override of the coverage grid of experiments that sweep p (each in (0, 1]).
        figures_copy: also copy the figures into this directory (the default CLI run uses
            ``figures/``).
        progress: ``None``: a tqdm bar on a terminal, one plain-text line per experiment (and
            per 5% of the cells) otherwise; ``True``: the bar; ``False``: silent.
        max_cells: stop after this many new cells (simulates a killed run in tests).
        threads: numerical threads (numba, BLAS) per worker; ``threads * jobs`` must not exceed
            the machine's cores (checked for local runs).
    """

    out: Path
    size: str = "default"
    only: tuple[str, ...] = EXPERIMENT_NAMES
    seeds: int | None = None
    jobs: int = 1
    backend: str = "joblib"
    ray_address: str | None = None
    base_seed: int = 0
    p_values: tuple[float, ...] | None = None
    figures_copy: Path | None = None
    progress: bool | None = None
    max_cells: int | None = None
    threads: int = 1

    @property
    def n_seeds(self) -> int:
        return DEFAULT_SEEDS[self.size] if self.seeds is None else self.seeds


def validate(opts: SweepOptions) -> SweepOptions:
    """Check every option; raise :class:`SweepArgumentError` with a message naming it."""
    if opts.size not in SIZES:
        raise SweepArgumentError(f"size: expected one of {SIZES}, got {opts.size!r}")
    unknown = [n for n in opts.only if n not in EXPERIMENT_NAMES]
    if unknown or not opts.only:
        raise SweepArgumentError(
            f"--only: unknown experiment(s) {unknown or '(none given)'}; "
            f"expected names from {', '.join(EXPERIMENT_NAMES)}"
        )
    if opts.seeds is not None and (not isinstance(opts.seeds, int) or opts.seeds < 1):
        raise SweepArgumentError(f"--seeds: expected an integer >= 1, got {opts.seeds!r}")
    if not isinstance(opts.base_seed, int) or opts.base_seed < 0:
        raise SweepArgumentError(f"--base-seed: expected an integer >= 0, got {opts.base_seed!r}")
    if not isinstance(opts.jobs, int) or opts.jobs < 1:
        raise SweepArgumentError(f"--jobs: expected an integer >= 1, got {opts.jobs!r}")
    if not isinstance(opts.threads, int) or isinstance(opts.threads, bool) or opts.threads < 1:
        raise SweepArgumentError(f"--threads: expected an integer >= 1, got {opts.threads!r}")
    cores = os.cpu_count() or 1
    if opts.ray_address is None and opts.threads * opts.jobs > cores:
        raise SweepArgumentError(
            f"--threads x --jobs: {opts.threads} x {opts.jobs} = {opts.threads * opts.jobs} "
            f"threads exceed the {cores} cores of this machine; lower --jobs or --threads")
    if opts.backend not in BACKENDS:
        raise SweepArgumentError(f"--backend: expected one of {BACKENDS}, got {opts.backend!r}")
    if opts.backend == "ray" and not ray_available():
        raise SweepArgumentError(
            "--backend ray: ray is not installed; pip install 'credit-resets[ray]' (or use joblib)"
        )
    if opts.p_values is not None:
        bad = [p for p in opts.p_values if not (isinstance(p, int | float) and math.isfinite(p)
                                                 and 0.0 < p <= 1.0)]
        if bad or not opts.p_values:
            raise SweepArgumentError(f"--p: every coverage must lie in (0, 1], got {bad or '[]'}")
    _check_writable(Path(opts.out), "--out")
    if opts.figures_copy is not None:
        _check_writable(Path(opts.figures_copy), "figures copy directory")
    return opts


def _check_writable(path: Path, what: str) -> None:
    if path.exists() and not path.is_dir():
        raise SweepArgumentError(f"{what}: {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise SweepArgumentError(f"{what}: cannot write to {path} ({err.strerror or err})") from None


def plan(opts: SweepOptions) -> list[Cell]:
    """All cells of the sweep, in a fixed order (experiment, config, seed)."""
    cells = []
    for name in opts.only:
        exp = get_experiment(name)
        for config in exp.configs(opts.size, opts.p_values):
            for seed in range(opts.n_seeds):
                cells.append(Cell(name, dict(config), seed, opts.base_seed))
    return cells


@dataclass
class SweepResult:
    """What :func:`run_sweep` produced (paths and in-memory copies)."""

    out: Path
    results: pd.DataFrame | None
    summary: dict
    figures: list[Path] = field(default_factory=list)
    cells_total: int = 0
    cells_run: int = 0
    complete: bool = True
    seconds: float = 0.0


def _say(opts: SweepOptions, msg: str) -> None:
    if opts.progress is not False:
        print(msg, flush=True)


def run_sweep(opts: SweepOptions) -> SweepResult:
    """Validate, run the missing cells, then (if all are done) assemble, fit and plot.

    A corrupt or empty cell file is reported in one line and recomputed. Ctrl-C while cells run
    raises :class:`SweepInterrupted` (the finished cells stay on disk; a rerun resumes).
    """
    t0 = time.perf_counter()
    opts = validate(opts)
    out = Path(opts.out)
    store = CellStore(out)
    cells = plan(opts)
    for c in cells:
        why = store.problem(c)
        if why is not None:
            print(f"cell file {store.path(c)}: {why}; recomputing it", flush=True)
            store.path(c).unlink()
    todo = [c for c in cells if not store.is_done(c)]
    if opts.max_cells is not None:
        todo = todo[: opts.max_cells]
    cell_seconds: dict[str, float] = {}

    def on_done(cell: Cell, rows: pd.DataFrame, seconds: float) -> None:
        store.write(cell, rows)
        cell_seconds[cell.experiment] = cell_seconds.get(cell.experiment, 0.0) + seconds

    if todo:
        _say(opts, f"[cpi sweep] {len(todo)} of {len(cells)} cells to run "
                   f"({len(cells) - len(todo)} already saved), {opts.jobs} job(s) x "
                   f"{opts.threads} thread(s); outputs in {out}")
    try:
        run_cells(todo, backend=opts.backend, jobs=opts.jobs, ray_address=opts.ray_address,
                  on_done=on_done, progress=opts.progress, total=len(cells),
                  initial=len(cells) - len(todo) if opts.max_cells is None else 0,
                  threads=opts.threads)
    except KeyboardInterrupt:
        raise SweepInterrupted(sum(store.is_done(c) for c in cells), len(cells), out) from None
    complete = all(store.is_done(c) for c in cells)
    result = SweepResult(out=out, results=None, summary={}, cells_total=len(cells),
                         cells_run=len(todo), complete=complete)
    if complete:
        results = store.assemble(cells)
        write_parquet_atomic(results, out / "results.parquet")
        summary, figures = analyze_and_plot(results, opts.only, out / "figures",
                                            say=lambda m: _say(opts, m))
        # sorted keys, floats rounded to what their intervals support: a rerun that changes no
        # result writes the same bytes (experiments/artifacts.py)
        atomic_write_bytes(out / "summary.json", stable_json(summary).encode())
        if opts.figures_copy is not None:
            dest = Path(opts.figures_copy)
            dest.mkdir(parents=True, exist_ok=True)
            for f in figures:
                shutil.copy2(f, dest / f.name)
            # The fitted laws travel with the figures so the tracked folder holds the numbers too;
            # an --only subset updates its own keys and keeps the other experiments' (a partial
            # summary must not wipe the published numbers paper_repro.md is rendered from).
            published = dest / "cpi_sweep_summary.json"
            merged = summary
            if set(opts.only) != set(EXPERIMENT_NAMES) and published.is_file():
                merged = {**json.loads(published.read_text()), **summary}
            atomic_write_bytes(published, stable_json(merged).encode())
        result.results, result.summary, result.figures = results, summary, figures
    result.seconds = time.perf_counter() - t0
    import resource

    cpu = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF,
                                                           resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    meta.update(cells_total=len(cells), cells_run_now=len(todo), complete=complete,
                cpu_seconds=round(cpu, 1),
                seconds=round(result.seconds, 2), cell_seconds_by_experiment=cell_seconds,
                n_seeds=opts.n_seeds, pid=os.getpid())
    atomic_write_bytes(out / "sweep.json", json.dumps(meta, indent=2, default=str).encode())
    return result


def analyze_and_plot(results: pd.DataFrame, names, fig_dir: Path, say=None
                     ) -> tuple[dict, list[Path]]:
    """Fit every experiment's laws and draw its figures from the assembled rows (``say``: a
    function given one progress line per experiment)."""
    import matplotlib

    matplotlib.use("Agg")
    summary: dict = {}
    figures: list[Path] = []
    fig_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        rows = results[results["experiment"] == name].dropna(axis=1, how="all")
        if rows.empty:
            continue
        exp = get_experiment(name)
        if say is not None:
            say(f"[cpi sweep] fitting and plotting {name} ({len(rows)} rows)")
        fits = exp.analyze(rows)
        summary.update(fits)
        figures.extend(exp.plot(rows, fits, fig_dir))
    return summary, figures
