"""GPU check: does the SRPO path run on this card, and how fast? One script, no download.

From a bare checkout (no install: torch, transformers, tokenizers, peft, numpy, pandas and pyarrow
are all it needs; gymnasium, math-verify and vLLM are not imported):

    PYTHONPATH=. python benchmarks/gpu_check.py                # CUDA: a 1.5B Qwen2, bf16, short
                                                               # limits (minutes; not measured)
    PYTHONPATH=. python benchmarks/gpu_check.py --size 7b --paper-limits   # one paper step of an
                                                               # OLMo-3-7B-shaped model, checked
                                                               # against benchmarks/paper_step.py
    PYTHONPATH=. python benchmarks/gpu_check.py --size 14b --paper-limits  # Qwen2.5-14B shape
    python benchmarks/gpu_check.py --device cpu --size tiny --out /tmp/gpu_check   # CI, seconds

What it does, all in code: trains a byte-level BPE tokenizer with Qwen2's pre-tokenizer regex on a
generated arithmetic task, builds a randomly initialised Qwen2 (or ``--arch llama``) model of a
realistic shape (``1.5b``: 28 layers, width 1536, 12 heads, 2 KV heads, MLP 8960; ``7b``: OLMo-3-7B's
32 layers, width 4096, 32 KV heads, MLP 11008, as a Llama; ``14b``: Qwen2.5-14B's 48 layers, width
5120, 8 KV heads, MLP 13824), saves it as a Hugging Face directory, runs SRPO steps through
``srpo.trainer.train`` exactly as ``experiments/llm_srpo.py`` does (LoRA, bf16, gradient
checkpointing, mini-batches, generation under a token budget, every reset group in one batch,
chunked log-probs, adapter export), then one evaluation pass of the exported adapter through
``experiments/llm_eval.py`` (greedy + sampled). It prints and writes to ``--out/gpu_check.json``:
tokens/s of each phase (fresh chains, localization, suffixes, update, evaluation), step time and
the peak memory (CUDA allocated and reserved).

``--paper-limits``: the recipe's lengths (20 thoughts x 256 tokens, 5,120 response tokens, 8,192
context, 4,096-token localization replies with the release's prompt), its batch (32 prompts x 8
rollouts in 4 mini-batches, LoRA r64; ``--prompts`` shrinks it), one step, and the real vocabulary
of the shape (``1.5b``: Qwen2.5-1.5B's 151,936; ``7b``: OLMo-3's 100,278; ``14b``: Qwen2.5-14B's
152,064; the trained tokenizer is padded with added tokens to that size). The report then puts
the measured phase times and memory next to ``benchmarks/paper_step.py``'s prediction for the
same shape and prompts.

A random model solves nothing, so rewards are synthetic (the parity of the response length: half
the chains "succeed"), localization fallbacks are random (``--localization-fallback random``) so
that prefixes of every length are cut and resampled, and thoughts mostly end at their token cap
(with ``--paper-limits`` every chain runs to the length caps: the worst case the prediction
assumes). The check is of the machinery and its speed, not of learning.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # random_model, paper_step

from random_model import (  # noqa: E402
    build_and_save,
    corpus,
    parity_task,
    report_header,
    task_rows,
    write_task,
)

SIZES = {
    # name: (layers, width, heads, kv heads, MLP width, vocab)
    "14b": (48, 5120, 40, 8, 13824, 8192),
    "7b": (32, 4096, 32, 32, 11008, 8192),
    "1.5b": (28, 1536, 12, 2, 8960, 8192),
    "small": (8, 512, 8, 2, 1536, 4096),
    "tiny": (2, 64, 4, 2, 128, 700),
}
#: the real vocabulary of each shape (``--paper-limits``): Qwen2.5-14B / OLMo-3-7B /
#: Qwen2.5-1.5B as published in their config.json files
REAL_VOCAB = {"14b": 152064, "7b": 100278, "1.5b": 151936, "small": 32000, "tiny": 4096}
#: the architecture each shape is built as (``--arch`` overrides)
ARCH = {"7b": "llama"}
RUN = {
    # name: prompts per step, thoughts, tokens per thought, localization tokens, eval problems,
    #       LoRA rank, generation budget (tokens)
    "14b": dict(prompts=16, thoughts=4, thought_tokens=128, loc_tokens=128, eval=16, rank=64,
                gen_budget=None),
    "7b": dict(prompts=16, thoughts=4, thought_tokens=128, loc_tokens=128, eval=16, rank=64,
               gen_budget=None),
    "1.5b": dict(prompts=16, thoughts=4, thought_tokens=128, loc_tokens=128, eval=32, rank=64,
                 gen_budget=None),
    "small": dict(prompts=8, thoughts=3, thought_tokens=64, loc_tokens=64, eval=16, rank=16,
                  gen_budget=None),
    "tiny": dict(prompts=2, thoughts=2, thought_tokens=6, loc_tokens=6, eval=2, rank=4,
                 gen_budget=400),
}
#: ``--paper-limits``: the recipe's lengths and batch (srpo.config.RELEASE_PROFILE, PAPER_RECIPE)
PAPER_LIMITS = dict(prompts=32, thoughts=20, thought_tokens=256, response_tokens=5120,
                    model_len=8192, loc_tokens=4096, eval=8, rank=64, mini_batches=4, steps=1)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="default: cuda when available")
    p.add_argument("--size", default=None, choices=tuple(SIZES),
                   help="model size (default: 1.5b on cuda, tiny on cpu)")
    p.add_argument("--arch", default=None, choices=("qwen2", "llama"),
                   help="default: llama for 7b (OLMo-3's dense layout), qwen2 otherwise")
    p.add_argument("--paper-limits", action="store_true",
                   help="the recipe's lengths, batch and a real vocabulary size; one step")
    p.add_argument("--prompts", type=int, default=None, help="prompts per step (override)")
    p.add_argument("--steps", type=int, default=None, help="steps (default 2; 1 with --paper-limits)")
    p.add_argument("--out", default="runs/gpu_check")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    if args.size is None:
        args.size = "1.5b" if args.device == "cuda" else "tiny"
    if args.arch is None:
        args.arch = ARCH.get(args.size, "qwen2")
    for name in ("prompts", "steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1; got {getattr(args, name)}")
    return args


def plan(args) -> dict:
    """What the check runs: the vocabulary size and the run settings (no model is built)."""
    run = dict(RUN[args.size])
    run.update(mini_batches=2, steps=2, response_tokens=None, model_len=None,
               loc_prompt=None, loc_stop_at_boxed=None)
    vocab = SIZES[args.size][-1]
    if args.paper_limits:
        run.update(PAPER_LIMITS, gen_budget=run["gen_budget"], loc_prompt="release",
                   loc_stop_at_boxed=False)
        vocab = REAL_VOCAB[args.size]
    if args.prompts is not None:
        run["prompts"] = args.prompts
    if args.steps is not None:
        run["steps"] = args.steps
    if run["response_tokens"] is None:
        run["response_tokens"] = run["thoughts"] * run["thought_tokens"]
    return {"vocab": vocab, "run": run}


def pad_vocabulary(tokenizer, size: int) -> int:
    """Add plain tokens until the tokenizer has ``size`` ids (a trained vocabulary of a real
    model's size would need a real corpus); returns how many were added."""
    missing = size - len(tokenizer)
    if missing > 0:
        tokenizer.add_tokens([f"<|reserved_{i}|>" for i in range(missing)])
    return max(missing, 0)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from srpo.memory import configure_cuda_allocator

    configure_cuda_allocator(args.device)  # before the first CUDA allocation
    import torch

    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    from srpo.config import TrainConfig
    from srpo.tokenizer import build_bpe_tokenizer
    from srpo.trainer import train

    hf_logging.disable_progress_bar()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = args.device == "cuda"
    planned = plan(args)
    run = planned["run"]
    report: dict = report_header(args)
    report["paper_limits"] = bool(args.paper_limits)
    phases: dict = {}

    t0 = time.perf_counter()
    rows = task_rows(max(64, 4 * run["prompts"]))
    data = write_task(rows, out)
    tokenizer = build_bpe_tokenizer(corpus(rows), vocab_size=SIZES[args.size][-1],
                                    pattern="qwen2")
    if args.paper_limits:
        report["padded_vocabulary_tokens"] = pad_vocabulary(tokenizer, planned["vocab"])
    phases["tokenizer_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    model_dir, report["parameters"] = build_and_save(tokenizer, SIZES[args.size], args.arch,
                                                     args.device, out, max_positions=8192)
    phases["build_and_save_model_s"] = time.perf_counter() - t0
    print(f"{report['device']}: {args.arch} {args.size}, {report['parameters'] / 1e9:.2f} B "
          f"parameters, vocabulary {len(tokenizer)}", flush=True)

    task = parity_task(data)
    limits = {}
    if args.paper_limits:
        limits = dict(max_model_len=run["model_len"], localization_prompt=run["loc_prompt"],
                      localization_stop_at_boxed=run["loc_stop_at_boxed"])
    config = TrainConfig(
        method="srpo", task=str(data), model=str(model_dir), device=args.device,
        lora_rank=run["rank"], lora_alpha=run["rank"], steps=run["steps"],
        prompts_per_step=run["prompts"], rollouts_per_prompt=8,
        mini_batches=min(run["mini_batches"], run["prompts"]), max_thoughts=run["thoughts"],
        max_thought_tokens=run["thought_tokens"], max_response_tokens=run["response_tokens"],
        localization_max_new_tokens=run["loc_tokens"], localization_fallback="random",
        eval_size=run["eval"], eval_every=run["steps"], gen_batch_tokens=run["gen_budget"],
        grad_checkpointing=True, lr=5e-5, weight_decay=0.01, num_threads=args.threads,
        out_dir=str(out / "run"), resume=False, checkpoint_every=1, **limits,
    )
    t0 = time.perf_counter()
    metrics = train(config, task=task, log=lambda m: print(f"note: {m}", flush=True))
    phases["train_s"] = time.perf_counter() - t0
    steps = []
    for _, row in metrics[metrics.iteration > 0].iterrows():
        def rate(tokens, seconds):
            return float(tokens) / float(seconds) if seconds and seconds > 0 else None

        steps.append({
            "iteration": int(row.iteration),
            "step_time_s": float(row.step_time_s),
            "fresh_tokens_per_s": rate(row.step_tokens_fresh, row.time_fresh_s),
            "localization_tokens_per_s": rate(row.step_tokens_localization,
                                              row.time_localization_s),
            "suffix_tokens_per_s": rate(row.step_tokens_suffix, row.time_suffix_s),
            "update_tokens_per_s": rate(row.update_tokens, row.time_update_s),
            "time_fresh_s": float(row.time_fresh_s),
            "time_localization_s": float(row.time_localization_s),
            "time_suffix_s": float(row.time_suffix_s),
            "time_update_s": float(row.time_update_s),
            "cuda_peak_gib": None if not cuda else float(row.cuda_peak_gib),
            "cuda_reserved_peak_gib": None if not cuda else float(row.cuda_reserved_peak_gib),
            "rss_max_gib": float(row.rss_max_gib),
            "loss": float(row.loss), "grad_norm": float(row.grad_norm),
        })
        if not np.isfinite(row.loss) or not np.isfinite(row.grad_norm):
            raise SystemExit(f"gpu_check: step {int(row.iteration)} has a non-finite loss or "
                             "gradient norm")
    report["steps"] = steps
    report["train_eval_time_s"] = float(metrics.time_eval_s.dropna().sum())

    from experiments import llm_eval

    t0 = time.perf_counter()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    eval_args = ["--model", str(model_dir), "--adapter", str(out / "run" / "adapter"),
                 "--data", str(data), "--limit", str(run["eval"]), "--samples", "4", "--k", "1",
                 "4", "--max-thoughts", str(run["thoughts"]), "--max-thought-tokens",
                 str(run["thought_tokens"]), "--device", args.device, "--threads",
                 str(args.threads), "--out", str(out / "eval"), "--fresh",
                 "--grader", "exact"]  # a random model writes no box: no math parsing needed
    if run["gen_budget"]:
        eval_args += ["--gen-batch-tokens", str(run["gen_budget"])]
    llm_eval.main(eval_args)
    examples = __import__("pandas").read_parquet(out / "eval" / "examples.parquet")
    eval_seconds = time.perf_counter() - t0
    eval_tokens = int(examples.greedy_tokens.sum() + (examples.sample_tokens_mean
                                                        * examples.n_samples).sum())
    report["eval"] = {"problems": len(examples), "seconds": eval_seconds,
                      "generated_tokens": eval_tokens,
                      "tokens_per_s": eval_tokens / eval_seconds,
                      "cuda_peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                      "cuda_reserved_peak_gib": torch.cuda.max_memory_reserved() / 2**30
                      if cuda else None}
    report["phases"] = phases
    if args.paper_limits:
        report["prediction"] = predicted(args, run, config, steps)
    report["settings"] = {k: v for k, v in config.to_dict().items()
                          if k in ("prompts_per_step", "rollouts_per_prompt", "mini_batches",
                                   "max_thoughts", "max_thought_tokens", "lora_rank", "dtype",
                                   "grad_checkpointing", "gen_batch_tokens")}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))

    def show(x, unit=""):
        return "n/a" if x is None else f"{x:,.0f}{unit}"

    print(f"\n{'step':>4} {'time s':>8} {'fresh tok/s':>12} {'loc tok/s':>10} "
          f"{'suffix tok/s':>13} {'update tok/s':>13} {'peak GiB':>9}")
    for s in steps:
        peak = s["cuda_peak_gib"] if cuda else s["rss_max_gib"]
        print(f"{s['iteration']:>4} {s['step_time_s']:>8.1f} {show(s['fresh_tokens_per_s']):>12} "
              f"{show(s['localization_tokens_per_s']):>10} {show(s['suffix_tokens_per_s']):>13} "
              f"{show(s['update_tokens_per_s']):>13} {peak:>9.1f}")
    print(f"evaluation: {report['eval']['problems']} problems, {eval_tokens} tokens in "
          f"{eval_seconds:.1f} s ({report['eval']['tokens_per_s']:,.0f} tokens/s)")
    if args.paper_limits:
        pred = report["prediction"]
        print(f"\npredicted (benchmarks/paper_step.py) vs measured, step {steps[-1]['iteration']}:")
        for phase in ("fresh", "localization", "suffix", "update"):
            print(f"  {phase:<13} predicted {pred['seconds'][phase]:>7.0f} s, measured "
                  f"{pred['measured_seconds'][phase]:>7.0f} s")
        print(f"  memory peak   predicted {pred['peak_gb']:>7.1f} GB, measured allocated "
              f"{show(pred['measured_allocated_gb'])} GB, reserved "
              f"{show(pred['measured_reserved_gb'])} GB")
    print(f"peak memory is {'CUDA allocated (reserved in the JSON)' if cuda else 'process max RSS'}"
          f"; wrote {out / 'gpu_check.json'}")
    return report


