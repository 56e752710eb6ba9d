"""Predictions for issue 16's measurements, computed from the constructions before any sampling.

Everything here is exact (dynamic programming on the instances, no random draw): the signal each
estimator must resolve, the per-term variance (:mod:`experiments.sweep.moments`) and, from them,
the normal-approximation sample size ``z^2 Var / tol^2`` of each accuracy criterion:

* **theorem's criterion** (the primary P2 measurement): ``tol = c tau p`` for CPI-RR,
  ``c tau`` for CPI-CARO, the same c;
* **relative criterion** (secondary, practical): ``tol = eps |A|``, A the method's own target.

Predicted quantities (slopes are log-log, of seed means, against the mean realised p_mass, as the
sweep fits them):

* ``direct``: the ratio n_RR / n_CARO vs p on each family's default grid, both criteria;
  ``direct_tau``: each method's n vs tau under the theorem's criterion;
* ``knobs``: the same ratio slopes for every value of each family's knob
  (:data:`experiments.sweep.families.KNOBS`), plus the *signal-only* slope
  ``-2 d log(A_RR / A_CARO) / d log p`` (per-term variance taken constant), which is what the
  construction's knob sets before any variance enters;
* ``theorem_h6``: totals of the theorem's algorithms to the common target at H = 6 (the
  ``theorem_algorithms`` p_h6 sweep), by composing, at the *initial* policy, iterations
  Delta / (H m alpha A) with alpha = (A - eps/3) / (4 (H-1) c_A) and 2 z^2 Var / (eps/3)^2
  Q-rollouts per iteration (chooser + estimate). It ignores how the policy, G and the variance
  move during the run and the doubling of the per-iteration sample size.

``python experiments/sweep/predict_p2.py`` writes ``figures/direct_prediction.json`` (committed
before the runs that test it; the ``direct`` and ``theorem_algorithms`` analyses read it back).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm

REPO = Path(__file__).resolve().parents[2]
if __name__ == "__main__" and str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cpi.algorithm import optimal_value  # noqa: E402
from cpi.envs import initial_policy  # noqa: E402
from cpi.evaluation import value  # noqa: E402
from cpi.step_rules import advantage_bound  # noqa: E402
from cpi.theorem import theorem_eps  # noqa: E402
from experiments.sweep.families import DEFAULTS, KNOBS, build, exact_problem  # noqa: E402
from experiments.sweep.moments import normal_n, term_moments  # noqa: E402

PREDICTION_FILE = REPO / "figures" / "direct_prediction.json"
SEEDS = tuple(range(5))


def _point(
    fam: str, x: float, tau: float, seed: int, eps: float, c: float, delta: float, **over
) -> dict:
    """p_mass and, per method, the exact signal, variance and both criteria's normal n."""
    mdp = build(fam, x, tau, seed, **over)
    prob = exact_problem(mdp, tau)
    out = {"p": prob.p_mass}
    for m in ("random", "oracle"):
        w = prob.weights(m)
        a, var = term_moments(mdp, prob.policy, prob.coef, w)
        tol_th = c * tau * (prob.p_mass if m == "random" else 1.0)
        out[m] = {
            "a": a,
            "var": var,
            "n_rel": normal_n(var, eps * abs(a), delta),
            "n_th": normal_n(var, tol_th, delta),
        }
    return out


def _slope(x, y) -> float:
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def _p_curve(fam: str, xs, tau: float, eps: float, c: float, delta: float, **over) -> dict:
    """Seed-mean curves over a p (lock: depth) grid and their ratio slopes."""
    pts = [[_point(fam, x, tau, s, eps, c, delta, **over) for s in SEEDS] for x in xs]
    p = [np.mean([q["p"] for q in col]) for col in pts]

    def mean(m, k):
        return np.array([np.mean([q[m][k] for q in col]) for col in pts])

    return {
        "p": [float(v) for v in p],
        "theorem": _slope(p, mean("random", "n_th") / mean("oracle", "n_th")),
        "relative": _slope(p, mean("random", "n_rel") / mean("oracle", "n_rel")),
        "signal_only": -2.0 * _slope(p, mean("random", "a") / mean("oracle", "a")),
        "rr_theorem": _slope(p, mean("random", "n_th")),
        "caro_theorem": _slope(p, mean("oracle", "n_th")),
        "variance_ratio": _slope(p, mean("random", "var") / mean("oracle", "var")),
    }


