"""The RL loop: GRPO, RRPO, SRPO and oracle-reset training with one configuration dataclass.

One iteration (``train``):

1. draw ``prompts_per_step`` problems (a stream shared by every method for a given seed);
2. build the batch (``srpo.buffers.build_batch``) under ``rollouts_per_prompt`` rollouts per prompt:
   ``grpo`` = plain groups, ``rrpo`` = random resets, ``srpo`` = self-localized resets,
   ``oracle`` = resets at the step verifier's first error;
3. z-score rewards within groups (``srpo.group_advantages``);
4. one policy-gradient update with the prefix-masked loss (``srpo.masked_pg_loss``), optionally
   PPO-clip over several passes and a k3 KL penalty to the initial policy;
5. log a metrics row (``srpo.metrics.METRIC_COLUMNS``) to ``metrics.jsonl``; every
   ``checkpoint_every`` iterations save model, optimizer, RNG states and all rows so far, so that a
   killed run resumes (``resume=True``) with no lost or duplicated rows.

At the end ``metrics.parquet``, ``resets.parquet`` (one row per reset parent) and ``config.json``
are written to ``out_dir``. On CPU, one seed gives identical metrics (fixed thread count,
deterministic algorithms, every random stream seeded from ``seed``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from srpo.advantages import group_advantages
from srpo.buffers import SPLITS, build_batch
from srpo.localize import make_localizer
from srpo.loss import AGG_MODES, gradient_signal, kl_k3, masked_pg_loss
from srpo.metrics import METRIC_COLUMNS, RESET_COLUMNS, nanmean, reset_metrics

__all__ = ["METHODS", "LOCALIZER_OF", "TrainConfig", "train", "load_policy", "build_task"]

METHODS = ("grpo", "rrpo", "srpo", "oracle")
LOCALIZER_OF = {"grpo": "none", "rrpo": "random", "srpo": "self", "oracle": "oracle"}
LOSSES = ("reinforce", "ppo-clip")
#: enters ``run_key``: bump when the update rule changes, so that old checkpoints are not resumed
#: (2: log pi at the sampling temperature, seeded LoRA initialisation)
TRAINER_VERSION = 2


@dataclass
class TrainConfig:
    """Everything one RL run needs. Every field is recorded in ``config.json``.

    Method:
        method: ``grpo`` (no resets), ``rrpo`` (random reset step), ``srpo`` (the policy localizes
            the first error of its own failed chain), ``oracle`` (the step verifier's first error).
        split: rollout layout of the reset methods: ``1x4`` (paper default: 4 base chains + 4
            suffixes of one parent), ``2x4`` (two parents x 4 suffixes) or ``1x8``. Ignored by grpo.
        mask_prefix: mask the copied prefix out of the loss; False = the no-mask ablation.

    Budget and optimisation:
        steps: policy updates (iterations).
        prompts_per_step: prompts per iteration (paper: 32).
        rollouts_per_prompt: training rollouts per prompt (paper: 8).
        max_fresh_chains: cap on fresh chains per prompt while looking for failures (paper: 12).
        lr: AdamW learning rate (constant; the same for every method).
        weight_decay: AdamW weight decay (0: a zero-advantage batch leaves the weights alone).
        grad_clip: max global gradient norm (None: no clipping).
        loss: ``reinforce`` (paper default: -A * mean log pi, no ratio) or ``ppo-clip``.
        clip_eps: PPO clip epsilon (``ppo-clip`` only).
        updates_per_step: optimizer passes over each batch (``ppo-clip``; 1 for ``reinforce``).
        agg: loss aggregation, ``seq-mean-token-mean`` (paper) or ``token-mean``.
        adv_std: advantage normalisation: ``population`` (paper), ``unbiased`` or ``none``.
        kl_coef: weight of the k3 KL penalty to the initial policy (paper: 0).
        micro_batch_size: sequences per forward/backward pass (memory only; the loss is the
            same for any value).

    Generation:
        temperature, top_p: rollout sampling (paper: 0.7, 0.95). The loss, the PPO ratio, the
            KL and the gradient signal use log pi at the same temperature (logits / temperature).
        max_thoughts: cap on thoughts per chain (release: 20; the synthetic task needs H + few).
        max_thought_tokens: cap on tokens per thought (release: 256).
        max_new_tokens: cap on sampled tokens per chain (None: max_thoughts * max_thought_tokens).
        localization_temperature: sampling temperature of the self-localization reply (paper 0.3).
        localization_max_new_tokens: cap on the localization reply length (tokens).

    Task and model:
        task: ``synthetic`` (chained modular arithmetic with a step verifier) or a path to a
            ``.jsonl`` / ``.parquet`` file with ``question`` and ``answer`` columns.
        task_steps, task_modulus, task_ops: the synthetic task's H, modulus and operators.
        task_options: further keyword arguments of ``srpo.tasks.ModularArithmeticTask`` (the
            coverage knob ``hard_steps``, ``hard_ops``, ``hard_operands``, ``easy_operands``);
            empty: the plain task. Enters the run
            key only when set.
        model: a local Hugging Face model directory, or None for the tiny model warm-started by
            ``srpo.warmstart`` (loaded from its cache when present).
        lora_rank: wrap the model in a LoRA adapter of this rank (None: train all weights).
        warmstart: overrides of ``srpo.warmstart.WarmStartConfig`` fields for the tiny model
            (the task fields always come from this config).
        cache_dir: warm-start cache root (None: ``srpo.warmstart.default_cache_dir()``).

    Evaluation:
        eval_size: held-out problems (synthetic: drawn with ``eval_seed``; file: a held-out slice).
        eval_every: evaluate (greedy pass@1) every this many iterations, and at 0 and the end.
        eval_seed: seed of the held-out set, separate from training's stream.

    Run:
        seed: seeds the problem stream, the sampling and the random resets.
        device: ``cpu`` or ``cuda``.
        num_threads: torch CPU threads (fixed for determinism).
        out_dir: where metrics, resets, checkpoints and config go.
        checkpoint_every: save a checkpoint every this many iterations (0: never).
        resume: continue from ``out_dir/checkpoint.pt`` when it exists.
    """

    method: str = "srpo"
    split: str = "1x4"
    mask_prefix: bool = True
    steps: int = 40
    prompts_per_step: int = 8
    rollouts_per_prompt: int = 8
    max_fresh_chains: int = 12
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    loss: str = "reinforce"
    clip_eps: float = 0.2
    updates_per_step: int = 1
    agg: str = "seq-mean-token-mean"
    adv_std: str = "population"
    kl_coef: float = 0.0
    micro_batch_size: int = 64
    temperature: float = 0.7
    top_p: float = 0.95
    max_thoughts: int = 8
    max_thought_tokens: int = 24
    max_new_tokens: int | None = None
    localization_temperature: float = 0.3
    localization_max_new_tokens: int = 12
    task: str = "synthetic"
    task_steps: int = 6
    task_modulus: int = 10
    task_ops: tuple[str, ...] = ("+", "-", "*")
    task_options: dict = field(default_factory=dict)
    model: str | None = None
    lora_rank: int | None = None
    warmstart: dict = field(default_factory=dict)
    cache_dir: str | None = None
    eval_size: int = 128
    eval_every: int = 5
    eval_seed: int = 10_007
    seed: int = 0
    device: str = "cpu"
    num_threads: int = 2
    out_dir: str = "runs/llm/run"
    checkpoint_every: int = 5
    resume: bool = True

    def __post_init__(self) -> None:
        self.task_ops = tuple(self.task_ops)
        checks = [
            ("method", self.method, METHODS),
            ("split", self.split, SPLITS[1:]),
            ("loss", self.loss, LOSSES),
            ("agg", self.agg, AGG_MODES),
            ("adv_std", self.adv_std, ("population", "unbiased", "none")),
            ("device", self.device.split(":")[0], ("cpu", "cuda")),
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}; got {value!r}")
        for name in ("steps", "prompts_per_step", "rollouts_per_prompt", "updates_per_step",
                     "eval_size", "eval_every", "micro_batch_size", "num_threads"):
            v = getattr(self, name)
            minimum = 0 if name == "steps" else 1
            if not isinstance(v, int) or v < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}; got {v!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0; got {self.lr}")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0; got {self.kl_coef}")
        if self.loss == "reinforce" and self.updates_per_step != 1:
            raise ValueError("updates_per_step must be 1 with loss='reinforce' (on-policy)")
        if self.method == "oracle" and self.task != "synthetic":
            raise ValueError("method 'oracle' needs a task with a step verifier (task='synthetic')")
        if self.task_options:
            if self.task != "synthetic":
                raise ValueError("task_options apply to task='synthetic' only; got task "
                                 f"{self.task!r}")
            allowed = ("hard_steps", "hard_ops", "hard_operands", "easy_operands")
            unknown = sorted(set(self.task_options) - set(allowed))
            if unknown:
                raise ValueError(f"task_options keys must be among {allowed}; got {unknown}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["task_ops"] = list(self.task_ops)
        return d

    def run_key(self) -> str:
        """Hash of the settings that define the trajectory (not steps/out_dir/resume/eval)."""
        d = self.to_dict()
        for k in ("steps", "out_dir", "resume", "checkpoint_every", "device", "cache_dir"):
            d.pop(k)
        if not d["task_options"]:
            d.pop("task_options")  # runs of the plain task keep their keys (and checkpoints)
        d["trainer_version"] = TRAINER_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------
# Setup helpers
# ------------------------------------------------------------------------------------------------


def build_task(config: TrainConfig):
    """``(train_task, eval_problems)`` for the configured task."""
    from srpo.tasks import DatasetTask, ModularArithmeticTask, load_dataset_file

    if config.task == "synthetic":
        task = ModularArithmeticTask(n_steps=config.task_steps, modulus=config.task_modulus,
                                     ops=config.task_ops, **config.task_options)
        eval_problems = task.sample(config.eval_size, np.random.default_rng(config.eval_seed))
        return task, eval_problems
    problems = load_dataset_file(config.task)
    order = np.random.default_rng(config.eval_seed).permutation(len(problems))
    n_eval = min(config.eval_size, len(problems) // 2)
    if n_eval < 1:
        raise ValueError(f"dataset {config.task!r} needs at least 2 rows (train + held-out)")
    eval_problems = [problems[int(i)] for i in order[:n_eval]]
    train_problems = [problems[int(i)] for i in order[n_eval:]]
    return DatasetTask(train_problems), eval_problems


def load_policy(config: TrainConfig):
    """``(model, tokenizer, model_path)``: the configured model, or the warm-started tiny model."""
    from srpo.model import load_model

    if config.model is None:
        if config.task != "synthetic":
            raise ValueError("the tiny warm-started model only knows the synthetic task; "
                             "pass model= a local Hugging Face model for a dataset task")
        from srpo.warmstart import WarmStartConfig, warm_start

        ws = WarmStartConfig(**{**config.warmstart, "n_steps": config.task_steps,
                                "modulus": config.task_modulus, "ops": config.task_ops})
        path = warm_start(ws, cache_dir=config.cache_dir)
    else:
        path = Path(config.model)
        if not path.exists():
            raise ValueError(f"model path {str(path)!r} does not exist")
    model, tokenizer = load_model(path, device=config.device, lora_rank=config.lora_rank)
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


# ------------------------------------------------------------------------------------------------
# One update
# ------------------------------------------------------------------------------------------------


def _policy_update(model, ref_model, optimizer, samples, advantages, config, tokenizer):
    """Loss, backward and optimizer step(s) on one batch. Returns a dict of statistics."""
    from srpo.rollout import token_logprobs

    pad = tokenizer.pad_token_id or 0
    # log pi of the policy that sampled the rollouts: logits / the sampling temperature (as in
    # verl); top_p is not applied. Greedy sampling (temperature 0) falls back to 1.
    temperature = config.temperature if config.temperature > 0 else 1.0
    mb = config.micro_batch_size
    n = len(samples)
    masks = [torch.tensor(s.loss_mask, dtype=torch.float32) for s in samples]
    n_tok = [int(m.sum()) for m in masks]
    total_seqs = max(sum(t > 0 for t in n_tok), 1)
    total_toks = max(sum(n_tok), 1)
    adv = torch.as_tensor(advantages, dtype=torch.float32)

    def logprobs(model_, idx, grad):
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx:
            lp = token_logprobs(model_, [samples[i].prompt_ids for i in idx],
                                [samples[i].response_ids for i in idx], config.device,
                                temperature=temperature, pad_id=pad)
        width = max(1, max(x.shape[0] for x in lp))
        return _pad(lp, width), _pad([masks[i] for i in idx], width).to(lp[0].device)

    chunks = [list(range(i, min(i + mb, n))) for i in range(0, n, mb)]
    old, ref = {}, {}
    if config.loss == "ppo-clip" or config.kl_coef > 0:
        for c, idx in enumerate(chunks):
            if config.loss == "ppo-clip":
                old[c] = logprobs(model, idx, grad=False)[0]
            if config.kl_coef > 0:
                ref[c] = logprobs(ref_model, idx, grad=False)[0]
    stats = {"loss": 0.0, "kl": 0.0, "clip_frac": 0.0, "grad_norm": float("nan")}
    g_reset, g_base = [], []
    params = [p for _, p in _trainable(model)]
    for epoch in range(config.updates_per_step):
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
                kw = {"old_logprobs": old[c], "clip": config.clip_eps}
            pg, st = masked_pg_loss(lp, a, mask, agg=config.agg, return_stats=True, **kw)
            loss = pg
            if config.kl_coef > 0:
                kl = kl_k3(lp, ref[c], mask, agg=config.agg)
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
            stats.update(loss=loss_total, kl=kl_total, clip_frac=clip_total,
                         grad_norm=float(norm))
    stats["grad_signal_reset"] = nanmean(g_reset)
    stats["grad_signal_base"] = nanmean(g_base)
    return stats


# ------------------------------------------------------------------------------------------------
# Evaluation and checkpoints
# ------------------------------------------------------------------------------------------------


def evaluate(engine, tokenizer, task, problems) -> float:
    """Greedy pass@1 on ``problems`` (fraction graded correct)."""
    prompts = [tokenizer.encode(task.prompt(p)) for p in problems]
    chains = engine.greedy(prompts)
    return float(np.mean([task.grade(p, c.text) for p, c in zip(problems, chains)]))


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# ------------------------------------------------------------------------------------------------
# Main loop
# ------------------------------------------------------------------------------------------------


def train(config: TrainConfig, callback: Callable[[dict], None] | None = None,
          progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Run RL training; return the metrics table (one row per iteration, 0..steps).

    Args:
        config: the run's settings.
        callback: called with each new metrics row after it is logged (and checkpointed); an
            exception raised there stops the run as a kill would (used by the resume test).
        progress: called as ``progress(iteration, steps)`` after each iteration (progress bars).

    Returns:
        ``pandas.DataFrame`` with ``srpo.metrics.METRIC_COLUMNS`` first, then diagnostics.
    """
    from srpo.rollout import GenerationConfig, RolloutEngine

    _set_determinism(config)
    torch.manual_seed(config.seed)  # a new LoRA adapter's initialisation draws from the global RNG
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    jsonl = out / "metrics.jsonl"
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))

    task, eval_problems = build_task(config)
    model, tokenizer, model_path = load_policy(config)
    ref_model = None
    if config.kl_coef > 0:
        ref_model, _, _ = load_policy(config)
        for p in ref_model.parameters():
            p.requires_grad_(False)
    trainable = _trainable(model)
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW([p for _, p in trainable], lr=config.lr,
                                  weight_decay=config.weight_decay)
    gen_config = GenerationConfig(
        temperature=config.temperature, top_p=config.top_p, max_thoughts=config.max_thoughts,
        max_thought_tokens=config.max_thought_tokens, max_new_tokens=config.max_new_tokens,
    )
    engine = RolloutEngine(model, tokenizer, gen_config, device=config.device)
    localizer = make_localizer(
        LOCALIZER_OF[config.method], task=task, engine=engine, tokenizer=tokenizer,
        **({"max_new_tokens": config.localization_max_new_tokens,
            "temperature": config.localization_temperature} if config.method == "srpo" else {}),
    )
    split = "grpo" if config.method == "grpo" else config.split

    seeds = np.random.SeedSequence(config.seed).spawn(3)
    rng_problems = np.random.default_rng(seeds[0])
    rng_reset = np.random.default_rng(seeds[1])
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seeds[2].generate_state(1, dtype=np.uint64)[0] % (2**62)))

    rows: list[dict] = []
    reset_rows: list[dict] = []
    totals = {"rollouts": 0, "generated_tokens": 0, "tokens_base": 0, "tokens_parent": 0,
              "tokens_discarded": 0, "tokens_suffix": 0, "tokens_localization": 0,
              "fresh_chains": 0, "localization_calls": 0}
    start_iter, wall_offset = 1, 0.0
    key = config.run_key()

    if config.resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=config.device, weights_only=False)
        if state["run_key"] != key:
            raise ValueError(
                f"checkpoint in {str(out)!r} belongs to a different configuration "
                f"(run key {state['run_key']} != {key}); use another out_dir or resume=False"
            )
        missing = model.load_state_dict(state["model"], strict=False)
        if missing.unexpected_keys:
            raise ValueError(f"checkpoint has unexpected keys {missing.unexpected_keys[:3]}")
        optimizer.load_state_dict(state["optimizer"])
        rng_problems.bit_generator.state = state["rng_problems"]
        rng_reset.bit_generator.state = state["rng_reset"]
        generator.set_state(state["generator"])
        rows, reset_rows, totals = state["rows"], state["reset_rows"], state["totals"]
        localizer_stats = state.get("localizer_stats")
        if localizer is not None and localizer_stats is not None:
            localizer.stats = localizer_stats
        start_iter, wall_offset = state["iteration"] + 1, state["wall_time"]
        _write_jsonl(jsonl, rows)  # drop rows logged after the checkpoint
    else:
        jsonl.write_text("")

    t_start = time.time() - wall_offset

    def wall() -> float:
        return time.time() - t_start

    def log(row: dict) -> None:
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
            "rows": rows, "reset_rows": reset_rows, "totals": dict(totals),
            "localizer_stats": None if localizer is None else localizer.stats,
        })

    base = {"method": config.method, "seed": config.seed, "split": split,
            "mask_prefix": config.mask_prefix}
    if start_iter == 1:
        j0 = evaluate(engine, tokenizer, task, eval_problems)
        log({**{c: float("nan") for c in METRIC_COLUMNS}, **base, "iteration": 0,
             **{k: 0 for k in totals}, "eval_pass_rate": j0, "J": j0,
             "localization_fallbacks": 0, "wall_time": wall()})
        if config.checkpoint_every:
            checkpoint(0)

    for it in range(start_iter, config.steps + 1):
        problems = task.sample(config.prompts_per_step, rng_problems)
        fallbacks_before = localizer.stats.fallbacks if localizer is not None else 0
        batch = build_batch(
            problems, task, engine, tokenizer, split, localizer, rng_reset, generator,
            rollouts_per_prompt=config.rollouts_per_prompt,
            max_fresh_chains=config.max_fresh_chains, mask_prefix=config.mask_prefix,
        )
        rewards = np.array([s.reward for s in batch.samples])
        gids = np.array([s.group_id for s in batch.samples])
        adv = group_advantages(rewards, gids, std=config.adv_std)
        upd = _policy_update(model, ref_model, optimizer, batch.samples, adv, config, tokenizer)

        acc = batch.accounting.as_dict()
        totals["rollouts"] += len(batch.samples)
        totals["fresh_chains"] += acc["chains_fresh"]
        for k in ("generated_tokens", "tokens_base", "tokens_parent", "tokens_discarded",
                  "tokens_suffix", "tokens_localization", "localization_calls"):
            totals[k] += acc[k]
        rm = reset_metrics(batch.events)
        j = float("nan")
        if it % config.eval_every == 0 or it == config.steps:
            j = evaluate(engine, tokenizer, task, eval_problems)
        fallbacks = (localizer.stats.fallbacks - fallbacks_before) if localizer is not None else 0
        row = {
            **base, "iteration": it, **totals,
            "pass_rate": float(np.mean(batch.first_round_rewards)),
            "eval_pass_rate": j, "J": j,
            "reset_rate": batch.prompts_reset / batch.n_prompts,
            **rm,
            "localization_fallbacks": fallbacks,
            "localization_clamped": sum(r.clamped for r in batch.localizations),
            "train_reward": float(rewards.mean()),
            "adv_abs_mean": float(np.abs(adv).mean()),
            **upd,
            "wall_time": wall(),
        }
        for e in batch.events:
            reset_rows.append({
                "method": config.method, "seed": config.seed, "iteration": it,
                "prompt_index": e.prompt_index, "n": e.n, "k": e.k, "source": e.source,
                "first_error": e.first_error, "deviation": e.deviation, "clean": e.clean,
                "prefix_tokens": e.prefix_tokens, "n_suffixes": len(e.suffix_rewards),
                "suffix_successes": e.suffix_successes, "suffix_pass_at_k": e.suffix_pass_at_k,
            })
        log(row)
        if config.checkpoint_every and (it % config.checkpoint_every == 0 or it == config.steps):
            checkpoint(it)
        if progress is not None:
            progress(it, config.steps)
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
    info = {"model_path": model_path, "run_key": key,
            "localizer": None if localizer is None else localizer.stats.as_dict()}
    (out / "run_info.json").write_text(json.dumps(info, indent=2, default=str))
    return df
