"""The Hugging Face engine: batched, seeded, thought-by-thought sampling with a KV cache.

``RolloutEngine`` implements the ``srpo.engines.base.ThoughtEngine`` seam with a Hugging Face
causal LM (or a peft wrapper) and its own decoding loop. It decodes with the training model
itself, so ``sync`` has nothing to do. The default engine (``--engine hf``): on a CPU it is the
faster one for the tiny models (``benchmarks/bench_engines.py``), and it needs nothing beyond the
``llm`` extra.

Batching and memory: rows of one request share one prefill of prompt + prefix (its KV cache is
repeated for the request's rows); the KV cache is preallocated at the length the batch can reach
and written in place (``srpo.kv_cache``: no copy of the cache per decoded token); requests are packed into generation batches under a token
budget (``max_batch_tokens``: rows x (context + the most tokens a row may still sample), the size
of the KV cache the batch can reach); finished rows leave the batch (and the cache). All reset
groups of a training step are decoded together (``sample_suffix_groups``).

Randomness: each sampled row has its own CPU ``torch.Generator`` seeded with its request seed;
each sampled token consumes exactly one uniform draw of its row's generator (inverse-CDF sampling
within the top-p nucleus). A row's tokens therefore depend only on its seed and its logits, not on
which other rows share the batch: batched and one-by-one sampling give identical chains for the
same seeds (up to float rounding at a CDF boundary, of probability ~1e-6 per token).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence

import torch
from torch import Tensor

from srpo.engines.base import (
    Chain,
    GenerationConfig,
    RolloutRequest,
    ThoughtEngine,
    _Row,
    check_temperature,
    draw_seeds,
)
from srpo.kv_cache import make_cache
from srpo.tokenizer import eos_token_ids

__all__ = ["RolloutEngine", "HFEngine", "sample_from_logits"]


def sample_from_logits(
    logits: Tensor,
    temperature: float,
    top_p: float,
    uniforms: Tensor | None,
) -> Tensor:
    """Sample one token per row by inverse CDF within the top-p nucleus.

    Args:
        logits: (B, V) next-token logits.
        temperature: > 0 samples, 0 takes the argmax (then ``uniforms`` is ignored).
        top_p: nucleus mass in (0, 1].
        uniforms: (B,) draws in [0, 1), one per row, on the logits' device.

    Returns:
        (B,) int64 token ids. The nucleus is the smallest set of most likely tokens whose mass
        reaches ``top_p``; the cumulative distribution is taken in vocabulary order so that tiny
        logit differences (cache vs recompute) do not reorder it.
    """
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    if uniforms is None:
        raise ValueError("uniforms are required when temperature > 0")
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
    # float64 CDF: u < 1 then gives u * total < total, so a zero-probability token is never chosen.
    cdf = probs.double().cumsum(dim=-1)
    targets = uniforms.double().unsqueeze(-1) * cdf[:, -1:]
    tokens = torch.searchsorted(cdf, targets, right=True).squeeze(-1)
    return tokens.clamp_(max=logits.shape[-1] - 1)


def _cache_keyword(model) -> tuple[str, str | None]:
    """Names of the cache argument and of the logits-to-keep argument of ``model.forward``.

    transformers 5.x calls the cache ``cache`` in some models and ``past_key_values`` in others;
    peft models are inspected through their base model.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(base.forward).parameters
    cache_name = "cache" if "cache" in parameters else "past_key_values"
    keep_name = "logits_to_keep" if "logits_to_keep" in parameters else None
    return cache_name, keep_name


def _output_cache(output):
    for name in ("cache", "past_key_values"):
        value = output.get(name) if hasattr(output, "get") else getattr(output, name, None)
        if value is not None:
            return value
    raise RuntimeError("the model returned no KV cache; is use_cache supported?")


