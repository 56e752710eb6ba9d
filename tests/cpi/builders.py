"""Small MDP builders shared by the cpi tests."""

from __future__ import annotations

import numpy as np

from cpi import TreeMDP


def full_tree(A: int = 2, D: int = 4, seed: int = 0, bernoulli: float | None = None,
              internal_noise: float = 0.0, with_policy: bool = False):
    """Complete A-ary tree of depth D in breadth-first (topological) order.

    Leaf rewards are uniform on [0, 1), or 0/1 with P(1) = ``bernoulli`` when given; non-root
    internal nodes get N(0, internal_noise^2) rewards when ``internal_noise`` > 0. With
    ``with_policy`` a random (N, A) policy is returned too, as ``(tree, policy)``.
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
    if internal_noise > 0:
        reward[1:N - A**D] = internal_noise * rng.normal(size=N - A**D - 1)
    tree = TreeMDP(children, reward)
    return (tree, rng.dirichlet(np.ones(A), size=N)) if with_policy else tree
