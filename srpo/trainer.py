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
   to ``metrics.jsonl`` (peak memory: CUDA allocated and reserved, process RSS); every ``checkpoint_every`` iterations save model, optimizer, RNG and
   sampler states and all rows so far (``checkpoint.pt``, its key in ``checkpoint.json``) and the
   trained weights in Hugging Face form (``adapter/`` for LoRA: loadable by peft and vLLM;
   ``model/`` otherwise), so that a killed run resumes (``resume=True``) with no lost or
   duplicated rows.

At the end ``metrics.parquet``, ``resets.parquet`` (one row per reset parent), ``run_info.json``
and the final ``adapter/`` (or ``model/``) are written to ``out_dir``; ``config.json`` is written
at the start. On CPU, one seed gives identical metrics (fixed thread count, deterministic
algorithms, every random stream seeded from ``seed``).

The configuration (``TrainConfig``, task profiles, the paper's recipe) lives in ``srpo.config``.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from srpo.advantages import group_advantages
from srpo.buffers import build_batch
from srpo.config import (  # noqa: F401  (re-exported: the trainer's public names)
    AUTO,
    LOCALIZER_OF,
    METHODS,
    PAPER_RECIPE,
    RELEASE_PROFILE,
    SYNTHETIC_PROFILE,
    TRAINER_VERSION,
    CheckpointMismatch,
    ConfigError,
    TrainConfig,
    checkpoint_compatibility,
)
from srpo.localize import make_localizer
from srpo.loss import gradient_signal, kl_k3, masked_pg_loss
from srpo.metrics import METRIC_COLUMNS, RESET_COLUMNS, nanmean, reset_metrics

__all__ = [
    "METHODS", "LOCALIZER_OF", "AUTO", "SYNTHETIC_PROFILE", "RELEASE_PROFILE", "PAPER_RECIPE",
    "ConfigError", "CheckpointMismatch", "TrainConfig", "train", "load_policy", "build_task",
    "checkpoint_compatibility",
]


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
    from srpo.data import check_batch_fits, read_problems
    from srpo.tasks import DatasetTask, ModularArithmeticTask

    if config.is_synthetic:
        task = ModularArithmeticTask(n_steps=config.task_steps, modulus=config.task_modulus,
                                     ops=config.task_ops, **config.task_options)
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
    try:  # before any model is loaded or file written
        check_batch_fits(len(problems), config.prompts_per_step, config.task)
    except ValueError as err:
        raise ConfigError("prompts_per_step", str(err)) from None
    return DatasetTask(problems), eval_problems, source


def warm_start_config(config: TrainConfig):
    """The ``srpo.warmstart.WarmStartConfig`` of the tiny model ``config`` trains (its task
    fields from ``config``, the rest from ``config.warmstart``), or None for a ``model`` run."""
    if config.model is not None:
        return None
    from srpo.warmstart import WarmStartConfig

    return WarmStartConfig(**{"num_threads": config.num_threads, **config.warmstart,
                              "n_steps": config.task_steps, "modulus": config.task_modulus,
                              "ops": config.task_ops})


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
        from srpo.warmstart import warm_start

        path = warm_start(warm_start_config(config), cache_dir=config.cache_dir,
                          progress=progress)
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
    from srpo import config as config_module

    sidecar = {"run_key": state["run_key"], "iteration": state["iteration"],
               "trainer_version": config_module.TRAINER_VERSION}
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
    from srpo.engines import make_engine
    from srpo.memory import auto_gen_batch_tokens, cuda_peaks
    from srpo.model import resolve_dtype
    from srpo.rollout import GenerationConfig

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
    dropped = 0
    problems = getattr(task, "problems", None)
    if problems is not None:  # a task file: drop prompts over max_prompt_tokens, as the release
        keep = [p for p in problems if len(tokenizer.encode(task.prompt(p))) <= config.max_prompt_tokens]
        dropped = len(problems) - len(keep)
        if not keep:
            raise ConfigError("max_prompt_tokens", f"max_prompt_tokens: every prompt of "
                                                   f"{config.task} is longer than "
                                                   f"{config.max_prompt_tokens} tokens")
        if len(keep) < config.prompts_per_step:
            raise ConfigError("prompts_per_step", f"prompts_per_step: {len(keep)} of "
                                                  f"{len(problems)} training prompts fit in "
                                                  f"max_prompt_tokens = {config.max_prompt_tokens}"
                                                  f", fewer than one step's {config.prompts_per_step}")
        if dropped:
            note(f"dropped {dropped} of {len(problems)} training prompts longer than "
                 f"{config.max_prompt_tokens} tokens")
        task.problems = keep
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "metrics.jsonl"
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
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
    # the engine is passed the policy; vLLM keeps its own copy, synced after every update
    engine = make_engine(config.engine, model, tokenizer, gen_config, device=config.device,
                         model_path=model_path, seed=config.seed, options=config.vllm_options(),
                         dtype=str(resolve_dtype(config.dtype, config.device)).replace("torch.", ""))
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
        engine.sync(model)  # the resumed weights
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
        # allocated (live tensors) and reserved (what the caching allocator holds: what runs out)
        return {**cuda_peaks(config.device), "rss_max_gib": rss}

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
        adv = group_advantages(rewards, gids, std=config.adv_std, std_eps=config.adv_eps)
        t_update = time.perf_counter()
        upd = _policy_update(model, ref_model, optimizer, batch.samples, adv, config, tokenizer)
        time_update = time.perf_counter() - t_update
        t_sync = time.perf_counter()
        engine.sync(model)  # the next rollouts and the evaluation use the updated policy
        time_sync = time.perf_counter() - t_sync

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
            "time_sync_s": time_sync,
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
                "prefix_split": e.prefix_split, "prefix_exact": e.prefix_exact,
            })
        log_row(row)
        if config.checkpoint_every and (it % config.checkpoint_every == 0 or it == steps):
            checkpoint(it)
        if progress is not None:
            progress(it, steps)
        if callback is not None:
            callback(rows[-1])

    engine.close()
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
            "engine": config.engine, "engine_stats": getattr(engine, "stats", None),
            "weights": weights,
            "localizer": None if localizer is None else localizer.stats.as_dict()}
    (out / "run_info.json").write_text(json.dumps(info, indent=2, default=str))
    return df
