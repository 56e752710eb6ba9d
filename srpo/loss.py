"""Policy losses: registered pure functions (verl ``core_algos`` style), and diagnostics.

``POLICY_LOSSES`` maps a name to ``loss(logprobs, advantages, loss_mask, agg, ...) -> (loss,
stats)``; ``TrainConfig.loss`` names one and the trainer calls it per micro-batch:

=====================  =====================================================================
name                   per-token loss
=====================  =====================================================================
``reinforce``          -A log pi (the release's SRPO / RRPO loss; no ratio, no clipping)
``ppo-clip``           max(-A r, -A clip(r, 1 - eps, 1 + eps)), r = pi / pi_old
``critique-shaped``    Critique-GRPO: -A r on original rows, -A f(pi), f(p) = p / (p + gamma),
                       on shaped (refinement) rows
=====================  =====================================================================

The prefix-masked policy-gradient loss of GRPO / RRPO / SRPO, and the diagnostics around it.

Shapes: B rollouts (sequences) by T response-token positions (padded). ``loss_mask[i, t] = 1``
marks a token that is trained on: for a reset rollout only the freshly sampled suffix tokens
(the copied prefix is masked out), for a base rollout every generated token, and 0 on padding.

Per-token objective (to be *minimised*):

* REINFORCE (paper default, ``old_logprobs is None``):  l_it = -A_i * log pi(y_it)
* importance-weighted / PPO-clip (``old_logprobs`` given), with r_it = exp(log pi - log pi_old):
  l_it = max(-A_i r_it, -A_i clip(r_it, 1 - eps_low, 1 + eps_high))   (no clip: -A_i r_it)

Aggregation (``agg``):

* ``"seq-mean-token-mean"``: mean over the active tokens of each sequence, then mean over the
  sequences that have at least one active token: L = -(1/B') sum_i A_i mean_{t in suffix_i} log pi.
  This is the release's loss.
* ``"token-mean"``: mean over all active tokens of the batch (longer sequences weigh more).
* ``"seq-mean-token-sum-norm"`` (Dr.GRPO): the sum over each sequence's active tokens divided by a
  fixed length ``norm_tokens`` (the response cap), then the mean over sequences with an active
  token.

Masked positions receive *exactly* zero gradient: they are removed with ``torch.where`` before any
arithmetic, so even ``-inf`` or NaN log-probabilities on padding cannot leak into the gradient.
"""

from __future__ import annotations

import torch

from srpo.config import AGG_MODES  # one list of modes for the config and the loss

__all__ = [
    "AGG_MODES",
    "POLICY_LOSSES",
    "register_policy_loss",
    "aggregate",
    "masked_pg_loss",
    "reinforce_loss",
    "ppo_clip_loss",
    "critique_shaped_loss",
    "gradient_signal",
    "kl_k3",
]

#: name -> policy loss (``register_policy_loss``)
POLICY_LOSSES: dict = {}


def register_policy_loss(name: str):
    """Decorator: register a policy loss under ``name``."""
    def wrap(fn):
        if name in POLICY_LOSSES:
            raise ValueError(f"policy loss {name!r} is already registered")
        POLICY_LOSSES[name] = fn
        return fn
    return wrap


def _check_2d(name: str, x: torch.Tensor, shape: torch.Size) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)} (B, T); got {tuple(x.shape)}")


