"""The configuration of one RL run (``TrainConfig``), its task profiles and the paper's recipe.

Torch-free, so that a command line checks every input in a fraction of a second, before anything
heavy is imported or any file is written.

Task profiles: the limits that depend on the task default to ``"auto"`` and are resolved in
``TrainConfig.__post_init__`` (``config.json`` records the resolved values): the synthetic task
keeps the tiny model's small limits (``SYNTHETIC_PROFILE``), a task file gets the release's
(``RELEASE_PROFILE``). ``PAPER_RECIPE`` is the paper's whole optimisation recipe
(``--recipe paper``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from srpo.engines.options import ENGINES, VLLMOptions
from srpo.localize import LOCALIZATION_FALLBACKS, LOCALIZATION_PROMPTS
from srpo.methods import get_method, method_names
from srpo.methods.resets import SPLITS

__all__ = [
    "METHODS", "LOCALIZER_OF", "LOSSES", "AGG_MODES", "ADV_STD_MODES", "AUTO", "TRAINER_VERSION",
    "SYNTHETIC_PROFILE", "RELEASE_PROFILE", "PAPER_RECIPE", "ConfigError", "CheckpointMismatch",
    "TrainConfig", "checkpoint_compatibility", "recipe_values", "paper_recipe", "PAPER_GRPO",
    "TINY_CODE_PROFILE", "TINY_TASKS", "TASK_TYPES",
]

#: loss aggregation modes (``srpo.loss.aggregate``)
AGG_MODES = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")

#: every registered method (``srpo.methods``), and the localizer of each
METHODS = method_names()
LOCALIZER_OF = {name: get_method(name).localizer for name in METHODS}
#: the registered policy losses (``srpo.loss.POLICY_LOSSES``; a test checks they agree)
LOSSES = ("reinforce", "ppo-clip", "critique-shaped")
#: ``adv_std`` of the GRPO-family estimators: z-scores with the population / sample std, or mean
#: centring only (the release's GRPO baseline: ``unbiased`` with ``adv_eps = 1e-6``)
ADV_STD_MODES = ("population", "unbiased", "none")
#: enters ``run_key``: bump when the update rule or the sampled trajectories change, so that old
#: checkpoints are not resumed.
#: (2: log pi at the sampling temperature, seeded LoRA initialisation; 3: thoughts end by decoded
#: text, a capped thought no longer ends the chain, the release's localization parsing, mini-batches)
TRAINER_VERSION = 3

AUTO = "auto"

#: ``TrainConfig.optimizer`` (``srpo.setup.make_optimizer``)
OPTIMIZERS = ("adamw", "sgd")

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

#: Limits of the tiny coding task (``task = "synthetic_code"``, ``srpo.code.tiny``): its code
#: thought (a fenced one-line function) is longer than an arithmetic step.
TINY_CODE_PROFILE = {**SYNTHETIC_PROFILE, "max_thoughts": 5, "max_thought_tokens": 48}
#: tasks of the tiny warm-started model (drawn in code, not read from a file)
TINY_TASKS = ("synthetic", "synthetic_code")
#: ``TrainConfig.task_type``: how responses are graded (``auto``: ``code`` for
#: ``synthetic_code``, else ``qa``)
TASK_TYPES = ("qa", "code")

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

#: fields added with the method registry (issue 17): left out of the run key at these values, so
#: earlier runs keep their keys and checkpoints
_KEY_IF_SET = {"localization_offset": 0, "method_options": {}, "entropy_coef": 0.0,
               "adv_eps": 0.0, "task_type": "qa", "optimizer": "adamw"}

#: ``--recipe paper --method grpo`` on top of ``PAPER_RECIPE``: the release's GRPO baseline, verl's
#: outcome estimator (r - mean) / (sample std, ddof 1, + 1e-6), PPO-clip 0.2, token-mean (the GRPO
#: method's release recipe, ``srpo.methods.grpo``, holds the same values and its lr / temperature)
PAPER_GRPO = {
    "adv_std": "unbiased",
    "adv_eps": 1e-6,
    "loss": "ppo-clip",
    "clip_eps": 0.2,
    "agg": "token-mean",
}

#: fields that change memory or speed only (not the trajectory): left out of the run key, so a
#: run resumes after they change
_NOT_IN_KEY = ("steps", "epochs", "out_dir", "resume", "checkpoint_every", "device", "cache_dir",
               "num_threads", "micro_batch_size", "micro_batch_tokens", "gen_batch_tokens",
               "logprob_chunk_tokens", "grad_checkpointing", "save_weights",
               "vllm_gpu_memory_utilization", "vllm_kv_cache_gib", "vllm_block_size",
               "vllm_enforce_eager", "sandbox_workers")


#: keyword arguments of ``srpo.tasks.ModularArithmeticTask`` that ``TrainConfig.task_options`` accepts
TASK_OPTIONS = ("hard_steps", "hard_ops", "hard_operands", "easy_operands", "hard_fraction",
                "eval_hard_only")


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
        lr: learning rate (constant; the same for every method). Paper: 5e-5 (AdamW).
        optimizer: ``adamw`` (paper) or ``sgd`` (plain SGD, no momentum: the step is the
            gradient, not its Adam-normalised form; issue 19's optimiser reading).
        weight_decay: AdamW weight decay (paper: 0.01).
        grad_clip: max global gradient norm (None: no clipping). Paper: 1.0.
        loss: ``reinforce`` (paper default: -A * mean log pi, no ratio) or ``ppo-clip``.
        clip_eps: PPO clip epsilon (``ppo-clip`` only).
        updates_per_step: optimizer passes over each batch (``ppo-clip``; 1 for ``reinforce``).
        mini_batches: optimizer updates per iteration, prompts split into this many equal parts
            (paper: 4 x 64 sequences; updates 2.. are slightly off-policy, uncorrected).
        agg: loss aggregation, ``seq-mean-token-mean`` (paper) or ``token-mean``.
        adv_std: advantage normalisation of the GRPO-family methods: ``population`` (paper's
            SRPO / RRPO), ``unbiased`` (the sample std, ddof 1: the release's GRPO) or ``none``
            (*auto*: the method's).
        adv_eps: added to the std in the advantage's denominator (the release's GRPO: 1e-6;
            0: none).
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

    Engine (``srpo.engines``):
        engine: ``hf`` (the Hugging Face loop, default) or ``vllm`` (vLLM with prefix caching,
            colocated in this process; the policy is synced after every optimizer step by LoRA
            hot swap, or by a full-weight reload without LoRA). Greedy chains are identical;
            sampled chains follow the same distribution from another random stream.
        vllm_gpu_memory_utilization: vLLM's share of the GPU (weights + KV cache); the rest is
            training's. Memory only.
        vllm_kv_cache_gib: vLLM's KV cache in GiB instead (CPU default 1). Memory only.
        vllm_block_size: vLLM KV block size (None: 32 on CPU, vLLM's default on GPU).
        vllm_enforce_eager: no graph capture (None: on for CPU, off for GPU).

    Task and model:
        task: ``synthetic`` (chained modular arithmetic with a step verifier),
            ``synthetic_code`` (the tiny coding task, ``srpo.code.tiny``: one-line functions from
            examples, graded by tests in the sandbox, with a step verifier) or a path to a
            ``.jsonl`` / ``.parquet`` file (``srpo.data``; with ``task_type="code"``
            ``srpo.code.formats``), trained on in full, epoch by epoch.
        task_type: ``qa`` (a boxed / graded answer) or ``code`` (``srpo.code.task.CodeTask``:
            reward = fraction of the reward tests passed in the sandbox, correct = all pass,
            the code between the last two fence lines, a chain ends at a closed fenced block;
            J = fraction of the held-out tests passed). *auto*: ``code`` for ``synthetic_code``,
            else ``qa``.
        sandbox_workers: sandboxed gradings at a time (``task_type="code"``).
        task_steps, task_modulus, task_ops: the synthetic task's H, modulus and operators.
        task_options: further keyword arguments of ``srpo.tasks.ModularArithmeticTask`` (the
            coverage knob ``hard_steps``, ``hard_ops``, ``hard_operands``, ``easy_operands``);
            empty: the plain task. Enters the run key only when set.
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
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    loss: str = AUTO
    clip_eps: float | str = AUTO
    updates_per_step: int = 1
    mini_batches: int = 1
    agg: str = AUTO
    adv_std: str = AUTO
    adv_eps: float = 0.0
    kl_coef: float = 0.0
    entropy_coef: float | str = AUTO
    localization_offset: int | str = AUTO
    method_options: dict = field(default_factory=dict)
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
    engine: str = "hf"
    vllm_gpu_memory_utilization: float = 0.3
    vllm_kv_cache_gib: float | None = None
    vllm_block_size: int | None = None
    vllm_enforce_eager: bool | None = None
    task: str = "synthetic"
    task_type: str = AUTO
    sandbox_workers: int = 2
    task_steps: int = 6
    task_modulus: int = 10
    task_ops: tuple[str, ...] = ("+", "-", "*")
    task_options: dict = field(default_factory=dict)
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
        """The chained modular-arithmetic task."""
        return self.task == "synthetic"

    @property
    def is_tiny(self) -> bool:
        """A task of the tiny warm-started model (``TINY_TASKS``: drawn in code, with a step
        verifier)."""
        return self.task in TINY_TASKS

    def __post_init__(self) -> None:
        self.task_ops = tuple(self.task_ops)
        self.method_options = dict(self.method_options or {})
        if self.method not in METHODS:
            raise ConfigError("method", f"method must be one of {METHODS}; got {self.method!r}")
        method_defaults = {"loss": "reinforce", "agg": "seq-mean-token-mean",
                           "adv_std": "population", "clip_eps": 0.2, "entropy_coef": 0.0,
                           "localization_offset": 0, **get_method(self.method).defaults}
        for name, value in method_defaults.items():
            if getattr(self, name) == AUTO:
                setattr(self, name, value)
        if self.task_type == AUTO:
            self.task_type = "code" if self.task == "synthetic_code" else "qa"
        profile = RELEASE_PROFILE
        if self.is_tiny:
            profile = TINY_CODE_PROFILE if self.task == "synthetic_code" else SYNTHETIC_PROFILE
        for name, value in profile.items():
            if name != "steps" and getattr(self, name) == AUTO:
                setattr(self, name, value)
        if self.localization_temperature == AUTO:
            self.localization_temperature = 0.0 if self.split == "1x8" else 0.3
        if self.localization_top_p is None:
            self.localization_top_p = self.top_p
        if (self.max_response_tokens is None and self.is_tiny
                and isinstance(self.max_thoughts, int) and isinstance(self.max_thought_tokens, int)
                and self.max_thoughts > 0 and self.max_thought_tokens > 0):
            self.max_response_tokens = self.max_thoughts * self.max_thought_tokens
        if self.steps is None and self.is_tiny:
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
            ("adv_std", self.adv_std, ADV_STD_MODES),
            ("device", self.device.split(":")[0], ("cpu", "cuda")),
            ("dtype", self.dtype, ("auto", "float32", "bfloat16", "float16")),
            ("localization_prompt", self.localization_prompt, LOCALIZATION_PROMPTS),
            ("localization_fallback", self.localization_fallback, LOCALIZATION_FALLBACKS),
            ("engine", self.engine, ENGINES),
            ("optimizer", self.optimizer, OPTIMIZERS),
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                fail(name, f"must be one of {allowed}; got {value!r}")
        minimums = {"steps": 0, "epochs": 1, "prompts_per_step": 1, "rollouts_per_prompt": 2,
                    "max_fresh_chains": 1, "updates_per_step": 1, "mini_batches": 1,
                    "eval_size": 1, "eval_every": 1, "micro_batch_size": 1, "num_threads": 1,
                    "max_thoughts": 1, "max_thought_tokens": 1, "max_prompt_tokens": 1,
                    "localization_max_new_tokens": 1, "logprob_chunk_tokens": 1,
                    "checkpoint_every": 0, "task_steps": 1, "task_modulus": 2,
                    "sandbox_workers": 1}
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
                     "localization_temperature", "eval_split", "entropy_coef", "adv_eps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                fail(name, f"must be a finite number; got {value!r}")
        if not self.lr > 0:
            fail("lr", f"must be > 0; got {self.lr}")
        for name in ("weight_decay", "kl_coef", "clip_eps", "temperature",
                     "localization_temperature", "entropy_coef", "adv_eps"):
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
        if self.task_type not in TASK_TYPES:
            fail("task_type", f"must be one of {TASK_TYPES} or 'auto'; got {self.task_type!r}")
        if self.task == "synthetic_code" and self.task_type != "code":
            fail("task_type", f"must be 'code' for task='synthetic_code'; got {self.task_type!r}")
        if self.is_synthetic and self.task_type != "qa":
            fail("task_type", f"must be 'qa' for task='synthetic'; got {self.task_type!r}")
        if self.task_type == "code" and self.eval_split:
            fail("eval_split", "does not apply to task_type='code': coding problems are held "
                               "out by their own split (srpo.code.problem)")
        if self.method == "oracle" and not self.is_tiny:
            fail("method", "'oracle' needs a task with a step verifier (task='synthetic' or "
                           "'synthetic_code')")
        self._validate_method()
        try:
            self.vllm_options()
        except ValueError as err:
            name = str(err).split()[1]
            raise ConfigError(f"vllm_{name}", str(err).replace("vllm ", "vllm_", 1)) from None
        if self.task_options:
            if not self.is_synthetic:
                fail("task_options", f"apply to task='synthetic' only; got task {self.task!r}")
            unknown = sorted(set(self.task_options) - set(TASK_OPTIONS))
            if unknown:
                fail("task_options", f"keys must be among {TASK_OPTIONS}; got {unknown}")
        if self.is_tiny and (self.eval_task is not None or self.eval_split):
            fail("eval_task", "and eval_split apply to task files only (the synthetic task draws "
                              "its evaluation set with eval_seed)")

    def _validate_method(self) -> None:
        method = get_method(self.method)
        if self.loss not in method.losses:
            raise ConfigError("loss", f"loss must be one of {method.losses} for method "
                                      f"{self.method!r}; got {self.loss!r}")
        offset = self.localization_offset
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ConfigError("localization_offset", f"localization_offset must be an integer >= "
                                                     f"0; got {offset!r}")
        if offset and method.localizer == "none":
            raise ConfigError("localization_offset", f"localization_offset applies to reset "
                                                     f"methods; method {self.method!r} has none")
        try:
            method.make_options(self.method_options)
        except (TypeError, ValueError) as err:
            raise ConfigError("method_options", f"method_options {err}") from None
        if self.agg == "seq-mean-token-sum-norm" and not isinstance(self.max_response_tokens, int):
            raise ConfigError("agg", "agg 'seq-mean-token-sum-norm' divides by "
                                     "max_response_tokens, which must be set")

    @property
    def method_spec(self):
        """The registered ``srpo.methods.base.Method`` of ``method``."""
        return get_method(self.method)

    def options(self):
        """The method's options dataclass (``method_options`` applied)."""
        return get_method(self.method).make_options(self.method_options)

    def vllm_options(self) -> VLLMOptions:
        """The vLLM engine's settings (``srpo.engines.options.VLLMOptions``)."""
        return VLLMOptions(gpu_memory_utilization=self.vllm_gpu_memory_utilization,
                           kv_cache_gib=self.vllm_kv_cache_gib, block_size=self.vllm_block_size,
                           enforce_eager=self.vllm_enforce_eager)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["task_ops"] = list(self.task_ops)
        return d

    def run_key(self) -> str:
        """Hash of the settings that define the trajectory (not steps, paths, memory knobs)."""
        d = self.to_dict()
        for k in _NOT_IN_KEY:
            d.pop(k)
        if d["engine"] == "hf":  # the default engine leaves the keys of earlier runs unchanged
            d.pop("engine")
        if not d["task_options"]:  # runs of the plain task keep their keys (and checkpoints)
            d.pop("task_options")
        for name, unset in _KEY_IF_SET.items():
            if d[name] == unset:
                d.pop(name)
        d["trainer_version"] = TRAINER_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def recipe_values(method: str, recipe: str | None) -> dict:
    """TrainConfig values of a recipe for ``method``: ``paper`` = ``PAPER_RECIPE`` with the
    method's release settings on top (its lr, temperature and loss settings); None = {}."""
    if recipe is None:
        return {}
    if recipe != "paper":
        raise ConfigError("recipe", f"recipe must be 'paper' or None; got {recipe!r}")
    return {**PAPER_RECIPE, **get_method(method).release}


def paper_recipe(method: str) -> dict:
    """``recipe_values(method, "paper")``: the TrainConfig values of ``--recipe paper``."""
    return recipe_values(method, "paper")


def checkpoint_compatibility(config: TrainConfig) -> tuple[bool, str | None]:
    """Whether ``config.out_dir`` holds a checkpoint, and if it is of another configuration, a
    message saying so. Reads the small ``checkpoint.json`` (or the checkpoint itself when an older
    trainer wrote no sidecar). Returns ``(exists, mismatch_message_or_None)``."""
    out = Path(config.out_dir)
    sidecar, ckpt = out / "checkpoint.json", out / "checkpoint.pt"
    if not ckpt.is_file():
        return False, None
    try:
        if sidecar.is_file():
            saved = json.loads(sidecar.read_text())["run_key"]
        else:
            import torch

            saved = torch.load(ckpt, map_location="cpu", weights_only=False)["run_key"]
    except Exception:  # noqa: BLE001 - an unreadable checkpoint cannot be resumed
        return True, f"{out} holds a checkpoint that cannot be read"
    key = config.run_key()
    if saved != key:
        return True, (f"{out} holds a checkpoint of a different configuration (run key {saved}, "
                      f"this run {key})")
    return True, None
