"""P2 measured directly: the smallest number of Q-rollouts at which each reset rule's estimator of
the policy advantage is accurate, on four families (the clean one and three where the claim is
not built in), under two accuracy criteria.

For each (family, p or tau, seed) cell and each reset rule (``random`` = CPI-RR, x ~ d;
``oracle`` = CPI-CARO, x ~ d | G; ``approx``: beta 0.3, gamma 0.7), on the family's initial
policy with pi' its exact greedy policy, and the advantage the theorem's step uses (RR:
E_d[A(x, pi'(x))]; CARO: the same conditional on G):

* ``n_theorem`` -- **Theorem 1's criterion (the primary P2 measurement):** the smallest n with
  P(|A_hat_n - A| <= tol) >= 1 - delta, ``tol = c tau p`` for RR, ``c tau`` for CARO and
  ``c (1 - beta) tau`` for the selector (:func:`cpi.theorem.theorem_eps` times c, the same c);
* ``n_direct`` -- **the relative criterion (secondary, practical: "samples to estimate each
  method's own improvement"):** ``tol = eps |A|``. Off G, RR's own target also holds advantage
  the theorem does not count, which makes this criterion easier for RR; the two coincide on
  the clean family (c = 1 = eps x headroom);

each found by growth then bisection with ``reps`` (>= 200) repetitions per n on nested sample
paths (:class:`experiments.sweep.direct.NestedSampler`, all repetitions of one chunk in one
compiled call, :func:`cpi.rollouts.kl_estimates`), with exact Clopper-Pearson intervals on the
success rates at the answer and just below it; ``censored`` when ``n_max`` does not reach the
rate ("not reached"). Second columns: ``n_plugin*`` -- z^2 s^2 / tol^2 from ``n_var`` sampled
terms; ``n_normal*`` -- the same with the *exact* per-term variance
(:mod:`experiments.sweep.moments`); ``env_steps_*`` -- n x the expected environment steps per
sample, roll-ins to every candidate reset state (CARO and approx pay for rejected ones) included.

Sweeps: ``p`` at tau = 0.1 (lock: depth D, p_mass = 2^-D / H); ``tau`` at p = 0.2 (lock: D = 2);
``knob`` -- each non-clean family's knob (:data:`experiments.sweep.families.KNOBS`) at every
value but the default (whose curve is the ``p`` sweep's), over a p grid. Predictions, written
before the runs: docs/sweep.md ("Predictions for the new experiments" and "Issue 16").
Fits: :mod:`experiments.sweep.direct_fits`; figures: :mod:`experiments.sweep.direct_plots`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cpi.envs import shifted_coverage
from cpi.rollouts import kl_estimates
from cpi.theorem import theorem_eps
from experiments.sweep.common import split_seeds
from experiments.sweep.direct import NestedSampler, plug_in_n, smallest_n
from experiments.sweep.families import APPROX, DEFAULTS, FAMILIES, KNOBS, build, exact_problem
from experiments.sweep.moments import normal_n, term_moments
from experiments.sweep.registry import Experiment

EPS = 0.5  # relative accuracy (the secondary, practical criterion)
C_THEOREM = 1.0  # the theorem's criterion: absolute accuracy c tau p (RR), c tau (CARO)
DELTA = 0.1  # failure probability
TAU = 0.1  # tau of the p sweep
P_TAU_SWEEP = 0.2  # p of the tau sweep (lock: depth 2)
METHODS = ("random", "oracle", "approx")
#: Predicted slope of n_RR / n_CARO vs p per family under the relative criterion (docs/sweep.md,
#: committed before the first run, issue 8); issue 16's exact-moment predictions for both
#: criteria are in figures/direct_prediction.json.
PREDICTION = {"coverage": -2.0, "shifted": -0.6, "planted": -1.0, "lock": -0.7}

PS = {
    "tiny": (0.2, 0.4),
    "quick": (0.1, 0.2, 0.4),
    "default": (0.02, 0.05, 0.1, 0.2, 0.4),
    "full": (0.01, 0.02, 0.05, 0.1, 0.2, 0.4),
}
DEPTHS = {
    "tiny": (0, 1),
    "quick": (0, 1, 2),
    "default": (0, 1, 2, 3, 4),
    "full": (0, 1, 2, 3, 4, 5, 6),
}
TAUS = {
    "tiny": (),
    "quick": (0.05, 0.2),
    "default": (0.05, 0.1, 0.2, 0.4),
    "full": (0.025, 0.05, 0.1, 0.2, 0.4),
}
#: Knob sweeps (families.KNOBS): the coverages (lock: depths) of each knob value's p sweep.
KNOB_PS = {
    "tiny": (0.2, 0.4),
    "quick": (0.1, 0.4),
    "default": (0.05, 0.1, 0.2, 0.4),
    "full": (0.02, 0.05, 0.1, 0.2, 0.4),
}
KNOB_DEPTHS = {"tiny": (0, 1), "quick": (0, 2), "default": (0, 1, 2, 3), "full": (0, 1, 2, 3, 4)}
REPS = {"tiny": 200, "quick": 200, "default": 400, "full": 1000}
N_MAX = {"tiny": 20_000, "quick": 100_000, "default": 300_000, "full": 3_000_000}
N_VAR = {"tiny": 4000, "quick": 10_000, "default": 20_000, "full": 100_000}


def _p_max(family: str) -> float:
    if family == "shifted":
        return shifted_coverage(
            0.001,
            **{
                k: v
                for k, v in DEFAULTS["shifted"].items()
                if k in ("n_actions", "horizon", "leak")
            },
        ).meta["p_max"]
    return 0.999


def _knob_values(size: str, family: str) -> tuple:
    """The knob values a size sweeps (the default's curve is the p sweep's): tiny one value of
    the shifted family, quick the two extremes, default and full every value."""
    _, values, default = KNOBS[family]
    values = tuple(v for v in values if v != default)
    if size == "tiny":
        return values[:1] if family == "shifted" else ()
    return (values[0], values[-1]) if size == "quick" else values


def configs(size: str, p_values):
    out = []
    common = {
        "eps": EPS,
        "c": C_THEOREM,
        "delta": DELTA,
        "reps": REPS[size],
        "n_max": N_MAX[size],
        "n_var": N_VAR[size],
    }
    for fam in FAMILIES:
        if fam == "lock":
            xs = [("depth", float(D)) for D in DEPTHS[size]]
        else:
            ps = p_values if p_values is not None else PS[size]
            xs = [("p", float(p)) for p in ps if p <= _p_max(fam)]
        for key, x in xs:
            out.append({"family": fam, "sweep": "p", key: x, "tau": TAU, **common})
        for t in TAUS[size]:
            key, x = ("depth", 2.0) if fam == "lock" else ("p", P_TAU_SWEEP)
            out.append({"family": fam, "sweep": "tau", key: x, "tau": float(t), **common})
    for fam, (knob, _values, _default) in KNOBS.items():
        grid = (
            [("depth", float(D)) for D in KNOB_DEPTHS[size]]
            if fam == "lock"
            else [("p", float(p)) for p in KNOB_PS[size] if p <= _p_max(fam)]
        )
        for v in _knob_values(size, fam):
            for key, x in grid:
                out.append(
                    {
                        "family": fam,
                        "sweep": "knob",
                        "knob": knob,
                        "knob_value": float(v),
                        key: x,
                        "tau": TAU,
                        **common,
                    }
                )
    return out


def _search(mdp, prob, w, a, tol, n_plug, config, rng) -> tuple:
    """Direct n for one criterion on fresh nested paths; (DirectResult, terms drawn)."""
    chunk = max(1, int(n_plug / 50))  # the n tried are multiples of ~2% of the plug-in n

    def draw(n, reps):
        return kl_estimates(mdp, prob.policy, prob.coef, w, n, reps, rng)

    nested = NestedSampler(draw, int(config["reps"]), chunk)
    # Start just below the plug-in value and grow by 1.25: on nested paths the search costs the
    # largest n it tries (times reps), so small growth steps are cheap.
    start = max(chunk, int(0.8 * n_plug) // chunk * chunk)
    res = smallest_n(
        nested,
        a,
        config["eps"],
        config["delta"],
        int(config["reps"]),
        n_start=start,
        n_max=int(config["n_max"]),
        rel_tol=0.05,
        tol=tol,
        step=chunk,
        grow=1.25,
    )
    return res, nested.drawn


def _columns(res, suffix: str) -> dict:
    return {
        f"n{suffix}": res.n,
        f"censored{suffix}": res.censored,
        f"successes{suffix}": res.successes_hi,
        f"rate_ci_lo{suffix}": res.rate_ci_hi[0],
        f"rate_ci_hi{suffix}": res.rate_ci_hi[1],
        f"n_below{suffix}": res.n_lo,
        f"successes_below{suffix}": res.successes_lo,
        f"rate_below_ci_hi{suffix}": res.rate_ci_lo[1],
        f"n_evaluated{suffix}": len(res.trials),
    }


def measure(mdp, prob, rule, config: dict, rng_var, rng_dir) -> dict:
    """Direct, plug-in and exact-normal sample complexity of one reset rule (a name or a callable
    (d, G) -> s) on one instance, under the relative criterion and -- when ``config`` has ``c``
    (and ``tau``) and ``rule`` is a name -- Theorem 1's; the row of the experiment's table."""
    w = prob.weights(rule)
    if w.sum() <= 0:
        return {"a_true": np.nan, "n_direct": np.nan, "censored": True, "n_plugin": np.nan}
    a = prob.signal(w)
    delta = config["delta"]
    terms, _ = kl_estimates(mdp, prob.policy, prob.coef, w, 1, int(config["n_var"]), rng_var)
    var = float(terms.var(ddof=1))
    _, var_exact = term_moments(mdp, prob.policy, prob.coef, w)
    tol_rel = config["eps"] * abs(a)
    n_plug = plug_in_n(var, a, config["eps"], delta)
    res, drawn = _search(mdp, prob, w, a, tol_rel, n_plug, config, rng_dir)
    per = prob.env_steps_per_sample(w)
    row = {
        "a_true": a,
        "term_var": var,
        "term_var_exact": var_exact,
        **_columns(res, "_direct"),
        "n_plugin": n_plug,
        "n_normal": normal_n(var_exact, tol_rel, delta),
        "env_steps_per_sample": per,
        "env_steps_direct": res.n * per,
        "acceptance": float(w.sum()),
    }
    row["censored"] = row.pop("censored_direct")  # the historical names of the relative columns
    for k in (
        "successes",
        "rate_ci_lo",
        "rate_ci_hi",
        "n_below",
        "successes_below",
        "rate_below_ci_hi",
        "n_evaluated",
    ):
        row[k] = row.pop(f"{k}_direct")
    if config.get("c") is not None and isinstance(rule, str):
        tol = config["c"] * theorem_eps(
            rule, config["tau"], prob.p_mass, APPROX["beta"], APPROX["gamma"]
        )
        n_plug_th = plug_in_n(var, tol, 1.0, delta)  # z^2 s^2 / tol^2
        if math.isclose(tol, tol_rel, rel_tol=1e-9):
            res_th = res  # the criteria coincide (clean family): one search serves both
        else:
            res_th, more = _search(mdp, prob, w, a, tol, n_plug_th, config, rng_dir)
            drawn += more
        row.update(
            {
                "tol_theorem": tol,
                **_columns(res_th, "_theorem"),
                "n_plugin_theorem": n_plug_th,
                "n_normal_theorem": normal_n(var_exact, tol, delta),
                "env_steps_theorem": res_th.n * per,
            }
        )
    row["samples_spent"] = drawn
    return row


def run_cell(config: dict, seq: np.random.SeedSequence) -> pd.DataFrame:
    env_seed, (rng_var, rng_dir) = split_seeds(seq, 2)
    x = config.get("depth", config.get("p"))
    knob = config.get("knob") if config.get("sweep") == "knob" else None
    over = {}
    if knob is not None:
        v = config["knob_value"]
        over[knob] = int(round(v)) if knob == "tail" else float(v)
    mdp = build(config["family"], x, config["tau"], env_seed, **over)
    prob = exact_problem(mdp, config["tau"])
    rows = []
    for method in METHODS if knob is None else ("random", "oracle"):
        row = measure(mdp, prob, method, config, rng_var, rng_dir)
        rows.append(
            {
                "method": method,
                "p_mass": prob.p_mass,
                "p_reach": prob.p_reach,
                "r_max": prob.r_max,
                "horizon": mdp.horizon,
                **row,
            }
        )
    return pd.DataFrame(rows)


def _analyze(rows):
    from experiments.sweep.direct_fits import analyze

    return analyze(rows)


def _plot(rows, fits, outdir):
    from experiments.sweep.direct_plots import plot

    return plot(rows, fits, outdir)


def hoeffding_record(*args, **kwargs):
    """:func:`experiments.sweep.direct_fits.hoeffding_record` (kept importable from here)."""
    from experiments.sweep.direct_fits import hoeffding_record as rec

    return rec(*args, **kwargs)


EXPERIMENT = Experiment(
    "direct",
    "P2",
    "Q-rollouts to the theorem's absolute accuracy (and to a "
    "relative one), measured directly, on four families, with knob sweeps",
    configs,
    run_cell,
    _analyze,
    _plot,
)
