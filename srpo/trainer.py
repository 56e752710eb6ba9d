"""The RL loop: GRPO, RRPO, SRPO and oracle-reset training with one configuration dataclass.

One iteration (``train``):

1. draw ``prompts_per_step`` problems: a seeded stream of synthetic problems, or the next batch of
   an epoch over the task file (``srpo.data.EpochSampler``);
2. build the batch (``srpo.buffers.build_batch``) under ``rollouts_per_prompt`` rollouts per prompt:
   ``grpo`` = plain groups, ``rrpo`` = random resets, ``srpo`` = self-localized resets,
   ``oracle`` = resets at the step verifier's first error; generation runs in batches under a
   token budget, every reset group of the step in one batch;
3. z-score rewards within groups (``srpo.group_advantages``);
4. the policy update, in ``mini_batches`` optimizer steps (prompts split evenly; the release: 4),
   each accumulated over micro-batches capped in sequences and tokens, with the prefix-masked loss
   (``srpo.masked_pg_loss``) on log-probs computed in chunks (``srpo.logprobs``); optionally
   PPO-clip over several passes and a k3 KL penalty to the initial policy;
5. log a metrics row (``srpo.metrics.METRIC_COLUMNS`` plus phase times, tokens and peak memory)
   to ``metrics.jsonl``; every ``checkpoint_every`` iterations save model, optimizer, RNG and
   sampler states and all rows so far (``checkpoint.pt``, its key in ``checkpoint.json``) and the
   trained weights in Hugging Face form (``adapter/`` for LoRA: loadable by peft and vLLM;
   ``model/`` otherwise), so that a killed run resumes (``resume=True``) with no lost or
   duplicated rows.

At the end ``metrics.parquet``, ``resets.parquet`` (one row per reset parent), ``run_info.json``
and the final ``adapter/`` (or ``model/``) are written to ``out_dir``; ``config.json`` is written
at the start. On CPU, one seed gives identical metrics (fixed thread count, deterministic
algorithms, every random stream seeded from ``seed``).

Task profiles: the limits that depend on the task default to ``"auto"`` and are resolved in
``TrainConfig.__post_init__`` (``config.json`` records the resolved values): the synthetic task
keeps the tiny model's small limits (``SYNTHETIC_PROFILE``), a task file gets the release's
(``RELEASE_PROFILE``). ``PAPER_RECIPE`` is the paper's whole optimisation recipe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from srpo.advantages import group_advantages
from srpo.buffers import SPLITS, build_batch
from srpo.localize import LOCALIZATION_FALLBACKS, LOCALIZATION_PROMPTS, make_localizer
from srpo.loss import AGG_MODES, gradient_signal, kl_k3, masked_pg_loss
from srpo.metrics import METRIC_COLUMNS, RESET_COLUMNS, nanmean, reset_metrics

__all__ = [
    "METHODS", "LOCALIZER_OF", "AUTO", "SYNTHETIC_PROFILE", "RELEASE_PROFILE", "PAPER_RECIPE",
    "ConfigError", "CheckpointMismatch", "TrainConfig", "train", "load_policy", "build_task",
    "checkpoint_compatibility",
]

METHODS = ("grpo", "rrpo", "srpo", "oracle")
LOCALIZER_OF = {"grpo": "none", "rrpo": "random", "srpo": "self", "oracle": "oracle"}
LOSSES = ("reinforce", "ppo-clip")
#: enters ``run_key``: bump when the update rule or the sampled trajectories change, so that old
#: checkpoints are not resumed.
#: (2: log pi at the sampling temperature, seeded LoRA initialisation; 3: thoughts end by decoded
#: text, a capped thought no longer ends the chain, the release's localization parsing, mini-batches)
TRAINER_VERSION = 3

AUTO = "auto"

#: Limits of the synthetic task with the tiny warm-started model (the published CPU runs).
SYNTHETIC_PROFILE = {
    "steps": 40,
    "max_thoughts": 8,
    "max_thought_tokens": 24,
    "max_response_tokens": None,  # resolved to max_thoughts * max_thought_tokens: never binds
    "max_model_len": 2048,
    "localization_max_new_tokens": 12,
    "localization_top_p": 1.0,
    "localization_prompt": "compact",
    "localization_stop_at_boxed": True,
    "grad_checkpointing": False,
    "micro_batch_tokens": None,
}

#: The release's limits, for a task file and a real model.
RELEASE_PROFILE = {
    "max_thoughts": 20,
    "max_thought_tokens": 256,
    "max_response_tokens": 5120,
    "max_model_len": 8192,
    "localization_max_new_tokens": 4096,
    "localization_top_p": None,  # resolved to the rollout top_p ("top_p kept")
    "localization_prompt": "release",
    "localization_stop_at_boxed": False,
    "grad_checkpointing": True,
    "micro_batch_tokens": 16384,
}

#: ``--recipe paper``: the paper's optimisation and sampling settings (LLM_METHOD.md).
PAPER_RECIPE = {
    "lora_rank": 64,
    "lora_alpha": 64,
    "lora_target_modules": "all-linear",
    "lr": 5e-5,
    "weight_decay": 0.01,
    "grad_clip": 1.0,
    "prompts_per_step": 32,
    "rollouts_per_prompt": 8,
    "mini_batches": 4,
    "temperature": 0.7,
    "top_p": 0.95,
    "epochs": 2,
    "loss": "reinforce",
    "agg": "seq-mean-token-mean",
    "split": "1x4",
}

#: fields that change memory or speed only (not the trajectory): left out of the run key, so a
#: run resumes after they change
_NOT_IN_KEY = ("steps", "epochs", "out_dir", "resume", "checkpoint_every", "device", "cache_dir",
               "num_threads", "micro_batch_size", "micro_batch_tokens", "gen_batch_tokens",
               "logprob_chunk_tokens", "grad_checkpointing", "save_weights")


class ConfigError(ValueError):
    """A bad TrainConfig value; ``field`` names the field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


