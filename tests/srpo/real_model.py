"""A small "real" model for tests: a random Qwen2 / Llama checkpoint with a byte-level BPE tokenizer
trained here (chat template, two eos ids), saved as a Hugging Face directory, and a math JSONL.

On this tokenizer ``</thought>`` is not a token: it merges with the punctuation before it
(``.</`` ``thought`` ``>``), as on real BPE vocabularies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from srpo.localize import build_localization_text
from srpo.tasks import RELEASE_ROLLOUT_PROMPT

WORDS = ["we", "add", "the", "numbers", "so", "sum", "is", "then", "answer", "check", "step",
         "first", "wrong", "because", "result", "multiply", "and", "it", "gives"]


def arithmetic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a, b = int(rng.integers(2, 60)), int(rng.integers(2, 60))
        rows.append({"id": f"p{i}", "question": f"What is {a} + {b}?", "answer": str(a + b)})
    return rows


def solution_text(a: int, b: int) -> str:
    return (f"We add {a} and {b}.</thought>The sum is {a + b}.</thought>"
            f"So the answer is \\boxed{{{a + b}}}.</thought>")


def corpus(rows: list[dict], seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    texts = []
    for row in rows:
        a, b = (int(x) for x in row["question"][8:-1].split(" + "))
        texts.append(RELEASE_ROLLOUT_PROMPT.format(question=row["question"]))
        texts.append(solution_text(a, b))
        texts.append(build_localization_text(row["question"], [f"We add {a} and {b}.</thought>"],
                                             style="release"))
        texts.append(" ".join(rng.choice(WORDS, size=12)) + ".</thought>")
    return texts


def make_tokenizer(rows: list[dict] | None = None, vocab_size: int = 700):
    from srpo.tokenizer import build_bpe_tokenizer

    return build_bpe_tokenizer(corpus(rows or arithmetic_rows(200)), vocab_size=vocab_size)


def make_model_dir(path: Path, arch: str = "qwen2", n_layer: int = 2, d_model: int = 64,
                   n_head: int = 4, n_kv_head: int = 2, seed: int = 0) -> Path:
    """Save a random model + BPE tokenizer; the generation config lists two eos ids."""
    from srpo.model import build_random_model, save_model

    tok = make_tokenizer()
    eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
    model = build_random_model(tok, arch, n_layer=n_layer, d_model=d_model, n_head=n_head,
                               n_kv_head=n_kv_head, seed=seed, eos_token_ids=eos)
    return save_model(model, tok, path)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
