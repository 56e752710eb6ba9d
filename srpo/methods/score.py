"""SCoRe (Kumar et al., arXiv 2409.12917) as the paper's release runs it.

Plan: R / 2 pairs per prompt (4 at R = 8). The first attempt y1 is a fresh chain; the second
attempt y2 is always sampled from prompt + y1 + a hedged correction instruction ("there might be
an error ..."), and is then *trained under the original prompt* (the release's choice: the
correction context is not part of the trained sequence). Both attempts train on every token.

Reward (``srpo.advantages.score_shaped``), stage II (the default): R'(y1) = R(y1),
R'(y2) = R(y2) + alpha (R(y2) - R(y1)) with alpha = 10; stage I: R'(y1) = 0. KL in the reward: the
k1 estimator mean_t (log pi - log pi_ref) per sequence, times 0.01 on both attempts in stage II
(0.1 on y1 in stage I), subtracted. Advantage = the shaped sequence reward on every token: no
baseline, no normalisation. Release: PPO-clip, lr 5e-5, temperature 0.7.

Token accounting: y1 chains are ``base``; y2 chains (their correction context is a prompt, not
generated) are ``followup``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from srpo.methods.base import PPO_CLIP, Method, score_all
from srpo.methods.batch import Accounting, Batch, TrainingSample

#: the correction instruction appended after the first attempt (our paraphrase of SCoRe's)
CORRECTION_MESSAGE = (
    "\nThere might be an error in the solution above. Check each step, "
    "correct the error if there is one, and write the solution again.\n"
)


@dataclass(frozen=True)
class SCoReOptions:
    """Attributes:
    pairs: attempt pairs per prompt (None: R / 2).
    alpha: stage-II bonus on the improvement R(y2) - R(y1) (release 10).
    stage: 2 (shaping, the release's default) or 1 (R'(y1) = 0, KL 0.1 on y1).
    kl_coef: KL-in-reward weight (None: 0.01 in stage II, 0.1 on y1 in stage I).
    message: the correction instruction.
    """

    pairs: int | None = None
    alpha: float = 10.0
    stage: int = 2
    kl_coef: float | None = None
    message: str = CORRECTION_MESSAGE

    def __post_init__(self) -> None:
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2; got {self.stage}")
        if self.pairs is not None and self.pairs < 1:
            raise ValueError(f"pairs must be >= 1; got {self.pairs}")


def score_batch(ctx, problems) -> Batch:
    """R / 2 (first attempt, correction) pairs per prompt (module docstring)."""
    o = ctx.options if ctx.options is not None else SCoReOptions()
    n = o.pairs if o.pairs is not None else max(1, ctx.rollouts_per_prompt // 2)
    acc = Accounting()
    prompts = [ctx.codec.prompt_ids(p) for p in problems]
    t0 = time.perf_counter()
    first = [
        g[0] for g in ctx.engine.generate([p for p in prompts for _ in range(n)], 1, ctx.generator)
    ]
    contexts = [
        ctx.codec.followup_ids(prompts[j // n], c.response_ids, o.message)
        for j, c in enumerate(first)
    ]
    second = [g[0] for g in ctx.engine.generate(contexts, 1, ctx.generator)]
    acc.seconds_fresh = time.perf_counter() - t0
    samples, first_round = [], []
    owners = [problems[j // n] for j in range(len(first))]
    graded = score_all(ctx, owners + owners, list(first) + list(second))
    for j, (y1, y2) in enumerate(zip(first, second)):
        i = j // n
        for kind, chain, s in (
            ("attempt1", y1, graded[j]),
            ("attempt2", y2, graded[len(first) + j]),
        ):
            samples.append(
                TrainingSample(
                    prompts[i],
                    list(chain.response_ids),
                    [1] * len(chain.response_ids),
                    s.reward,
                    i,
                    False,
                    i,
                    correct=s.correct,
                    kind=kind,
                    pair_index=j,
                )
            )
            if kind == "attempt1":
                first_round.append(s.reward)
    acc.chains_fresh = len(first)
    acc.add_chains("base", first)
    acc.add_chains("followup", second)
    acc.chains_followup = len(second)
    return Batch(samples, [], acc, first_round, 0, len(problems))


def _params(config, options) -> dict:
    o = options if options is not None else SCoReOptions()
    kl = 0.01 if o.kl_coef is None else o.kl_coef
    return {"alpha": o.alpha, "stage": o.stage, "kl_coef": kl, "kl_coef_y1": o.kl_coef}


from srpo.methods import register_method  # noqa: E402  (the registry imports this module)

SCORE = register_method(
    Method(
        name="score",
        plan=score_batch,
        advantage="score_shaped",
        advantage_params=_params,
        losses=("ppo-clip", "reinforce"),
        options=SCoReOptions,
        defaults=dict(PPO_CLIP),
        release={**PPO_CLIP, "lr": 5e-5, "temperature": 0.7},
        needs=frozenset({"ref_logprobs"}),
        trl="the second attempt is sampled from a correction prompt but trained under the original "
        "prompt, and the reward carries a KL to the reference policy: TRL's rollout_func returns "
        "one prompt per row and its reward functions see no reference log-probs",
        summary="4 (attempt, correction) pairs; R'(y2) = R(y2) + 10 (R(y2) - R(y1)); KL in reward",
    )
)
