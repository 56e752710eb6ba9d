"""Validation of environment knobs: each failure is a ``ValueError`` naming the field."""

from __future__ import annotations

import numbers

import numpy as np

from cpi.mdp import MDP, check_horizon

__all__ = ["check_horizon", "check_int", "check_real", "initial_policy"]


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int in ``[low, high]`` (``high=None``: unbounded) or raise."""
    expected = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    v = int(value)
    if v < low or (high is not None and v > high):
        raise ValueError(f"{name}: expected {expected}, got {v}")
    return v


def check_real(
    name: str,
    value,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite float in the stated interval or raise a ``ValueError``."""
    lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
    expected = (
        "a finite number"
        + (f" {lo}" if lo else "")
        + (" and" if lo and hi else "")
        + (f" {hi}" if hi else "")
    )
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    v = float(value)
    bad = not np.isfinite(v)
    if low is not None:
        bad |= v <= low if low_open else v < low
    if high is not None:
        bad |= v >= high if high_open else v > high
    if bad:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return v


def initial_policy(mdp: MDP) -> np.ndarray:
    """The policy CPI starts from: ``mdp.meta["initial_policy"]`` if set, else uniform.

    Shape (H, S, A) for a ``TabularMDP`` and (N, A) for a ``TreeMDP``.
    """
    pol = mdp.meta.get("initial_policy")
    return mdp.uniform_policy() if pol is None else np.asarray(pol, dtype=np.float64)
