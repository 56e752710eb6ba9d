"""Monte Carlo samplers: episodes, reset-state sampling and Q-rollouts (public API).

States are addressed by a *flat index* ``x`` shared with :mod:`cpi.selectors` and
:mod:`cpi.estimators`: for a :class:`~cpi.mdp.TabularMDP` ``x = h * S + s`` (a (step, state)
pair, ``X = H * S``); for a :class:`~cpi.mdp.TreeMDP` ``x`` is the node (``X = N``, the step is
the depth). A policy seen through this index is the (X, A) matrix ``policy.reshape(-1, A)``.

Actions are sampled by the alias method from a table built once per policy
(:func:`policy_table`), next states of a tabular ``P`` by the alias method over each row's
successor list (built once per MDP; :mod:`cpi.alias`): one uniform and one comparison each, so a
tabular step costs two uniforms and O(1) work however dense the rows are, and a tree step one
uniform. Start states use inverse CDF. The compiled kernels are in :mod:`cpi.tabular_kernels`
(episodes in ``LANES`` lanes so that their table look-ups overlap) and :mod:`cpi.tree_kernels`
(one episode at a time), built from the steps of :mod:`cpi.walk`.

Randomness: every sampler takes ``numpy.random.Generator`` objects and leaves them advanced
past the uniforms it used; the kernels draw them inline from the Generator's PCG64 state
(:mod:`cpi.pcg`): the same numbers ``rng.random()`` would give, in an order each kernel documents
(``tests/cpi/test_sampling_order.py`` checks it against a plain-Python copy). Nothing touches
global state. Policy tables are cached per policy (:func:`policy_table`), so samplers called
one after another on the same policy build the table once.

Cost accounting (units: environment steps = transitions simulated):

* a base rollout to a reset candidate at step ``h`` costs ``h`` steps (tabular, and trees whose
  leaves all sit at the horizon); on a tree with early leaves the whole base episode must be run to
  know its length ``L`` (the reset step is uniform over its ``L`` non-leaf steps), so it costs ``L``;
* a Q-rollout from a state at step ``h`` costs ``H - h`` steps (tree: until the leaf);
* an on-policy episode costs ``H`` steps (tree: its length).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpi import tabular_kernels as tk
from cpi import tree_kernels as trk
from cpi.alias import (  # noqa: F401 - re-exported: the sampling tables' public home was here
    TabularTables,
    TreeTables,
    alias_pack,
    policy_table,
    state_table,
    tables,
)
from cpi.mdp import MDP, TabularMDP, TreeMDP
from cpi.pcg import close_stream, jump_table, open_stream

#: Episodes advanced in lockstep by the tabular kernels.
LANES = tk.LANES
# Placeholders for the arguments of the Q-rollout engine that one kind does not use.
_NO_STARTS = np.zeros(0, dtype=np.int64)
_NO_TABLE = np.zeros(1, dtype=np.uint64)
_NO_COEF = np.zeros(0)


def _tab(tb: TabularTables) -> tuple:
    """The tabular kernels' view: ptr, slots (3 nnz,), R (S A,), S, A."""
    S, A = tb.R.shape
    return tb.ptr, tb.slots.reshape(-1), tb.R.reshape(-1), S, A


def _tree(tb: TreeTables) -> tuple:
    """The tree kernels' view: children (N A,), reward, A."""
    return tb.children.reshape(-1), tb.reward, tb.children.shape[1]


# ---------------------------------------------------------------------------------------------
# Kernel calls on prepared tables and streams (what the public samplers run; the benchmark
# times these): tb = tables(mdp), ptab = policy_table(mdp, policy), rs = open_stream(rng).
# ---------------------------------------------------------------------------------------------
def run_returns(mdp: MDP, tb, ptab, n: int, rs) -> tuple[np.ndarray, tuple]:
    if isinstance(mdp, TabularMDP):
        return tk.returns(*_tab(tb), tb.start_cdf, tb.start_idx, ptab, mdp.horizon, n, rs)
    return trk.returns(*_tree(tb), tb.start_cdf, tb.start_idx, ptab, n, rs)


def run_episodes(mdp: MDP, tb, ptab, n: int, rs) -> tuple:
    """(xs, acts, rtg, env steps, rs); the outputs are allocated here (see the kernels)."""
    H = mdp.horizon
    xs, acts, rtg = (
        np.empty((n, H), dtype=np.int64),
        np.empty((n, H), dtype=np.int64),
        np.empty((n, H)),
    )
    flat = (xs.reshape(-1), acts.reshape(-1), rtg.reshape(-1))
    if isinstance(mdp, TabularMDP):
        steps, rs = tk.episodes(*_tab(tb), tb.start_cdf, tb.start_idx, ptab, H, *flat, rs)
    else:
        steps, rs = trk.episodes(*_tree(tb), tb.start_cdf, tb.start_idx, ptab, H, *flat, rs)
    return xs, acts, rtg, steps, rs


