"""Causal language models: a tiny one built from a config, and any local Hugging Face model.

- `build_tiny_model`: a Llama-architecture causal LM built from a `LlamaConfig` (no download),
  seeded without touching the global torch random state. CPU-friendly: 2 layers, width 64 by
  default (about 0.1 M parameters with the tiny tokenizer).
- `build_random_model`: a randomly initialised Llama or Qwen2 model of any shape (grouped-query
  attention, untied embeddings, the real architectures' code paths), for tests and
  `benchmarks/gpu_check.py`.
- `load_model`: any local Hugging Face causal-LM directory (full weights or a saved LoRA adapter),
  in a chosen dtype, optionally wrapped with a fresh LoRA adapter (peft), optionally with gradient
  checkpointing.
- `save_model`: model (or adapter) and tokenizer side by side, loadable by `load_model` (and, for
  an adapter, by peft and vLLM's LoRA loader).
"""

from __future__ import annotations

import json
import warnings
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


# peft asks transformers 5 for the deprecated name at every forward of a checkpointed model
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                        category=FutureWarning)

ARCHITECTURES = ("llama", "qwen2")

#: --dtype names
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """``auto`` -> bfloat16 on CUDA, float32 on CPU; otherwise the named dtype."""
    if name == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {tuple(DTYPES)}; got {name!r}")
    return DTYPES[name]


def build_random_model(
    tokenizer: PreTrainedTokenizerBase,
    arch: str = "qwen2",
    n_layer: int = 2,
    d_model: int = 64,
    n_head: int = 4,
    n_kv_head: int | None = None,
    d_ff: int | None = None,
    max_positions: int = 4096,
    tie_embeddings: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    eos_token_ids: list[int] | None = None,
) -> PreTrainedModel:
    """A randomly initialised Llama or Qwen2 causal LM of any shape, built in code.

    Args:
        tokenizer: gives the vocabulary size and the pad/bos/eos ids.
        arch: ``llama`` or ``qwen2``.
        n_layer, d_model, n_head: depth, width, attention heads (``d_model / n_head`` even).
        n_kv_head: key/value heads (grouped-query attention); default ``n_head``.
        d_ff: MLP width (default ``4 * d_model``, rounded to a multiple of 64 when large).
        max_positions: maximum sequence length.
        tie_embeddings: share input embedding and output layer (untied by default, as 7B models).
        seed: initialisation seed; the global torch RNG state is restored afterwards.
        dtype, device: where and in what precision to build the weights (built in place: a 1.5B
            model is never materialised in float32 on the CPU first).
        eos_token_ids: the generation config's eos list (default: the tokenizer's eos id).

    Returns:
        The model in eval mode; ``generation_config.eos_token_id`` is ``eos_token_ids``.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}; got {arch!r}")
    n_kv_head = n_head if n_kv_head is None else n_kv_head
    if d_model % n_head or (d_model // n_head) % 2 or n_head % n_kv_head:
        raise ValueError(f"need d_model divisible by n_head with an even head size, and n_head "
                         f"divisible by n_kv_head; got {d_model}, {n_head}, {n_kv_head}")
    if d_ff is None:
        d_ff = 4 * d_model if d_model < 256 else ((8 * d_model // 3 + 63) // 64) * 64
    eos = list(eos_token_ids) if eos_token_ids is not None else [tokenizer.eos_token_id]
    common = dict(
        vocab_size=len(tokenizer), hidden_size=d_model, intermediate_size=d_ff,
        num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_kv_head,
        max_position_embeddings=max_positions, tie_word_embeddings=tie_embeddings,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos[0], attention_dropout=0.0,
    )
    config = LlamaConfig(**common) if arch == "llama" else Qwen2Config(**common)
    config._attn_implementation = "sdpa"
    cls = LlamaForCausalLM if arch == "llama" else Qwen2ForCausalLM
    default_dtype = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if str(device).startswith("cuda"):
            torch.cuda.manual_seed_all(seed)
        try:
            torch.set_default_dtype(dtype)
            with torch.device(device):
                model = cls(config)
        finally:
            torch.set_default_dtype(default_dtype)
    model.generation_config.eos_token_id = eos if len(eos) > 1 else eos[0]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model


def _is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    lora_rank: int | None = None,
    dtype: torch.dtype | None = None,
    lora_alpha: float | None = None,
    lora_target_modules: str | list[str] = "all-linear",
    lora_dropout: float = 0.0,
    gradient_checkpointing: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a local Hugging Face causal LM and its tokenizer.

    Args:
        path: a directory with ``config.json`` + weights (full model), or a directory written by
            ``save_model`` for a LoRA model (``adapter_config.json``; the base model path recorded
            in it must exist locally). Nothing is downloaded.
        device: where to put the model.
        lora_rank: if given, wrap the model in a new trainable LoRA adapter of this rank (peft);
            if ``path`` is an adapter directory, the saved adapter is loaded trainable instead.
        dtype: parameter dtype (default: the checkpoint's, float32 for the tiny model). A new
            LoRA adapter is kept in float32 (peft's default), whatever the base dtype.
        lora_alpha: LoRA scaling numerator (default ``lora_rank``: scaling 1; the paper: 64 at
            rank 64).
        lora_target_modules: peft ``target_modules`` (default "all-linear": every linear layer
            but the output layer).
        lora_dropout: LoRA dropout (default 0).
        gradient_checkpointing: recompute each block's activations in the backward pass (the
            update then needs about one block's activations instead of all of them).

    Returns:
        ``(model, tokenizer)``; the tokenizer gets ``pad_token = eos_token`` when it has no pad
        token. The model is in eval mode.

    Raises:
        ValueError: if the path does not exist or holds no model, or ``lora_rank < 1``.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"model path {str(path)!r} does not exist (expected a local HF model directory)")
    # absolute: a LoRA adapter saved from this model records the path it was loaded from, and a
    # relative one would not load from another working directory
    path = path.resolve()
    if not path.is_dir() or not ((path / "config.json").is_file() or _is_adapter_dir(path)):
        raise ValueError(
            f"model path {str(path)!r} holds no config.json or adapter_config.json "
            "(expected a local Hugging Face causal-LM directory)"
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
        if gradient_checkpointing:
            _enable_checkpointing(base)
        model = PeftModel.from_pretrained(base, str(path), is_trainable=lora_rank is not None)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
        if gradient_checkpointing:
            _enable_checkpointing(model)
        if lora_rank is not None:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(
                r=lora_rank,
                lora_alpha=lora_alpha if lora_alpha is not None else lora_rank,
                lora_dropout=lora_dropout,
                target_modules=lora_target_modules,
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, config)
    model.to(device)
    model.eval()
    return model, tokenizer


def _enable_checkpointing(model) -> None:
    """Activation checkpointing of every block, non-reentrant (it needs no input gradients, so
    frozen embeddings under LoRA are fine); transformers 5 renamed the method."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers 4.x
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path) -> Path:
    """Save a model (or, for a peft model, its adapter) and the tokenizer into `path`.

    A peft model saves only its adapter plus the base model path it was loaded from (absolute:
    `load_model` resolves it), so the base directory must stay where it is; `load_model(path)`
    reloads either kind, from any working directory.

    Returns:
        The directory, as a Path.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
