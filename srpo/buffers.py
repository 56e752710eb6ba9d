"""Per-prompt training batches under one rollout budget: GRPO, 1x4, 2x4, 1x8, no-mask ablation.

Every prompt gets the same training budget of R rollouts (``rollouts_per_prompt``, 8 by default):

* ``grpo``: R fresh chains, one group.
* ``1x4`` (the paper's default): sample fresh chains one by one until there are R - 4 base chains
  and one failed chain (the *parent*), at most ``max_fresh_chains`` (12) fresh chains. The first
  failure is the parent; every other chain fills the base group while it has room, later ones are
  discarded. The parent's reset step k is localized, thoughts 1..k-1 are kept as the prefix, and 4
  suffixes are sampled from prompt + prefix. Groups: base (R - 4) and suffixes (4).
* ``2x4``: two failed parents, 4 suffixes each, no base group (successes found on the way are
  discarded). With only one failure within the cap it falls back to the ``1x4`` layout.
* ``1x8``: one parent, 8 suffixes, no base group.
* In every split, if no failure appears within the cap the R slots become one plain GRPO group
  made of the first R fresh chains.

Fresh chains are sampled in rounds, batched across prompts; each round asks, for every prompt that
is not yet complete, for exactly the number of chains it still certainly needs. That gives the same
chains (and the same waste) as the one-by-one sequential rule, in few batched calls. Every parent
of the batch is localized in one call, and the suffixes of every parent are then decoded together
in one batched call (``ThoughtEngine.sample_suffix_groups``; each prefix encoded once); the seeds
are drawn parent by parent, so the chains are those of one call per parent.

Loss masks: base/GRPO rollouts train on every response token; reset rollouts train only on their
suffix tokens (the copied prefix is masked out) unless ``mask_prefix=False`` (the no-mask ablation).

Compute accounting counts every generated token: base chains, parents (sampled but not trained
on), discarded fresh chains, suffixes and localization replies (``Accounting``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from srpo.boundaries import cut_prefix_tokens
from srpo.localize import LocalizationResult, ParentView
from srpo.thoughts import THOUGHT_DELIMITER, thought_texts

__all__ = [
    "SPLITS",
    "SplitSpec",
    "split_spec",
    "TrainingSample",
    "ResetEvent",
    "Accounting",
    "Batch",
    "build_batch",
]

SPLITS = ("grpo", "1x4", "2x4", "1x8")


@dataclass(frozen=True)
class SplitSpec:
    """Layout of one prompt's rollout budget.

    Attributes:
        n_parents: failed parents to reset (0 for GRPO).
        suffixes_per_parent: suffixes sampled from each parent's prefix.
        n_base: fresh chains kept in the base group.
    """

    n_parents: int
    suffixes_per_parent: int
    n_base: int


def split_spec(split: str, rollouts_per_prompt: int = 8) -> SplitSpec:
    """The ``SplitSpec`` of a split name under a budget of ``rollouts_per_prompt`` rollouts."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    r = rollouts_per_prompt
    if split == "grpo":
        spec = SplitSpec(0, 0, r)
    elif split == "1x4":
        spec = SplitSpec(1, 4, r - 4)
    elif split == "2x4":
        spec = SplitSpec(2, 4, r - 8)
    else:
        spec = SplitSpec(1, 8, r - 8)
    if spec.n_base < 0:
        raise ValueError(
            f"rollouts_per_prompt = {r} is too small for split {split!r} "
            f"({spec.n_parents} x {spec.suffixes_per_parent} suffixes)"
        )
    if r < 2:
        raise ValueError(f"rollouts_per_prompt must be >= 2; got {r}")
    return spec


@dataclass
class TrainingSample:
    """One rollout that enters the loss.

    Attributes:
        prompt_ids: prompt token ids.
        response_ids: response token ids (for a reset rollout: copied prefix + sampled suffix).
        loss_mask: one entry per response token, 1 = trained on (prefix tokens are 0 for reset
            rollouts unless the no-mask ablation is on).
        reward: outcome reward in [0, 1].
        group_id: advantage group (unique within the batch).
        is_reset_group: True for suffix rollouts of a reset parent.
        prompt_index: index of the prompt in the batch.
        event_index: index into ``Batch.events`` of the parent (None for base/GRPO rollouts).
        prefix_len: copied prefix tokens at the start of ``response_ids``.
    """

    prompt_ids: list[int]
    response_ids: list[int]
    loss_mask: list[int]
    reward: float
    group_id: int
    is_reset_group: bool
    prompt_index: int
    event_index: int | None = None
    prefix_len: int = 0


