"""Small MDP builders shared by the cpi tests."""

from __future__ import annotations

import numpy as np

from cpi import TreeMDP


def full_tree(A: int = 2, D: int = 4, seed: int = 0, bernoulli: float | None = None) -> TreeMDP:
    """Complete A-ary tree of depth D in breadth-first (topological) order.

    Leaf rewards are uniform on [0, 1), or 0/1 with P(1) = ``bernoulli`` when given.
    """
    rng = np.random.default_rng(seed)
    N = sum(A**d for d in range(D + 1))
    children = -np.ones((N, A), dtype=np.int64)
    nxt = 1
    for n in range(N - A**D):
        children[n] = np.arange(nxt, nxt + A)
        nxt += A
    reward = np.zeros(N)
    leaves = rng.random(A**D)
    reward[N - A**D:] = leaves if bernoulli is None else (leaves < bernoulli).astype(float)
    return TreeMDP(children, reward)
