"""Choosing the reset step k in a failed chain: self, random (RRPO), oracle, none (GRPO).

A *localizer* takes failed parent chains (each with n thoughts) and returns, for each, a
``LocalizationResult`` with the chosen reset step k in 1..n; the reset keeps thoughts 1..k-1 as
the prefix and resamples from thought k on.

* ``self`` (SRPO): the policy itself is shown its failed chain in a chat-style prompt, told the
  answer is wrong, and asked for the FIRST erroneous step as ``\\boxed{N}``; it answers through
  ``RolloutEngine.complete`` at temperature 0.3. The reply is parsed by ``parse_localization``:
  the last boxed integer, else the last "Step N", else a random fallback that is *counted*.
* ``random`` (RRPO): k uniform in 1..n from a seeded numpy Generator.
* ``oracle``: the task's step verifier gives the true first wrong step; a failed chain without a
  wrong step (e.g. it ran out of thoughts) falls back to random, counted.
* ``none`` (GRPO): no resets.

Every call is accounted in ``LocalizationStats``: calls, results by source, clamped values and
every generated token of the localization replies.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "LOCALIZERS",
    "LocalizationResult",
    "LocalizationStats",
    "build_localization_prompt",
    "encode_localization_prompt",
    "parse_localization",
    "make_localizer",
    "SelfLocalizer",
    "RandomLocalizer",
    "OracleLocalizer",
]

LOCALIZERS = ("self", "random", "oracle", "none")

#: sources of a k; the ``fallback_*`` ones are failures of the localizer and are counted.
SOURCES = ("boxed", "step_mention", "fallback_random", "random", "oracle", "oracle_fallback_random")


@dataclass(frozen=True)
class LocalizationResult:
    """A chosen reset step.

    Attributes:
        k: reset step in 1..n (the first thought to be resampled).
        source: how k was obtained, one of ``SOURCES``.
        raw: the value as stated before clamping (None for fallbacks).
        clamped: True when ``raw`` was outside [1, n] and was clamped.
        n_generated: tokens generated for this localization (0 unless ``self``).
        text: the localization reply ("" unless ``self``).
    """

    k: int
    source: str
    raw: int | None = None
    clamped: bool = False
    n_generated: int = 0
    text: str = ""

    @property
    def is_fallback(self) -> bool:
        return self.source.startswith("fallback") or self.source.endswith("fallback_random")


@dataclass
class LocalizationStats:
    """Running counters of a localizer (never reset silently; read and diff them per step)."""

    calls: int = 0
    by_source: Counter = field(default_factory=Counter)
    clamped: int = 0
    generated_tokens: int = 0

    @property
    def fallbacks(self) -> int:
        return sum(v for s, v in self.by_source.items() if "fallback" in s)

    def record(self, result: LocalizationResult) -> None:
        self.calls += 1
        self.by_source[result.source] += 1
        self.clamped += int(result.clamped)
        self.generated_tokens += int(result.n_generated)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "fallbacks": self.fallbacks,
            "clamped": self.clamped,
            "generated_tokens": self.generated_tokens,
            **{f"source_{s}": int(v) for s, v in sorted(self.by_source.items())},
        }


# ---------------------------------------------------------------------------------------------
# Prompt and parser
# ---------------------------------------------------------------------------------------------

LOCALIZATION_INSTRUCTIONS = (
    "The final answer is wrong. Find the FIRST wrong step: where the error was made, not where "
    "the failure shows. Do not re-solve. Commit to one step number in 1..{n}, as \\boxed{{N}}."
)


def build_localization_text(problem_text: str, thoughts: list[str],
                            delimiter: str = "</thought>") -> str:
    """The user message of the localization prompt.

    Args:
        problem_text: the problem statement (the task's prompt text).
        thoughts: the failed chain's thoughts, in order (n = len(thoughts) >= 1); a trailing
            step delimiter is removed from each for display.
        delimiter: the step delimiter text.

    Returns:
        The message text: the problem, the numbered steps, and the instructions.
    """
    n = len(thoughts)
    if n < 1:
        raise ValueError("thoughts must hold at least one step (n >= 1)")
    steps = "\n".join(
        f"Step {i}: {t.replace(delimiter, ' ').strip()}" for i, t in enumerate(thoughts, start=1)
    )
    return (
        f"Problem: {problem_text.strip()}\n"
        f"Solution ({n} steps):\n{steps}\n"
        + LOCALIZATION_INSTRUCTIONS.format(n=n)
    )


def build_localization_prompt(problem_text: str, thoughts: list[str], tokenizer: Any = None) -> str:
    """Chat-style localization prompt as a string ready for tokenization.

    With a tokenizer that has a chat template (an instruction model on GPU) the template is
    applied with one user turn and the generation prompt. Otherwise (the tiny CPU model) a plain
    ``User: ... \\nAssistant:`` layout is used; the warm start trains the tiny model on exactly this
    layout (``srpo.warmstart``).
    """
    msg = build_localization_text(problem_text, thoughts)
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if template:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": msg}], tokenize=False, add_generation_prompt=True
        )
    return f"User: {msg}\nAssistant: "


def encode_localization_prompt(tokenizer: Any, problem_text: str, thoughts: list[str]) -> list[int]:
    """Token ids of the localization prompt (the same ids for training and for inference).

    A chat template already writes its special tokens into the text, so it is encoded without
    adding more; the plain layout gets the tokenizer's usual special tokens (``<bos>``).
    """
    text = build_localization_prompt(problem_text, thoughts, tokenizer)
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
) -> LocalizationResult:
    """Parse a localization reply into a reset step k in 1..n_steps.

    Order: the last ``\\boxed{N}`` whose content is an integer (``source="boxed"``), else the last
    "Step N" mention (``"step_mention"``), else k uniform in 1..n_steps (``"fallback_random"``; pass
    ``rng`` for a seeded draw, otherwise a fixed ``default_rng(0)`` is used). Values outside
    [1, n_steps] are clamped and flagged ``clamped=True``.

    Raises:
        ValueError: ``n_steps < 1``.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1; got {n_steps}")
    text = text or ""
    raw, source = None, None
    for content in reversed(_boxed_contents(text)):
        m = _INT.match(content)
        if m:
            raw, source = int(m.group(1)), "boxed"
            break
    if raw is None:
        mentions = _STEP.findall(text)
        if mentions:
            raw, source = int(mentions[-1]), "step_mention"
    if raw is None:
        rng = rng if rng is not None else np.random.default_rng(0)
        k = int(rng.integers(1, n_steps + 1))
        return LocalizationResult(k=k, source="fallback_random", text=text)
    k = min(max(raw, 1), n_steps)
    return LocalizationResult(k=k, source=source, raw=raw, clamped=(k != raw), text=text)


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
    """

    problem: Any
    problem_text: str
    thoughts: list[str]

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
                out.append(LocalizationResult(k, "oracle", raw=int(fe), clamped=k != fe))
        return out


class SelfLocalizer(_Localizer):
    """SRPO: the policy answers the localization prompt (temperature 0.3 by default).

    Args:
        engine: a ``srpo.rollout.RolloutEngine`` over the current policy.
        tokenizer: the policy's tokenizer (for the prompt and decoding the reply).
        max_new_tokens: cap on the reply length (tokens).
        temperature: sampling temperature of the reply (paper: 0.3).
    """

    name = "self"

    def __init__(self, engine: Any, tokenizer: Any, max_new_tokens: int = 16,
                 temperature: float = 0.3) -> None:
        super().__init__()
        self.engine = engine
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    def _locate(self, parents, rng, generator=None, **kw):
        if not parents:
            return []
        prompt_ids = [
            encode_localization_prompt(self.tokenizer, p.problem_text, p.thoughts) for p in parents
        ]
        replies = self.engine.complete(
            prompt_ids, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
            generator=generator,
        )
        out = []
        for p, reply in zip(parents, replies):
            ids = _reply_ids(reply)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            r = parse_localization(text, p.n, rng)
            out.append(
                LocalizationResult(r.k, r.source, r.raw, r.clamped, n_generated=len(ids), text=text)
            )
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
    if engine is None or tokenizer is None:
        raise ValueError("localizer 'self' needs engine= and tokenizer=")
    return SelfLocalizer(engine, tokenizer, **kw)
