"""Trees of response segments (SPO-Tree, TreeRL): nodes, splits, root-to-leaf paths.

A *forest* holds one tree per prompt. The root of a tree is the prompt (no tokens); every other
node is a *segment*: consecutive response tokens that all its descendants share. A leaf's
root-to-leaf path is one complete response (a training sequence); each of its tokens belongs to
exactly one node (``token_node``), which is how the tree advantages (``srpo.advantages``) give
every token its segment's advantage. Node ids are global in the batch, so ``parent`` is the
``node_parent`` array of ``srpo.methods.batch.Batch``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SegmentForest", "leaf_samples"]


class SegmentForest:
    """Segment trees over one batch (module docstring).

    Attributes:
        parent: (N,) parent id of every node (-1 for a root).
        tokens: each node's response tokens (empty for a root).
        extra: per node, the per-token values stored with it (e.g. entropies), or None.
        chain: per leaf node, the chain object it ends (score, spans, text), else None.
    """

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.tokens: list[list[int]] = []
        self.extra: list[list[float] | None] = []
        self.chain: list[Any] = []
        self.children: list[list[int]] = []

    def add(self, parent: int, tokens, chain: Any = None, extra=None) -> int:
        """A new node below ``parent`` (-1: a new root) holding ``tokens``; returns its id."""
        node = len(self.parent)
        self.parent.append(int(parent))
        self.tokens.append([int(t) for t in tokens])
        self.extra.append(None if extra is None else [float(x) for x in extra])
        self.chain.append(chain)
        self.children.append([])
        if parent >= 0:
            self.children[parent].append(node)
        return node

    def split(self, node: int, offset: int) -> int:
        """Cut ``node`` after ``offset`` tokens (0 < offset < len): the node keeps the head, a new
        child takes the tail and the node's former children (and its chain, if a leaf).
        Returns the new (tail) node's id."""
        n = len(self.tokens[node])
        if not 0 < offset < n:
            raise ValueError(f"offset must be in 1..{n - 1} to split node {node}; got {offset}")
        head, tail = self.tokens[node][:offset], self.tokens[node][offset:]
        extra = self.extra[node]
        moved = self.children[node]
        bottom = len(self.parent)
        self.parent.append(node)
        self.tokens.append(tail)
        self.extra.append(None if extra is None else extra[offset:])
        self.chain.append(self.chain[node])
        self.children.append(list(moved))
        for c in moved:
            self.parent[c] = bottom
        self.tokens[node] = head
        self.extra[node] = None if extra is None else extra[:offset]
        self.chain[node] = None
        self.children[node] = [bottom]
        return bottom

    def path(self, node: int) -> list[int]:
        """Non-root nodes from the root's child down to ``node``."""
        out = []
        while node >= 0 and self.parent[node] >= 0:
            out.append(node)
            node = self.parent[node]
        return out[::-1]

    def root_of(self, node: int) -> int:
        while self.parent[node] >= 0:
            node = self.parent[node]
        return node

    def response(self, node: int) -> tuple[list[int], list[int]]:
        """``(response_ids, token_node)`` of the path from the root to ``node``."""
        ids, owner = [], []
        for n in self.path(node):
            ids += self.tokens[n]
            owner += [n] * len(self.tokens[n])
        return ids, owner

    def leaves(self, root: int) -> list[int]:
        """Leaves below ``root`` in creation order."""
        out, stack = [], [root]
        while stack:
            n = stack.pop()
            if not self.children[n] and n != root:
                out.append(n)
            stack.extend(self.children[n])
        return sorted(out)


def leaf_samples(ctx, forest: SegmentForest, roots, problems, prompts) -> list:
    """One training sample per leaf (its root-to-leaf path, every token trained), one group per
    tree; each leaf is scored once, from the chain that ends it."""
    from srpo.methods.base import score_all
    from srpo.methods.batch import TrainingSample

    leaves = [(i, leaf) for i, root in enumerate(roots) for leaf in forest.leaves(root)]
    graded = iter(
        score_all(ctx, [problems[i] for i, _ in leaves], [forest.chain[leaf] for _, leaf in leaves])
    )
    samples = []
    for i, (root, prompt) in enumerate(zip(roots, prompts)):
        for leaf in forest.leaves(root):
            ids, owner = forest.response(leaf)
            chain = forest.chain[leaf]
            if list(chain.response_ids) != ids:  # pragma: no cover - the forest's invariant
                raise RuntimeError("a leaf's path differs from the chain that ends it")
            score = next(graded)
            samples.append(
                TrainingSample(
                    prompt,
                    ids,
                    [1] * len(ids),
                    score.reward,
                    i,
                    False,
                    i,
                    correct=score.correct,
                    kind="leaf",
                    token_node=owner,
                )
            )
    return samples
