"""The theory's constants, pinned by their effect (issue 16): a plausible wrong value must fail here.

* CPI-RR's accuracy eps_RR = tau p (``cpi.theorem.theorem_eps``): RR must resolve the *diluted*
  signal tau p, so (a) while the diluted signal is there (the clean family's RR advantage is
  headroom tau p > tau p) the eps-stopping rule A_hat < 2 eps / 3 must not stop it, and (b) its
  per-iteration sample size must be what accuracy eps/3 = tau p / 3 costs, z^2 Var / (tau p / 3)^2
  with the *exact* per-term variance -- which grows like 1/p^2. eps = tau sqrt(p) (p for p^2 in
  the sample size) or eps = tau (p dropped) stop RR at once on a signal it could resolve and spend
  20-400x too few samples per iteration; eps = tau p^2 spends p^-1 x too many.
* Kakade & Langford's step alpha = A / (4 H^2 R_max) (``cpi.step_rules.paper_step``): its
  purpose is to be safe, i.e. the finite-horizon lemma's guaranteed improvement
  H m (alpha A - 2 alpha^2 (H - 1) c_A) at that step is positive on every instance (it is, since
  the reward span is at most 2 R_max). With H instead of H^2 the step is H times larger and the
  guarantee turns negative from H = 3 on.

The expected values are written out here (tau p, 4 H^2 R_max), not read from the code under test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cpi.envs import (  # noqa: E402
    combination_lock,
    concave_fork,
    coverage_family,
    planted_garnet,
    shifted_coverage,
)
from cpi.step_rules import advantage_bound, guaranteed_improvement, paper_step  # noqa: E402
from cpi.theorem import run_theorem_cpi, theorem_eps  # noqa: E402
from experiments.sweep.families import exact_problem  # noqa: E402
from experiments.sweep.moments import term_moments  # noqa: E402

TAU = 0.1


def _clean(p: float, horizon: int = 3):
    return coverage_family(p, TAU, n_actions=4, horizon=horizon, noise=0.05, headroom=2.0, seed=3)


@pytest.mark.parametrize("p", [0.05, 0.1])
def test_rr_accuracy_lets_it_resolve_the_diluted_signal_tau_p(p):
    """RR's exact advantage here is headroom tau p = 2 tau p: with eps = tau p it estimates it to
    tau p / 3, stays above the stopping threshold 2 tau p / 3 and improves J."""
    mdp = _clean(p)
    signal = exact_problem(mdp, TAU).signal(exact_problem(mdp, TAU).weights("random"))
    assert signal == pytest.approx(2 * TAU * p)
    res = run_theorem_cpi(mdp, "random", TAU, theorem_eps("random", TAU, p), seed=1, max_iters=3)
    f = res.frame
    assert res.stop_reason == "max_iters", res.stop_reason  # not eps-stopped on a live signal
    assert (f["alpha"] > 0).all() and f["J_next"].iloc[-1] > res.J0


def test_rr_samples_per_iteration_are_what_accuracy_tau_p_over_3_costs():
    """First iteration's estimation sample size against z^2 Var / (tau p / 3)^2 with the exact
    per-term variance; the search doubles n, so it lands within [1, 2] x that (with slack for the
    sampled variance and a chooser that is not yet exactly greedy)."""
    z2 = norm.ppf(1 - 0.1 / 2) ** 2
    ratios = []
    for p in (0.05, 0.2):
        mdp = _clean(p)
        prob = exact_problem(mdp, TAU)
        _, var = term_moments(mdp, prob.policy, prob.coef, prob.weights("random"))
        expected = z2 * var / (TAU * p / 3) ** 2
        f = run_theorem_cpi(
            mdp, "random", TAU, theorem_eps("random", TAU, p), delta=0.1, seed=2, max_iters=2
        ).frame
        ratios.append(f["n_estimate"].iloc[0] / expected)
    assert all(0.6 <= r <= 3.0 for r in ratios), ratios


def test_caro_accuracy_is_tau():
    mdp = _clean(0.2)
    f = run_theorem_cpi(
        mdp, "oracle", TAU, theorem_eps("oracle", TAU, 0.2), seed=0, max_iters=2
    ).frame
    assert f["eps"].iloc[0] == pytest.approx(TAU)


SAFETY_CASES = [
    ("coverage", lambda H: coverage_family(0.2, TAU, horizon=H, noise=0.1, headroom=2.0)),
    ("shifted", lambda H: shifted_coverage(0.1, TAU, horizon=H)),
    ("planted", lambda H: planted_garnet(0.1, TAU, horizon=H, seed=1)),
    ("lock", lambda H: combination_lock(1, TAU, horizon=H)),
    ("concave", lambda H: concave_fork(0.2, TAU, horizon=H)),
]


@pytest.mark.parametrize("family,make", SAFETY_CASES, ids=[c[0] for c in SAFETY_CASES])
@pytest.mark.parametrize("H", [3, 6, 10])
def test_kl_step_keeps_the_lemmas_guarantee_positive(family, make, H):
    """alpha = A / (4 H^2 R_max) at the exact RR and CARO advantages of pi_0: the package's
    finite-horizon lemma then guarantees a positive improvement (it needs alpha <
    A / (2 (H - 1) c_A), c_A = H span, span <= 2 R_max)."""
    mdp = make(H)
    prob = exact_problem(mdp, TAU)
    c_A = advantage_bound(mdp)
    for rule in ("random", "oracle"):
        w = prob.weights(rule)
        if w.sum() <= 0:
            continue
        adv = prob.signal(w)
        alpha = paper_step(adv, H, mdp.r_max)
        guarantee = guaranteed_improvement(adv, alpha, H, c_A, float(w.sum()))
        assert guarantee > 0, (family, H, rule, guarantee)


def test_kl_step_guarantee_is_not_vacuous_on_the_concave_family():
    """Where J bends down, the K&L step's exact improvement is at least the lemma's guarantee and
    at least Theorem 1's exact-advantage bound A^2 m / (8 H R_max)."""
    from cpi.envs import initial_policy
    from cpi.evaluation import evaluate, greedy_policy, value

    mdp = concave_fork(0.2, TAU, horizon=6)
    pol = initial_policy(mdp)
    _, Q = evaluate(mdp, pol)
    tgt = greedy_policy(mdp, Q)
    prob = exact_problem(mdp, TAU)
    adv = prob.signal(prob.weights("random"))
    alpha = paper_step(adv, mdp.horizon, mdp.r_max)
    gain = value(mdp, pol + alpha * (tgt - pol)) - value(mdp, pol)
    lemma = guaranteed_improvement(adv, alpha, mdp.horizon, advantage_bound(mdp), 1.0)
    assert gain >= lemma > 0
    assert gain >= adv**2 / (8 * mdp.horizon * mdp.r_max)
    assert np.isfinite(gain)
