"""Metric columns of an RL run and the per-iteration reductions that produce them.

One row per (run, iteration), columns shared with the ``cpi`` simulation where the meanings
coincide (``iteration``, ``method``, ``seed``, ``rollouts``, ``J``, ``reset_rate`` ...). Row 0 is the
policy before any update (only the evaluation and zero counters are filled in).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["METRIC_COLUMNS", "RESET_COLUMNS", "reset_metrics", "nanmean", "pass_at_k"]

#: Required columns of ``metrics.parquet``, in order (extra diagnostic columns follow them).
METRIC_COLUMNS = (
    "iteration",  # 0 = before training; i = after the i-th policy update
    "method",  # grpo | rrpo | srpo | oracle
    "seed",
    "rollouts",  # cumulative training rollouts (prompts x rollouts_per_prompt)
    "generated_tokens",  # cumulative generated tokens, ALL of them (discarded, localization ...)
    "pass_rate",  # mean reward of this iteration's first-round fresh chains (on-policy, train)
    "eval_pass_rate",  # greedy pass@1 on the fixed held-out set (NaN when not evaluated)
    "J",  # = eval_pass_rate: the value of the policy, as in cpi
    "reset_rate",  # fraction of this iteration's prompts with at least one reset
    "reset_step",  # mean reset step k over this iteration's reset events
    "reset_rel_pos",  # mean k / n
    "deviation",  # mean k - first_error (needs a step verifier)
    "clean_prefix_rate",  # fraction of reset events with deviation <= 0
    "suffix_pass_at_k",  # fraction of reset events with at least one correct suffix
    "suffix_success",  # mean reward of suffix rollouts
    "localization_fallbacks",  # localizer fallbacks this iteration (unparseable replies etc.)
    "grad_signal_reset",  # mean over reset rollouts of mean_t (|A|/T)(1 - pi(y_t))
    "grad_signal_base",  # the same over base / GRPO rollouts
    "loss",  # the policy-gradient loss (plus kl_coef * kl)
    "kl",  # k3 KL to the initial policy on active tokens (0 when kl_coef = 0)
    "wall_time",  # cumulative seconds of this run (resumes included)
)

#: Columns of ``resets.parquet`` (one row per reset parent).
RESET_COLUMNS = (
    "method",
    "seed",
    "iteration",
    "prompt_index",
    "n",
    "k",
    "source",  # how k was chosen (srpo.localize.SOURCES)
    "fallback",  # k came from a fallback of the localizer (counted in localization_fallbacks)
    "raw_k",  # the integer the localizer stated (None if none)
    "first_error",
    "deviation",
    "clean",
    "prefix_tokens",
    "n_suffixes",
    "suffix_successes",
    "suffix_pass_at_k",
    "prefix_split",  # a token straddling the cut delimiter was split (srpo.boundaries)
    "prefix_exact",  # the prefix decodes to exactly thoughts 1..k-1
)


def nanmean(values: Sequence[float]) -> float:
    """Mean of the finite values; NaN when there are none."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return float(np.mean(vals)) if vals else float("nan")


def reset_metrics(events) -> dict[str, float]:
    """Per-iteration reset statistics from a list of ``srpo.buffers.ResetEvent``.

    Returns NaN for every statistic when there is no event (and for the verifier-based ones when
    no event has a known first error).
    """
    with_fe = [e for e in events if e.deviation is not None]
    clean = [e for e in with_fe if e.clean]
    dirty = [e for e in with_fe if not e.clean]
    return {
        "reset_step": nanmean([e.k for e in events]),
        "reset_rel_pos": nanmean([e.k / e.n for e in events]),
        "deviation": nanmean([e.deviation for e in with_fe]),
        "clean_prefix_rate": nanmean([float(e.clean) for e in with_fe]),
        "suffix_pass_at_k": nanmean([e.suffix_pass_at_k for e in events]),
        "suffix_success": nanmean([r for e in events for r in e.suffix_rewards]),
        "suffix_pass_at_k_clean": nanmean([e.suffix_pass_at_k for e in clean]),
        "suffix_pass_at_k_erroneous": nanmean([e.suffix_pass_at_k for e in dirty]),
        "reset_events": len(events),
    }


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    The probability that k samples drawn without replacement from the n contain a correct one
    (Chen et al. 2021); computed as a running product, stable for large n.

    Raises:
        ValueError: unless 0 <= c <= n and 1 <= k <= n.
    """
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss
