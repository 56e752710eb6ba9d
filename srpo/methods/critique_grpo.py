"""Critique-GRPO (Zhang et al., arXiv 2506.03106) as the paper's release runs it.

Plan: R (8) fresh chains per prompt. For each, a refinement is sampled from a prompt holding the
question, the previous solution and a binary critique (the verifier's verdict: "correct" /
"incorrect"). Buffer: the best refinement (a correct one if any; ties: the first) plus the first
R - 1 originals; the remaining original and the other refinements are generated but not trained
(counted as ``discarded`` / ``followup`` tokens). The refinement is trained under the original
prompt.

Advantage (``srpo.advantages.group_mean``, Dr.GRPO): A = r - mean of the R samples, no std.
Loss (``srpo.loss.critique_shaped``): originals -A * ratio (no clipping); refinement tokens
-A * f(pi) with f(p) = p / (p + 0.1) (the policy-shaping function, off-policy samples);
aggregation: sum over tokens / a fixed response length (``seq-mean-token-sum-norm``, the
response cap). Release: lr 1e-6, temperature 1.0, entropy bonus 0.001.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from srpo.methods.base import Method, score_all
from srpo.methods.batch import Accounting, Batch, TrainingSample

#: the critique shown with the previous solution (our wording; the verdict is revealed)
CRITIQUE_MESSAGE = (
    "\nCritique: the final answer above is {verdict}. Using this critique, "
    "write a refined solution.\n"
)


@dataclass(frozen=True)
class CritiqueOptions:
    """Attributes:
    shaping_gamma: f(p) = p / (p + gamma) on refinement tokens (release 0.1).
    message: the critique template (``{verdict}``: "correct" or "incorrect").
    """

    shaping_gamma: float = 0.1
    message: str = CRITIQUE_MESSAGE

    def __post_init__(self) -> None:
        if not self.shaping_gamma > 0:
            raise ValueError(f"shaping_gamma must be > 0; got {self.shaping_gamma}")
        if "{verdict}" not in self.message:
            raise ValueError("message must contain '{verdict}'")


def best_refinement(scores) -> int:
    """Index of the best refinement: a correct one if any, else the highest reward (first on
    ties)."""
    return max(range(len(scores)), key=lambda i: (scores[i].correct, scores[i].reward, -i))


def critique_batch(ctx, problems) -> Batch:
    """R originals + their refinements per prompt; train on R - 1 originals + the best
    refinement (module docstring)."""
    o = ctx.options if ctx.options is not None else CritiqueOptions()
    r = ctx.rollouts_per_prompt
    acc = Accounting()
    prompts = [ctx.codec.prompt_ids(p) for p in problems]
    t0 = time.perf_counter()
    originals = [
        g[0] for g in ctx.engine.generate([p for p in prompts for _ in range(r)], 1, ctx.generator)
    ]
    scores = score_all(ctx, [problems[j // r] for j in range(len(originals))], originals)
    contexts = [
        ctx.codec.followup_ids(
            prompts[j // r],
            c.response_ids,
            o.message.format(verdict="correct" if s.correct else "incorrect"),
        )
        for j, (c, s) in enumerate(zip(originals, scores))
    ]
    refined = [g[0] for g in ctx.engine.generate(contexts, 1, ctx.generator)]
    refined_scores = score_all(ctx, [problems[j // r] for j in range(len(refined))], refined)
    acc.seconds_fresh = time.perf_counter() - t0
    samples = []
    for i in range(len(problems)):
        block = range(i * r, (i + 1) * r)
        for j in list(block)[: r - 1]:
            c = originals[j]
            samples.append(
                TrainingSample(
                    prompts[i],
                    list(c.response_ids),
                    [1] * len(c.response_ids),
                    scores[j].reward,
                    i,
                    False,
                    i,
                    correct=scores[j].correct,
                    kind="original",
                )
            )
        ref_scores = [refined_scores[j] for j in block]
        best = best_refinement(ref_scores)
        c = refined[i * r + best]
        samples.append(
            TrainingSample(
                prompts[i],
                list(c.response_ids),
                [1] * len(c.response_ids),
                ref_scores[best].reward,
                i,
                False,
                i,
                correct=ref_scores[best].correct,
                kind="refinement",
            )
        )
        acc.add_chains("base", [originals[j] for j in list(block)[: r - 1]])
        acc.add_chains("discarded", [originals[i * r + r - 1]])
    acc.chains_fresh = len(originals)
    acc.chains_discarded = len(problems)
    acc.add_chains("followup", refined)
    acc.chains_followup = len(refined)
    first_round = [s.reward for s in scores]
    return Batch(samples, [], acc, first_round, 0, len(problems))


def _loss_params(config, options) -> dict:
    return {"gamma": 0.1 if options is None else options.shaping_gamma}


from srpo.methods import register_method  # noqa: E402  (the registry imports this module)

CRITIQUE = register_method(
    Method(
        name="critique-grpo",
        plan=critique_batch,
        advantage="group_mean",
        losses=("critique-shaped",),
        options=CritiqueOptions,
        loss_params=_loss_params,
        defaults={"loss": "critique-shaped", "agg": "seq-mean-token-sum-norm"},
        release={
            "loss": "critique-shaped",
            "agg": "seq-mean-token-sum-norm",
            "lr": 1e-6,
            "temperature": 1.0,
            "entropy_coef": 0.001,
        },
        trl="refinements are sampled from a critique prompt but trained under the original prompt "
        "with the shaping f(pi) = pi / (pi + 0.1) on their tokens: TRL's loss has one form for "
        "every row",
        summary="8 chains + refinements after a binary critique; best refinement + 7 originals; "
        "Dr.GRPO; f(p) = p/(p+0.1)",
    )
)
