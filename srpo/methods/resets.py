"""Reset methods: RRPO, SRPO, the oracle, the localization offset and the branch-rule resets.

They share one rollout plan (``reset_batch``) and differ only in the localizer that picks the
reset step k of a failed parent: uniform (``rrpo``), the policy's own answer (``srpo``), the step
verifier (``oracle``), SRPO moved N thoughts earlier (``srpo-offset``), the thought holding the
parent's highest-entropy token (``entropy-reset``, TreeRL's rule) or a fixed token position
(``fixed-reset``, SPO-Tree's rule).

Every prompt gets the same training budget of R rollouts (``rollouts_per_prompt``, 8 by default):

* ``1x4`` (the paper's default): sample fresh chains one by one until there are R - 4 base chains
  and one failed chain (the *parent*; failed = the scorer's ``correct`` is False), at most
  ``max_fresh_chains`` (12) fresh chains. The first failure is the parent; every other chain fills
  the base group while it has room, later ones are discarded. The parent's reset step k is
  localized, thoughts 1..k-1 are kept as the prefix, and 4 suffixes are sampled from prompt +
  prefix. Groups: base (R - 4) and suffixes (4).
* ``2x4``: two failed parents, 4 suffixes each, no base group (successes found on the way are
  discarded). With only one failure within the cap it falls back to the ``1x4`` layout.
* ``1x8``: one parent, 8 suffixes, no base group.
* In every split, if no failure appears within the cap the R slots become one plain GRPO group
  made of the first R fresh chains.

Fresh chains are sampled in rounds, batched across prompts; each round asks, for every prompt that
is not yet complete, for exactly the number of chains it still certainly needs. That gives the same
chains (and the same waste) as the one-by-one sequential rule, in few batched calls. Every parent
of the batch is localized in one call, and the suffixes of every parent are then decoded together
in one batched call (``sample_suffix_groups``; each prefix encoded once); the seeds are drawn
parent by parent, so the chains are those of one call per parent.

Loss masks: base rollouts train on every response token; reset rollouts train only on their
suffix tokens (the copied prefix is masked out) unless ``mask_prefix=False`` (the no-mask ablation).
Compute accounting counts every generated token: base chains, parents (sampled but not trained
on), discarded fresh chains, suffixes and localization replies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from srpo.methods.base import Method, score_all
from srpo.methods.batch import Accounting, Batch, ResetEvent, TrainingSample

__all__ = ["SPLITS", "SplitSpec", "split_spec", "reset_batch", "FixedOptions"]

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
    spec = {
        "grpo": SplitSpec(0, 0, r),
        "1x4": SplitSpec(1, 4, r - 4),
        "2x4": SplitSpec(2, 4, r - 8),
        "1x8": SplitSpec(1, 8, r - 8),
    }[split]
    if spec.n_base < 0:
        raise ValueError(
            f"rollouts_per_prompt = {r} is too small for split {split!r} "
            f"({spec.n_parents} x {spec.suffixes_per_parent} suffixes)"
        )
    if r < 2:
        raise ValueError(f"rollouts_per_prompt must be >= 2; got {r}")
    return spec


@dataclass
class _PromptState:
    index: int
    prompt_ids: list[int]
    problem: Any
    chains: list[Any] = field(default_factory=list)  # every fresh chain, in order
    rewards: list[float] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)  # indices into chains
    base: list[int] = field(default_factory=list)
    first_round: int = 0

    def needed(self, spec: SplitSpec) -> int:
        """Fresh chains still certainly needed under the sequential rule."""
        if spec.n_parents == 0:
            return spec.n_base - len(self.chains)
        return (spec.n_parents - len(self.parents)) + (spec.n_base - len(self.base))

    def add(self, chain: Any, score, spec: SplitSpec, keep: bool = True) -> int:
        i = len(self.chains)
        self.chains.append(chain)
        self.rewards.append(score.reward)
        self.correct.append(score.correct)
        if not keep:
            return i
        # an empty chain (no room for a first thought) has no step to reset at: never a parent
        if (
            spec.n_parents
            and not score.correct
            and len(self.parents) < spec.n_parents
            and getattr(chain, "spans", [None])
        ):
            self.parents.append(i)
        elif len(self.base) < spec.n_base:
            self.base.append(i)
        return i


def _fresh_rounds(ctx, states, spec, acc) -> None:
    """Fresh chains in rounds batched across prompts, until every prompt is complete or capped."""
    first = True
    while True:
        todo = [s for s in states if s.needed(spec) > 0 and len(s.chains) < ctx.max_fresh_chains]
        if not todo:
            return
        counts = [min(s.needed(spec), ctx.max_fresh_chains - len(s.chains)) for s in todo]
        flat_prompts = [s.prompt_ids for s, c in zip(todo, counts) for _ in range(c)]
        flat = [g[0] for g in ctx.engine.generate(flat_prompts, 1, ctx.generator)]
        scores = score_all(ctx, [s.problem for s, c in zip(todo, counts) for _ in range(c)], flat)
        pos = 0
        for s, c in zip(todo, counts):
            for chain, score in zip(flat[pos : pos + c], scores[pos : pos + c]):
                s.add(chain, score, spec)
                acc.chains_fresh += 1
            pos += c
            if first:
                s.first_round = c
        first = False


def _top_up(ctx, state, n: int, acc, keep_as_base: bool) -> None:
    """``n`` more fresh chains for one prompt, one call each (as the sequential rule draws)."""
    for _ in range(n):
        chain = ctx.engine.generate([state.prompt_ids], 1, ctx.generator)[0][0]
        i = state.add(chain, ctx.scorer.score(state.problem, chain), None, keep=False)
        if keep_as_base:
            state.base.append(i)
        acc.chains_fresh += 1


def _parents_and_views(ctx, states, spec, acc) -> tuple[list, list]:
    """The failed parents to localize ``(state, chain index, n suffixes)`` and their views;
    prompts without a failure become one GRPO group, a 2x4 prompt with one failure goes 1x4."""
    from srpo.localize import ParentView

    r = ctx.rollouts_per_prompt
    refs, views, extra_base = [], [], {}
    for s in states:
        if spec.n_parents and not s.parents:  # no failure: the first R fresh chains, one group
            if len(s.chains) < r:  # cap reached before R chains: top up
                _top_up(ctx, s, r - len(s.chains), acc, keep_as_base=False)
            s.base = list(range(r))
            continue
        if not spec.n_parents:
            continue
        n_suffix = spec.suffixes_per_parent
        if spec.n_parents == 2 and len(s.parents) == 1:
            n_suffix = 4
            extra_base[s.index] = r - n_suffix
        for ci in s.parents:
            chain = s.chains[ci]
            refs.append((s, ci, n_suffix))
            views.append(
                ParentView(
                    s.problem,
                    ctx.codec.question(s.problem),
                    ctx.codec.thoughts(chain),
                    prompt_ids=s.prompt_ids,
                    response_ids=list(chain.response_ids),
                    spans=list(chain.spans),
                )
            )
    for s in states:
        if s.index in extra_base:  # 2x4 fallback: base group from the non-parent chains
            s.base = [i for i in range(len(s.chains)) if i not in s.parents][: extra_base[s.index]]
            need = extra_base[s.index] - len(s.base)
            if need > 0:
                chains = [
                    g[0] for g in ctx.engine.generate([s.prompt_ids] * need, 1, ctx.generator)
                ]
                for chain, score in zip(chains, score_all(ctx, [s.problem] * need, chains)):
                    s.base.append(s.add(chain, score, None, keep=False))
                    acc.chains_fresh += 1
    return refs, views


def _account_fresh(states, spec, acc) -> None:
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


def _base_samples(states) -> tuple[list[TrainingSample], int]:
    samples, gid = [], 0
    for s in states:
        if s.base:
            for i in s.base:
                c = s.chains[i]
                samples.append(
                    TrainingSample(
                        s.prompt_ids,
                        list(c.response_ids),
                        [1] * len(c.response_ids),
                        s.rewards[i],
                        gid,
                        False,
                        s.index,
                        correct=s.correct[i],
                    )
                )
            gid += 1
    return samples, gid


def _reset_events(ctx, refs, views, results) -> tuple[list, list]:
    """Clamp (and offset) every k, cut the prefixes (exactly at the delimiter: the codec's
    ``cut_prefix``), and make one event per parent."""
    task = ctx.task
    groups, events = [], []
    for (s, ci, n_suffix), view, res in zip(refs, views, results):
        parent = s.chains[ci]
        n = len(parent.spans)
        k = min(max(res.k - ctx.localization_offset, 1), n)
        cut = ctx.codec.cut_prefix(parent, k)
        verifier = getattr(task, "has_step_verifier", False)
        fe = task.first_error(s.problem, view.thoughts) if verifier else None
        dev = None if fe is None else k - int(fe)
        event = ResetEvent(
            s.index,
            n,
            k,
            res.source,
            res.is_fallback,
            res.raw,
            fe,
            dev,
            None if dev is None else dev <= 0,
            len(cut.ids),
            prefix_split=cut.replaced > 0,
            prefix_exact=cut.exact,
        )
        groups.append((s.prompt_ids, cut.ids, cut.spans, n_suffix))
        events.append((s, event))
    return groups, events


def reset_batch(ctx, problems) -> Batch:
    """Sample and assemble one iteration's reset batch (module docstring)."""
    split = ctx.split if ctx.localizer is not None else "grpo"
    spec = split_spec(split, ctx.rollouts_per_prompt)
    if ctx.max_fresh_chains < ctx.rollouts_per_prompt:
        raise ValueError(
            f"max_fresh_chains must be >= rollouts_per_prompt = "
            f"{ctx.rollouts_per_prompt}; got {ctx.max_fresh_chains}"
        )
    acc = Accounting()
    states = [_PromptState(i, ctx.codec.prompt_ids(p), p) for i, p in enumerate(problems)]
    t0 = time.perf_counter()
    _fresh_rounds(ctx, states, spec, acc)
    refs, views = _parents_and_views(ctx, states, spec, acc)
    acc.seconds_fresh = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = ctx.localizer.locate(views, ctx.rng, generator=ctx.generator) if views else []
    acc.seconds_localization = time.perf_counter() - t0
    if getattr(ctx.localizer, "name", "") == "self":
        acc.localization_calls += len(results)
    acc.tokens_localization += sum(r.n_generated for r in results)
    _account_fresh(states, spec, acc)
    samples, gid = _base_samples(states)
    groups, parent_events = _reset_events(ctx, refs, views, results)
    t0 = time.perf_counter()
    all_suffixes = ctx.engine.sample_suffix_groups(groups, ctx.generator) if groups else []
    acc.seconds_suffix = time.perf_counter() - t0
    events = []
    flat_scores = score_all(
        ctx,
        [s.problem for (s, _e), suffixes in zip(parent_events, all_suffixes) for _ in suffixes],
        [c for suffixes in all_suffixes for c in suffixes],
    )
    for (s, event), suffixes in zip(parent_events, all_suffixes):
        scores, flat_scores = flat_scores[: len(suffixes)], flat_scores[len(suffixes) :]
        for c, score in zip(suffixes, scores):
            event.suffix_rewards.append(score.reward)
            event.suffix_correct.append(score.correct)
            prefix_mask = 0 if ctx.mask_prefix else 1
            mask = [prefix_mask] * c.prefix_len + [1] * (len(c.response_ids) - c.prefix_len)
            samples.append(
                TrainingSample(
                    s.prompt_ids,
                    list(c.response_ids),
                    mask,
                    score.reward,
                    gid,
                    True,
                    s.index,
                    event_index=len(events),
                    prefix_len=c.prefix_len,
                    correct=score.correct,
                    kind="suffix",
                )
            )
            acc.tokens_suffix += c.n_generated
            acc.chains_suffix += 1
        events.append(event)
        gid += 1
    first_round = [r for s in states for r in s.rewards[: s.first_round]]
    prompts_reset = len({e.prompt_index for e in events})
    return Batch(samples, events, acc, first_round, prompts_reset, len(states), list(results))


