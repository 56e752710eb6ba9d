"""SRPO / RRPO / oracle resets / GRPO with TRL's GRPOTrainer (``srpo.integrations.trl``).

Methods: grpo, rrpo, srpo, oracle, srpo-offset (``--localization-offset N``) and fixed-reset.
score, critique-grpo, spo-tree, treerl and entropy-reset are refused with the reason TRL's
rollout function and loss cannot express them (docs/engines.md); run them with
``experiments/llm_srpo.py``.

One method per run; works under ``accelerate launch`` (several GPUs, DeepSpeed ZeRO) and as a plain
script (one device). The batch logic, localization, thought rules and metrics are the ones of
``experiments/llm_srpo.py``; TRL does the loss, the optimizer and the distribution.

    python experiments/trl_srpo.py --quick                    # 2 steps of the tiny model on CPU
    python experiments/trl_srpo.py --quick --engine vllm --model DIR   # rollouts on vLLM (CPU)

    # one GPU, vLLM colocated (TRL's vLLM, synced by TRL before each generation); the same
    # command as docs/engines.md: 32 x 8 rows in 4 optimizer steps of 8 accumulated micro-batches
    # of 8 rows, gradient checkpointing on (the default for a task file)
    python experiments/trl_srpo.py --model DIR --task train.parquet --recipe paper --bf16 \\
        --gradient-checkpointing --use-vllm --vllm-mode colocate \\
        --vllm-gpu-memory-utilization 0.35 --grad-accum 8 --out runs/trl_1gpu

    # 7B on 2 GPUs / 14B on 4 GPUs: docs/engines.md has the exact accelerate commands

Batch geometry: ``--prompts-per-step P`` prompts x ``--rollouts-per-prompt R`` (TRL's
``num_generations``) per generation, trained in ``--mini-batches M`` optimizer steps (the release:
4), each accumulated over ``--grad-accum A`` micro-batches of ``per_device_train_batch_size = P * R
/ (M * A * processes)`` rows; each process must get whole prompts (``P / processes`` prompts).
Both are checked, with the numbers, before anything is loaded. ``--steps N`` counts iterations
(generations), as in ``experiments/llm_srpo.py``: TRL's ``max_steps`` is ``N * M`` optimizer steps.
``--[no-]gradient-checkpointing`` defaults to the task's profile (on for a task file).

Loss: SRPO / RRPO / oracle train every mini-batch of a generation with the release's uncorrected
REINFORCE (TRL is told not to compute old log-probs it would only throw away); ``--recipe paper
--method grpo`` is the release's GRPO baseline, PPO-clip 0.2 with token-mean (TRL ``dapo``) on
TRL's old log-probs and advantages over the sample std + 1e-6.

Writes to ``--out`` (default ``runs/trl_srpo``; ``runs/trl_quick`` with ``--quick``): TRL's
``trainer_state.json`` (``log_history`` with the ``srpo/*`` metrics: every generated token by
purpose, reset rate, localization fallbacks...), ``resets.parquet`` (one row per reset parent, the
columns of ``experiments/llm_srpo.py``), ``srpo_run.json`` (the settings and the command) and the
trained weights (``adapter/`` with LoRA, else ``model/``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

try:  # torch-free: every input is checked before anything heavy is imported
    from srpo.config import AGG_MODES, METHODS, ConfigError, TrainConfig, recipe_values  # noqa: F401
except ModuleNotFoundError as _error:  # srpo says which extra to install
    raise SystemExit(f"trl_srpo.py: error: {_error}") from None
from experiments.cli_checks import out_dir_problem, user_words, whole_number_problem  # noqa: E402

DEFAULT_OUT = "runs/trl_srpo"
QUICK_OUT = "runs/trl_quick"
QUICK = dict(steps=2, prompts_per_step=2, max_thoughts=4, max_thought_tokens=12,
             localization_max_new_tokens=8, task_steps=2)
#: our aggregation -> TRL's loss_type with the same gradient
LOSS_TYPE_OF_AGG = {"seq-mean-token-mean": "grpo", "token-mean": "dapo"}

#: argparse dest -> TrainConfig field (validated there, with the task profiles)
FLAG_FIELDS = {
    "task_type": "task_type",
    "split": "split", "model": "model", "task": "task", "lora_rank": "lora_rank",
    "lora_alpha": "lora_alpha", "lora_targets": "lora_target_modules", "steps": "steps",
    "epochs": "epochs", "prompts_per_step": "prompts_per_step",
    "rollouts_per_prompt": "rollouts_per_prompt", "max_fresh_chains": "max_fresh_chains",
    "lr": "lr", "weight_decay": "weight_decay", "grad_clip": "grad_clip", "agg": "agg",
    "loss": "loss", "clip_eps": "clip_eps", "adv_std": "adv_std", "adv_eps": "adv_eps",
    "mini_batches": "mini_batches", "kl_coef": "kl_coef", "temperature": "temperature",
    "top_p": "top_p", "max_thoughts": "max_thoughts", "max_thought_tokens": "max_thought_tokens",
    "max_response_tokens": "max_response_tokens", "max_prompt_tokens": "max_prompt_tokens",
    "max_model_len": "max_model_len", "localization_max_tokens": "localization_max_new_tokens",
    "localization_temperature": "localization_temperature",
    "localization_top_p": "localization_top_p", "localization_prompt": "localization_prompt",
    "localization_stop_at_boxed": "localization_stop_at_boxed",
    "localization_fallback": "localization_fallback", "question_field": "question_field",
    "answer_field": "answer_field", "cache_dir": "cache_dir", "threads": "num_threads",
    "vllm_gpu_memory_utilization": "vllm_gpu_memory_utilization",
    "vllm_kv_cache_gib": "vllm_kv_cache_gib", "seed": "seed",
    "gen_batch_tokens": "gen_batch_tokens", "gradient_checkpointing": "grad_checkpointing",
    "localization_offset": "localization_offset",
}
FIELD_FLAGS = {field: "--" + dest.replace("_", "-") for dest, field in FLAG_FIELDS.items()}


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _int_or_none(text: str):
    return "none" if text.lower() == "none" else int(text)


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="trl_srpo.py", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("method and data")
    g.add_argument("--method", default="srpo", choices=METHODS,
                   help="grpo, rrpo, srpo, oracle, srpo-offset, fixed-reset (the others need "
                        "experiments/llm_srpo.py: docs/engines.md)")
    g.add_argument("--localization-offset", type=int, default=None, metavar="N",
                   help="move every localized step N thoughts earlier, floor 1 (reset methods)")
    g.add_argument("--split", default=None, choices=("1x4", "2x4", "1x8"))
    g.add_argument("--no-mask", action="store_true", help="ablation: train on the copied prefix")
    g.add_argument("--recipe", default=None, choices=("paper",),
                   help="the paper's recipe (LoRA r64, lr 5e-5, 32 x 8, 4 mini-batches, ...)")
    g.add_argument("--task", default="synthetic",
                   help="'synthetic', 'synthetic_code' (the tiny coding task) or a .jsonl/.parquet "
                        "file")
    g.add_argument("--task-type", default=None, choices=("qa", "code"),
                   help="code: rewards from the reward tests in the sandbox (docs/code.md)")
    g.add_argument("--question-field", default=None)
    g.add_argument("--answer-field", default=None)
    g.add_argument("--quick", action="store_true",
                   help="two steps of the tiny model on CPU (writes runs/trl_quick)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="local Hugging Face model directory (default: the tiny warm-started model)")
    g.add_argument("--lora-rank", type=int, default=None)
    g.add_argument("--lora-alpha", type=float, default=None)
    g.add_argument("--lora-targets", default=None)
    g.add_argument("--bf16", action="store_true", help="bfloat16 weights and autocast (GPU)")
    g.add_argument("--gradient-checkpointing", default=None, action=argparse.BooleanOptionalAction,
                   help="recompute activations in the backward (default: on for a task file)")
    g = p.add_argument_group("budget and optimisation")
    g.add_argument("--steps", type=int, default=None,
                   help="iterations (generations), as llm_srpo.py; TRL max_steps = steps x "
                        "mini-batches optimizer steps")
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--prompts-per-step", type=int, default=None,
                   help="prompts per generation, over all processes")
    g.add_argument("--rollouts-per-prompt", type=int, default=None, help="R = num_generations")
    g.add_argument("--max-fresh-chains", type=int, default=None)
    g.add_argument("--mini-batches", type=int, default=None,
                   help="optimizer steps per generation (TRL steps_per_generation / grad-accum)")
    g.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches accumulated per optimizer step (memory)")
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--weight-decay", type=float, default=None)
    g.add_argument("--grad-clip", type=float, default=None)
    g.add_argument("--agg", default=None, choices=tuple(LOSS_TYPE_OF_AGG),
                   help="seq-mean-token-mean (TRL loss_type grpo) or token-mean (dapo)")
    g.add_argument("--loss", default=None, choices=("reinforce", "ppo-clip"),
                   help="reinforce: ratio 1 on every mini-batch (the release's SRPO); ppo-clip: "
                        "TRL's clipped ratio on its old log-probs")
    g.add_argument("--clip-eps", type=float, default=None, help="PPO clip epsilon (TRL epsilon)")
    g.add_argument("--adv-std", default=None, choices=("population", "unbiased", "none"))
    g.add_argument("--adv-eps", type=float, default=None)
    g.add_argument("--kl-coef", type=float, default=None, help="TRL beta")
    g.add_argument("--temperature", type=float, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--seed", type=int, default=None)
    g = p.add_argument_group("thoughts and localization (defaults: the task's profile)")
    g.add_argument("--max-thoughts", type=int, default=None)
    g.add_argument("--max-thought-tokens", type=int, default=None)
    g.add_argument("--max-response-tokens", type=_int_or_none, default=None)
    g.add_argument("--max-prompt-tokens", type=int, default=None)
    g.add_argument("--max-model-len", type=_int_or_none, default=None)
    g.add_argument("--localization-max-tokens", type=int, default=None)
    g.add_argument("--localization-temperature", type=float, default=None)
    g.add_argument("--localization-top-p", type=float, default=None)
    g.add_argument("--localization-prompt", default=None, choices=("release", "compact"))
    g.add_argument("--localization-stop-at-boxed", default=None,
                   action=argparse.BooleanOptionalAction)
    g.add_argument("--localization-fallback", default=None, choices=("step1", "random"))
    g = p.add_argument_group("generation engine (docs/engines.md)")
    g.add_argument("--engine", default="auto", choices=("auto", "hf", "vllm", "trl"),
                   help="auto: TRL's vLLM with --use-vllm, else the Hugging Face loop; vllm: our "
                        "own in-process vLLM engine synced each step")
    g.add_argument("--gen-batch-tokens", type=int, default=None,
                   help="the hf engine's generation batch budget in tokens (default: no cap)")
    g.add_argument("--use-vllm", action="store_true", help="TRL's vLLM (GPU)")
    g.add_argument("--vllm-mode", default="colocate", choices=("colocate", "server"))
    g.add_argument("--vllm-gpu-memory-utilization", type=float, default=None)
    g.add_argument("--vllm-kv-cache-gib", type=float, default=None, help="our vLLM engine (CPU)")
    g.add_argument("--vllm-server-host", default="0.0.0.0")
    g.add_argument("--vllm-server-port", type=int, default=8000)
    g = p.add_argument_group("run")
    g.add_argument("--out", default=None)
    g.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    g.add_argument("--cache-dir", default=None, help="warm-start cache of the tiny model")
    g.add_argument("--logging-steps", type=int, default=1)
    g.add_argument("--save-steps", type=int, default=0, help="checkpoint every N steps (0: none)")
    g.add_argument("--report-to", default="none", help="TRL report_to (none, wandb, ...)")
    return p


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def world_size() -> int:
    """Processes of this launch (``accelerate launch`` sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and check every input (one-line errors, exit 2, nothing written)."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.out is None:
        args.out = QUICK_OUT if args.quick else DEFAULT_OUT
    if Path(args.out).is_file():
        p.error(f"--out {args.out!r} is a file; expected a directory")
    if args.model is not None and not Path(args.model).is_dir():
        p.error(f"--model {args.model!r} is not a directory (expected a local Hugging Face model)")
    if args.task not in ("synthetic", "synthetic_code") and args.model is None:
        p.error("--task FILE needs --model (the tiny model only knows the synthetic task)")
    if args.use_vllm and args.engine in ("hf", "vllm"):
        p.error(f"--use-vllm generates with TRL's vLLM; it does not go with --engine {args.engine}")
    if args.engine == "trl" and not args.use_vllm:
        p.error("--engine trl needs --use-vllm")
    if problem := whole_number_problem("--grad-accum", args.grad_accum, 1):
        p.error(problem)
    from srpo.methods import get_method

    reason = get_method(args.method).trl
    if reason is None and get_method(args.method).localizer == "entropy":
        reason = "the entropy rule needs the policy's token entropies inside the rollout function"
    if reason is not None:
        p.error(f"--method {args.method} cannot run in TRL's GRPOTrainer: {reason}; run it with "
                "experiments/llm_srpo.py")
    values = dict(QUICK) if args.quick else {}
    values.update(recipe_values(args.method, args.recipe))
    for dest, field_name in FLAG_FIELDS.items():
        value = getattr(args, dest)
        if value is not None:
            values[field_name] = None if value == "none" else value
    if args.engine == "vllm":
        values["engine"] = "vllm"
    try:
        args.config = TrainConfig(**values, method=args.method, mask_prefix=not args.no_mask,
                                  out_dir=args.out, checkpoint_every=0)
    except ConfigError as err:
        message, flag = str(err), FIELD_FLAGS.get(err.field)
        if flag is not None and not message.startswith(err.field + " "):
            message = f"{flag}: {message}"
        p.error(user_words(message, FIELD_FLAGS))
    cfg = args.config
    if not cfg.is_tiny:  # a bad file or too few problems: one line, before anything loads
        from srpo.data import check_batch_fits, read_problems

        try:
            if cfg.task_type == "code":  # its training problems (not the held-out ones)
                from srpo.code.formats import read_code_problems

                n = sum(not q.heldout_problem for q in read_code_problems(cfg.task))
            else:
                n = len(read_problems(cfg.task, cfg.question_field, cfg.answer_field))
            check_batch_fits(n, cfg.prompts_per_step, cfg.task)
        except ValueError as err:
            p.error(str(err).replace("prompts_per_step", "--prompts-per-step", 1))
    args.gradient_checkpointing = bool(cfg.grad_checkpointing)
    rows = cfg.prompts_per_step * cfg.rollouts_per_prompt
    per_update = cfg.mini_batches * args.grad_accum * world_size()
    if rows % per_update:
        p.error(f"--prompts-per-step {cfg.prompts_per_step} x --rollouts-per-prompt "
                f"{cfg.rollouts_per_prompt} = {rows} rows do not split into --mini-batches "
                f"{cfg.mini_batches} x --grad-accum {args.grad_accum} x {world_size()} processes")
    args.per_device_batch = rows // per_update
    if (args.per_device_batch * cfg.mini_batches * args.grad_accum) % cfg.rollouts_per_prompt:
        p.error(f"each process would get {args.per_device_batch * cfg.mini_batches * args.grad_accum}"
                f" rows per generation, not whole prompts of {cfg.rollouts_per_prompt} rollouts: "
                "change --prompts-per-step or the number of processes")
    if cfg.engine == "vllm" and cfg.model is None:
        p.error("--engine vllm needs --model DIR (vLLM's CPU attention refuses the tiny "
                "warm-started model's head size 16)")
    if problem := out_dir_problem(args.out):  # last (no folder for a bad command), before TRL
        p.error(problem)
    return args


def grpo_config(args):
    """The ``GRPOConfig`` of the run (every SRPO-relevant field set explicitly)."""
    import torch
    from trl import GRPOConfig

    cfg = args.config
    cpu = not torch.cuda.is_available()
    kwargs = dict(
        output_dir=args.out, use_cpu=cpu, bf16=bool(args.bf16), fp16=False,
        per_device_train_batch_size=args.per_device_batch,
        gradient_accumulation_steps=args.grad_accum,
        steps_per_generation=cfg.mini_batches * args.grad_accum,
        num_generations=cfg.rollouts_per_prompt, num_iterations=1,
        max_completion_length=cfg.max_thoughts * cfg.max_thought_tokens,
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay, lr_scheduler_type="constant",
        max_grad_norm=cfg.grad_clip if cfg.grad_clip is not None else 0.0,
        beta=cfg.kl_coef, loss_type=LOSS_TYPE_OF_AGG[cfg.agg], scale_rewards="none",
        epsilon=cfg.clip_eps,
        temperature=cfg.temperature, top_p=cfg.top_p, mask_truncated_completions=False,
        logging_steps=args.logging_steps, report_to=[] if args.report_to == "none"
        else [args.report_to], save_strategy="steps" if args.save_steps else "no",
        seed=cfg.seed, disable_dropout=True, gradient_checkpointing=args.gradient_checkpointing,
        model_init_kwargs={"dtype": "bfloat16" if args.bf16 else "float32"},
        use_vllm=bool(args.use_vllm), vllm_importance_sampling_correction=False,
    )
    if args.save_steps:
        kwargs["save_steps"] = args.save_steps
    if cfg.steps is not None:  # iterations (generations) of mini_batches optimizer steps each
        kwargs["max_steps"] = cfg.steps * cfg.mini_batches
    else:
        kwargs["num_train_epochs"] = cfg.epochs
    if args.use_vllm:
        kwargs.update(vllm_mode=args.vllm_mode,
                      vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                      vllm_enable_sleep_mode=False)
        if args.vllm_mode == "server":
            kwargs.update(vllm_server_host=args.vllm_server_host,
                          vllm_server_port=args.vllm_server_port)
    return GRPOConfig(**kwargs)


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from srpo.memory import configure_cuda_allocator

    # before the first CUDA allocation; not with vLLM (its own memory pool)
    uses_vllm = args.use_vllm or args.config.engine == "vllm"
    configure_cuda_allocator("cuda" if _cuda_visible() else "cpu", "vllm" if uses_vllm else "hf")
    import numpy as np
    import torch

    torch.set_num_threads(args.config.num_threads)
    from transformers import AutoTokenizer

    from srpo.integrations.trl import SRPOSettings, SRPOTrainer
    from srpo.trainer import build_task

    cfg = args.config
    task, eval_problems, _ = build_task(cfg)
    if cfg.is_tiny:
        # a seeded stream of synthetic problems, as many as the run will draw
        steps = cfg.steps or 1
        train_problems = task.sample(cfg.prompts_per_step * steps * max(cfg.epochs, 1),
                                     np.random.default_rng(cfg.seed))
    else:
        train_problems = list(task.problems)
    if cfg.model is None:
        from srpo.trainer import load_policy

        _, _, model_path = load_policy(cfg)  # warm-starts the tiny model once (cached)
    else:
        model_path = cfg.model
    from srpo.engines.vllm import base_model_dir

    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir(model_path)))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    keep = [p for p in train_problems
            if len(tokenizer.encode(task.prompt(p))) <= cfg.max_prompt_tokens]
    peft_config = None
    if cfg.lora_rank is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha or cfg.lora_rank,
                                 lora_dropout=0.0, target_modules=cfg.lora_target_modules,
                                 task_type="CAUSAL_LM")
    engine = "vllm" if cfg.engine == "vllm" else args.engine
    settings = SRPOSettings.from_train_config(cfg, engine=engine, model_path=str(model_path),
                                              reinforce_minibatches=cfg.loss == "reinforce")
    trainer = SRPOTrainer(str(base_model_dir(model_path)), grpo_config(args), task, keep, settings,
                          processing_class=tokenizer, peft_config=peft_config)
    t0 = time.time()
    trainer.train()
    wall = time.time() - t0
    out = Path(args.out)
    trainer.save_model(str(out / ("adapter" if peft_config is not None else "model")))
    trainer.save_state()  # trainer_state.json: log_history with the srpo/* metrics
    engine_stats = getattr(trainer.srpo_rollout.engine, "stats", None)
    trainer.srpo_rollout.close()
    info = {"command": " ".join(["python", "experiments/trl_srpo.py",
                                 *(argv if argv is not None else sys.argv[1:])]),
            "processes": trainer.accelerator.num_processes, "wall_time_s": wall,
            "model_path": str(model_path), "settings": {
                k: (v.to_dict() if hasattr(v, "to_dict") else v)
                for k, v in vars(settings).items()},
            "train_problems": len(keep), "dropped_long_prompts": len(train_problems) - len(keep),
            "engine_stats": engine_stats}
    if trainer.accelerator.is_main_process:
        (out / "srpo_run.json").write_text(json.dumps(info, indent=2, default=str))
        logged = [h for h in trainer.state.log_history if "loss" in h]
        print(f"trl_srpo.py: {cfg.method} {len(logged)} steps in {wall:.0f} s; "
              f"wrote {out}/trainer_state.json, resets.parquet, srpo_run.json", flush=True)
    return info


if __name__ == "__main__":
    main()
