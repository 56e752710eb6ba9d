"""The coverage family of the synthetic task: one hard step whose position is the knob.

A problem is a chain of ``n_steps`` modular-arithmetic steps (``srpo.tasks.ModularArithmeticTask``)
mod 10: every step is "+1" except one, the *hard step*, a multiplication by 3, 7 or 9 (units mod
10, so that, like "+1", it is a bijection: a single wrong value can never turn right again). The warm start
(``srpo.warmstart``, ``confused_ops=("*",)``) puts misconceptions on multiplication facts only: a
fraction ``confused_fraction`` of the ``*`` facts is written with one fixed wrong value with
probability ``confusion_prob`` in the training data. The warm-started policy therefore errs mostly
at the hard step, with a per-step error rate that does not depend on where the step sits, and it is
trained on hard steps at every position, so one warm start serves every setting.

A *setting* fixes the hard step at position ``j``. In a failed chain the first error is then
mostly at ``j``, so the state reading of coverage (docs/compare.md: the share of a failed chain's
reset positions at or before its first error) is about ``j / n_steps``: an early hard step gives a
small p, a late one a large p, with the same wrong step. ``experiments/coverage_study/measure.py``
measures it (and the trajectory reading) before any RL.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from srpo.tasks import ModularArithmeticTask

__all__ = ["FamilyConfig", "DEFAULT_FAMILY", "QUICK_FAMILY"]


@dataclass(frozen=True)
class FamilyConfig:
    """The task family and its warm start.

    Attributes:
        n_steps: H, steps per chain (every setting has the same length).
        positions: hard-step positions of the settings (1-based), one setting each.
        modulus: values live in ``0..modulus-1``.
        easy_ops, hard_ops: operators of the other steps and of the hard step.
        hard_operands: operands of the hard step.
        easy_operands: operands of the other steps. ``(1,)``: the easy steps need no look-up
            in the question (the tiny model miscopied the operands of some positions of 10-step
            chains with random operands, which put errors there whatever the hard step).
        confused_fraction: fraction of the hard operator's facts that are confused in the
            warm-start data (``srpo.warmstart.WarmStartConfig.confused_fraction``).
        confusion_prob: probability that a confused fact is written with its wrong value.
        noise_error_rate: extra i.i.d. per-step error probability of the warm-start data.
        warmstart: further ``srpo.warmstart.WarmStartConfig`` overrides (model size, steps, ...);
            ``num_threads`` defaults to 1 here so that the cache key, hence the model, does not
            depend on the machine.
        stages: warm-start stages, each a dict of overrides on top of ``warmstart``; stage k
            continues training the model of stage k-1 (``WarmStartConfig.init``). Empty: one stage.
    """

    n_steps: int = 10
    positions: tuple[int, ...] = (1, 3, 6, 10)
    modulus: int = 10
    easy_ops: tuple[str, ...] = ("+",)
    hard_ops: tuple[str, ...] = ("*",)
    hard_operands: tuple[int, ...] = (3, 7, 9)
    easy_operands: tuple[int, ...] = (1,)
    confused_fraction: float = 0.5
    confusion_prob: float = 0.6
    noise_error_rate: float = 0.01
    warmstart: dict = field(default_factory=dict)
    stages: tuple[dict, ...] = ()

    def __post_init__(self) -> None:
        if self.n_steps < 1:
            raise ValueError(f"n_steps must be >= 1; got {self.n_steps}")
        if not self.positions:
            raise ValueError("positions must name at least one hard-step position; got ()")
        for j in self.positions:
            if not 1 <= int(j) <= self.n_steps:
                raise ValueError(f"positions must lie in 1..n_steps={self.n_steps}; got "
                                 f"{self.positions}")
        if set(self.easy_ops) & set(self.hard_ops):
            raise ValueError(f"easy_ops {self.easy_ops} and hard_ops {self.hard_ops} must not "
                             "overlap (the hard step must be recognisable)")

    def task(self, position: int | None = None) -> ModularArithmeticTask:
        """The RL task of one setting (hard step at ``position``), or the warm-start mixture
        (``None``: the hard step at a uniformly random position)."""
        steps = tuple(range(1, self.n_steps + 1)) if position is None else (int(position),)
        return ModularArithmeticTask(n_steps=self.n_steps, modulus=self.modulus,
                                     ops=self.easy_ops, hard_steps=steps, hard_ops=self.hard_ops,
                                     hard_operands=self.hard_operands,
                                     easy_operands=self.easy_operands)

    def task_options(self, position: int) -> dict:
        """``srpo.trainer.TrainConfig.task_options`` of one setting."""
        return {"hard_steps": [int(position)], "hard_ops": list(self.hard_ops),
                "hard_operands": list(self.hard_operands), "easy_operands": list(self.easy_operands)}

    def warmstart_overrides(self) -> dict:
        """``TrainConfig.warmstart``: the family's warm start (the trainer adds n_steps, modulus
        and ops); trained on hard steps at every position, in ``stages``."""
        base = self._stage_overrides()
        init = None
        for stage in self.stages:
            over = {**base, **stage}
            if init is not None:
                over["init"] = init
            init = {**over, "n_steps": self.n_steps, "modulus": self.modulus,
                    "ops": list(self.easy_ops)}
        if init is None:
            return base
        init.pop("n_steps"), init.pop("modulus"), init.pop("ops")
        return init

    def _stage_overrides(self) -> dict:
        return {
            "hard_steps": list(range(1, self.n_steps + 1)),
            "hard_ops": list(self.hard_ops),
            "hard_operands": list(self.hard_operands),
            "easy_operands": list(self.easy_operands),
            "confused_ops": list(self.hard_ops),
            "confused_fraction": self.confused_fraction,
            "confusion_prob": self.confusion_prob,
            "noise_error_rate": self.noise_error_rate,
            "num_threads": 1,
            **self.warmstart,
        }

    def warmstart_config(self):
        """The ``srpo.warmstart.WarmStartConfig`` the trainer builds for this family."""
        from srpo.warmstart import WarmStartConfig

        over = self.warmstart_overrides()
        return WarmStartConfig(**{**over, "n_steps": self.n_steps, "modulus": self.modulus,
                                  "ops": self.easy_ops})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("positions", "easy_ops", "hard_ops", "hard_operands", "easy_operands"):
            d[k] = list(d[k])
        return d


DEFAULT_FAMILY = FamilyConfig(warmstart={"steps": 2000})
#: the --quick family: short chains, a tiny model trained briefly, the two extreme settings.
#: Its numbers only show that the pipeline runs end to end.
QUICK_FAMILY = FamilyConfig(n_steps=4, positions=(1, 4), warmstart={
    "n_layer": 1, "d_model": 32, "n_head": 2, "steps": 120, "batch_size": 16, "eval_size": 16})
