r"""The first-error reasoning tree: a thought MDP in which the first wrong step decides the outcome.

It mirrors the ``srpo`` synthetic task (chained modular arithmetic): a chain of H reasoning steps,
at each step |Y| = ``n_actions`` candidate values (the modulus), of which ``n_correct`` (one in the
arithmetic task) continue the computation correctly *given the prefix*; once a step is wrong the
final answer is wrong whatever follows. The same task can therefore be solved by exact CPI on this
tree and by a language model in ``srpo``, and the reset experiments of the paper (prediction P7:
reset just before vs after the first error) have an exact counterpart here. Correspondence with
``srpo.tasks.ModularArithmeticTask``: ``horizon`` = number of operations, ``n_actions`` = modulus,
``n_correct = 1``, ``p_correct = 1 - error_rate`` of ``reference_solution`` (whose wrong steps are
uniform over the ``modulus - 1`` wrong values, as the initial policy here is), ``first_error_step``
= ``first_error`` (1-based; 0 here for None), and ``recover`` ~ the chance of a lucky modular
collision that lands on the right final value after an error.

Tree layout: the full ``A``-ary tree of depth H in breadth-first order, so node ``n`` has children
``A n + 1 + a`` (a = 0 .. A-1), node 0 is the root (the prompt), depth = number of steps taken, and
the leaves are the ``A^H`` complete chains; ``N = (A^(H+1) - 1) / (A - 1)`` nodes in all.

Every internal node has ``n_correct`` *locally correct* actions (drawn per node from the seed,
``meta["correct"]``): the step that is right given the prefix, even if the prefix already went
wrong (as in arithmetic, where a later step can be computed correctly from a wrong intermediate
value). A node is *on track* iff every step on its path was locally correct. The leaf reward is the
success probability: 1 for an on-track chain, ``recover`` for an off-track one. A ``TreeMDP`` is
deterministic, so a chance ``recover`` of still reaching the right answer after an error becomes an
*expected* terminal reward of ``recover`` (and, since it does not depend on later steps, no action
after the first error changes anything: off-track nodes have zero advantage).

Under the initial policy (locally correct with probability ``p_correct`` at every node, spread
evenly over the correct actions, the rest spread evenly over the wrong ones; a warm-started model,
not a uniform one), with ``q = p_correct`` and ``r = recover``:

* success probability ``J(pi_0) = q^H + (1 - q^H) r``;
* an on-track node at depth d has ``V = r + (1 - r) q^(H-d)`` and ``max_a A = (1 - r)(1 - q) q^(H-d-1)``;
  off-track nodes have ``A = 0``;
* so ``G_tau`` is the on-track nodes at depth ``d >= d_tau`` (the smallest such d), with coverage
  ``reach = q^(d_tau)`` and ``mass = (1/H) sum_{d = d_tau}^{H-1} q^d``. Unlike
  :func:`cpi.envs.coverage_family`, the two readings differ here (an on-track trajectory visits G
  at several steps).
"""

from __future__ import annotations

import numpy as np

from cpi.envs._knobs import check_horizon, check_int, check_real
from cpi.mdp import TreeMDP

__all__ = ["first_error_step", "first_error_tree", "path_actions"]


