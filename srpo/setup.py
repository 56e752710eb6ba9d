"""Setting up a run: the task, the policy, the engine, the method's seams and the random streams.

``build_task`` and ``load_policy`` read the configuration; ``make_run`` assembles a ``Run``: the
model and its optimizer, the reference policy when the method needs one, the rollout engine, the
method's ``RolloutContext`` (engine, codec, scorer, localizer, random streams, entropies) and its
``PolicyUpdater``, and resumes the checkpoint in ``out_dir`` when there is one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from srpo.config import ConfigError, TrainConfig

__all__ = [
    "build_task",
    "warm_start_config",
    "load_policy",
    "set_determinism",
    "Run",
    "make_run",
    "build_engine",
    "entropy_function",
    "make_localizer_for",
    "make_optimizer",
    "TOTALS",
]

#: cumulative counters of a run (metrics columns)
TOTALS = (
    "rollouts",
    "generated_tokens",
    "tokens_base",
    "tokens_parent",
    "tokens_discarded",
    "tokens_suffix",
    "tokens_localization",
    "tokens_followup",
    "tokens_branch",
    "fresh_chains",
    "localization_calls",
)


#: warm start of the tiny coding task (``srpo.warmstart.WarmStartConfig`` overrides): 500 steps,
#: 30% of the programs confused (measured: greedy all-pass rate 0.75, sampled 0.77 on 128
#: problems, about 100 CPU-seconds on the project's machine: to be remeasured)
CODE_WARMSTART = {"steps": 500, "confused_fraction": 0.3}


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
    from srpo.data import check_batch_fits, read_problems
    from srpo.tasks import DatasetTask, ModularArithmeticTask

    if config.task_type == "code":
        return _build_code_task(config)
    if config.is_synthetic:
        task = ModularArithmeticTask(
            n_steps=config.task_steps,
            modulus=config.task_modulus,
            ops=config.task_ops,
            **config.task_options,
        )
        eval_problems = task.sample_eval(config.eval_size, np.random.default_rng(config.eval_seed))
        return task, eval_problems, "synthetic"
    fields = {"question_field": config.question_field, "answer_field": config.answer_field}
    problems = read_problems(config.task, **fields)
    if config.eval_task is not None:
        eval_problems = _subset(
            read_problems(config.eval_task, **fields), config.eval_size, config.eval_seed
        )
        source = "eval_task"
    elif config.eval_split > 0:
        n_held = int(round(config.eval_split * len(problems)))
        if not 1 <= n_held < len(problems):
            raise ConfigError(
                "eval_split",
                f"eval_split {config.eval_split} of {len(problems)} "
                "problems leaves no held-out or no training problem",
            )
        order = np.random.default_rng(config.eval_seed).permutation(len(problems))
        held = set(int(i) for i in order[:n_held])
        eval_problems = _subset(
            [problems[i] for i in sorted(held)], config.eval_size, config.eval_seed
        )
        problems = [p for i, p in enumerate(problems) if i not in held]
        source = "eval_split"
    else:
        eval_problems = _subset(problems, config.eval_size, config.eval_seed)
        source = "train"
    try:  # before any model is loaded or file written
        check_batch_fits(len(problems), config.prompts_per_step, config.task)
    except ValueError as err:
        raise ConfigError("prompts_per_step", str(err)) from None
    return DatasetTask(problems), eval_problems, source


def _build_code_task(config: TrainConfig):
    """``build_task`` of ``task_type = "code"``: the tiny coding task, or a coding file whose
    training problems (not held out by ``srpo.code.problem``'s problem split) train on their
    reward tests. Evaluation problems: ``eval_task``'s, else a seeded subset of the whole file;
    either way J grades each on its ``eval_tests`` (held-out half, or all tests of a held-out
    problem), never on a reward test (``eval_source = "code_heldout"``)."""
    from srpo.code.formats import read_code_problems
    from srpo.code.task import CodeTask
    from srpo.data import check_batch_fits

    if config.task == "synthetic_code":
        from srpo.code.tiny import TinyCodeTask

        task = TinyCodeTask(workers=config.sandbox_workers)
        return task, task.eval_problems(config.eval_size, config.eval_seed), "synthetic"
    try:
        problems = read_code_problems(config.task)
        source_problems = (
            read_code_problems(config.eval_task) if config.eval_task is not None else problems
        )
    except ValueError as err:
        raise ConfigError("task", f"task {err}") from None
    train = [p for p in problems if not p.heldout_problem]
    if not train:
        raise ConfigError(
            "task",
            f"task {config.task}: every problem is held out (a problem "
            "with fewer than 2 tests cannot be split)",
        )
    try:
        check_batch_fits(len(train), config.prompts_per_step, config.task)
    except ValueError as err:
        raise ConfigError("prompts_per_step", str(err)) from None
    eval_problems = _subset(source_problems, config.eval_size, config.eval_seed)
    return CodeTask(train, workers=config.sandbox_workers), eval_problems, "code_heldout"


def warm_start_config(config: TrainConfig):
    """The ``srpo.warmstart.WarmStartConfig`` of the tiny model ``config`` trains (its task
    fields from ``config``, the rest from ``config.warmstart``), or None for a ``model`` run."""
    if config.model is not None:
        return None
    from srpo.warmstart import WarmStartConfig

    if config.task == "synthetic_code":  # the tiny coding task: its own data, same model size
        return WarmStartConfig(
            **{
                "num_threads": config.num_threads,
                **CODE_WARMSTART,
                **config.warmstart,
                "family": "code",
            }
        )
    return WarmStartConfig(
        **{
            "num_threads": config.num_threads,
            **config.warmstart,
            "n_steps": config.task_steps,
            "modulus": config.task_modulus,
            "ops": config.task_ops,
        }
    )


def load_policy(config: TrainConfig, progress: Callable | None = None):
    """``(model, tokenizer, model_path)``: the configured model, or the warm-started tiny model.

    ``progress`` is passed to ``srpo.warmstart.warm_start`` (phase progress of a warm start).
    """
    from srpo.model import load_model, resolve_dtype

    if config.model is None:
        if not config.is_tiny:
            raise ConfigError(
                "model",
                "model: the tiny warm-started model only knows the "
                "synthetic tasks; pass a local Hugging Face model for a "
                "task file",
            )
        from srpo.warmstart import warm_start

        path = warm_start(warm_start_config(config), cache_dir=config.cache_dir, progress=progress)
    else:
        path = Path(config.model)
    model, tokenizer = load_model(
        path,
        device=config.device,
        lora_rank=config.lora_rank,
        dtype=resolve_dtype(config.dtype, config.device),
        lora_alpha=config.lora_alpha,
        lora_target_modules=config.lora_target_modules,
        gradient_checkpointing=bool(config.grad_checkpointing),
    )
    model.eval()
    return model, tokenizer, str(path)


def set_determinism(config: TrainConfig) -> None:
    torch.set_num_threads(config.num_threads)
    if config.device == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@dataclass
class Run:
    """Everything one run holds between phases (``srpo.trainer``)."""

    config: TrainConfig
    out: Path
    task: Any
    eval_problems: list
    eval_source: str
    model: Any
    tokenizer: Any
    model_path: str
    optimizer: Any
    engine: Any
    method: Any
    ctx: Any
    updater: Any
    localizer: Any
    sampler: Any
    rng_problems: np.random.Generator
    generator: Any
    steps: int
    gen_budget: int | None
    dropped: int
    train_problems: int | None
    key: str
    rows: list = field(default_factory=list)
    reset_rows: list = field(default_factory=list)
    totals: dict = field(default_factory=lambda: dict.fromkeys(TOTALS, 0))
    start_iter: int = 1
    t_start: float = 0.0

    @property
    def jsonl(self) -> Path:
        return self.out / "metrics.jsonl"

    def wall(self) -> float:
        return time.time() - self.t_start

    def trainable(self) -> list:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def state(self, iteration: int) -> dict:
        """The checkpoint of the run after ``iteration``."""
        return {
            "run_key": self.key,
            "iteration": iteration,
            "wall_time": self.wall(),
            "model": {n: p.detach().cpu() for n, p in self.trainable()},
            "optimizer": self.optimizer.state_dict(),
            "rng_problems": self.rng_problems.bit_generator.state,
            "rng_reset": self.ctx.rng.bit_generator.state,
            "generator": self.generator.get_state(),
            "sampler": None if self.sampler is None else self.sampler.state_dict(),
            "rows": self.rows,
            "reset_rows": self.reset_rows,
            "totals": dict(self.totals),
            "localizer_stats": None if self.localizer is None else self.localizer.stats,
        }

    def resume(self, state: dict) -> None:
        """Load a checkpoint (``state``): weights, optimizer, streams, rows."""
        from srpo.checkpoint import write_rows

        missing = self.model.load_state_dict(state["model"], strict=False)
        if missing.unexpected_keys:
            raise ValueError(f"checkpoint has unexpected keys {missing.unexpected_keys[:3]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng_problems.bit_generator.state = state["rng_problems"]
        self.ctx.rng.bit_generator.state = state["rng_reset"]
        self.generator.set_state(state["generator"])
        if self.sampler is not None and state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
        self.rows, self.reset_rows = state["rows"], state["reset_rows"]
        self.totals = {**dict.fromkeys(TOTALS, 0), **state["totals"]}
        if self.localizer is not None and state.get("localizer_stats") is not None:
            self.localizer.stats = state["localizer_stats"]
        self.start_iter = state["iteration"] + 1
        self.t_start = time.time() - state["wall_time"]
        write_rows(self.jsonl, self.rows)  # drop rows logged after the checkpoint
        self.engine.sync(self.model)  # the resumed weights


def _drop_long_prompts(config, task, tokenizer, note) -> int:
    """A task file: drop prompts over ``max_prompt_tokens`` (as the release); returns how many."""
    problems = getattr(task, "problems", None)
    if problems is None:
        return 0
    keep = [
        p for p in problems if len(tokenizer.encode(task.prompt(p))) <= config.max_prompt_tokens
    ]
    if not keep:
        raise ConfigError(
            "max_prompt_tokens",
            f"max_prompt_tokens: every prompt of {config.task} "
            f"is longer than {config.max_prompt_tokens} tokens",
        )
    if len(keep) < config.prompts_per_step:
        raise ConfigError(
            "prompts_per_step",
            f"prompts_per_step: {len(keep)} of {len(problems)} "
            f"training prompts fit in max_prompt_tokens = "
            f"{config.max_prompt_tokens}, fewer than one "
            f"step's {config.prompts_per_step}",
        )
    if len(keep) < len(problems):
        note(
            f"dropped {len(problems) - len(keep)} of {len(problems)} training prompts longer "
            f"than {config.max_prompt_tokens} tokens"
        )
    task.problems = keep
    return len(problems) - len(keep)


def build_engine(config, model, tokenizer, model_path, trainable, note=lambda m: None):
    """The configured rollout engine over ``model`` and its generation budget (tokens)."""
    from srpo.engines import make_engine
    from srpo.memory import auto_gen_batch_tokens
    from srpo.model import resolve_dtype
    from srpo.rollout import GenerationConfig

    gen_budget = config.gen_batch_tokens
    if gen_budget is None:
        n_trainable = sum(p.numel() for _, p in trainable)
        gen_budget = auto_gen_batch_tokens(model, config.device, reserve_bytes=16 * n_trainable)
        if gen_budget is not None:
            note(f"generation batch budget: {gen_budget} tokens (from free CUDA memory)")
    gen_config = GenerationConfig(
        temperature=config.temperature,
        top_p=config.top_p,
        max_thoughts=config.max_thoughts,
        max_thought_tokens=config.max_thought_tokens,
        max_response_tokens=config.max_response_tokens,
        max_model_len=config.max_model_len,
        max_new_tokens=config.max_new_tokens,
        max_batch_tokens=gen_budget,
        answer="fence" if config.task_type == "code" else "boxed",
    )
    # the engine is passed the policy; vLLM keeps its own copy, synced after every update
    engine = make_engine(
        config.engine,
        model,
        tokenizer,
        gen_config,
        device=config.device,
        model_path=model_path,
        seed=config.seed,
        options=config.vllm_options(),
        dtype=str(resolve_dtype(config.dtype, config.device)).replace("torch.", ""),
    )
    return engine, gen_budget


def entropy_function(model, tokenizer, config) -> Callable:
    """``(prompts, responses) -> list of (T_i,) numpy arrays``: the policy's entropy at every
    response token, at the sampling temperature (TreeRL's and the entropy rule's branch points)."""
    from srpo.logprobs import token_entropies

    temperature = config.temperature if config.temperature > 0 else 1.0
    pad = tokenizer.pad_token_id or 0

    def token_entropy(prompts, responses):
        ents = token_entropies(
            model, prompts, responses, config.device, temperature, pad, config.logprob_chunk_tokens
        )
        return [e.detach().float().cpu().numpy() for e in ents]

    return token_entropy


def make_localizer_for(config, method, task, engine, tokenizer, token_entropy):
    """The method's localizer with the configuration's settings (None for ``none``)."""
    from srpo.localize import make_localizer
    from srpo.methods.spo_tree import segment_length

    kw = {}
    if method.localizer == "self":
        kw = {
            "max_new_tokens": config.localization_max_new_tokens,
            "temperature": config.localization_temperature,
            "top_p": config.localization_top_p,
            "stop_at_boxed": config.localization_stop_at_boxed,
            "prompt": config.localization_prompt,
            "fallback": config.localization_fallback,
        }
    elif method.localizer == "entropy":
        kw = {"token_entropy": token_entropy}
    elif method.localizer == "fixed":
        position = getattr(config.options(), "position", None)
        kw = {"position": segment_length(position, config.max_response_tokens)}
    return make_localizer(method.localizer, task=task, engine=engine, tokenizer=tokenizer, **kw)


def make_optimizer(params, config):
    """The configured optimizer over ``params``: ``adamw`` (default; AdamW with ``lr`` and
    ``weight_decay``) or ``sgd`` (plain SGD with ``lr`` and ``weight_decay``, no momentum: the
    update is the gradient itself, for the optimiser reading of issue 19)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _random_streams(config):
    seeds = np.random.SeedSequence(config.seed).spawn(3)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seeds[2].generate_state(1, dtype=np.uint64)[0] % (2**62)))
    return np.random.default_rng(seeds[0]), np.random.default_rng(seeds[1]), generator


