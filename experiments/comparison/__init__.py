"""Side-by-side comparison of the CPI simulation and the language-model (SRPO) runs.

``experiments/compare.py`` is the command; the pieces live here (see docs/compare.md):

* :mod:`experiments.comparison.schema` -- the ONE common schema (a reset-event table and a
  learning-curve table), the readers of both sides' outputs and the checks that turn a missing file
  or column into an :class:`InputError` naming it.
* :mod:`experiments.comparison.stats` -- Wilson intervals, bootstrap-over-seeds intervals,
  deviation buckets, "samples to reach the comparator's final score" speed-ups, and the LLM's
  coverage / precision / recall estimates for the phase map.
* :mod:`experiments.comparison.figures` -- the four figures.
* :mod:`experiments.comparison.report` -- ``comparison.md``.
"""

from experiments.comparison.schema import (
    CURVE_COLUMNS,
    METHODS,
    RESET_COLUMNS,
    SIDES,
    ComparisonInputs,
    InputError,
    load_cpi,
    load_llm,
)

__all__ = [
    "CURVE_COLUMNS",
    "METHODS",
    "RESET_COLUMNS",
    "SIDES",
    "ComparisonInputs",
    "InputError",
    "load_cpi",
    "load_llm",
]
