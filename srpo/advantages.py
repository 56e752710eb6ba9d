"""Advantage estimators: pure registered functions (verl ``core_algos`` style).

Every estimator is registered under a name (``register_advantage``) in ``ADVANTAGE_ESTIMATORS``
and reads arrays named after its parameters from ``srpo.methods.batch.Batch.arrays`` (plus
``old_logprobs`` / ``seq_kl`` when a method needs them): ``rewards`` (B,), ``group_index`` (B,),
``loss_mask`` (B, T), ``token_node`` (B, T), ``node_parent`` (N,), ``pair_index`` (B,),
``attempt`` (B,). It returns per-sequence (B,) or per-token (B, T) advantages (float64).
``compute_advantages(name, arrays, **params)`` calls one by name.

=====================  ===========  ==========================================================
name                   returns      used by
=====================  ===========  ==========================================================
``group_zscore``       (B,)         GRPO, RRPO, SRPO, oracle: z-scores within groups (below);
                                    the release's GRPO baseline: sample std + 1e-6 (verl's)
``group_mean``         (B,)         Critique-GRPO (Dr.GRPO): r - mean, no std
``score_shaped``       (B,)         SCoRe: stage-I/II shaped reward minus KL, no baseline
``spo_tree``           (B, T)       SPO-Tree: V(node) - mean V of its siblings, rho mask
``treerl``             (B, T)       TreeRL: (global + local) / sqrt(leaves below)
=====================  ===========  ==========================================================

Group-relative advantages: z-scores of rewards within groups given by an id array.

GRPO, RRPO and SRPO all normalise outcome rewards within a *group* of rollouts that share a
starting state: the 8 fresh chains of a GRPO prompt, the 4 base chains of a ``1x4`` prompt, or
the 4 suffixes sampled from one reset prefix. Groups are given by an integer id per rollout, so
groups may differ in size and need not be contiguous (the verl convention).

For a group g with rewards r_1..r_m,

    A_i = (r_i - mean_g) / (std_g + std_eps)   (std = "population": sqrt(sum (r - mean)^2 / m),
                                                 std = "unbiased":   sqrt(sum (r - mean)^2 / (m - 1)))
    A_i = r_i - mean_g                          (std = "none": mean-centring only)

and A_i = 0 for every member of a group whose rewards are all equal (including a singleton
group): such a group carries no outcome difference to learn from.

The paper's SRPO / RRPO groups use the population std (``std_eps = 0``). The release's GRPO baseline
uses verl's GRPO outcome estimator: the sample std (ddof 1) with ``std_eps = 1e-6`` added to it in
the denominator (``std="unbiased", std_eps=1e-6``: the GRPO method's release recipe). verl gives a
singleton group ``r / (1 + eps)`` (mean 0, std 1) where we give 0; the baseline's groups have 8
members, so that case does not arise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["group_advantages", "STD_MODES", "ADVANTAGE_ESTIMATORS", "register_advantage",
           "compute_advantages", "group_zscore", "group_mean", "score_shaped",
           "spo_tree", "treerl", "tree_values"]

STD_MODES = ("population", "unbiased", "none")

#: name -> estimator (``register_advantage``)
ADVANTAGE_ESTIMATORS: dict = {}


def _as_numpy(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a 1-D numpy array (torch tensors are detached and moved to CPU)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one entry per rollout); got shape {arr.shape}")
    return arr


def group_advantages(rewards: Any, group_ids: Any, std: str = "population", eps: float = 1e-8,
                     std_eps: float = 0.0):
    """Z-score ``rewards`` within the groups given by ``group_ids``.

    Args:
        rewards: shape (N,) float, one outcome reward per rollout (numpy array, list or torch
            tensor). Must be finite.
        group_ids: shape (N,) hashable ids (ints or strings); rollouts with equal ids form a group.
            Groups may have different sizes and need not be contiguous.
        std: "population" (divide by the population std, the paper's default), "unbiased"
            (divide by the sample std with m - 1 in the denominator) or "none" (mean-centring).
        eps: a group whose reward spread is at most ``eps`` counts as constant and gets zeros.
        std_eps: added to the std in the denominator (verl's GRPO estimator: 1e-6; 0: none).

    Returns:
        Advantages of shape (N,), float64 numpy array for numpy/list input, or a torch tensor of
        the input's dtype and device for a torch ``rewards`` input.

    Raises:
        ValueError: unknown ``std``; ``rewards`` and ``group_ids`` of different shapes; NaN or
            infinite rewards.
    """
    if std not in STD_MODES:
        raise ValueError(f"std must be one of {STD_MODES}; got {std!r}")
    if not (std_eps >= 0 and np.isfinite(std_eps)):
        raise ValueError(f"std_eps must be a finite number >= 0; got {std_eps!r}")
    is_torch = hasattr(rewards, "detach") and hasattr(rewards, "cpu")
    r = _as_numpy(rewards, "rewards").astype(np.float64)
    g = _as_numpy(group_ids, "group_ids")
    if r.shape != g.shape:
        raise ValueError(
            f"rewards and group_ids must have the same shape; got {r.shape} and {g.shape}"
        )
    if not np.all(np.isfinite(r)):
        raise ValueError("rewards must be finite; got NaN or inf")

    adv = np.zeros_like(r)
    if r.size:
        _, inverse = np.unique(g, return_inverse=True)
        inverse = inverse.reshape(-1)
        for gid in range(int(inverse.max()) + 1):
            idx = np.flatnonzero(inverse == gid)
            vals = r[idx]
            centred = vals - vals.mean()
            if idx.size < 2 or np.max(np.abs(centred)) <= eps:
                continue  # constant or singleton group: nothing to learn, zeros
            if std == "none":
                adv[idx] = centred
                continue
            ddof = 0 if std == "population" else 1
            adv[idx] = centred / (vals.std(ddof=ddof) + std_eps)

    if is_torch:
        import torch

        return torch.as_tensor(adv, dtype=rewards.dtype, device=rewards.device)
    return adv


# ------------------------------------------------------------------------------------------------
# The registry
# ------------------------------------------------------------------------------------------------


def register_advantage(name: str):
    """Decorator: register an estimator under ``name`` (its parameters name the arrays it reads)."""
    def wrap(fn):
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn
    return wrap


def compute_advantages(name: str, arrays: dict, **params) -> np.ndarray:
    """Call the estimator ``name`` with the arrays its signature names and ``params``.

    Raises:
        ValueError: unknown name, or an array the estimator needs is missing.
    """
    import inspect

    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"advantage estimator must be one of {tuple(ADVANTAGE_ESTIMATORS)}; "
                         f"got {name!r}")
    fn = ADVANTAGE_ESTIMATORS[name]
    kwargs = {}
    for p in inspect.signature(fn).parameters.values():
        if p.name in params:
            kwargs[p.name] = params[p.name]
        elif p.name in arrays:
            kwargs[p.name] = arrays[p.name]
        elif p.default is inspect.Parameter.empty:
            raise ValueError(f"advantage estimator {name!r} needs {p.name!r}")
    return np.asarray(fn(**kwargs), dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# Per-sequence estimators
# ------------------------------------------------------------------------------------------------


@register_advantage("group_zscore")
def group_zscore(rewards, group_index, std: str = "population", std_eps: float = 0.0) -> np.ndarray:
    """(B,) z-scores within groups (``group_advantages``; ``std`` one of ``STD_MODES``, plus
    ``std_eps`` in the denominator)."""
    return group_advantages(rewards, group_index, std=std, std_eps=std_eps)


def _groups(group_index: np.ndarray) -> list[np.ndarray]:
    _, inverse = np.unique(group_index, return_inverse=True)
    inverse = inverse.reshape(-1)
    return [np.flatnonzero(inverse == g) for g in range(int(inverse.max()) + 1)] if inverse.size \
        else []


@register_advantage("group_mean")
def group_mean(rewards, group_index) -> np.ndarray:
    """(B,) ``r - mean_g`` (Dr.GRPO: no std normalisation)."""
    r = np.asarray(rewards, dtype=np.float64)
    out = np.zeros_like(r)
    for idx in _groups(np.asarray(group_index)):
        out[idx] = r[idx] - r[idx].mean()
    return out


@register_advantage("score_shaped")
def score_shaped(rewards, pair_index, attempt, seq_kl=None, alpha: float = 10.0, stage: int = 2,
                 kl_coef: float = 0.01, kl_coef_y1: float | None = None) -> np.ndarray:
    """(B,) SCoRe's shaped sequence reward, used as the advantage (no baseline).

    Args:
        rewards: (B,) R of each attempt. pair_index: (B,) the pair of each attempt (each pair
            holds one ``attempt`` 1 and one 2). attempt: (B,) 1 = first attempt y1, 2 = y2.
        seq_kl: (B,) per-sequence mean_t (log pi - log pi_ref) (k1); None: 0.
        alpha: stage-II bonus weight on R(y2) - R(y1) (release 10).
        stage: 2: R'(y1) = R(y1), R'(y2) = R(y2) + alpha (R(y2) - R(y1)); 1: R'(y1) = 0,
            R'(y2) = R(y2).
        kl_coef: KL weight on y2 (and on y1 in stage II). kl_coef_y1: KL weight on y1 (None:
            kl_coef in stage II, 0.1 in stage I).
    """
    r = np.asarray(rewards, dtype=np.float64)
    pair, att = np.asarray(pair_index), np.asarray(attempt)
    kl = np.zeros_like(r) if seq_kl is None else np.asarray(seq_kl, dtype=np.float64)
    r1 = {int(p): float(x) for p, x, a in zip(pair, r, att) if a == 1}
    if set(r1) != {int(p) for p, a in zip(pair, att) if a == 2}:
        raise ValueError("every pair must hold one first (attempt 1) and one second attempt (2)")
    beta1 = kl_coef_y1 if kl_coef_y1 is not None else (kl_coef if stage == 2 else 0.1)
    out = np.empty_like(r)
    for i, (p, a) in enumerate(zip(pair, att)):
        if a == 1:
            out[i] = (r[i] if stage == 2 else 0.0) - beta1 * kl[i]
        else:
            bonus = alpha * (r[i] - r1[int(p)]) if stage == 2 else 0.0
            out[i] = r[i] + bonus - kl_coef * kl[i]
    return out


# ------------------------------------------------------------------------------------------------
# Tree estimators (per token)
# ------------------------------------------------------------------------------------------------


def tree_values(rewards, token_node, node_parent) -> tuple[np.ndarray, np.ndarray]:
    """``(V, L)``: per node (N,), the mean reward of the leaves (samples) whose path passes
    through it, and how many such leaves (0: none; V is NaN there).

    A sample's path is the node of its last token and that node's ancestors (roots included);
    a sample without tokens is on no path.
    """
    r = np.asarray(rewards, dtype=np.float64)
    tn = np.asarray(token_node)
    parent = np.asarray(node_parent, dtype=np.int64)
    total = np.zeros(len(parent))
    count = np.zeros(len(parent), dtype=np.int64)
    for i in range(len(r)):
        valid = tn[i][tn[i] >= 0]
        if not valid.size:
            continue
        node = int(valid[-1])
        while node >= 0:
            total[node] += r[i]
            count[node] += 1
            node = int(parent[node])
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / np.where(count > 0, count, np.nan), count


def _per_token(node_adv: np.ndarray, token_node) -> np.ndarray:
    tn = np.asarray(token_node)
    out = np.zeros(tn.shape, dtype=np.float64)
    valid = tn >= 0
    out[valid] = node_adv[tn[valid]]
    return out


@register_advantage("spo_tree")
def spo_tree(rewards, token_node, node_parent, loss_mask, old_logprobs=None,
             prob_mask: float = 0.9) -> np.ndarray:
    """(B, T) SPO-Tree advantages.

    A(n) = V(n) - mean_{c in children(parent(n))} V(c) (siblings with leaves, n included); every
    token takes its node's A. Probability mask: where ``exp(old_logprobs) >= prob_mask`` (and
    ``prob_mask < 1``) the token's advantage is 0, and each sequence's kept trained tokens are
    scaled by (trained tokens / kept tokens), keeping its weight in a token-mean loss.

    Args:
        rewards: (B,) leaf rewards. token_node: (B, T) node per token (-1: padding).
        node_parent: (N,) parent per node (-1: root). loss_mask: (B, T) trained tokens.
        old_logprobs: (B, T) log pi_old of each token (None: no probability mask).
        prob_mask: rho (release 0.9).
    """
    V, count = tree_values(rewards, token_node, node_parent)
    parent = np.asarray(node_parent, dtype=np.int64)
    sib_sum = np.zeros(len(parent))
    sib_n = np.zeros(len(parent))
    for n in np.flatnonzero((count > 0) & (parent >= 0)):
        sib_sum[parent[n]] += V[n]
        sib_n[parent[n]] += 1
    adv = np.zeros(len(parent))
    has = (count > 0) & (parent >= 0)
    adv[has] = V[has] - sib_sum[parent[has]] / sib_n[parent[has]]
    out = _per_token(adv, token_node)
    mask = np.asarray(loss_mask) > 0
    out = np.where(mask, out, 0.0)
    if old_logprobs is not None and prob_mask < 1.0:
        kept = mask & (np.exp(np.asarray(old_logprobs, dtype=np.float64)) < prob_mask)
        n_tok, n_kept = mask.sum(axis=1), kept.sum(axis=1)
        scale = np.where(n_kept > 0, n_tok / np.maximum(n_kept, 1), 0.0)
        out = np.where(kept, out * scale[:, None], 0.0)
    return out


@register_advantage("treerl")
def treerl(rewards, token_node, node_parent, loss_mask=None) -> np.ndarray:
    """(B, T) TreeRL advantages: A(n) = [(V(n) - V(root)) + (V(n) - V(parent(n)))] / sqrt(L(n)),
    V the mean reward of the leaves below, L their number; every token takes its node's A.

    Args: as ``spo_tree`` (``loss_mask`` (B, T), optional, zeroes untrained tokens).
    """
    V, count = tree_values(rewards, token_node, node_parent)
    parent = np.asarray(node_parent, dtype=np.int64)
    root = np.arange(len(parent))
    for _ in range(len(parent)):  # the root of every node (trees are shallow)
        up = parent[root]
        moved = up >= 0
        if not moved.any():
            break
        root = np.where(moved, up, root)
    adv = np.zeros(len(parent))
    has = (count > 0) & (parent >= 0)
    vp = V[parent[has]]
    adv[has] = ((V[has] - V[root[has]]) + (V[has] - vp)) / np.sqrt(count[has])
    out = _per_token(adv, token_node)
    if loss_mask is not None:
        out = np.where(np.asarray(loss_mask) > 0, out, 0.0)
    return out
