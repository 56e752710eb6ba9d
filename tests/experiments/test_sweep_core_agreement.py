"""The sweep's thin wrappers agree with the core (`cpi.run_cpi`, `cpi.true_policy_advantage`).

`experiments/sweep/exact_cpi.py` re-assembles one exact CPI iteration and
`experiments/sweep/estimators.py` exposes the per-sample Kakade-Langford terms; both must compute
what `cpi` computes, or the sweep would measure a different algorithm from the one it documents.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import cpi  # noqa: E402
from cpi.envs import coverage_family, garnet  # noqa: E402
from experiments.sweep.estimators import advantage_problem, advantage_terms  # noqa: E402
from experiments.sweep.exact_cpi import exact_iteration  # noqa: E402


def _instances():
    yield coverage_family(p=0.1, tau=0.1, headroom=3.0, seed=1)
    yield garnet(n_states=6, n_actions=3, branching=3, horizon=4, seed=2)


@pytest.mark.parametrize("rule,beta,gamma", [("random", 0, 1), ("oracle", 0, 1), ("approx", 0.3, 0.7)])
@pytest.mark.parametrize("step", ["theory", "line_search"])
def test_exact_iteration_matches_run_cpi(rule, beta, gamma, step):
    for mdp in _instances():
        tau = 0.05
        pi0 = cpi.envs.initial_policy(mdp)
        opts = dict(step=step, max_iters=1, policy0=pi0)
        if rule == "approx":
            opts.update(beta=beta, gamma=gamma)
        frame = cpi.run_cpi(mdp, reset=rule, mode="exact", tau=tau, seed=0, **opts).frame
        it = exact_iteration(mdp, pi0, rule, tau, step=step, beta=beta, gamma=gamma)
        assert it.J_before == pytest.approx(frame["J"].iloc[0], abs=1e-12)
        assert it.alpha == pytest.approx(frame["alpha"].iloc[0], rel=1e-9, abs=1e-12)
        assert it.J_after == pytest.approx(frame["J"].iloc[0] + frame["improvement"].iloc[0],
                                           abs=1e-10)


@pytest.mark.parametrize("reset", ["random", "oracle"])
def test_advantage_terms_mean_matches_exact_policy_advantage(reset):
    mdp = coverage_family(p=0.2, tau=0.1, headroom=2.0, noise=0.2, seed=3)
    pi0 = cpi.envs.initial_policy(mdp)
    prob = advantage_problem(mdp, pi0, tau=0.1)
    select = np.ones_like(prob.G, dtype=np.float64) if reset == "random" else prob.G.astype(float)
    V, Q = cpi.evaluate(mdp, pi0)
    target = cpi.greedy_policy(mdp, Q)
    exact = cpi.true_policy_advantage(mdp, pi0, target, reset=reset, tau=0.1)
    rng, rng_sel = (np.random.default_rng(s) for s in (11, 12))
    terms = advantage_terms(mdp, prob, select, 40_000, rng, rng_sel).terms
    se = terms.std(ddof=1) / np.sqrt(len(terms))
    assert abs(terms.mean() - exact) < 5 * se
