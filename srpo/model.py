"""Causal language models: a tiny one built from a config, and any local Hugging Face model.

- `build_tiny_model`: a Llama-architecture causal LM built from a `LlamaConfig` (no download),
  seeded without touching the global torch random state. CPU-friendly: 2 layers, width 64 by
  default (about 0.1 M parameters with the tiny tokenizer).
- `load_model`: any local Hugging Face causal-LM directory (full weights or a saved LoRA adapter),
  optionally wrapped with a fresh LoRA adapter (peft).
- `save_model`: model (or adapter) and tokenizer side by side, loadable by `load_model`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)


def build_tiny_model(
    tokenizer: PreTrainedTokenizerBase,
    n_layer: int = 2,
    d_model: int = 64,
    n_head: int = 4,
    seed: int = 0,
    d_ff: int | None = None,
    max_positions: int = 2048,
    tie_embeddings: bool = True,
    attn_implementation: str = "sdpa",
) -> LlamaForCausalLM:
    """A randomly initialised Llama-architecture causal LM sized for CPU tests.

    Args:
        tokenizer: gives the vocabulary size and the pad/bos/eos ids.
        n_layer: number of transformer blocks.
        d_model: hidden width; must be divisible by `n_head`.
        n_head: attention heads (as many key/value heads: plain multi-head attention).
        seed: initialisation seed; the global torch RNG state is restored afterwards.
        d_ff: MLP width (default `4 * d_model`).
        max_positions: maximum sequence length (rotary embeddings, so only a bound).
        tie_embeddings: share the input embedding and output projection.
        attn_implementation: "sdpa" (default) or "eager".

    Returns:
        A `LlamaForCausalLM` in float32, in eval mode, on CPU.
    """
    if n_layer < 1:
        raise ValueError(f"n_layer must be >= 1, got {n_layer}")
    if d_model < 1 or n_head < 1 or d_model % n_head != 0:
        raise ValueError(f"d_model must be a positive multiple of n_head, got {d_model} and {n_head}")
    if (d_model // n_head) % 2 != 0:
        raise ValueError(f"d_model / n_head must be even for rotary embeddings, got {d_model // n_head}")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=d_ff if d_ff is not None else 4 * d_model,
        num_hidden_layers=n_layer,
        num_attention_heads=n_head,
        num_key_value_heads=n_head,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attention_dropout=0.0,
    )
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    return model


def _is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    lora_rank: int | None = None,
    dtype: torch.dtype | None = None,
    lora_alpha: int | None = None,
    lora_target_modules: str | list[str] = "all-linear",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a local Hugging Face causal LM and its tokenizer.

    Args:
        path: a directory with `config.json` + weights (full model), or a directory written by
            `save_model` for a LoRA model (`adapter_config.json`; the base model path recorded in it
            must exist locally). Nothing is downloaded.
        device: where to put the model.
        lora_rank: if given, wrap the model in a new trainable LoRA adapter of this rank (peft) on
            all linear layers; if `path` is an adapter directory, the saved adapter is loaded
            trainable instead.
        dtype: parameter dtype (default: the checkpoint's, float32 for the tiny model).
        lora_alpha: LoRA scaling numerator (default `2 * lora_rank`).
        lora_target_modules: peft `target_modules` (default "all-linear").

    Returns:
        `(model, tokenizer)`; the tokenizer gets `pad_token = eos_token` when it has no pad token.

    Raises:
        ValueError: if the path does not exist or holds no model, or `lora_rank < 1`.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"model path {str(path)!r} does not exist (expected a local HF model directory)")
    if not path.is_dir() or not ((path / "config.json").is_file() or _is_adapter_dir(path)):
        raise ValueError(
            f"model path {str(path)!r} holds no config.json or adapter_config.json "
            "(expected a local HF causal-LM directory)"
        )
    if lora_rank is not None and lora_rank < 1:
        raise ValueError(f"lora_rank must be >= 1 or None, got {lora_rank}")
    kwargs = {"dtype": dtype} if dtype is not None else {}
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if _is_adapter_dir(path):
        from peft import PeftModel

        base_path = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        if not base_path or not Path(base_path).exists():
            raise ValueError(
                f"adapter in {str(path)!r} names base model {base_path!r}, which does not exist locally"
            )
        base = AutoModelForCausalLM.from_pretrained(base_path, **kwargs)
        model = PeftModel.from_pretrained(base, str(path), is_trainable=lora_rank is not None)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
        if lora_rank is not None:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(
                r=lora_rank,
                lora_alpha=lora_alpha if lora_alpha is not None else 2 * lora_rank,
                lora_dropout=0.0,
                target_modules=lora_target_modules,
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, config)
    model.to(device)
    model.eval()
    return model, tokenizer


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path) -> Path:
    """Save a model (or, for a peft model, its adapter) and the tokenizer into `path`.

    A peft model saves only its adapter plus the base model path it was loaded from, so the base
    directory must stay where it is; `load_model(path)` reloads either kind.

    Returns:
        The directory, as a Path.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
