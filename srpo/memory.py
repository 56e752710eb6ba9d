"""GPU memory arithmetic of one SRPO run (weights, LoRA + AdamW, KV cache, update activations).

``estimate`` gives, for a decoder shape and the run's memory flags, the bytes of each part; the
generation batch budget ``--gen-batch-tokens`` and the update micro-batch ``--micro-batch-tokens``
are what a user trades against the card. ``python -m srpo.memory`` prints the table of
``docs/llm.md`` (7B and 14B presets, or any ``config.json``); ``auto_gen_batch_tokens`` sizes the
generation budget from the free memory of the card at run time.

Per token and per decoder layer (bf16, 2 bytes a value):

- KV cache: ``2 x kv_heads x head_dim`` values.
- update activations kept for the backward of one Llama/Qwen2 block (no dropout, SDPA attention
  that stores no score matrix): RMSNorm inputs and outputs (4 h), q and the attention output
  (2 h), k and v (2 kv), gate, up, their SiLU product and the down-projection input (4 I): about
  ``6 h + 2 kv + 4 I`` values. With gradient checkpointing only each block's input (h) is kept,
  plus one block's full activations while it is recomputed.
- log-probabilities: ``chunk x vocab`` float32 logits and their gradient for one chunk (the full
  ``tokens x vocab`` without chunking, ``srpo.logprobs``).

These are estimates for planning (framework workspace, allocator fragmentation and the temporary
buffers of a kernel are not counted: keep 10-20% free).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ModelShape", "PRESETS", "estimate", "kv_bytes_per_token", "auto_gen_batch_tokens"]

GIB = 2**30


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
    h, kvd, inter = shape.hidden, shape.kv_dim, shape.intermediate
    per_layer = (6 * h + 2 * kvd + 4 * inter) * dtype_bytes
    if grad_checkpointing:
        activations = micro_batch_tokens * (shape.layers * h * dtype_bytes + per_layer)
    else:
        activations = micro_batch_tokens * shape.layers * per_layer
    rows = micro_batch_tokens if logprob_chunk_tokens is None else min(logprob_chunk_tokens,
                                                                        micro_batch_tokens)
    logits = rows * shape.vocab * 4 * 2
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