# ------------------------------------------------------------------------------------------------
# The methods
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixedOptions:
    """``fixed-reset``: reset at the thought holding response token ``position`` (0-based; None:
    SPO-Tree's segment length, ``srpo.methods.spo_tree.segment_length``)."""

    position: int | None = None


_COMMON = {"loss": "reinforce", "agg": "seq-mean-token-mean", "adv_std": "population"}
_RELEASE = {
    "loss": "reinforce",
    "agg": "seq-mean-token-mean",
    "adv_std": "population",
    "lr": 5e-5,
    "temperature": 0.7,
}
_SUMMARIES = {
    "rrpo": "resets at a uniform step of a failed chain",
    "srpo": "resets at the step the policy names as its first error",
    "oracle": "resets at the step verifier's first error (synthetic task only)",
    "srpo-offset": "SRPO with the localized step moved --localization-offset thoughts earlier",
    "entropy-reset": "resets at the thought holding the failed chain's highest-entropy token",
    "fixed-reset": "resets at the thought holding a fixed token position",
}
_LOCALIZER = {
    "rrpo": "random",
    "srpo": "self",
    "oracle": "oracle",
    "srpo-offset": "self",
    "entropy-reset": "entropy",
    "fixed-reset": "fixed",
}

from srpo.methods import register_method  # noqa: E402  (the registry imports this module)

for _name, _localizer in _LOCALIZER.items():
    register_method(
        Method(
            name=_name,
            plan=reset_batch,
            advantage="auto",
            losses=("reinforce", "ppo-clip"),
            localizer=_localizer,
            options=FixedOptions if _name == "fixed-reset" else None,
            defaults={**_COMMON, "localization_offset": 1 if _name == "srpo-offset" else 0},
            release=dict(_RELEASE),
            summary=_SUMMARIES[_name],
            needs=frozenset({"entropy"}) if _name == "entropy-reset" else frozenset(),
        )
    )
