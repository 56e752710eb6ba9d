"""Tiny models for the engine tests: real architectures (Llama, Qwen2) with head_dim 64 (vLLM's CPU
attention refuses 16), random weights, and a byte-level BPE tokenizer trained here.

The tokenizer is trained without the pre-tokenizer's regex, so merges cross punctuation and spaces:
``</thought>`` lands inside tokens such as ``.</thought> The``, i.e. a thought can end *inside* a
token (the decoded text then runs past the delimiter). The weights are drawn with a larger scale
than transformers' default (logits are peaked: greedy comparisons are not decided by float noise)
and the embedding rows of the tokens that contain the delimiter are scaled up, so that random
chains do contain thoughts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from srpo.thoughts import THOUGHT_DELIMITER

WORDS = ["we", "add", "the", "sum", "is", "then", "so", "answer", "check", "step", "first",
         "result", "multiply", "and", "it", "gives", "carry", "next", "value"]


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(n):
        a, b = int(rng.integers(2, 60)), int(rng.integers(2, 60))
        texts.append(f"What is {a} + {b}?\n")
        texts.append(f"We add {a} and {b}.</thought> Then the sum is {a + b}.</thought> "
                     f"So the answer is \\boxed{{{a + b}}}.</thought>")
        texts.append(" ".join(rng.choice(WORDS, size=8)) + f".</thought> {rng.choice(WORDS)}")
    return texts


def make_bpe_tokenizer(vocab_size: int = 600):
    """A byte-level BPE tokenizer without pre-tokenizer regex (merges cross '.', ' ', '>')."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2,
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    core.train_from_iterator(corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", padding_side="left")


def delimiter_tokens(tokenizer) -> list[int]:
    """Ids whose own text contains the whole delimiter."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return [i for i, t in enumerate(texts) if THOUGHT_DELIMITER in t]


def build_engine_model(tokenizer, arch: str = "llama", n_layer: int = 2, d_model: int = 128,
                       n_head: int = 2, n_kv_head: int | None = None, init: float = 0.1,
                       boost: float = 3.0, seed: int = 0, eos_token_ids=None):
    """A random model with head_dim ``d_model / n_head`` (64 by default), peaked logits and the
    delimiter tokens' embedding rows scaled by ``boost`` (tied embeddings)."""
    from srpo.model import build_random_model

    model = build_random_model(tokenizer, arch, n_layer=n_layer, d_model=d_model, n_head=n_head,
                               n_kv_head=n_kv_head, tie_embeddings=True, seed=seed,
                               eos_token_ids=eos_token_ids)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed + 1)
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, init)
        emb = model.get_input_embeddings().weight
        for i in delimiter_tokens(tokenizer):
            emb[i] *= boost
        emb[tokenizer.eos_token_id] *= 0.0  # chains end by thoughts and caps, not by chance eos
    model.eval()
    return model


def save_engine_model(path: Path, arch: str = "llama", tokenizer=None, **kw) -> Path:
    """Build and save (model + tokenizer) to ``path``; returns the directory."""
    from srpo.model import save_model

    tokenizer = tokenizer if tokenizer is not None else make_bpe_tokenizer()
    return save_model(build_engine_model(tokenizer, arch, **kw), tokenizer, path)


PROMPTS = ["What is 3 + 4?\n", "What is 12 + 30?\n", "We add", "Then the sum",
           "So the answer", "check the first step", "multiply it and", "What is 51 + 7?\n"]
