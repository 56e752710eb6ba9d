"""The ladder's runs: sizes, the CPI and tabular rungs, the language model's run configurations.

Every cell is written as its own parquet file under ``<out>/cells/`` the moment it finishes, so a
killed run resumes without losing or duplicating rows (a cell whose file exists is skipped).

* CPI rung (``cpi_cell``): ``cpi.run_cpi`` on ``cpi.envs.coverage_family(p)`` (the coverage
  prediction's environment, ``experiments.coverage_study.prediction.run_cell``) at the setting's
  p_reach, reset rules none / random / approx (the setting's (beta, gamma)) / oracle, one
  constant step for all rules (``LadderSize.cpi_alpha``).
* tabular rung (``tabular_cell``): ``srpo.tabular.train_tabular`` on the family's thought MDP,
  score ``J_hard`` (exact success on held-out problems that have the hard step).
* LM rung (``lm_configs``): ``srpo.trainer.TrainConfig`` of every run, score ``J`` (greedy, on
  held-out problems that all have the hard step: ``eval_hard_only``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from experiments.ladder.family import DEFAULT_FAMILY, QUICK_FAMILY, LadderFamily

__all__ = [
    "LadderSize",
    "SIZES",
    "METHODS",
    "cpi_cell",
    "tabular_cell",
    "lm_configs",
    "cached_cell",
]

#: the LM and tabular methods; GRPO is every speed-up's comparator
METHODS = ("grpo", "rrpo", "srpo", "oracle")
#: CPI reset rule -> the common method name (GRPO's analogue: no reset)
CPI_NAMES = {"none": "grpo", "random": "rrpo", "approx": "srpo", "oracle": "oracle"}


@dataclass(frozen=True)
class LadderSize:
    """Sizes of one invocation (every rung runs ``seeds`` seeds at every setting).

    Attributes:
        name: ``quick`` / ``default``.
        family: the knob family (its ``hard_fractions`` are the settings).
        seeds: seeds per method and setting (tabular). lm_seeds: the same for the LM.
        tab_steps, tab_prompts: tabular iterations and prompts per iteration (8 rollouts each).
        lm_steps, lm_prompts: LM iterations and prompts per iteration (8 rollouts each).
        lm_eval_size, lm_eval_every: LM held-out greedy evaluation.
        lr, sgd_lr: Adam's learning rate and plain SGD's (the optimiser test), tabular.
        lm_lr, lm_sgd_lr: the same for the LM.
        cpi_seeds, cpi_budget, cpi_alpha, cpi_batch: the CPI rung.
        n_model, n_sampled, n_per_problem: the LM's pre-RL measurement.
        n_boot: bootstrap resamples of every interval.
        srpo_beta, srpo_gamma: the set localizer of the tabular and CPI SRPO: 1 - beta = 0.92
            and gamma = 1.00 are the LM self-localizer's pre-RL precision and recall measured on
            the family's first warm start (all problems with a hard step; before the switch to
            a half-easy warm start), fixed here so that the prediction needs no LM run.
    """

    name: str
    family: LadderFamily
    seeds: int
    tab_steps: int
    tab_prompts: int
    lm_steps: int
    lm_prompts: int
    lm_eval_size: int
    lm_eval_every: int
    lm_seeds: int = 5
    lr: float = 0.05
    sgd_lr: float = 100.0
    lm_lr: float = 1e-4
    lm_sgd_lr: float = 0.05
    cpi_seeds: int = 5
    cpi_budget: int = 20_000
    cpi_alpha: float = 0.2
    cpi_batch: int = 400
    n_model: int = 256
    n_sampled: int = 32
    n_per_problem: int = 4
    n_boot: int = 1000
    srpo_beta: float = 0.08
    srpo_gamma: float = 1.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["family"] = self.family.to_dict()
        return d


SIZES = {
    "quick": LadderSize(
        "quick",
        QUICK_FAMILY,
        seeds=2,
        tab_steps=6,
        tab_prompts=4,
        lm_steps=1,
        lm_prompts=2,
        lm_eval_size=4,
        lm_eval_every=1,
        lm_seeds=1,
        cpi_seeds=2,
        cpi_budget=1_500,
        cpi_batch=100,
        n_model=16,
        n_sampled=4,
        n_per_problem=2,
        n_boot=50,
    ),
    "default": LadderSize(
        "default",
        DEFAULT_FAMILY,
        seeds=5,
        tab_steps=60,
        tab_prompts=16,
        lm_steps=8,
        lm_prompts=4,
        lm_eval_size=64,
        lm_eval_every=2,
    ),
}


def cached_cell(path: Path, make) -> pd.DataFrame:
    """``make()`` once: its frame is written to ``path`` (atomically) and read back later."""
    if path.is_file():
        return pd.read_parquet(path)
    frame = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return frame


def cpi_cell(p: float, beta: float, gamma: float, seed: int, size: LadderSize) -> pd.DataFrame:
    """The four CPI reset rules at coverage ``p`` (module docstring): columns method, seed,
    iteration, score (J), rollouts (Q-rollouts), generated_tokens (environment steps)."""
    from experiments.coverage_study.prediction import run_cell

    f = run_cell(
        float(p), beta, gamma, "report", seed, size.cpi_alpha, size.cpi_batch, size.cpi_budget
    )
    names = {"none": "grpo", "random": "rrpo", "self": "srpo", "oracle": "oracle"}
    # row i + 1: J after update i at its cumulative cost; row 0: J before any update, cost 0
    after = pd.DataFrame(
        {
            "method": f["method"].map(names),
            "seed": seed,
            "iteration": f["iteration"] + 1,
            "score": f["J_next"],
            "rollouts": f["q_rollouts_cum"],
            "generated_tokens": f["env_steps_cum"],
        }
    )
    start = after.groupby("method", as_index=False).first()
    first_j = f.sort_values("iteration").groupby("method")["J"].first()
    start = start.assign(
        iteration=0,
        rollouts=0.0,
        generated_tokens=0.0,
        score=start["method"].map({names[k]: v for k, v in first_j.items()}),
    )
    return pd.concat([start, after], ignore_index=True).assign(p=float(p))


def tabular_cell(
    hard_fraction: float,
    method: str,
    seed: int,
    optimizer: str,
    beta: float,
    gamma: float,
    size: LadderSize,
) -> pd.DataFrame:
    """One tabular run: columns method, seed, optimizer, iteration, score (J_hard), rollouts,
    generated_tokens, and the realised localizer events' counts."""
    from srpo.tabular import TabularConfig, train_tabular

    env = size.family.tabular_env(hard_fraction)
    lr = size.lr if optimizer == "adamw" else size.sgd_lr
    cfg = TabularConfig(
        method=method,
        seed=seed,
        steps=size.tab_steps,
        prompts_per_step=size.tab_prompts,
        optimizer=optimizer,
        lr=lr,
        beta=beta,
        gamma=gamma,
        eval_every=max(1, size.tab_steps // 20),
    )
    frame, resets = train_tabular(env, cfg)
    frame = frame.dropna(subset=["J_hard"])
    return pd.DataFrame(
        {
            "method": method,
            "seed": seed,
            "optimizer": optimizer,
            "hard_fraction": float(hard_fraction),
            "iteration": frame["iteration"],
            "score": frame["J_hard"],
            "J": frame["J"],
            "rollouts": frame["rollouts"],
            "generated_tokens": frame["generated_tokens"],
        }
    )


def lm_configs(
    size: LadderSize,
    out: Path,
    methods=METHODS,
    seeds=None,
    fractions=None,
    optimizer: str = "adamw",
    threads: int = 1,
    cache_dir=None,
) -> list:
    """``TrainConfig`` of every LM run (setting-major, then seed, then method)."""
    from srpo.trainer import TrainConfig

    fam = size.family
    lr = size.lm_lr if optimizer == "adamw" else size.lm_sgd_lr
    configs = []
    for f in fractions if fractions is not None else fam.hard_fractions:
        for seed in range(size.lm_seeds) if seeds is None else seeds:
            for method in methods:
                tag = "" if optimizer == "adamw" else f"-{optimizer}"
                configs.append(
                    TrainConfig(
                        method=method,
                        split="1x4",
                        seed=seed,
                        steps=size.lm_steps,
                        prompts_per_step=size.lm_prompts,
                        rollouts_per_prompt=8,
                        lr=lr,
                        optimizer=optimizer,
                        task_steps=fam.n_steps,
                        task_modulus=fam.modulus,
                        task_ops=("+",),
                        task_options=fam.task_options(f),
                        warmstart=fam.warmstart_overrides(),
                        max_thoughts=fam.n_steps + 2,
                        eval_size=size.lm_eval_size,
                        eval_every=size.lm_eval_every,
                        num_threads=threads,
                        cache_dir=cache_dir,
                        out_dir=str(out / "lm" / f"f{f:g}" / f"{method}{tag}-s{seed}"),
                        resume=True,
                    )
                )
    return configs
