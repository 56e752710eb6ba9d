"""Rollout engine: batched, seeded, thought-by-thought sampling with a KV cache.

The generation seam
-------------------
Everything the RL loop needs from an inference engine is one call, ``ThoughtEngine.rollout``:
*continue token-id prefixes thought by thought*, given

- ``RolloutRequest``\\ s: a prompt (token ids), an optional prefix of a parent's thoughts (token ids
  and their spans) and ``n`` integer seeds (or none: greedy);
- a ``GenerationConfig``: sampling parameters (temperature, top_p), the stop string that ends a
  thought, every eos id, and the length caps;

returning ``Chain``\\ s with token ids, thought spans, the log-probability of every sampled token
(optional) and the stop reason; plus ``ThoughtEngine.complete_seeded`` for plain completions (the
localization call). ``generate``, ``greedy``, ``sample_suffixes``, ``sample_suffix_groups`` and
``complete`` are written once on top of those two and are shared by every engine. This module's
``RolloutEngine`` implements the seam with a Hugging Face model and its own sampling loop; an
engine backed by vLLM (``SamplingParams(stop=..., seed=..., logprobs=...)`` on prompt token ids)
implements the same two methods.

Rules (those of the paper's release)
------------------------------------
- A thought ends right after the token at which its *decoded text* contains the delimiter
  (``</thought>``), whatever the tokenizer's merges (``srpo.tokenizer.StopStringMatcher``).
- A thought that reaches ``max_thought_tokens`` tokens without the delimiter is kept as it is and
  the chain goes on with the next thought.
- A chain ends when a thought contains a complete ``\\boxed{...}`` (``finished``); at any eos id of
  the tokenizer or of the model's generation config (``finished`` if that last thought holds a
  boxed answer); after ``max_thoughts`` thoughts; before a thought that could pass
  ``max_response_tokens`` (response, copied prefix included) or ``max_model_len`` (prompt +
  response) (``truncated``); or at the hard cap ``max_new_tokens`` sampled tokens (``truncated``).
- Thought spans are recorded while sampling (never by re-encoding text): half-open token-index
  spans of the response, a capped thought being a span of its own.

Batching and memory: rows of one request share one prefill of prompt + prefix (its KV cache is
repeated for the request's rows); requests are packed into generation batches under a token
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
from dataclasses import dataclass, field

import torch
from torch import Tensor

from srpo.thoughts import extract_boxed
from srpo.tokenizer import THOUGHT_DELIMITER, StopStringMatcher, delimiter_ids, eos_token_ids

__all__ = [
    "GenerationConfig",
    "Chain",
    "RolloutRequest",
    "ThoughtEngine",
    "RolloutEngine",
    "draw_seeds",
    "sample_from_logits",
    "token_logprobs",
]

_SEED_HIGH = 2**62

#: values of ``Chain.stop_reason``
STOP_REASONS = ("boxed", "eos", "max_thoughts", "length", "max_new_tokens", "no_room")


@dataclass
class GenerationConfig:
    """Sampling settings and caps of the rollout engine.

    Attributes:
        temperature: softmax temperature; 0 means greedy (argmax). Paper: 0.7.
        top_p: nucleus mass in (0, 1]; 1 disables the filter. Paper: 0.95.
        max_thoughts: at most this many thoughts per chain (a reset prefix's thoughts included).
            Release: 20.
        max_thought_tokens: at most this many tokens per thought; a thought that reaches it is
            kept and the chain continues. Release: 256.
        max_response_tokens: a new thought starts only if ``len(response) + max_thought_tokens``
            stays within this (the response counts a copied prefix). Release: 5120. None: no cap.
        max_model_len: the same rule on ``len(prompt) + len(response)``. Release: 8192. None: no cap.
        max_new_tokens: hard cap on sampled tokens per chain, applied mid-thought (for benchmarks
            and tests; None: none).
        delimiter: the stop string that ends a thought.
        max_batch_tokens: generation batch budget in tokens, rows x (context + the most tokens a
            row may still sample); None: one batch. Memory only: chains do not depend on it.
        logprobs: record log pi(token) of every sampled token at the sampling temperature
            (``Chain.logprobs``).
    """

    temperature: float = 0.7
    top_p: float = 0.95
    max_thoughts: int = 20
    max_thought_tokens: int = 256
    max_response_tokens: int | None = None
    max_model_len: int | None = None
    max_new_tokens: int | None = None
    delimiter: str = THOUGHT_DELIMITER
    max_batch_tokens: int | None = None
    logprobs: bool = False

    def __post_init__(self) -> None:
        _check_temperature(self.temperature)
        _check_top_p(self.top_p)
        for name in ("max_thoughts", "max_thought_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_response_tokens", "max_model_len", "max_new_tokens", "max_batch_tokens"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if not self.delimiter:
            raise ValueError("delimiter must be a non-empty string, got ''")

    @property
    def token_budget(self) -> int:
        """Most tokens one fresh chain can sample."""
        bound = self.max_thoughts * self.max_thought_tokens
        for cap in (self.max_response_tokens, self.max_new_tokens):
            if cap is not None:
                bound = min(bound, cap)
        return bound

    def room_for_thought(self, prompt_len: int, response_len: int) -> bool:
        """Whether a new thought may start (it cannot pass the response or model length)."""
        if (self.max_response_tokens is not None
                and response_len + self.max_thought_tokens > self.max_response_tokens):
            return False
        return not (self.max_model_len is not None
                    and prompt_len + response_len + self.max_thought_tokens > self.max_model_len)


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
            (an eos token, if sampled, is included).
        prefix_len: number of leading response tokens copied from a parent (0 for fresh chains).
        spans: half-open thought spans tiling ``response_ids`` (the prefix's spans first).
        text: decoded response (special tokens removed), for grading only.
        n_generated: number of tokens actually sampled (``len(response_ids) - prefix_len``).
        finished: the chain ended with a boxed answer.
        truncated: the chain was stopped by a cap (thoughts, response / model length, tokens).
        stop_reason: one of ``STOP_REASONS``.
        logprobs: log pi of each sampled token at the sampling temperature (``GenerationConfig.
            logprobs``; None otherwise); length ``n_generated``.
    """

    prompt_ids: list[int]
    response_ids: list[int]
    prefix_len: int
    spans: list[tuple[int, int]]
    text: str
    n_generated: int
    finished: bool
    truncated: bool
    stop_reason: str = ""
    logprobs: list[float] | None = None

    @property
    def suffix_ids(self) -> list[int]:
        """The sampled part of the response."""
        return self.response_ids[self.prefix_len :]

    @property
    def n_thoughts(self) -> int:
        """Number of thoughts (spans), a trailing unfinished one included."""
        return len(self.spans)


@dataclass(frozen=True)
class RolloutRequest:
    """``n`` continuations of one prompt (and optional prefix), one seed each.

    Attributes:
        prompt_ids: the prompt's token ids (non-empty).
        n: number of continuations.
        seeds: ``n`` integer seeds, or None for greedy decoding (then ``n`` is usually 1).
        prefix_ids: response ids kept from a parent (thoughts 1..k-1); may be empty.
        prefix_spans: the prefix's thought spans (tiling it); None: segmented by text with the
            generation rule, a trailing thought without the delimiter being continued.
    """

    prompt_ids: tuple[int, ...]
    n: int = 1
    seeds: tuple[int, ...] | None = None
    prefix_ids: tuple[int, ...] = ()
    prefix_spans: tuple[tuple[int, int], ...] | None = None


def draw_seeds(generator: torch.Generator, n: int) -> list[int]:
    """n integer row seeds drawn from ``generator`` (drawing a then b seeds equals drawing a + b)."""
    if n == 0:
        return []
    return [int(s) for s in torch.randint(0, _SEED_HIGH, (n,), generator=generator,
                                          device=generator.device).tolist()]


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


# ------------------------------------------------------------------------------------------------
# The seam: what every engine provides, and the API written once on top of it
# ------------------------------------------------------------------------------------------------


class ThoughtEngine:
    """Thought-by-thought generation from token-id prefixes (the engine-independent API).

    Subclasses implement ``rollout`` and ``complete_seeded``; ``config`` holds the sampling
    parameters, stop string and caps; ``tokenizer`` encodes prompts and decodes thoughts.
    """

    config: GenerationConfig
    tokenizer: object

    # -- to implement -----------------------------------------------------------------------------
    def rollout(self, requests: Sequence[RolloutRequest],
                temperature: float | None = None) -> list[list[Chain]]:
        """Continue every request ``request.n`` times; one list of Chains per request, in order.

        ``temperature`` overrides ``config.temperature`` (0: greedy, and ``seeds`` may be None).
        """
        raise NotImplementedError

    def complete_seeded(self, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                        temperature: float, top_p: float, seeds: Sequence[int] | None,
                        stop_at_boxed: bool) -> list[list[int]]:
        """Plain completions (no thought logic): each stops at an eos id (included), after
        ``max_new_tokens`` tokens (fewer if the model length would be passed), or, with
        ``stop_at_boxed``, once it holds a complete ``\\boxed{...}``. One id list per prompt."""
        raise NotImplementedError

    # -- shared API -------------------------------------------------------------------------------
    def _resolve_temperature(self, temperature: float | None, generator) -> float:
        temperature = self.config.temperature if temperature is None else float(temperature)
        _check_temperature(temperature)
        if temperature > 0 and generator is None:
            raise ValueError("generator must be a torch.Generator when temperature > 0, got None")
        return temperature

    @staticmethod
    def _check_prompt(prompt: Sequence[int], name: str) -> tuple[int, ...]:
        ids = tuple(int(t) for t in prompt)
        if not ids:
            raise ValueError(f"{name} is empty; a prompt needs at least one token (e.g. <bos>)")
        return ids

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        n_per_prompt: int = 1,
        generator: torch.Generator | None = None,
        temperature: float | None = None,
    ) -> list[list[Chain]]:
        """Sample ``n_per_prompt`` fresh chains for every prompt.

        Args:
            prompts: P prompts as token-id lists (each non-empty).
            n_per_prompt: chains per prompt (>= 1).
            generator: draws one seed per chain, prompt-major; required unless temperature is 0.
            temperature: overrides ``config.temperature`` (0 = greedy).

        Returns:
            P lists of ``n_per_prompt`` Chains, in prompt order; every chain has ``prefix_len = 0``.
        """
        if n_per_prompt < 1:
            raise ValueError(f"n_per_prompt must be >= 1, got {n_per_prompt}")
        prompts = [self._check_prompt(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        if not prompts:
            return []
        temperature = self._resolve_temperature(temperature, generator)
        seeds = draw_seeds(generator, len(prompts) * n_per_prompt) if temperature > 0 else None
        requests = [
            RolloutRequest(p, n_per_prompt,
                           None if seeds is None else tuple(seeds[i * n_per_prompt:(i + 1) * n_per_prompt]))
            for i, p in enumerate(prompts)
        ]
        return self.rollout(requests, temperature)

    def greedy(self, prompts: Sequence[Sequence[int]]) -> list[Chain]:
        """One greedy (argmax) chain per prompt, for evaluation."""
        return [group[0] for group in self.generate(prompts, 1, None, temperature=0.0)]

    def sample_suffix_groups(
        self,
        groups: Sequence[tuple[Sequence[int], Sequence[int], Sequence[tuple[int, int]] | None, int]],
        generator: torch.Generator | None,
        temperature: float | None = None,
    ) -> list[list[Chain]]:
        """Sample the suffixes of several reset parents in one batched call.

        Args:
            groups: ``(prompt_ids, prefix_ids, prefix_spans, k)`` per parent; ``prefix_spans``
                may be None (segmented by text).
            generator: draws k seeds per group, in group order (the same seeds as one
                ``sample_suffixes`` call per group in that order).
            temperature: overrides ``config.temperature``.

        Returns:
            One list of k Chains per group, with ``prefix_len = len(prefix_ids)``.
        """
        temperature = self._resolve_temperature(temperature, generator)
        requests = []
        for i, (prompt, prefix, spans, k) in enumerate(groups):
            if k < 1:
                raise ValueError(f"k must be >= 1, got {k}")
            prompt = self._check_prompt(prompt, f"groups[{i}] prompt")
            seeds = tuple(draw_seeds(generator, k)) if temperature > 0 else None
            requests.append(RolloutRequest(
                prompt, k, seeds, tuple(int(t) for t in prefix),
                None if spans is None else tuple((int(s), int(e)) for s, e in spans)))
        return self.rollout(requests, temperature) if requests else []

    def sample_suffixes(
        self,
        prompt_ids: Sequence[int],
        prefix_ids: Sequence[int],
        k: int,
        generator: torch.Generator | None,
        temperature: float | None = None,
        prefix_spans: Sequence[tuple[int, int]] | None = None,
    ) -> list[Chain]:
        """k continuations of prompt + prefix, the prefix encoded once and shared.

        Thought counting continues from the prefix's thoughts (the caps apply to the whole
        response). Returns k Chains with ``prefix_len = len(prefix_ids)`` and
        ``response_ids = prefix + suffix``.
        """
        return self.sample_suffix_groups([(prompt_ids, prefix_ids, prefix_spans, k)],
                                         generator, temperature)[0]

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

        Returns:
            One list of generated ids per prompt (prompt not included).
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        _check_top_p(top_p)
        prompts = [self._check_prompt(p, f"prompt_ids_batch[{i}]")
                   for i, p in enumerate(prompt_ids_batch)]
        if not prompts:
            return []
        temperature = self._resolve_temperature(temperature, generator)
        seeds = draw_seeds(generator, len(prompts)) if temperature > 0 else None
        return self.complete_seeded(prompts, max_new_tokens, temperature, top_p, seeds,
                                    stop_at_boxed)


# ------------------------------------------------------------------------------------------------
# The Hugging Face engine
# ------------------------------------------------------------------------------------------------


@dataclass
class _Row:
    """Mutable state of one chain while it is being sampled."""

    prompt_ids: tuple[int, ...]
    response: list[int]
    prefix_len: int
    generator: torch.Generator | None
    spans: list[tuple[int, int]] = field(default_factory=list)
    thought_start: int = 0
    n_generated: int = 0
    finished: bool = False
    truncated: bool = False
    done: bool = False
    stop_reason: str = ""
    logprobs: list[float] = field(default_factory=list)
    plain: tuple[int, bool] | None = None  # (max_new_tokens, stop_at_boxed) of a plain completion

    @property
    def context(self) -> list[int]:
        return list(self.prompt_ids) + self.response

    def stop(self, reason: str, finished: bool = False) -> None:
        self.done = True
        self.stop_reason = reason
        self.finished = finished
        self.truncated = not finished and reason not in ("eos",)


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

    def __init__(self, model, tokenizer, config: GenerationConfig | None = None, device=None,
                 eos_ids=None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config if config is not None else GenerationConfig()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.eos_ids = frozenset(eos_ids) if eos_ids is not None else eos_token_ids(tokenizer, model)
        eos = tokenizer.eos_token_id
        self.eos_id = int(eos) if eos is not None else min(self.eos_ids)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.eos_id
        self.stop_matcher = StopStringMatcher(tokenizer, self.config.delimiter)
        #: the delimiter's standalone ids (informative; boundaries are found by text)
        self.delimiter_ids = delimiter_ids(tokenizer, self.config.delimiter)
        self._closing_ids = frozenset(
            i for i, t in enumerate(tokenizer.batch_decode([[i] for i in range(len(tokenizer))]))
            if "}" in t)
        self._cache_name, self._keep_name = _cache_keyword(model)

    # ----------------------------------------------------------------------------------------
    # The seam
    # ----------------------------------------------------------------------------------------
    def rollout(self, requests: Sequence[RolloutRequest],
                temperature: float | None = None) -> list[list[Chain]]:
        temperature = self.config.temperature if temperature is None else float(temperature)
        _check_temperature(temperature)
        rows_of: list[list[_Row]] = []
        for index, request in enumerate(requests):
            rows_of.append(self._request_rows(request, temperature, f"requests[{index}]"))
        with self._inference():
            for batch in self._pack([(rows[0].context, rows) for rows in rows_of]):
                self._run_batch(batch, temperature, self.config.top_p)
        return [[self._to_chain(row) for row in rows] for rows in rows_of]

    def complete_seeded(self, prompts, max_new_tokens, temperature, top_p, seeds,
                        stop_at_boxed) -> list[list[int]]:
        generators = self._generators(seeds, len(prompts), temperature)
        rows = []
        for prompt, generator in zip(prompts, generators):
            room = max_new_tokens
            if self.config.max_model_len is not None:
                room = min(room, self.config.max_model_len - len(prompt))
            row = _Row(prompt_ids=tuple(prompt), response=[], prefix_len=0, generator=generator,
                       plain=(room, stop_at_boxed))
            if room < 1:
                row.stop("no_room")
            rows.append(row)
        with self._inference():
            for batch in self._pack([(list(r.prompt_ids), [r]) for r in rows]):
                self._run_batch(batch, temperature, top_p)
        return [row.response for row in rows]

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
    def _generators(self, seeds, n: int, temperature: float) -> list[torch.Generator | None]:
        if temperature == 0:
            return [None] * n
        if seeds is None or len(seeds) != n:
            raise ValueError(f"sampling at temperature {temperature} needs {n} seeds, got "
                             f"{None if seeds is None else len(seeds)}")
        out = []
        for seed in seeds:
            generator = torch.Generator(device="cpu")
            generator.manual_seed(int(seed))
            out.append(generator)
        return out

    def _request_rows(self, request: RolloutRequest, temperature: float, name: str) -> list[_Row]:
        if request.n < 1:
            raise ValueError(f"{name}.n must be >= 1, got {request.n}")
        prompt = self._check_prompt(request.prompt_ids, f"{name}.prompt_ids")
        prefix = [int(t) for t in request.prefix_ids]
        if request.prefix_spans is not None:
            spans = [(int(s), int(e)) for s, e in request.prefix_spans]
            from srpo.thoughts import check_spans

            check_spans(spans, len(prefix))
            thought_start = len(prefix)
        else:
            spans = self.stop_matcher.spans(prefix, self.config.max_thought_tokens, self.eos_ids)
            thought_start = len(prefix)
            if spans:
                last_start, last_end = spans[-1]
                open_thought = (not self.stop_matcher.closes(prefix, last_start, last_end)
                                and last_end - last_start < self.config.max_thought_tokens)
                if open_thought:  # continue the unfinished thought
                    spans = spans[:-1]
                    thought_start = last_start
        generators = self._generators(request.seeds, request.n, temperature)
        rows = []
        for generator in generators:
            row = _Row(prompt_ids=prompt, response=list(prefix), prefix_len=len(prefix),
                       generator=generator, spans=list(spans), thought_start=thought_start)
            if len(spans) >= self.config.max_thoughts:
                row.stop("max_thoughts")
            elif thought_start == len(prefix) and not self.config.room_for_thought(
                    len(prompt), len(prefix)):
                row.stop("no_room")
            rows.append(row)
        return rows

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
        logits, cache, mask, positions = self._prefill(contexts)
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

    def _thought_has_boxed(self, row: _Row, start: int, end: int) -> bool:
        ids = row.response[start:end]
        if not any(i in self._closing_ids for i in ids):
            return False
        return extract_boxed(self.tokenizer.decode(ids, skip_special_tokens=True)) is not None

    def _advance(self, row: _Row, token: int) -> None:
        """Append a sampled token and update the row's thought and stop state."""
        row.response.append(token)
        row.n_generated += 1
        if row.plain is not None:
            max_new, stop_at_boxed = row.plain
            if token in self.eos_ids:
                row.stop("eos")
            elif row.n_generated >= max_new:
                row.stop("max_new_tokens")
            elif (stop_at_boxed and token in self._closing_ids
                  and extract_boxed(self.tokenizer.decode(row.response, skip_special_tokens=True))
                  is not None):
                row.stop("boxed", finished=True)
            return
        config = self.config
        end = len(row.response)
        if token in self.eos_ids:
            if row.thought_start == end - 1 and row.spans:  # a lone eos joins the closed thought
                row.spans[-1] = (row.spans[-1][0], end)
                boxed = self._thought_has_boxed(row, row.spans[-1][0], end)
            else:
                row.spans.append((row.thought_start, end))
                boxed = self._thought_has_boxed(row, row.thought_start, end)
            row.thought_start = end
            row.stop("eos", finished=boxed)
            return
        closed = self.stop_matcher.closes(row.response, row.thought_start)
        if closed or end - row.thought_start >= config.max_thought_tokens:
            row.spans.append((row.thought_start, end))
            if self._thought_has_boxed(row, row.thought_start, end):
                row.stop("boxed", finished=True)
            elif len(row.spans) >= config.max_thoughts:
                row.stop("max_thoughts")
            elif not config.room_for_thought(len(row.prompt_ids), end):
                row.stop("length")
            row.thought_start = end
        if not row.done and config.max_new_tokens is not None and row.n_generated >= config.max_new_tokens:
            if row.thought_start < end:
                row.spans.append((row.thought_start, end))
                row.thought_start = end
            row.stop("max_new_tokens")

    def _to_chain(self, row: _Row) -> Chain:
        spans = list(row.spans)
        if row.thought_start < len(row.response):  # an unfinished trailing thought
            spans.append((row.thought_start, len(row.response)))
        return Chain(
            prompt_ids=list(row.prompt_ids),
            response_ids=list(row.response),
            prefix_len=row.prefix_len,
            spans=spans,
            text=self.tokenizer.decode(row.response, skip_special_tokens=True),
            n_generated=row.n_generated,
            finished=row.finished,
            truncated=row.truncated,
            stop_reason=row.stop_reason,
            logprobs=list(row.logprobs) if self.config.logprobs else None,
        )


def token_logprobs(*args, **kwargs):
    """See ``srpo.logprobs.token_logprobs`` (kept here for the import path of earlier code)."""
    from srpo.logprobs import token_logprobs as _token_logprobs

    return _token_logprobs(*args, **kwargs)
