"""cpi.theorem.run_theorem_cpi: Theorem 1's sampled algorithms (docs/cpi.md, section 5b).

* every iteration's estimate is accurate to the half-width the rule asks for (<= eps / 3) or used
  n_max terms; the step is the theory step of the estimate; eps-stopping stops;
* the exact improvement of every iteration is at least the finite-horizon lemma's guarantee for
  the step taken (an inequality that holds for any target: it checks the bookkeeping);
* the oracle run improves J and stops when G empties; same seed, same frame; bad input names
  the field.
"""

from __future__ import annotations

import numpy as np
import pytest

from cpi.envs import coverage_family, first_error_tree, shifted_coverage
from cpi.step_rules import advantage_bound, theory_step
from cpi.theorem import FRAME_COLUMNS, run_theorem_cpi, theorem_eps


def _mdp(p=0.4):
    return coverage_family(p, tau=0.1, n_actions=4, horizon=3, noise=0.05, headroom=2.0, seed=1)


def test_oracle_run_improves_until_G_is_empty_with_accurate_estimates():
    mdp = _mdp()
    res = run_theorem_cpi(mdp, "oracle", 0.1, theorem_eps("oracle", 0.1, 0.4), delta=0.1,
                          seed=0, max_iters=500)
    f = res.frame
    assert list(f.columns) == FRAME_COLUMNS
    assert res.stop_reason in ("empty_update_set", "advantage_below_2eps/3")
    # G empties once the level falls below tau (headroom 2): about half the gap is closable
    assert f["J_next"].iloc[-1] - res.J0 > 0.3 * (res.J_star - res.J0)
    assert np.all(f["improvement"] > 0)
    assert np.all((f["halfwidth"] <= f["eps"] / 3 + 1e-12) | (f["n_estimate"] >= 10**7))
    c_A = advantage_bound(mdp)
    for _, row in f.iterrows():
        expected = 0.0 if row["adv_est"] < 2 * row["eps"] / 3 else theory_step(
            row["adv_est"], mdp.horizon, c_A, row["eps"])
        assert row["alpha"] == pytest.approx(expected)
    # the lemma holds for any target, so this checks the bookkeeping (not the theorem)
    assert np.all(f["improvement"] >= f["guaranteed"] - 1e-12)
    assert np.all(f["q_rollouts"] == f["n_choose"] + f["n_estimate"])


def test_random_reset_on_a_shifted_family_runs_and_is_deterministic():
    mdp = shifted_coverage(0.3, tau=0.1, horizon=3, noise=0.05, seed=2)
    eps = theorem_eps("random", 0.1, 0.3)
    a = run_theorem_cpi(mdp, "random", 0.1, eps, seed=5, max_iters=20)
    b = run_theorem_cpi(mdp, "random", 0.1, eps, seed=5, max_iters=20)
    c = run_theorem_cpi(mdp, "random", 0.1, eps, seed=6, max_iters=20)
    np.testing.assert_array_equal(a.frame.to_numpy(), b.frame.to_numpy())
    assert not np.array_equal(a.frame["adv_est"].to_numpy(), c.frame["adv_est"].to_numpy())
    assert a.frame["J_next"].iloc[-1] > a.J0


def test_eps_stopping_stops_when_the_estimate_is_below_two_thirds_eps():
    res = run_theorem_cpi(_mdp(), "random", 0.1, eps=10.0, seed=0)  # eps far above any advantage
    assert res.stop_reason == "advantage_below_2eps/3" and len(res.frame) == 1
    assert res.frame["alpha"].iloc[0] == 0.0 and res.frame["improvement"].iloc[0] == 0.0


@pytest.mark.parametrize("kwargs,field", [
    ({"reset": "none"}, "reset"), ({"eps": 0.0}, "eps"), ({"delta": 1.0}, "delta"),
    ({"tau": 0.0}, "tau"), ({"n_first": 1}, "n_first"),
])
def test_bad_input_names_the_field(kwargs, field):
    args = {"reset": "oracle", "tau": 0.1, "eps": 0.1, **kwargs}
    with pytest.raises(ValueError, match=rf"^{field}:"):
        run_theorem_cpi(_mdp(), **args)
    with pytest.raises(ValueError, match=r"^mdp:"):
        run_theorem_cpi(first_error_tree(horizon=2), "oracle", 0.1, 0.1)
    with pytest.raises(ValueError, match=r"^reset:"):
        theorem_eps("none", 0.1, 0.1)