@dataclass
class ResetEvent:
    """One reset parent and what its suffixes achieved.

    Attributes:
        prompt_index: prompt of the batch.
        n: thoughts in the parent.
        k: chosen reset step (1..n).
        source: how k was chosen (``LocalizationResult.source``).
        fallback: k came from a fallback of the localizer, not from its answer.
        raw: the integer the localizer stated (None if none).
        first_error: the step verifier's first wrong step (None without a verifier).
        deviation: k - first_error (None without a verifier); <= 0 means the prefix is clean.
        clean: deviation <= 0 (None without a verifier).
        prefix_tokens: tokens in the kept prefix.
        suffix_rewards: rewards of the suffixes.
        prefix_split: the parent's token that straddled the kept thought's delimiter and the next
            thought (``>Then``) was replaced by the ids of its in-thought text
            (``srpo.boundaries``).
        prefix_exact: the prefix decodes to exactly thoughts 1..k-1 (False: a straddling token
            could not be split and was kept whole).
    """

    prompt_index: int
    n: int
    k: int
    source: str
    fallback: bool
    raw: int | None
    first_error: int | None
    deviation: int | None
    clean: bool | None
    prefix_tokens: int
    suffix_rewards: list[float] = field(default_factory=list)
    prefix_split: bool = False
    prefix_exact: bool = True

    @property
    def suffix_successes(self) -> int:
        return int(sum(r > 0.5 for r in self.suffix_rewards))

    @property
    def suffix_pass_at_k(self) -> float:
        """1.0 if at least one suffix is correct (the paper's correction rate, k = #suffixes)."""
        return float(self.suffix_successes > 0)


@dataclass
class Accounting:
    """Generated tokens and sequences by purpose (all of them, trained on or not), and the wall
    time of each generation phase (fresh chains, localization, suffixes) in seconds."""

    tokens_base: int = 0
    tokens_parent: int = 0
    tokens_discarded: int = 0
    tokens_suffix: int = 0
    tokens_localization: int = 0
    chains_fresh: int = 0
    chains_discarded: int = 0
    chains_suffix: int = 0
    localization_calls: int = 0
    seconds_fresh: float = 0.0
    seconds_localization: float = 0.0
    seconds_suffix: float = 0.0

    @property
    def generated_tokens(self) -> int:
        return (self.tokens_base + self.tokens_parent + self.tokens_discarded
                + self.tokens_suffix + self.tokens_localization)

    def as_dict(self) -> dict[str, float]:
        d = {k: (float(v) if k.startswith("seconds") else int(v)) for k, v in self.__dict__.items()}
        d["generated_tokens"] = self.generated_tokens
        return d


@dataclass
class Batch:
    """Training samples of one iteration plus what it cost.

    Attributes:
        samples: the rollouts that enter the loss (R per prompt).
        events: reset parents.
        accounting: generated tokens and chains.
        first_round_rewards: rewards of each prompt's first round of fresh chains (a fixed
            number per prompt chosen before any outcome is seen: an unbiased on-policy pass rate).
        prompts_reset: prompts with at least one reset.
        n_prompts: prompts in the batch.
        localizations: every ``LocalizationResult`` of the batch.
    """

    samples: list[TrainingSample]
    events: list[ResetEvent]
    accounting: Accounting
    first_round_rewards: list[float]
    prompts_reset: int
    n_prompts: int
    localizations: list[LocalizationResult] = field(default_factory=list)


