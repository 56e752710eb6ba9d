"""Choosing the reset step k in a failed chain: self, random (RRPO), oracle, none (GRPO).

A *localizer* takes failed parent chains (each with n thoughts) and returns, for each, a
``LocalizationResult`` with the chosen reset step k in 1..n; the reset keeps thoughts 1..k-1 as
the prefix and resamples from thought k on.

* ``self`` (SRPO): the policy itself is shown its failed chain, told the answer is wrong, and asked
  for the FIRST erroneous step as ``\\boxed{N}``; it answers through ``ThoughtEngine.complete``
  (temperature 0.3). Two prompt styles: ``release`` (default for real models: our paraphrase of
  the release's prompt, same content and order, through the chat template, raw text without one)
  and ``compact`` (one short paragraph in a ``User: ... Assistant:`` layout: the layout the tiny CPU
  model is warm-started on, ``srpo.warmstart``). The reply is parsed as the release does
  (``parse_localization``): the last ``\\boxed{...}``; an integer 1..n is the step; 0 ("no error")
  resets to the empty prefix (k = 1); anything else falls through to the last "Step N" with N in
  1..n; failing that, step 1 (a full restart), counted as a fallback. A uniformly random fallback
  is available (``fallback="random"``), off by default: it would silently turn SRPO into RRPO.
* ``random`` (RRPO): k uniform in 1..n from a seeded numpy Generator.
* ``oracle``: the task's step verifier gives the true first wrong step; a failed chain without a
  wrong step falls back to random, counted.
* ``entropy`` (TreeRL's branch rule as a localizer): k = the thought holding the parent's
  highest-entropy response token (the policy's entropy at the sampling temperature; the first
  maximum on ties).
* ``fixed`` (SPO-Tree's branch rule as a localizer): k = the thought holding response token
  ``position`` (the last token if the parent is shorter).
* ``none`` (GRPO): no resets.

Every call is accounted in ``LocalizationStats``: calls, results by source, fallbacks and every
generated token of the localization replies.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "LOCALIZERS",
    "LOCALIZATION_PROMPTS",
    "LOCALIZATION_FALLBACKS",
    "LocalizationResult",
    "LocalizationStats",
    "build_localization_text",
    "build_localization_prompt",
    "encode_localization_prompt",
    "parse_localization",
    "make_localizer",
    "SelfLocalizer",
    "RandomLocalizer",
    "OracleLocalizer",
    "EntropyLocalizer",
    "FixedPositionLocalizer",
    "thought_of_token",
]

LOCALIZERS = ("self", "random", "oracle", "entropy", "fixed", "none")
LOCALIZATION_PROMPTS = ("release", "compact")
LOCALIZATION_FALLBACKS = ("step1", "random")

#: sources of a k; those containing "fallback" are failures of the localizer and are counted.
SOURCES = ("boxed", "boxed_zero", "step_mention", "fallback_step1", "fallback_random", "random",
           "oracle", "oracle_fallback_random", "entropy", "fixed")


@dataclass(frozen=True)
class LocalizationResult:
    """A chosen reset step.

    Attributes:
        k: reset step in 1..n (the first thought to be resampled).
        source: how k was obtained, one of ``SOURCES``.
        raw: the integer stated in the last ``\\boxed{}`` of the reply (or by the oracle), None if
            there was none.
        out_of_range: ``raw`` was given but outside 0..n, so it was not used.
        n_generated: tokens generated for this localization (0 unless ``self``).
        text: the localization reply ("" unless ``self``).
    """

    k: int
    source: str
    raw: int | None = None
    out_of_range: bool = False
    n_generated: int = 0
    text: str = ""

    @property
    def is_fallback(self) -> bool:
        return "fallback" in self.source


@dataclass
class LocalizationStats:
    """Running counters of a localizer (never reset silently; read and diff them per step)."""

    calls: int = 0
    by_source: Counter = field(default_factory=Counter)
    out_of_range: int = 0
    generated_tokens: int = 0

    @property
    def fallbacks(self) -> int:
        return sum(v for s, v in self.by_source.items() if "fallback" in s)

    def record(self, result: LocalizationResult) -> None:
        self.calls += 1
        self.by_source[result.source] += 1
        self.out_of_range += int(result.out_of_range)
        self.generated_tokens += int(result.n_generated)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "fallbacks": self.fallbacks,
            "out_of_range": self.out_of_range,
            "generated_tokens": self.generated_tokens,
            **{f"source_{s}": int(v) for s, v in sorted(self.by_source.items())},
        }


# ---------------------------------------------------------------------------------------------
# Prompt and parser
# ---------------------------------------------------------------------------------------------

COMPACT_INSTRUCTIONS = (
    "The final answer is wrong. Find the FIRST wrong step: where the error was made, not where "
    "the failure shows. Do not re-solve. Commit to one step number in 1..{n}, as \\boxed{{N}}."
)


def _steps(thoughts: list[str], delimiter: str) -> str:
    return "\n".join(
        f"Step {i}: {t.replace(delimiter, ' ').strip()}" for i, t in enumerate(thoughts, start=1)
    )


def build_localization_text(problem_text: str, thoughts: list[str],
                            delimiter: str = "</thought>", style: str = "compact") -> str:
    """The user message of the localization prompt.

    Args:
        problem_text: the problem statement (the question, without rollout instructions).
        thoughts: the failed chain's thoughts, in order (n = len(thoughts) >= 1); the step
            delimiter is removed from each for display; the final (boxed) step is included.
        delimiter: the step delimiter text.
        style: ``release`` (our paraphrase of the release's prompt, in its order: the task, the
            problem, the numbered chain, that the answer is wrong, where to look, what counts as
            wrong, no re-solving, one number as ``\\boxed{N}`` on its own line and nothing after)
            or ``compact`` (problem, steps, one instruction paragraph).

    Returns:
        The message text.
    """
    n = len(thoughts)
    if n < 1:
        raise ValueError("thoughts must hold at least one step (n >= 1)")
    if style not in LOCALIZATION_PROMPTS:
        raise ValueError(f"style must be one of {LOCALIZATION_PROMPTS}; got {style!r}")
    steps = _steps(thoughts, delimiter)
    if style == "compact":
        return (
            f"Problem: {problem_text.strip()}\n"
            f"Solution ({n} steps):\n{steps}\n"
            + COMPACT_INSTRUCTIONS.format(n=n)
        )
    return (
        "Your task is to find the first wrong thought in the solution you wrote earlier.\n\n"
        f"Problem:\n{problem_text.strip()}\n\n"
        f"Your incorrect reasoning chain:\n{steps}\n\n"
        "The final answer of this chain is wrong, so at least one of its steps is wrong.\n"
        "Look for the step where the error originated, the first place where a key decision went "
        "wrong, not the later step where the failure becomes visible. A misread condition, an "
        "assumption made without justification or a slip in logic can look harmless for several "
        "steps before it causes trouble. Count a step as wrong if what it claims cannot be "
        "justified from the problem and the earlier steps that you have verified.\n"
        "Do not solve the problem again.\n"
        f"Commit to exactly one step number between 1 and {n}: stop at the first step that cannot "
        "be justified. End your reply with \\boxed{N} on a line of its own, where N is that step "
        "number (not the answer to the problem), and write nothing after it."
    )


def build_localization_prompt(problem_text: str, thoughts: list[str], tokenizer: Any = None,
                              style: str = "compact", delimiter: str = "</thought>") -> str:
    """Localization prompt as a string ready for tokenization.

    One user turn through the tokenizer's chat template when it has one (an instruction model).
    Without a template: the raw message for ``release`` (as the release does), or the
    ``User: ... \\nAssistant: `` layout for ``compact`` (the warm start trains the tiny model on
    exactly this layout, ``srpo.warmstart``).
    """
    msg = build_localization_text(problem_text, thoughts, delimiter, style)
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if template:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": msg}], tokenize=False, add_generation_prompt=True
        )
    if style == "release":
        return msg
    return f"User: {msg}\nAssistant: "


def encode_localization_prompt(tokenizer: Any, problem_text: str, thoughts: list[str],
                               style: str = "compact", delimiter: str = "</thought>") -> list[int]:
    """Token ids of the localization prompt (the same ids for training and for inference).

    A chat template already writes its special tokens into the text, so it is encoded without
    adding more; otherwise the tokenizer's usual special tokens (e.g. ``<bos>``) are added.
    """
    text = build_localization_prompt(problem_text, thoughts, tokenizer, style, delimiter)
    templated = bool(getattr(tokenizer, "chat_template", None))
    return list(tokenizer.encode(text, add_special_tokens=not templated))


_BOXED = re.compile(r"\\boxed\s*\{")
_STEP = re.compile(r"\bstep\s*#?\s*(-?\d+)", re.IGNORECASE)
_INT = re.compile(r"^\s*(?:step\s*)?#?\s*(-?\d+)\s*\.?\s*$", re.IGNORECASE)


def _boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` in ``text`` (balanced braces), in order."""
    out = []
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end() : i - 1])
    return out


