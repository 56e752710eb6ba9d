"""What a rollout plan returns: training samples, reset events, token accounting, one batch.

Torch-free data containers shared by every method of ``srpo.methods``. A plan (``Method.plan``)
turns a list of problems into a ``Batch``; the trainer then reads the batch as arrays
(``Batch.arrays``) for the registered advantage estimator and policy loss.

Shapes: B samples (sequences that enter the loss); each sample has T_i response tokens. Per-token
fields (``loss_mask``, ``token_node``) are lists of length T_i; ``Batch.arrays`` pads them to
(B, T_max) with 0 (mask) or -1 (node).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["TrainingSample", "ResetEvent", "Accounting", "Batch", "TOKEN_KINDS"]

#: purposes of generated tokens (``Accounting.tokens_<kind>``); every generated token is one
TOKEN_KINDS = ("base", "parent", "discarded", "suffix", "localization", "followup", "branch")


@dataclass
class TrainingSample:
    """One sequence that enters the loss.

    Attributes:
        prompt_ids: prompt token ids (the context the loss conditions on).
        response_ids: response token ids (for a reset rollout: copied prefix + sampled suffix;
            for a tree leaf: the whole root-to-leaf path).
        loss_mask: one entry per response token, 1 = trained on (the copied prefix of a reset
            rollout is 0 unless the no-mask ablation is on).
        reward: outcome reward (in [0, 1]; fractional for partial-credit tasks).
        group_id: advantage group (unique within the batch; a tree's leaves share one).
        is_reset_group: True for suffix rollouts of a reset parent.
        prompt_index: index of the prompt in the batch.
        event_index: index into ``Batch.events`` of the parent (None for base/GRPO rollouts).
        prefix_len: copied prefix tokens at the start of ``response_ids``.
        correct: the task's verdict (``Score.correct``; e.g. all tests pass), None if unknown.
        kind: what the sample is: ``base``, ``suffix``, ``attempt1``/``attempt2`` (SCoRe),
            ``original``/``refinement`` (Critique-GRPO), ``leaf`` (tree methods).
        token_node: per response token, the tree node (segment) it belongs to (tree methods;
            None otherwise). Node ids index ``Batch.node_parent``.
        pair_index: SCoRe: the pair (y1, y2) this attempt belongs to, unique in the batch.
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
    correct: bool | None = None
    kind: str = "base"
    token_node: list[int] | None = None
    pair_index: int | None = None


@dataclass
class ResetEvent:
    """One reset parent (or one branch point of a tree method) and what its suffixes achieved.

    Attributes:
        prompt_index: prompt of the batch.
        n: thoughts in the parent.
        k: chosen reset step (1..n): the first thought that is resampled.
        source: how k was chosen (``LocalizationResult.source``).
        fallback: k came from a fallback of the localizer, not from its answer.
        raw: the integer the localizer stated (None if none).
        first_error: the step verifier's first wrong step (None without a verifier).
        deviation: k - first_error (None without a verifier); <= 0 means the prefix is clean.
        clean: deviation <= 0 (None without a verifier).
        prefix_tokens: tokens in the kept prefix.
        suffix_rewards: rewards of the suffixes.
        suffix_correct: the task's verdicts of the suffixes (counted by ``suffix_successes``).
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
    suffix_correct: list[bool] = field(default_factory=list)
    prefix_split: bool = False
    prefix_exact: bool = True

    @property
    def suffix_successes(self) -> int:
        """Correct suffixes (``suffix_correct``; reward > 0.5 when no verdict was recorded)."""
        if len(self.suffix_correct) == len(self.suffix_rewards):
            return int(sum(bool(c) for c in self.suffix_correct))
        return int(sum(r > 0.5 for r in self.suffix_rewards))

    @property
    def suffix_pass_at_k(self) -> float:
        """1.0 if at least one suffix is correct (the paper's correction rate, k = #suffixes)."""
        return float(self.suffix_successes > 0)


@dataclass
class Accounting:
    """Generated tokens and sequences by purpose (all of them, trained on or not), and the wall
    time of each generation phase (fresh chains, localization, suffixes) in seconds.

    ``tokens_followup``: second attempts (SCoRe) and refinements (Critique-GRPO);
    ``tokens_branch``: continuations of tree methods from interior nodes (SPO-Tree, TreeRL).
    """

    tokens_base: int = 0
    tokens_parent: int = 0
    tokens_discarded: int = 0
    tokens_suffix: int = 0
    tokens_localization: int = 0
    tokens_followup: int = 0
    tokens_branch: int = 0
    chains_fresh: int = 0
    chains_discarded: int = 0
    chains_suffix: int = 0
    chains_followup: int = 0
    chains_branch: int = 0
    localization_calls: int = 0
    seconds_fresh: float = 0.0
    seconds_localization: float = 0.0
    seconds_suffix: float = 0.0

    @property
    def generated_tokens(self) -> int:
        return sum(getattr(self, f"tokens_{kind}") for kind in TOKEN_KINDS)

    def add_chains(self, kind: str, chains) -> None:
        """Count ``chains`` (objects with ``n_generated``) as generated tokens of ``kind``."""
        setattr(
            self,
            f"tokens_{kind}",
            getattr(self, f"tokens_{kind}") + sum(int(c.n_generated) for c in chains),
        )

    def as_dict(self) -> dict[str, float]:
        d = {k: (float(v) if k.startswith("seconds") else int(v)) for k, v in self.__dict__.items()}
        d["generated_tokens"] = self.generated_tokens
        return d


@dataclass
class Batch:
    """Training samples of one iteration plus what it cost.

    Attributes:
        samples: the sequences that enter the loss (R per prompt for every method but the tree
            methods, whose leaves may be fewer when a branch ends early).
        events: reset parents (and branch points of tree methods).
        accounting: generated tokens and chains.
        first_round_rewards: rewards of each prompt's first round of fresh chains (a fixed
            number per prompt chosen before any outcome is seen: an unbiased on-policy pass rate).
        prompts_reset: prompts with at least one reset.
        n_prompts: prompts in the batch.
        localizations: every ``LocalizationResult`` of the batch.
        node_parent: tree methods: (N,) parent node id of every node (-1: a tree's root, the
            prompt); empty otherwise.
    """

    samples: list[TrainingSample]
    events: list[ResetEvent]
    accounting: Accounting
    first_round_rewards: list[float]
    prompts_reset: int
    n_prompts: int
    localizations: list[Any] = field(default_factory=list)
    node_parent: list[int] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        """The batch as the arrays the registered estimators read (``srpo.advantages``).

        Returns: ``rewards`` (B,) float64, ``correct`` (B,) bool (reward > 0.5 where unknown),
        ``group_index`` (B,) int64, ``loss_mask`` (B, T) int8, ``token_node`` (B, T) int64
        (-1 = none / padding), ``node_parent`` (N,) int64, ``pair_index`` (B,) int64 (-1 none),
        ``attempt`` (B,) int64 (SCoRe: 1 or 2; 0 otherwise), ``is_refinement`` (B,) bool.
        """
        s = self.samples
        width = max([len(x.response_ids) for x in s] + [1])
        mask = np.zeros((len(s), width), dtype=np.int8)
        node = np.full((len(s), width), -1, dtype=np.int64)
        for i, x in enumerate(s):
            mask[i, : len(x.loss_mask)] = x.loss_mask
            if x.token_node is not None:
                node[i, : len(x.token_node)] = x.token_node
        return {
            "rewards": np.array([x.reward for x in s], dtype=np.float64),
            "correct": np.array(
                [x.reward > 0.5 if x.correct is None else bool(x.correct) for x in s], dtype=bool
            ),
            "group_index": np.array([x.group_id for x in s], dtype=np.int64),
            "loss_mask": mask,
            "token_node": node,
            "node_parent": np.asarray(self.node_parent, dtype=np.int64),
            "pair_index": np.array(
                [-1 if x.pair_index is None else x.pair_index for x in s], dtype=np.int64
            ),
            "attempt": np.array(
                [{"attempt1": 1, "attempt2": 2}.get(x.kind, 0) for x in s], dtype=np.int64
            ),
            "is_refinement": np.array([x.kind == "refinement" for x in s], dtype=bool),
        }
