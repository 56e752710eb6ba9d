"""Execute cells: in-process, with joblib worker processes, or on a Ray cluster.

Every backend calls the same pure function :func:`compute_cell` (cell -> tagged rows) and hands
the rows back to the driver, which writes each cell atomically as soon as it arrives. Workers
never touch the output directory, so a Ray cluster needs no shared file system, and the rows do
not depend on the backend or the number of jobs (a cell's randomness comes only from its own
:meth:`~experiments.sweep.cells.Cell.seed_sequence`).

Threads: every worker runs its numerical libraries with ``threads`` threads (numba's
``set_num_threads`` and the BLAS/OpenMP variables, which joblib passes to its loky workers), so
``threads x jobs`` bounds the cores the sweep uses.

Orphans: a worker exits when the driver dies, even by SIGKILL. On Linux the worker asks the
kernel for SIGKILL when its parent exits (``prctl(PR_SET_PDEATHSIG)``); everywhere, a daemon
thread polls the driver's pid twice a second and ends the process when the driver is gone (the
compiled kernels release the GIL, so the thread runs during long kernels too).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from experiments.sweep.cells import Cell, tag_rows

BACKENDS = ("joblib", "ray")
REPO_ROOT = Path(__file__).resolve().parents[2]
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
_WORKER_READY = False
PR_SET_PDEATHSIG = 1


def _driver_alive(driver_pid: int) -> bool:
    if os.getppid() != driver_pid and os.getppid() == 1:
        return False  # re-parented to init: the driver is gone
    try:
        os.kill(driver_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch_driver(driver_pid: int, period: float = 0.5) -> None:
    while True:
        time.sleep(period)
        if not _driver_alive(driver_pid):
            os._exit(1)


def worker_setup(driver_pid: int, threads: int, watch: bool = True) -> None:
    """Once per process: thread limits; in a worker (pid != driver), die with the driver."""
    global _WORKER_READY
    if _WORKER_READY:
        return
    _WORKER_READY = True
    for var in THREAD_VARS:
        os.environ.setdefault(var, str(threads))
    try:
        import numba

        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    except Exception:  # pragma: no cover - numba always importable here
        pass
    if os.getpid() == driver_pid or not watch:
        return
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - non-glibc systems
            pass
    if not _driver_alive(driver_pid):  # the driver died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_driver, args=(driver_pid,), daemon=True,
                     name="driver-watchdog").start()


def compute_cell(cell: Cell, driver_pid: int | None = None, threads: int = 1,
                 watch: bool = True) -> tuple[Cell, pd.DataFrame, float, float]:
    """Run one cell in this process: ``(cell, tagged rows, wall seconds, CPU seconds)`` (CPU:
    this process's, so a cell that waits for a core still reports its own work)."""
    from experiments.sweep.registry import get_experiment

    worker_setup(os.getpid() if driver_pid is None else driver_pid, threads, watch)
    t0, c0 = time.perf_counter(), time.process_time()
    exp = get_experiment(cell.experiment)
    frame = exp.run_cell(dict(cell.config), cell.seed_sequence())
    return cell, tag_rows(cell, frame), time.perf_counter() - t0, time.process_time() - c0


def shutdown_workers(kill: bool = False) -> None:
    """Stop joblib's reusable loky workers now (they would idle for minutes otherwise)."""
    try:
        from joblib.externals.loky import reusable_executor
    except ImportError:  # pragma: no cover
        return
    ex = getattr(reusable_executor, "_executor", None)
    if ex is not None:
        ex.shutdown(wait=not kill, kill_workers=kill)


def _iter_joblib(cells: list[Cell], jobs: int, threads: int, keep_workers: bool = False
                 ) -> Iterator[tuple[Cell, pd.DataFrame, float, float]]:
    if jobs == 1:
        for cell in cells:
            yield compute_cell(cell, threads=threads)
        return
    from joblib import Parallel, delayed, parallel_config

    pid = os.getpid()
    with parallel_config(backend="loky", inner_max_num_threads=threads):
        parallel = Parallel(n_jobs=jobs, return_as="generator_unordered")
        gen = parallel(delayed(compute_cell)(c, pid, threads) for c in cells)
        try:
            yield from gen
        except BaseException:
            gen.close()
            shutdown_workers(kill=True)
            raise
    if not keep_workers:
        shutdown_workers()


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _iter_ray(cells: list[Cell], jobs: int, address: str | None, threads: int = 1
              ) -> Iterator[tuple[Cell, pd.DataFrame, float, float]]:
    try:
        import ray
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise SystemExit(
            "--backend ray needs the optional dependency ray: pip install 'credit-resets[ray]'"
        ) from err
    started_here = False
    if not ray.is_initialized():
        env_vars = {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
                    **{v: str(threads) for v in THREAD_VARS}}
        if address:
            # A remote cluster: ship the two source packages with the job.
            runtime_env = {"py_modules": [str(REPO_ROOT / "cpi"), str(REPO_ROOT / "experiments")]}
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(num_cpus=jobs * threads, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": env_vars})
        started_here = True
    try:
        remote = ray.remote(num_cpus=threads)(compute_cell)
        # Local workers watch this driver's pid; on a remote cluster the pid means nothing there.
        pid = None if address else os.getpid()
        pending = [remote.remote(c, pid, threads, address is None) for c in cells]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield ray.get(ref)
    finally:
        if started_here:
            ray.shutdown()


class TextProgress:
    """Plain-text progress for logs (stdout not a terminal): one line when an experiment's last
    cell is done and one every ``every`` cells, with counts and elapsed time."""

    def __init__(self, total: int, initial: int, per_experiment: dict[str, int],
                 stream=None, every: int | None = None):
        self.total, self.done = total, initial
        self.left = dict(per_experiment)
        self.every = every or max(1, total // 20)
        self.t0 = time.perf_counter()
        self.stream = stream or sys.stdout

    def update(self, experiment: str) -> None:
        self.done += 1
        self.left[experiment] = self.left.get(experiment, 1) - 1
        finished = self.left[experiment] == 0
        if finished or self.done % self.every == 0 or self.done == self.total:
            what = f"{experiment} done" if finished else f"last: {experiment}"
            print(f"[cpi sweep] {self.done}/{self.total} cells ({self.done / self.total:.0%}), "
                  f"{time.perf_counter() - self.t0:.0f} s; {what}", file=self.stream, flush=True)


def run_cells(cells: list[Cell], *, backend: str = "joblib", jobs: int = 1,
              ray_address: str | None = None,
              on_done: Callable[[Cell, pd.DataFrame, float, float], None] | None = None,
              progress: bool | None = None, total: int | None = None, initial: int = 0,
              threads: int = 1, keep_workers: bool = False) -> None:
    """Run ``cells`` and call ``on_done(cell, rows, wall s, CPU s)`` on the driver as each
    finishes (cells are dispatched in the order given; :mod:`experiments.sweep.schedule` orders
    them longest first).

    Args:
        backend: ``"joblib"`` (loky processes; ``jobs == 1`` runs in-process) or ``"ray"``.
        jobs: worker processes (joblib) or CPUs of a local Ray instance.
        ray_address: address of an existing Ray cluster; ``None`` starts a local instance.
        progress: ``None`` (default): a tqdm bar on a terminal, plain-text lines otherwise
            (:class:`TextProgress`); ``True``: the bar; ``False``: silent.
        total, initial: bar size and cells already done (resumed runs start the bar there).
        threads: numerical threads per worker.
        keep_workers: leave joblib's workers running for more work (the caller stops them
            with :func:`shutdown_workers`).
    """
    from tqdm.auto import tqdm

    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    total = total if total is not None else len(cells)
    text = None
    if progress is None:
        progress = sys.stdout.isatty()
        if not progress:
            counts: dict[str, int] = {}
            for c in cells:
                counts[c.experiment] = counts.get(c.experiment, 0) + 1
            text = TextProgress(len(cells) + initial, initial, counts)
    it = (_iter_ray(cells, jobs, ray_address, threads) if backend == "ray"
          else _iter_joblib(cells, jobs, threads, keep_workers))
    with tqdm(total=total, initial=initial, disable=not progress, unit="cell", desc="cpi sweep",
              dynamic_ncols=True) as bar:
        for cell, rows, seconds, cpu in it:
            if on_done is not None:
                on_done(cell, rows, seconds, cpu)
            bar.set_postfix_str(cell.experiment, refresh=False)
            bar.update(1)
            if text is not None:
                text.update(cell.experiment)
