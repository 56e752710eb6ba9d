"""The random model and generated task the GPU benchmarks run on (``gpu_check.py``,
``bench_engines.py``): addition questions in the release's prompt layout, a byte-level BPE
tokenizer trained on texts shaped like real chains (so ``</thought>`` merges as it does in a real
vocabulary), and a randomly initialised Llama/Qwen2 model of a given shape, saved to disk.

Nothing here is timed by itself; the callers time what they need.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def task_rows(n: int, seed: int = 0) -> list[dict]:
    """``n`` addition questions ``What is a + b?`` (a, b in 2..998) with their answers."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a, b = (int(x) for x in rng.integers(2, 999, size=2))
        rows.append({"id": f"q{i}", "question": f"What is {a} + {b}?", "answer": str(a + b),
                     "data_source": "generated_arithmetic"})
    return rows


def corpus(rows: list[dict]) -> list[str]:
    """Texts that give the tokenizer the merges of real ones around the delimiter: a rollout in
    the release's prompt and the release's localization prompt over the same thoughts."""
    from srpo.localize import build_localization_text
    from srpo.tasks import RELEASE_ROLLOUT_PROMPT

    texts = []
    for row in rows:
        a, b = row["question"][8:-1].split(" + ")
        steps = [f"We add {a} and {b}.</thought>", f"The sum is {row['answer']}.</thought>",
                 f"So the answer is \\boxed{{{row['answer']}}}.</thought>"]
        texts.append(RELEASE_ROLLOUT_PROMPT.format(question=row["question"]) + "".join(steps))
        texts.append(build_localization_text(row["question"], steps, style="release"))
    return texts


def parity_task(data: Path):
    """The questions of ``data`` with synthetic rewards (length parity of the response): a random
    model solves nothing, and the trainers need both outcomes in a group to do any work."""
    from srpo.data import read_problems
    from srpo.tasks import DatasetTask

    class ParityTask(DatasetTask):
        def grade(self, problem, response_text):
            return float(len(response_text) % 2)

    return ParityTask(read_problems(data))


def report_header(args) -> dict:
    """What every benchmark report starts with: the device, the size and arch flags, versions."""
    import platform

    import torch
    import transformers

    cuda = args.device == "cuda"
    return {"device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
            "size": args.size, "arch": args.arch, "torch": torch.__version__,
            "transformers": transformers.__version__}


def write_task(rows: list[dict], out: Path) -> Path:
    """``rows`` as ``out/task.jsonl`` (the question/answer file the trainers read)."""
    data = out / "task.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def build_and_save(tokenizer, shape: tuple, arch: str, device: str, out: Path,
                   max_positions: int) -> tuple[Path, int]:
    """A random ``arch`` model of ``shape`` = (layers, width, heads, kv heads, MLP width, vocab)
    in bf16 on CUDA (fp32 on CPU), saved with ``tokenizer`` to ``out/model``; ``<|im_end|>`` and
    the tokenizer's EOS end a chain. Returns ``(model_dir, parameter count)``; the model is
    freed before returning."""
    import torch

    from srpo.model import build_random_model, save_model

    layers, width, heads, kv_heads, mlp, _vocab = shape
    cuda = device == "cuda"
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]
    model = build_random_model(tokenizer, arch, n_layer=layers, d_model=width, n_head=heads,
                               n_kv_head=kv_heads, d_ff=mlp, max_positions=max_positions, seed=0,
                               dtype=torch.bfloat16 if cuda else torch.float32, device=device,
                               eos_token_ids=eos)
    n_params = sum(p.numel() for p in model.parameters())
    model_dir = save_model(model, tokenizer, out / "model")
    del model
    if cuda:
        torch.cuda.empty_cache()
    return model_dir, n_params