def parse_localization(
    text: str | None,
    n_steps: int,
    rng: np.random.Generator | None = None,
    fallback: str = "step1",
) -> LocalizationResult:
    """Parse a localization reply into a reset step k in 1..n_steps (the release's rule).

    Order: the *last* ``\\boxed{...}`` of the reply: an integer N in 1..n_steps gives k = N
    (``source="boxed"``), 0 ("no error") gives k = 1, the empty prefix (``"boxed_zero"``);
    anything else (no box, not an integer, out of range: ``out_of_range`` flags the last case)
    falls through to the last "Step N" mention with N in 1..n_steps (``"step_mention"``); failing
    that, the fallback: step 1, a full restart (``"fallback_step1"``, default, as the release), or
    k uniform in 1..n_steps (``"fallback_random"``; pass ``rng`` for a seeded draw, otherwise a
    fixed ``default_rng(0)``).

    Raises:
        ValueError: ``n_steps < 1`` or an unknown ``fallback``.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1; got {n_steps}")
    if fallback not in LOCALIZATION_FALLBACKS:
        raise ValueError(f"fallback must be one of {LOCALIZATION_FALLBACKS}; got {fallback!r}")
    text = text or ""
    raw, out_of_range = None, False
    boxed = _boxed_contents(text)
    if boxed:
        m = _INT.match(boxed[-1])
        if m:
            raw = int(m.group(1))
            if 1 <= raw <= n_steps:
                return LocalizationResult(k=raw, source="boxed", raw=raw, text=text)
            if raw == 0:
                return LocalizationResult(k=1, source="boxed_zero", raw=raw, text=text)
            out_of_range = True
    mentions = [int(v) for v in _STEP.findall(text) if 1 <= int(v) <= n_steps]
    if mentions:
        return LocalizationResult(k=mentions[-1], source="step_mention", raw=raw,
                                  out_of_range=out_of_range, text=text)
    if fallback == "random":
        rng = rng if rng is not None else np.random.default_rng(0)
        k = int(rng.integers(1, n_steps + 1))
        return LocalizationResult(k=k, source="fallback_random", raw=raw,
                                  out_of_range=out_of_range, text=text)
    return LocalizationResult(k=1, source="fallback_step1", raw=raw, out_of_range=out_of_range,
                              text=text)


# ---------------------------------------------------------------------------------------------
# Localizers
# ---------------------------------------------------------------------------------------------


@dataclass
class ParentView:
    """What a localizer sees of a failed parent chain.

    Attributes:
        problem: the task's problem object (for the oracle's step verifier).
        problem_text: the problem statement shown in the self-localization prompt.
        thoughts: the parent's thought texts, in order (n = len(thoughts)).
        prompt_ids, response_ids, spans: the parent's token ids and thought spans (the branch
            rules ``entropy`` and ``fixed`` read them; None when not given).
    """

    problem: Any
    problem_text: str
    thoughts: list[str]
    prompt_ids: list[int] | None = None
    response_ids: list[int] | None = None
    spans: list[tuple[int, int]] | None = None

    @property
    def n(self) -> int:
        return len(self.thoughts)


class _Localizer:
    name = "base"

    def __init__(self) -> None:
        self.stats = LocalizationStats()

    def locate(self, parents: list[ParentView], rng: np.random.Generator, **kw):
        results = self._locate(parents, rng, **kw)
        for r in results:
            self.stats.record(r)
        return results

    def _locate(self, parents, rng, **kw):  # pragma: no cover - abstract
        raise NotImplementedError


class RandomLocalizer(_Localizer):
    """RRPO: k uniform in 1..n, drawn from the given numpy Generator."""

    name = "random"

    def _locate(self, parents, rng, **kw):
        return [LocalizationResult(int(rng.integers(1, p.n + 1)), "random") for p in parents]


class OracleLocalizer(_Localizer):
    """The task's step verifier: k = the true first wrong step (random fallback if none)."""

    name = "oracle"

    def __init__(self, task: Any) -> None:
        super().__init__()
        if not getattr(task, "has_step_verifier", False):
            raise ValueError("localizer 'oracle' needs a task with a step verifier")
        self.task = task

    def _locate(self, parents, rng, **kw):
        out = []
        for p in parents:
            fe = self.task.first_error(p.problem, p.thoughts)
            if fe is None:
                out.append(
                    LocalizationResult(int(rng.integers(1, p.n + 1)), "oracle_fallback_random")
                )
            else:
                k = min(max(int(fe), 1), p.n)
                out.append(LocalizationResult(k, "oracle", raw=int(fe), out_of_range=k != fe))
        return out


