"""Rollout engines and trainers side by side, in one run: tokens/s of the Hugging Face engine and of
the vLLM engine, and the wall time of one training step of our trainer and of the TRL path at equal
rollouts.

    python benchmarks/bench_engines.py --threads 1           # CPU: 4-layer d256 model (head 64)
    python benchmarks/bench_engines.py                       # with a GPU: a 1.5B Qwen2, bf16
    python benchmarks/bench_engines.py --device cuda --train # ... plus the training-step table

Everything is built in code: a byte-level BPE tokenizer trained on a generated arithmetic task, a
randomly initialised Qwen2 / Llama model of the chosen size (head size >= 64: vLLM's CPU attention
refuses 16), saved as a Hugging Face directory (vLLM loads from disk).

1. Engines. The same ``ThoughtEngine`` calls on each engine, with the same seeds: ``chains`` =
   ``generate(P prompts, n rollouts)`` thought by thought (a vLLM call per thought, prefix
   cached); ``plain`` = ``complete(P x n prompts, L tokens)``, one call, no stop string (raw decode
   speed). One warm-up call, then the median of ``--reps`` timed calls; tokens/s = generated tokens
   / wall seconds. The vLLM engine's start-up is reported apart.
2. Training step (``--train``; default on a CPU). ``srpo.trainer.train`` and
   ``srpo.integrations.trl.SRPOTrainer`` on the same model, task and budget: SRPO 1x4, P prompts x
   8 rollouts, LoRA r8, thoughts capped alike, rewards synthetic (the parity of the response
   length: a random model solves nothing). Wall time of a whole optimizer step (generation,
   localization, suffixes, update, engine sync), median over the steps after the first.

Printed as two tables and written to ``--out/bench_engines.json``. A random model's thoughts mostly
end at their token cap, so chains hold ``--thoughts`` thoughts of ``--thought-tokens`` tokens:
the per-thought call overhead of vLLM is in the ``chains`` figure, not in ``plain``. The goal on a
GPU is vLLM >= 5x the own loop (``vllm/hf`` in the first table); on a CPU the own loop is the
default engine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from random_model import (  # noqa: E402
    build_and_save,
    corpus,
    parity_task,
    report_header,
    task_rows,
    write_task,
)

SIZES = {
    # name: (layers, width, heads, kv heads, MLP width, vocab); head size width / heads >= 64
    "1.5b": (28, 1536, 12, 2, 8960, 8192),
    "cpu": (4, 256, 4, 4, 1024, 1024),
    "tiny": (2, 128, 2, 1, 256, 700),
}
WORK = {
    # prompts x rollouts per engine call, thoughts x tokens per thought, plain decode length,
    # timed repetitions, prompts per training step, training steps
    "1.5b": dict(prompts=64, rollouts=8, thoughts=4, thought_tokens=128, plain_tokens=512, reps=3,
                 step_prompts=16, steps=3),
    "cpu": dict(prompts=16, rollouts=4, thoughts=4, thought_tokens=32, plain_tokens=128, reps=3,
                step_prompts=4, steps=3),
    "tiny": dict(prompts=2, rollouts=2, thoughts=2, thought_tokens=8, plain_tokens=8, reps=1,
                 step_prompts=2, steps=2),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="default: cuda when available")
    p.add_argument("--size", default=None, choices=tuple(SIZES),
                   help="model size (default: 1.5b on cuda, cpu on cpu)")
    p.add_argument("--arch", default="qwen2", choices=("qwen2", "llama"))
    p.add_argument("--engines", nargs="+", default=None, choices=("hf", "vllm"),
                   help="default: both when vLLM is installed, else hf")
    p.add_argument("--train", default=None, action=argparse.BooleanOptionalAction,
                   help="also time training steps, ours vs TRL (default: on for cpu)")
    p.add_argument("--reps", type=int, default=None, help="timed engine calls (after a warm-up)")
    p.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.5)
    p.add_argument("--vllm-kv-cache-gib", type=float, default=None,
                   help="vLLM KV cache (default: 1 GiB on cpu; the GPU share on cuda)")
    p.add_argument("--out", default="runs/bench_engines")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    if args.size is None:
        args.size = "1.5b" if args.device == "cuda" else "cpu"
    vllm_ok = importlib.util.find_spec("vllm") is not None
    if args.engines is None:
        args.engines = ["hf", "vllm"] if vllm_ok else ["hf"]
    elif "vllm" in args.engines and not vllm_ok:
        p.error("--engines vllm: vLLM is not installed (docs/engines.md)")
    if args.train is None:
        args.train = args.device == "cpu"
    if args.device == "cpu" and args.vllm_kv_cache_gib is None:
        args.vllm_kv_cache_gib = 1.0
    return args


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def time_engine(engine, prompts, work, device, reps) -> dict:
    """tokens/s of ``generate`` (thought by thought) and of ``complete`` (plain decode)."""
    import torch

    def chains(seed):
        out = engine.generate(prompts, work["rollouts"], torch.Generator().manual_seed(seed))
        return sum(c.n_generated for group in out for c in group)

    def plain(seed):
        flat = [p for p in prompts for _ in range(work["rollouts"])]
        out = engine.complete(flat, work["plain_tokens"], temperature=0.7,
                              generator=torch.Generator().manual_seed(seed), top_p=0.95,
                              stop_at_boxed=False)
        return sum(len(r) for r in out)

    result = {}
    for name, fn in (("chains", chains), ("plain", plain)):
        fn(0)  # warm-up (allocations, kernel selection, vLLM's first scheduling)
        rates, tokens = [], []
        for rep in range(reps):
            _sync(device)
            t0 = time.perf_counter()
            n = fn(rep + 1)
            _sync(device)
            rates.append(n / (time.perf_counter() - t0))
            tokens.append(n)
        result[f"{name}_tokens_per_s"] = statistics.median(rates)
        result[f"{name}_tokens"] = int(statistics.median(tokens))
    return result


def time_ours(engine, model_dir, data, work, args, out) -> list[float]:
    from srpo.config import TrainConfig
    from srpo.trainer import train

    config = TrainConfig(
        method="srpo", task=str(data), model=str(model_dir), device=args.device, engine=engine,
        lora_rank=8, lora_alpha=16, steps=work["steps"], prompts_per_step=work["step_prompts"],
        rollouts_per_prompt=8, max_thoughts=work["thoughts"],
        max_thought_tokens=work["thought_tokens"],
        max_response_tokens=work["thoughts"] * work["thought_tokens"], max_model_len=2048,
        localization_max_new_tokens=work["thought_tokens"], localization_fallback="random",
        eval_size=1, eval_every=10_000, num_threads=args.threads, checkpoint_every=0,
        save_weights=False, resume=False, out_dir=str(out), lr=1e-4,
        vllm_gpu_memory_utilization=args.vllm_gpu_memory_utilization,
        vllm_kv_cache_gib=args.vllm_kv_cache_gib)
    frame = train(config, task=parity_task(data))
    rows = frame[(frame.iteration > 0) & (frame.iteration < work["steps"])]  # no final eval
    return [float(x) for x in rows.step_time_s]


def time_trl(engine, model_dir, data, work, args, out) -> list[float]:
    from peft import LoraConfig
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig

    from srpo.engines.options import VLLMOptions
    from srpo.integrations.trl import SRPOSettings, SRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    task = parity_task(data)
    settings = SRPOSettings(
        method="srpo", engine=engine, model_path=str(model_dir), max_thoughts=work["thoughts"],
        max_thought_tokens=work["thought_tokens"],
        max_response_tokens=work["thoughts"] * work["thought_tokens"], max_model_len=2048,
        localization_max_new_tokens=work["thought_tokens"], localization_fallback="random",
        vllm=VLLMOptions(gpu_memory_utilization=args.vllm_gpu_memory_utilization,
                         kv_cache_gib=args.vllm_kv_cache_gib))
    cuda = args.device == "cuda"
    config = GRPOConfig(
        output_dir=str(out), use_cpu=not cuda, bf16=cuda, fp16=False,
        per_device_train_batch_size=8 * work["step_prompts"], num_generations=8,
        max_steps=work["steps"], learning_rate=1e-4, beta=0.0, scale_rewards="none",
        loss_type="grpo", temperature=0.7, top_p=0.95, logging_steps=1, report_to=[],
        save_strategy="no", seed=0, disable_dropout=True, max_grad_norm=1.0,
        model_init_kwargs={"dtype": "bfloat16" if cuda else "float32"})

    class StepClock(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], None

        def on_step_begin(self, *a, **k):
            _sync(args.device)
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            _sync(args.device)
            self.times.append(time.perf_counter() - self.t0)

    clock = StepClock()
    trainer = SRPOTrainer(str(model_dir), config, task, task.problems, settings,
                          processing_class=tokenizer, callbacks=[clock],
                          peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for noisy in (PrinterCallback, ProgressCallback):  # one line per step is enough here
        trainer.remove_callback(noisy)
    trainer.train()
    trainer.srpo_rollout.close()
    return clock.times[1:]  # the first step carries one-off start-up costs


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    from srpo.engines import VLLMOptions, make_engine
    from srpo.engines.base import GenerationConfig
    from srpo.model import load_model
    from srpo.tokenizer import build_bpe_tokenizer

    hf_logging.disable_progress_bar()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = args.device == "cuda"
    vocab = SIZES[args.size][-1]
    work = dict(WORK[args.size])
    reps = args.reps if args.reps is not None else work["reps"]
    report: dict = {**report_header(args), "threads": args.threads,
                    "work": work, "reps": reps}
    for name in ("vllm", "trl"):
        if importlib.util.find_spec(name) is not None:
            report[name] = __import__(name).__version__

    rows = task_rows(max(64, 4 * work["step_prompts"] * work["steps"]))
    data = write_task(rows, out)
    tokenizer = build_bpe_tokenizer(corpus(rows), vocab_size=vocab)
    model_dir, report["parameters"] = build_and_save(tokenizer, SIZES[args.size], args.arch,
                                                     args.device, out, max_positions=4096)
    print(f"{report['device']}: {args.arch} {args.size}, {report['parameters'] / 1e6:.1f} M "
          f"parameters, {args.threads} thread(s); engines {' '.join(args.engines)}", flush=True)

    from srpo.tasks import RELEASE_ROLLOUT_PROMPT

    prompts = [tokenizer.encode(RELEASE_ROLLOUT_PROMPT.format(question=r["question"]))
               for r in rows[: work["prompts"]]]
    gen = GenerationConfig(temperature=0.7, top_p=0.95, max_thoughts=work["thoughts"],
                           max_thought_tokens=work["thought_tokens"], max_model_len=2048)
    options = VLLMOptions(gpu_memory_utilization=args.vllm_gpu_memory_utilization,
                          kv_cache_gib=args.vllm_kv_cache_gib)
    engines = {}
    for name in args.engines:  # the Hugging Face engine first: vLLM changes process-wide state
        model, _ = load_model(model_dir, device=args.device,
                              dtype=torch.bfloat16 if cuda else torch.float32)
        t0 = time.perf_counter()
        engine = make_engine(name, model, tokenizer, gen, device=args.device,
                             model_path=model_dir, options=options)
        startup = time.perf_counter() - t0
        result = time_engine(engine, prompts, work, args.device, reps)
        result["startup_s"] = startup
        engines[name] = result
        engine.close()
        del engine, model
        if cuda:
            torch.cuda.empty_cache()
        print(f"  {name}: chains {result['chains_tokens_per_s']:,.0f} tok/s, plain "
              f"{result['plain_tokens_per_s']:,.0f} tok/s", flush=True)
    report["engines"] = engines
    if "hf" in engines and "vllm" in engines:
        report["vllm_over_hf"] = {k: engines["vllm"][f"{k}_tokens_per_s"]
                                  / engines["hf"][f"{k}_tokens_per_s"] for k in ("chains", "plain")}

    steps: dict = {}
    if args.train:
        for name in args.engines:
            steps[name] = {}
            for trainer, fn in (("ours", time_ours), ("trl", time_trl)):
                if trainer == "trl" and importlib.util.find_spec("trl") is None:
                    continue
                times = fn(name, model_dir, data, work, args, out / f"train_{trainer}_{name}")
                steps[name][trainer] = {"step_times_s": times,
                                        "median_s": statistics.median(times)}
                print(f"  step, {trainer} trainer, {name} engine: "
                      f"{statistics.median(times):.2f} s", flush=True)
        report["train_steps"] = steps
    (out / "bench_engines.json").write_text(json.dumps(report, indent=2))
    print_tables(report)
    print(f"wrote {out / 'bench_engines.json'}")
    return report


def print_tables(report: dict) -> None:
    w = report["work"]
    print(f"\nengines: {w['prompts']} prompts x {w['rollouts']} rollouts, median of "
          f"{report['reps']} (tokens/s)")
    print(f"{'engine':<10} {'start-up s':>10} {'chains':>12} {'plain':>12}")
    for name, r in report["engines"].items():
        print(f"{name:<10} {r['startup_s']:>10.1f} {r['chains_tokens_per_s']:>12,.0f} "
              f"{r['plain_tokens_per_s']:>12,.0f}")
    if "vllm_over_hf" in report:
        ratio = report["vllm_over_hf"]
        print(f"{'vllm / hf':<10} {'':>10} {ratio['chains']:>11.2f}x {ratio['plain']:>11.2f}x")
    if report.get("train_steps"):
        print(f"\ntraining step: SRPO 1x4, {w['step_prompts']} prompts x 8 rollouts, LoRA r8 "
              "(wall seconds per optimizer step, median after the first)")
        print(f"{'engine':<10} {'ours':>8} {'trl':>8} {'trl/ours':>9}")
        for name, r in report["train_steps"].items():
            ours = r.get("ours", {}).get("median_s")
            trl = r.get("trl", {}).get("median_s")
            ratio = f"{trl / ours:>8.2f}x" if ours and trl else f"{'n/a':>9}"
            print(f"{name:<10} {ours or float('nan'):>8.2f} {trl or float('nan'):>8.2f} {ratio}")


if __name__ == "__main__":
    main()
