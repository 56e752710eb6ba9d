r"""Deep sea (Osband et al., "Deep Exploration via Randomized Value Functions", JMLR 2019; bsuite).

A hard-exploration tabular MDP: an ``N x N`` grid entered at the top-left cell. Each of the
``H = N`` steps moves one row down and one column left or right (clipped at the walls). Moving
right costs ``move_cost / N``; taking "right" in the bottom-right cell pays 1 on top. That cell can
only be reached by going right at every step, so the uniform policy finds the reward with
probability ``2^-N`` while the cost pushes a myopic learner towards "left". Which of the two action
indices means "right" is drawn per cell from the seed (``randomize_actions``), so no fixed action
index is a shortcut. Optional ``slip``: "right" moves left instead with that probability.

What it is for: a case where the improvable set is *tiny and deep* under the uniform policy (only
the always-right diagonal has a large advantage, and it is reached with probability ``2^-h`` at
step h), so random resets almost never land where the credit is; it stresses the reset rules and
the coverage-dependent sample complexity on a standard benchmark shape.
"""

from __future__ import annotations

import numpy as np

from cpi.envs._knobs import check_int, check_real
from cpi.mdp import TabularMDP

__all__ = ["deep_sea"]


def deep_sea(
    size: int = 10,
    move_cost: float = 0.01,
    slip: float = 0.0,
    randomize_actions: bool = True,
    seed: int = 0,
) -> TabularMDP:
    """A deep-sea MDP of side ``size`` (see the module docstring).

    Args:
        size: N >= 1, grid side and horizon.
        move_cost: total cost of going right at every step, >= 0 (each "right" costs
            ``move_cost / N``, reward units).
        slip: probability in [0, 1) that "right" moves left instead.
        randomize_actions: draw per cell which action index is "right" (else action 1 is right).
        seed: seed of that draw.

    Returns:
        ``TabularMDP`` with ``S = N^2`` states (cell ``(row, col)`` is state ``row N + col``; row =
        step), ``A = 2``, ``H = N``, ``mu`` on cell (0, 0). The always-right policy has value
        ``1 - move_cost`` (without slip). ``meta``: the knobs, ``family="deep_sea"``,
        ``initial_policy`` (uniform, (H, S, 2)), ``right_action`` (S,) int (index meaning "right"
        per cell) and ``optimal_policy`` (H, S, 2) (always right).
    """
    N = check_int("size", size, 1)
    cost = check_real("move_cost", move_cost, 0.0)
    slip = check_real("slip", slip, 0.0, 1.0, high_open=True)
    rng = np.random.default_rng(seed)
    S, A = N * N, 2
    if randomize_actions:
        right = rng.integers(0, 2, size=S)
    else:
        right = np.ones(S, dtype=np.int64)

    P = np.zeros((S, A, S))
    R = np.zeros((S, A))
    for row in range(N):
        for col in range(N):
            s = row * N + col
            a_r, a_l = right[s], 1 - right[s]
            R[s, a_r] = -cost / N
            if row == N - 1:
                if col == N - 1:
                    R[s, a_r] += 1.0
                P[s, :, s] = 1.0  # the episode is over after this step
                continue
            nxt = (row + 1) * N
            left_s = nxt + max(col - 1, 0)
            right_s = nxt + min(col + 1, N - 1)
            P[s, a_l, left_s] = 1.0
            P[s, a_r, right_s] += 1.0 - slip
            P[s, a_r, left_s] += slip
    mu = np.zeros(S)
    mu[0] = 1.0
    optimal = np.zeros((N, S, A))
    optimal[:, np.arange(S), right] = 1.0
    meta = {
        "family": "deep_sea",
        "size": N,
        "move_cost": cost,
        "slip": slip,
        "randomize_actions": bool(randomize_actions),
        "seed": seed,
        "initial_policy": np.full((N, S, A), 0.5),
        "right_action": right,
        "optimal_policy": optimal,
    }
    return TabularMDP(P, R, mu, N, name=f"deep-sea-N{N}-seed{seed}", meta=meta)
