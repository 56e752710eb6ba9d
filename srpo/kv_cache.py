"""A preallocated KV cache for the Hugging Face engine's decoding loop.

transformers' default ``DynamicCache`` grows every layer's keys and values by ``torch.cat`` at each
decoded token: every step copies the whole cache (rows x length x 2 x layers x kv x head_dim) to
append one position, so a chain of T tokens costs O(T^2) copying, and the allocator sees a new
buffer of a new size at every step (fragmentation of the reserved memory). At the release's
lengths (5,120 response tokens, 160 rows of a 7B model's 0.5 MiB per token) that is tens of GB
copied per decode step.

``PreallocatedCache`` keeps, per layer, one buffer of a fixed capacity allocated at the first
write (the batch's prefill) and writes each new position in place; the attention reads a view of
the filled part, so its cost and its result are those of the dynamic cache (same values, same
length). The capacity is the most the batch can reach, which the engine knows from the thought
rules (``srpo.engines.hf.RolloutEngine._row_cost``: context + the most tokens a row may still
sample) and already budgets (``max_batch_tokens``): the planned memory is allocated once. A write
past the capacity doubles it (never needed by the engine, kept for safety). Dropping finished
rows (``batch_select_indices``) copies the buffers once per drop, as the dynamic cache does.

Only for models whose every layer is full attention (Llama, Qwen2 without a sliding window);
others (sliding-window layers, e.g. OLMo-3) keep transformers' own cache (``make_cache`` returns
None). ``benchmarks/bench_kv_cache.py`` measures the copy cost of both caches in one run.
"""

from __future__ import annotations

import torch

try:  # transformers >= 4.56: caches are lists of layer objects
    from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
except ImportError:  # pragma: no cover - older transformers: the default cache is used
    Cache = DynamicCache = DynamicLayer = None

__all__ = ["PreallocatedCache", "PreallocatedLayer", "make_cache"]


if DynamicLayer is not None:

    class PreallocatedLayer(DynamicLayer):
        """One layer's keys and values in buffers of ``capacity`` positions, written in place.

        ``keys`` / ``values`` are views (B, H, length, D) of the filled part, as a
        ``DynamicLayer``'s tensors are.
        """

        def __init__(self, capacity: int) -> None:
            super().__init__()
            self.capacity = int(capacity)
            self.length = 0
            self._k: torch.Tensor | None = None
            self._v: torch.Tensor | None = None

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.device = key_states.device
            rows, heads, _, k_dim = key_states.shape
            capacity = max(self.capacity, key_states.shape[-2])
            self._k = key_states.new_empty((rows, heads, capacity, k_dim))
            self._v = value_states.new_empty(
                (rows, value_states.shape[1], capacity, value_states.shape[-1])
            )
            self.length = 0
            self._views()
            self.is_initialized = True

        def _views(self) -> None:
            self.keys = self._k[:, :, : self.length]
            self.values = self._v[:, :, : self.length]

        def _grow(self, needed: int) -> None:
            capacity = max(needed, 2 * self._k.shape[2])
            for name in ("_k", "_v"):
                old = getattr(self, name)
                new = old.new_empty((*old.shape[:2], capacity, old.shape[-1]))
                new[:, :, : self.length] = old[:, :, : self.length]
                setattr(self, name, new)
            self.capacity = capacity

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self._k.shape[2]:
                self._grow(end)
            self._k[:, :, self.length : end] = key_states
            self._v[:, :, self.length : end] = value_states
            self.length = end
            self._views()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

        def get_max_length(self) -> int:
            return -1  # grows if it must: not a static cache

        def reset(self) -> None:
            self.length = 0
            if self.is_initialized:
                self._views()

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError("crop takes a negative number of tokens to remove")
            if self.is_initialized and tokens_to_remove:
                self.length = max(0, self.length + tokens_to_remove)
                self._views()

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.is_initialized:
                indices = indices.to(self._k.device)
                self._k = self._k.index_select(0, indices)
                self._v = self._v.index_select(0, indices)
                self._views()

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            self.batch_select_indices(beam_idx)

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.is_initialized:
                self._k = self._k.repeat_interleave(repeats, dim=0)
                self._v = self._v.repeat_interleave(repeats, dim=0)
                self._views()

    class PreallocatedCache(DynamicCache):
        """A ``DynamicCache`` whose layers are ``PreallocatedLayer``\\ s of one capacity."""

        def __init__(self, num_layers: int, capacity: int) -> None:
            # a Cache of given layers (DynamicCache's own constructor would make DynamicLayers)
            Cache.__init__(self, layers=[PreallocatedLayer(capacity) for _ in range(num_layers)])

else:  # pragma: no cover
    PreallocatedLayer = PreallocatedCache = None


def _full_attention_layers(model) -> int | None:
    """The number of decoder layers when every one is full attention, else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or not hasattr(config, "num_hidden_layers"):
        return None
    if hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
        return None
    if getattr(config, "use_sliding_window", False) and getattr(config, "sliding_window", None):
        return None
    return int(config.num_hidden_layers)


def make_cache(model, capacity: int):
    """A ``PreallocatedCache`` of ``capacity`` positions for ``model``, or None when the model
    has non-full-attention layers (or transformers has no layered caches): the model then builds
    its own cache."""
    if PreallocatedCache is None:
        return None
    layers = _full_attention_layers(model)
    if layers is None:
        return None
    return PreallocatedCache(layers, capacity)
