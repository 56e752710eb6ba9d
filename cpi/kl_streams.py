"""Kakade-Langford estimates read off growing per-repetition sample streams.

:func:`cpi.rollouts.kl_estimates` draws ``reps`` fresh estimates of size n per call, so a search
over n (the direct sample complexity of ``experiments/sweep/direct.py``) pays for every n it
tries. Here each repetition r owns a stream of i.i.d. terms ``coef[x, a] * Q_hat(x, a)`` (its
own PCG64 generator, seeded from the caller's Generator), and the estimate of size n of
repetition r is the mean of the first n terms of its stream. Asking for a larger n draws only
the terms beyond those already drawn; the running sums are recorded at ``marks`` passed on the
way, so the estimates at any recorded n are free afterwards. A doubling-then-bisection search
then costs the largest n it reaches, once, instead of the sum of all the n it tries.

The estimates at one n are exactly as in :func:`cpi.rollouts.kl_estimates` (reps independent
means of n i.i.d. terms; the same law, other uniforms); estimates at two n of one repetition
share their first terms (nested prefixes), so success rates at different n are dependent,
each still exact on its own.

Example::

    ks = KLStreams(mdp, policy, coef, weights, reps=400, rng=rng)
    ks.extend(1000, marks=[500, 700, 850])   # draws 1000 terms per repetition
    ks.means(700)                             # (400,) estimates of size 700, no new draws
"""

from __future__ import annotations

import numpy as np

from cpi import tabular_kernels as tk
from cpi import tree_kernels as trk
from cpi.alias import policy_table, state_table, tables
from cpi.mdp import MDP, TabularMDP, TreeMDP
from cpi.pcg import open_stream


class KLStreams:
    """``reps`` K&L term streams of one (policy, coef, reset weights); see the module doc.

    Attributes:
        n: terms drawn so far per repetition. env_steps: Q-rollout transitions walked so far.
        terms_drawn: total terms over all repetitions (reps * n).
    """

    def __init__(self, mdp: MDP, policy, coef, reset_weights, reps: int, rng: np.random.Generator):
        reps = int(reps)
        if reps < 1:
            raise ValueError(f"reps: expected an int >= 1, got {reps}")
        X = mdp.n_nodes if isinstance(mdp, TreeMDP) else mdp.horizon * mdp.n_states
        A = mdp.n_actions
        self._coef = np.ascontiguousarray(coef, dtype=np.float64).ravel()
        if self._coef.shape != (X * A,):
            raise ValueError(f"coef: expected {X * A} entries (X * A), got {self._coef.size}")
        w = np.asarray(reset_weights, dtype=np.float64).ravel()
        if w.shape != (X,):
            raise ValueError(f"reset_weights: expected shape ({X},), got {w.shape}")
        if isinstance(mdp, TreeMDP) and np.any(w[mdp.is_leaf] > 0):
            raise ValueError("reset_weights: expected no mass on tree leaves (nothing to act on)")
        self._xtab = state_table(w)
        self._ptab = policy_table(mdp, policy)
        self._mdp, self._tb = mdp, tables(mdp)
        seeds = rng.integers(0, 2**63, size=(reps, 2), dtype=np.int64)
        self._st = np.array(
            [open_stream(np.random.Generator(np.random.PCG64(s))) for s in seeds], dtype=np.uint64
        ).reshape(reps, 4)
        self._sums = np.zeros(reps)
        self._counts = np.zeros(reps, dtype=np.int64)
        self._recorded: dict[int, np.ndarray] = {}
        self.env_steps = 0

    @property
    def n(self) -> int:
        return int(self._counts[0])

    @property
    def terms_drawn(self) -> int:
        return int(self._counts.sum())

    def extend(self, n: int, marks=()) -> np.ndarray:
        """Draw terms until every repetition has ``n`` (none if it has: then n must be recorded);
        record the running means at every mark in (current n, n]. Returns the (reps,) estimates
        of size n."""
        n = int(n)
        if n < 1:
            raise ValueError(f"n: expected an int >= 1, got {n}")
        if n > self.n:
            ks = np.unique(
                np.asarray([m for m in marks if self.n < int(m) < n] + [n], dtype=np.int64)
            )
            at = np.zeros((self._sums.size, ks.size))
            mdp, tb = self._mdp, self._tb
            args = (self._st, self._sums, self._counts, n, ks, at)
            if isinstance(mdp, TabularMDP):
                from cpi.rollouts import _tab

                steps = tk.kl_extend(
                    *_tab(tb), self._ptab, mdp.horizon, self._xtab, self._coef, *args
                )
            else:
                from cpi.rollouts import _tree

                steps = trk.kl_extend(*_tree(tb), self._ptab, self._xtab, self._coef, *args)
            self.env_steps += int(steps)
            for i, k in enumerate(ks):
                self._recorded[int(k)] = at[:, i] / k
        return self.means(n)

    def means(self, n: int) -> np.ndarray:
        """(reps,) estimates of size n: n must be the current n or a recorded mark."""
        n = int(n)
        if n in self._recorded:
            return self._recorded[n].copy()
        raise ValueError(
            f"n: {n} terms were not recorded (current n {self.n}; marks "
            f"{sorted(self._recorded)[:8]}...); pass it in marks when extending"
        )
