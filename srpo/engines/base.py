"""The generation seam: what every rollout engine provides, and the thought rules they share.

Everything the RL loop needs from an inference engine is one call, ``ThoughtEngine.rollout``:
*continue token-id prefixes thought by thought*, given

- ``RolloutRequest``\\ s: a prompt (token ids), an optional prefix of a parent's thoughts (token ids
  and their spans) and ``n`` integer seeds (or none: greedy);
- a ``GenerationConfig``: sampling parameters (temperature, top_p), the stop string that ends a
  thought, every eos id, and the length caps;

returning ``Chain``\\ s with token ids, thought spans, the log-probability of every sampled token
(optional) and the stop reason; plus ``ThoughtEngine.complete_seeded`` for plain completions (the
localization call) and ``ThoughtEngine.sync`` (load the current policy). ``generate``, ``greedy``,
``sample_suffixes``, ``sample_suffix_groups`` and ``complete`` are written once here on top of
those and are shared by every engine (``srpo.engines.hf.RolloutEngine``,
``srpo.engines.vllm.VLLMEngine``).

Rules (those of the paper's release), applied token by token by one state machine
(``ThoughtEngine._advance``) that every engine feeds, so that the engines cannot disagree on where
a thought ends:

- A thought ends right after the token at which its *decoded text* contains the delimiter
  (``</thought>``), whatever the tokenizer's merges (``srpo.tokenizer.StopStringMatcher``).
- A thought that reaches ``max_thought_tokens`` tokens without the delimiter is kept as it is and
  the chain goes on with the next thought.
- A chain ends when a thought holds the answer (``finished``): a complete ``\\boxed{...}``
  (``GenerationConfig.answer = "boxed"``, math and question/answer tasks) or a closed fenced block,
  two fence lines of three backticks (``answer = "fence"``, coding tasks: the release's final step
  holds the code in a fence); at any eos id of the tokenizer or of the model's generation config
  (``finished`` if that last thought holds the answer); after ``max_thoughts`` thoughts; before a thought that could pass
  ``max_response_tokens`` (response, copied prefix included) or ``max_model_len`` (prompt +
  response) (``truncated``); or at the hard cap ``max_new_tokens`` sampled tokens (``truncated``).
- Thought spans are recorded while sampling (never by re-encoding text): half-open token-index
  spans of the response, a capped thought being a span of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from srpo.thoughts import extract_boxed, split_thought_text
from srpo.tokenizer import THOUGHT_DELIMITER, StopStringMatcher, delimiter_ids, eos_token_ids

__all__ = [
    "GenerationConfig",
    "Chain",
    "RolloutRequest",
    "ThoughtEngine",
    "draw_seeds",
    "mix_seed",
    "eos_ids_from_dir",
    "STOP_REASONS",
    "ANSWER_FORMATS",
    "has_closed_fence",
]

_SEED_HIGH = 2**62

#: values of ``Chain.stop_reason``
STOP_REASONS = ("boxed", "fenced", "eos", "max_thoughts", "length", "max_new_tokens", "no_room")
#: values of ``GenerationConfig.answer``: what a thought holds when it ends the chain
ANSWER_FORMATS = ("boxed", "fence")
FENCE = "```"


def has_closed_fence(text: str) -> bool:
    """Whether ``text`` holds a closed fenced block: at least two fence lines (lines that start
    with three backticks after indentation, the rule ``srpo.code.grading.extract_code`` reads
    the code with)."""
    return sum(line.lstrip().startswith(FENCE) for line in text.split("\n")) >= 2


@dataclass
class GenerationConfig:
    """Sampling settings and caps of a rollout engine.

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
            (The Hugging Face engine; vLLM schedules its own batches.)
        logprobs: record log pi(token) of every sampled token (``Chain.logprobs``): at the
            sampling temperature (the Hugging Face engine: without the top-p renormalisation;
            vLLM: the exact sampling distribution, top-p included; identical when top_p is 1).
        answer: what ends a chain once a thought holds it: ``boxed`` (a complete
            ``\\boxed{...}``) or ``fence`` (a closed fenced code block; coding tasks).
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
    answer: str = "boxed"

    def __post_init__(self) -> None:
        if self.answer not in ANSWER_FORMATS:
            raise ValueError(f"answer must be one of {ANSWER_FORMATS}, got {self.answer!r}")
        check_temperature(self.temperature)
        check_top_p(self.top_p)
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


