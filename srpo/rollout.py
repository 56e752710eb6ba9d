"""Rollout engine: batched, seeded, thought-by-thought sampling with a KV cache.

The engine runs its own sampling loop over the model's forward pass (not `model.generate`), so the
caps and the delimiter logic are exact:

- a thought ends right after the delimiter's ids (`</thought>`);
- a chain ends when a closed thought contains a complete `\\boxed{...}` (`finished`), or at the
  end-of-sequence token (`finished` if the response holds a boxed answer), or at a cap: the
  `max_thoughts`-th thought closes without an answer, a thought reaches `max_thought_tokens` tokens
  without its delimiter, or the chain reaches `max_new_tokens` sampled tokens (`truncated`). A
  capped thought is not force-closed: it stays as the trailing unfinished span.

Batching: prompts are left-padded, each distinct prompt is encoded once and its cache is repeated for
its `n_per_prompt` chains; finished chains are dropped from the batch (and from the cache).
`sample_suffixes` encodes prompt + prefix once and repeats that cache for the k suffixes.

Randomness: each chain gets its own CPU `torch.Generator`, seeded from the caller's generator when
the chains are created; each sampled token consumes exactly one uniform draw of its chain's
generator (inverse-CDF sampling within the top-p nucleus). A chain's tokens therefore depend only on
its seed and its logits, not on which other chains share the batch: cached and recomputed suffix
sampling give identical chains for the same seed (up to float rounding at a CDF boundary, which has
probability of order 1e-6 per token).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from srpo.thoughts import thought_spans
from srpo.tokenizer import THOUGHT_DELIMITER, BoxedDetector, delimiter_ids

_SEED_HIGH = 2**62


@dataclass
class GenerationConfig:
    """Sampling settings of the rollout engine.

    Attributes:
        temperature: softmax temperature; 0 means greedy (argmax). Paper: 0.7.
        top_p: nucleus mass in (0, 1]; 1 disables the filter. Paper: 0.95.
        max_thoughts: at most this many thoughts per chain (counting a reset prefix's thoughts).
            Paper release: 20.
        max_thought_tokens: at most this many tokens per thought, delimiter included. Release: 256.
        max_new_tokens: at most this many sampled tokens per chain (prefix tokens not counted);
            None means `max_thoughts * max_thought_tokens`.
        delimiter: text of the step delimiter.
    """

    temperature: float = 0.7
    top_p: float = 0.95
    max_thoughts: int = 20
    max_thought_tokens: int = 256
    max_new_tokens: int | None = None
    delimiter: str = THOUGHT_DELIMITER

    def __post_init__(self) -> None:
        _check_temperature(self.temperature)
        _check_top_p(self.top_p)
        if self.max_thoughts < 1:
            raise ValueError(f"max_thoughts must be >= 1, got {self.max_thoughts}")
        if self.max_thought_tokens < 1:
            raise ValueError(f"max_thought_tokens must be >= 1, got {self.max_thought_tokens}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 or None, got {self.max_new_tokens}")
        if not self.delimiter:
            raise ValueError("delimiter must be a non-empty string, got ''")

    @property
    def token_budget(self) -> int:
        """Maximum sampled tokens per chain."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return self.max_thoughts * self.max_thought_tokens


def _check_temperature(temperature: float) -> None:
    if not temperature >= 0.0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")


def _check_top_p(top_p: float) -> None:
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


@dataclass
class Chain:
    """One sampled response.

    Attributes:
        prompt_ids: prompt token ids.
        response_ids: response token ids: the copied prefix followed by the sampled tokens
            (an end-of-sequence token, if sampled, is included).
        prefix_len: number of leading response tokens copied from a parent (0 for fresh chains).
        spans: half-open thought spans over `response_ids` (see `srpo.thoughts.thought_spans`).
        text: decoded response (special tokens removed), for grading only.
        n_generated: number of tokens actually sampled (`len(response_ids) - prefix_len`).
        finished: the chain ended with a boxed answer.
        truncated: the chain was stopped by a cap (thoughts, tokens per thought, or tokens).
    """

    prompt_ids: list[int]
    response_ids: list[int]
    prefix_len: int
    spans: list[tuple[int, int]]
    text: str
    n_generated: int
    finished: bool
    truncated: bool

    @property
    def suffix_ids(self) -> list[int]:
        """The sampled part of the response."""
        return self.response_ids[self.prefix_len :]

    @property
    def n_thoughts(self) -> int:
        """Number of thoughts (spans), a trailing unfinished one included."""
        return len(self.spans)


@dataclass
class _Row:
    """Mutable state of one chain while it is being sampled."""

    prompt_ids: list[int]
    response: list[int]
    prefix_len: int
    generator: torch.Generator | None
    thoughts_done: int = 0
    thought_start: int = 0
    n_generated: int = 0
    finished: bool = False
    truncated: bool = False
    done: bool = False
    extra: dict = field(default_factory=dict)


def _cache_keyword(model) -> tuple[str, str | None]:
    """Names of the cache argument and of the logits-to-keep argument of `model.forward`.

    transformers 5.x calls the cache `cache`; 4.x calls it `past_key_values`. peft models are
    inspected through their base model.
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


def _row_generators(generator: torch.Generator | None, n: int) -> list[torch.Generator | None]:
    """One CPU generator per chain, seeded by draws from `generator` (None: greedy rows)."""
    if generator is None:
        return [None] * n
    seeds = torch.randint(0, _SEED_HIGH, (n,), generator=generator, device=generator.device)
    rows = []
    for seed in seeds.tolist():
        row_generator = torch.Generator(device="cpu")
        row_generator.manual_seed(int(seed))
        rows.append(row_generator)
    return rows


def sample_from_logits(
    logits: Tensor,
    temperature: float,
    top_p: float,
    uniforms: Tensor | None,
) -> Tensor:
    """Sample one token per row by inverse CDF within the top-p nucleus.

    Args:
        logits: (B, V) next-token logits.
        temperature: > 0 samples, 0 takes the argmax (then `uniforms` is ignored).
        top_p: nucleus mass in (0, 1].
        uniforms: (B,) draws in [0, 1), one per row, on the logits' device.

    Returns:
        (B,) int64 token ids. The nucleus is the smallest set of most likely tokens whose mass
        reaches `top_p`; the cumulative distribution is taken in vocabulary order so that tiny
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


def _repeat_rows(logits, cache, mask, positions, n: int):
    """Repeat every row of a prefilled batch n times (row i -> rows i*n .. i*n+n-1), cache included."""
    if n > 1:
        cache.batch_repeat_interleave(n)
        logits = logits.repeat_interleave(n, dim=0)
        mask = mask.repeat_interleave(n, dim=0)
        positions = positions.repeat_interleave(n, dim=0)
    return logits, cache, mask, positions


class RolloutEngine:
    """Batched thought-by-thought sampling with a KV cache.

    Args:
        model: a Hugging Face causal LM (or peft wrapper) whose forward accepts a cache.
        tokenizer: its tokenizer; must have an eos token (pad defaults to eos).
        config: sampling settings (default `GenerationConfig()`).
        device: where the inputs go (default: the model's device).
    """

    def __init__(self, model, tokenizer, config: GenerationConfig | None = None, device=None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config if config is not None else GenerationConfig()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if tokenizer.eos_token_id is None:
            raise ValueError("tokenizer.eos_token_id must be set, got None")
        self.eos_id = int(tokenizer.eos_token_id)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.eos_id
        self.delimiter_ids = delimiter_ids(tokenizer, self.config.delimiter)
        self.boxed = BoxedDetector(tokenizer)
        self._cache_name, self._keep_name = _cache_keyword(model)

    # ----------------------------------------------------------------------------------------
    # Public API
    # ----------------------------------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        n_per_prompt: int = 1,
        generator: torch.Generator | None = None,
        temperature: float | None = None,
    ) -> list[list[Chain]]:
        """Sample `n_per_prompt` chains for every prompt, all in one batch.

        Args:
            prompts: P prompts as token-id lists (each non-empty).
            n_per_prompt: chains per prompt (>= 1).
            generator: seeds the chains; required unless the temperature is 0.
            temperature: overrides `config.temperature` (0 = greedy).

        Returns:
            P lists of `n_per_prompt` Chains, in prompt order; every chain has `prefix_len = 0`.
        """
        if n_per_prompt < 1:
            raise ValueError(f"n_per_prompt must be >= 1, got {n_per_prompt}")
        prompts = [self._check_prompt(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        if not prompts:
            return []
        temperature = self._resolve_temperature(temperature, generator)
        n_rows = len(prompts) * n_per_prompt
        generators = _row_generators(generator if temperature > 0 else None, n_rows)
        rows = [
            _Row(prompt_ids=prompts[i // n_per_prompt], response=[], prefix_len=0, generator=generators[i])
            for i in range(n_rows)
        ]
        with self._inference():
            logits, cache, mask, positions = _repeat_rows(*self._prefill(prompts), n_per_prompt)
            self._decode(rows, logits, cache, mask, positions, temperature, self.config.top_p)
        chains = [self._to_chain(row) for row in rows]
        return [chains[i * n_per_prompt : (i + 1) * n_per_prompt] for i in range(len(prompts))]

    def greedy(self, prompts: Sequence[Sequence[int]]) -> list[Chain]:
        """One greedy (argmax) chain per prompt, for evaluation."""
        return [group[0] for group in self.generate(prompts, 1, None, temperature=0.0)]

    def sample_suffixes(
        self,
        prompt_ids: Sequence[int],
        prefix_ids: Sequence[int],
        k: int,
        generator: torch.Generator | None,
        temperature: float | None = None,
    ) -> list[Chain]:
        """Sample k continuations of prompt + prefix, encoding the prefix once.

        The prompt + prefix is encoded in one forward pass (batch 1); its KV cache is repeated k
        times and the k suffixes are sampled in one batch. Thought counting continues from the
        prefix's thoughts (the caps apply to the whole response).

        Args:
            prompt_ids: the prompt (non-empty).
            prefix_ids: response ids kept from the parent (thoughts 1..k-1; may be empty).
            k: number of suffixes (>= 1).
            generator: seeds the k chains (k draws); required unless the temperature is 0.
            temperature: overrides `config.temperature`.

        Returns:
            k Chains with `prefix_len = len(prefix_ids)` and `response_ids = prefix + suffix`.
        """
        prompt, prefix, temperature, rows = self._suffix_rows(prompt_ids, prefix_ids, k, generator, temperature)
        with self._inference():
            # The prefix is encoded once; its KV cache is shared by the k suffixes.
            logits, cache, mask, positions = _repeat_rows(*self._prefill([prompt + prefix]), k)
            self._decode(rows, logits, cache, mask, positions, temperature, self.config.top_p)
        return [self._to_chain(row) for row in rows]

    def sample_suffixes_recompute(
        self,
        prompt_ids: Sequence[int],
        prefix_ids: Sequence[int],
        k: int,
        generator: torch.Generator | None,
        temperature: float | None = None,
        batched: bool = False,
    ) -> list[Chain]:
        """Reference for `sample_suffixes` that re-encodes the prefix for every suffix.

        Same seeds, same sampling, hence the same chains as `sample_suffixes` (up to float
        rounding). With `batched=False` (default) each suffix is a separate generation call that
        encodes prompt + prefix itself, as a server without a prefix cache would; with
        `batched=True` the k copies of prompt + prefix are encoded together in one batch.
        """
        prompt, prefix, temperature, rows = self._suffix_rows(prompt_ids, prefix_ids, k, generator, temperature)
        with self._inference():
            if batched:
                logits, cache, mask, positions = self._prefill([prompt + prefix] * k)
                self._decode(rows, logits, cache, mask, positions, temperature, self.config.top_p)
            else:
                for row in rows:
                    logits, cache, mask, positions = self._prefill([prompt + prefix])
                    self._decode([row], logits, cache, mask, positions, temperature, self.config.top_p)
        return [self._to_chain(row) for row in rows]

    def complete(
        self,
        prompt_ids_batch: Sequence[Sequence[int]],
        max_new_tokens: int,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
        top_p: float = 1.0,
        stop_at_boxed: bool = True,
    ) -> list[list[int]]:
        """Plain batched completion without thought logic (e.g. the localization call).

        Each completion stops at the eos token (included), after `max_new_tokens` tokens, or, with
        `stop_at_boxed`, as soon as it contains a complete `\\boxed{...}`.

        Returns:
            One list of generated ids per prompt (prompt not included).
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        _check_top_p(top_p)
        prompts = [self._check_prompt(p, f"prompt_ids_batch[{i}]") for i, p in enumerate(prompt_ids_batch)]
        if not prompts:
            return []
        temperature = self._resolve_temperature(temperature, generator)
        generators = _row_generators(generator if temperature > 0 else None, len(prompts))
        rows = [_Row(prompt_ids=p, response=[], prefix_len=0, generator=g) for p, g in zip(prompts, generators)]
        for row in rows:
            row.extra["plain"] = (max_new_tokens, stop_at_boxed)
        with self._inference():
            logits, cache, mask, positions = self._prefill(prompts)
            self._decode(rows, logits, cache, mask, positions, temperature, top_p)
        return [row.response for row in rows]

    # ----------------------------------------------------------------------------------------
    # Internals
    # ----------------------------------------------------------------------------------------
    def _check_prompt(self, prompt: Sequence[int], name: str) -> list[int]:
        ids = [int(t) for t in prompt]
        if not ids:
            raise ValueError(f"{name} is empty; a prompt needs at least one token (e.g. <bos>)")
        return ids

    def _resolve_temperature(self, temperature: float | None, generator) -> float:
        temperature = self.config.temperature if temperature is None else float(temperature)
        _check_temperature(temperature)
        if temperature > 0 and generator is None:
            raise ValueError("generator must be a torch.Generator when temperature > 0, got None")
        return temperature

    def _suffix_rows(self, prompt_ids, prefix_ids, k, generator, temperature):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        prompt = self._check_prompt(prompt_ids, "prompt_ids")
        prefix = [int(t) for t in prefix_ids]
        temperature = self._resolve_temperature(temperature, generator)
        prefix_spans = thought_spans(prefix, self.delimiter_ids, eos_id=self.eos_id)
        closed = len(prefix_spans)
        thought_start = len(prefix)
        if prefix_spans and not self._is_closed(prefix, prefix_spans[-1]):
            closed -= 1
            thought_start = prefix_spans[-1][0]
        generators = _row_generators(generator if temperature > 0 else None, k)
        rows = [
            _Row(
                prompt_ids=prompt,
                response=list(prefix),
                prefix_len=len(prefix),
                generator=g,
                thoughts_done=closed,
                thought_start=thought_start,
            )
            for g in generators
        ]
        for row in rows:
            if closed >= self.config.max_thoughts:
                row.done = row.truncated = True
        return prompt, prefix, temperature, rows

    def _is_closed(self, ids: list[int], span: tuple[int, int]) -> bool:
        start, end = span
        n = len(self.delimiter_ids)
        return end - start >= n and ids[end - n : end] == self.delimiter_ids

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

    def _prefill(self, sequences: list[list[int]]):
        """Encode left-padded sequences. Returns last logits (B, V), cache, mask (B, L), next positions (B,)."""
        length = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for i, seq in enumerate(sequences):
            ids[i, length - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[i, length - len(seq) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(dim=-1) - 1).clamp_(min=0)
        logits, cache = self._forward(ids, mask, positions, None, last_only=True)
        return logits, cache, mask, mask.sum(dim=-1)

    def _uniforms(self, rows: list[_Row]) -> Tensor | None:
        if rows[0].generator is None:
            return None
        draws = [torch.rand((), generator=row.generator).item() for row in rows]
        return torch.tensor(draws, dtype=torch.float64, device=self.device)

    def _decode(self, rows, logits, cache, mask, positions, temperature: float, top_p: float) -> None:
        """Sample until every row is done. Shapes: logits (B, V), mask (B, L), positions (B,)."""
        active = [i for i, row in enumerate(rows) if not row.done]
        if len(active) < len(rows):
            keep = torch.tensor(active, dtype=torch.long, device=self.device)
            if not active:
                return
            cache.batch_select_indices(keep)
            logits, mask, positions = logits[keep], mask[keep], positions[keep]
        live = [rows[i] for i in active]
        while live:
            tokens = sample_from_logits(logits, temperature, top_p, self._uniforms(live)).tolist()
            still = []
            for index, (row, token) in enumerate(zip(live, tokens)):
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

    def _advance(self, row: _Row, token: int) -> None:
        """Append a sampled token and update the row's thought and stop state."""
        row.response.append(token)
        row.n_generated += 1
        plain = row.extra.get("plain")
        if plain is not None:
            max_new, stop_at_boxed = plain
            if token == self.eos_id or row.n_generated >= max_new:
                row.done = True
            elif stop_at_boxed and self.boxed.contains_boxed(row.response):
                row.done = True
            return
        config = self.config
        if token == self.eos_id:
            row.done = True
            row.finished = self.boxed.contains_boxed(row.response)
            return
        n = len(self.delimiter_ids)
        thought_len = len(row.response) - row.thought_start
        if thought_len >= n and row.response[-n:] == self.delimiter_ids:
            row.thoughts_done += 1
            if self.boxed.contains_boxed(row.response[row.thought_start :]):
                row.done = row.finished = True
            elif row.thoughts_done >= config.max_thoughts:
                row.done = row.truncated = True
            row.thought_start = len(row.response)
        elif thought_len >= config.max_thought_tokens:
            row.done = row.truncated = True
        if not row.done and row.n_generated >= config.token_budget:
            row.done = row.truncated = True

    def _to_chain(self, row: _Row) -> Chain:
        return Chain(
            prompt_ids=list(row.prompt_ids),
            response_ids=list(row.response),
            prefix_len=row.prefix_len,
            spans=thought_spans(row.response, self.delimiter_ids, eos_id=self.eos_id),
            text=self.tokenizer.decode(row.response, skip_special_tokens=True),
            n_generated=row.n_generated,
            finished=row.finished,
            truncated=row.truncated,
        )


def token_logprobs(
    model,
    prompt_ids_list: Sequence[Sequence[int]],
    response_ids_list: Sequence[Sequence[int]],
    device=None,
    temperature: float = 1.0,
    pad_id: int = 0,
) -> list[Tensor]:
    """Log-probabilities of each response token given prompt and earlier response tokens.

    Differentiable (no `no_grad` inside). The B sequences prompt + response are right-padded into
    one (B, T_max) batch with an attention mask; only the logits that predict response tokens are
    turned into log-probabilities, so memory is (sum of response lengths) x V rather than B x T x V.

    Args:
        model: a causal LM.
        prompt_ids_list: B prompts, each non-empty.
        response_ids_list: B responses (may be empty).
        device: input device (default: the model's device).
        temperature: logits are divided by it (1.0: the model's own distribution).
        pad_id: id used for padding (masked out, never scored).

    Returns:
        B float tensors; entry i has shape (len(response_i),) and holds log pi(y_t | x, y_<t) in nats.
    """
    if len(prompt_ids_list) != len(response_ids_list):
        raise ValueError(
            f"prompt_ids_list and response_ids_list must have the same length, got "
            f"{len(prompt_ids_list)} and {len(response_ids_list)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    sequences = []
    for i, (prompt, response) in enumerate(zip(prompt_ids_list, response_ids_list)):
        if len(prompt) == 0:
            raise ValueError(f"prompt_ids_list[{i}] is empty; a prompt needs at least one token")
        sequences.append([int(t) for t in prompt] + [int(t) for t in response])
    if not sequences:
        return []
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = torch.arange(length, device=device).unsqueeze(0).expand(len(sequences), -1)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
    rows, cols, targets, sizes = [], [], [], []
    for i, (prompt, response) in enumerate(zip(prompt_ids_list, response_ids_list)):
        start = len(prompt)
        sizes.append(len(response))
        rows.extend([i] * len(response))
        cols.extend(range(start - 1, start - 1 + len(response)))
        targets.extend(int(t) for t in response)
    if not rows:
        return [logits.new_zeros((0,)) for _ in sequences]
    picked = logits[torch.tensor(rows, device=device), torch.tensor(cols, device=device)].float()
    picked = picked / temperature
    target = torch.tensor(targets, device=device)
    logp = picked.gather(-1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(picked, dim=-1)
    return list(torch.split(logp, sizes))
