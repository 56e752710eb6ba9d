"""The simulation side of the branch-rule study: cases, policies, the prediction and the test.

See ``experiments/branch_rules.py`` for what is measured and why.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

SETTINGS = ((6, 0.7, 0.0), (6, 0.7, 0.1), (8, 0.8, 0.0), (8, 0.8, 0.1))
KINDS = ("initial", "informative", "noisy")
SEEDS = (0, 1, 2)
N_ACTIONS = 4


# ------------------------------------------------------------------------------------------------
# The simulation side
# ------------------------------------------------------------------------------------------------


def make_policy(mdp, kind: str, seed: int) -> np.ndarray:
    """The policy of a case (module docstring): ``initial``, ``informative`` or ``noisy``."""
    from cpi.envs import initial_policy

    pol = initial_policy(mdp).copy()
    rng = np.random.default_rng(1000 + seed)
    internal = ~mdp.is_leaf
    if kind == "informative":
        correct = mdp.meta["correct"]
        q = mdp.meta["p_correct"]
        # q_n = 1 - (1 - q) * 2 * B, B ~ Beta(1, 2): mean q, some nodes far less sure
        qn = 1.0 - (1.0 - q) * 2.0 * rng.beta(1.0, 2.0, size=mdp.n_nodes)
        qn = np.clip(qn, 0.05, 0.999)[:, None]
        pol = np.where(correct, qn, (1.0 - qn) / (N_ACTIONS - 1))
    elif kind == "noisy":
        logits = np.log(pol) + rng.normal(size=pol.shape)
        pol = np.exp(logits - logits.max(axis=1, keepdims=True))
    elif kind != "initial":
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    pol = pol / pol.sum(axis=1, keepdims=True)
    pol[~internal] = 1.0 / N_ACTIONS
    return pol


def rules_of(horizon: int) -> list[tuple[str, str, int | None]]:
    """``(label, rule, depth)``: entropy, and fixed at depths 1, H/2, H - 1."""
    return [("entropy", "entropy", None)] + [
        (f"fixed@{d}", "fixed", d) for d in (1, horizon // 2, horizon - 1)
    ]


def cases():
    for h, q, r in SETTINGS:
        for kind in KINDS:
            for seed in SEEDS:
                yield {"horizon": h, "p_correct": q, "recover": r, "kind": kind, "seed": seed}


def _tree(case):
    from cpi.envs import first_error_tree

    return first_error_tree(
        horizon=case["horizon"],
        n_actions=N_ACTIONS,
        n_correct=1,
        recover=case["recover"],
        p_correct=case["p_correct"],
        seed=case["seed"],
    )


def predict_rows() -> pd.DataFrame:
    """Each rule's precision, recall and p per case, and the theory's verdict."""
    from cpi.selectors import branch_quality

    rows = []
    for case in cases():
        mdp = _tree(case)
        pol = make_policy(mdp, case["kind"], case["seed"])
        fail = mdp.is_leaf & (mdp.meta["first_error_step"] > 0)
        clean = mdp.meta["on_track"]
        for label, rule, depth in rules_of(case["horizon"]):
            q = branch_quality(mdp, pol, rule, clean, fail, depth)
            rows.append(
                {
                    **case,
                    "rule": label,
                    "precision": q.precision,
                    "recall": q.recall,
                    "p": q.p,
                    "predicted_beats_random": bool(q.beats_random_predicted),
                }
            )
    return pd.DataFrame(rows)


def exact_step(mdp, pol, s, step: str = "theory") -> float:
    """J after - J before of one exact CPI iteration updating with acceptance ``s`` (N,)."""
    from cpi.evaluation import advantage, evaluate, greedy_policy, value
    from cpi.selectors import reset_distribution
    from cpi.step_rules import advantage_bound, line_search, theory_step

    V, Q = evaluate(mdp, pol)
    target = greedy_policy(mdp, Q)
    d = reset_distribution(mdp, pol)
    gain = (advantage(mdp, pol, V, Q) * target).sum(axis=1)
    w = d * s
    adv_u = float((w * gain).sum() / w.sum()) if w.sum() > 0 else 0.0

    def mixed(a):
        return pol * (1 - a * s[:, None]) + target * (a * s[:, None])

    if step == "theory":
        alpha = theory_step(adv_u, mdp.horizon, advantage_bound(mdp))
    else:
        alpha, _ = line_search(lambda a: value(mdp, mixed(a)))
    return float(value(mdp, mixed(alpha)) - value(mdp, pol))


def test_rows(prediction: pd.DataFrame) -> pd.DataFrame:
    """Improvement of each rule and of random resets on the failed trajectories, per case."""
    from cpi.selectors import branch_distribution, reset_distribution, selection_from

    out = []
    for case in cases():
        mdp = _tree(case)
        pol = make_policy(mdp, case["kind"], case["seed"])
        fail = mdp.is_leaf & (mdp.meta["first_error_step"] > 0)
        d = reset_distribution(mdp, pol)
        clean = mdp.meta["on_track"] & ~mdp.is_leaf
        base, rr = {}, {}
        for step in ("theory", "line_search"):
            nu = branch_distribution(mdp, pol, "random", fail)
            base[step] = exact_step(mdp, pol, selection_from(nu, d).s, step)
            rr[step] = exact_step(mdp, pol, np.ones(mdp.n_nodes), step)  # CPI-RR: s = 1
        for label, rule, depth in rules_of(case["horizon"]):
            nu = branch_distribution(mdp, pol, rule, fail, depth)
            sel = selection_from(nu, d, clean)
            row = {
                **case,
                "rule": label,
                # secondary, post hoc (not in the committed prediction): the theorem's own
                # per-visit reading under d, against CPI-RR (uniform resets, s = 1)
                "precision_visit": sel.precision,
                "recall_visit": sel.recall,
                "p_visit": float(d[clean].sum()),
            }
            row["predicted_visit_beats_rr"] = bool(sel.precision * sel.recall > row["p_visit"])
            for step in ("theory", "line_search"):
                imp = exact_step(mdp, pol, sel.s, step)
                row[f"improvement_{step}"] = imp
                row[f"improvement_random_{step}"] = base[step]
                row[f"improvement_rr_{step}"] = rr[step]
                row[f"ratio_vs_random_{step}"] = imp / base[step] if base[step] > 0 else np.nan
            out.append(row)
    test = pd.DataFrame(out)
    keys = ["horizon", "p_correct", "recover", "kind", "seed", "rule"]
    return prediction.merge(test, on=keys)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (mid - half, mid + half)


def verdicts(rows: pd.DataFrame, secondary: bool = False) -> dict:
    """Agreement of the observed winner (theory step; line search secondary) with the
    prediction, overall and by rule and by policy kind, with Wilson intervals. ``secondary``:
    the post-hoc per-visit reading against CPI-RR instead of the committed one."""
    out = {}
    for step in ("theory", "line_search"):
        if secondary:
            predicted = rows["predicted_visit_beats_rr"]
            observed = rows[f"improvement_{step}"] > rows[f"improvement_rr_{step}"]
        else:
            predicted = rows["predicted_beats_random"]
            observed = rows[f"improvement_{step}"] > rows[f"improvement_random_{step}"]
        agree = observed == predicted
        groups = {"all": agree.index}
        for col in ("rule", "kind"):
            for value, sub in rows.groupby(col):
                groups[f"{col}={value}"] = sub.index
        out[step] = {
            name: {
                "agree": int(agree[idx].sum()),
                "cases": int(len(idx)),
                "rate": float(agree[idx].mean()),
                "ci95": list(wilson(int(agree[idx].sum()), len(idx))),
                "predicted_beats": int(predicted[idx].sum()),
                "observed_beats": int(observed[idx].sum()),
            }
            for name, idx in groups.items()
        }
    return out
