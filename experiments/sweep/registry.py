"""The list of experiments and the record that describes one.

An experiment module (``exp_*.py``) defines ``EXPERIMENT = Experiment(...)`` with four pure
functions: the configs of a sweep size, the computation of one cell, the fits over its rows and
its figures. Adding an experiment = writing a module and listing it in :data:`_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: Sweep sizes, smallest first. ``tiny`` exists for the test-suite only.
SIZES = ("tiny", "quick", "default", "full")

#: Seeds per cell when ``--seeds`` is not given.
DEFAULT_SEEDS = {"tiny": 2, "quick": 3, "default": 5, "full": 20}


@dataclass(frozen=True)
class Experiment:
    """One named experiment (one prediction of THEORY.md section 5).

    Attributes:
        name: the ``--only`` name and the ``experiment`` column.
        prediction: e.g. ``"P2"``.
        description: one line for ``--help`` and docs.
        configs: ``configs(size, p_values) -> list[dict]``; ``p_values`` (or ``None``) overrides
            the experiment's coverage grid where it has one.
        run_cell: ``run_cell(config, seed_sequence) -> DataFrame`` of rows (no id/config columns).
        analyze: ``analyze(rows) -> dict[str, fit record]`` (see :func:`stats.fit_record`).
        plot: ``plot(rows, fits, outdir) -> list[Path]`` (PNG and PDF files written).
    """

    name: str
    prediction: str
    description: str
    configs: Callable[[str, tuple[float, ...] | None], list[dict]]
    run_cell: Callable[[dict, np.random.SeedSequence], pd.DataFrame]
    analyze: Callable[[pd.DataFrame], dict]
    plot: Callable[[pd.DataFrame, dict, Path], list[Path]]


_MODULES = (
    "exp_dilution",
    "exp_estimation",
    "exp_direct",
    "exp_improvement",
    "exp_end_to_end",
    "exp_theorem",
    "exp_tau",
    "exp_approx_oracle",
    "exp_bounds",
    "exp_scaling",
    "exp_first_error",
    "exp_budget_curves",
)

#: Experiment names in run order (kept in sync with the modules by a test).
EXPERIMENT_NAMES = (
    "dilution",
    "estimation",
    "direct",
    "improvement",
    "end_to_end",
    "theorem_algorithms",
    "tau",
    "approx_oracle",
    "bounds",
    "scaling",
    "first_error",
    "budget_curves",
)


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name`` (ValueError listing the valid names otherwise)."""
    if name not in EXPERIMENT_NAMES:
        raise ValueError(f"unknown experiment {name!r}; expected one of {', '.join(EXPERIMENT_NAMES)}")
    module = importlib.import_module(f"experiments.sweep.{_MODULES[EXPERIMENT_NAMES.index(name)]}")
    return module.EXPERIMENT
