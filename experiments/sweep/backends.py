"""Execute cells: in-process, with joblib worker processes, or on a Ray cluster.

Every backend calls the same pure function :func:`compute_cell` (cell -> tagged rows) and hands
the rows back to the driver, which writes each cell atomically as soon as it arrives. Workers
never touch the output directory, so a Ray cluster needs no shared file system, and the rows do
not depend on the backend or the number of jobs (a cell's randomness comes only from its own
:meth:`~experiments.sweep.cells.Cell.seed_sequence`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from experiments.sweep.cells import Cell, tag_rows

BACKENDS = ("joblib", "ray")
REPO_ROOT = Path(__file__).resolve().parents[2]


def compute_cell(cell: Cell) -> tuple[Cell, pd.DataFrame, float]:
    """Run one cell in this process: ``(cell, tagged rows, seconds)``."""
    from experiments.sweep.registry import get_experiment

    t0 = time.perf_counter()
    exp = get_experiment(cell.experiment)
    frame = exp.run_cell(dict(cell.config), cell.seed_sequence())
    return cell, tag_rows(cell, frame), time.perf_counter() - t0


def _iter_joblib(cells: list[Cell], jobs: int) -> Iterator[tuple[Cell, pd.DataFrame, float]]:
    if jobs == 1:
        for cell in cells:
            yield compute_cell(cell)
        return
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered")
    yield from parallel(delayed(compute_cell)(c) for c in cells)


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _iter_ray(cells: list[Cell], jobs: int, address: str | None
              ) -> Iterator[tuple[Cell, pd.DataFrame, float]]:
    try:
        import ray
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise SystemExit(
            "--backend ray needs the optional dependency ray: pip install 'credit-resets[ray]'"
        ) from err
    started_here = False
    if not ray.is_initialized():
        env_vars = {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
        if address:
            # A remote cluster: ship the two source packages with the job.
            runtime_env = {"py_modules": [str(REPO_ROOT / "cpi"), str(REPO_ROOT / "experiments")]}
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": env_vars})
        started_here = True
    try:
        remote = ray.remote(num_cpus=1)(compute_cell)
        pending = [remote.remote(c) for c in cells]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield ray.get(ref)
    finally:
        if started_here:
            ray.shutdown()


def run_cells(cells: list[Cell], *, backend: str = "joblib", jobs: int = 1,
              ray_address: str | None = None,
              on_done: Callable[[Cell, pd.DataFrame, float], None] | None = None,
              progress: bool | None = None, total: int | None = None, initial: int = 0) -> None:
    """Run ``cells`` and call ``on_done(cell, rows, seconds)`` on the driver as each finishes.

    Args:
        backend: ``"joblib"`` (loky processes; ``jobs == 1`` runs in-process) or ``"ray"``.
        jobs: worker processes (joblib) or CPUs of a local Ray instance.
        ray_address: address of an existing Ray cluster; ``None`` starts a local instance.
        progress: show a tqdm bar (cells done, time left); ``None`` = only when stdout is a TTY.
        total, initial: bar size and cells already done (resumed runs start the bar there).
    """
    from tqdm.auto import tqdm

    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if progress is None:
        progress = sys.stdout.isatty()
    it = _iter_ray(cells, jobs, ray_address) if backend == "ray" else _iter_joblib(cells, jobs)
    with tqdm(total=total if total is not None else len(cells), initial=initial,
              disable=not progress, unit="cell", desc="cpi sweep", dynamic_ncols=True) as bar:
        for cell, rows, seconds in it:
            if on_done is not None:
                on_done(cell, rows, seconds)
            bar.set_postfix_str(cell.experiment, refresh=False)
            bar.update(1)
