"""A scripted causal LM for engine tests: it writes a given text, token by token, from wherever the
context stands.

``ScriptedLM(tokenizer, prompt_ids, target)`` behaves as a Hugging Face causal LM to
``srpo.engines.hf.RolloutEngine`` (forward with a cache, ``logits_to_keep``, left padding): its
next token is, while the response so far is the canonical encoding of a prefix of ``target``, the
next canonical id of ``target`` (so a fresh chain is exactly ``tokenizer.encode(target)``: the ids a
real model samples most often, straddling tokens such as ``>Then`` included); once the response's
text is a prefix of ``target`` reached otherwise (a reset prefix cut at a delimiter), the first id
of the encoding of the rest. At the end of ``target`` it writes eos. The token history of each row
lives in the cache object (``batch_select_indices`` keeps rows, as the engine does).
"""

from __future__ import annotations

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast


class ScriptCache:
    """Per-row token histories (the engine drops and repeats rows through this call)."""

    def __init__(self) -> None:
        self.rows: list[list[int]] = []

    def batch_select_indices(self, indices) -> None:
        self.rows = [list(self.rows[int(i)]) for i in indices]


class ScriptedLM(torch.nn.Module):
    def __init__(self, tokenizer, prompt_ids, target: str) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.prompt = [int(t) for t in prompt_ids]
        self.target = target
        self.canonical = list(tokenizer.encode(target, add_special_tokens=False))
        self.vocab = len(tokenizer)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a device for the engine
        self.config = None
        self.generation_config = None

    def _next(self, history: list[int]) -> int:
        if history[: len(self.prompt)] != self.prompt:
            raise AssertionError("ScriptedLM got another prompt")
        response = history[len(self.prompt) :]
        n = len(response)
        if response == self.canonical[:n]:
            if n < len(self.canonical):
                return self.canonical[n]
            return int(self.tokenizer.eos_token_id)
        text = self.tokenizer.decode(
            response, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        if not self.target.startswith(text):
            raise AssertionError(f"ScriptedLM: the context {text!r} left the script")
        if text == self.target:
            return int(self.tokenizer.eos_token_id)
        # the token that, after this context, writes the longest next piece of the target
        tail = response[-4:]
        lead = self.tokenizer.decode(tail, clean_up_tokenization_spaces=False)
        texts = self.tokenizer.batch_decode(
            [tail + [i] for i in range(self.vocab)], clean_up_tokenization_spaces=False
        )
        rest = self.target[len(text) :]
        best = max(
            (len(t) - len(lead), i)
            for i, t in enumerate(texts)
            if t.startswith(lead) and len(t) > len(lead) and rest.startswith(t[len(lead) :])
        )
        return best[1]

    def forward(
        self,
        input_ids,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        use_cache=True,
        logits_to_keep=None,
    ):
        cache = past_key_values if past_key_values is not None else ScriptCache()
        ids = input_ids.tolist()
        mask = (
            attention_mask[:, -input_ids.shape[1] :].tolist()
            if attention_mask is not None
            else [[1] * len(r) for r in ids]
        )
        if not cache.rows:
            cache.rows = [[] for _ in ids]
        logits = torch.full((len(ids), 1, self.vocab), -1e4)
        for b, (row, keep) in enumerate(zip(ids, mask)):
            cache.rows[b].extend(t for t, m in zip(row, keep) if m)
            logits[b, 0, self._next(cache.rows[b])] = 0.0
        return CausalLMOutputWithPast(logits=logits, past_key_values=cache)
