"""GPU check: does the SRPO path run on this card, and how fast? One script, no download.

    python benchmarks/gpu_check.py                         # CUDA: a 1.5B Qwen2, bf16 (target:
                                                           # under 8 min on one H200; not measured)
    python benchmarks/gpu_check.py --device cpu --size tiny --out /tmp/gpu_check   # CI, seconds

What it does, all in code: trains a byte-level BPE tokenizer on a generated arithmetic task,
builds a randomly initialised Qwen2 (or ``--arch llama``) model of a realistic shape (``1.5b``:
28 layers, width 1536, 12 heads, 2 KV heads, MLP 8960; about 1.3 B parameters), saves it as a
Hugging Face directory, runs two SRPO steps through ``srpo.trainer.train`` exactly as
``experiments/llm_srpo.py`` does (LoRA, bf16, gradient checkpointing, mini-batches, generation
under a token budget, every reset group in one batch, chunked log-probs, adapter export), then one
evaluation pass of the exported adapter through ``experiments/llm_eval.py`` (greedy + sampled).
It prints and writes to ``--out/gpu_check.json``: tokens/s of each phase (fresh chains,
localization, suffixes, update, evaluation), step time and peak memory.

A random model solves nothing, so rewards are synthetic (the parity of the response length: half
the chains "succeed"), localization fallbacks are random (``--localization-fallback random``) so
that prefixes of every length are cut and resampled, and thoughts mostly end at their token cap.
The check is of the machinery and its speed, not of learning.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

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
    "1.5b": (28, 1536, 12, 2, 8960, 8192),
    "small": (8, 512, 8, 2, 1536, 4096),
    "tiny": (2, 64, 4, 2, 128, 700),
}
RUN = {
    # name: prompts per step, thoughts, tokens per thought, localization tokens, eval problems,
    #       LoRA rank, generation budget (tokens)
    "1.5b": dict(prompts=16, thoughts=4, thought_tokens=128, loc_tokens=128, eval=32, rank=64,
                 gen_budget=None),
    "small": dict(prompts=8, thoughts=3, thought_tokens=64, loc_tokens=64, eval=16, rank=16,
                  gen_budget=None),
    "tiny": dict(prompts=2, thoughts=2, thought_tokens=6, loc_tokens=6, eval=2, rank=4,
                 gen_budget=400),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="default: cuda when available")
    p.add_argument("--size", default=None, choices=tuple(SIZES),
                   help="model size (default: 1.5b on cuda, tiny on cpu)")
    p.add_argument("--arch", default="qwen2", choices=("qwen2", "llama"))
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
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
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
    vocab = SIZES[args.size][-1]
    run = RUN[args.size]
    report: dict = report_header(args)
    phases: dict = {}

    t0 = time.perf_counter()
    rows = task_rows(max(64, 4 * run["prompts"]))
    data = write_task(rows, out)
    tokenizer = build_bpe_tokenizer(corpus(rows), vocab_size=vocab)
    phases["tokenizer_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    model_dir, report["parameters"] = build_and_save(tokenizer, SIZES[args.size], args.arch,
                                                     args.device, out, max_positions=8192)
    phases["build_and_save_model_s"] = time.perf_counter() - t0
    print(f"{report['device']}: {args.arch} {args.size}, {report['parameters'] / 1e9:.2f} B "
          f"parameters, vocabulary {len(tokenizer)}", flush=True)

    task = parity_task(data)
    config = TrainConfig(
        method="srpo", task=str(data), model=str(model_dir), device=args.device,
        lora_rank=run["rank"], lora_alpha=run["rank"], steps=2, prompts_per_step=run["prompts"],
        rollouts_per_prompt=8, mini_batches=2, max_thoughts=run["thoughts"],
        max_thought_tokens=run["thought_tokens"],
        max_response_tokens=run["thoughts"] * run["thought_tokens"],
        localization_max_new_tokens=run["loc_tokens"], localization_fallback="random",
        eval_size=run["eval"], eval_every=2, gen_batch_tokens=run["gen_budget"],
        grad_checkpointing=True, lr=5e-5, weight_decay=0.01, num_threads=args.threads,
        out_dir=str(out / "run"), resume=False, checkpoint_every=1,
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
                 str(args.threads), "--out", str(out / "eval"), "--fresh"]
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
                      "cuda_peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
    report["phases"] = phases
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
    print(f"peak memory is {'torch.cuda.max_memory_allocated' if cuda else 'process max RSS'}; "
          f"wrote {out / 'gpu_check.json'}")
    return report


if __name__ == "__main__":
    main()