def check_temperature(temperature: float) -> None:
    if not temperature >= 0.0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")


def check_top_p(top_p: float) -> None:
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
        finished: the chain ended with its answer (a boxed answer, or a closed fenced block).
        truncated: the chain was stopped by a cap (thoughts, response / model length, tokens).
        stop_reason: one of ``STOP_REASONS``.
        logprobs: log pi of each sampled token (``GenerationConfig.logprobs``; None otherwise);
            length ``n_generated``.
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


def mix_seed(seed: int, index: int) -> int:
    """A seed for call ``index`` of a row with seed ``seed`` (splitmix64 finaliser, < 2**62).

    Engines that draw a row's tokens in several calls (vLLM: one call per thought) give every call
    its own seed: two vLLM requests with the same seed share one noise stream.
    """
    mask = 2**64 - 1
    z = (int(seed) + (int(index) + 1) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) % _SEED_HIGH


def eos_ids_from_dir(tokenizer, model_dir) -> frozenset[int]:
    """Every eos id of the tokenizer and of a saved model's ``generation_config.json`` and
    ``config.json`` (instruction models end a turn with a second id, e.g. Qwen2's ``<|im_end|>``)."""
    import json
    from pathlib import Path

    ids = set(eos_token_ids(tokenizer))
    for name in ("generation_config.json", "config.json"):
        path = Path(model_dir) / name
        if path.is_file():
            value = json.loads(path.read_text()).get("eos_token_id")
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list):
                ids.update(int(v) for v in value)
    return frozenset(ids)


@dataclass
class _Row:
    """Mutable state of one chain while it is being sampled (any engine)."""

    prompt_ids: tuple[int, ...]
    response: list[int]
    prefix_len: int
    seed: int | None = None
    rng: Any = None  # the engine's per-row random state (a torch.Generator for the HF engine)
    spans: list[tuple[int, int]] = field(default_factory=list)
    thought_start: int = 0
    #: text the token that closed the previous thought carried past the delimiter (``>Then``):
    #: the start of the current thought's text (``srpo.thoughts.split_thought_text``)
    carry: str = ""
    n_generated: int = 0
    finished: bool = False
    truncated: bool = False
    done: bool = False
    stop_reason: str = ""
    logprobs: list[float] = field(default_factory=list)
    plain: tuple[int, bool] | None = None  # (max_new_tokens, stop_at_boxed) of a plain completion
    calls: int = 0  # generation calls made for this row (engines that decode thought by thought)

    @property
    def context(self) -> list[int]:
        return list(self.prompt_ids) + self.response

    def stop(self, reason: str, finished: bool = False) -> None:
        self.done = True
        self.stop_reason = reason
        self.finished = finished
        self.truncated = not finished and reason not in ("eos",)


