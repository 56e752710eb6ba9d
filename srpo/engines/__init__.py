"""Rollout engines: where generation ends and training begins.

- ``srpo.engines.base``: the seam (``ThoughtEngine``: ``rollout``, ``complete_seeded``, ``sync``),
  the request and result types, and the thought rules every engine applies token by token.
- ``srpo.engines.hf``: the Hugging Face engine (own cached decoding loop; the default, ``hf``).
- ``srpo.engines.vllm``: the vLLM engine (prefix caching, LoRA hot swap or full-weight reload;
  ``vllm``).
- ``srpo.engines.options``: engine names and the vLLM engine's settings (torch-free).

``make_engine(name, model, tokenizer, config, ...)`` builds either. Buffers, localization,
accounting and metrics only see the seam, so they do not change with the engine.
"""

from __future__ import annotations

from srpo.engines.options import ENGINES, VLLMOptions

__all__ = ["ENGINES", "VLLMOptions", "make_engine", "ThoughtEngine", "GenerationConfig", "Chain",
           "RolloutRequest", "RolloutEngine", "HFEngine", "VLLMEngine"]

_LAZY = {
    "ThoughtEngine": "srpo.engines.base", "GenerationConfig": "srpo.engines.base",
    "Chain": "srpo.engines.base", "RolloutRequest": "srpo.engines.base",
    "RolloutEngine": "srpo.engines.hf", "HFEngine": "srpo.engines.hf",
    "VLLMEngine": "srpo.engines.vllm",
}


def __getattr__(name: str):
    # lazy: the options must import without torch, the vLLM engine without importing vLLM
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'srpo.engines' has no attribute {name!r}")


def make_engine(name: str, model, tokenizer, config=None, *, device=None, model_path=None,
                dtype: str | None = None, seed: int = 0, options: VLLMOptions | None = None,
                eos_ids=None):
    """Build the rollout engine ``name`` over the policy ``model``.

    Args:
        name: ``hf`` (decodes with ``model`` itself) or ``vllm`` (its own in-process vLLM copy of
            the weights, synced by ``engine.sync(model)`` after every optimizer step).
        model: the policy (a Hugging Face causal LM or a peft wrapper).
        tokenizer: its tokenizer.
        config: ``GenerationConfig`` (sampling, stop string, caps).
        device: where generation runs (default: the model's device).
        model_path: ``vllm`` only: the model's directory (or its saved adapter's; the base model
            is loaded and the adapter comes with the first ``sync``).
        dtype: ``vllm`` only: the weights' dtype name (default: the model's).
        seed: ``vllm`` only: the engine seed (each request carries its own seed anyway).
        options: ``vllm`` only: ``VLLMOptions``.
        eos_ids: ids that end a chain (default: the tokenizer's and the model config's).

    Returns:
        A ``ThoughtEngine``. The ``vllm`` engine is already synced with ``model``.
    """
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}; got {name!r}")
    from srpo.engines.base import ThoughtEngine

    if eos_ids is None:
        eos_ids = ThoughtEngine.default_eos_ids(tokenizer, model)
    if name == "hf":
        from srpo.engines.hf import RolloutEngine

        return RolloutEngine(model, tokenizer, config, device=device, eos_ids=eos_ids)
    if model_path is None:
        raise ValueError("engine 'vllm' needs model_path: the model's directory on disk")
    import torch

    from srpo.engines.vllm import VLLMEngine

    if device is None:
        device = next(model.parameters()).device
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if dtype is None:
        dtype = str(getattr(base, "dtype", torch.float32)).replace("torch.", "")
    lora_rank = None
    if hasattr(model, "peft_config"):
        lora_rank = max(int(getattr(c, "r", 8)) for c in model.peft_config.values())
    engine = VLLMEngine.create(model_path, tokenizer, config, device=str(device), dtype=dtype,
                               seed=seed, lora_rank=lora_rank, eos_ids=eos_ids, options=options)
    engine.sync(model)
    return engine
