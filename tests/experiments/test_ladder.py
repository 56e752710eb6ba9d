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


@pytest.mark.timeout(600)
def test_quick_end_to_end_resumes_and_draws(tmp_path):
    """``llm_ladder.py --quick``: every phase writes its files; ``train`` refuses without a
    prediction; the prediction predates every LM run; a rerun reuses every cell (no file is
    rewritten); ``compare.py --only ladder`` draws the figure from the summary."""
    import json

    from experiments import compare, llm_ladder

    out = tmp_path / "ladder"
    with pytest.raises(SystemExit, match="no prediction"):
        llm_ladder.run_train(llm_ladder.parse_args(["train", "--quick", "--out", str(out)]))
    assert llm_ladder.main(["--quick", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lm_runs"]["finished"] == summary["lm_runs"]["expected"] > 0
    fams = {r["hard_fraction"] for r in summary["predictions"]["tabular"]}
    assert len(fams) == 3 and {r["method"] for r in summary["lm"]} >= {"grpo", "oracle"}
    assert summary["predictions"]["tabular_sgd"] and summary["lm_sgd"]
    pred_time = (out / "predictions.json").stat().st_mtime
    runs = sorted((out / "lm").glob("*/*/metrics.parquet"))
    assert runs and all(r.stat().st_mtime > pred_time for r in runs)
    cells = {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*.parquet")}
    assert len(cells) == 3 * 2 * 4 + 2 * 2 + 3 * 2  # tabular Adam + tabular SGD + CPI
    assert llm_ladder.main(["--quick", "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in cells} == cells
    assert [r.stat().st_mtime for r in runs] == [
        r.stat().st_mtime for r in sorted((out / "lm").glob("*/*/metrics.parquet"))
    ]
    figs = tmp_path / "figs"
    assert compare.main(["--only", "ladder", "--ladder", str(out), "--out", str(figs)]) == 0
    assert (figs / "ladder.png").is_file() and (figs / "ladder.pdf").is_file()


def test_common_target_speedup_closed_form():
    """Linear curves: a method twice as fast reads 2; one that ends lower is compared at its
    own final score (GRPO reaches 0.3 at 30 rollouts, the method at 60: 0.5), not NaN."""
    import pandas as pd

    from experiments.ladder.summary import common_target_speedup

    x = np.arange(0, 101, 10.0)
    rows = []
    for seed in range(3):
        for method, slope, cap in (("grpo", 0.01, 1.0), ("fast", 0.02, 1.0), ("slow", 0.005, 0.3)):
            y = np.minimum(slope * x, cap) + 0.001 * seed
            rows += [
                {"method": method, "seed": seed, "iteration": i, "score": v, "rollouts": xi}
                for i, (xi, v) in enumerate(zip(x, y))
            ]
    curves = pd.DataFrame(rows)
    fast = common_target_speedup(curves, "fast", "grpo", "rollouts", n_boot=50)
    slow = common_target_speedup(curves, "slow", "grpo", "rollouts", n_boot=50)
    assert fast.value == pytest.approx(2.0, rel=1e-3) and fast.lo <= 2.0 <= fast.hi
    assert slow.value == pytest.approx(0.5, rel=0.02)