class ThoughtEngine:
    """Thought-by-thought generation from token-id prefixes (the engine-independent API).

    Subclasses call ``_init_rules`` in their constructor and implement ``rollout`` and
    ``complete_seeded`` (usually with ``_request_rows`` / ``_plain_rows`` to make the rows,
    ``_advance`` for every sampled token and ``_to_chain`` at the end); ``sync`` loads the current
    policy (a no-op for an engine that shares the training model's weights) and ``close`` frees
    the engine's memory.
    """

    config: GenerationConfig
    tokenizer: Any
    #: short engine name (``hf``, ``vllm``)
    name = "base"

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

    def sync(self, model) -> None:
        """Load the policy's current weights into the engine (call after every optimizer step).

        The Hugging Face engine decodes with the training model itself: nothing to do.
        """

    def close(self) -> None:
        """Release the engine's memory (a no-op unless the engine owns one)."""

    # -- shared rules -----------------------------------------------------------------------------
    def _init_rules(self, tokenizer, config: GenerationConfig | None, eos_ids) -> None:
        """Set the tokenizer, config, eos ids, stop-string matcher and boxed pre-check."""
        self.tokenizer = tokenizer
        self.config = config if config is not None else GenerationConfig()
        self.eos_ids = frozenset(int(i) for i in eos_ids)
        eos = tokenizer.eos_token_id
        self.eos_id = int(eos) if eos is not None else min(self.eos_ids)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.eos_id
        self.stop_matcher = StopStringMatcher(tokenizer, self.config.delimiter)
        #: the delimiter's standalone ids (informative; boundaries are found by text)
        self.delimiter_ids = delimiter_ids(tokenizer, self.config.delimiter)
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        #: ids that can complete an answer: a "}" closes a box, a backtick a fence
        self._closing_ids = frozenset(i for i, t in enumerate(texts) if "}" in t)
        self._backtick_ids = frozenset(i for i, t in enumerate(texts) if "`" in t)

    @staticmethod
    def default_eos_ids(tokenizer, model=None) -> frozenset[int]:
        """Every eos id of the tokenizer and of the model's configs (``srpo.tokenizer``)."""
        return eos_token_ids(tokenizer, model)

    def _make_rng(self, seed: int):
        """The per-row random state of a sampled row (engine-specific; None: the seed is used)."""
        return None

    def _request_rows(self, request: RolloutRequest, temperature: float, name: str) -> list[_Row]:
        """The rows of one request, with the prefix's spans and the stop state before sampling."""
        if request.n < 1:
            raise ValueError(f"{name}.n must be >= 1, got {request.n}")
        prompt = self._check_prompt(request.prompt_ids, f"{name}.prompt_ids")
        prefix = [int(t) for t in request.prefix_ids]
        carry = ""
        if request.prefix_spans is not None:
            spans = [(int(s), int(e)) for s, e in request.prefix_spans]
            from srpo.thoughts import check_spans

            check_spans(spans, len(prefix))
            thought_start = len(prefix)
            if spans:  # a prefix kept whole at a straddling token carries its tail on
                carry = self._carry_of(prefix, spans)
        else:
            spans, carry = self.stop_matcher.segment(prefix, self.config.max_thought_tokens,
                                                     self.eos_ids)
            thought_start = len(prefix)
            if spans:
                last_start, last_end = spans[-1]
                open_thought = (not self.stop_matcher.closes(prefix, last_start, last_end,
                                                             self._carry_of(prefix, spans[:-1]))
                                and last_end - last_start < self.config.max_thought_tokens)
                if open_thought:  # continue the unfinished thought
                    carry = self._carry_of(prefix, spans[:-1])
                    spans = spans[:-1]
                    thought_start = last_start
        seeds = self._row_seeds(request.seeds, request.n, temperature)
        rows = []
        for seed in seeds:
            row = _Row(prompt_ids=prompt, response=list(prefix), prefix_len=len(prefix),
                       seed=seed, rng=None if seed is None else self._make_rng(seed),
                       spans=list(spans), thought_start=thought_start, carry=carry)
            if len(spans) >= self.config.max_thoughts:
                row.stop("max_thoughts")
            elif thought_start == len(prefix) and not self.config.room_for_thought(
                    len(prompt), len(prefix)):
                row.stop("no_room")
            rows.append(row)
        return rows

    def _plain_rows(self, prompts, max_new_tokens: int, temperature: float, seeds,
                    stop_at_boxed: bool) -> list[_Row]:
        """Rows of plain completions (``complete_seeded``)."""
        rows = []
        for prompt, seed in zip(prompts, self._row_seeds(seeds, len(prompts), temperature)):
            room = max_new_tokens
            if self.config.max_model_len is not None:
                room = min(room, self.config.max_model_len - len(prompt))
            row = _Row(prompt_ids=tuple(prompt), response=[], prefix_len=0, seed=seed,
                       rng=None if seed is None else self._make_rng(seed),
                       plain=(room, stop_at_boxed))
            if room < 1:
                row.stop("no_room")
            rows.append(row)
        return rows

    @staticmethod
    def _row_seeds(seeds, n: int, temperature: float) -> list[int | None]:
        if temperature == 0:
            return [None] * n
        if seeds is None or len(seeds) != n:
            raise ValueError(f"sampling at temperature {temperature} needs {n} seeds, got "
                             f"{None if seeds is None else len(seeds)}")
        return [int(s) for s in seeds]

    def _carry_of(self, ids: Sequence[int], spans: Sequence[tuple[int, int]]) -> str:
        """The carry that the last of ``spans`` passes on (its text past the delimiter; "" for a
        capped thought or no span)."""
        carry = ""
        for start, end in spans:
            if self.stop_matcher.closes(ids, start, end, carry):
                carry = self.stop_matcher.carry_after(ids, start, end, carry)
            else:
                carry = ""
        return carry

    def _thought_has_answer(self, row: _Row, start: int, end: int) -> bool:
        """Whether the thought (its carried-in text and ``row.response[start:end]``) holds the
        answer: a complete ``\\boxed{...}``, or with ``config.answer = "fence"`` a closed
        fenced block."""
        ids = row.response[start:end]
        fence = self.config.answer == "fence"
        mark, marks = ("`", self._backtick_ids) if fence else ("}", self._closing_ids)
        if mark not in row.carry and not any(i in marks for i in ids):
            return False
        text, _ = split_thought_text(self.tokenizer.decode(ids, skip_special_tokens=True),
                                     row.carry, self.config.delimiter)
        return has_closed_fence(text) if fence else extract_boxed(text) is not None

    @property
    def _answer_reason(self) -> str:
        return "fenced" if self.config.answer == "fence" else "boxed"

    def _advance(self, row: _Row, token: int) -> None:
        """Append a sampled token and update the row's thought and stop state (the rules)."""
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
                # that thought was checked when it closed: a box would have ended the chain there
                boxed = False
            else:
                row.spans.append((row.thought_start, end))
                boxed = self._thought_has_answer(row, row.thought_start, end)
            row.thought_start, row.carry = end, ""
            row.stop("eos", finished=boxed)
            return
        closed = self.stop_matcher.closes(row.response, row.thought_start, carry=row.carry)
        if closed or end - row.thought_start >= config.max_thought_tokens:
            row.spans.append((row.thought_start, end))
            # a straddling last token (``>Then``) passes its text past the delimiter on
            next_carry = (self.stop_matcher.carry_after(row.response, row.thought_start, end,
                                                        row.carry) if closed else "")
            if self._thought_has_answer(row, row.thought_start, end):
                row.stop(self._answer_reason, finished=True)
            elif len(row.spans) >= config.max_thoughts:
                row.stop("max_thoughts")
            elif not config.room_for_thought(len(row.prompt_ids), end):
                row.stop("length")
            row.thought_start, row.carry = end, next_carry
        if not row.done and config.max_new_tokens is not None and row.n_generated >= config.max_new_tokens:
            if row.thought_start < end:
                row.spans.append((row.thought_start, end))
                row.thought_start, row.carry = end, ""
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

    # -- shared API -------------------------------------------------------------------------------
    def _resolve_temperature(self, temperature: float | None, generator) -> float:
        temperature = self.config.temperature if temperature is None else float(temperature)
        check_temperature(temperature)
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
        check_top_p(top_p)
        prompts = [self._check_prompt(p, f"prompt_ids_batch[{i}]")
                   for i, p in enumerate(prompt_ids_batch)]
        if not prompts:
            return []
        temperature = self._resolve_temperature(temperature, generator)
        seeds = draw_seeds(generator, len(prompts)) if temperature > 0 else None
        return self.complete_seeded(prompts, max_new_tokens, temperature, top_p, seeds,
                                    stop_at_boxed)