@dataclass
class _PromptState:
    index: int
    prompt_ids: list[int]
    problem: Any
    chains: list[Any] = field(default_factory=list)  # every fresh chain, in order
    rewards: list[float] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)  # indices into chains
    base: list[int] = field(default_factory=list)
    first_round: int = 0

    def needed(self, spec: SplitSpec) -> int:
        """Fresh chains still certainly needed under the sequential rule."""
        if spec.n_parents == 0:
            return spec.n_base - len(self.chains)
        return (spec.n_parents - len(self.parents)) + (spec.n_base - len(self.base))

    def add(self, chain: Any, reward: float, spec: SplitSpec) -> None:
        i = len(self.chains)
        self.chains.append(chain)
        self.rewards.append(reward)
        # an empty chain (no room for a first thought) has no step to reset at: never a parent
        if (spec.n_parents and reward <= 0.5 and len(self.parents) < spec.n_parents
                and getattr(chain, "spans", [None])):
            self.parents.append(i)
        elif len(self.base) < spec.n_base:
            self.base.append(i)


def build_batch(
    problems: list[Any],
    task: Any,
    engine: Any,
    tokenizer: Any,
    split: str,
    localizer: Any,
    rng: np.random.Generator,
    generator: Any,
    rollouts_per_prompt: int = 8,
    max_fresh_chains: int = 12,
    mask_prefix: bool = True,
) -> Batch:
    """Sample and assemble one iteration's training batch.

    Args:
        problems: P problems of ``task``.
        task: grades responses (``grade``) and, if it has a verifier, finds first errors.
        engine: a ``srpo.rollout.RolloutEngine`` over the current policy.
        tokenizer: the policy's tokenizer (prompt encoding, thought decoding).
        split: one of ``SPLITS``; ``localizer=None`` forces plain GRPO.
        localizer: a ``srpo.localize`` localizer (``locate(parents, rng, generator=...)``) or None.
        rng: numpy Generator for random resets and localization fallbacks.
        generator: torch.Generator seeding every sampled chain.
        rollouts_per_prompt: training rollouts per prompt (R).
        max_fresh_chains: cap on fresh chains per prompt while looking for failures (>= R).
        mask_prefix: mask the copied prefix out of the loss (False = no-mask ablation).

    Returns:
        A ``Batch`` with R samples per prompt.
    """
    if localizer is None:
        split = "grpo"
    spec = split_spec(split, rollouts_per_prompt)
    delimiter = getattr(getattr(engine, "config", None), "delimiter", THOUGHT_DELIMITER)
    if max_fresh_chains < rollouts_per_prompt:
        raise ValueError(
            f"max_fresh_chains must be >= rollouts_per_prompt = {rollouts_per_prompt}; "
            f"got {max_fresh_chains}"
        )
    acc = Accounting()
    states = [
        _PromptState(i, tokenizer.encode(task.prompt(p)), p) for i, p in enumerate(problems)
    ]

    # 1. fresh chains in rounds
    t0 = time.perf_counter()
    first = True
    while True:
        todo = [s for s in states if s.needed(spec) > 0 and len(s.chains) < max_fresh_chains]
        if not todo:
            break
        counts = [min(s.needed(spec), max_fresh_chains - len(s.chains)) for s in todo]
        flat_prompts = [s.prompt_ids for s, c in zip(todo, counts) for _ in range(c)]
        flat = [g[0] for g in engine.generate(flat_prompts, 1, generator)]
        pos = 0
        for s, c in zip(todo, counts):
            for chain in flat[pos : pos + c]:
                s.add(chain, float(task.grade(s.problem, chain.text)), spec)
                acc.chains_fresh += 1
            pos += c
            if first:
                s.first_round = c
        first = False
    # prompts without enough failures
    for s in states:
        if spec.n_parents and len(s.parents) == 0:
            # no failure: a plain GRPO group of the first R fresh chains, the rest discarded
            while len(s.chains) < rollouts_per_prompt:  # cap reached before R chains: top up
                chain = engine.generate([s.prompt_ids], 1, generator)[0][0]
                s.chains.append(chain)
                s.rewards.append(float(task.grade(s.problem, chain.text)))
                acc.chains_fresh += 1
            s.base = list(range(rollouts_per_prompt))
        elif spec.n_parents == 2 and len(s.parents) == 1:
            pass  # handled below with the 1x4 layout

    # 2. localize every parent of the batch in one call
    parent_refs: list[tuple[_PromptState, int, int]] = []  # (state, chain index, n suffixes)
    views: list[ParentView] = []
    extra_base: dict[int, int] = {}
    for s in states:
        if not spec.n_parents or not s.parents:
            continue
        if spec.n_parents == 2 and len(s.parents) == 1:
            n_suffix = 4
            extra_base[s.index] = rollouts_per_prompt - n_suffix
        else:
            n_suffix = spec.suffixes_per_parent
        for ci in s.parents:
            chain = s.chains[ci]
            texts = thought_texts(tokenizer, chain.response_ids, chain.spans, delimiter)
            parent_refs.append((s, ci, n_suffix))
            question = getattr(s.problem, "question", None) or task.prompt(s.problem)
            views.append(ParentView(s.problem, question, texts))
    for s in states:
        if s.index in extra_base:  # 2x4 fallback: base group from the non-parent chains
            others = [i for i in range(len(s.chains)) if i not in s.parents]
            s.base = others[: extra_base[s.index]]
            if len(s.base) < extra_base[s.index]:
                need = extra_base[s.index] - len(s.base)
                for chain in engine.generate([s.prompt_ids] * need, 1, generator):
                    s.chains.append(chain[0])
                    s.rewards.append(float(task.grade(s.problem, chain[0].text)))
                    s.base.append(len(s.chains) - 1)
                    acc.chains_fresh += 1
    acc.seconds_fresh = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = localizer.locate(views, rng, generator=generator) if views else []
    acc.seconds_localization = time.perf_counter() - t0
    if getattr(localizer, "name", "") == "self":
        acc.localization_calls += len(results)
    acc.tokens_localization += sum(r.n_generated for r in results)

    # 3. token accounting of fresh chains
    for s in states:
        parents, base = set(s.parents) if spec.n_parents else set(), set(s.base)
        for i, chain in enumerate(s.chains):
            if i in base:
                acc.tokens_base += chain.n_generated
            elif i in parents:
                acc.tokens_parent += chain.n_generated
            else:
                acc.tokens_discarded += chain.n_generated
                acc.chains_discarded += 1

    # 4. assemble samples
    samples: list[TrainingSample] = []
    events: list[ResetEvent] = []
    gid = 0
    for s in states:
        if s.base:
            for i in s.base:
                c = s.chains[i]
                samples.append(TrainingSample(
                    s.prompt_ids, list(c.response_ids), [1] * len(c.response_ids),
                    s.rewards[i], gid, False, s.index,
                ))
            gid += 1
    suffix_groups, parent_events = [], []
    for (s, ci, n_suffix), view, res in zip(parent_refs, views, results):
        parent = s.chains[ci]
        n = len(parent.spans)
        k = min(max(res.k, 1), n)
        # thoughts 1..k-1, cut exactly at the delimiter (a straddling ">Then" token is split)
        cut = cut_prefix_tokens(tokenizer, parent.response_ids, parent.spans, k, delimiter)
        fe = task.first_error(s.problem, view.thoughts) if task.has_step_verifier else None
        dev = None if fe is None else k - int(fe)
        event = ResetEvent(s.index, n, k, res.source, res.is_fallback, res.raw, fe, dev,
                           None if dev is None else dev <= 0, len(cut.ids),
                           prefix_split=cut.replaced > 0, prefix_exact=cut.exact)
        suffix_groups.append((s.prompt_ids, cut.ids, cut.spans, n_suffix))
        parent_events.append((s, event))
    # every parent's suffixes in one batched call (seeds drawn parent by parent)
    t0 = time.perf_counter()
    all_suffixes = engine.sample_suffix_groups(suffix_groups, generator) if suffix_groups else []
    acc.seconds_suffix = time.perf_counter() - t0
    for (s, event), suffixes in zip(parent_events, all_suffixes):
        for c in suffixes:
            reward = float(task.grade(s.problem, c.text))
            event.suffix_rewards.append(reward)
            mask = ([0] * c.prefix_len if mask_prefix else [1] * c.prefix_len) + [1] * (
                len(c.response_ids) - c.prefix_len
            )
            samples.append(TrainingSample(
                s.prompt_ids, list(c.response_ids), mask, reward, gid, True, s.index,
                event_index=len(events), prefix_len=c.prefix_len,
            ))
            acc.tokens_suffix += c.n_generated
            acc.chains_suffix += 1
        events.append(event)
        gid += 1

    first_round = [r for s in states for r in s.rewards[: s.first_round]]
    prompts_reset = len({e.prompt_index for e in events})
    return Batch(samples, events, acc, first_round, prompts_reset, len(states), list(results))