def predicted(args, run: dict, config, steps: list[dict]) -> dict:
    """``benchmarks/paper_step.py``'s prediction for this shape and batch, next to the last
    step's measured phase times and peaks."""
    import json as _json

    from paper_step import H200, Workload, predict

    from srpo.memory import ModelShape

    model_config = _json.loads((Path(config.model) / "config.json").read_text())
    shape = ModelShape.from_config(model_config)
    pred = predict(shape, H200, Workload(prompts=run["prompts"]))
    last = steps[-1]
    gb = 2**30 / 1e9
    return {
        "hardware": H200.name, "shape": dataclasses.asdict(shape),
        "seconds": {"fresh": pred["fresh"]["seconds"],
                    "localization": pred["localization"]["seconds"],
                    "suffix": pred["suffix"]["seconds"], "update": pred["update"]["seconds"]},
        "peak_gb": pred["peak_gb"],
        "measured_seconds": {"fresh": last["time_fresh_s"],
                             "localization": last["time_localization_s"],
                             "suffix": last["time_suffix_s"], "update": last["time_update_s"]},
        "measured_allocated_gb": None if last["cuda_peak_gib"] is None
        else last["cuda_peak_gib"] * gb,
        "measured_reserved_gb": None if last["cuda_reserved_peak_gib"] is None
        else last["cuda_reserved_peak_gib"] * gb,
    }


if __name__ == "__main__":
    main()
