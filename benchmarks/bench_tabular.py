"""The tabular rung's sampler against a plain per-chain loop, in one run.

    python benchmarks/bench_tabular.py            # 2048 chains of the ladder's 6-step task

``srpo.tabular.TabularEngine.generate`` samples every chain of a call in one numpy pass per step
(states of all rows, inverse-CDF draws). The reference is the plain loop a first version would
write: one chain at a time, one step at a time, the state from ``step_states`` of that one chain
and ``Generator.choice`` over the row. Both sample from the same policy; the printed ratio is
reference seconds over engine seconds (median of ``--reps``), measured in the same run. The
chains differ (different uniforms), so the check printed alongside is the success rate of each
against the exact ``success_probability``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def plain_generate(mdp, probs, prompts, rng) -> list[list[int]]:
    """One chain and one step at a time (the reference)."""
    out = []
    for prompt in prompts:
        ops, true = mdp.problem_arrays(np.asarray([prompt]))
        written = np.zeros((1, mdp.H), dtype=np.int64)
        for h in range(mdp.H):
            state = mdp.step_states(ops, true, written, h)[0]
            written[0, h] = rng.choice(mdp.n_actions, p=probs[state])
        out.append(written[0].tolist())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chains", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    from experiments.ladder.family import DEFAULT_FAMILY
    from srpo.tabular import TablePolicy, TabularEngine

    env = DEFAULT_FAMILY.tabular_env(1.0)
    mdp = env.mdp
    policy = TablePolicy(mdp, env.logits0)
    engine = TabularEngine(mdp, policy)
    problems = env.task.sample(args.chains, np.random.default_rng(0))
    prompts = [mdp.prompt_ids(p) for p in problems]
    exact = float(mdp.success_probability(engine.probs, np.asarray(prompts)).mean())
    times = {"engine": [], "plain": []}
    rates = {}
    for rep in range(args.reps):
        t = time.perf_counter()
        chains = [g[0] for g in engine.generate(prompts, 1, np.random.default_rng(rep))]
        times["engine"].append(time.perf_counter() - t)
        rates["engine"] = np.mean([mdp.reward(p, c.response_ids) for p, c in zip(problems, chains)])
        t = time.perf_counter()
        plain = plain_generate(mdp, engine.probs, prompts, np.random.default_rng(rep))
        times["plain"].append(time.perf_counter() - t)
        rates["plain"] = np.mean([mdp.reward(p, c) for p, c in zip(problems, plain)])
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{args.chains} chains x {mdp.H} thoughts: engine {med['engine'] * 1e3:.1f} ms, plain "
        f"loop {med['plain'] * 1e3:.1f} ms, ratio plain/engine {med['plain'] / med['engine']:.1f}x"
    )
    print(
        f"success rate: engine {rates['engine']:.3f}, plain {rates['plain']:.3f}, exact {exact:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