def thought_of_token(spans, t: int) -> int:
    """1-based index of the thought (span) holding response token ``t``."""
    for i, (start, end) in enumerate(spans, start=1):
        if start <= t < end:
            return i
    raise ValueError(f"token {t} lies in no span of {list(spans)}")


class EntropyLocalizer(_Localizer):
    """TreeRL's rule: k = the thought holding the highest-entropy token of the parent.

    Args:
        token_entropy: ``(prompts, responses) -> list of (T_i,) arrays``: the policy's entropy at
            every response token (``srpo.trainer`` passes the model's, at the sampling
            temperature).
    """

    name = "entropy"

    def __init__(self, token_entropy) -> None:
        super().__init__()
        if token_entropy is None:
            raise ValueError("localizer 'entropy' needs token_entropy=")
        self.token_entropy = token_entropy

    def _locate(self, parents, rng, **kw):
        if not parents:
            return []
        ents = self.token_entropy([p.prompt_ids for p in parents],
                                  [p.response_ids for p in parents])
        out = []
        for p, e in zip(parents, ents):
            t = int(np.argmax(np.asarray(e)))  # the first maximum
            out.append(LocalizationResult(thought_of_token(p.spans, t), "entropy", raw=t))
        return out


class FixedPositionLocalizer(_Localizer):
    """SPO-Tree's rule: k = the thought holding response token ``position`` (0-based; the last
    token of a shorter parent)."""

    name = "fixed"

    def __init__(self, position: int) -> None:
        super().__init__()
        if position < 0:
            raise ValueError(f"position must be >= 0; got {position}")
        self.position = int(position)

    def _locate(self, parents, rng, **kw):
        out = []
        for p in parents:
            t = min(self.position, len(p.response_ids) - 1)
            out.append(LocalizationResult(thought_of_token(p.spans, t), "fixed", raw=t))
        return out


