"""Coverage p of the warm-started policy at each setting, both readings, before any RL.

Two readings of the theory's coverage p (THEORY.md §1; docs/compare.md):

* **state reading** (docs/compare.md, the one the phase map uses): over failed chains with a known
  first error f_i and n_i thoughts, ``p_state = sum_i min(f_i, n_i) / sum_i n_i``, the share of a
  failed chain's reset positions k = 1..n that lie at or before its first error (the clean-prefix
  set G). Measured on sampled chains (``p_state``, bootstrap over chains) and computed from the
  policy's step probabilities (``p_state_model``, below).
* **trajectory reading** (THEORY.md's ``p_reach`` / ``p_mass``) over all on-policy chains, with
  G = G_tau the prefix states whose best next step has advantage >= tau. On this task a state is a
  prompt plus a prefix of thoughts; after a wrong step the final answer is wrong (``+``/``-`` are
  bijections mod m; only a multiplication after an error can map it back, rare), so only clean
  prefixes can be improvable, and the best next step is the correct one. With ``q_k`` the
  probability that the policy writes step k correctly after a correct prefix,
  ``max_y A(prefix_{k-1}, y) = (1 - q_k) prod_{i > k} q_i`` and the prefix is reached with
  probability ``prod_{i < k} q_i``. Hence ``p_reach = E[prod_{i < k*} q_i]`` (k* the first
  improvable position of the problem; 0 if none) and ``p_mass = E[(1/H) sum_{k in G} prod_{i<k} q_i]``.

``q_k`` is computed exactly for the sampling distribution (temperature and top-p nucleus as in
``srpo.rollout.sample_from_logits``) by teacher-forcing the correct solution: one forward pass
per problem, no sampling. The same q's give the model's pass rate ``prod_k q_k``, the first-error
distribution and ``p_state_model``; agreement with the sampled ``p_state`` checks both.

The self-localizer's place on the phase map before RL (precision 1 - beta, recall gamma, their
product and the margin (1 - beta) gamma - p) is measured on the same sampled failed chains with
``experiments.comparison.stats.selector_quality`` (the definitions of docs/compare.md).
"""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pandas as pd
import torch

from experiments.comparison import stats as st

__all__ = ["step_probabilities", "readings_from_q", "sample_chains", "measure_setting", "TAU"]

#: improvability threshold of the trajectory reading (the sweep's coverage family uses 0.1)
TAU = 0.1


def _solution_ids(tokenizer, task, problem) -> tuple[list[int], list[int]]:
    """Token ids of the correct solution and the thought index (0-based) of each token."""
    thoughts = task.reference_solution(problem, 0.0, np.random.default_rng(0))
    ids, owner = [], []
    for index, text in enumerate(thoughts):
        t = tokenizer.encode(text, add_special_tokens=False)
        ids += t
        owner += [index] * len(t)
    return ids, owner


@torch.no_grad()
def step_probabilities(model, tokenizer, task, problems, temperature: float = 0.7,
                       top_p: float = 0.95, batch_size: int = 64) -> np.ndarray:
    """``q[i, k]``: probability that the policy samples step k+1 of problem i exactly as the
    correct thought, given the prompt and the correct steps before it.

    Each token's probability is that of ``srpo.rollout.sample_from_logits``: softmax of
    logits / temperature restricted to the top-p nucleus and renormalised (0 outside it).

    Returns:
        (N, H) float array in [0, 1].
    """
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id or 0
    H = task.n_steps
    out = np.zeros((len(problems), H))
    for start in range(0, len(problems), batch_size):
        chunk = problems[start:start + batch_size]
        prompts = [tokenizer.encode(task.prompt(p)) for p in chunk]
        sols = [_solution_ids(tokenizer, task, p) for p in chunk]
        seqs = [pr + s for pr, (s, _o) in zip(prompts, sols)]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        pos = torch.arange(width).unsqueeze(0).expand(len(seqs), -1)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                       position_ids=pos.to(device), use_cache=False).logits.float().cpu()
        for i, (prompt, (sol, owner)) in enumerate(zip(prompts, sols)):
            rows = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(sol))
            probs = torch.softmax(logits[i, rows] / temperature, dim=-1)
            if top_p < 1.0:
                sorted_p, order = probs.sort(dim=-1, descending=True)
                drop_sorted = (sorted_p.cumsum(-1) - sorted_p) >= top_p
                drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
                probs = probs.masked_fill(drop, 0.0)
                probs = probs / probs.sum(-1, keepdim=True)
            tok = probs.gather(-1, torch.tensor(sol).unsqueeze(-1)).squeeze(-1).double()
            logq = np.zeros(H)
            np.add.at(logq, np.asarray(owner), np.log(np.clip(tok.numpy(), 1e-300, None)))
            out[start + i] = np.exp(logq)
    return out


