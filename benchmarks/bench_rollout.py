"""Rollout benchmark: chain generation, cached-prefix suffixes, suffix groups across parents, memory.

Usage:
    python benchmarks/bench_rollout.py --threads 1     # CPU, 4 layers, d_model 256
    python benchmarks/bench_rollout.py --device cuda   # GPU, 12 layers, d_model 768, prints the card

The model is a randomly initialised Llama-architecture model (the same family as the tiny test
model, built by `srpo.model.build_tiny_model`) with the tiny character tokenizer; random weights do
not change the cost of a forward pass. The tiny 2-layer test model is dominated by Python overhead,
so the CPU default is larger (4 layers, width 256) to make the prefix encode matter.

Suffix sampling compares, for k = 4 suffixes of one prompt + prefix of L tokens:
- cached: `sample_suffixes` (prefix encoded once, cache repeated, k suffixes in one batch);
- recompute, sequential: `sample_suffixes_recompute(batched=False)` (each suffix re-encodes
  prompt + prefix in its own generation call, as a server without prefix caching does);
- recompute, batched: `sample_suffixes_recompute(batched=True)` (k copies encoded in one batch).
All three produce identical chains for the same seed (checked below), so they do the same
decoding work and differ only in how the prefix is encoded and batched.

Suffix groups compare, for P reset parents with prefixes of different lengths and k suffixes each:
- grouped: `sample_suffix_groups` (every parent's suffixes in one batch, what a training step does);
- per parent: one `sample_suffixes` call per parent, one after the other (the earlier code path).
Both draw the same seeds parent by parent and give identical chains (checked).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srpo.model import build_tiny_model  # noqa: E402
from srpo.rollout import GenerationConfig, RolloutEngine  # noqa: E402
from srpo.tokenizer import build_tokenizer  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    """Best (minimum) wall time in seconds over `repeats` calls after one warm-up call, and the last
    result. The minimum is the least noisy estimate on a shared machine."""
    result = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--layers", type=int, default=None, help="default: 4 on cpu, 12 on cuda")
    parser.add_argument("--d-model", type=int, default=None, help="default: 256 on cpu, 768 on cuda")
    parser.add_argument("--heads", type=int, default=None, help="default: 4 on cpu, 12 on cuda")
    parser.add_argument("--prefix-lens", type=int, nargs="+", default=None,
                        help="prefix lengths in tokens (default: 128 256 512 on cpu, 128 512 1024 on cuda)")
    parser.add_argument("--k", type=int, default=4, help="suffixes per prefix")
    parser.add_argument("--suffix-tokens", type=int, default=32, help="max sampled tokens per suffix")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parents", type=int, default=8, help="reset parents in the group benchmark")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: comparable on a shared machine)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch.cuda.is_available() is False")
    torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    layers = args.layers or (12 if gpu else 4)
    d_model = args.d_model or (768 if gpu else 256)
    heads = args.heads or (12 if gpu else 4)
    prefix_lens = args.prefix_lens or ([128, 512, 1024] if gpu else [128, 256, 512])

    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer, n_layer=layers, d_model=d_model, n_head=heads, seed=args.seed,
                             max_positions=4096).to(device)
    if gpu:
        model = model.to(torch.bfloat16)
        torch.cuda.reset_peak_memory_stats(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"device: {device.type}" + (f" ({torch.cuda.get_device_name(device)})" if gpu else
                                      f" ({torch.get_num_threads()} threads)"))
    print(f"torch {torch.__version__}; model: Llama-architecture, {layers} layers, d_model {d_model}, "
          f"{heads} heads, {n_params / 1e6:.2f} M parameters, dtype {next(model.parameters()).dtype}, "
          "random weights, character tokenizer")

    # 1. Chain generation throughput.
    config = GenerationConfig(temperature=1.0, top_p=0.95, max_thoughts=8, max_thought_tokens=32,
                              max_new_tokens=128)
    engine = RolloutEngine(model, tokenizer, config, device=device)
    prompts = [tokenizer(f"start {i}; +3; *2; -5; +1 (mod 10)\n").input_ids for i in range(8)]
    n_per_prompt = 8

    def run_generate():
        return engine.generate(prompts, n_per_prompt, torch.Generator().manual_seed(args.seed))

    seconds, groups = _timed(run_generate, device, args.repeats)
    tokens = sum(chain.n_generated for group in groups for chain in group)
    print(f"\nchain generation: {len(prompts)} prompts x {n_per_prompt} chains = {len(prompts) * n_per_prompt} "
          f"chains, {tokens} sampled tokens in {seconds:.3f} s -> {tokens / seconds:,.0f} tokens/s")

    # 2. Suffix sampling from a shared prefix: cached vs recompute.
    suffix_config = GenerationConfig(temperature=1.0, top_p=0.95, max_thoughts=10_000,
                                     max_thought_tokens=args.suffix_tokens,
                                     max_new_tokens=args.suffix_tokens)
    suffix_engine = RolloutEngine(model, tokenizer, suffix_config, device=device)
    prompt = tokenizer("start 3; +4; *2; -1 (mod 10)\n").input_ids
    plain_ids = [tokenizer.convert_tokens_to_ids(c) for c in "0123456789+-*= "]
    delimiter = tokenizer.convert_tokens_to_ids("</thought>")
    print(f"\nsuffix sampling: k = {args.k}, up to {args.suffix_tokens} sampled tokens per suffix, "
          f"best of {args.repeats} runs")
    print(f"{'prefix':>7} {'cached s':>9} {'recompute-seq s':>16} {'speed-up':>9} "
          f"{'recompute-batch s':>18} {'speed-up':>9} {'suffix tok':>10} {'identical':>9}")
    for length in prefix_lens:
        generator = torch.Generator().manual_seed(length)
        body = torch.randint(0, len(plain_ids), (length,), generator=generator).tolist()
        prefix = [plain_ids[i] for i in body]
        for position in range(15, length, 16):
            prefix[position] = delimiter  # thoughts of 16 tokens

        def cached(prefix=prefix):
            return suffix_engine.sample_suffixes(prompt, prefix, args.k, torch.Generator().manual_seed(1))

        def recompute(prefix=prefix):
            return suffix_engine.sample_suffixes_recompute(
                prompt, prefix, args.k, torch.Generator().manual_seed(1), batched=False)

        def recompute_batched(prefix=prefix):
            return suffix_engine.sample_suffixes_recompute(
                prompt, prefix, args.k, torch.Generator().manual_seed(1), batched=True)

        t_cached, chains_cached = _timed(cached, device, args.repeats)
        t_seq, chains_seq = _timed(recompute, device, args.repeats)
        t_batch, chains_batch = _timed(recompute_batched, device, args.repeats)
        identical = ([c.response_ids for c in chains_cached] == [c.response_ids for c in chains_seq]
                     == [c.response_ids for c in chains_batch])
        suffix_tokens = sum(c.n_generated for c in chains_cached)
        print(f"{length:>7} {t_cached:>9.4f} {t_seq:>16.4f} {t_seq / t_cached:>8.2f}x "
              f"{t_batch:>18.4f} {t_batch / t_cached:>8.2f}x {suffix_tokens:>10} {identical!s:>9}")

    # 3. Suffix groups across parents: one batched call vs one call per parent.
    parent_lens = [prefix_lens[i % len(prefix_lens)] // (1 + i % 3) for i in range(args.parents)]
    groups = []
    for i, length in enumerate(parent_lens):
        generator = torch.Generator().manual_seed(1000 + i)
        body = torch.randint(0, len(plain_ids), (length,), generator=generator).tolist()
        prefix = [plain_ids[j] for j in body]
        for position in range(15, length, 16):
            prefix[position] = delimiter
        prefix_prompt = tokenizer(f"start {i}; +4; *2; -1 (mod 10)\n").input_ids
        groups.append((prefix_prompt, prefix, None, args.k))

    def grouped():
        return suffix_engine.sample_suffix_groups(groups, torch.Generator().manual_seed(7))

    def per_parent():
        generator = torch.Generator().manual_seed(7)
        return [suffix_engine.sample_suffixes(p, pre, k, generator) for p, pre, _, k in groups]

    t_grouped, chains_grouped = _timed(grouped, device, args.repeats)
    t_parent, chains_parent = _timed(per_parent, device, args.repeats)
    identical = ([[c.response_ids for c in g] for g in chains_grouped]
                 == [[c.response_ids for c in g] for g in chains_parent])
    suffix_tokens = sum(c.n_generated for g in chains_grouped for c in g)
    print(f"\nsuffix groups: {args.parents} parents (prefixes of {min(parent_lens)}-{max(parent_lens)} "
          f"tokens) x k = {args.k}, {suffix_tokens} sampled tokens: grouped {t_grouped:.4f} s, "
          f"per parent {t_parent:.4f} s -> {t_parent / t_grouped:.2f}x; identical {identical}")

    # 4. Peak memory.
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is KiB on Linux
    print(f"\npeak memory: process max RSS {rss_mib:,.0f} MiB")
    if gpu:
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        print(f"peak memory: torch.cuda.max_memory_allocated {peak:,.0f} MiB "
              f"on {torch.cuda.get_device_name(device)}")


if __name__ == "__main__":
    main()