class SelfLocalizer(_Localizer):
    """SRPO: the policy answers the localization prompt about its own failed chain.

    Args:
        engine: a ``srpo.rollout.ThoughtEngine`` over the current policy.
        tokenizer: the policy's tokenizer (for the prompt and decoding the reply).
        max_new_tokens: cap on the reply length in tokens (release: 4096; tiny model: 12).
        temperature: sampling temperature of the reply (release: 0.3; 0.0 for the 1x8 split).
        top_p: nucleus of the reply (release: the rollout's top_p).
        stop_at_boxed: stop a reply at its first complete ``\\boxed{}`` (the release does not;
            the tiny model, trained on a bare ``\\boxed{N}`` target, does).
        prompt: ``release`` or ``compact`` (``LOCALIZATION_PROMPTS``).
        fallback: ``step1`` (release) or ``random`` (``LOCALIZATION_FALLBACKS``).
        delimiter: the step delimiter, stripped from the displayed steps.
    """

    name = "self"

    def __init__(self, engine: Any, tokenizer: Any, max_new_tokens: int = 16,
                 temperature: float = 0.3, top_p: float = 1.0, stop_at_boxed: bool = True,
                 prompt: str = "compact", fallback: str = "step1",
                 delimiter: str = "</thought>") -> None:
        super().__init__()
        if prompt not in LOCALIZATION_PROMPTS:
            raise ValueError(f"prompt must be one of {LOCALIZATION_PROMPTS}; got {prompt!r}")
        if fallback not in LOCALIZATION_FALLBACKS:
            raise ValueError(f"fallback must be one of {LOCALIZATION_FALLBACKS}; got {fallback!r}")
        self.engine = engine
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.stop_at_boxed = stop_at_boxed
        self.prompt = prompt
        self.fallback = fallback
        self.delimiter = delimiter

    def _locate(self, parents, rng, generator=None, **kw):
        if not parents:
            return []
        prompt_ids = [
            encode_localization_prompt(self.tokenizer, p.problem_text, p.thoughts, self.prompt,
                                       self.delimiter)
            for p in parents
        ]
        replies = self.engine.complete(
            prompt_ids, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
            generator=generator, top_p=self.top_p, stop_at_boxed=self.stop_at_boxed,
        )
        out = []
        for p, reply in zip(parents, replies):
            ids = _reply_ids(reply)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            r = parse_localization(text, p.n, rng, self.fallback)
            out.append(LocalizationResult(r.k, r.source, r.raw, r.out_of_range,
                                          n_generated=len(ids), text=text))
        return out


def _reply_ids(reply: Any) -> list[int]:
    """Generated token ids of one ``complete`` reply (a list of ids or an object holding them)."""
    for attr in ("response_ids", "ids", "token_ids"):
        if hasattr(reply, attr):
            reply = getattr(reply, attr)
            break
    if hasattr(reply, "tolist"):
        reply = reply.tolist()
    return [int(t) for t in reply]


def make_localizer(name: str, task: Any = None, engine: Any = None, tokenizer: Any = None,
                   **kw) -> _Localizer | None:
    """Build a localizer by name (``LOCALIZERS``); ``"none"`` returns None (no resets)."""
    if name not in LOCALIZERS:
        raise ValueError(f"localizer must be one of {LOCALIZERS}; got {name!r}")
    if name == "none":
        return None
    if name == "random":
        return RandomLocalizer()
    if name == "oracle":
        return OracleLocalizer(task)
    if name == "entropy":
        return EntropyLocalizer(kw.get("token_entropy"))
    if name == "fixed":
        return FixedPositionLocalizer(kw.get("position", 0))
    if engine is None or tokenizer is None:
        raise ValueError("localizer 'self' needs engine= and tokenizer=")
    return SelfLocalizer(engine, tokenizer, **kw)
