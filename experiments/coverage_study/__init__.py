"""The coverage experiment (issue 11): the theory's p on the language model.

* :mod:`experiments.coverage_study.family` -- the task family (one hard step whose position moves the
  coverage p) and its warm start;
* :mod:`experiments.coverage_study.measure` -- p of the warm-started policy, both readings, and the
  self-localizer's (beta, gamma), before any RL;
* :mod:`experiments.coverage_study.prediction` -- the simulation's prediction at those p values;
* the entry point is ``experiments/llm_coverage.py``; ``experiments/compare.py`` draws the figure
  (:mod:`experiments.comparison.coverage`).
"""