def run_resets(mdp: MDP, tb, ptab, n_accept: int, sel, G, cap: int, rs, rs_sel, shared: bool):
    """(states, n_candidates, base_steps, candidates_in_G, accepted_in_G, rs, rs_sel)."""
    H = mdp.horizon
    if isinstance(mdp, TreeMDP):
        children, _, A = _tree(tb)
        return trk.resets(
            children,
            A,
            tb.start_cdf,
            tb.start_idx,
            ptab,
            H,
            tb.full_depth,
            n_accept,
            sel,
            G,
            cap,
            rs,
            rs_sel,
            shared,
        )
    if shared or H < tk.LANES_MIN_HORIZON:
        return tk.resets_serial(
            *_tab(tb),
            tb.start_cdf,
            tb.start_idx,
            ptab,
            H,
            n_accept,
            sel,
            G,
            cap,
            rs,
            rs_sel,
            shared,
        )
    return tk.resets_lanes(
        *_tab(tb),
        tb.start_cdf,
        tb.start_idx,
        ptab,
        H,
        n_accept,
        sel,
        G,
        cap,
        jump_table(2 * H),
        rs,
        rs_sel,
    )


def run_q(mdp: MDP, tb, ptab, starts: np.ndarray, g: int, rs) -> tuple:
    """(actions, Q samples, env steps, rs)."""
    if isinstance(mdp, TabularMDP):
        a, q, _, steps, rs = tk.q_lanes(
            tk.Q_SAMPLES,
            *_tab(tb),
            ptab,
            mdp.horizon,
            starts.size * g,
            g,
            starts.size,
            starts,
            _NO_TABLE,
            _NO_COEF,
            rs,
        )
        return a, q, steps, rs
    return trk.q_rollouts(*_tree(tb), ptab, starts, g, rs)


def run_kl(mdp: MDP, tb, ptab, xtab, coef, n: int, reps: int, rs) -> tuple:
    """(estimates, env steps, rs)."""
    if isinstance(mdp, TabularMDP):
        _, _, sums, steps, rs = tk.q_lanes(
            tk.KL_TERMS, *_tab(tb), ptab, mdp.horizon, n * reps, n, reps, _NO_STARTS, xtab, coef, rs
        )
        return sums / n, steps, rs
    return trk.kl_means(*_tree(tb), ptab, xtab, coef, n, reps, rs)


# ---------------------------------------------------------------------------------------------
# Public samplers
# ---------------------------------------------------------------------------------------------
def simulate_returns(mdp: MDP, policy, n_episodes: int, rng: np.random.Generator) -> np.ndarray:
    """Returns of ``n_episodes`` independent on-policy episodes from ``mu``: shape (n_episodes,).

    Units: reward units (sum of the H one-step rewards; tree: sum of rewards on arrival).
    ``rng`` is a ``numpy.random.Generator`` consumed by the compiled kernel.
    """
    n = int(n_episodes)
    if n < 0:
        raise ValueError(f"n_episodes: expected an int >= 0, got {n_episodes!r}")
    tb = tables(mdp)
    ptab = policy_table(mdp, policy)
    out, rs = run_returns(mdp, tb, ptab, n, open_stream(rng))
    close_stream(rng, rs)
    return out


@dataclass(frozen=True)
class ResetBatch:
    """Accepted reset states of one draw and what finding them cost.

    states: (n,) flat state indices, i.i.d. from the reset distribution d restricted to and
        reweighted by the selector, ``d(x) sel(x) / sum d sel``.
    n_candidates: candidates drawn from d (accepted + rejected).
    base_steps: environment steps of the base rollouts to all candidates.
    candidates_in_G, accepted_in_G: counts for precision/recall (``in_G`` given to the sampler).
    """

    states: np.ndarray
    n_candidates: int
    base_steps: int
    candidates_in_G: int
    accepted_in_G: int


def sample_resets(
    mdp: MDP,
    policy,
    n_accept: int,
    select: np.ndarray,
    in_G: np.ndarray,
    rng: np.random.Generator,
    rng_select: np.random.Generator,
    max_candidates: int = 10**9,
) -> ResetBatch:
    """Draw candidates from the reset distribution of ``policy`` until ``n_accept`` are accepted.

    ``select`` (X,) is the per-visit acceptance probability (1 everywhere: random reset; the
    indicator of G: oracle; gamma on G and q off G: approximate selector); ``in_G`` (X,) bool is
    used only to count. ``rng_select`` is consumed only where ``0 < select[x] < 1``.
    """
    tb = tables(mdp)
    ptab = policy_table(mdp, policy)
    sel = np.ascontiguousarray(select, dtype=np.float64).ravel()
    G = np.ascontiguousarray(in_G, dtype=np.bool_).ravel()
    # One Generator for both: the acceptance draws sit between candidates in its stream.
    shared = rng_select is rng or rng_select.bit_generator is rng.bit_generator
    rs = open_stream(rng)
    rs_sel = rs if shared else open_stream(rng_select)
    res = run_resets(mdp, tb, ptab, int(n_accept), sel, G, int(max_candidates), rs, rs_sel, shared)
    states, n_cand, steps, cand_G, acc_G, rs, rs_sel = res
    close_stream(rng, rs)
    if not shared:
        close_stream(rng_select, rs_sel)
    return ResetBatch(states, int(n_cand), int(steps), int(cand_G), int(acc_G))


