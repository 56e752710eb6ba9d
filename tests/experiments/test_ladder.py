"""The ladder's knob family and entry point (issue 19; docs/ladder.md).

* ``test_knob_moves_p_reach``: p_reach of the tabular rung's initial policy, measured before any
  RL at the knob's two ends, is >= 1.5 decades apart, while the hard step's per-visit error rate
  is the same at both ends (fails if the knob moved the difficulty instead, or did not move p).
* ``test_p_reach_matches_sampling``: the exact p_reach equals the share of sampled chains that
  visit an improvable state (independent Monte Carlo reference).
"""

from __future__ import annotations

import numpy as np
import pytest

from experiments.ladder.family import DEFAULT_FAMILY, tabular_p_reach

pytestmark = pytest.mark.timeout(120)


def _hard_error(env) -> float:
    """Mean error probability of the initial policy at the hard step (clean prefix), over the
    env's problems that have it."""
    problems = [
        p
        for p in env.task.sample(400, np.random.default_rng(5))
        if env.task.hard_step_of(p) is not None
    ]
    prompts = np.array([env.mdp.prompt_ids(p) for p in problems])
    probs = np.exp(env.logits0)
    probs /= probs.sum(axis=1, keepdims=True)
    q = env.mdp.step_correct_probabilities(probs, prompts)
    return float(1.0 - q[:, DEFAULT_FAMILY.hard_step - 1].mean())


def test_knob_moves_p_reach():
    lo_f, hi_f = min(DEFAULT_FAMILY.hard_fractions), max(DEFAULT_FAMILY.hard_fractions)
    lo_env, hi_env = DEFAULT_FAMILY.tabular_env(lo_f), DEFAULT_FAMILY.tabular_env(hi_f)
    lo, hi = tabular_p_reach(lo_env)["p_reach"], tabular_p_reach(hi_env)["p_reach"]
    assert np.log10(hi.value / lo.value) >= 1.5, (lo, hi)
    assert np.log10(hi.lo / lo.hi) >= 1.4, (lo, hi)  # not a sampling accident
    assert 0.005 <= lo.value <= 0.02 and 0.5 <= hi.value <= 0.7
    # the per-visit difficulty of the hard step is the knob-independent part
    assert _hard_error(lo_env) == pytest.approx(_hard_error(hi_env), abs=0.03)
    assert 0.2 < _hard_error(hi_env) < 0.4


def test_p_reach_matches_sampling():
    """Sampled chains: the share that reach an improvable state clean equals p_reach."""
    from experiments.coverage_study.measure import readings_from_q
    from srpo.tabular import TablePolicy, TabularEngine

    env = DEFAULT_FAMILY.tabular_env(0.2)
    probs = np.exp(env.logits0)
    probs /= probs.sum(axis=1, keepdims=True)
    problems = env.task.sample(3000, np.random.default_rng(8))
    prompts = np.array([env.mdp.prompt_ids(p) for p in problems])
    q = env.mdp.step_correct_probabilities(probs, prompts)
    r = readings_from_q(q)
    exact = r["reach"].mean()
    # k*: the first improvable position of each problem; reached iff the chain is clean before it
    G = r["max_adv"] >= 0.1
    k_first = np.where(G.any(axis=1), G.argmax(axis=1), -1)
    engine = TabularEngine(env.mdp, TablePolicy(env.mdp, env.logits0))
    chains = [g[0] for g in engine.generate(prompts.tolist(), 1, np.random.default_rng(9))]
    true = env.mdp.correct_actions(prompts)
    hits = [
        k >= 0 and list(c.response_ids[:k]) == list(t[:k]) for c, t, k in zip(chains, true, k_first)
    ]
    n = len(hits)
    assert abs(np.mean(hits) - exact) < 4 * np.sqrt(exact * (1 - exact) / n)