def make_run(
    config: TrainConfig,
    task=None,
    note: Callable = lambda m: None,
    warmstart_progress: Callable | None = None,
    exists: bool = False,
) -> Run:
    """Assemble a ``Run`` (module docstring); resume its checkpoint when ``exists``."""
    from srpo.data import EpochSampler
    from srpo.methods import RolloutContext, TaskScorer, TokenizerCodec
    from srpo.update import PolicyUpdater

    if task is None:
        task, eval_problems, eval_source = build_task(config)
    elif hasattr(task, "eval_problems"):  # a task with its own held-out draw (the coding task)
        eval_problems = task.eval_problems(config.eval_size, config.eval_seed)
        eval_source = "task"
    else:
        sample_eval = getattr(task, "sample_eval", task.sample)
        eval_problems = sample_eval(config.eval_size, np.random.default_rng(config.eval_seed))
        eval_source = "task"
    torch.manual_seed(config.seed)  # a new LoRA adapter's initialisation draws from the global RNG
    model, tokenizer, model_path = load_policy(config, progress=warmstart_progress)
    dropped = _drop_long_prompts(config, task, tokenizer, note)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    if eval_source == "train":
        note(
            f"no held-out set: J is measured on {len(eval_problems)} training problems "
            "(pass an eval file or an eval split for a held-out J)"
        )
    method = config.method_spec
    ref_model = None
    needs_ref = config.kl_coef > 0 or "ref_logprobs" in method.needs
    if needs_ref and not hasattr(model, "disable_adapter"):
        ref_model, _, _ = load_policy(config)
        for p in ref_model.parameters():
            p.requires_grad_(False)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    optimizer = make_optimizer([p for _, p in trainable], config)
    engine, gen_budget = build_engine(config, model, tokenizer, model_path, trainable, note)
    token_entropy = entropy_function(model, tokenizer, config)
    localizer = make_localizer_for(config, method, task, engine, tokenizer, token_entropy)
    rng_problems, rng_reset, generator = _random_streams(config)
    problems = getattr(task, "problems", None)
    sampler = None
    if problems is not None:
        sampler = EpochSampler(len(task.problems), config.prompts_per_step, rng_problems)
    steps = config.steps if config.steps is not None else config.epochs * sampler.steps_per_epoch
    options = config.options()
    ctx = RolloutContext(
        engine=engine,
        codec=TokenizerCodec(tokenizer, task, engine.config.delimiter),
        scorer=TaskScorer(task),
        task=task,
        rng=rng_reset,
        generator=generator,
        localizer=localizer,
        options=options,
        rollouts_per_prompt=config.rollouts_per_prompt,
        max_fresh_chains=config.max_fresh_chains,
        mask_prefix=config.mask_prefix,
        localization_offset=config.localization_offset,
        split=config.split,
        token_entropy=token_entropy,
        max_response_tokens=config.max_response_tokens,
    )
    updater = PolicyUpdater(
        model,
        ref_model,
        optimizer,
        config,
        tokenizer,
        loss_params=method.loss_params(config, options),
        needs=method.needs,
    )
    run = Run(
        config,
        out,
        task,
        eval_problems,
        eval_source,
        model,
        tokenizer,
        model_path,
        optimizer,
        engine,
        method,
        ctx,
        updater,
        localizer,
        sampler,
        rng_problems,
        generator,
        steps,
        gen_budget,
        dropped,
        len(problems) if problems is not None else None,
        config.run_key(),
    )
    if exists:
        run.resume(
            torch.load(out / "checkpoint.pt", map_location=config.device, weights_only=False)
        )
    else:
        run.jsonl.write_text("")
        run.t_start = time.time()
    return run
