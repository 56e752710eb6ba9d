"""The KV cache of the Hugging Face engine: preallocated (``srpo.kv_cache``) vs growing by
concatenation (transformers' ``DynamicCache``), measured in the same run.

    python benchmarks/bench_kv_cache.py             # CPU: cache writes and a decode, both caches
    python benchmarks/bench_kv_cache.py --quick     # seconds (CI smoke test)
    python benchmarks/bench_kv_cache.py --device cuda

Two tables:

1. **The cache write alone** (what a decode step adds besides attention and the MLPs): appending
   one position to every layer of a cache that already holds L positions, for a 7B-like layer
   (8 KV heads x 128, bf16 on CUDA / float32 on CPU) and R rows. The growing cache copies all
   R x L positions (``torch.cat``), the preallocated one writes one; the table gives microseconds
   per step, the bytes the growing cache copies per step, and the ratio.
2. **A whole decode** of a small random Qwen2 model (its own attention and MLPs included): tokens/s
   of the engine's loop with each cache and their ratio.

Results: printed, and ``--out`` (default ``runs/bench_kv_cache``) ``bench_kv_cache.json``. Wall
times depend on the machine (measure on a quiet one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/bench_kv_cache")
    return p.parse_args(argv)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def time_cache_writes(
    rows: int,
    length: int,
    layers: int,
    steps: int,
    device: str,
    heads: int = 8,
    head_dim: int = 128,
) -> dict:
    """Microseconds per decode step spent writing the KV cache, both caches, from ``length``."""
    import torch
    from transformers.cache_utils import DynamicLayer

    from srpo.kv_cache import PreallocatedLayer

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    prefill = torch.randn(rows, heads, length, head_dim, dtype=dtype, device=device)
    step = torch.randn(rows, heads, 1, head_dim, dtype=dtype, device=device)
    out = {}
    for name, make in (
        ("growing", DynamicLayer),
        ("preallocated", lambda: PreallocatedLayer(length + steps)),
    ):
        caches = [make() for _ in range(layers)]
        for c in caches:
            c.update(prefill, prefill)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            for c in caches:
                c.update(step, step)
        _sync(device)
        out[name] = (time.perf_counter() - t0) / steps * 1e6
        del caches
    element = 2 if dtype == torch.bfloat16 else 4
    out["copied_bytes_per_step_growing"] = (
        2 * layers * rows * heads * (length + steps / 2) * head_dim * element
    )
    out["ratio"] = out["growing"] / out["preallocated"]
    return out


def time_decode(device: str, quick: bool) -> dict:
    """Tokens/s of the Hugging Face engine's greedy decode with each cache."""

    import srpo.engines.hf as hf
    from srpo.engines.base import GenerationConfig
    from srpo.kv_cache import make_cache
    from srpo.model import build_random_model
    from srpo.tokenizer import build_bpe_tokenizer

    tok = build_bpe_tokenizer(
        [f"We add {i} and {i + 1}.</thought>" for i in range(200)], vocab_size=400
    )
    model = build_random_model(
        tok,
        "qwen2",
        n_layer=2 if quick else 4,
        d_model=64 if quick else 256,
        n_head=4,
        n_kv_head=2,
        seed=0,
        device=device,
    )
    thoughts, per_thought = (2, 16) if quick else (8, 64)
    config = GenerationConfig(
        temperature=0.0, top_p=1.0, max_thoughts=thoughts, max_thought_tokens=per_thought
    )
    prompts = [tok.encode(f"What is {i} + 1?\n") for i in range(4 if quick else 16)]
    result = {}
    original = hf.make_cache
    try:
        for name, factory in (("growing", lambda m, capacity: None), ("preallocated", original)):
            hf.make_cache = factory
            engine = hf.RolloutEngine(model, tok, config, device=device)
            engine.greedy(prompts[:1])  # warm
            _sync(device)
            t0 = time.perf_counter()
            chains = engine.greedy(prompts)
            _sync(device)
            seconds = time.perf_counter() - t0
            result[name] = sum(c.n_generated for c in chains) / seconds
            result[f"{name}_chains"] = [c.response_ids for c in chains]
    finally:
        hf.make_cache = original
    result["same_chains"] = result.pop("growing_chains") == result.pop("preallocated_chains")
    result["ratio"] = result["preallocated"] / result["growing"]
    result["model_cache"] = type(make_cache(model, 8)).__name__
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    grid = [(4, 128), (4, 512)] if args.quick else [(8, 512), (8, 2048), (16, 2048), (16, 5120)]
    layers, steps = (2, 8) if args.quick else (4, 32)
    writes = []
    print(
        f"{'rows':>5} {'length':>7} {'growing us/step':>16} {'prealloc us/step':>17} "
        f"{'ratio':>7} {'copied MB/step':>15}   ({layers} layers of 8 KV heads x 128)"
    )
    for rows, length in grid:
        r = time_cache_writes(rows, length, layers, steps, args.device)
        writes.append({"rows": rows, "length": length, "layers": layers, **r})
        print(
            f"{rows:>5} {length:>7} {r['growing']:>16.0f} {r['preallocated']:>17.0f} "
            f"{r['ratio']:>7.1f} {r['copied_bytes_per_step_growing'] / 1e6:>15.1f}"
        )
    decode = time_decode(args.device, args.quick)
    print(
        f"decode ({decode['model_cache']}): growing {decode['growing']:.0f} tokens/s, "
        f"preallocated {decode['preallocated']:.0f} tokens/s, ratio {decode['ratio']:.2f}, "
        f"same chains: {decode['same_chains']}"
    )
    report = {"device": args.device, "threads": args.threads, "writes": writes, "decode": decode}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_kv_cache.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
