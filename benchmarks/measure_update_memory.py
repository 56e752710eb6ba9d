"""Measure the memory of one update micro-batch on CPU and derive ``srpo.memory``'s constants.

    python benchmarks/measure_update_memory.py            # the grid below, with the derivation

One micro-batch is what the trainer runs per forward/backward: ``srpo.logprobs.token_logprobs``
(chunked log-probs) on a LoRA (all linear layers, float32 adapter) Qwen2 model built in code, then
``backward``. Its peak is read from the kernel: the resident set's high-water mark (``VmHWM``) is
reset (``/proc/self/clear_refs``) right before the micro-batch and read right after, minus the
resident set before it. The process runs with ``MALLOC_MMAP_THRESHOLD_=65536`` so that every
tensor over 64 KiB is a mapping of its own, returned to the kernel when freed: the resident set
then follows the live tensors (each touched page), which is the quantity a GPU allocator's
"allocated" peak reports. Linux only.

Derivation printed: bytes per logit (two chunk sizes, everything else equal: the difference over
the difference in logits), bytes per token and block (two depths), the checkpointed block's
recompute, and ``srpo.memory.estimate``'s update bytes against every measured peak.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
THRESHOLD = "65536"

#: the blocks-dominated shape every setting starts from (a small vocabulary, wide blocks)
BASE = dict(vocab=512, hidden=256, inter=704, layers=2, heads=4, kv_heads=2, rows=4, prompt=32,
            response=224, chunk=64, ckpt=True, dtype="float32")
#: the logits-dominated shape (a large vocabulary, narrow blocks)
LOGITS = dict(BASE, vocab=32000, hidden=64, inter=128)
#: knob settings: the model shape, the micro-batch, chunking, checkpointing and dtype
GRID = [
    dict(LOGITS, name="logits, chunk 256", chunk=256),
    dict(LOGITS, name="logits, chunk 512", chunk=512),
    dict(LOGITS, name="logits, chunk 512, bf16", chunk=512, dtype="bfloat16"),
    dict(BASE, name="blocks x2, no ckpt", ckpt=False),
    dict(BASE, name="blocks x6, no ckpt", layers=6, ckpt=False),
    dict(BASE, name="blocks x6, no ckpt, bf16", layers=6, ckpt=False, dtype="bfloat16"),
    dict(BASE, name="blocks x6, ckpt", layers=6),
    dict(BASE, name="blocks x6, ckpt, bf16", layers=6, dtype="bfloat16"),
]


def _status(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+) kB", text).group(1)) * 1024


def shape_of(knobs: dict):
    from srpo.memory import ModelShape

    return ModelShape(
        layers=knobs["layers"],
        hidden=knobs["hidden"],
        heads=knobs["heads"],
        kv_heads=knobs["kv_heads"],
        intermediate=knobs["inter"],
        vocab=knobs["vocab"],
        qkv_bias=True,
    )


def estimated(knobs: dict) -> float:
    """``srpo.memory.estimate``'s update bytes of a setting (activations + logits)."""
    from srpo.memory import GIB, estimate

    est = estimate(
        shape_of(knobs),
        lora_rank=8,
        micro_batch_tokens=knobs["rows"] * (knobs["prompt"] + knobs["response"]),
        grad_checkpointing=knobs["ckpt"],
        logprob_chunk_tokens=knobs["chunk"],
        dtype_bytes=4 if knobs["dtype"] == "float32" else 2,
    )
    return (est["update_activations_gib"] + est["update_logits_gib"]) * GIB


def _measure_here(knobs: dict) -> int:
    """Peak bytes of one micro-batch in this process (needs the mmap threshold set at start)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from srpo.logprobs import token_logprobs
    from srpo.model import _enable_checkpointing

    dtype = getattr(torch, knobs["dtype"])
    config = Qwen2Config(
        vocab_size=knobs["vocab"],
        hidden_size=knobs["hidden"],
        intermediate_size=knobs["inter"],
        num_hidden_layers=knobs["layers"],
        num_attention_heads=knobs["heads"],
        num_key_value_heads=knobs["kv_heads"],
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    default = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.set_default_dtype(dtype)
        try:
            model = Qwen2ForCausalLM(config)
        finally:
            torch.set_default_dtype(default)
    if knobs["ckpt"]:
        _enable_checkpointing(model)
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    model.train()
    g = torch.Generator().manual_seed(0)
    prompts = [
        torch.randint(0, knobs["vocab"], (knobs["prompt"],), generator=g).tolist()
        for _ in range(knobs["rows"])
    ]
    responses = [
        torch.randint(0, knobs["vocab"], (knobs["response"],), generator=g).tolist()
        for _ in range(knobs["rows"])
    ]
    # a first identical pass creates what lives on (rotary tables, the adapter's gradients,
    # kernels' one-time workspaces): the second one is the steady state a training run sees
    out = token_logprobs(model, prompts, responses, chunk_tokens=knobs["chunk"])
    sum(o.sum() for o in out).backward()
    del out
    model.zero_grad(set_to_none=False)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    out = token_logprobs(model, prompts, responses, chunk_tokens=knobs["chunk"])
    sum(o.sum() for o in out).backward()
    peak = _status("VmHWM") - before
    del out, model
    return peak


def measure(settings: list[dict], timeout: float = 600) -> list[int]:
    """Peak bytes of each setting, measured in one fresh subprocess (the mmap threshold must be
    set before the process starts)."""
    env = {
        **os.environ,
        "MALLOC_MMAP_THRESHOLD_": THRESHOLD,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    here = str(Path(__file__).resolve().parent)
    code = (
        f"import json, sys; sys.path.insert(0, {here!r}); import measure_update_memory as m; "
        "print(json.dumps([m._measure_here(k) for k in json.loads(sys.argv[1])]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(settings)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the measurement failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> dict:
    sys.path.insert(0, str(REPO_ROOT))
    peaks = measure(GRID)
    rows = {k["name"]: (k, p) for k, p in zip(GRID, peaks)}
    print(f"{'setting':<28} {'measured MB':>12} {'estimate MB':>12} {'ratio':>6}")
    for knobs, peak in zip(GRID, peaks):
        est = estimated(knobs)
        print(f"{knobs['name']:<28} {peak / 1e6:>12.1f} {est / 1e6:>12.1f} {est / peak:>6.2f}")
    (a, pa), (b, pb) = rows["logits, chunk 256"], rows["logits, chunk 512"]
    per_logit = (pb - pa) / ((b["chunk"] - a["chunk"]) * a["vocab"])
    per_logit_bf16 = rows["logits, chunk 512, bf16"][1] / (b["chunk"] * b["vocab"])
    (c, pc), (d, pd) = rows["blocks x2, no ckpt"], rows["blocks x6, no ckpt"]
    tokens = c["rows"] * (c["prompt"] + c["response"])
    per_block = (pd - pc) / (d["layers"] - c["layers"]) / tokens
    derived = {
        "bytes_per_logit": per_logit,
        "bytes_per_logit_bf16_total": per_logit_bf16,
        "bytes_per_token_block_fp32": per_block,
        "itemised_block_fp32": None,
    }
    from srpo.memory import block_activation_bytes

    derived["itemised_block_fp32"] = block_activation_bytes(shape_of(c), 4, lora=True)
    print(json.dumps(derived, indent=2))
    return {"peaks": dict(zip([k["name"] for k in GRID], peaks)), "derived": derived}


if __name__ == "__main__":
    main()
