"""The CPI prediction sweep: cells, storage, backends, bootstrap fits, plots, one module per experiment.

Layout (see docs/sweep.md):

* :mod:`experiments.sweep.cells` -- a :class:`Cell` (experiment, config, seed), its seed stream and
  the atomic on-disk :class:`CellStore`.
* :mod:`experiments.sweep.backends` -- run cells with joblib processes or on Ray.
* :mod:`experiments.sweep.stats` -- log-log fits with bootstrap-over-seeds intervals.
* :mod:`experiments.sweep.plots` -- shared figure helpers.
* :mod:`experiments.sweep.registry` -- the :class:`Experiment` record and the list of experiments.
* :mod:`experiments.sweep.runner` -- plan, run, assemble ``results.parquet``, fit ``summary.json``,
  draw figures.
* ``exp_*.py`` -- one module per prediction (P1-P8 of THEORY.md section 5).
"""