def readings_from_q(q: np.ndarray, tau: float = TAU) -> dict[str, np.ndarray]:
    """Per-problem quantities from step probabilities ``q`` (N, H); see the module docstring.

    Returns arrays of shape (N,): ``pass`` (prod q), ``fail``, ``f_sum`` (E[f 1{fail}]),
    ``reach`` (P(the trajectory visits G_tau)), ``mass`` ((1/H) sum_h d_h(G_tau)), ``in_G``
    (whether the problem has an improvable prefix); and ``first_error`` (N, H): P(f = k).
    """
    q = np.clip(np.asarray(q, float), 0.0, 1.0)
    n, H = q.shape
    before = np.concatenate([np.ones((n, 1)), np.cumprod(q, axis=1)[:, :-1]], axis=1)  # prod_{i<k}
    after = np.concatenate([np.cumprod(q[:, ::-1], axis=1)[:, ::-1][:, 1:], np.ones((n, 1))],
                           axis=1)                                                  # prod_{i>k}
    first_error = before * (1.0 - q)
    adv = (1.0 - q) * after
    G = adv >= tau
    k_first = np.where(G.any(axis=1), G.argmax(axis=1), -1)
    reach = np.where(k_first >= 0, before[np.arange(n), np.maximum(k_first, 0)], 0.0)
    mass = (before * G).sum(axis=1) / H
    ks = np.arange(1, H + 1)
    return {"pass": np.prod(q, axis=1), "fail": first_error.sum(axis=1),
            "f_sum": (first_error * ks).sum(axis=1), "reach": reach, "mass": mass,
            "in_G": G.any(axis=1).astype(float), "first_error": first_error, "max_adv": adv}


def _boot_mean(x: np.ndarray, n_boot: int, seed: int) -> st.Estimate:
    return st.ratio_of_sums(np.asarray(x, float), np.ones(len(x)), n_boot, seed)


def model_readings(q: np.ndarray, tau: float = TAU, n_boot: int = 1000, seed: int = 0) -> dict:
    """The trajectory reading and the model-computed state reading, bootstrap over problems."""
    r = readings_from_q(q, tau)
    H = q.shape[1]
    return {
        "p_reach": _boot_mean(r["reach"], n_boot, seed),
        "p_mass": _boot_mean(r["mass"], n_boot, seed),
        "p_state_model": st.ratio_of_sums(r["f_sum"], H * r["fail"], n_boot, seed),
        "pass_rate_model": _boot_mean(r["pass"], n_boot, seed),
        "share_with_G": _boot_mean(r["in_G"], n_boot, seed),
        "step_error": (1.0 - q).mean(axis=0).tolist(),
        "first_error_dist": (r["first_error"].sum(axis=0) / max(r["fail"].sum(), 1e-12)).tolist(),
        "tau": tau,
    }


def sample_chains(model, tokenizer, task, problems, n_per_problem: int, seed: int,
                  max_thoughts: int, max_thought_tokens: int = 24, temperature: float = 0.7,
                  top_p: float = 0.95) -> pd.DataFrame:
    """On-policy chains graded with the step verifier: one row per chain with ``problem``,
    ``reward``, ``n`` (thoughts), ``first_error`` (NaN if none) and the thought texts."""
    from srpo.rollout import GenerationConfig, RolloutEngine
    from srpo.thoughts import thought_texts

    engine = RolloutEngine(model, tokenizer, GenerationConfig(
        temperature=temperature, top_p=top_p, max_thoughts=max_thoughts,
        max_thought_tokens=max_thought_tokens))
    gen = torch.Generator().manual_seed(int(seed))
    prompts = [tokenizer.encode(task.prompt(p)) for p in problems]
    rows = []
    for i, (p, group) in enumerate(zip(problems, engine.generate(prompts, n_per_problem, gen))):
        for chain in group:
            thoughts = thought_texts(tokenizer, chain.response_ids, chain.spans)
            fe = task.first_error(p, thoughts)
            rows.append({"problem": i, "reward": task.grade(p, chain.text), "n": len(thoughts),
                         "first_error": np.nan if fe is None else float(fe),
                         "n_generated": chain.n_generated, "thoughts": thoughts})
    return pd.DataFrame(rows)


