"""The episode kernel's limit in ``benchmarks/walk_limits.py`` writes exactly the kernel's outputs.

``bench_kernels.py`` times ``on_policy_episodes`` against a "walk + outputs" loop: the same walk
that also writes each output entry once (state, action, reward; a tree's padding) and skips
the suffix sums. That reference is fair only if it writes the same entries the kernel hands
back and walks the same stream; these tests compare them entry by entry (they fail if the
reference writes fewer or other entries, another layout, or draws differently).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from cpi import TabularMDP, rollouts
from cpi.alias import policy_table, tables
from cpi.pcg import open_stream
from tests.cpi import builders
from tests.cpi.test_sampling_order import early_leaf_tree, sparse_tabular

_BENCH = str(Path(__file__).resolve().parents[2] / "benchmarks")
sys.path.insert(0, _BENCH)
try:
    import walk_limits as wl
finally:
    sys.path.remove(_BENCH)

CASES = {
    "tabular": lambda: sparse_tabular(S=9, A=3, H=5, seed=3),
    "tree": lambda: builders.full_tree(A=3, D=4, seed=1, internal_noise=0.1, with_policy=True),
    "tree_early_leaves": early_leaf_tree,
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("n", [1, 13, 40])
def test_stored_walk_writes_the_episode_kernels_outputs(case, n):
    mdp, pol = CASES[case]()
    tb, ptab, H = tables(mdp), policy_table(mdp, pol), mdp.horizon
    xs, acts, rtg, steps, rs_k = rollouts.run_episodes(
        mdp, tb, ptab, n, open_stream(np.random.default_rng(n))
    )
    got = np.full(n * H, -7, np.int64), np.full(n * H, -7, np.int64), np.full(n * H, np.nan)
    start = (tb.start_cdf, tb.start_idx)
    if isinstance(mdp, TabularMDP):
        args, walk = (*rollouts._tab(tb), *start, ptab), wl.tab_episodes_stored
    else:
        args, walk = (*rollouts._tree(tb), *start, ptab), wl.tree_episodes_stored
    chk, rs_w = walk(*args, H, *got, open_stream(np.random.default_rng(n)))
    assert tuple(int(v) for v in rs_w[:2]) == tuple(int(v) for v in rs_k[:2])
    np.testing.assert_array_equal(got[0], xs.ravel())
    np.testing.assert_array_equal(got[1], acts.ravel())
    rew = got[2].reshape(n, H)
    suffix = rew.copy()  # the kernel's additions, in its order: rtg[h] = r[h] + rtg[h + 1]
    for h in range(H - 2, -1, -1):
        suffix[:, h] = rew[:, h] + suffix[:, h + 1]
    np.testing.assert_array_equal(suffix, rtg)
    assert steps == int((xs >= 0).sum())
    assert chk == pytest.approx(rtg[:, 0].sum(), rel=1e-12, abs=1e-12)
