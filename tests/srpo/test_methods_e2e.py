"""Every method end to end on the warm-started tiny CPU model: it learns, and it accounts for
every generated token.

One short seeded run per method (``STEPS`` iterations x 8 prompts x 8 terminal rollouts, lr
``LR``, greedy J on 128 held-out problems before and after). SCoRe and Critique-GRPO sample from
a follow-up prompt, so their runs use the follow-up warm-start stage (``srpo.warmstart
.followup_stage``), as ``llm_srpo.py`` does for them. Token accounting: every engine call made
while a method's plan runs is counted (sampled tokens of every chain, localization replies), and
must equal the batch's ``Accounting.generated_tokens`` at every step, and the cumulative
``generated_tokens`` column must equal their sum.

Sizes: chosen on a calibration over seeds 0, 1, 2 (16 steps x 8 prompts, lr 1e-4): every method
rose on every seed, by 0.05 to 0.17 in J (SCoRe and Critique-GRPO from the follow-up stage's
lower start, 0.37). At lr 3e-4 RRPO and srpo-offset fell on one seed of three, and SCoRe on the
default warm start fell on all three (its second attempts were garbage: the reason for the
follow-up stage). ``KNOWN_NOT_RISING`` would list a method that does not rise at this size, with
the reason; its test then asserts the opposite, so that a change is noticed.
"""

from __future__ import annotations

import dataclasses

import pytest

import srpo.methods as registry
from srpo.config import TrainConfig
from srpo.methods import COMPARISON_METHODS

STEPS, PROMPTS, LR, SEED = 16, 8, 1e-4, 0
FOLLOWUP = ("score", "critique-grpo")
#: method -> why it does not learn at this size (the test then expects J not to rise)
KNOWN_NOT_RISING: dict[str, str] = {}


class Counter:
    def __init__(self):
        self.on = False
        self.tokens = 0
        self.per_step: list[int] = []


@pytest.fixture
def counted(monkeypatch):
    """Count every token the engine generates while a plan runs (not the evaluation's)."""
    from srpo.engines.hf import RolloutEngine

    counter = Counter()
    rollout, complete = RolloutEngine.rollout, RolloutEngine.complete_seeded

    def counted_rollout(self, requests, temperature=None):
        out = rollout(self, requests, temperature)
        if counter.on:
            counter.tokens += sum(c.n_generated for group in out for c in group)
        return out

    def counted_complete(self, prompts, *args, **kwargs):
        out = complete(self, prompts, *args, **kwargs)
        if counter.on:
            counter.tokens += sum(len(r) for r in out)
        return out

    monkeypatch.setattr(RolloutEngine, "rollout", counted_rollout)
    monkeypatch.setattr(RolloutEngine, "complete_seeded", counted_complete)
    for name, method in list(registry.METHODS.items()):

        def plan(ctx, problems, _plan=method.plan):
            counter.on, before = True, counter.tokens
            try:
                batch = _plan(ctx, problems)
            finally:
                counter.on = False
            counter.per_step.append((counter.tokens - before, batch.accounting.generated_tokens))
            return batch

        monkeypatch.setitem(registry.METHODS, name, dataclasses.replace(method, plan=plan))
    return counter


def _config(method, tmp_path):
    warmstart = {}
    if method in FOLLOWUP:
        from srpo.setup import warm_start_config
        from srpo.warmstart import followup_stage

        warmstart = followup_stage(warm_start_config(TrainConfig(out_dir="unused")))
    return TrainConfig(
        method=method,
        steps=STEPS,
        prompts_per_step=PROMPTS,
        lr=LR,
        seed=SEED,
        eval_size=128,
        eval_every=STEPS,
        checkpoint_every=0,
        save_weights=False,
        out_dir=str(tmp_path),
        warmstart=warmstart,
    )


@pytest.mark.slow
@pytest.mark.parametrize("method", COMPARISON_METHODS)
def test_method_learns_and_counts_every_generated_token(method, tmp_path, counted):
    from srpo.trainer import train

    df = train(_config(method, tmp_path))
    assert len(counted.per_step) == STEPS
    for engine_tokens, accounted in counted.per_step:
        assert engine_tokens == accounted > 0
    assert int(df.generated_tokens.iloc[-1]) == sum(t for t, _ in counted.per_step)
    parts = (
        "tokens_base",
        "tokens_parent",
        "tokens_discarded",
        "tokens_suffix",
        "tokens_localization",
        "tokens_followup",
        "tokens_branch",
    )
    assert int(df.generated_tokens.iloc[-1]) == int(sum(df[c].iloc[-1] for c in parts))
    j0, j1 = float(df.J.iloc[0]), float(df.J.iloc[-1])
    if method in KNOWN_NOT_RISING:
        assert j1 <= j0, f"{method} now learns at this size ({j0} -> {j1}): update the docs"
    else:
        assert j1 > j0, f"{method}: J did not rise ({j0} -> {j1})"
