"""Predicted time and memory of one paper step (``--recipe paper``) on one GPU, written out.

    python benchmarks/paper_step.py                 # the table of docs/llm.md (7B, 14B on an H200)
    python benchmarks/paper_step.py --markdown      # the same as a markdown table

The prediction ``benchmarks/gpu_check.py --paper-limits`` checks: a random model never writes
``</thought>`` or a box, so every thought runs to its 256-token cap and every chain to the
5,120-token response cap, every localization reply to its 4,096-token cap: the worst case of the
release's limits, which is what is predicted here.

Workload of one step (32 prompts x 8 rollouts, split 1x4, the Hugging Face engine):

- fresh chains: 5.2 per prompt (4 base + 1 failed parent, plus the expected extra chains when a
  prompt's first 5 hold no failure, 1/32 at a 50% failure rate), 5,120 new tokens each;
- localization: one reply per prompt, 4,096 tokens, after a context of prompt + 5,120 + ~300;
- suffixes: 4 per prompt from a prefix of (k - 1) x 256 tokens, k uniform in 1..20 (mean prefix
  2,432), so 2,688 new tokens on average;
- update: 256 sequences of prompt + 5,120 tokens, forward and backward, gradient checkpointing.

Arithmetic (stated so that a measurement can confirm or refute each term):

- Decoding is memory-bound: each step reads the weights once (``2 N`` bytes in bf16) and the KV
  cache of every row (``context x 2 x layers x kv_heads x head_dim x 2`` bytes), at the HBM
  bandwidth; its ``2 N`` FLOPs per row are far below the compute peak at these batch sizes
  (printed as a check). Rows per batch: the generation budget the trainer sets from the free
  memory (``srpo.memory.auto_gen_batch_tokens``: 0.6 of what weights and optimizer leave) divided
  by the tokens a row can reach (context + new tokens).
- The update is compute-bound: per token ``2 N`` (forward) + ``2 N`` (recomputing the forward under
  checkpointing) + ``2 N`` (backward to the activations; the frozen base's weight gradients are
  skipped, LoRA's are negligible) = ``6 N``, plus attention ``4 x layers x hidden x (T / 2)`` per
  pass (causal, mean context T / 2), three passes' worth (forward, recompute, a backward of twice
  a forward: 4 in all); at ``PEAK_TFLOPS x MFU``.
- Memory peak: weights + LoRA/AdamW + the larger of the generation KV budget and the update's
  activations and logits (``srpo.memory.estimate`` at 16,384 tokens per micro-batch).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


@dataclass(frozen=True)
class Hardware:
    """A GPU's memory and speed.

    Attributes:
        name: for the table.
        memory_gb: HBM in GB (10^9 bytes) usable by the process.
        bandwidth_tb_s: HBM bandwidth in TB/s.
        peak_tflops: dense bf16 matmul rate taken as the peak (TFLOP/s).
        mfu: fraction of that peak the update reaches (an assumption, stated in the table).
    """

    name: str
    memory_gb: float
    bandwidth_tb_s: float
    peak_tflops: float
    mfu: float


#: NVIDIA H200 SXM: 141 GB HBM3e at 4.8 TB/s; 989 TFLOP/s dense bf16 in the datasheet (1,979 with
#: sparsity), of which ~80% (790) is the dense matmul rate usually measured; MFU 0.35 for the
#: update of an eager Hugging Face model with LoRA and checkpointing (an assumption).
H200 = Hardware("H200", memory_gb=141.0, bandwidth_tb_s=4.8, peak_tflops=790.0, mfu=0.35)


@dataclass(frozen=True)
class Workload:
    """One paper step (module docstring); every length in tokens."""

    prompts: int = 32
    prompt_tokens: int = 200
    fresh_per_prompt: float = 5.2
    response_tokens: int = 5120
    localization_tokens: int = 4096
    localization_extra_context: int = 300
    suffixes_per_prompt: int = 4
    mean_prefix_tokens: float = 2432.0
    rollouts_per_prompt: int = 8
    micro_batch_tokens: int = 16384
    lora_rank: int = 64
    gen_fraction: float = 0.6


def _decode_phase(
    rows_total: float,
    context: float,
    new: float,
    shape,
    hw: Hardware,
    budget_tokens: float,
    weights: float,
    kv: float,
) -> dict:
    """Seconds to decode ``rows_total`` rows of ``new`` tokens after ``context`` tokens."""
    per_row = context + new
    rows = max(1, min(int(budget_tokens // per_row), int(round(rows_total))))
    batches = -(-int(round(rows_total)) // rows)
    mean_context = context + new / 2
    bytes_per_step = weights + rows * mean_context * kv
    step_s = bytes_per_step / (hw.bandwidth_tb_s * 1e12)
    compute_s = 2 * shape.params * rows / (hw.peak_tflops * 1e12)
    return {
        "rows_per_batch": rows,
        "batches": batches,
        "step_ms": step_s * 1e3,
        "compute_ms": compute_s * 1e3,
        "seconds": batches * new * step_s,
        "tokens": rows_total * new,
    }


def predict(shape, hw: Hardware = H200, work: Workload = Workload()) -> dict:
    """Predicted seconds of each phase and the memory peak (GB) of one paper step."""
    from srpo.memory import GIB, estimate, kv_bytes_per_token

    est = estimate(shape, lora_rank=work.lora_rank, micro_batch_tokens=work.micro_batch_tokens)
    weights = shape.params * 2
    optimizer = est["optimizer_gib"] * GIB
    kv = kv_bytes_per_token(shape, 2)
    free = hw.memory_gb * 1e9 - weights - optimizer
    budget = work.gen_fraction * free / kv
    p, r = work.prompt_tokens, work.response_tokens
    fresh = _decode_phase(
        work.prompts * work.fresh_per_prompt, p, r, shape, hw, budget, weights, kv
    )
    local = _decode_phase(
        work.prompts,
        p + r + work.localization_extra_context,
        work.localization_tokens,
        shape,
        hw,
        budget,
        weights,
        kv,
    )
    suffix = _decode_phase(
        work.prompts * work.suffixes_per_prompt,
        p + work.mean_prefix_tokens,
        r - work.mean_prefix_tokens,
        shape,
        hw,
        budget,
        weights,
        kv,
    )
    tokens = work.prompts * work.rollouts_per_prompt * (p + r)
    attention = 4 * shape.layers * shape.hidden * (p + r) / 2
    flops = tokens * (6 * shape.params + 4 * attention)
    update_s = flops / (hw.peak_tflops * 1e12 * hw.mfu)
    update_gb = (est["update_activations_gib"] + est["update_logits_gib"]) * GIB / 1e9
    kv_gb = budget * kv / 1e9
    return {
        "params_b": shape.params / 1e9,
        "weights_gb": weights / 1e9,
        "optimizer_gb": optimizer / 1e9,
        "kv_kib_per_token": kv / 1024,
        "gen_budget_tokens": int(budget),
        "kv_budget_gb": kv_gb,
        "update_gb": update_gb,
        "peak_gb": (weights + optimizer) / 1e9 + max(kv_gb, update_gb),
        "fresh": fresh,
        "localization": local,
        "suffix": suffix,
        "update": {"tokens": tokens, "tflop": flops / 1e12, "seconds": update_s},
        "step_seconds": fresh["seconds"] + local["seconds"] + suffix["seconds"] + update_s,
    }


def table(rows: dict, hw: Hardware = H200) -> str:
    """The markdown table of docs/llm.md (a test checks that the docs hold these very rows)."""
    lines = [f"| one paper step on one {hw.name} (Hugging Face engine) | " + " | ".join(rows)
             + " |", "|---|" + "---|" * len(rows)]

    def line(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(v) for v in rows.values()) + " |")

    line("parameters N (B)", lambda v: f"{v['params_b']:.2f}")
    line("weights, bf16: 2 N bytes (GB)", lambda v: f"{v['weights_gb']:.1f}")
    line("LoRA r64 + AdamW: 16 bytes per trainable parameter (GB)",
         lambda v: f"{v['optimizer_gb']:.1f}")
    line("KV cache per token: 2 x layers x kv_heads x head_dim x 2 bytes (KiB)",
         lambda v: f"{v['kv_kib_per_token']:.0f}")
    line("generation budget: 0.6 x (141 GB - weights - optimizer) / KV per token (tokens) / "
         "its KV (GB)", lambda v: f"{v['gen_budget_tokens']:,} / {v['kv_budget_gb']:.0f}")
    line("update activations + logits, 16,384-token micro-batch (GB)",
         lambda v: f"{v['update_gb']:.1f}")
    line("**memory peak: weights + optimizer + max(KV budget, update) (GB)**",
         lambda v: f"**{v['peak_gb']:.0f}**")
    labels = {
        "fresh": ("fresh chains: 32 x 5.2 rows of 5,120 tokens; rows per batch x batches, ms per "
                  "decode step (of which compute)", "fresh chains (s)"),
        "localization": ("localization: 32 replies of 4,096 tokens after ~5,600; rows x batches, "
                         "ms per step", "localization (s)"),
        "suffix": ("suffixes: 128 rows of 2,688 tokens after a 2,632-token context; rows x "
                   "batches, ms per step", "suffixes (s)"),
    }
    for phase, (detail, total) in labels.items():
        line(detail, lambda v, ph=phase: f"{v[ph]['rows_per_batch']} x {v[ph]['batches']}, "
                                         f"{v[ph]['step_ms']:.1f} ({v[ph]['compute_ms']:.2f})")
        line(total, lambda v, ph=phase: f"{v[ph]['seconds']:.0f}")
    line("update: 256 x 5,320 tokens, TFLOP", lambda v: f"{v['update']['tokens']:,}, "
                                                         f"{v['update']['tflop']:,.0f}")
    line(f"update at {hw.peak_tflops:.0f} TFLOP/s x MFU {hw.mfu} (s)",
         lambda v: f"{v['update']['seconds']:.0f}")
    line("**step (min)**", lambda v: f"**{v['step_seconds'] / 60:.1f}**")
    return "\n".join(lines)


def main(argv=None) -> str:
    from srpo.memory import PRESETS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--markdown", action="store_true")
    p.parse_args(argv)
    rows = {
        "OLMo-3-7B": predict(PRESETS["olmo-3-7b"]),
        "Qwen2.5-14B": predict(PRESETS["qwen2.5-14b"]),
    }
    text = table(rows)
    print(text)
    return text


if __name__ == "__main__":
    main()
