"""Cell scheduling (experiments/sweep/schedule.py): longest first from measured costs.

* the order is by decreasing estimate, ties in plan order; unknown configs fall back to their
  experiment's median, unknown experiments to the median of all cells;
* on two workers, longest-first finishes a plan whose longest cell comes last sooner than the
  plan order does (a simulated greedy dispatch, as joblib does);
* ``cell_costs.json`` is rebuilt from runs' ``cell_times.jsonl`` (median CPU seconds per config),
  and the committed table parses.
"""

from __future__ import annotations

import heapq
import json

from experiments.sweep.cells import Cell
from experiments.sweep.registry import EXPERIMENT_NAMES
from experiments.sweep.schedule import (
    COSTS_FILE,
    TIMES_NAME,
    CostModel,
    config_key,
    longest_first,
    main,
    time_record,
)


def _cells():
    return [Cell("a", {"x": i}, seed=0) for i in range(4)] + [
        Cell("b", {"y": 1}, seed=0),
        Cell("c", {"z": 0}, seed=0),
    ]


def _model():
    return CostModel(
        {
            "a": {config_key({"x": 0}): 1.0, config_key({"x": 1}): 9.0, config_key({"x": 2}): 3.0},
            "b": {config_key({"y": 1}): 5.0},
        }
    )


def test_order_is_by_decreasing_estimate_with_fallbacks():
    m = _model()
    cells = _cells()
    assert m.estimate(cells[3]) == 3.0  # a, x=3 unknown: median of a's configs (1, 3, 9)
    assert m.estimate(cells[5]) == 4.0  # experiment c unknown: median of all four costs
    order = longest_first(cells, m)
    assert [m.estimate(c) for c in order] == sorted((m.estimate(c) for c in cells), reverse=True)
    # ties (x=2 and x=3 both 3.0) keep plan order
    assert order.index(cells[2]) < order.index(cells[3])
    assert CostModel().estimate(cells[0]) == 1.0  # no table at all: every cell the same


def _makespan(costs: list[float], workers: int = 2) -> float:
    """Greedy dispatch in the given order: the next cell goes to the first free worker."""
    free = [0.0] * workers
    for c in costs:
        heapq.heapreplace(free, free[0] + c)
    return max(free)


def test_longest_first_keeps_both_workers_busy_to_the_end():
    cells = [Cell("e", {"i": i}, seed=0) for i in range(9)]
    costs = [1.0] * 8 + [8.0]  # the plan ends with its longest cell
    model = CostModel({"e": {config_key(c.config): k for c, k in zip(cells, costs, strict=True)}})
    plan_order = _makespan(costs)
    lpt = _makespan([model.estimate(c) for c in longest_first(cells, model)])
    assert lpt == 8.0 and plan_order == 12.0  # total 16 on 2 workers: 8 is the best possible


def test_cost_table_is_rebuilt_from_run_records(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cells = [Cell("a", {"x": 1}, seed=s) for s in range(3)]
    lines = [time_record(c, wall=2.0 * k, cpu=float(k)) for k, c in enumerate(cells, 1)]
    (run / TIMES_NAME).write_text("\n".join(lines) + '\n{"cut short')  # a torn last line
    out = tmp_path / "costs.json"
    assert main([str(run), "--costs", str(out)]) == 0
    table = json.loads(out.read_text())
    assert table == {"a": {config_key({"x": 1}): 2.0}}  # median of CPU 1, 2, 3


def test_committed_cost_table_parses_and_knows_most_experiments():
    """(New experiments fall back to the median; the table is refreshed by the command.)"""
    table = json.loads(COSTS_FILE.read_text())
    assert len(set(EXPERIMENT_NAMES) & set(table)) >= len(EXPERIMENT_NAMES) // 2
    assert all(v > 0 for d in table.values() for v in d.values())
    assert CostModel.load().table == table
