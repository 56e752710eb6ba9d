"""Which cell runs when: longest first, from a cost estimate per cell.

With two worker processes a sweep is only as fast as its last busy core: a long cell started
last leaves the other core idle while it finishes. Sorting the cells by estimated cost, longest
first (the LPT rule), leaves only short cells for the end. A cell's rows do not depend on when
or where it runs (its randomness comes from its own seed sequence), so the order changes no
number.

Estimates come from CPU seconds measured in earlier runs: every run appends one line per
finished cell to ``<out>/cell_times.jsonl`` (experiment, config, seed, wall and CPU seconds), and
``python -m experiments.sweep.schedule RUN_DIR ...`` folds such files into the committed table
``cell_costs.json`` (median CPU seconds per experiment and config, over seeds and runs). A
config the table does not know (a new experiment or a new grid point) gets the median of its
experiment, or of all cells. Only the ranking matters, so the table need not come from the
machine that runs the sweep.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Iterable
from pathlib import Path

from experiments.sweep.cells import Cell, canonical_json

COSTS_FILE = Path(__file__).with_name("cell_costs.json")
TIMES_NAME = "cell_times.jsonl"


def config_key(config: dict) -> str:
    return canonical_json(config)


class CostModel:
    """CPU-second estimates per (experiment, config); see the module doc."""

    def __init__(self, table: dict[str, dict[str, float]] | None = None):
        self.table = table or {}
        self.by_exp = {e: statistics.median(v.values()) for e, v in self.table.items() if v}
        every = [x for v in self.table.values() for x in v.values()]
        self.default = statistics.median(every) if every else 1.0

    @classmethod
    def load(cls, path: Path = COSTS_FILE) -> CostModel:
        try:
            return cls(json.loads(Path(path).read_text()))
        except (OSError, ValueError):
            return cls()

    def estimate(self, cell: Cell) -> float:
        exp = self.table.get(cell.experiment, {})
        hit = exp.get(config_key(cell.config))
        if hit is not None:
            return hit
        return self.by_exp.get(cell.experiment, self.default)


def longest_first(cells: list[Cell], model: CostModel | None = None) -> list[Cell]:
    """``cells`` by decreasing estimated cost (ties keep their plan order)."""
    model = model or CostModel.load()
    order = sorted(range(len(cells)), key=lambda i: (-model.estimate(cells[i]), i))
    return [cells[i] for i in order]


def time_record(cell: Cell, wall: float, cpu: float) -> str:
    """One line of ``cell_times.jsonl``."""
    return json.dumps(
        {
            "experiment": cell.experiment,
            "config": cell.config,
            "seed": cell.seed,
            "cell_id": cell.cell_id,
            "wall": round(wall, 4),
            "cpu": round(cpu, 4),
        },
        sort_keys=True,
        default=float,
    )


def read_times(paths: Iterable[Path]) -> list[dict]:
    out = []
    for p in paths:
        for line in Path(p).read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:  # a line cut short by a kill
                    continue
    return out


def cost_table(records: list[dict]) -> dict[str, dict[str, float]]:
    """Median CPU seconds per experiment and config (rounded to 3 significant digits)."""
    samples: dict[str, dict[str, list[float]]] = {}
    for r in records:
        key = config_key(r["config"])
        samples.setdefault(r["experiment"], {}).setdefault(key, []).append(float(r["cpu"]))
    return {
        e: {k: float(f"{statistics.median(v):.3g}") for k, v in sorted(d.items())}
        for e, d in sorted(samples.items())
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Rebuild cell_costs.json from sweep runs.")
    ap.add_argument("runs", nargs="+", type=Path, help="sweep output directories (--out)")
    ap.add_argument("--costs", type=Path, default=COSTS_FILE)
    args = ap.parse_args(argv)
    files = [r / TIMES_NAME for r in args.runs if (r / TIMES_NAME).exists()]
    if not files:
        ap.error(f"no {TIMES_NAME} in {', '.join(map(str, args.runs))}")
    table = cost_table(read_times(files))
    args.costs.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    n = sum(len(v) for v in table.values())
    print(f"{args.costs}: {n} configs of {len(table)} experiments from {len(files)} run(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
