"""cpi.evaluate validates the policy rows it reads (issue 22: validation fused into the pass).

On a tree the check runs inside the evaluation kernel: a bad internal row (NaN, inf, negative,
not summing to 1) raises check_policy's message; leaf rows, never read, are not checked (a NaN
there leaves V and Q unchanged). Tabular policies go through the compiled check_policy pass,
with the same messages as before.
"""

from __future__ import annotations

import numpy as np
import pytest

from cpi import evaluate
from cpi.mdp import check_policy
from tests.cpi import builders
from tests.cpi.test_sampling_order import sparse_tabular


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.nan, "finite"),
        (np.inf, "finite"),
        (-np.inf, "finite"),
        (-0.3, ">= 0"),
        (0.9, "summing to 1"),
    ],
)
def test_a_bad_internal_row_raises_check_policys_message(value, message):
    tree, pol = builders.full_tree(A=3, D=4, seed=1, with_policy=True)
    node = int(np.flatnonzero(~tree.is_leaf)[-1])  # the last internal row the pass reaches first
    bad = pol.copy()
    bad[node, 1] = value
    with pytest.raises(ValueError, match=rf"^policy: expected .*{message}"):
        evaluate(tree, bad)
    with pytest.raises(ValueError, match=rf"^policy: expected .*{message}"):
        check_policy(tree, bad)


def test_leaf_rows_are_not_read_so_not_checked():
    tree, pol = builders.full_tree(A=2, D=3, seed=2, with_policy=True)
    V, Q = evaluate(tree, pol)
    junk = pol.copy()
    junk[tree.is_leaf] = np.nan
    V2, Q2 = evaluate(tree, junk)
    np.testing.assert_array_equal(V, V2)
    np.testing.assert_array_equal(Q, Q2)
    with pytest.raises(ValueError, match="finite"):  # check_policy still checks every row
        check_policy(tree, junk)
    with pytest.raises(ValueError, match=r"^policy: expected shape \(N, A\)"):
        evaluate(tree, pol[:-1])


@pytest.mark.parametrize(
    ("value", "message"), [(np.nan, "finite"), (-0.5, ">= 0"), (0.5, "summing to 1")]
)
def test_tabular_policies_keep_their_messages(value, message):
    mdp, pol = sparse_tabular()
    bad = pol.copy()
    bad[2, 3, 0] = bad[2, 3, 0] + value if message == "summing to 1" else value
    with pytest.raises(ValueError, match=rf"^policy: expected .*{message}"):
        evaluate(mdp, bad)
    evaluate(mdp, pol[0])  # (S, A) broadcast over the steps