def predict_direct() -> dict:
    """Ratio slopes on the default grids, the tau slopes and the knob curves (module doc)."""
    from experiments.sweep import exp_direct as ed

    eps, c, delta = ed.EPS, ed.C_THEOREM, ed.DELTA
    out: dict = {"direct": {}, "direct_tau": {}, "knobs": {}}
    for fam in ("coverage", "shifted", "planted", "lock"):
        xs = ed.DEPTHS["default"] if fam == "lock" else ed.PS["default"]
        out["direct"][fam] = _p_curve(fam, xs, ed.TAU, eps, c, delta)
        x0 = 2 if fam == "lock" else ed.P_TAU_SWEEP
        taus = ed.TAUS["default"]
        pts = [[_point(fam, x0, t, s, eps, c, delta) for s in SEEDS] for t in taus]
        out["direct_tau"][fam] = {
            m: _slope(taus, [np.mean([q[m]["n_th"] for q in col]) for col in pts])
            for m in ("random", "oracle")
        }
    for fam, (knob, values, _default) in KNOBS.items():
        xs = ed.KNOB_DEPTHS["default"] if fam == "lock" else ed.KNOB_PS["default"]
        curve = {}
        for v in values:
            curve[str(v)] = _p_curve(fam, xs, ed.TAU, eps, c, delta, **{knob: v})
        if fam == "lock":  # the default coupling: H fixed at 6
            curve["H=6"] = _p_curve(fam, xs, ed.TAU, eps, c, delta)
        out["knobs"][fam] = {"knob": knob, "curve": curve}
    return out


def _total(mdp, tau: float, method: str, delta_J: float, delta: float) -> float:
    """Frozen-pi_0 composition of the theorem algorithm's total Q-rollouts to gain delta_J."""
    prob = exact_problem(mdp, tau)
    w = prob.weights(method)
    m_s = float(w.sum())
    a, var = term_moments(mdp, prob.policy, prob.coef, w)
    eps = theorem_eps(method, tau, prob.p_mass)
    H = mdp.horizon
    alpha = (a - eps / 3.0) / (4.0 * (H - 1) * advantage_bound(mdp))
    iterations = delta_J / (H * m_s * alpha * a)
    per_iteration = 2.0 * norm.ppf(1.0 - delta / 2.0) ** 2 * var / (eps / 3.0) ** 2
    return float(iterations * per_iteration)


def predict_theorem_h6() -> dict:
    """Predicted slopes of the H = 6 theorem runs (module doc), per family."""
    from experiments.sweep import exp_theorem as et

    out = {}
    for fam in et.H6_FAMILIES:
        ps, rr, caro = [], [], []
        for p in et.PS_H6["default"]:
            t_rr, t_caro, pm = [], [], []
            for s in SEEDS:
                mdp = build(fam, p, et.TAU, s)
                J0 = value(mdp, initial_policy(mdp))
                dJ = et.TARGET_H6 * (optimal_value(mdp) - J0)
                t_rr.append(_total(mdp, et.TAU, "random", dJ, et.DELTA))
                t_caro.append(_total(mdp, et.TAU, "oracle", dJ, et.DELTA))
                pm.append(exact_problem(mdp, et.TAU).p_mass)
            ps.append(np.mean(pm))
            rr.append(np.mean(t_rr))
            caro.append(np.mean(t_caro))
        out[fam] = {
            "p": [float(v) for v in ps],
            "ratio": _slope(ps, np.divide(rr, caro)),
            "rr": _slope(ps, rr),
            "caro": _slope(ps, caro),
        }
    return out


def predict_all() -> dict:
    return {
        "settings": {"seeds": list(SEEDS), "families": DEFAULTS},
        **predict_direct(),
        "theorem_h6": predict_theorem_h6(),
    }


def load_prediction() -> dict:
    """The committed predictions ({} when the file is absent)."""
    if PREDICTION_FILE.exists():
        return json.loads(PREDICTION_FILE.read_text())
    return {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=PREDICTION_FILE)
    args = ap.parse_args(argv)
    pred = predict_all()
    args.out.write_text(json.dumps(pred, indent=1, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
