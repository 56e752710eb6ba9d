"""The memory arithmetic of srpo.memory against models built in code (independent counts)."""

import pytest
import torch

from srpo.memory import PRESETS, ModelShape, estimate, kv_bytes_per_token, main
from srpo.model import build_random_model
from tests.srpo.real_model import make_tokenizer


@pytest.mark.parametrize("arch, tied", [("qwen2", False), ("llama", True)])
def test_parameter_lora_and_kv_counts_match_a_built_model(arch, tied):
    from peft import LoraConfig, get_peft_model

    tok = make_tokenizer()
    model = build_random_model(tok, arch, n_layer=3, d_model=64, n_head=4, n_kv_head=2,
                               d_ff=96, tie_embeddings=tied)
    shape = ModelShape.from_config(model.config)
    assert shape.params == sum(p.numel() for p in model.parameters())
    lora = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert shape.lora_params(4) == sum(p.numel() for p in lora.parameters() if p.requires_grad)
    # one token's KV cache, measured on a real forward
    out = model(input_ids=torch.tensor([[5, 6, 7]]), use_cache=True)
    cache = out.past_key_values
    measured = sum(layer.keys.numel() + layer.values.numel() for layer in cache.layers)
    assert kv_bytes_per_token(shape, 4) * 3 == measured * 4


def test_presets_and_the_table():
    olmo, qwen = PRESETS["olmo-3-7b"], PRESETS["qwen2.5-14b"]
    assert 7.0e9 < olmo.params < 7.6e9 and 14.0e9 < qwen.params < 15.2e9
    with_ckpt = estimate(olmo, grad_checkpointing=True)
    without = estimate(olmo, grad_checkpointing=False)
    assert with_ckpt["update_activations_gib"] * 5 < without["update_activations_gib"]
    assert with_ckpt["peak_gib"] < 80 and estimate(qwen)["peak_gib"] < 80
    assert "olmo-3-7b" in main(["--preset", "olmo-3-7b"])


def test_gradient_checkpointing_engages_in_the_update_path(tmp_path):
    """Bytes saved for the backward, with and without --grad-checkpointing, on the path the
    trainer uses (LoRA, train mode, chunked log-probs)."""
    from srpo.logprobs import token_logprobs
    from srpo.model import load_model
    from tests.srpo.real_model import make_model_dir

    path = make_model_dir(tmp_path / "m", n_layer=4)
    saved = {}
    for ckpt in (False, True):
        model, tok = load_model(path, lora_rank=4, gradient_checkpointing=ckpt)
        model.train()
        seen = {}

        def pack(t, seen=seen):
            seen[(t.data_ptr(), t.shape)] = t.numel() * t.element_size()
            return t

        prompts = [tok.encode("What is 3 + 4?\n")] * 4
        responses = [tok.encode("We add 3 and 4.</thought>" * 4, add_special_tokens=False)] * 4
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = token_logprobs(model, prompts, responses)
        sum(o.sum() for o in out).backward()
        saved[ckpt] = sum(seen.values())
    assert saved[True] < 0.5 * saved[False], saved


# ------------------------------------------------------------------------------------------------
# The estimate against measured peaks; CUDA peaks; the allocator setting
# ------------------------------------------------------------------------------------------------


def _measurer():
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parents[2] / "benchmarks")
    sys.path.insert(0, bench)
    try:
        import measure_update_memory
    finally:
        sys.path.remove(bench)
    return measure_update_memory


@pytest.mark.skipif(not __import__("os").access("/proc/self/clear_refs", __import__("os").W_OK),
                    reason="needs Linux's /proc/self/clear_refs to reset the peak resident set")
def test_the_estimate_covers_the_measured_update_peak():
    """One update micro-batch measured on CPU (benchmarks/measure_update_memory.py) at several
    knob settings: logits-bound (chunk size, float32 and bfloat16) and block-bound (depth,
    checkpointing on and off). The estimate is at least the peak and at most 1.4x it; the old
    8 bytes per logit under-promised the logits-bound settings by half."""
    m = _measurer()
    names = ("logits, chunk 512", "logits, chunk 512, bf16", "blocks x2, no ckpt",
             "blocks x6, no ckpt, bf16", "blocks x6, ckpt", "blocks x6, ckpt, bf16")
    settings = [k for k in m.GRID if k["name"] in names]
    peaks = m.measure(settings, timeout=600)
    for knobs, peak in zip(settings, peaks):
        estimate_bytes = m.estimated(knobs)
        assert peak <= estimate_bytes <= 1.4 * peak, (knobs["name"], peak, estimate_bytes)
    logits_bound = settings[0]
    logits = logits_bound["chunk"] * logits_bound["vocab"]
    assert 8 * logits < 0.6 * peaks[0] and peaks[0] / logits < 17


class FakeCuda:
    def __init__(self, allocated, reserved):
        self.allocated, self.reserved = allocated, reserved

    def max_memory_allocated(self, device):
        return self.allocated

    def max_memory_reserved(self, device):
        return self.reserved


def test_cuda_peaks_report_allocated_and_reserved():
    import math

    from srpo.memory import GIB, cuda_peaks

    peaks = cuda_peaks("cuda:0", FakeCuda(3 * GIB, 5 * GIB))
    assert peaks == {"cuda_peak_gib": 3.0, "cuda_reserved_peak_gib": 5.0}
    cpu = cuda_peaks("cpu")
    assert set(cpu) == set(peaks) and all(math.isnan(v) for v in cpu.values())


def test_expandable_segments_are_set_only_where_they_help():
    from srpo.memory import EXPANDABLE_SEGMENTS, configure_cuda_allocator

    env = {}
    assert configure_cuda_allocator("cuda", "hf", env)
    assert env == {"PYTORCH_CUDA_ALLOC_CONF": EXPANDABLE_SEGMENTS}
    for device, engine, environ in (("cpu", "hf", {}), ("cuda", "vllm", {}),
                                    ("cuda", "hf", {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"})):
        before = dict(environ)
        assert not configure_cuda_allocator(device, engine, environ)
        assert environ == before  # a user's setting, a CPU run and vLLM's pool are left alone
