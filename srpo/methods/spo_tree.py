"""SPO-Tree (Guo et al., arXiv 2505.23564) as the paper's release runs it.

Plan: a balanced tree per prompt with branching ``[b_1, ..., b_L]`` (release: ``[2, 4]``, 8
leaves = the compute-matched 8 terminal rollouts; the SPO paper's own default is ``[6, 6, 6]``).
Level 1 samples ``b_1`` chains from the prompt; every interior level stops a chain after
``segment_tokens`` new tokens (release: 600; ``None``: 600 / 5120 of the response cap, 22 tokens on
the synthetic task); each live node then gets ``b_{j+1}`` continuations; the last level runs to the
end of the response. A chain that ends inside a segment (a boxed answer, a cap) is a leaf where it
ends. Segments are cut by token count, not at thought boundaries (the release uses no thought stop
strings here; our engine keeps thought spans, which only matter for the reset metrics).

Advantages (``srpo.advantages.spo_tree``): V(leaf) = R, V(node) = mean of the leaves below,
segment advantage = V(node) - mean of V over the node and its siblings (the parent's children);
each token takes its segment's advantage. Probability mask (rho = 0.9): tokens the sampling policy
gave probability >= rho get no advantage, and each sequence's kept tokens are rescaled by
(trained tokens / kept tokens) so that the token-mean loss keeps each sequence's weight (our
reading of the release's normaliser). Training sequences are the root-to-leaf paths (a shared
segment is in every path through it). Release: PPO-clip, token-mean, lr 1e-6, temperature 0.7.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from srpo.methods.base import PPO_CLIP, Method, engine_limits
from srpo.methods.batch import Accounting, Batch
from srpo.methods.trees import SegmentForest, leaf_samples

#: the release's segment length and response cap (segment_length's "auto" keeps their ratio)
RELEASE_SEGMENT, RELEASE_RESPONSE = 600, 5120


@dataclass(frozen=True)
class SPOTreeOptions:
    """Attributes:
    branching: children per level (None: ``(2, R // 2)``, the release's [2, 4] at R = 8).
    segment_tokens: tokens per interior segment (None: ``segment_length``).
    prob_mask: tokens with pi_old(y) >= this get no advantage (release 0.9; 1.0: none).
    """

    branching: tuple[int, ...] | None = None
    segment_tokens: int | None = None
    prob_mask: float = 0.9

    def __post_init__(self) -> None:
        if self.branching is not None:
            object.__setattr__(self, "branching", tuple(int(b) for b in self.branching))
            if not self.branching or min(self.branching) < 1:
                raise ValueError(f"branching must be positive integers; got {self.branching}")
        if self.segment_tokens is not None and self.segment_tokens < 1:
            raise ValueError(f"segment_tokens must be >= 1; got {self.segment_tokens}")
        if not 0 < self.prob_mask <= 1:
            raise ValueError(f"prob_mask must be in (0, 1]; got {self.prob_mask}")


def segment_length(segment_tokens: int | None, max_response_tokens: int | None) -> int:
    """Interior segment length: the given one, else the release's 600 / 5120 of the response cap
    (22 tokens on the synthetic task's 192), else 600."""
    if segment_tokens is not None:
        return int(segment_tokens)
    if max_response_tokens is None:
        return RELEASE_SEGMENT
    return max(1, round(max_response_tokens * RELEASE_SEGMENT / RELEASE_RESPONSE))


def branching_of(options, rollouts_per_prompt: int) -> tuple[int, ...]:
    if options is not None and options.branching is not None:
        return options.branching
    return (2, max(1, rollouts_per_prompt // 2))


def _grow(ctx, forest, frontier, prompts, width: int, cap: int | None, acc) -> list[int]:
    """``width`` continuations of every live node in ``frontier`` (``(tree, node)`` pairs), each
    stopped after ``cap`` new tokens (None: run to the end); returns the new live nodes."""
    groups = []
    for tree, node in frontier:
        ids, _ = forest.response(node)
        groups.append((prompts[tree], ids, None, width))
    limit = {} if cap is None else {"max_new_tokens": _cap(ctx.engine, cap)}
    with engine_limits(ctx.engine, **limit):
        out = ctx.engine.sample_suffix_groups(groups, ctx.generator) if groups else []
    live = []
    for (tree, node), chains in zip(frontier, out):
        for c in chains:
            child = forest.add(node, c.response_ids[c.prefix_len :], chain=c)
            if cap is not None and c.stop_reason == "max_new_tokens":
                live.append((tree, child))
        acc.add_chains("branch", chains)
        acc.chains_branch += len(chains)
    return live


def _cap(engine, cap: int) -> int:
    current = engine.config.max_new_tokens
    return cap if current is None else min(cap, current)


def spo_tree_batch(ctx, problems) -> Batch:
    """One balanced segment tree per prompt (module docstring)."""
    widths = branching_of(ctx.options, ctx.rollouts_per_prompt)
    seg = segment_length(getattr(ctx.options, "segment_tokens", None), ctx.max_response_tokens)
    acc = Accounting()
    forest = SegmentForest()
    prompts = [ctx.codec.prompt_ids(p) for p in problems]
    roots = [forest.add(-1, []) for _ in problems]
    t0 = time.perf_counter()
    first_cap = seg if len(widths) > 1 else None
    limit = {} if first_cap is None else {"max_new_tokens": _cap(ctx.engine, first_cap)}
    with engine_limits(ctx.engine, **limit):
        flat = ctx.engine.generate([p for p in prompts for _ in range(widths[0])], 1, ctx.generator)
    live = []
    for j, group in enumerate(flat):
        tree = j // widths[0]
        node = forest.add(roots[tree], group[0].response_ids, chain=group[0])
        if first_cap is not None and group[0].stop_reason == "max_new_tokens":
            live.append((tree, node))
    acc.chains_fresh = len(flat)
    acc.add_chains("base", [g[0] for g in flat])
    acc.seconds_fresh = time.perf_counter() - t0
    t0 = time.perf_counter()
    for level, width in enumerate(widths[1:], start=2):
        live = _grow(ctx, forest, live, prompts, width, seg if level < len(widths) else None, acc)
    acc.seconds_suffix = time.perf_counter() - t0
    samples = leaf_samples(ctx, forest, roots, problems, prompts)
    first_round = [s.reward for s in samples]  # every leaf is an on-policy sample from the prompt
    return Batch(samples, [], acc, first_round, 0, len(problems), node_parent=list(forest.parent))


def _params(config, options) -> dict:
    return {"prob_mask": 0.9 if options is None else options.prob_mask}


from srpo.methods import register_method  # noqa: E402  (the registry imports this module)

SPO_TREE = register_method(
    Method(
        name="spo-tree",
        plan=spo_tree_batch,
        advantage="spo_tree",
        advantage_params=_params,
        losses=("ppo-clip", "reinforce"),
        options=SPOTreeOptions,
        defaults=dict(PPO_CLIP),
        release={**PPO_CLIP, "lr": 1e-6, "temperature": 0.7},
        needs=frozenset({"old_logprobs"}),
        trl="TRL's GRPOTrainer takes one advantage per sequence; SPO-Tree gives every segment its own "
        "(per-token advantages) and masks tokens by pi_old",
        summary="[2, 4] segment tree; V = mean of leaves; advantage = V - mean of siblings; rho 0.9",
    )
)
