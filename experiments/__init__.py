"""Experiment scripts of credit-resets (importable so that tests and Ray workers can reach them).

``experiments.sweep`` holds the pieces of ``experiments/cpi_sweep.py``; see docs/sweep.md.
"""
