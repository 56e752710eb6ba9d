"""RL on a tabular policy with the language model's own method code: the ladder's middle rung.

``train_tabular(env, config)`` runs the phases of ``srpo.trainer`` with the registry's pieces,
unchanged:

1. problems: ``prompts_per_step`` problems from the task's seeded stream;
2. roll out: ``get_method(config.method).plan(ctx, problems)`` -- for ``grpo`` / ``rrpo`` /
   ``srpo`` / ``oracle`` the same ``srpo.methods.resets.reset_batch`` / ``grpo.fresh_groups``
   as the language model (fresh chains until a failure, the 12-chain cap, localize, reset, k
   suffixes, 1x4 / 2x4 / 1x8, the no-mask ablation), over a ``RolloutContext`` whose engine,
   codec, scorer and localizer are the tabular ones (``srpo.tabular``);
3. advantages: ``srpo.trainer.advantages_of`` (the registered estimator, z-scores per group);
4. update: ``srpo.update.PolicyUpdater`` -- the registered loss on
   ``srpo.logprobs.token_logprobs`` of the ``TablePolicy``, the same masks, aggregation, gradient
   clipping and optimizer (``srpo.setup.make_optimizer``: AdamW or SGD) -- then ``engine.sync``;
5. evaluate: the *exact* success probability of the sampling policy on fixed held-out problems
   (``env.evaluate``: no sampling noise).

``TabularEnv`` bundles a thought MDP, its task, the initial logits and the evaluation.
``TabularConfig`` holds the run's settings; ``train_config()`` is the ``srpo.config.TrainConfig``
the registry's functions read (its loss, aggregation, advantage and optimizer fields at the
language model's defaults unless set here).

Output: one row per iteration (0 = before any update): ``iteration``, ``rollouts`` and
``generated_tokens`` (cumulative; a token is a thought), ``fresh_chains``, ``J`` (exact held-out
success probability), ``J_hard`` (on the problems with a hard step, when the env has them),
``reset_rate``, ``adv_abs_mean``, ``grad_norm``, ``grad_signal_reset`` / ``grad_signal_base``; and
one row per reset event (``resets``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from srpo.tabular.engine import TabularEngine
from srpo.tabular.policy import PadTokenizer, TablePolicy
from srpo.tabular.seams import SetLocalizer, ThoughtCodec, ThoughtScorer

__all__ = ["TabularConfig", "TabularEnv", "train_tabular", "make_context", "RESET_COLUMNS"]

RESET_COLUMNS = (
    "iteration",
    "prompt_index",
    "n",
    "k",
    "source",
    "fallback",
    "first_error",
    "deviation",
    "clean",
    "n_suffixes",
    "suffix_successes",
)


@dataclass
class TabularEnv:
    """A thought MDP with its task, initial policy and exact evaluation.

    Attributes:
        mdp: ``ArithmeticThoughtMDP`` or ``TreeThoughtMDP``.
        task: the task (``sample``, ``first_error``, ``has_step_verifier``).
        logits0: (S, A) initial logits of the policy.
        evaluate: ``probs (S, A) -> {"J": ..., ...}``: exact held-out scores of a policy.
        info: free-form facts (family, knob values) copied into every row.
    """

    mdp: Any
    task: Any
    logits0: np.ndarray
    evaluate: Callable[[np.ndarray], dict]
    info: dict = field(default_factory=dict)


@dataclass
class TabularConfig:
    """One tabular run.

    Attributes:
        method: a registered single-prompt method (``grpo``, ``rrpo``, ``srpo``, ``oracle``,
            ``srpo-offset``, ``fixed-reset``).
        split: ``1x4`` / ``2x4`` / ``1x8``. mask_prefix: False = the no-mask ablation.
        seed: seeds the problem stream, the sampling and the resets.
        steps, prompts_per_step, rollouts_per_prompt, max_fresh_chains: the budget (as
            ``TrainConfig``).
        lr: learning rate (logit units per step for Adam). optimizer: ``adamw`` or ``sgd``.
        grad_clip: max global gradient norm (None: none).
        beta, gamma: the set localizer's false-discovery rate and recall (``srpo`` only).
        temperature: sampling temperature (1: the table's logits are the sampling logits).
        eval_every: evaluate every this many iterations (and at 0 and the end).
        loss, agg, adv_std: as ``TrainConfig`` (``auto``: the method's).
    """

    method: str = "srpo"
    split: str = "1x4"
    mask_prefix: bool = True
    seed: int = 0
    steps: int = 40
    prompts_per_step: int = 8
    rollouts_per_prompt: int = 8
    max_fresh_chains: int = 12
    lr: float = 0.05
    optimizer: str = "adamw"
    grad_clip: float | None = 1.0
    beta: float = 0.0
    gamma: float = 1.0
    temperature: float = 1.0
    eval_every: int = 1
    loss: str = "auto"
    agg: str = "auto"
    adv_std: str = "auto"

    def train_config(self):
        """The ``srpo.config.TrainConfig`` the registry's functions read."""
        from srpo.config import TrainConfig

        return TrainConfig(
            method=self.method,
            split=self.split,
            mask_prefix=self.mask_prefix,
            seed=self.seed,
            steps=self.steps,
            prompts_per_step=self.prompts_per_step,
            rollouts_per_prompt=self.rollouts_per_prompt,
            max_fresh_chains=self.max_fresh_chains,
            lr=self.lr,
            optimizer=self.optimizer,
            grad_clip=self.grad_clip,
            temperature=self.temperature,
            loss=self.loss,
            agg=self.agg,
            adv_std=self.adv_std,
            micro_batch_size=1 << 16,
            checkpoint_every=0,
            save_weights=False,
            eval_every=1,
        )


def _localizer(method, env: TabularEnv, config: TabularConfig):
    from srpo.localize import OracleLocalizer, RandomLocalizer

    kind = method.localizer
    if kind == "none":
        return None
    if kind == "random":
        return RandomLocalizer()
    if kind == "oracle":
        return OracleLocalizer(env.task)
    if kind == "self":
        return SetLocalizer(env.task, config.beta, config.gamma)
    if kind == "fixed":
        from srpo.localize import FixedPositionLocalizer

        position = getattr(config.train_config().options(), "position", None)
        return FixedPositionLocalizer(0 if position is None else position)
    raise ValueError(
        f"method: {method.name!r} needs a {kind!r} localizer, which the tabular "
        "rung does not provide"
    )


def make_context(env: TabularEnv, engine, config: TabularConfig, tc, rng, generator):
    """The ``RolloutContext`` of a tabular run (the registry's seams, tabular pieces)."""
    from srpo.methods import RolloutContext

    method = tc.method_spec
    return RolloutContext(
        engine=engine,
        codec=ThoughtCodec(env.mdp),
        scorer=ThoughtScorer(env.mdp),
        task=env.task,
        rng=rng,
        generator=generator,
        localizer=_localizer(method, env, config),
        options=tc.options(),
        rollouts_per_prompt=tc.rollouts_per_prompt,
        max_fresh_chains=tc.max_fresh_chains,
        mask_prefix=tc.mask_prefix,
        localization_offset=tc.localization_offset,
        split=tc.split,
    )


def _streams(seed: int):
    ss = np.random.SeedSequence([int(seed), 19]).spawn(3)
    return tuple(np.random.default_rng(s) for s in ss)


def _reset_rows(it: int, events) -> list[dict]:
    return [
        {
            "iteration": it,
            "prompt_index": e.prompt_index,
            "n": e.n,
            "k": e.k,
            "source": e.source,
            "fallback": e.fallback,
            "first_error": e.first_error,
            "deviation": e.deviation,
            "clean": e.clean,
            "n_suffixes": len(e.suffix_rewards),
            "suffix_successes": e.suffix_successes,
        }
        for e in events
    ]


def train_tabular(env: TabularEnv, config: TabularConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run one tabular RL run (module docstring); returns ``(metrics, resets)``."""
    from srpo.setup import make_optimizer
    from srpo.trainer import advantages_of
    from srpo.update import PolicyUpdater

    tc = config.train_config()
    method = tc.method_spec
    policy = TablePolicy(env.mdp, env.logits0)
    optimizer = make_optimizer([policy.table], tc)
    engine = TabularEngine(env.mdp, policy, tc.temperature)
    rng_problems, rng_reset, generator = _streams(config.seed)
    ctx = make_context(env, engine, config, tc, rng_reset, generator)
    updater = PolicyUpdater(
        policy,
        None,
        optimizer,
        tc,
        PadTokenizer(),
        loss_params=method.loss_params(tc, tc.options()),
        needs=method.needs,
    )
    totals = {"rollouts": 0, "generated_tokens": 0, "fresh_chains": 0}
    base = {
        "method": config.method,
        "seed": config.seed,
        "split": config.split,
        "optimizer": config.optimizer,
        **env.info,
    }
    rows = [{**base, "iteration": 0, **totals, **env.evaluate(engine.probs)}]
    resets = []
    for it in range(1, config.steps + 1):
        problems = env.task.sample(config.prompts_per_step, rng_problems)
        batch = method.plan(ctx, problems)
        cache = updater.precompute(batch.samples)
        arrays = batch.arrays()
        adv = advantages_of(method, tc, batch, arrays)
        upd = updater.update(batch.samples, adv, cache)
        engine.sync(policy)
        acc = batch.accounting
        totals["rollouts"] += len(batch.samples)
        totals["generated_tokens"] += acc.generated_tokens
        totals["fresh_chains"] += acc.chains_fresh
        row = {
            **base,
            "iteration": it,
            **totals,
            "reset_rate": batch.prompts_reset / batch.n_prompts,
            "train_reward": float(arrays["rewards"].mean()),
            "adv_abs_mean": float(np.abs(adv).mean()),
            "grad_norm": upd["grad_norm"],
            "grad_signal_reset": upd["grad_signal_reset"],
            "grad_signal_base": upd["grad_signal_base"],
        }
        if it % config.eval_every == 0 or it == config.steps:
            row.update(env.evaluate(engine.probs))
        rows.append(row)
        resets += _reset_rows(it, batch.events)
    frame = pd.DataFrame(rows)
    return frame, pd.DataFrame(resets, columns=list(RESET_COLUMNS))