def first_error_tree(
    horizon: int = 5,
    n_actions: int = 4,
    n_correct: int = 1,
    recover: float = 0.0,
    p_correct: float = 0.6,
    seed: int = 0,
    max_nodes: int = 2_000_000,
) -> TreeMDP:
    """A first-error reasoning tree (see the module docstring).

    Args:
        horizon: H >= 1 reasoning steps.
        n_actions: |Y| >= 2 candidate steps per node.
        n_correct: locally correct candidates per node, in [1, |Y| - 1].
        recover: success probability of an off-track chain, in [0, 1] (an expected terminal
            reward; 0 = success impossible after the first error).
        p_correct: probability that the initial policy takes a locally correct step, in [0, 1].
        seed: seed of the generator that picks the correct candidates per node.
        max_nodes: refuse to build trees with more nodes than this (memory guard).

    Returns:
        ``TreeMDP`` with N nodes, rewards on the leaves only (reward units: probability of
        success). ``meta``: the knobs, ``family="first_error"``, ``initial_policy`` (N, A),
        ``correct`` (N, A) bool (locally correct actions; all False on leaves), ``on_track`` (N,)
        bool, ``first_error_step`` (N,) int (1-based step of the first wrong step on the path,
        0 if none), ``success_probability`` (float, ``J(pi_0)``).
    """
    H = check_horizon(horizon)
    A = check_int("n_actions", n_actions, 2)
    C = check_int("n_correct", n_correct, 1, A - 1)
    r = check_real("recover", recover, 0.0, 1.0)
    q = check_real("p_correct", p_correct, 0.0, 1.0)
    max_nodes = check_int("max_nodes", max_nodes, 1)
    n_internal = (A**H - 1) // (A - 1)
    N = (A ** (H + 1) - 1) // (A - 1)
    if N > max_nodes:
        raise ValueError(
            f"horizon: a tree with horizon={H} and n_actions={A} has {N} nodes, more than "
            f"max_nodes={max_nodes}; expected a smaller horizon or n_actions (or raise max_nodes)"
        )
    rng = np.random.default_rng(seed)

    children = np.full((N, A), -1, dtype=np.int64)
    children[:n_internal] = A * np.arange(n_internal)[:, None] + 1 + np.arange(A)[None, :]

    correct = np.zeros((N, A), dtype=bool)
    rank = np.argsort(rng.random((n_internal, A)), axis=1)  # a random permutation per node
    np.put_along_axis(correct[:n_internal], rank[:, :C], True, axis=1)

    # Bookkeeping level by level: a child's parent is (c - 1) // A and its action (c - 1) % A.
    on_track = np.zeros(N, dtype=bool)
    first_error = np.zeros(N, dtype=np.int64)
    on_track[0] = True
    start = 1
    for d in range(1, H + 1):
        stop = start + A**d
        c = np.arange(start, stop)
        par, act = (c - 1) // A, (c - 1) % A
        step_ok = correct[par, act]
        on_track[c] = on_track[par] & step_ok
        first_error[c] = np.where(first_error[par] > 0, first_error[par], np.where(step_ok, 0, d))
        start = stop

    reward = np.zeros(N)
    reward[n_internal:] = np.where(on_track[n_internal:], 1.0, r)

    policy = np.full((N, A), 1.0 / A)
    policy[:n_internal] = np.where(correct[:n_internal], q / C, (1.0 - q) / (A - C))

    meta = {
        "family": "first_error",
        "horizon": H,
        "n_actions": A,
        "n_correct": C,
        "recover": r,
        "p_correct": q,
        "seed": seed,
        "initial_policy": policy,
        "correct": correct,
        "on_track": on_track,
        "first_error_step": first_error,
        "success_probability": q**H + (1.0 - q**H) * r,
    }
    name = f"first-error-H{H}-A{A}-C{C}-seed{seed}"
    return TreeMDP(children, reward, name=name, meta=meta)


def _check_node(mdp: TreeMDP, node) -> int:
    if "first_error_step" not in mdp.meta:
        raise ValueError(
            "mdp: expected a tree built by first_error_tree (no meta['first_error_step'])"
        )
    return check_int("node", node, 0, mdp.n_nodes - 1)


def first_error_step(mdp: TreeMDP, node: int) -> int:
    """1-based step of the first wrong step on the path from the root to ``node`` (0 if none)."""
    return int(mdp.meta["first_error_step"][_check_node(mdp, node)])


def path_actions(mdp: TreeMDP, node: int) -> list[int]:
    """Actions (candidate indices) taken from the root to ``node``, in order; length = depth."""
    n = _check_node(mdp, node)
    A = mdp.n_actions
    out = []
    while n > 0:
        out.append((n - 1) % A)
        n = (n - 1) // A
    return out[::-1]
