"""The RL loop: every registered method (``srpo.methods``) with one configuration dataclass.

One iteration is a sequence of phases that never looks at the method's name:

1. **problems**: ``prompts_per_step`` problems: a seeded stream of synthetic problems, or the next
   batch of an epoch over the task file (``srpo.data.EpochSampler``);
2. **roll out**: the method's plan builds the batch (``method.plan(ctx, problems)``: which chains,
   from which prefixes, which tokens carry gradient) under ``rollouts_per_prompt`` terminal
   rollouts per prompt; generation runs in batches under a token budget;
3. **log-probs**: what the loss and the method need before the advantages (the sampling policy's
   for PPO ratios and probability masks, the reference policy's for KL terms;
   ``srpo.update.PolicyUpdater.precompute``);
4. **advantages**: the method's registered estimator (``srpo.advantages``), (B,) or (B, T);
5. **update**: the registered policy loss (``srpo.loss.POLICY_LOSSES[config.loss]``) in
   ``mini_batches`` optimizer steps (prompts split evenly; the release: 4), each accumulated over
   micro-batches capped in sequences and tokens (``srpo.update``); the engine is synced;
6. **evaluate**: greedy pass@1 on the held-out problems every ``eval_every`` iterations and at the
   end; a metrics row (``srpo.metrics.METRIC_COLUMNS`` plus phase times, tokens by purpose and
   peak memory: CUDA allocated and reserved, process RSS) goes to ``metrics.jsonl``;
7. **checkpoint**: every ``checkpoint_every`` iterations model, optimizer, RNG and sampler states
   and all rows so far (``checkpoint.pt``, its key in ``checkpoint.json``) and the trained weights
   in Hugging Face form (``adapter/`` for LoRA, ``model/`` otherwise), so that a killed run
   resumes (``resume=True``) with no lost or duplicated rows.

At the end ``metrics.parquet``, ``resets.parquet`` (one row per reset parent), ``run_info.json``
and the final weights are written to ``out_dir``; ``config.json`` is written at the start. On
CPU, one seed gives identical metrics (fixed thread count, deterministic algorithms, every random
stream seeded from ``seed``). The configuration lives in ``srpo.config``, the setup in
``srpo.setup``.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from srpo.advantages import compute_advantages
from srpo.checkpoint import append_row, jsonable, save_checkpoint, save_weights
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
from srpo.metrics import METRIC_COLUMNS, RESET_COLUMNS, reset_metrics
from srpo.setup import (  # noqa: F401  (re-exported)
    TOTALS,
    Run,
    build_task,
    load_policy,
    make_run,
    set_determinism,
    warm_start_config,
)
from srpo.update import micro_batches as _micro_batches  # noqa: F401  (re-exported for tests)
from srpo.update import mini_batches as _mini_batches  # noqa: F401

__all__ = [
    "METHODS", "LOCALIZER_OF", "AUTO", "SYNTHETIC_PROFILE", "RELEASE_PROFILE", "PAPER_RECIPE",
    "ConfigError", "CheckpointMismatch", "TrainConfig", "train", "load_policy", "build_task",
    "checkpoint_compatibility", "evaluate", "advantages_of",
]


def evaluate(engine, tokenizer, task, problems) -> float:
    """Greedy pass@1 on ``problems`` (fraction graded correct), thought by thought; a task with
    ``eval_scores`` (the coding task) scores it: the mean fraction of held-out tests passed."""
    prompts = [tokenizer.encode(task.prompt(p)) for p in problems]
    chains = engine.greedy(prompts)
    scores = getattr(task, "eval_scores", None)
    if scores is not None:
        return float(np.mean(scores(problems, [c.text for c in chains])))
    return float(np.mean([task.grade(p, c.text) for p, c in zip(problems, chains)]))


def advantages_of(method, config, batch, arrays: dict):
    """The method's registered estimator on the batch's arrays: (B,) or (B, T) float64."""
    name, params = method.advantage, dict(method.advantage_params(config, config.options()))
    if name == "auto":  # the GRPO family: z-scores (the release's GRPO: sample std + 1e-6)
        name = "group_zscore"
        params.update(std=config.adv_std, std_eps=config.adv_eps)
    return compute_advantages(name, arrays, **params)


def _policy_update(model, ref_model, optimizer, samples, advantages, config, tokenizer):
    """One update on a fixed batch (the ``srpo.update.PolicyUpdater`` of ``config.method``)."""
    from srpo.update import PolicyUpdater

    method = config.method_spec
    updater = PolicyUpdater(model, ref_model, optimizer, config, tokenizer,
                            loss_params=method.loss_params(config, config.options()),
                            needs=method.needs)
    cache = updater.precompute(samples)
    return updater.update(samples, np.asarray(advantages, dtype=np.float64), cache)


# ------------------------------------------------------------------------------------------------
# Phases of one iteration
# ------------------------------------------------------------------------------------------------


def _draw_problems(run: Run) -> list:
    if run.sampler is None:
        return run.task.sample(run.config.prompts_per_step, run.rng_problems)
    return [run.task.problems[i] for i in run.sampler.next_batch()]


def _batch_arrays(run: Run, batch, cache) -> dict:
    """``Batch.arrays`` plus the cached log-probs the estimators may read: ``old_logprobs``
    (B, T) and ``seq_kl`` (B,), mean_t (log pi_old - log pi_ref) over trained tokens."""
    arrays = batch.arrays()
    width = arrays["loss_mask"].shape[1]
    old = run.updater.per_sample(cache, "old", batch.samples)
    ref = run.updater.per_sample(cache, "ref", batch.samples)
    if old is not None:
        pad = np.zeros((len(old), width))
        for i, row in enumerate(old):
            pad[i, : len(row)] = row
        arrays["old_logprobs"] = pad
    if ref is not None and old is not None:
        kl = []
        for s, o, r in zip(batch.samples, old, ref):
            m = np.asarray(s.loss_mask, dtype=bool)
            kl.append(float((o - r)[m].mean()) if m.any() else 0.0)
        arrays["seq_kl"] = np.array(kl)
    return arrays


def _adv_abs_mean(adv: np.ndarray, arrays: dict) -> float:
    if adv.ndim == 1:
        return float(np.abs(adv).mean())
    mask = arrays["loss_mask"] > 0
    return float(np.abs(adv[mask]).mean()) if mask.any() else 0.0


def _memory(config) -> dict:
    from srpo.memory import cuda_peaks

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    # allocated (live tensors) and reserved (what the caching allocator holds: what runs out)
    return {**cuda_peaks(config.device), "rss_max_gib": rss}


def _base_columns(run: Run) -> dict:
    method = run.method
    split = run.config.split if method.localizer != "none" else method.name
    return {"method": run.config.method, "seed": run.config.seed, "split": split,
            "mask_prefix": run.config.mask_prefix}


def _log_row(run: Run, row: dict) -> None:
    row = {k: jsonable(v) for k, v in row.items()}
    run.rows.append(row)
    append_row(run.jsonl, row)


def _checkpoint(run: Run, iteration: int) -> None:
    save_checkpoint(run.out / "checkpoint.pt", run.state(iteration))
    if run.config.save_weights:
        save_weights(run.model, run.tokenizer, run.out, iteration)


def _initial_row(run: Run) -> None:
    t0 = time.perf_counter()
    j0 = evaluate(run.engine, run.tokenizer, run.task, run.eval_problems)
    _log_row(run, {**{c: float("nan") for c in METRIC_COLUMNS}, **_base_columns(run),
                   "iteration": 0, **dict.fromkeys(run.totals, 0), "eval_pass_rate": j0, "J": j0,
                   "localization_fallbacks": 0, "time_eval_s": time.perf_counter() - t0,
                   **_memory(run.config), "wall_time": run.wall()})
    if run.config.checkpoint_every:
        _checkpoint(run, 0)


def _add_totals(run: Run, batch) -> dict:
    acc = batch.accounting.as_dict()
    run.totals["rollouts"] += len(batch.samples)
    run.totals["fresh_chains"] += acc["chains_fresh"]
    for k in TOTALS:
        if k not in ("rollouts", "fresh_chains"):
            run.totals[k] += acc[k]
    return acc


def _reset_rows(run: Run, it: int, events) -> None:
    for e in events:
        run.reset_rows.append({
            "method": run.config.method, "seed": run.config.seed, "iteration": it,
            "prompt_index": e.prompt_index, "n": e.n, "k": e.k, "source": e.source,
            "fallback": e.fallback, "raw_k": e.raw,
            "first_error": e.first_error, "deviation": e.deviation, "clean": e.clean,
            "prefix_tokens": e.prefix_tokens, "n_suffixes": len(e.suffix_rewards),
            "suffix_successes": e.suffix_successes, "suffix_pass_at_k": e.suffix_pass_at_k,
            "prefix_split": e.prefix_split, "prefix_exact": e.prefix_exact,
        })


def _step(run: Run, it: int) -> dict:
    """One iteration's phases; returns its metrics row."""
    config = run.config
    t_step = time.perf_counter()
    if str(config.device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(config.device)
    problems = _draw_problems(run)
    fallbacks_before = run.localizer.stats.fallbacks if run.localizer is not None else 0
    batch = run.method.plan(run.ctx, problems)  # roll out
    t_update = time.perf_counter()
    cache = run.updater.precompute(batch.samples)  # log-probs the loss and the method need
    arrays = _batch_arrays(run, batch, cache)
    adv = advantages_of(run.method, config, batch, arrays)  # advantages
    shaped = arrays["is_refinement"] if arrays["is_refinement"].any() else None
    upd = run.updater.update(batch.samples, adv, cache, shaped=shaped)  # update
    time_update = time.perf_counter() - t_update
    t_sync = time.perf_counter()
    run.engine.sync(run.model)  # the next rollouts and the evaluation use the updated policy
    time_sync = time.perf_counter() - t_sync
    acc = _add_totals(run, batch)
    j, time_eval = float("nan"), float("nan")
    if it % config.eval_every == 0 or it == run.steps:  # evaluate
        t0 = time.perf_counter()
        j = evaluate(run.engine, run.tokenizer, run.task, run.eval_problems)
        time_eval = time.perf_counter() - t0
    fallbacks = (run.localizer.stats.fallbacks - fallbacks_before) if run.localizer else 0
    _reset_rows(run, it, batch.events)
    return {
        **_base_columns(run), "iteration": it, **run.totals,
        "pass_rate": float(np.mean(batch.first_round_rewards)),
        "eval_pass_rate": j, "J": j,
        "reset_rate": batch.prompts_reset / batch.n_prompts,
        **reset_metrics(batch.events),
        "localization_fallbacks": fallbacks,
        "localization_out_of_range": sum(r.out_of_range for r in batch.localizations),
        "train_reward": float(arrays["rewards"].mean()),
        "adv_abs_mean": _adv_abs_mean(adv, arrays),
        **upd,
        "step_tokens_fresh": acc["tokens_base"] + acc["tokens_parent"] + acc["tokens_discarded"],
        "step_tokens_localization": acc["tokens_localization"],
        "step_tokens_suffix": acc["tokens_suffix"],
        "step_tokens_followup": acc["tokens_followup"],
        "step_tokens_branch": acc["tokens_branch"],
        "time_fresh_s": acc["seconds_fresh"],
        "time_localization_s": acc["seconds_localization"],
        "time_suffix_s": acc["seconds_suffix"],
        "time_update_s": time_update, "time_sync_s": time_sync, "time_eval_s": time_eval,
        "step_time_s": time.perf_counter() - t_step,
        **_memory(config), "wall_time": run.wall(),
    }


def _finish(run: Run) -> pd.DataFrame:
    """Close the engine, write the run's tables, weights and ``run_info.json``."""
    run.engine.close()
    df = pd.DataFrame(run.rows)
    for c in df.columns:
        if df[c].dtype == object and c not in ("method", "split"):
            df[c] = pd.to_numeric(df[c])
    extra = [c for c in df.columns if c not in METRIC_COLUMNS]
    df = df[list(METRIC_COLUMNS) + extra]
    df.to_parquet(run.out / "metrics.parquet", index=False)
    resets = pd.DataFrame(run.reset_rows, columns=list(RESET_COLUMNS))
    resets.to_parquet(run.out / "resets.parquet", index=False)
    weights = None
    if run.config.save_weights:
        weights = str(save_weights(run.model, run.tokenizer, run.out, run.steps))
    info = {"model_path": run.model_path, "run_key": run.key, "steps": run.steps,
            "eval_source": run.eval_source, "eval_problems": len(run.eval_problems),
            "train_problems": run.train_problems,
            "dropped_long_prompts": run.dropped, "gen_batch_tokens": run.gen_budget,
            "engine": run.config.engine, "engine_stats": getattr(run.engine, "stats", None),
            "weights": weights,
            "localizer": None if run.localizer is None else run.localizer.stats.as_dict()}
    (run.out / "run_info.json").write_text(json.dumps(info, indent=2, default=str))
    return df


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
        task: a task object to use instead of the configured one (``sample``/``prompt``/``grade``
            (or ``score``)/``first_error``); the evaluation problems then come from
            ``task.sample`` with ``eval_seed``.
        log: receives one-line notes (dropped prompts, evaluation source, the generation budget).
        warmstart_progress: passed to the warm start of the tiny model (see ``load_policy``).

    Returns:
        ``pandas.DataFrame`` with ``srpo.metrics.METRIC_COLUMNS`` first, then diagnostics.

    Raises:
        CheckpointMismatch: ``out_dir`` holds a checkpoint of another configuration and
            ``resume`` is True (nothing is written then).
    """
    note = log if log is not None else (lambda message: None)
    set_determinism(config)
    exists, mismatch = checkpoint_compatibility(config) if config.resume else (False, None)
    if mismatch:
        raise CheckpointMismatch(f"{mismatch}; use another out_dir or resume=False")
    run = make_run(config, task, note, warmstart_progress, exists)  # set up
    if run.start_iter == 1:
        _initial_row(run)
    for it in range(run.start_iter, run.steps + 1):
        _log_row(run, _step(run, it))
        if config.checkpoint_every and (it % config.checkpoint_every == 0 or it == run.steps):
            _checkpoint(run, it)  # checkpoint
        if progress is not None:
            progress(it, run.steps)
        if callback is not None:
            callback(run.rows[-1])
    return _finish(run)
