"""GPU memory arithmetic of one SRPO run (weights, LoRA + AdamW, KV cache, update activations).

``estimate`` gives, for a decoder shape and the run's memory flags, the bytes of each part; the
generation batch budget ``--gen-batch-tokens`` and the update micro-batch ``--micro-batch-tokens``
are what a user trades against the card. ``python -m srpo.memory`` prints the table of
``docs/llm.md`` (7B and 14B presets, or any ``config.json``); ``auto_gen_batch_tokens`` sizes the
generation budget from the free memory of the card at run time; ``cuda_peaks`` reads the
allocator's allocated *and* reserved peaks (what the trainer logs); ``configure_cuda_allocator``
turns on expandable segments.

Per token (d = bytes of the model's dtype, h = hidden, q = heads x head_dim, kv = KV heads x
head_dim, I = MLP width, V = vocabulary):

- KV cache: ``2 x layers x kv x d`` (keys and values of every layer).
- update activations kept for the backward of one Llama/Qwen2 block under LoRA on every linear
  layer (``block_activation_bytes``): the two RMSNorms (a float32 copy of the input and the
  normalised output, ``2 (4 h + 2 d h)``), q, k, v and the attention output (``d (2 q + 2 kv)``),
  gate, up, their SiLU product and the down-projection input (``4 d I``), the LoRA inputs cast
  to the adapter's float32 when the base is not (``4 (5 h + q + I)``) and the LoRA bottlenecks.
  With gradient checkpointing each block keeps only its input (``d h``), plus one block's
  activations while it is recomputed and back-propagated (``RECOMPUTE_FACTOR`` x one block).
  Outside the blocks: embeddings, the final norm and the selected hidden states
  (``BASE_ACTIVATION_BYTES_PER_HIDDEN`` x h).
- log-probabilities: ``LOGIT_BYTES`` per logit of one ``chunk x V`` chunk (the full
  ``tokens x V`` without chunking, ``srpo.logprobs``).

The constants are measured, not assumed: ``benchmarks/measure_update_memory.py`` runs one update
micro-batch on CPU (float32 and bfloat16, with and without checkpointing) and reads the peak of
the resident set (``VmHWM`` reset through ``/proc/self/clear_refs``, every allocation over 64 KiB
mapped on its own so that freed tensors leave the resident set); ``tests/srpo/test_memory.py``
checks that ``estimate`` covers the measured peak at several knob settings and is not loose by
more than 40%. Measured: 15.9-16.3 bytes per chunk logit in float32 and bfloat16 alike (at the
backward's peak about four float32 ``chunk x V`` buffers are alive: the recomputed logits
divided by the temperature, exp inside logsumexp, the softmax gradient and the gradient of the
logits; the old constant 8, "float32 logits and their gradient", was half of it).

These are estimates for planning (the allocator's fragmentation, CUDA workspaces and a kernel's
temporary buffers are not counted: keep 10-20% free, and compare with the reserved peak the
trainer logs).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ModelShape", "PRESETS", "estimate", "kv_bytes_per_token", "auto_gen_batch_tokens",
           "block_activation_bytes", "update_bytes", "cuda_peaks", "configure_cuda_allocator",
           "LOGIT_BYTES", "RECOMPUTE_FACTOR"]

GIB = 2**30

#: bytes per logit of one log-prob chunk, forward and backward (measured 15.9-16.3 on CPU in
#: float32 and bfloat16; ``benchmarks/measure_update_memory.py``)
LOGIT_BYTES = 16.5
#: a checkpointed block being recomputed, with its gradients, in units of the itemised block
#: (measured: 0.8-0.9 of ``block_activation_bytes``, which itself counts 20-30% above the
#: measured bytes of a block kept for the backward without checkpointing)
RECOMPUTE_FACTOR = 1.0
#: per-token bytes outside the blocks (embedding output, final norm, selected hidden states and
#: their gradients), in units of h (measured about 25 h in float32)
BASE_ACTIVATION_BYTES_PER_HIDDEN = 32

@dataclass(frozen=True)
class ModelShape:
    """The dimensions that set memory.

    Attributes:
        layers, hidden, heads, kv_heads, intermediate, vocab: decoder shape.
        tied: input embedding and output layer shared.
        head_dim: per-head width (default hidden / heads).
        qkv_bias: q, k and v projections carry biases (Qwen2).
    """

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool = False
    head_dim: int | None = None
    qkv_bias: bool = False

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.head_dim or self.hidden // self.heads)

    @property
    def q_dim(self) -> int:
        return self.heads * (self.head_dim or self.hidden // self.heads)

    @property
    def params(self) -> int:
        h, kv, q, inter = self.hidden, self.kv_dim, self.q_dim, self.intermediate
        block = h * q + 2 * h * kv + q * h + 3 * h * inter + 2 * h
        if self.qkv_bias:
            block += q + 2 * kv
        return self.layers * block + self.vocab * h * (1 if self.tied else 2) + h

    def lora_params(self, rank: int) -> int:
        """Trainable LoRA parameters on every linear layer of the blocks ("all-linear")."""
        h, kv, q, inter = self.hidden, self.kv_dim, self.q_dim, self.intermediate
        per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + inter) + (inter + h)
        return self.layers * rank * per_layer

    @classmethod
    def from_config(cls, config) -> ModelShape:
        """From a transformers config object or a ``config.json`` dict."""
        get = (lambda k, d=None: config.get(k, d)) if isinstance(config, dict) else (
            lambda k, d=None: getattr(config, k, d))
        heads = get("num_attention_heads")
        return cls(
            layers=get("num_hidden_layers"), hidden=get("hidden_size"), heads=heads,
            kv_heads=get("num_key_value_heads") or heads, intermediate=get("intermediate_size"),
            vocab=get("vocab_size"), tied=bool(get("tie_word_embeddings", False)),
            head_dim=get("head_dim"),
            qkv_bias=get("model_type") == "qwen2" or bool(get("attention_bias", False)),
        )


#: Published shapes of the paper's models (check your checkpoint's config.json:
#: ``python -m srpo.memory --config DIR/config.json`` reads it).
PRESETS = {
    "olmo-3-7b": ModelShape(layers=32, hidden=4096, heads=32, kv_heads=32, intermediate=11008,
                            vocab=100278),
    "qwen2.5-14b": ModelShape(layers=48, hidden=5120, heads=40, kv_heads=8, intermediate=13824,
                              vocab=152064, qkv_bias=True),
}


def kv_bytes_per_token(shape: ModelShape, dtype_bytes: int = 2) -> int:
    """KV-cache bytes of one token (all layers)."""
    return 2 * shape.layers * shape.kv_dim * dtype_bytes


def block_activation_bytes(shape: ModelShape, dtype_bytes: int = 2, lora: bool = True) -> int:
    """Bytes per token one decoder block keeps for its backward (module docstring)."""
    d, h, kv, q, inter = dtype_bytes, shape.hidden, shape.kv_dim, shape.q_dim, shape.intermediate
    norms = 2 * (4 * h + 2 * d * h)  # RMSNorm computes in float32
    attention = d * (2 * q + 2 * kv)
    mlp = 4 * d * inter
    adapters = 0
    if lora:
        rank_slack = 7 * 4 * 64  # seven LoRA bottlenecks of rank <= 64, float32
        cast = 0 if d == 4 else 4 * (5 * h + q + inter)  # inputs cast to the float32 adapter
        adapters = cast + rank_slack
    return norms + attention + mlp + adapters


def update_bytes(
    shape: ModelShape,
    micro_batch_tokens: int,
    grad_checkpointing: bool = True,
    logprob_chunk_tokens: int | None = 1024,
    dtype_bytes: int = 2,
    lora: bool = True,
) -> dict[str, int]:
    """Bytes of one update micro-batch of ``micro_batch_tokens`` padded tokens (forward and
    backward): ``activations`` and ``logits`` (one log-prob chunk, or every position without
    chunking)."""
    block = block_activation_bytes(shape, dtype_bytes, lora)
    base = BASE_ACTIVATION_BYTES_PER_HIDDEN * shape.hidden
    if grad_checkpointing:
        per_token = shape.layers * shape.hidden * dtype_bytes + RECOMPUTE_FACTOR * block + base
    else:
        per_token = shape.layers * block + base
    rows = micro_batch_tokens if logprob_chunk_tokens is None else min(logprob_chunk_tokens,
                                                                        micro_batch_tokens)
    return {"activations": int(micro_batch_tokens * per_token),
            "logits": int(rows * shape.vocab * LOGIT_BYTES)}


def estimate(
    shape: ModelShape,
    lora_rank: int | None = 64,
    gen_batch_tokens: int = 65536,
    micro_batch_tokens: int = 16384,
    grad_checkpointing: bool = True,
    logprob_chunk_tokens: int | None = 1024,
    dtype_bytes: int = 2,
) -> dict[str, float]:
    """Bytes (as GiB) of each part of a run, and the peaks of the generation and update phases.

    Generation and update do not overlap (the KV cache is freed before the update), so the peak
    is weights + optimizer state + the larger of the two phases.
    """
    weights = shape.params * dtype_bytes
    if lora_rank is None:  # full fine-tuning: fp32 master-free AdamW on the bf16 weights
        trainable = shape.params
        optimizer = trainable * (dtype_bytes + 8)  # grad + two fp32 moments
    else:
        trainable = shape.lora_params(lora_rank)
        optimizer = trainable * 16  # fp32 weights, grads and two moments
    kv = gen_batch_tokens * kv_bytes_per_token(shape, dtype_bytes)
    parts = update_bytes(shape, micro_batch_tokens, grad_checkpointing, logprob_chunk_tokens,
                         dtype_bytes, lora=lora_rank is not None)
    activations, logits = parts["activations"], parts["logits"]
    update = activations + logits
    out = {
        "params_b": shape.params / 1e9,
        "trainable_m": trainable / 1e6,
        "weights_gib": weights / GIB,
        "optimizer_gib": optimizer / GIB,
        "kv_per_token_kib": kv_bytes_per_token(shape, dtype_bytes) / 1024,
        "generation_kv_gib": kv / GIB,
        "update_activations_gib": activations / GIB,
        "update_logits_gib": logits / GIB,
        "peak_gib": (weights + optimizer + max(kv, update)) / GIB,
    }
    return out


def cuda_peaks(device, cuda=None) -> dict[str, float]:
    """Peak allocated and peak reserved memory of ``device`` since the last reset, in GiB
    (``cuda_peak_gib``, ``cuda_reserved_peak_gib``); NaN for a CPU device.

    Allocated is what live tensors held; reserved is what the caching allocator took from the
    card (allocated + cached free blocks + fragmentation): the number that runs out. ``cuda``
    defaults to ``torch.cuda`` (a stand-in in tests).
    """
    if not str(device).startswith("cuda"):
        return {"cuda_peak_gib": float("nan"), "cuda_reserved_peak_gib": float("nan")}
    if cuda is None:
        import torch

        cuda = torch.cuda
    return {"cuda_peak_gib": cuda.max_memory_allocated(device) / GIB,
            "cuda_reserved_peak_gib": cuda.max_memory_reserved(device) / GIB}


#: the allocator setting ``configure_cuda_allocator`` applies
EXPANDABLE_SEGMENTS = "expandable_segments:True"


def configure_cuda_allocator(device: str, engine: str = "hf", environ=None) -> bool:
    """Turn on the CUDA caching allocator's expandable segments for a run on ``device``, unless
    the user set ``PYTORCH_CUDA_ALLOC_CONF`` or vLLM shares the process; returns whether it did.

    Why: generation batches shrink as rows finish and update micro-batches vary in length, so
    blocks of many sizes are freed and reallocated; with fixed segments the reserved memory grows
    past the allocated peak by the fragmentation, with expandable segments a segment grows in
    place and the two stay close. vLLM (``--engine vllm`` or TRL's vLLM) manages its own pool and
    its sleep mode refuses expandable segments, so it is left alone there. Must run before the
    first CUDA allocation (the allocator reads the variable once).
    """
    import os

    environ = os.environ if environ is None else environ
    if not str(device).startswith("cuda") or engine != "hf":
        return False
    if "PYTORCH_CUDA_ALLOC_CONF" in environ or "PYTORCH_ALLOC_CONF" in environ:
        return False
    environ["PYTORCH_CUDA_ALLOC_CONF"] = EXPANDABLE_SEGMENTS
    return True


def auto_gen_batch_tokens(model, device, fraction: float = 0.6, reserve_bytes: int = 0) -> int | None:
    """A generation batch budget from the free memory of a CUDA card (None on CPU: no cap).

    ``fraction`` of the free memory after loading, less ``reserve_bytes`` (the optimizer state
    allocated at the first step), divided by the KV bytes of one token.
    """
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    shape = ModelShape.from_config(base.config)
    dtype_bytes = next(base.parameters()).element_size()
    free, _total = torch.cuda.mem_get_info(device)
    budget = (fraction * free - reserve_bytes) / kv_bytes_per_token(shape, dtype_bytes)
    return max(4096, int(budget))


def _table(rows: list[tuple[str, dict]]) -> str:
    keys = ["params_b", "trainable_m", "weights_gib", "optimizer_gib", "kv_per_token_kib",
            "generation_kv_gib", "update_activations_gib", "update_logits_gib", "peak_gib"]
    header = "| setting | " + " | ".join(keys) + " |"
    lines = [header, "|" + "---|" * (len(keys) + 1)]
    for name, est in rows:
        lines.append(f"| {name} | " + " | ".join(f"{est[k]:.1f}" for k in keys) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description="Memory plan of an SRPO run on one GPU.")
    parser.add_argument("--preset", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--config", default=None, help="a model's config.json (overrides --preset)")
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument("--gen-batch-tokens", type=int, default=65536)
    parser.add_argument("--micro-batch-tokens", type=int, default=16384)
    args = parser.parse_args(argv)
    if args.config:
        shapes = {Path(args.config).parent.name or "model":
                  ModelShape.from_config(json.loads(Path(args.config).read_text()))}
    else:
        shapes = {name: PRESETS[name] for name in args.preset}
    rows = []
    for name, shape in shapes.items():
        for ckpt, micro in ((True, args.micro_batch_tokens), (False, args.micro_batch_tokens),
                            (False, 4096)):
            label = (f"{name}, LoRA r{args.lora_rank}, gen {args.gen_batch_tokens} tok, "
                     f"update {micro} tok, checkpointing {'on' if ckpt else 'off'}")
            rows.append((label, estimate(shape, args.lora_rank, args.gen_batch_tokens, micro,
                                         ckpt)))
    text = _table(rows)
    print(text)
    return text


if __name__ == "__main__":
    main()
