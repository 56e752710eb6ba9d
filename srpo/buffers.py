"""Per-prompt training batches of the reset methods (kept import path; see ``srpo.methods``).

The batch logic moved into the method registry: ``srpo.methods.resets`` (GRPO groups, 1x4, 2x4,
1x8, the no-mask ablation, every reset method), ``srpo.methods.grpo`` and the other methods'
modules; the containers into ``srpo.methods.batch``. ``build_batch`` is the old entry point: the
reset plan on a tokenizer and a task, as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from srpo.methods.base import RolloutContext, TaskScorer, TokenizerCodec
from srpo.methods.batch import Accounting, Batch, ResetEvent, TrainingSample
from srpo.methods.resets import SPLITS, SplitSpec, reset_batch, split_spec

__all__ = ["SPLITS", "SplitSpec", "split_spec", "TrainingSample", "ResetEvent", "Accounting",
           "Batch", "build_batch"]


def build_batch(
    problems: list[Any],
    task: Any,
    engine: Any,
    tokenizer: Any,
    split: str,
    localizer: Any,
    rng: np.random.Generator,
    generator: Any,
    rollouts_per_prompt: int = 8,
    max_fresh_chains: int = 12,
    mask_prefix: bool = True,
    localization_offset: int = 0,
) -> Batch:
    """Sample and assemble one iteration's training batch (``srpo.methods.resets.reset_batch``).

    Args:
        problems: P problems of ``task``.
        task: grades responses (``grade``, or ``score`` -> (reward, correct)) and, if it has a
            verifier, finds first errors.
        engine: a ``srpo.engines.base.ThoughtEngine`` over the current policy.
        tokenizer: the policy's tokenizer (prompt encoding, thought decoding).
        split: one of ``SPLITS``; ``localizer=None`` forces plain GRPO.
        localizer: a ``srpo.localize`` localizer or None.
        rng: numpy Generator for random resets and localization fallbacks.
        generator: torch.Generator seeding every sampled chain.
        rollouts_per_prompt: training rollouts per prompt (R).
        max_fresh_chains: cap on fresh chains per prompt while looking for failures (>= R).
        mask_prefix: mask the copied prefix out of the loss (False = no-mask ablation).
        localization_offset: move every localized step this many thoughts earlier (floor 1).

    Returns:
        A ``Batch`` with R samples per prompt.
    """
    ctx = RolloutContext(
        engine=engine, scorer=TaskScorer(task), task=task,
        codec=TokenizerCodec(tokenizer, task, getattr(getattr(engine, "config", None), "delimiter", None)),
        rng=rng, generator=generator, localizer=None if split == "grpo" else localizer,
        rollouts_per_prompt=rollouts_per_prompt, max_fresh_chains=max_fresh_chains,
        mask_prefix=mask_prefix, localization_offset=localization_offset,
        split=split if localizer is not None else "grpo")
    return reset_batch(ctx, problems)
