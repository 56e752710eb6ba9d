"""The p_reach knob family of the ladder (issue 19; docs/ladder.md section 3).

A problem is a chain of ``n_steps`` modular-arithmetic steps mod 10, every step "+1" but, on a
share ``hard_fraction`` of the problems, one *hard step* at position ``hard_step``: a
multiplication by 3, 7 or 9 (``srpo.tasks.ModularArithmeticTask.hard_fraction``). The warm
start's data (``srpo.warmstart``, ``confused_ops=("*",)``) confuse half of the multiplication
facts, each written with its one wrong value with probability ``confusion_prob``; every other
step errs with probability ``noise_error_rate``. So the per-visit difficulty of the hard step
(its error rate where it is asked) is the same at every setting: only how often it is asked
moves, and with it the theory's p_reach (the chance that a trajectory visits an improvable
state): about ``hard_fraction x P(the problem's fact is confused) x P(clean up to the step)``.

One warm start serves every setting: it is trained on problems of which half have the hard step
(at any position) and half have none (``warmstart_hard_fraction``; a model that never saw an
easy-only problem errs on those, which would make every problem improvable and pin p_reach). The tabular rung's initial policy is the warm start's *data*
distribution (``srpo.tabular.misconception_probabilities`` with the writer's confused facts).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

__all__ = ["LadderFamily", "DEFAULT_FAMILY", "QUICK_FAMILY", "tabular_p_reach"]


@dataclass(frozen=True)
class LadderFamily:
    """The knob family and its warm start.

    Attributes:
        n_steps: H, steps per chain.
        hard_step: 1-based position of the hard step (where a problem has one).
        hard_fractions: the settings: share of problems with the hard step (the knob).
        modulus, hard_operands: values mod ``modulus``; operands of the hard ``*``.
        confused_fraction, confusion_prob: share of the ``*`` facts confused in the warm-start
            data, and the probability a confused fact is written wrong (per-visit difficulty).
        noise_error_rate: per-step error probability of the other steps in the data.
        warmstart_hard_fraction: share of the warm start's problems with a hard step.
        warmstart: further ``srpo.warmstart.WarmStartConfig`` overrides (model size, steps).
    """

    n_steps: int = 6
    hard_step: int = 2
    hard_fractions: tuple[float, ...] = (0.02, 0.05, 0.12, 0.3, 1.0)
    modulus: int = 10
    hard_operands: tuple[int, ...] = (3, 7, 9)
    confused_fraction: float = 0.5
    confusion_prob: float = 0.6
    noise_error_rate: float = 0.01
    warmstart_hard_fraction: float = 0.5
    warmstart: dict = field(default_factory=lambda: {"steps": 1500})

    def __post_init__(self) -> None:
        if not 1 <= self.hard_step <= self.n_steps:
            raise ValueError(
                f"hard_step must lie in 1..n_steps={self.n_steps}; got {self.hard_step}"
            )
        for f in self.hard_fractions:
            if not 0.0 < float(f) <= 1.0:
                raise ValueError(f"hard_fractions must lie in (0, 1]; got {self.hard_fractions}")

    def task_options(self, hard_fraction: float) -> dict:
        """``TrainConfig.task_options`` of one setting (evaluation on hard problems only)."""
        return {
            "hard_steps": [self.hard_step],
            "hard_ops": ["*"],
            "hard_operands": list(self.hard_operands),
            "easy_operands": [1],
            "hard_fraction": float(hard_fraction),
            "eval_hard_only": True,
        }

    def task(self, hard_fraction: float):
        from srpo.tasks import ModularArithmeticTask

        return ModularArithmeticTask(
            n_steps=self.n_steps,
            modulus=self.modulus,
            ops=("+",),
            **{
                k: tuple(v) if isinstance(v, list) else v
                for k, v in self.task_options(hard_fraction).items()
            },
        )

    def warmstart_overrides(self) -> dict:
        """``TrainConfig.warmstart`` (the trainer adds n_steps, modulus and ops)."""
        return {
            "hard_steps": list(range(1, self.n_steps + 1)),
            "hard_ops": ["*"],
            "hard_operands": list(self.hard_operands),
            "easy_operands": [1],
            "confused_ops": ["*"],
            "confused_fraction": self.confused_fraction,
            "confusion_prob": self.confusion_prob,
            "noise_error_rate": self.noise_error_rate,
            "hard_fraction": self.warmstart_hard_fraction,
            "num_threads": 1,
            **self.warmstart,
        }

    def warmstart_config(self):
        from srpo.warmstart import WarmStartConfig

        return WarmStartConfig(
            **{
                **self.warmstart_overrides(),
                "n_steps": self.n_steps,
                "modulus": self.modulus,
                "ops": ("+",),
            }
        )

    def wrong_values(self) -> dict:
        """The warm start's confused facts ``{(left, op, operand): wrong value}``."""
        from srpo.warmstart import MisconceptionWriter

        return dict(MisconceptionWriter(self.warmstart_config()).wrong_value)

    def tabular_env(self, hard_fraction: float, eval_size: int = 256, eval_seed: int = 1234):
        """The tabular rung's env of one setting: the task's thought MDP, the warm-start data's
        policy, exact J on ``eval_size`` held-out problems that all have the hard step."""
        from srpo.tabular import arithmetic_env

        task = self.task(hard_fraction)
        problems = task.sample_eval(eval_size, np.random.default_rng(eval_seed))
        return arithmetic_env(
            task,
            self.wrong_values(),
            self.confusion_prob,
            self.noise_error_rate,
            problems,
            info={"hard_fraction": float(hard_fraction)},
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


DEFAULT_FAMILY = LadderFamily()
#: --quick: the two ends of the knob and a third point, a short warm start
QUICK_FAMILY = LadderFamily(
    n_steps=4,
    hard_fractions=(0.02, 0.2, 1.0),
    warmstart={"steps": 120, "n_layer": 1, "d_model": 32},
)


def tabular_p_reach(env, n_problems: int = 2000, seed: int = 0, tau: float = 0.1) -> dict:
    """p_reach, p_mass and the state reading of the env's initial policy on problems of the
    setting (not the hard-only evaluation set), exactly from the step probabilities
    (``experiments.coverage_study.measure.readings_from_q`` and ``model_readings``)."""
    from experiments.coverage_study.measure import model_readings

    problems = env.task.sample(n_problems, np.random.default_rng(seed))
    prompts = np.array([env.mdp.prompt_ids(p) for p in problems], dtype=np.int64)
    probs = np.exp(env.logits0 - env.logits0.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    q = env.mdp.step_correct_probabilities(probs, prompts)
    return model_readings(q, tau=tau, n_boot=200, seed=seed)
