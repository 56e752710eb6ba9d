"""Plan, run, assemble, fit and draw: the sweep from options to files.

``run_sweep(SweepOptions(...))`` is what ``experiments/cpi_sweep.py`` calls; tests call it
directly with ``size="tiny"``. Outputs in ``options.out``:

* ``cells/<experiment>/<cell_id>.parquet`` -- finished cells (the resumable state);
* ``results.parquet`` -- all planned cells' rows, in plan order (one row per cell x iteration
  or cell x measurement point, with the id and config columns first);
* ``summary.json`` -- ``{law: {"estimate", "ci": [lo, hi], "theory", "n_points", ...}}``;
* ``sweep.json`` -- the options, cell counts and timings of the run (wall and CPU seconds, in
  total and per experiment);
* ``cell_times.jsonl`` -- one line per cell run (wall and CPU seconds; read by
  :mod:`experiments.sweep.schedule` to order later runs);
* ``figures/<experiment>*.png|pdf``.

Cells run longest first (:func:`experiments.sweep.schedule.longest_first`) so that both cores stay
busy to the end; the fits and figures of the experiments run in the same worker processes.
SIGTERM is handled as Ctrl-C: the workers are stopped, no temporary file is left, and a rerun
resumes from the saved cells.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from experiments.artifacts import stable_json
from experiments.sweep.backends import BACKENDS, ray_available, run_cells, shutdown_workers
from experiments.sweep.cells import Cell, CellStore, atomic_write_bytes, write_parquet_atomic
from experiments.sweep.registry import DEFAULT_SEEDS, EXPERIMENT_NAMES, SIZES, get_experiment
from experiments.sweep.schedule import TIMES_NAME, longest_first, time_record


class SweepArgumentError(ValueError):
    """An invalid sweep option, raised before any cell runs."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl-C."""


class SweepInterrupted(Exception):
    """Ctrl-C or SIGTERM during the cells: ``saved`` of ``total`` planned cells are on disk in
    ``out``; ``signal`` is the signal number, ``seconds``/``cpu_seconds`` what the run used."""

    def __init__(self, saved: int, total: int, out: Path, sig: int = signal.SIGINT,
                 seconds: float = 0.0, cpu_seconds: float = 0.0):
        super().__init__(f"{saved} of {total} cells saved in {out}")
        self.saved, self.total, self.out, self.signal = saved, total, out, sig
        self.seconds, self.cpu_seconds = seconds, cpu_seconds


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its reaped children (the workers)."""
    return sum(getattr(resource.getrusage(w), f)
               for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


@contextmanager
def sigterm_as_interrupt():
    """While inside, SIGTERM raises :class:`Terminated` in the main thread (the cleanup of
    Ctrl-C runs: workers stopped, partial files removed); the old handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


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
    cpu_seconds: float = 0.0


def _say(opts: SweepOptions, msg: str) -> None:
    if opts.progress is not False:
        print(msg, flush=True)


