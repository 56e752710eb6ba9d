"""Group-relative advantages: z-scores of rewards within groups given by an id array.

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
the denominator (``std="unbiased", std_eps=1e-6``; ``srpo.config.paper_recipe("grpo")``). verl gives
a singleton group ``r / (1 + eps)`` (mean 0, std 1) where we give 0; the baseline's groups have 8
members, so that case does not arise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["group_advantages", "STD_MODES"]

STD_MODES = ("population", "unbiased", "none")


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
