"""The unit of work of the sweep: one (experiment, config, seed) cell, and its on-disk store.

A cell's random stream is a :class:`numpy.random.SeedSequence` derived only from
``(base_seed, experiment, config, seed)`` -- never from the process, the backend or the order in
which cells run -- so a cell gives the same rows under joblib, Ray, one job or many.

Storage layout (``DIR`` is the sweep's ``--out``)::

    DIR/cells/<experiment>/<cell_id>.parquet   one file per finished cell, written atomically

A cell file is written to a temporary name in the same directory and then ``os.replace``-d into
place, so a killed sweep leaves either a complete cell file or none; a rerun skips the cells whose
file exists and the final ``results.parquet`` is assembled from exactly the planned cells.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Columns every row of ``results.parquet`` carries, in front of the config columns.
ID_COLUMNS = ("experiment", "cell_id", "seed")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the stable text form of a config."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=float)


@dataclass(frozen=True)
class Cell:
    """One unit of work.

    Attributes:
        experiment: registered experiment name (e.g. ``"estimation"``).
        config: the experiment's knobs for this cell (JSON scalars only: p, tau, beta, ...).
            Every key becomes a column of the cell's rows.
        seed: replicate index, ``0 .. n_seeds - 1``.
        base_seed: the sweep's base seed (``--base-seed``); changes every stream at once.
    """

    experiment: str
    config: dict = field(hash=False)
    seed: int
    base_seed: int = 0

    @property
    def key(self) -> str:
        """Canonical text of everything that determines the cell's rows."""
        return canonical_json(
            {"experiment": self.experiment, "config": self.config, "seed": self.seed,
             "base_seed": self.base_seed}
        )

    @property
    def cell_id(self) -> str:
        """16 hex digits of SHA-1 of :attr:`key` (stable across processes and machines)."""
        return hashlib.sha1(self.key.encode()).hexdigest()[:16]

    def seed_sequence(self) -> np.random.SeedSequence:
        """The cell's root stream: entropy from (base seed, experiment, config), spawn key = seed.

        Cells that differ only in ``seed`` are independent replicates; the same cell always gets
        the same stream. Experiments spawn children of it for the environment and the algorithm.
        """
        exp_word = zlib.crc32(self.experiment.encode())
        cfg_word = zlib.crc32(canonical_json(self.config).encode())
        return np.random.SeedSequence([self.base_seed, exp_word, cfg_word], spawn_key=(self.seed,))

    def label(self) -> str:
        items = ", ".join(f"{k}={v}" for k, v in sorted(self.config.items()))
        return f"{self.experiment}[{items}] seed={self.seed}"


def tag_rows(cell: Cell, frame: pd.DataFrame) -> pd.DataFrame:
    """Prepend the id and config columns of ``cell`` to an experiment's per-cell frame."""
    frame = frame.reset_index(drop=True).copy()
    clash = [c for c in (*ID_COLUMNS, *cell.config) if c in frame.columns]
    if clash:
        raise ValueError(f"{cell.experiment}: run_cell returned config/id columns {clash}")
    front = {"experiment": cell.experiment, "cell_id": cell.cell_id, "seed": cell.seed,
             **cell.config}
    for i, (name, val) in enumerate(front.items()):
        frame.insert(i, name, val)
    return frame


class CellStore:
    """Finished cells under ``root/cells``; atomic writes, existence means done."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.cells_dir = self.root / "cells"

    def path(self, cell: Cell) -> Path:
        return self.cells_dir / cell.experiment / f"{cell.cell_id}.parquet"

    def is_done(self, cell: Cell) -> bool:
        return self.path(cell).exists()

    def problem(self, cell: Cell) -> str | None:
        """Why the file of a finished cell cannot be used (empty, unreadable, another cell's
        rows), or ``None`` when it is fine or absent. Reads only the parquet footer (and the
        ``cell_id`` column when there are rows)."""
        path = self.path(cell)
        if not path.exists():
            return None
        if path.stat().st_size == 0:
            return "empty file"
        try:
            import pyarrow.parquet as pq

            meta = pq.read_metadata(path)
            if meta.num_rows:
                ids = pq.read_table(path, columns=["cell_id"]).column(0).unique().to_pylist()
                if ids != [cell.cell_id]:
                    return f"rows of another cell ({ids[:2]})"
        except Exception as err:  # noqa: BLE001 - any reader error means "recompute"
            return f"unreadable ({type(err).__name__}: {str(err).splitlines()[0][:80]})"
        return None

    def write(self, cell: Cell, frame: pd.DataFrame) -> Path:
        """Write the tagged rows of ``cell`` atomically (temp file + ``os.replace``)."""
        dest = self.path(cell)
        dest.parent.mkdir(parents=True, exist_ok=True)
        _replace_atomically(dest, lambda tmp: frame.to_parquet(tmp, index=False))
        return dest

    def remove_partial_files(self) -> int:
        """Delete temporary files left by a run killed mid-write (SIGKILL cannot clean up);
        returns how many."""
        n = 0
        if self.cells_dir.exists():
            for tmp in self.cells_dir.glob("*/.*.tmp"):
                tmp.unlink(missing_ok=True)
                n += 1
        return n

    def read(self, cell: Cell) -> pd.DataFrame:
        return pd.read_parquet(self.path(cell))

    def assemble(self, cells: list[Cell], cached: dict[str, pd.DataFrame] | None = None
                 ) -> pd.DataFrame:
        """Concatenate the rows of ``cells`` (all must be done) in plan order; ``cached``
        (cell_id -> rows just written) saves reading those back."""
        missing = [c.label() for c in cells if not self.is_done(c)]
        if missing:
            raise RuntimeError(f"{len(missing)} planned cells have no result, e.g. {missing[0]}")
        cached = cached or {}
        frames = [cached[c.cell_id] if c.cell_id in cached else self.read(c) for c in cells]
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame(columns=list(ID_COLUMNS))
        return pd.concat(frames, ignore_index=True, sort=False)


def _replace_atomically(path: Path, write) -> None:
    """``write(tmp)`` then ``os.replace(tmp, path)``; the temporary file is removed if writing
    fails or is interrupted (Ctrl-C, SIGTERM), so a stopped run leaves no partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace_atomically(path, lambda tmp: tmp.write_bytes(data))


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace_atomically(path, lambda tmp: frame.to_parquet(tmp, index=False))
