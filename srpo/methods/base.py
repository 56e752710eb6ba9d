"""The pieces a rollout plan is built from: the method record, its context and the seams.

A plan only talks to four seams, each a small object:

* the **engine** (``srpo.engines.base.ThoughtEngine``-like): ``generate(prompts, n, generator)``,
  ``sample_suffix_groups(groups, generator)`` (continuations of token-id prefixes),
  ``complete(...)`` (through the localizer only), and a ``config`` with ``max_new_tokens`` that a
  plan may lower for a segment (``engine_limits``);
* the **codec** (``TokenizerCodec`` for a language model): ``prompt_ids(problem)``,
  ``thoughts(chain)`` (texts, for verifiers and the localizer), ``question(problem)``,
  ``cut_prefix(chain, k) -> PrefixCut`` (thoughts 1..k-1 on ids; a tokenizer-free codec can use
  ``srpo.thoughts.cut_prefix``) and ``followup_ids(prompt_ids, response_ids, message)`` (a
  second-attempt or refinement prompt);
* the **scorer** (``TaskScorer``): ``score(problem, chain) -> Score(reward, correct)``;
* the **localizer** (``srpo.localize``): ``locate(parents, rng, generator=...)``;

plus a seeded ``numpy.random.Generator`` (random resets, fallbacks), a ``torch.Generator``-like
object the engine draws chain seeds from, and optionally ``token_entropy(prompts, responses)``
(per-token policy entropies, for TreeRL's and the entropy rule's branch points). Chains are any
objects with ``prompt_ids``, ``response_ids``, ``prefix_len``, ``spans``, ``text``,
``n_generated`` and ``stop_reason`` (``srpo.engines.base.Chain``).

Nothing here imports torch or a tokenizer library: a tabular policy (issue 19) plugs in an engine
over its thought MDP, a codec whose "token ids" are thought ids, and a scorer, and reuses every
plan unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Method",
    "RolloutContext",
    "Score",
    "TaskScorer",
    "score_all",
    "TokenizerCodec",
    "engine_limits",
    "RECIPE_FIELDS",
]

#: TrainConfig fields a method's ``defaults`` / ``release`` may set
RECIPE_FIELDS = (
    "lr",
    "temperature",
    "loss",
    "agg",
    "adv_std",
    "adv_eps",
    "clip_eps",
    "entropy_coef",
    "localization_offset",
    "kl_coef",
)


#: the release's PPO-clip loss settings (verl's defaults), shared by the methods whose release
#: recipe trains with them (SCoRe, SPO-Tree, TreeRL)
PPO_CLIP = {"loss": "ppo-clip", "agg": "token-mean", "clip_eps": 0.2}


@dataclass(frozen=True)
class Score:
    """A graded response: ``reward`` (the advantage's raw reward, e.g. the fraction of tests
    passed) and ``correct`` (the task's verdict, e.g. all tests pass; picks failed parents)."""

    reward: float
    correct: bool


class TaskScorer:
    """Scores chains with a task: ``task.score(problem, text) -> (reward, correct)`` when the task
    has one (partial-credit tasks), else ``reward = task.grade(problem, text)`` and
    ``correct = reward > 0.5`` (binary tasks: the release's threshold)."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self._score = getattr(task, "score", None)

    def score(self, problem: Any, chain: Any) -> Score:
        text = chain.text if hasattr(chain, "text") else str(chain)
        if self._score is not None:
            reward, correct = self._score(problem, text)
            return Score(float(reward), bool(correct))
        reward = float(self.task.grade(problem, text))
        return Score(reward, reward > 0.5)

    def score_many(self, problems: Sequence[Any], chains: Sequence[Any]) -> list[Score]:
        """``score`` of every ``(problems[i], chains[i])``; a task with ``score_many(problems,
        texts)`` grades them together (a coding task: in parallel, in the sandbox's pool)."""
        many = getattr(self.task, "score_many", None)
        if many is None:
            return [self.score(p, c) for p, c in zip(problems, chains)]
        texts = [c.text if hasattr(c, "text") else str(c) for c in chains]
        return [Score(float(r), bool(ok)) for r, ok in many(list(problems), texts)]


def score_all(ctx: Any, problems: Sequence[Any], chains: Sequence[Any]) -> list[Score]:
    """The scores of ``chains[i]`` on ``problems[i]``, asked of the scorer at once (its
    ``score_many`` when it has one, e.g. a coding task grading a batch in parallel; else one
    ``score`` call per chain, in order)."""
    if len(problems) != len(chains):
        raise ValueError(f"{len(chains)} chains for {len(problems)} problems")
    many = getattr(ctx.scorer, "score_many", None)
    if many is not None:
        return list(many(problems, chains))
    return [ctx.scorer.score(p, c) for p, c in zip(problems, chains)]


@dataclass(frozen=True)
class PrefixCut:
    """A reset prefix: ``ids`` (thoughts 1..k-1), their ``spans``, how many trailing parent ids
    were replaced (a straddling token split at the delimiter) and whether it is ``exact``."""

    ids: list[int]
    spans: list[tuple[int, int]]
    replaced: int = 0
    exact: bool = True


class TokenizerCodec:
    """The codec of a language model: prompts and follow-up prompts as token ids, thought texts,
    reset prefixes cut exactly at the delimiter.

    Args:
        tokenizer: a Hugging Face tokenizer.
        task: the task (``prompt(problem)``).
        delimiter: the thought delimiter (the engine's ``GenerationConfig.delimiter``).
    """

    def __init__(self, tokenizer: Any, task: Any, delimiter: str | None = None) -> None:
        from srpo.thoughts import THOUGHT_DELIMITER

        self.tokenizer = tokenizer
        self.task = task
        self.delimiter = delimiter or THOUGHT_DELIMITER

    def prompt_ids(self, problem: Any) -> list[int]:
        return list(self.tokenizer.encode(self.task.prompt(problem)))

    def question(self, problem: Any) -> str:
        return getattr(problem, "question", None) or self.task.prompt(problem)

    def thoughts(self, chain: Any) -> list[str]:
        from srpo.thoughts import thought_texts

        return thought_texts(self.tokenizer, chain.response_ids, chain.spans, self.delimiter)

    def cut_prefix(self, chain: Any, k: int) -> PrefixCut:
        """Thoughts 1..k-1 of ``chain`` on token ids, cut exactly at the delimiter (a token that
        straddles it, e.g. ``>Then``, is split: ``srpo.boundaries``)."""
        from srpo.boundaries import cut_prefix_tokens

        cut = cut_prefix_tokens(self.tokenizer, chain.response_ids, chain.spans, k, self.delimiter)
        return PrefixCut(list(cut.ids), list(cut.spans), cut.replaced, cut.exact)

    def followup_ids(
        self, prompt_ids: Sequence[int], response_ids: Sequence[int], message: str
    ) -> list[int]:
        """``prompt + response + message``: a second attempt's or a refinement's context, on
        token ids (the response is never re-tokenized)."""
        tail = self.tokenizer.encode(message, add_special_tokens=False)
        return (
            [int(t) for t in prompt_ids] + [int(t) for t in response_ids] + [int(t) for t in tail]
        )


@dataclass
class RolloutContext:
    """Everything a plan may use (module docstring): the seams and the random streams.

    Attributes:
        engine, codec, scorer, localizer: the seams (``localizer`` None for plans without one).
        task: the task (``first_error`` / ``has_step_verifier`` for the reset metrics).
        rng: numpy Generator (random resets, fallbacks, ties).
        generator: the engine's seed stream (a ``torch.Generator`` for the language model).
        options: the method's options (a dataclass instance, ``Method.options``).
        rollouts_per_prompt: R, terminal rollouts per prompt (the compute-matched budget).
        max_fresh_chains: cap on fresh chains per prompt while looking for failures.
        mask_prefix: mask copied prefixes out of the loss (False: the no-mask ablation).
        localization_offset: move every localized step this many thoughts earlier (floor 1).
        split: the reset layout (``1x4``, ``2x4``, ``1x8``) of the reset methods.
        token_entropy: ``(prompts, responses) -> list of (T_i,) arrays`` of the policy's entropy
            (nats, at the sampling temperature) at each response token; None if unavailable.
        max_response_tokens: the response cap (SPO-Tree's segment length ``auto`` reads it).
    """

    engine: Any
    codec: Any
    scorer: Any
    task: Any
    rng: np.random.Generator
    generator: Any
    localizer: Any = None
    options: Any = None
    rollouts_per_prompt: int = 8
    max_fresh_chains: int = 12
    mask_prefix: bool = True
    localization_offset: int = 0
    split: str = "1x4"
    token_entropy: Callable | None = None
    max_response_tokens: int | None = None


@contextlib.contextmanager
def engine_limits(engine: Any, **changes):
    """Temporarily replace fields of ``engine.config`` (e.g. ``max_new_tokens`` for a segment)."""
    old = engine.config
    engine.config = dataclasses.replace(old, **changes)
    try:
        yield engine
    finally:
        engine.config = old


@dataclass(frozen=True)
class Method:
    """One training method: how its batch is built, which estimator and loss it uses, its recipe.

    Attributes:
        name: the ``--method`` name.
        plan: ``plan(ctx: RolloutContext, problems) -> Batch``: the rollout plan (which chains,
            from which prefixes, which tokens carry gradient).
        advantage: registered estimator name (``srpo.advantages.ADVANTAGE_ESTIMATORS``), or
            ``"auto"``: the GRPO-family estimator chosen by ``TrainConfig.adv_std``.
        advantage_params: ``(config, options) -> dict`` of the estimator's keyword parameters.
        loss_params: ``(config, options) -> dict`` of the policy loss's keyword parameters.
        losses: the registered policy losses (``srpo.loss.POLICY_LOSSES``) the method runs with;
            the first is its own (``defaults["loss"]``).
        localizer: ``none``, ``random``, ``self``, ``oracle``, ``entropy`` or ``fixed``.
        options: a dataclass of the method's own settings (``TrainConfig.method_options``).
        defaults: TrainConfig fields the method sets when the user leaves them ``auto``.
        release: TrainConfig fields ``--recipe paper`` sets for this method (its release's lr,
            temperature and loss settings), on top of ``srpo.config.PAPER_RECIPE``.
        needs: what the update phase must compute before the advantages: ``old_logprobs``
            (probability masks), ``ref_logprobs`` (KL in the reward).
        trl: None if ``srpo.integrations.trl`` can run the method, else why TRL cannot.
        summary: one line for ``--help`` and docs.
    """

    name: str
    plan: Callable
    advantage: str
    losses: tuple[str, ...]
    localizer: str = "none"
    advantage_params: Callable = field(default=lambda config, options: {})
    loss_params: Callable = field(default=lambda config, options: {})
    options: type | None = None
    defaults: dict = field(default_factory=dict)
    release: dict = field(default_factory=dict)
    needs: frozenset = frozenset()
    trl: str | None = None
    summary: str = ""

    def make_options(self, values: dict | None) -> Any:
        """The options dataclass from a dict (unknown keys raise ValueError naming them)."""
        values = dict(values or {})
        if self.options is None:
            if values:
                raise ValueError(
                    f"method {self.name!r} takes no method_options; got {sorted(values)}"
                )
            return None
        names = {f.name for f in dataclasses.fields(self.options)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"method {self.name!r} has no option {unknown}; its options are {sorted(names)}"
            )
        return self.options(**values)