class RolloutEngine(ThoughtEngine):
    """``ThoughtEngine`` over a Hugging Face causal LM, with its own sampling loop and KV cache.

    Args:
        model: a Hugging Face causal LM (or peft wrapper) whose forward accepts a cache.
        tokenizer: its tokenizer (pad defaults to the first eos id).
        config: sampling settings and caps (default ``GenerationConfig()``).
        device: where the inputs go (default: the model's device).
        eos_ids: ids that end a chain (default: ``srpo.tokenizer.eos_token_ids(tokenizer, model)``).
    """

    name = "hf"

    def __init__(self, model, tokenizer, config: GenerationConfig | None = None, device=None,
                 eos_ids=None) -> None:
        self.model = model
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self._init_rules(tokenizer, config,
                         eos_ids if eos_ids is not None else eos_token_ids(tokenizer, model))
        self._cache_name, self._keep_name = _cache_keyword(model)

    # ----------------------------------------------------------------------------------------
    # The seam
    # ----------------------------------------------------------------------------------------
    def rollout(self, requests: Sequence[RolloutRequest],
                temperature: float | None = None) -> list[list[Chain]]:
        temperature = self.config.temperature if temperature is None else float(temperature)
        check_temperature(temperature)
        rows_of: list[list[_Row]] = []
        for index, request in enumerate(requests):
            rows_of.append(self._request_rows(request, temperature, f"requests[{index}]"))
        with self._inference():
            for batch in self._pack([(rows[0].context, rows) for rows in rows_of]):
                self._run_batch(batch, temperature, self.config.top_p)
        return [[self._to_chain(row) for row in rows] for rows in rows_of]

    def complete_seeded(self, prompts, max_new_tokens, temperature, top_p, seeds,
                        stop_at_boxed) -> list[list[int]]:
        rows = self._plain_rows(prompts, max_new_tokens, temperature, seeds, stop_at_boxed)
        with self._inference():
            for batch in self._pack([(list(r.prompt_ids), [r]) for r in rows]):
                self._run_batch(batch, temperature, top_p)
        return [row.response for row in rows]

    def _make_rng(self, seed: int) -> torch.Generator:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(int(seed))
        return generator

    # ----------------------------------------------------------------------------------------
    # Reference path (benchmarks, tests)
    # ----------------------------------------------------------------------------------------
    def sample_suffixes_recompute(
        self,
        prompt_ids: Sequence[int],
        prefix_ids: Sequence[int],
        k: int,
        generator: torch.Generator | None,
        temperature: float | None = None,
        batched: bool = False,
    ) -> list[Chain]:
        """Reference for ``sample_suffixes`` that re-encodes the prefix for every suffix.

        Same seeds, same sampling, hence the same chains (up to float rounding). With
        ``batched=False`` (default) each suffix is a separate generation call that encodes prompt
        + prefix itself, as a server without a prefix cache would; with ``batched=True`` the k
        copies of prompt + prefix are encoded together in one batch.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        temperature = self._resolve_temperature(temperature, generator)
        prompt = self._check_prompt(prompt_ids, "prompt_ids")
        seeds = draw_seeds(generator, k) if temperature > 0 else None
        request = RolloutRequest(prompt, k, None if seeds is None else tuple(seeds),
                                 tuple(int(t) for t in prefix_ids))
        rows = self._request_rows(request, temperature, "request")
        with self._inference():
            if batched:
                self._run_batch([(row.context, [row]) for row in rows], temperature,
                                self.config.top_p)
            else:
                for row in rows:
                    self._run_batch([(row.context, [row])], temperature, self.config.top_p)
        return [self._to_chain(row) for row in rows]

    # ----------------------------------------------------------------------------------------
    # Internals
    # ----------------------------------------------------------------------------------------
    def _row_cost(self, context_len: int, row: _Row) -> int:
        """Tokens of KV cache the row can reach: its context plus the most it may still sample."""
        config = self.config
        if row.plain is not None:
            return context_len + row.plain[0]
        bound = (config.max_thoughts - len(row.spans)) * config.max_thought_tokens
        if config.max_response_tokens is not None:
            bound = min(bound, config.max_response_tokens - len(row.response))
        if config.max_model_len is not None:
            bound = min(bound, config.max_model_len - context_len)
        if config.max_new_tokens is not None:
            bound = min(bound, config.max_new_tokens - row.n_generated)
        return context_len + max(bound, 1)

    def _pack(self, units: list[tuple[list[int], list[_Row]]]):
        """Split (context, rows sharing it) units into batches under ``max_batch_tokens``.

        A batch costs (its rows) x (its largest row cost): left-padded rows all reach the longest
        row's cache length. Rows of one unit stay consecutive; a unit may span batches; a single
        row over the budget gets a batch of its own.
        """
        budget = self.config.max_batch_tokens
        batch: list[tuple[list[int], list[_Row]]] = []
        n_rows, widest = 0, 0
        for context, rows in units:
            live = [row for row in rows if not row.done]
            if not live:
                continue
            if budget is None:
                batch.append((context, live))
                continue
            cost = self._row_cost(len(context), live[0])
            chunk: list[_Row] = []
            for row in live:
                if n_rows and (n_rows + 1) * max(widest, cost) > budget:
                    if chunk:
                        batch.append((context, chunk))
                        chunk = []
                    yield batch
                    batch, n_rows, widest = [], 0, 0
                chunk.append(row)
                n_rows += 1
                widest = max(widest, cost)
            if chunk:
                batch.append((context, chunk))
        if batch:
            yield batch

    def _run_batch(self, batch: list[tuple[list[int], list[_Row]]], temperature: float,
                   top_p: float) -> None:
        """Prefill each distinct context once, repeat its cache for its rows, decode to the end."""
        contexts = [context for context, _ in batch]
        counts = [len(rows) for _, rows in batch]
        rows = [row for _, chunk in batch for row in chunk]
        # the KV cache is allocated once at the length the batch can reach (left padding to the
        # longest context, then at most the largest remaining budget of a row)
        capacity = max(len(c) for c in contexts) + max(
            self._row_cost(len(context), row) - len(context) for context, chunk in batch
            for row in chunk)
        logits, cache, mask, positions = self._prefill(contexts, capacity)
        if any(c != 1 for c in counts):
            index = torch.repeat_interleave(torch.arange(len(contexts), device=self.device),
                                            torch.tensor(counts, device=self.device))
            cache.batch_select_indices(index)
            logits, mask, positions = logits[index], mask[index], positions[index]
        self._decode(rows, logits, cache, mask, positions, temperature, top_p)

    @contextlib.contextmanager
    def _inference(self):
        """Eval mode and inference mode for the duration; the training flag is restored after."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            self.model.train(was_training)

    def _forward(self, input_ids: Tensor, mask: Tensor, positions: Tensor, cache, last_only: bool):
        kwargs = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "position_ids": positions,
            "use_cache": True,
        }
        if cache is not None:
            kwargs[self._cache_name] = cache
        if last_only and self._keep_name is not None:
            kwargs[self._keep_name] = 1
        output = self.model(**kwargs)
        return output.logits[:, -1, :], _output_cache(output)

    def _prefill(self, sequences: list[list[int]], capacity: int | None = None):
        """Encode left-padded sequences into a KV cache of ``capacity`` positions
        (``srpo.kv_cache``; None: the model's own growing cache). Returns last logits (B, V),
        cache, mask (B, L), next positions (B,)."""
        length = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for i, seq in enumerate(sequences):
            ids[i, length - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[i, length - len(seq) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(dim=-1) - 1).clamp_(min=0)
        cache = None if capacity is None else make_cache(self.model, capacity)
        logits, cache = self._forward(ids, mask, positions, cache, last_only=True)
        return logits, cache, mask, mask.sum(dim=-1)

    def _uniforms(self, rows: list[_Row]) -> Tensor | None:
        if rows[0].rng is None:
            return None
        draws = [torch.rand((), generator=row.rng).item() for row in rows]
        return torch.tensor(draws, dtype=torch.float64, device=self.device)

    def _decode(self, rows, logits, cache, mask, positions, temperature: float, top_p: float) -> None:
        """Sample until every row is done. Shapes: logits (B, V), mask (B, L), positions (B,)."""
        record = self.config.logprobs
        scale = temperature if temperature > 0 else 1.0
        live = rows
        while live:
            tokens_t = sample_from_logits(logits, temperature, top_p, self._uniforms(live))
            if record:
                logp = torch.log_softmax(logits.float() / scale, dim=-1)
                picked = logp.gather(-1, tokens_t.unsqueeze(-1)).squeeze(-1).tolist()
            tokens = tokens_t.tolist()
            still = []
            for index, (row, token) in enumerate(zip(live, tokens)):
                if record:
                    row.logprobs.append(float(picked[index]))
                self._advance(row, int(token))
                if not row.done:
                    still.append(index)
            if not still:
                break
            next_ids = torch.tensor([[tokens[i]] for i in still], dtype=torch.long, device=self.device)
            if len(still) < len(live):
                keep = torch.tensor(still, dtype=torch.long, device=self.device)
                cache.batch_select_indices(keep)
                mask, positions = mask[keep], positions[keep]
                live = [live[i] for i in still]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
            logits, cache = self._forward(next_ids, mask, positions.unsqueeze(-1), cache, last_only=False)
            positions = positions + 1


#: the engine's name in ``make_engine`` / ``--engine hf``
HFEngine = RolloutEngine
