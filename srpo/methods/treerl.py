"""TreeRL (Hou et al., arXiv 2506.11902): EPTree sampling and its global + local advantages.

Plan (EPTree): M initial chains per prompt, each the trunk of its own tree; then T rounds, each
forking every tree at its N highest-entropy tokens (the policy's entropy at the sampling
temperature, over every token of the tree not already a fork point; ties: the earliest) into L
continuations, each continuation
resampling from the fork token on (the prefix is the path before it). The paper's site setting is
M = 2, N = 1, L = 3, T = 1: 2 x (1 + 3) = 8 leaves, the compute-matched 8 terminal rollouts.
Training sequences are the root-to-leaf paths.

Advantages (``srpo.advantages.treerl``): node value V(n) = mean correctness (reward) of the leaves
below n; a segment's advantage is [(V(n) - V(root)) + (V(n) - V(parent(n)))] / sqrt(|L(n)|), with
|L(n)| the leaves below n (a shared segment, trained once per path through it, is weighted down);
every token of the segment takes it. The release does not run TreeRL (the paper compares it on
its site); we use the release's settings of the other methods: PPO-clip 0.2, token-mean, lr 5e-5,
temperature 0.7.

Each fork of a failed chain is also logged as a reset event (k = the thought holding the fork
token), so the entropy rule's clean rate is measured the way SRPO's localizer is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from srpo.methods.base import PPO_CLIP, Method, score_all
from srpo.methods.batch import Accounting, Batch, ResetEvent
from srpo.methods.trees import SegmentForest, leaf_samples


@dataclass(frozen=True)
class TreeRLOptions:
    """Attributes (None: the site's setting fitted to R terminal rollouts):
    initial_chains: M (default 2).
    forks: N fork points per tree per round (default 1).
    continuations: L chains per fork (default (R / M - 1) / (N T), 3 at R = 8).
    rounds: T (default 1).
    """

    initial_chains: int = 2
    forks: int = 1
    continuations: int | None = None
    rounds: int = 1

    def __post_init__(self) -> None:
        for name in ("initial_chains", "forks", "rounds"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.continuations is not None and self.continuations < 1:
            raise ValueError(f"continuations must be >= 1; got {self.continuations}")


def sizes(options, rollouts_per_prompt: int) -> tuple[int, int, int, int]:
    """``(M, N, L, T)``; L by default fills R = M (1 + T N L) leaves (at least 1)."""
    o = options if options is not None else TreeRLOptions()
    m, n, t = o.initial_chains, o.forks, o.rounds
    lc = o.continuations
    if lc is None:
        lc = max(1, (rollouts_per_prompt // m - 1) // (n * t))
    return m, n, lc, t


def _pick(forest, top, used, n_forks: int) -> list[tuple[int, int]]:
    """The ``n_forks`` highest-entropy ``(node, offset)`` token positions not yet used in the
    subtree of ``top`` (its own tokens included)."""
    cands = []
    stack = [top]
    while stack:
        node = stack.pop()
        stack.extend(forest.children[node])
        for off, h in enumerate(forest.extra[node] or []):
            if (node, off) not in used:
                cands.append((-h, node, off))
    cands.sort()
    return [(node, off) for _, node, off in cands[:n_forks]]


def _fork_start(forest, node: int, offset: int) -> int:
    """Split ``node`` so that a node starts at the fork token; returns that node."""
    return node if offset == 0 else forest.split(node, offset)


def _node_ending_at(forest, root: int, chain, t: int) -> int:
    """The node of ``chain``'s path that ends right before response token ``t`` (the root for
    t = 0): the fork parent, found after every split of the round."""
    if t == 0:
        return root
    leaf = next(n for n in forest.leaves(root) if forest.chain[n] is chain)
    end = 0
    for node in forest.path(leaf):
        end += len(forest.tokens[node])
        if end == t:
            return node
    raise RuntimeError(f"no node ends at token {t}")  # pragma: no cover - split guarantees one


def _event(ctx, problem, index, leaf_chain, t, conts) -> ResetEvent | None:
    """A fork of a failed chain as a reset event (k = the thought holding token t)."""
    from srpo.localize import thought_of_token

    if ctx.scorer.score(problem, leaf_chain).correct or not leaf_chain.spans:
        return None
    k = thought_of_token(leaf_chain.spans, t)
    fe = None
    if getattr(ctx.task, "has_step_verifier", False):
        fe = ctx.task.first_error(problem, ctx.codec.thoughts(leaf_chain))
    dev = None if fe is None else k - int(fe)
    ev = ResetEvent(
        index,
        len(leaf_chain.spans),
        k,
        "entropy",
        False,
        t,
        fe,
        dev,
        None if dev is None else dev <= 0,
        t,
    )
    for s in score_all(ctx, [problem] * len(conts), conts):
        ev.suffix_rewards.append(s.reward)
        ev.suffix_correct.append(s.correct)
    return ev


def _entropies(ctx, prompts, chains) -> list[np.ndarray]:
    if ctx.token_entropy is None:
        raise ValueError("treerl needs token entropies (RolloutContext.token_entropy)")
    return ctx.token_entropy(prompts, [c.response_ids for c in chains])


def _round(ctx, forest, roots, prompts, problems, used, n_forks, width, events, acc, last):
    picks = []  # (tree, leaf chain, token index in its response)
    for tree, root in enumerate(roots):
        for top, _ in [(sub, n) for sub in list(forest.children[root]) for n in range(n_forks)]:
            # each initial chain's subtree gets N forks, one at a time (a split moves tokens)
            found = _pick(forest, top, used, 1)
            if not found:
                break
            node, off = found[0]
            leaf = forest.leaves(node)[0] if forest.children[node] else node
            chain = forest.chain[leaf]
            t = sum(len(forest.tokens[x]) for x in forest.path(node)[:-1]) + off
            used.add((_fork_start(forest, node, off), 0))
            picks.append((tree, chain, t))
    picks = [
        (tree, _node_ending_at(forest, roots[tree], chain, t), chain, t) for tree, chain, t in picks
    ]
    groups = [
        (prompts[tree], list(chain.response_ids[:t]), None, width) for tree, _, chain, t in picks
    ]
    out = ctx.engine.sample_suffix_groups(groups, ctx.generator) if groups else []
    new = [c for chains in out for c in chains]
    ents = (
        [None] * len(new)
        if last
        else _entropies(ctx, [p for p, *_ in groups for _ in range(width)], new)
    )
    j = 0
    for (tree, parent, chain, t), chains in zip(picks, out):
        for c in chains:
            e = None if ents[j] is None else list(ents[j])[c.prefix_len :]
            forest.add(parent, c.response_ids[c.prefix_len :], chain=c, extra=e)
            j += 1
        ev = _event(ctx, problems[tree], tree, chain, t, chains)
        if ev is not None:
            events.append(ev)
        acc.add_chains("branch", chains)
        acc.chains_branch += len(chains)


def treerl_batch(ctx, problems) -> Batch:
    """EPTree per prompt (module docstring)."""
    m, n, lc, rounds = sizes(ctx.options, ctx.rollouts_per_prompt)
    acc = Accounting()
    forest = SegmentForest()
    prompts = [ctx.codec.prompt_ids(p) for p in problems]
    roots = [forest.add(-1, []) for _ in problems]
    t0 = time.perf_counter()
    flat = [
        g[0] for g in ctx.engine.generate([p for p in prompts for _ in range(m)], 1, ctx.generator)
    ]
    ents = _entropies(ctx, [p for p in prompts for _ in range(m)], flat)
    first_round = [
        s.reward for s in score_all(ctx, [problems[j // m] for j in range(len(flat))], flat)
    ]
    for j, (chain, e) in enumerate(zip(flat, ents)):
        forest.add(roots[j // m], chain.response_ids, chain=chain, extra=list(e))
    acc.chains_fresh = len(flat)
    acc.add_chains("base", flat)
    acc.seconds_fresh = time.perf_counter() - t0
    t0 = time.perf_counter()
    events, used = [], set()
    for r in range(rounds):
        _round(ctx, forest, roots, prompts, problems, used, n, lc, events, acc, r == rounds - 1)
    acc.seconds_suffix = time.perf_counter() - t0
    samples = leaf_samples(ctx, forest, roots, problems, prompts)
    prompts_reset = len({e.prompt_index for e in events})
    return Batch(
        samples,
        events,
        acc,
        first_round,
        prompts_reset,
        len(problems),
        node_parent=list(forest.parent),
    )


from srpo.methods import register_method  # noqa: E402  (the registry imports this module)

TREERL = register_method(
    Method(
        name="treerl",
        plan=treerl_batch,
        advantage="treerl",
        losses=("ppo-clip", "reinforce"),
        options=TreeRLOptions,
        defaults=dict(PPO_CLIP),
        release={**PPO_CLIP, "lr": 5e-5, "temperature": 0.7},
        needs=frozenset({"entropy"}),
        trl="TRL's GRPOTrainer takes one advantage per sequence; TreeRL gives every segment its own "
        "(per-token advantages) and forks at entropies TRL's rollout function does not see",
        summary="EPTree: 2 chains, 1 entropy fork each, 3 continuations; global + local / sqrt(leaves)",
    )
)
