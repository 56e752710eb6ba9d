"""Environment families for checking CPI with random vs. oracle resets (see docs/envs.md).

Every factory is seeded (its own ``numpy.random.Generator``; no global random state), returns a
:class:`~cpi.mdp.TabularMDP` or :class:`~cpi.mdp.TreeMDP` whose ``meta`` holds the knobs,
``family`` and ``initial_policy`` (the policy CPI starts from), and says in its docstring what it is
for:

* :func:`garnet` -- random Garnet-style tabular MDPs (no structure);
* :func:`coverage_family` -- coverage of the tau-improvable set set *exactly* by a knob ``p``
  (reach == mass == p), p-independent return noise, optional several branches with geometric
  gaps (the instrument for Theorem 1 and predictions P1-P5);
* :func:`first_error_tree` -- a reasoning tree in which the first wrong step decides the outcome,
  mirroring the ``srpo`` synthetic task (P7);
* :func:`deep_sea` -- the deep-sea hard-exploration MDP;
* :func:`shifted_coverage`, :func:`planted_garnet`, :func:`combination_lock` -- families where
  Theorem 1's claims are *not* built in (distribution shift, off-G advantages, a planted
  improvable set in a random MDP, coverage falling geometrically with depth); see docs/envs.md;
* :func:`concave_fork` -- J concave along the CPI update at pi_0 (the conservative step matters).

:class:`MDPEnv` wraps any of them as a ``gymnasium.Env``; importing this package registers the
gymnasium ids in :data:`GYM_IDS` (``gymnasium.make("credit-resets/Coverage-v0", p=0.05)``).
"""

from __future__ import annotations

import gymnasium

from cpi.envs._knobs import initial_policy
from cpi.envs.concave import concave_fork
from cpi.envs.coverage import coverage_at, coverage_curve, coverage_family
from cpi.envs.deep_sea import deep_sea
from cpi.envs.first_error import first_error_step, first_error_tree, path_actions
from cpi.envs.garnet import garnet
from cpi.envs.gym_env import MDPEnv
from cpi.envs.lock import combination_lock
from cpi.envs.planted import planted_garnet
from cpi.envs.shifted import shifted_coverage

__all__ = [
    "GYM_IDS",
    "MDPEnv",
    "combination_lock",
    "concave_fork",
    "coverage_at",
    "coverage_curve",
    "coverage_family",
    "deep_sea",
    "first_error_step",
    "first_error_tree",
    "garnet",
    "initial_policy",
    "path_actions",
    "planted_garnet",
    "register_envs",
    "shifted_coverage",
]

#: gymnasium id -> (entry point, default keyword arguments); override any with make(id, **kw).
GYM_IDS: dict[str, tuple[str, dict]] = {
    "credit-resets/MDP-v0": ("cpi.envs.gym_env:make_mdp_env", {}),
    "credit-resets/Garnet-v0": (
        "cpi.envs.gym_env:make_garnet_env",
        {"n_states": 20, "n_actions": 4, "branching": 3, "horizon": 10, "seed": 0},
    ),
    "credit-resets/Coverage-v0": ("cpi.envs.gym_env:make_coverage_env", {"p": 0.05}),
    "credit-resets/FirstError-v0": ("cpi.envs.gym_env:make_first_error_env", {}),
    "credit-resets/DeepSea-v0": ("cpi.envs.gym_env:make_deep_sea_env", {}),
}


def register_envs() -> None:
    """Register :data:`GYM_IDS` with gymnasium; ids already registered are left alone."""
    for env_id, (entry_point, kwargs) in GYM_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point, kwargs=dict(kwargs))


register_envs()