def self_localize(model, tokenizer, task, problems, chains: pd.DataFrame, seed: int,
                  temperature: float = 0.3, max_new_tokens: int = 12) -> pd.DataFrame:
    """The policy localizes the first error of each failed chain (``srpo.localize``).

    Returns the failed chains as reset-event rows (``method="self"``, ``k``, ``from_fallback``,
    ``clean``) for :func:`experiments.comparison.stats.selector_quality`.
    """
    from srpo.localize import ParentView, SelfLocalizer
    from srpo.rollout import GenerationConfig, RolloutEngine

    failed = chains[(chains["reward"] < 0.5) & chains["first_error"].notna()
                    & (chains["n"] > 0)].reset_index(drop=True)
    if failed.empty:
        return failed.assign(method="self", k=[], from_fallback=[], clean=[])
    engine = RolloutEngine(model, tokenizer, GenerationConfig())
    loc = SelfLocalizer(engine, tokenizer, max_new_tokens=max_new_tokens, temperature=temperature)
    parents = [ParentView(problems[int(r.problem)], task.prompt(problems[int(r.problem)]),
                          list(r.thoughts)) for r in failed.itertuples()]
    gen = torch.Generator().manual_seed(int(seed) + 1)
    results = loc.locate(parents, np.random.default_rng(seed), generator=gen)
    out = failed.assign(method="self", k=[float(r.k) for r in results],
                        from_fallback=[r.is_fallback for r in results])
    out["clean"] = (out["k"] - out["first_error"]) <= 0
    return out


def measure_setting(model, tokenizer, task, *, position: int, n_model: int, n_sampled: int,
                    n_per_problem: int, seed: int, max_thoughts: int,
                    n_boot: int = 1000) -> tuple[dict, pd.DataFrame]:
    """Both readings of p and the self-localizer's (beta, gamma) at one setting.

    Args:
        task: the setting's task (hard step at ``position``).
        n_model: problems for the teacher-forced step probabilities.
        n_sampled, n_per_problem: problems and chains per problem for the sampled reading.
        seed: seeds the problems (separate from training and evaluation streams) and sampling.

    Returns:
        ``(record, chains)``: a JSON-able record (estimates as {value, lo, hi, n}) and one row
        per sampled chain (with the localizer's answer on failed ones).
    """
    rng = np.random.default_rng([seed, 2718, position])
    problems = task.sample(max(n_model, n_sampled), rng)
    q = step_probabilities(model, tokenizer, task, problems[:n_model])
    rec = model_readings(q, n_boot=n_boot, seed=seed)
    rec["hard_step_error_model"] = float((1.0 - q[:, position - 1]).mean())
    easy = np.delete(1.0 - q, position - 1, axis=1)
    rec["easy_step_error_model"] = float(easy.mean()) if easy.size else math.nan

    chains = sample_chains(model, tokenizer, task, problems[:n_sampled], n_per_problem,
                           seed=seed * 1000 + position, max_thoughts=max_thoughts)
    failed = chains[(chains["reward"] < 0.5) & chains["first_error"].notna() & (chains["n"] > 0)]
    g = np.minimum(failed["first_error"].to_numpy(float), failed["n"].to_numpy(float))
    rec["p_state"] = st.ratio_of_sums(g, failed["n"].to_numpy(float), n_boot, seed)
    rec["pass_rate_sampled"] = st.wilson(float(chains["reward"].sum()), float(len(chains)))
    rec["failed_chains"] = int(len(failed))
    fe = failed["first_error"].to_numpy(float)
    rec["first_error_at_hard_step"] = st.wilson(float((fe == position).sum()), float(len(fe)))
    rec["first_error_before_hard_step"] = st.wilson(float((fe < position).sum()), float(len(fe)))

    located = self_localize(model, tokenizer, task, problems, chains, seed=seed + position)
    quality = st.selector_quality(located, "self", n_boot=n_boot, seed=seed)
    rec["self_localizer"] = {f.name: getattr(quality, f.name) for f in fields(quality)
                             if f.name != "method"}
    return rec, _chain_rows(chains, located, position)


def _chain_rows(chains: pd.DataFrame, located: pd.DataFrame, position: int) -> pd.DataFrame:
    """Tidy per-chain table (thought texts dropped) with the localizer's k on failed chains."""
    out = chains.drop(columns=["thoughts"]).copy()
    out["k_self"] = np.nan
    out["self_fallback"] = pd.array([pd.NA] * len(out), dtype="boolean")
    if len(located):
        # ``located`` rows are the failed chains in their order in ``chains``
        idx = chains.index[(chains["reward"] < 0.5) & chains["first_error"].notna()
                           & (chains["n"] > 0)]
        out.loc[idx, "k_self"] = located["k"].to_numpy()
        out.loc[idx, "self_fallback"] = located["from_fallback"].to_numpy()
    out.insert(0, "hard_step", position)
    return out