def run_sweep(opts: SweepOptions) -> SweepResult:
    """Validate, run the missing cells, then (if all are done) assemble, fit and plot.

    A corrupt or empty cell file is reported in one line and recomputed. Ctrl-C or SIGTERM while
    cells run raises :class:`SweepInterrupted` (the finished cells stay on disk; a rerun
    resumes).
    """
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    opts = validate(opts)
    out = Path(opts.out)
    store = CellStore(out)
    store.remove_partial_files()
    cells = plan(opts)
    for c in cells:
        why = store.problem(c)
        if why is not None:
            print(f"cell file {store.path(c)}: {why}; recomputing it", flush=True)
            store.path(c).unlink()
    todo = longest_first([c for c in cells if not store.is_done(c)])
    if opts.max_cells is not None:
        todo = todo[: opts.max_cells]
    cell_seconds: dict[str, float] = {}
    cell_cpu: dict[str, float] = {}
    rows_now: dict[str, pd.DataFrame] = {}
    times = None

    def on_done(cell: Cell, rows: pd.DataFrame, seconds: float, cpu: float) -> None:
        store.write(cell, rows)
        rows_now[cell.cell_id] = rows
        cell_seconds[cell.experiment] = cell_seconds.get(cell.experiment, 0.0) + seconds
        cell_cpu[cell.experiment] = cell_cpu.get(cell.experiment, 0.0) + cpu
        times.write(time_record(cell, seconds, cpu) + "\n")
        times.flush()

    if todo:
        _say(opts, f"[cpi sweep] {len(todo)} of {len(cells)} cells to run "
                   f"({len(cells) - len(todo)} already saved), {opts.jobs} job(s) x "
                   f"{opts.threads} thread(s), longest first; outputs in {out}")
    pool = opts.backend == "joblib" and opts.jobs > 1
    result = SweepResult(out=out, results=None, summary={}, cells_total=len(cells),
                         cells_run=len(todo))
    try:
        with sigterm_as_interrupt():
            try:
                with (out / TIMES_NAME).open("a") as times:
                    run_cells(todo, backend=opts.backend, jobs=opts.jobs,
                              ray_address=opts.ray_address, on_done=on_done,
                              progress=opts.progress, total=len(cells),
                              initial=len(cells) - len(todo) if opts.max_cells is None else 0,
                              threads=opts.threads, keep_workers=pool)
            except KeyboardInterrupt as stop:
                shutdown_workers(kill=True)
                raise SweepInterrupted(
                    sum(store.is_done(c) for c in cells), len(cells), out,
                    signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT,
                    time.perf_counter() - t0, cpu_seconds() - cpu0) from None
            result.complete = all(store.is_done(c) for c in cells)
            if result.complete:
                _finish(opts, store, cells, rows_now, result, pool)
    finally:
        if pool:
            shutdown_workers()
    result.seconds = time.perf_counter() - t0
    result.cpu_seconds = cpu_seconds() - cpu0
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    meta.update(cells_total=len(cells), cells_run_now=len(todo), complete=result.complete,
                cpu_seconds=round(result.cpu_seconds, 1), seconds=round(result.seconds, 2),
                cell_seconds_by_experiment=cell_seconds, cell_cpu_seconds_by_experiment=cell_cpu,
                n_seeds=opts.n_seeds, pid=os.getpid())
    atomic_write_bytes(out / "sweep.json", json.dumps(meta, indent=2, default=str).encode())
    return result


def _finish(opts: SweepOptions, store: CellStore, cells: list[Cell],
            rows_now: dict[str, pd.DataFrame], result: SweepResult, pool: bool) -> None:
    """Assemble the rows (this run's from memory, earlier runs' from disk), fit, plot, copy."""
    out = Path(opts.out)
    results = store.assemble(cells, cached=rows_now)
    write_parquet_atomic(results, out / "results.parquet")
    summary, figures = analyze_and_plot(results, opts.only, out / "figures",
                                        say=lambda m: _say(opts, m),
                                        jobs=opts.jobs if pool else 1)
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


def analyze_and_plot(results: pd.DataFrame, names, fig_dir: Path, say=None, jobs: int = 1
                     ) -> tuple[dict, list[Path]]:
    """Fit every experiment's laws and draw its figures from the assembled rows (``say``: a
    function given one progress line per experiment; ``jobs`` > 1: experiments in joblib worker
    processes, largest first; the summary keeps the order of ``names``)."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    parts = [(name, results[results["experiment"] == name].dropna(axis=1, how="all"))
             for name in names]
    parts = [(name, rows) for name, rows in parts if not rows.empty]
    done: dict[str, tuple[dict, list[Path]]] = {}
    if jobs > 1 and len(parts) > 1:
        from joblib import Parallel, delayed

        big_first = sorted(parts, key=lambda p: -len(p[1]))
        gen = Parallel(n_jobs=jobs, return_as="generator_unordered")(
            delayed(_analyze_one)(name, rows, fig_dir) for name, rows in big_first)
        for name, fits, figs in gen:
            if say is not None:
                say(f"[cpi sweep] fitted and plotted {name}")
            done[name] = (fits, figs)
    else:
        for name, rows in parts:
            if say is not None:
                say(f"[cpi sweep] fitting and plotting {name} ({len(rows)} rows)")
            done[name] = _analyze_one(name, rows, fig_dir)[1:]
    summary: dict = {}
    figures: list[Path] = []
    for name, _ in parts:
        fits, figs = done[name]
        summary.update(fits)
        figures.extend(figs)
    return summary, figures


def _analyze_one(name: str, rows: pd.DataFrame, fig_dir: Path) -> tuple[str, dict, list[Path]]:
    import matplotlib

    matplotlib.use("Agg")
    exp = get_experiment(name)
    fits = exp.analyze(rows)
    return name, fits, exp.plot(rows, fits, fig_dir)
