"""Any :class:`~cpi.mdp.TabularMDP` or :class:`~cpi.mdp.TreeMDP` as a ``gymnasium.Env``.

Observation: ``{"step": h, "state": s}``, a ``gymnasium.spaces.Dict`` of ``Discrete(H + 1)`` (the
number of decisions taken so far, 0 .. H) and ``Discrete(S)`` (the tabular state, or the tree node).
The step is part of the observation because the MDPs are finite-horizon and their policies
non-stationary; a tabular agent can index a policy as ``policy[obs["step"], obs["state"]]`` (a tree
node already determines its step, and a tree policy is indexed by ``obs["state"]`` alone).
Action: ``Discrete(A)``.

Dynamics: ``reset(seed=...)`` draws ``s_0 ~ mu`` with the env's ``np_random``; ``step(a)`` returns
the reward ``R[s, a]`` (tabular) or ``reward[child]`` (tree), moves to ``s' ~ P[s, a]`` (tabular)
or ``children[n, a]`` (tree), and sets ``terminated`` after H decisions or on reaching a tree leaf
(the horizon is part of the problem, so the end is a termination, never a truncation).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from cpi.mdp import TabularMDP, TreeMDP

__all__ = ["MDPEnv"]


class MDPEnv(gym.Env):
    """A finite-horizon MDP as a gymnasium environment (see the module docstring).

    Args:
        mdp: the ``TabularMDP`` or ``TreeMDP`` to simulate (kept as ``env.mdp``).
        render_mode: ``None`` or ``"ansi"`` (``render()`` returns a one-line text).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, mdp: TabularMDP | TreeMDP, render_mode: str | None = None):
        if not isinstance(mdp, TabularMDP | TreeMDP):
            raise ValueError(f"mdp: expected a TabularMDP or TreeMDP, got {type(mdp).__name__}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode: expected None or 'ansi', got {render_mode!r}")
        self.mdp = mdp
        self.render_mode = render_mode
        self._tree = isinstance(mdp, TreeMDP)
        n_states = mdp.n_nodes if self._tree else mdp.n_states
        self.horizon = mdp.horizon
        self.observation_space = spaces.Dict(
            {"step": spaces.Discrete(self.horizon + 1), "state": spaces.Discrete(n_states)}
        )
        self.action_space = spaces.Discrete(mdp.n_actions)
        self._mu_cdf = np.cumsum(mdp.mu)
        self._state = -1
        self._step = 0

    def _obs(self) -> dict[str, np.int64]:
        return {"step": np.int64(self._step), "state": np.int64(self._state)}

    @staticmethod
    def _draw(cdf: np.ndarray, u: float) -> int:
        return min(int(np.searchsorted(cdf, u, side="right")), cdf.shape[0] - 1)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._state = self._draw(self._mu_cdf, self.np_random.random())
        self._step = 0
        return self._obs(), {"step": 0}

    def step(self, action):
        if self._state < 0:
            raise RuntimeError("step: call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(
                f"action: expected an int in [0, {self.action_space.n - 1}], got {action!r}"
            )
        a = int(action)
        mdp = self.mdp
        if self._tree:
            nxt = int(mdp.children[self._state, a])
            if nxt < 0:
                raise RuntimeError("step: the episode has ended (a leaf was reached); call reset()")
            reward = float(mdp.reward[nxt])
            terminated = bool(mdp.children[nxt, 0] < 0) or self._step + 1 >= self.horizon
        else:
            if self._step >= self.horizon:
                raise RuntimeError("step: the episode has ended (horizon reached); call reset()")
            reward = float(mdp.R[self._state, a])
            nxt = self._draw(np.cumsum(mdp.P[self._state, a]), self.np_random.random())
            terminated = self._step + 1 >= self.horizon
        self._state = nxt
        self._step += 1
        return self._obs(), reward, terminated, False, {"step": self._step}

    def render(self):
        if self.render_mode == "ansi":
            return f"{self.mdp.name}: step {self._step}/{self.horizon}, state {self._state}"
        return None


# Entry points of the registered gymnasium ids (see cpi.envs.register_envs).
def make_mdp_env(mdp: TabularMDP | TreeMDP, render_mode: str | None = None) -> MDPEnv:
    """``credit-resets/MDP-v0``: wrap a given MDP."""
    return MDPEnv(mdp, render_mode=render_mode)


def make_garnet_env(render_mode: str | None = None, **kwargs) -> MDPEnv:
    """``credit-resets/Garnet-v0``: ``MDPEnv(garnet(**kwargs))``."""
    from cpi.envs.garnet import garnet

    return MDPEnv(garnet(**kwargs), render_mode=render_mode)


def make_coverage_env(render_mode: str | None = None, **kwargs) -> MDPEnv:
    """``credit-resets/Coverage-v0``: ``MDPEnv(coverage_family(**kwargs))``."""
    from cpi.envs.coverage import coverage_family

    return MDPEnv(coverage_family(**kwargs), render_mode=render_mode)


def make_first_error_env(render_mode: str | None = None, **kwargs) -> MDPEnv:
    """``credit-resets/FirstError-v0``: ``MDPEnv(first_error_tree(**kwargs))``."""
    from cpi.envs.first_error import first_error_tree

    return MDPEnv(first_error_tree(**kwargs), render_mode=render_mode)


def make_deep_sea_env(render_mode: str | None = None, **kwargs) -> MDPEnv:
    """``credit-resets/DeepSea-v0``: ``MDPEnv(deep_sea(**kwargs))``."""
    from cpi.envs.deep_sea import deep_sea

    return MDPEnv(deep_sea(**kwargs), render_mode=render_mode)