def q_rollouts(
    mdp: MDP, policy, starts: np.ndarray, group_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """``group_size`` Q-rollouts at each start state (uniform exploratory action, then ``policy``).

    Returns ``(actions, Q, env_steps)``: actions (n, group_size) int, Q (n, group_size) returns
    to go in reward units (unbiased for Q^policy(x, a)), env_steps the transitions simulated.
    """
    tb = tables(mdp)
    ptab = policy_table(mdp, policy)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    a, q, steps, rs = run_q(mdp, tb, ptab, starts, int(group_size), open_stream(rng))
    close_stream(rng, rs)
    return a, q, int(steps)


def on_policy_episodes(mdp: MDP, policy, n_episodes: int, rng: np.random.Generator):
    """``n_episodes`` full episodes from ``mu`` with no branching.

    Returns ``(states, actions, return_to_go, env_steps)``, each array (n, H); tree episodes
    that end early are padded with state -1 and action -1.
    """
    tb = tables(mdp)
    ptab = policy_table(mdp, policy)
    n = int(n_episodes)
    xs, acts, rtg, steps, rs = run_episodes(mdp, tb, ptab, n, open_stream(rng))
    close_stream(rng, rs)
    return xs, acts, rtg, int(steps)


def kl_estimates(
    mdp: MDP,
    policy,
    coef: np.ndarray,
    reset_weights: np.ndarray,
    n: int,
    reps: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, int]:
    """``reps`` independent Kakade-Langford estimates of size ``n``, in one compiled call.

    Each estimate is the mean of n i.i.d. terms ``coef[x, a] * Q_hat(x, a)``: ``x`` drawn from
    the reset weights (normalised; e.g. d for random resets, d restricted to G for the oracle,
    ``d s`` for a selector), ``a`` uniform over the A actions, ``Q_hat`` one Q-rollout of
    ``policy`` after a (its return to go). With ``coef = A (pi' - pi)`` the expectation is the
    policy advantage ``E_x[A^pi(x, pi'(x))]`` (see :mod:`cpi.estimators`).

    The reset state is drawn from its exact distribution by an alias table rather than by rolling
    in from mu and rejecting (the two have the same law: ``tests/cpi/test_rollouts.py`` checks
    the roll-in sampler against d); the cost of a roll-in is accounted by the caller.

    Args:
        coef: (X, A) or (X * A,) per (flat state, action) coefficient.
        reset_weights: (X,) non-negative, positive sum (no mass on tree leaves).
        n, reps: terms per estimate (>= 1) and estimates (>= 1).
    Returns:
        ``(estimates (reps,), env_steps)``; env_steps counts the Q-rollouts' transitions.
    """
    n, reps = int(n), int(reps)
    if n < 1 or reps < 1:
        raise ValueError(f"n, reps: expected ints >= 1, got n={n}, reps={reps}")
    tb = tables(mdp)
    ptab = policy_table(mdp, policy)
    X = flat_state_count(mdp)
    coef = np.ascontiguousarray(coef, dtype=np.float64).ravel()
    if coef.shape != (X * mdp.n_actions,):
        raise ValueError(f"coef: expected {X * mdp.n_actions} entries (X * A), got {coef.size}")
    w = np.asarray(reset_weights, dtype=np.float64).ravel()
    if w.shape != (X,):
        raise ValueError(f"reset_weights: expected shape ({X},), got {w.shape}")
    if isinstance(mdp, TreeMDP) and np.any(w[mdp.is_leaf] > 0):
        raise ValueError("reset_weights: expected no mass on tree leaves (nothing to act on)")
    xtab = state_table(w)
    est, steps, rs = run_kl(mdp, tb, ptab, xtab, coef, n, reps, open_stream(rng))
    close_stream(rng, rs)
    return est, int(steps)


def flat_state_count(mdp: MDP) -> int:
    """X, the number of flat states (tabular H*S, tree N)."""
    if isinstance(mdp, TabularMDP):
        return mdp.horizon * mdp.n_states
    assert isinstance(mdp, TreeMDP)
    return mdp.n_nodes
