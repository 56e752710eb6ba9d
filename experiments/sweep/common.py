"""Small helpers shared by the experiment modules: seeds, grids, exact policy quantities.

Conventions used by every experiment (also in docs/sweep.md):

* A cell's :class:`~numpy.random.SeedSequence` is split with :func:`split_seeds` into an
  environment seed (an int for the env factory) and algorithm generators. Methods compared within
  a cell share the environment instance (paired comparison) but draw from separate streams.
* ``p`` means the on-policy coverage of the tau-improvable set of the *initial* policy, both
  readings equal (``reach == mass``) in :func:`cpi.envs.coverage_family`.
* Method names: ``"random"`` = CPI-RR, ``"oracle"`` = CPI-CARO, ``"approx"`` = approximate
  selector, ``"none"`` = outcome signal at the start state only.
"""

from __future__ import annotations

import numpy as np

#: Display names of reset rules in figures.
METHOD_LABEL = {"random": "CPI-RR (random reset)", "oracle": "CPI-CARO (oracle reset)",
                "approx": "approximate selector", "none": "no reset (outcome only)"}


def split_seeds(seq: np.random.SeedSequence, n_generators: int) -> tuple[int, list[np.random.Generator]]:
    """``(env_seed, [Generator] * n_generators)`` from a cell's seed sequence."""
    env_child, *children = seq.spawn(1 + n_generators)
    env_seed = int(env_child.generate_state(1, dtype=np.uint32)[0])
    return env_seed, [np.random.default_rng(c) for c in children]


def child_seed(seq: np.random.SeedSequence, index: int) -> int:
    """A deterministic integer seed for the ``index``-th consumer of ``seq`` (>= 0, < 2**31)."""
    child = np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, 1000 + index))
    return int(child.generate_state(1, dtype=np.uint32)[0] % (2**31 - 1))


def p_grid(size: str, override: tuple[float, ...] | None, *, quick=None, default=None,
           full=None, tiny=None) -> tuple[float, ...]:
    """The coverage grid of a p sweep for ``size`` (``override`` wins when given)."""
    if override is not None:
        return tuple(float(p) for p in override)
    grids = {"tiny": tiny, "quick": quick, "default": default, "full": full}
    grid = grids[size] if grids[size] is not None else default
    return tuple(float(p) for p in grid)


def mass_distribution(d: np.ndarray) -> np.ndarray:
    """Normalised on-policy state distribution (1/H) sum_h d_h as used by the mass reading."""
    return d / d.sum()


def run_cpi_frame(mdp, drop: tuple[str, ...] = (), **kwargs):
    """``cpi.algorithm.run_cpi(mdp, **kwargs).frame`` without the columns the sweep owns.

    The sweep tags rows with its own ``seed`` and config columns; ``run_cpi``'s ``seed`` becomes
    ``algo_seed`` and the columns in ``drop`` (config keys repeated by run_cpi) are removed.
    ``J_star`` and ``stop_reason`` are added.
    """
    from cpi.algorithm import run_cpi

    res = run_cpi(mdp, **kwargs)
    frame = res.frame.rename(columns={"seed": "algo_seed"})
    frame = frame.drop(columns=[c for c in drop if c in frame.columns])
    frame["J_star"] = res.J_star
    frame["stop_reason"] = res.stop_reason
    return frame
