"""The language-model side of the branch-rule study: every rule as a localizer on the same failed
chains of the warm-started tiny model (``experiments/branch_rules.py lm``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

LM_RULES = (
    ("srpo", "self"),
    ("rrpo", "random"),
    ("entropy-reset", "entropy"),
    ("fixed-reset", "fixed"),
    ("oracle", "oracle"),
)


def lm_rows(seed: int, n_problems: int, cache_dir: str | None = None) -> pd.DataFrame:
    """Every rule as a localizer on the same failed chains of the warm-started tiny model (one
    chain per problem), one reset row per (rule, parent) in ``srpo.metrics.RESET_COLUMNS``."""
    import torch

    from srpo.config import TrainConfig
    from srpo.localize import ParentView
    from srpo.methods import TaskScorer, TokenizerCodec, get_method
    from srpo.setup import (
        build_engine,
        build_task,
        entropy_function,
        load_policy,
        make_localizer_for,
        set_determinism,
    )

    config = TrainConfig(method="srpo", seed=seed, cache_dir=cache_dir, out_dir="unused")
    set_determinism(config)
    model, tok, path = load_policy(config)
    task, _, _ = build_task(config)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    engine, _ = build_engine(config, model, tok, path, trainable)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    problems = task.sample(n_problems, rng)
    codec, scorer = TokenizerCodec(tok, task, engine.config.delimiter), TaskScorer(task)
    prompts = [codec.prompt_ids(p) for p in problems]
    chains = [g[0] for g in engine.generate(prompts, 1, generator)]
    parents = [
        (i, p, c)
        for i, (p, c) in enumerate(zip(problems, chains))
        if not scorer.score(p, c).correct and c.spans
    ]
    views = [
        ParentView(
            p, codec.question(p), codec.thoughts(c), prompts[i], list(c.response_ids), list(c.spans)
        )
        for i, p, c in parents
    ]
    entropy = entropy_function(model, tok, config)
    rows = []
    for method, _ in LM_RULES:
        cfg = TrainConfig(method=method, seed=seed, cache_dir=cache_dir, out_dir="unused")
        loc = make_localizer_for(cfg, get_method(method), task, engine, tok, entropy)
        for (i, p, c), view, res in zip(
            parents, views, loc.locate(views, rng, generator=generator)
        ):
            n = len(c.spans)
            k = min(max(res.k, 1), n)
            fe = task.first_error(p, view.thoughts)
            dev = None if fe is None else k - int(fe)
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    "iteration": 0,
                    "prompt_index": i,
                    "n": n,
                    "k": k,
                    "source": res.source,
                    "fallback": res.is_fallback,
                    "raw_k": res.raw,
                    "first_error": fe,
                    "deviation": dev,
                    "clean": None if dev is None else dev <= 0,
                    "prefix_tokens": 0,
                    "n_suffixes": 0,
                    "suffix_successes": 0,
                    "suffix_pass_at_k": float("nan"),
                }
            )
    engine.close()
    return pd.DataFrame(rows)


def lm_summary(resets: pd.DataFrame) -> dict:
    """Each rule's (1 - beta, gamma), p and the theory's verdict (``selector_quality``)."""
    from experiments.comparison import stats as st
    from experiments.comparison.schema import map_llm_resets

    mapped = map_llm_resets(resets)
    out = {}
    for method, canonical in LM_RULES:
        q = st.selector_quality(mapped, canonical)
        out[method] = {
            "rule": canonical,
            "parents": q.n_parents,
            "precision": q.precision.value,
            "precision_ci95": [q.precision.lo, q.precision.hi],
            "recall": q.recall.value,
            "recall_ci95": [q.recall.lo, q.recall.hi],
            "product": q.product.value,
            "p": q.coverage.value,
            "p_ci95": [q.coverage.lo, q.coverage.hi],
            "margin": q.margin.value,
            "margin_ci95": [q.margin.lo, q.margin.hi],
            # the theory's verdict with the margin's interval: beats / loses / undecided
            "predicted_vs_random": (
                "beats" if q.margin.lo > 0 else "loses" if q.margin.hi < 0 else "undecided"
            ),
        }
    return out
