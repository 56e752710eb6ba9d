"""GRPO: R fresh chains per prompt, one group, group-relative advantages.

Plan: one batched call samples R chains per prompt (each chain its own seed, prompt-major); every
chain trains on all of its tokens; one advantage group per prompt.

Default advantage: z-scores with the population std (``TrainConfig.adv_std``), REINFORCE,
seq-mean-token-mean (the package's CPU comparison, identical for every GRPO-family method).
Release (``--recipe paper``): the authors' GRPO baseline: one group of 8, advantage
``(r - mean) / (sample std (ddof 1) + 1e-6)`` (verl's GRPO estimator), PPO-clip 0.2, token-mean,
lr 5e-5, temperature 0.7.
"""

from __future__ import annotations

import time

from srpo.methods.base import Method, score_all
from srpo.methods.batch import Accounting, Batch, TrainingSample


def fresh_groups(ctx, problems) -> Batch:
    """R fresh chains per prompt in one call; one group per prompt, every token trained."""
    r = ctx.rollouts_per_prompt
    acc = Accounting()
    prompts = [ctx.codec.prompt_ids(p) for p in problems]
    t0 = time.perf_counter()
    flat = [
        g[0] for g in ctx.engine.generate([p for p in prompts for _ in range(r)], 1, ctx.generator)
    ]
    acc.seconds_fresh = time.perf_counter() - t0
    samples, first_round = [], []
    scores = score_all(ctx, [p for p in problems for _ in range(r)], flat)
    for i, prompt in enumerate(prompts):
        for chain, score in zip(flat[i * r : (i + 1) * r], scores[i * r : (i + 1) * r]):
            samples.append(
                TrainingSample(
                    prompt,
                    list(chain.response_ids),
                    [1] * len(chain.response_ids),
                    score.reward,
                    i,
                    False,
                    i,
                    correct=score.correct,
                )
            )
            first_round.append(score.reward)
    acc.chains_fresh = len(flat)
    acc.add_chains("base", flat)
    return Batch(samples, [], acc, first_round, 0, len(problems))


from srpo.methods import register_method  # noqa: E402  (the registry imports this module)

GRPO = register_method(
    Method(
        name="grpo",
        plan=fresh_groups,
        advantage="auto",
        losses=("reinforce", "ppo-clip"),
        localizer="none",
        defaults={"loss": "reinforce", "agg": "seq-mean-token-mean", "adv_std": "population"},
        release={
            "loss": "ppo-clip",
            "clip_eps": 0.2,
            "agg": "token-mean",
            "adv_std": "unbiased",
            "adv_eps": 1e-6,
            "lr": 5e-5,
            "temperature": 0.7,
        },
        summary="R fresh chains, one group, group z-scores",
    )
)