def _broadcast_advantages(advantages: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if not isinstance(advantages, torch.Tensor):
        advantages = torch.as_tensor(advantages)
    if advantages.dim() == 1:
        if advantages.shape[0] != shape[0]:
            raise ValueError(
                f"advantages of shape (B,) must have B = {shape[0]}; got {tuple(advantages.shape)}"
            )
        advantages = advantages[:, None].expand(shape)
    elif advantages.shape != shape:
        raise ValueError(
            f"advantages must have shape (B,) or (B, T) = {tuple(shape)}; "
            f"got {tuple(advantages.shape)}"
        )
    return advantages


def aggregate(per_token: torch.Tensor, loss_mask: torch.Tensor, agg: str,
              norm_tokens: int | None = None) -> torch.Tensor:
    """Reduce a (B, T) per-token quantity over its active tokens to a scalar.

    Args:
        per_token: (B, T) float; values at masked positions are ignored (replaced by zero).
        loss_mask: (B, T) {0, 1} (bool, int or float).
        agg: one of ``AGG_MODES``.
        norm_tokens: the fixed length of ``seq-mean-token-sum-norm`` (required there).

    Returns:
        A 0-d tensor; zero (still attached to the graph) when no token is active.
    """
    if agg not in AGG_MODES:
        raise ValueError(f"agg must be one of {AGG_MODES}; got {agg!r}")
    mask = loss_mask.to(torch.bool)
    vals = torch.where(mask, per_token, torch.zeros_like(per_token))
    if agg == "token-mean":
        return vals.sum() / mask.sum().clamp(min=1)
    n_tok = mask.sum(dim=1)
    if agg == "seq-mean-token-sum-norm":
        if norm_tokens is None or norm_tokens < 1:
            raise ValueError(f"agg 'seq-mean-token-sum-norm' needs norm_tokens >= 1; got "
                             f"{norm_tokens!r}")
        seq_mean = vals.sum(dim=1) / float(norm_tokens)
    else:
        seq_mean = vals.sum(dim=1) / n_tok.clamp(min=1)
    active = n_tok > 0
    return (seq_mean * active).sum() / active.sum().clamp(min=1)


def masked_pg_loss(
    logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    old_logprobs: torch.Tensor | None = None,
    clip: float | tuple[float, float] | None = None,
    agg: str = "seq-mean-token-mean",
    return_stats: bool = False,
    norm_tokens: int | None = None,
):
    """Prefix-masked policy-gradient loss (REINFORCE by default, PPO-clip on request).

    Args:
        logprobs: (B, T) float, log pi_theta(y_it | context) of the response tokens, with grad.
        advantages: (B,) per-sequence or (B, T) per-token advantages (no grad is taken).
        loss_mask: (B, T) {0, 1}; 1 = train on this token.
        old_logprobs: (B, T) log-probabilities of the sampling policy; ``None`` = plain REINFORCE
            (no ratio, the paper's default).
        clip: PPO clip epsilon (a float, or (eps_low, eps_high)); only with ``old_logprobs``.
            ``None`` with ``old_logprobs`` given = unclipped importance-weighted loss.
        agg: ``"seq-mean-token-mean"`` (default, the release's loss) or ``"token-mean"``.
        return_stats: also return a dict of floats (``n_active_tokens``, ``n_active_seqs``,
            ``clip_frac``, ``ratio_mean``).
        norm_tokens: the fixed length of ``agg="seq-mean-token-sum-norm"``.

    Returns:
        The scalar loss (0-d tensor), or ``(loss, stats)`` when ``return_stats``.
    """
    if not isinstance(logprobs, torch.Tensor) or logprobs.dim() != 2:
        raise ValueError(
            f"logprobs must be a (B, T) torch.Tensor; got "
            f"{tuple(logprobs.shape) if isinstance(logprobs, torch.Tensor) else type(logprobs)}"
        )
    shape = logprobs.shape
    _check_2d("loss_mask", loss_mask, shape)
    if agg not in AGG_MODES:
        raise ValueError(f"agg must be one of {AGG_MODES}; got {agg!r}")
    if clip is not None and old_logprobs is None:
        raise ValueError("clip needs old_logprobs (the sampling policy's log-probabilities)")
    adv = _broadcast_advantages(advantages, shape).to(logprobs.dtype).to(logprobs.device)
    adv = adv.detach()
    mask = loss_mask.to(torch.bool)
    zeros = torch.zeros_like(logprobs)
    lp = torch.where(mask, logprobs, zeros)  # masked positions cut out of the graph
    adv = torch.where(mask, adv, zeros)

    stats: dict[str, float] = {}
    if old_logprobs is None:
        per_token = -adv * lp
    else:
        _check_2d("old_logprobs", old_logprobs, shape)
        old = torch.where(mask, old_logprobs.detach().to(logprobs.dtype), zeros)
        ratio = torch.exp(lp - old)
        pg = -adv * ratio
        if clip is not None:
            lo, hi = (clip, clip) if isinstance(clip, (int, float)) else clip
            if lo < 0 or hi < 0:
                raise ValueError(f"clip must be non-negative; got {clip!r}")
            pg_clipped = -adv * torch.clamp(ratio, 1.0 - lo, 1.0 + hi)
            per_token = torch.maximum(pg, pg_clipped)
            if return_stats:
                clipped = (pg_clipped > pg) & mask
                stats["clip_frac"] = float(clipped.sum()) / max(int(mask.sum()), 1)
        else:
            per_token = pg
        if return_stats:
            stats["ratio_mean"] = float(ratio.detach()[mask].mean()) if mask.any() else 1.0
    loss = aggregate(per_token, mask, agg, norm_tokens)
    if not return_stats:
        return loss
    stats.setdefault("clip_frac", 0.0)
    stats.setdefault("ratio_mean", 1.0)
    stats["n_active_tokens"] = int(mask.sum())
    stats["n_active_seqs"] = int((mask.sum(dim=1) > 0).sum())
    stats["loss"] = float(loss.detach())
    return loss, stats


@register_policy_loss("reinforce")
def reinforce_loss(logprobs, advantages, loss_mask, agg="seq-mean-token-mean", old_logprobs=None,
                   norm_tokens=None, **_):
    """-A log pi on active tokens (``masked_pg_loss`` without a ratio); returns (loss, stats).

    Shapes: logprobs (B, T) with grad; advantages (B,) or (B, T); loss_mask (B, T).
    ``old_logprobs`` is ignored (REINFORCE is on-policy by construction).
    """
    return masked_pg_loss(logprobs, advantages, loss_mask, agg=agg, return_stats=True,
                          norm_tokens=norm_tokens)


@register_policy_loss("ppo-clip")
def ppo_clip_loss(logprobs, advantages, loss_mask, agg="token-mean", old_logprobs=None,
                  clip=0.2, norm_tokens=None, **_):
    """PPO-clip: max(-A r, -A clip(r, 1 - eps, 1 + eps)), r = exp(log pi - log pi_old).

    Shapes as ``reinforce_loss``; ``old_logprobs`` (B, T) required; ``clip`` eps or (lo, hi).
    """
    if old_logprobs is None:
        raise ValueError("ppo-clip needs old_logprobs")
    return masked_pg_loss(logprobs, advantages, loss_mask, old_logprobs=old_logprobs, clip=clip,
                          agg=agg, return_stats=True, norm_tokens=norm_tokens)


@register_policy_loss("critique-shaped")
def critique_shaped_loss(logprobs, advantages, loss_mask, agg="seq-mean-token-sum-norm",
                         old_logprobs=None, shaped=None, gamma=0.1, norm_tokens=None, **_):
    """Critique-GRPO: -A r on original rows (r = pi / pi_old, no clipping) and -A f(pi),
    f(p) = p / (p + gamma), on shaped rows (refinements, sampled from another prompt).

    Args:
        logprobs: (B, T) log pi with grad. advantages: (B,) or (B, T). loss_mask: (B, T).
        old_logprobs: (B, T) log pi_old (None: r = 1 in value, REINFORCE's gradient).
        shaped: (B,) bool, the rows that get f(pi) (None: none).
        gamma: the shaping constant (release 0.1).
    """
    shape = logprobs.shape
    adv = _broadcast_advantages(advantages, shape).to(logprobs.dtype).to(logprobs.device).detach()
    mask = loss_mask.to(torch.bool)
    zeros = torch.zeros_like(logprobs)
    lp = torch.where(mask, logprobs, zeros)
    adv = torch.where(mask, adv, zeros)
    old = lp.detach() if old_logprobs is None else torch.where(
        mask, old_logprobs.detach().to(logprobs.dtype), zeros)
    ratio = torch.exp(lp - old)
    p = torch.exp(lp)
    rows = torch.zeros(shape[0], dtype=torch.bool, device=logprobs.device)
    if shaped is not None:
        rows = torch.as_tensor(shaped, dtype=torch.bool, device=logprobs.device).reshape(-1)
    per_token = torch.where(rows[:, None], -adv * (p / (p + gamma)), -adv * ratio)
    loss = aggregate(per_token, mask, agg, norm_tokens)
    stats = {"clip_frac": 0.0, "ratio_mean": float(ratio.detach()[mask].mean()) if mask.any()
             else 1.0, "n_active_tokens": int(mask.sum()),
             "n_active_seqs": int((mask.sum(dim=1) > 0).sum()), "loss": float(loss.detach())}
    return loss, stats


@torch.no_grad()
def gradient_signal(
    logprobs: torch.Tensor, advantages: torch.Tensor, loss_mask: torch.Tensor
) -> torch.Tensor:
    """Per-sequence mean per-token gradient signal g_it = (|A_i| / T_i) (1 - pi(y_it)).

    T_i is the number of active tokens of sequence i; (|A|/T)(1 - pi) is the size of the
    gradient of -A mean_t log pi with respect to the chosen token's logit. The paper compares its
    mean over active tokens between reset (suffix) groups and base groups.

    Args:
        logprobs: (B, T) log pi(y_it); advantages: (B,) or (B, T); loss_mask: (B, T).

    Returns:
        (B,) float tensor: mean of g over the active tokens of each sequence; NaN where a
        sequence has no active token.
    """
    shape = logprobs.shape
    _check_2d("loss_mask", loss_mask, shape)
    adv = _broadcast_advantages(advantages, shape).to(logprobs.dtype).to(logprobs.device)
    mask = loss_mask.to(torch.bool)
    n_tok = mask.sum(dim=1)
    zeros = torch.zeros_like(logprobs)
    p = torch.exp(torch.where(mask, logprobs.detach(), zeros))
    g = adv.abs() / n_tok.clamp(min=1)[:, None] * (1.0 - p)
    g = torch.where(mask, g, zeros)
    out = g.sum(dim=1) / n_tok.clamp(min=1)
    return torch.where(n_tok > 0, out, torch.full_like(out, float("nan")))


def kl_k3(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    loss_mask: torch.Tensor,
    agg: str = "seq-mean-token-mean",
) -> torch.Tensor:
    """KL(pi || pi_ref) with the k3 estimator, aggregated over active tokens.

    Per token, with d = log pi_ref - log pi on a token sampled from pi:
    k3 = exp(d) - d - 1 >= 0, unbiased for KL(pi || pi_ref) and low-variance (Schulman 2020).

    Args:
        logprobs: (B, T) log pi (with grad); ref_logprobs: (B, T) log pi_ref (no grad);
        loss_mask: (B, T) {0, 1}; agg: one of ``AGG_MODES``.

    Returns:
        0-d tensor, differentiable with respect to ``logprobs``.
    """
    shape = logprobs.shape
    _check_2d("ref_logprobs", ref_logprobs, shape)
    _check_2d("loss_mask", loss_mask, shape)
    mask = loss_mask.to(torch.bool)
    zeros = torch.zeros_like(logprobs)
    d = torch.where(mask, ref_logprobs.detach().to(logprobs.dtype), zeros) - torch.where(
        mask, logprobs, zeros
    )
    d = d.clamp(-20.0, 20.0)
    return aggregate(torch.exp(d) - d - 1.0, mask, agg)