class CheckpointMismatch(ValueError):
    """``out_dir`` holds a checkpoint of another configuration."""


@dataclass
class TrainConfig:
    """Everything one RL run needs. Every field is recorded in ``config.json``.

    Fields marked *auto* default to ``"auto"``: the task's profile value (``SYNTHETIC_PROFILE`` for
    the synthetic task, ``RELEASE_PROFILE`` for a task file), resolved when the config is built.

    Method:
        method: ``grpo`` (no resets), ``rrpo`` (random reset step), ``srpo`` (the policy localizes
            the first error of its own failed chain), ``oracle`` (the step verifier's first error).
        split: rollout layout of the reset methods: ``1x4`` (paper default: 4 base chains + 4
            suffixes of one parent), ``2x4`` (two parents x 4 suffixes) or ``1x8``. Ignored by grpo.
        mask_prefix: mask the copied prefix out of the loss; False = the no-mask ablation.

    Budget and optimisation:
        steps: iterations (*None*: synthetic 40; task file ``epochs`` x problems // prompts).
        epochs: passes over the task file when ``steps`` is None (release: 2).
        prompts_per_step: prompts per iteration (paper: 32).
        rollouts_per_prompt: training rollouts per prompt (paper: 8).
        max_fresh_chains: cap on fresh chains per prompt while looking for failures (paper: 12).
        lr: AdamW learning rate (constant; the same for every method). Paper: 5e-5.
        weight_decay: AdamW weight decay (paper: 0.01).
        grad_clip: max global gradient norm (None: no clipping). Paper: 1.0.
        loss: ``reinforce`` (paper default: -A * mean log pi, no ratio) or ``ppo-clip``.
        clip_eps: PPO clip epsilon (``ppo-clip`` only).
        updates_per_step: optimizer passes over each batch (``ppo-clip``; 1 for ``reinforce``).
        mini_batches: optimizer updates per iteration, prompts split into this many equal parts
            (paper: 4 x 64 sequences; updates 2.. are slightly off-policy, uncorrected).
        agg: loss aggregation, ``seq-mean-token-mean`` (paper) or ``token-mean``.
        adv_std: advantage normalisation: ``population`` (paper), ``unbiased`` or ``none``.
        kl_coef: weight of the k3 KL penalty to the initial policy (paper: 0).

    Memory (none of these changes the loss):
        dtype: ``auto`` (bfloat16 on CUDA, float32 on CPU), ``bfloat16``, ``float16``, ``float32``.
        grad_checkpointing: recompute activations in the backward (*auto*: on for a task file).
        gen_batch_tokens: generation batch budget, rows x (context + most new tokens); None:
            from the CUDA card's free memory (no cap on CPU).
        micro_batch_size: sequences per forward/backward pass.
        micro_batch_tokens: padded tokens per forward/backward pass (*auto*: synthetic no cap,
            task file 16384).
        logprob_chunk_tokens: positions per chunk of the output layer when taking log-probs.

    Generation:
        temperature, top_p: rollout sampling (paper: 0.7, 0.95). The loss, the PPO ratio, the
            KL and the gradient signal use log pi at the same temperature (logits / temperature).
        max_thoughts: cap on thoughts per chain (*auto*: 8 / release 20).
        max_thought_tokens: cap on tokens per thought; a capped thought is kept and the chain
            goes on (*auto*: 24 / 256).
        max_response_tokens: a thought starts only if the response could not pass this
            (*auto*: never binding / 5120).
        max_prompt_tokens: longer training prompts are dropped (counted in ``run_info.json``).
        max_model_len: the same rule on prompt + response, and a cap on localization replies
            (*auto*: 2048 / 8192).
        max_new_tokens: hard cap on sampled tokens per chain (None: none).
        localization_temperature: temperature of the self-localization reply (*auto*: 0.3; 0.0
            with split 1x8, as the release).
        localization_top_p: its nucleus (*auto*: 1.0 / the rollout top_p).
        localization_max_new_tokens: cap on the reply length (*auto*: 12 / 4096).
        localization_prompt: ``compact`` or ``release`` (*auto*: compact / release).
        localization_stop_at_boxed: stop the reply at its first box (*auto*: True / False).
        localization_fallback: an unparsable reply resets at ``step1`` (release) or ``random``.

    Task and model:
        task: ``synthetic`` (chained modular arithmetic with a step verifier) or a path to a
            ``.jsonl`` / ``.parquet`` file (``srpo.data``), trained on in full, epoch by epoch.
        task_steps, task_modulus, task_ops: the synthetic task's H, modulus and operators.
        question_field, answer_field: field names in the task and eval files (None: detected).
        eval_task: a held-out file of problems for ``J`` (task files).
        eval_split: fraction of the task file held out for ``J`` instead (0: none).
        model: a local Hugging Face model directory, or None for the tiny model warm-started by
            ``srpo.warmstart`` (loaded from its cache when present).
        lora_rank: wrap the model in a LoRA adapter of this rank (None: train all weights).
        lora_alpha: LoRA scaling numerator (None: = lora_rank; paper: 64).
        lora_target_modules: peft target modules (paper: all linear layers).
        warmstart: overrides of ``srpo.warmstart.WarmStartConfig`` fields for the tiny model
            (the task fields always come from this config).
        cache_dir: warm-start cache root (None: ``srpo.warmstart.default_cache_dir()``).

    Evaluation:
        eval_size: at most this many evaluation problems (synthetic: drawn with ``eval_seed``).
            Without ``eval_task`` or ``eval_split`` a task file is evaluated on a seeded subset of
            its own problems (``run_info.json`` says so: not held out).
        eval_every: evaluate (greedy pass@1) every this many iterations, and at 0 and the end.
        eval_seed: seed of the evaluation set, separate from training's stream.

    Run:
        seed: seeds the problem stream, the sampling and the random resets.
        device: ``cpu`` or ``cuda``.
        num_threads: torch CPU threads (fixed for determinism; 1 lets parallel jobs share cores).
        out_dir: where metrics, resets, checkpoints, weights and config go.
        checkpoint_every: save a checkpoint every this many iterations (0: never).
        resume: continue from ``out_dir/checkpoint.pt`` when it exists.
        save_weights: export the trained weights (``adapter/`` or ``model/``) at each checkpoint
            and at the end.
    """

    method: str = "srpo"
    split: str = "1x4"
    mask_prefix: bool = True
    steps: int | None = None
    epochs: int = 2
    prompts_per_step: int = 8
    rollouts_per_prompt: int = 8
    max_fresh_chains: int = 12
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    loss: str = "reinforce"
    clip_eps: float = 0.2
    updates_per_step: int = 1
    mini_batches: int = 1
    agg: str = "seq-mean-token-mean"
    adv_std: str = "population"
    kl_coef: float = 0.0
    dtype: str = "auto"
    grad_checkpointing: bool | str = AUTO
    gen_batch_tokens: int | None = None
    micro_batch_size: int = 64
    micro_batch_tokens: int | None | str = AUTO
    logprob_chunk_tokens: int = 1024
    temperature: float = 0.7
    top_p: float = 0.95
    max_thoughts: int | str = AUTO
    max_thought_tokens: int | str = AUTO
    max_response_tokens: int | None | str = AUTO
    max_prompt_tokens: int = 2048
    max_model_len: int | None | str = AUTO
    max_new_tokens: int | None = None
    localization_temperature: float | str = AUTO
    localization_top_p: float | str = AUTO
    localization_max_new_tokens: int | str = AUTO
    localization_prompt: str = AUTO
    localization_stop_at_boxed: bool | str = AUTO
    localization_fallback: str = "step1"
    task: str = "synthetic"
    task_steps: int = 6
    task_modulus: int = 10
    task_ops: tuple[str, ...] = ("+", "-", "*")
    question_field: str | None = None
    answer_field: str | None = None
    eval_task: str | None = None
    eval_split: float = 0.0
    model: str | None = None
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_target_modules: str = "all-linear"
    warmstart: dict = field(default_factory=dict)
    cache_dir: str | None = None
    eval_size: int = 128
    eval_every: int = 5
    eval_seed: int = 10_007
    seed: int = 0
    device: str = "cpu"
    num_threads: int = 1
    out_dir: str = "runs/llm/run"
    checkpoint_every: int = 5
    resume: bool = True
    save_weights: bool = True

    @property
    def is_synthetic(self) -> bool:
        return self.task == "synthetic"

    def __post_init__(self) -> None:
        self.task_ops = tuple(self.task_ops)
        profile = SYNTHETIC_PROFILE if self.is_synthetic else RELEASE_PROFILE
        for name, value in profile.items():
            if name != "steps" and getattr(self, name) == AUTO:
                setattr(self, name, value)
        if self.localization_temperature == AUTO:
            self.localization_temperature = 0.0 if self.split == "1x8" else 0.3
        if self.localization_top_p is None:
            self.localization_top_p = self.top_p
        if (self.max_response_tokens is None and self.is_synthetic
                and isinstance(self.max_thoughts, int) and isinstance(self.max_thought_tokens, int)
                and self.max_thoughts > 0 and self.max_thought_tokens > 0):
            self.max_response_tokens = self.max_thoughts * self.max_thought_tokens
        if self.steps is None and self.is_synthetic:
            self.steps = SYNTHETIC_PROFILE["steps"]
        self._validate()

    def _validate(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ConfigError(name, f"{name} {message}")

        checks = [
            ("method", self.method, METHODS),
            ("split", self.split, SPLITS[1:]),
            ("loss", self.loss, LOSSES),
            ("agg", self.agg, AGG_MODES),
            ("adv_std", self.adv_std, ("population", "unbiased", "none")),
            ("device", self.device.split(":")[0], ("cpu", "cuda")),
            ("dtype", self.dtype, ("auto", "float32", "bfloat16", "float16")),
            ("localization_prompt", self.localization_prompt, LOCALIZATION_PROMPTS),
            ("localization_fallback", self.localization_fallback, LOCALIZATION_FALLBACKS),
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                fail(name, f"must be one of {allowed}; got {value!r}")
        minimums = {"steps": 0, "epochs": 1, "prompts_per_step": 1, "rollouts_per_prompt": 2,
                    "max_fresh_chains": 1, "updates_per_step": 1, "mini_batches": 1,
                    "eval_size": 1, "eval_every": 1, "micro_batch_size": 1, "num_threads": 1,
                    "max_thoughts": 1, "max_thought_tokens": 1, "max_prompt_tokens": 1,
                    "localization_max_new_tokens": 1, "logprob_chunk_tokens": 1,
                    "checkpoint_every": 0, "task_steps": 1, "task_modulus": 2}
        optional = {"steps", "micro_batch_tokens", "gen_batch_tokens", "max_response_tokens",
                    "max_model_len", "max_new_tokens", "lora_rank"}
        for name in list(minimums) + sorted(optional - set(minimums)):
            value = getattr(self, name)
            if value is None and name in optional:
                continue
            minimum = minimums.get(name, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                fail(name, f"must be an integer >= {minimum}{' or None' if name in optional else ''}"
                           f"; got {value!r}")
        for name in ("lr", "weight_decay", "kl_coef", "clip_eps", "temperature",
                     "localization_temperature", "eval_split"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                fail(name, f"must be a finite number; got {value!r}")
        if not self.lr > 0:
            fail("lr", f"must be > 0; got {self.lr}")
        for name in ("weight_decay", "kl_coef", "clip_eps", "temperature",
                     "localization_temperature"):
            if getattr(self, name) < 0:
                fail(name, f"must be >= 0; got {getattr(self, name)}")
        if self.grad_clip is not None and not (self.grad_clip > 0 and math.isfinite(self.grad_clip)):
            fail("grad_clip", f"must be > 0 or None; got {self.grad_clip}")
        for name in ("top_p", "localization_top_p"):
            if not 0 < getattr(self, name) <= 1:
                fail(name, f"must be in (0, 1]; got {getattr(self, name)}")
        if not 0 <= self.eval_split < 1:
            fail("eval_split", f"must be in [0, 1); got {self.eval_split}")
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            fail("lora_alpha", f"must be > 0 or None; got {self.lora_alpha}")
        if self.max_fresh_chains < self.rollouts_per_prompt:
            fail("max_fresh_chains", f"must be >= rollouts_per_prompt = {self.rollouts_per_prompt}; "
                                     f"got {self.max_fresh_chains}")
        if self.mini_batches > self.prompts_per_step:
            fail("mini_batches", f"must be <= prompts_per_step = {self.prompts_per_step}; "
                                 f"got {self.mini_batches}")
        if self.loss == "reinforce" and self.updates_per_step != 1:
            fail("updates_per_step", "must be 1 with loss='reinforce' (on-policy)")
        if self.method == "oracle" and not self.is_synthetic:
            fail("method", "'oracle' needs a task with a step verifier (task='synthetic')")
        if self.is_synthetic and (self.eval_task is not None or self.eval_split):
            fail("eval_task", "and eval_split apply to task files only (the synthetic task draws "
                              "its evaluation set with eval_seed)")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["task_ops"] = list(self.task_ops)
        return d

    def run_key(self) -> str:
        """Hash of the settings that define the trajectory (not steps, paths, memory knobs)."""
        d = self.to_dict()
        for k in _NOT_IN_KEY:
            d.pop(k)
        d["trainer_version"] = TRAINER_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------
# Setup helpers
# ------------------------------------------------------------------------------------------------


def _subset(problems: list, size: int, seed: int) -> list:
    if len(problems) <= size:
        return list(problems)
    keep = np.sort(np.random.default_rng(seed).permutation(len(problems))[:size])
    return [problems[int(i)] for i in keep]


def build_task(config: TrainConfig):
    """``(train_task, eval_problems, eval_source)`` for the configured task.

    ``eval_source`` says where the evaluation problems come from: ``synthetic`` (drawn with
    ``eval_seed``), ``eval_task`` (a separate file), ``eval_split`` (held out of the task file) or
    ``train`` (a seeded subset of the training problems: not held out).
    """
    from srpo.data import read_problems
    from srpo.tasks import DatasetTask, ModularArithmeticTask

    if config.is_synthetic:
        task = ModularArithmeticTask(n_steps=config.task_steps, modulus=config.task_modulus,
                                     ops=config.task_ops)
        eval_problems = task.sample(config.eval_size, np.random.default_rng(config.eval_seed))
        return task, eval_problems, "synthetic"
    fields = {"question_field": config.question_field, "answer_field": config.answer_field}
    problems = read_problems(config.task, **fields)
    if config.eval_task is not None:
        eval_problems = _subset(read_problems(config.eval_task, **fields), config.eval_size,
                                config.eval_seed)
        source = "eval_task"
    elif config.eval_split > 0:
        n_held = int(round(config.eval_split * len(problems)))
        if not 1 <= n_held < len(problems):
            raise ConfigError("eval_split", f"eval_split {config.eval_split} of {len(problems)} "
                                            "problems leaves no held-out or no training problem")
        order = np.random.default_rng(config.eval_seed).permutation(len(problems))
        held = set(int(i) for i in order[:n_held])
        eval_problems = _subset([problems[i] for i in sorted(held)], config.eval_size,
                                config.eval_seed)
        problems = [p for i, p in enumerate(problems) if i not in held]
        source = "eval_split"
    else:
        eval_problems = _subset(problems, config.eval_size, config.eval_seed)
        source = "train"
    return DatasetTask(problems), eval_problems, source


def load_policy(config: TrainConfig, progress: Callable | None = None):
    """``(model, tokenizer, model_path)``: the configured model, or the warm-started tiny model.

    ``progress`` is passed to ``srpo.warmstart.warm_start`` (phase progress of a warm start).
    """
    from srpo.model import load_model, resolve_dtype

    if config.model is None:
        if not config.is_synthetic:
            raise ConfigError("model", "model: the tiny warm-started model only knows the "
                                       "synthetic task; pass a local Hugging Face model for a "
                                       "task file")
        from srpo.warmstart import WarmStartConfig, warm_start

        ws = WarmStartConfig(**{"num_threads": config.num_threads, **config.warmstart,
                                "n_steps": config.task_steps, "modulus": config.task_modulus,
                                "ops": config.task_ops})
        path = warm_start(ws, cache_dir=config.cache_dir, progress=progress)
    else:
        path = Path(config.model)
    model, tokenizer = load_model(
        path, device=config.device, lora_rank=config.lora_rank,
        dtype=resolve_dtype(config.dtype, config.device), lora_alpha=config.lora_alpha,
        lora_target_modules=config.lora_target_modules,
        gradient_checkpointing=bool(config.grad_checkpointing),
    )
    model.eval()
    return model, tokenizer, str(path)


def _set_determinism(config: TrainConfig) -> None:
    torch.set_num_threads(config.num_threads)
    if config.device == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _pad(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    out = rows[0].new_zeros((len(rows), width))
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


def _trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _micro_batches(indices: list[int], lengths: list[int], max_seqs: int,
                   max_tokens: int | None) -> list[list[int]]:
    """Consecutive chunks of ``indices`` with at most ``max_seqs`` sequences and at most
    ``max_tokens`` padded tokens (chunk size x longest sequence); a longer sequence is alone."""
    chunks: list[list[int]] = []
    current: list[int] = []
    widest = 0
    for i in indices:
        width = max(widest, lengths[i])
        if current and (len(current) >= max_seqs
                        or (max_tokens is not None and (len(current) + 1) * width > max_tokens)):
            chunks.append(current)
            current, width = [], lengths[i]
        current.append(i)
        widest = width
    if current:
        chunks.append(current)
    return chunks


def _mini_batches(samples, n_mini: int) -> list[list[int]]:
    """Sample indices split into ``n_mini`` parts by prompt (a prompt's groups stay together)."""
    if n_mini == 1:
        return [list(range(len(samples)))]
    prompts = sorted({s.prompt_index for s in samples})
    parts = np.array_split(np.array(prompts), n_mini)
    owner = {int(p): j for j, part in enumerate(parts) for p in part}
    out: list[list[int]] = [[] for _ in range(n_mini)]
    for i, s in enumerate(samples):
        out[owner[s.prompt_index]].append(i)
    return [part for part in out if part]


# ------------------------------------------------------------------------------------------------
# One update
# ------------------------------------------------------------------------------------------------


def _policy_update(model, ref_model, optimizer, samples, advantages, config, tokenizer):
    """Loss, backward and optimizer step(s) on one batch. Returns a dict of statistics.

    The batch is split into ``config.mini_batches`` parts by prompt, one optimizer step each; a
    part's loss is accumulated over micro-batches weighted so that the sum equals the part's
    aggregated loss. ``ref_model`` None with ``kl_coef > 0`` uses the LoRA model with its adapter
    disabled as the reference.
    """
    from srpo.logprobs import token_logprobs

    pad = tokenizer.pad_token_id or 0
    # log pi of the policy that sampled the rollouts: logits / the sampling temperature (as in
    # verl); top_p is not applied. Greedy sampling (temperature 0) falls back to 1.
    temperature = config.temperature if config.temperature > 0 else 1.0
    masks = [torch.tensor(s.loss_mask, dtype=torch.float32) for s in samples]
    n_tok = [int(m.sum()) for m in masks]
    lengths = [len(s.prompt_ids) + len(s.response_ids) for s in samples]
    adv = torch.as_tensor(advantages, dtype=torch.float32)

    def logprobs(model_, idx, grad):
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx:
            lp = token_logprobs(model_, [samples[i].prompt_ids for i in idx],
                                [samples[i].response_ids for i in idx], config.device,
                                temperature=temperature, pad_id=pad,
                                chunk_tokens=config.logprob_chunk_tokens)
        width = max(1, max(x.shape[0] for x in lp))
        return _pad(lp, width), _pad([masks[i] for i in idx], width).to(lp[0].device)

    def reference(idx):
        if ref_model is not None:
            return logprobs(ref_model, idx, grad=False)[0]
        with model.disable_adapter():
            return logprobs(model, idx, grad=False)[0]

    minis = _mini_batches(samples, config.mini_batches)
    plan = [_micro_batches(part, lengths, config.micro_batch_size, config.micro_batch_tokens)
            for part in minis]
    old, ref = {}, {}
    if config.loss == "ppo-clip" or config.kl_coef > 0:
        for m, chunks in enumerate(plan):
            for c, idx in enumerate(chunks):
                if config.loss == "ppo-clip":
                    old[m, c] = logprobs(model, idx, grad=False)[0]
                if config.kl_coef > 0:
                    ref[m, c] = reference(idx)
    stats = {"loss": 0.0, "kl": 0.0, "clip_frac": 0.0, "grad_norm": float("nan")}
    losses, kls, clips, norms = [], [], [], []
    g_reset, g_base = [], []
    params = [p for _, p in _trainable(model)]
    training = model.training
    if config.grad_checkpointing:
        model.train()  # transformers checkpoints blocks only in training mode (no dropout here)
    try:
        for epoch in range(config.updates_per_step):
            for m, (part, chunks) in enumerate(zip(minis, plan)):
                total_seqs = max(sum(n_tok[i] > 0 for i in part), 1)
                total_toks = max(sum(n_tok[i] for i in part), 1)
                optimizer.zero_grad(set_to_none=True)
                loss_total, kl_total, clip_total = 0.0, 0.0, 0.0
                for c, idx in enumerate(chunks):
                    lp, mask = logprobs(model, idx, grad=True)
                    a = adv[idx].to(lp.device)
                    if config.agg == "seq-mean-token-mean":
                        weight = sum(n_tok[i] > 0 for i in idx) / total_seqs
                    else:
                        weight = sum(n_tok[i] for i in idx) / total_toks
                    kw = {}
                    if config.loss == "ppo-clip":
                        kw = {"old_logprobs": old[m, c], "clip": config.clip_eps}
                    pg, st = masked_pg_loss(lp, a, mask, agg=config.agg, return_stats=True, **kw)
                    loss = pg
                    if config.kl_coef > 0:
                        kl = kl_k3(lp, ref[m, c], mask, agg=config.agg)
                        loss = loss + config.kl_coef * kl
                        kl_total += float(kl.detach()) * weight
                    (loss * weight).backward()
                    loss_total += float(loss.detach()) * weight
                    clip_total += st["clip_frac"] * weight
                    if epoch == 0:
                        g = gradient_signal(lp.detach(), a, mask).tolist()
                        for i, gi in zip(idx, g):
                            (g_reset if samples[i].is_reset_group else g_base).append(gi)
                if config.grad_clip is not None:
                    norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                else:
                    norm = torch.linalg.vector_norm(
                        torch.stack([p.grad.norm() for p in params if p.grad is not None]))
                optimizer.step()
                if epoch == 0:
                    losses.append(loss_total)
                    kls.append(kl_total)
                    clips.append(clip_total)
                    norms.append(float(norm))
    finally:
        model.train(training)
    stats.update(loss=float(np.mean(losses)), kl=float(np.mean(kls)),
                 clip_frac=float(np.mean(clips)), grad_norm=float(np.mean(norms)),
                 optimizer_updates=len(minis) * config.updates_per_step,
                 update_tokens=int(sum(lengths)))
    stats["grad_signal_reset"] = nanmean(g_reset)
    stats["grad_signal_base"] = nanmean(g_base)
    return stats


# ------------------------------------------------------------------------------------------------
# Evaluation, checkpoints, weights
# ------------------------------------------------------------------------------------------------


def evaluate(engine, tokenizer, task, problems) -> float:
    """Greedy pass@1 on ``problems`` (fraction graded correct), thought by thought."""
    prompts = [tokenizer.encode(task.prompt(p)) for p in problems]
    chains = engine.greedy(prompts)
    return float(np.mean([task.grade(p, c.text) for p, c in zip(problems, chains)]))


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    sidecar = {"run_key": state["run_key"], "iteration": state["iteration"],
               "trainer_version": TRAINER_VERSION}
    tmp_json = path.with_name("checkpoint.json.tmp")
    tmp_json.write_text(json.dumps(sidecar))
    os.replace(tmp_json, path.with_name("checkpoint.json"))


def _save_weights(model, tokenizer, out: Path, iteration: int) -> Path:
    """Export the trained weights in Hugging Face form, replacing the previous export atomically
    (``adapter/`` for a peft model: ``save_pretrained`` of the adapter only; ``model/`` else)."""
    from srpo.model import save_model

    name = "adapter" if hasattr(model, "peft_config") else "model"
    final = out / name
    tmp = out / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model(model, tokenizer, tmp)
    (tmp / "trainer_state.json").write_text(json.dumps({"iteration": iteration}))
    old = out / f".{name}.old"
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    return final


def checkpoint_compatibility(config: TrainConfig) -> tuple[bool, str | None]:
    """Whether ``config.out_dir`` holds a checkpoint, and if it is of another configuration, a
    message saying so. Reads the small ``checkpoint.json`` (or the checkpoint itself when an older
    trainer wrote no sidecar). Returns ``(exists, mismatch_message_or_None)``."""
    out = Path(config.out_dir)
    sidecar, ckpt = out / "checkpoint.json", out / "checkpoint.pt"
    if not ckpt.is_file():
        return False, None
    try:
        saved = json.loads(sidecar.read_text())["run_key"] if sidecar.is_file() else torch.load(
            ckpt, map_location="cpu", weights_only=False)["run_key"]
    except Exception:  # noqa: BLE001 - an unreadable checkpoint cannot be resumed
        return True, f"{out} holds a checkpoint that cannot be read"
    key = config.run_key()
    if saved != key:
        return True, (f"{out} holds a checkpoint of a different configuration (run key {saved}, "
                      f"this run {key})")
    return True, None


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


# ------------------------------------------------------------------------------------------------
# Main loop
# ------------------------------------------------------------------------------------------------


def train(config: TrainConfig, callback: Callable[[dict], None] | None = None,
          progress: Callable[[int, int], None] | None = None,
          task=None, log: Callable[[str], None] | None = None,
          warmstart_progress: Callable | None = None) -> pd.DataFrame:
    """Run RL training; return the metrics table (one row per iteration, 0..steps).

    Args:
        config: the run's settings.
        callback: called with each new metrics row after it is logged (and checkpointed); an
            exception raised there stops the run as a kill would (used by the resume test).
        progress: called as ``progress(iteration, steps)`` after each iteration (progress bars).
        task: a task object to use instead of the configured one (``sample``/``prompt``/``grade``/
            ``first_error``); the evaluation problems then come from ``task.sample`` with
            ``eval_seed`` (``benchmarks/gpu_check.py`` passes one with synthetic rewards).
        log: receives one-line notes (dropped prompts, evaluation source, the generation budget).
        warmstart_progress: passed to the warm start of the tiny model (see ``load_policy``).

    Returns:
        ``pandas.DataFrame`` with ``srpo.metrics.METRIC_COLUMNS`` first, then diagnostics.

    Raises:
        CheckpointMismatch: ``out_dir`` holds a checkpoint of another configuration and
            ``resume`` is True (nothing is written then).
    """
    from srpo.data import EpochSampler
    from srpo.memory import auto_gen_batch_tokens
    from srpo.rollout import GenerationConfig, RolloutEngine

    note = log if log is not None else (lambda message: None)
    _set_determinism(config)
    out = Path(config.out_dir)
    ckpt_path = out / "checkpoint.pt"
    exists, mismatch = checkpoint_compatibility(config) if config.resume else (False, None)
    if mismatch:
        raise CheckpointMismatch(f"{mismatch}; use another out_dir or resume=False")

    if task is None:
        task, eval_problems, eval_source = build_task(config)
    else:
        eval_problems = task.sample(config.eval_size, np.random.default_rng(config.eval_seed))
        eval_source = "task"
    torch.manual_seed(config.seed)  # a new LoRA adapter's initialisation draws from the global RNG
    model, tokenizer, model_path = load_policy(config, progress=warmstart_progress)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "metrics.jsonl"
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))

    dropped = 0
    problems = getattr(task, "problems", None)
    if problems is not None:  # a task file: drop prompts over max_prompt_tokens, as the release
        keep = [p for p in problems if len(tokenizer.encode(task.prompt(p))) <= config.max_prompt_tokens]
        dropped = len(problems) - len(keep)
        if not keep:
            raise ConfigError("max_prompt_tokens", f"max_prompt_tokens: every prompt of "
                                                   f"{config.task} is longer than "
                                                   f"{config.max_prompt_tokens} tokens")
        if dropped:
            note(f"dropped {dropped} of {len(problems)} training prompts longer than "
                 f"{config.max_prompt_tokens} tokens")
        task.problems = keep
    if eval_source == "train":
        note(f"no held-out set: J is measured on {len(eval_problems)} training problems "
             "(pass an eval file or an eval split for a held-out J)")

    ref_model = None
    if config.kl_coef > 0 and not hasattr(model, "disable_adapter"):
        ref_model, _, _ = load_policy(config)
        for p in ref_model.parameters():
            p.requires_grad_(False)
    trainable = _trainable(model)
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW([p for _, p in trainable], lr=config.lr,
                                  weight_decay=config.weight_decay)
    gen_budget = config.gen_batch_tokens
    if gen_budget is None:
        n_trainable = sum(p.numel() for _, p in trainable)
        gen_budget = auto_gen_batch_tokens(model, config.device, reserve_bytes=16 * n_trainable)
        if gen_budget is not None:
            note(f"generation batch budget: {gen_budget} tokens (from free CUDA memory)")
    gen_config = GenerationConfig(
        temperature=config.temperature, top_p=config.top_p, max_thoughts=config.max_thoughts,
        max_thought_tokens=config.max_thought_tokens,
        max_response_tokens=config.max_response_tokens, max_model_len=config.max_model_len,
        max_new_tokens=config.max_new_tokens, max_batch_tokens=gen_budget,
    )
    engine = RolloutEngine(model, tokenizer, gen_config, device=config.device)
    localizer = make_localizer(
        LOCALIZER_OF[config.method], task=task, engine=engine, tokenizer=tokenizer,
        **({"max_new_tokens": config.localization_max_new_tokens,
            "temperature": config.localization_temperature,
            "top_p": config.localization_top_p,
            "stop_at_boxed": config.localization_stop_at_boxed,
            "prompt": config.localization_prompt,
            "fallback": config.localization_fallback} if config.method == "srpo" else {}),
    )
    split = "grpo" if config.method == "grpo" else config.split

    seeds = np.random.SeedSequence(config.seed).spawn(3)
    rng_problems = np.random.default_rng(seeds[0])
    rng_reset = np.random.default_rng(seeds[1])
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seeds[2].generate_state(1, dtype=np.uint64)[0] % (2**62)))
    sampler = None
    if problems is not None:
        sampler = EpochSampler(len(task.problems), config.prompts_per_step, rng_problems)
    steps = config.steps if config.steps is not None else config.epochs * sampler.steps_per_epoch

    rows: list[dict] = []
    reset_rows: list[dict] = []
    totals = {"rollouts": 0, "generated_tokens": 0, "tokens_base": 0, "tokens_parent": 0,
              "tokens_discarded": 0, "tokens_suffix": 0, "tokens_localization": 0,
              "fresh_chains": 0, "localization_calls": 0}
    start_iter, wall_offset = 1, 0.0
    key = config.run_key()

    if exists:
        state = torch.load(ckpt_path, map_location=config.device, weights_only=False)
        missing = model.load_state_dict(state["model"], strict=False)
        if missing.unexpected_keys:
            raise ValueError(f"checkpoint has unexpected keys {missing.unexpected_keys[:3]}")
        optimizer.load_state_dict(state["optimizer"])
        rng_problems.bit_generator.state = state["rng_problems"]
        rng_reset.bit_generator.state = state["rng_reset"]
        generator.set_state(state["generator"])
        if sampler is not None and state.get("sampler") is not None:
            sampler.load_state_dict(state["sampler"])
        rows, reset_rows, totals = state["rows"], state["reset_rows"], state["totals"]
        localizer_stats = state.get("localizer_stats")
        if localizer is not None and localizer_stats is not None:
            localizer.stats = localizer_stats
        start_iter, wall_offset = state["iteration"] + 1, state["wall_time"]
        _write_jsonl(jsonl, rows)  # drop rows logged after the checkpoint
    else:
        jsonl.write_text("")

    t_start = time.time() - wall_offset
    cuda = str(config.device).startswith("cuda")

    def wall() -> float:
        return time.time() - t_start

    def log_row(row: dict) -> None:
        row = {k: _jsonable(v) for k, v in row.items()}
        rows.append(row)
        with jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def checkpoint(iteration: int) -> None:
        _save_checkpoint(ckpt_path, {
            "run_key": key, "iteration": iteration, "wall_time": wall(),
            "model": {n: p.detach().cpu() for n, p in _trainable(model)},
            "optimizer": optimizer.state_dict(),
            "rng_problems": rng_problems.bit_generator.state,
            "rng_reset": rng_reset.bit_generator.state,
            "generator": generator.get_state(),
            "sampler": None if sampler is None else sampler.state_dict(),
            "rows": rows, "reset_rows": reset_rows, "totals": dict(totals),
            "localizer_stats": None if localizer is None else localizer.stats,
        })
        if config.save_weights:
            _save_weights(model, tokenizer, out, iteration)

    def memory() -> dict:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        peak = torch.cuda.max_memory_allocated(config.device) / 2**30 if cuda else float("nan")
        return {"cuda_peak_gib": peak, "rss_max_gib": rss}

    base = {"method": config.method, "seed": config.seed, "split": split,
            "mask_prefix": config.mask_prefix}
    if start_iter == 1:
        t0 = time.perf_counter()
        j0 = evaluate(engine, tokenizer, task, eval_problems)
        log_row({**{c: float("nan") for c in METRIC_COLUMNS}, **base, "iteration": 0,
                 **{k: 0 for k in totals}, "eval_pass_rate": j0, "J": j0,
                 "localization_fallbacks": 0, "time_eval_s": time.perf_counter() - t0,
                 **memory(), "wall_time": wall()})
        if config.checkpoint_every:
            checkpoint(0)

    for it in range(start_iter, steps + 1):
        t_step = time.perf_counter()
        if cuda:
            torch.cuda.reset_peak_memory_stats(config.device)
        if sampler is None:
            problems_now = task.sample(config.prompts_per_step, rng_problems)
        else:
            problems_now = [task.problems[i] for i in sampler.next_batch()]
        fallbacks_before = localizer.stats.fallbacks if localizer is not None else 0
        batch = build_batch(
            problems_now, task, engine, tokenizer, split, localizer, rng_reset, generator,
            rollouts_per_prompt=config.rollouts_per_prompt,
            max_fresh_chains=config.max_fresh_chains, mask_prefix=config.mask_prefix,
        )
        rewards = np.array([s.reward for s in batch.samples])
        gids = np.array([s.group_id for s in batch.samples])
        adv = group_advantages(rewards, gids, std=config.adv_std)
        t_update = time.perf_counter()
        upd = _policy_update(model, ref_model, optimizer, batch.samples, adv, config, tokenizer)
        time_update = time.perf_counter() - t_update

        acc = batch.accounting.as_dict()
        totals["rollouts"] += len(batch.samples)
        totals["fresh_chains"] += acc["chains_fresh"]
        for k in ("generated_tokens", "tokens_base", "tokens_parent", "tokens_discarded",
                  "tokens_suffix", "tokens_localization", "localization_calls"):
            totals[k] += acc[k]
        rm = reset_metrics(batch.events)
        j = float("nan")
        time_eval = float("nan")
        if it % config.eval_every == 0 or it == steps:
            t0 = time.perf_counter()
            j = evaluate(engine, tokenizer, task, eval_problems)
            time_eval = time.perf_counter() - t0
        fallbacks = (localizer.stats.fallbacks - fallbacks_before) if localizer is not None else 0
        fresh_tokens = acc["tokens_base"] + acc["tokens_parent"] + acc["tokens_discarded"]
        row = {
            **base, "iteration": it, **totals,
            "pass_rate": float(np.mean(batch.first_round_rewards)),
            "eval_pass_rate": j, "J": j,
            "reset_rate": batch.prompts_reset / batch.n_prompts,
            **rm,
            "localization_fallbacks": fallbacks,
            "localization_out_of_range": sum(r.out_of_range for r in batch.localizations),
            "train_reward": float(rewards.mean()),
            "adv_abs_mean": float(np.abs(adv).mean()),
            **upd,
            "step_tokens_fresh": fresh_tokens,
            "step_tokens_localization": acc["tokens_localization"],
            "step_tokens_suffix": acc["tokens_suffix"],
            "time_fresh_s": acc["seconds_fresh"],
            "time_localization_s": acc["seconds_localization"],
            "time_suffix_s": acc["seconds_suffix"],
            "time_update_s": time_update,
            "time_eval_s": time_eval,
            "step_time_s": time.perf_counter() - t_step,
            **memory(),
            "wall_time": wall(),
        }
        for e in batch.events:
            reset_rows.append({
                "method": config.method, "seed": config.seed, "iteration": it,
                "prompt_index": e.prompt_index, "n": e.n, "k": e.k, "source": e.source,
                "fallback": e.fallback, "raw_k": e.raw,
                "first_error": e.first_error, "deviation": e.deviation, "clean": e.clean,
                "prefix_tokens": e.prefix_tokens, "n_suffixes": len(e.suffix_rewards),
                "suffix_successes": e.suffix_successes, "suffix_pass_at_k": e.suffix_pass_at_k,
            })
        log_row(row)
        if config.checkpoint_every and (it % config.checkpoint_every == 0 or it == steps):
            checkpoint(it)
        if progress is not None:
            progress(it, steps)
        if callback is not None:
            callback(rows[-1])

    df = pd.DataFrame(rows)
    for c in df.columns:
        if df[c].dtype == object and c not in ("method", "split"):
            df[c] = pd.to_numeric(df[c])
    extra = [c for c in df.columns if c not in METRIC_COLUMNS]
    df = df[list(METRIC_COLUMNS) + extra]
    df.to_parquet(out / "metrics.parquet", index=False)
    resets = pd.DataFrame(reset_rows, columns=list(RESET_COLUMNS))
    resets.to_parquet(out / "resets.parquet", index=False)
    weights = None
    if config.save_weights:
        weights = str(_save_weights(model, tokenizer, out, steps))
    info = {"model_path": model_path, "run_key": key, "steps": steps,
            "eval_source": eval_source, "eval_problems": len(eval_problems),
            "train_problems": len(problems) if problems is not None else None,
            "dropped_long_prompts": dropped, "gen_batch_tokens": gen_budget,
            "weights": weights,
            "localizer": None if localizer is None else localizer.stats.as_dict()}
    (out / "run_info.json").write_text(json.dumps(info, indent=2, default=str))
    return df
