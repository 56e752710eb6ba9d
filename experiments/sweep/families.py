"""The environment families of the new experiments, with the settings fixed in docs/sweep.md.

``coverage`` is the clean family (Theorem 1's claims are identities there: J linear in the step,
no advantage off G); ``shifted``, ``planted`` and ``lock`` are the families where they are not
built in (``cpi.envs.shifted_coverage``, ``planted_garnet``, ``combination_lock``; docs/envs.md);
``concave`` (``cpi.envs.concave_fork``) is the one along whose CPI update J bends *down*, so
that the conservative step matters (the others are linear or bend up). A family is built from one
number ``x``: the coverage p (mass reading), or the depth D of the prize for the lock
(p_reach = A^-D, p_mass = p_reach / H).

:data:`KNOBS`: the knob of each non-clean family that sets its off-G signal or its
depth/horizon coupling, and the values the ``direct`` experiment sweeps (issue 16).

:func:`exact_problem` gathers the exact quantities every estimator-level experiment needs at the
initial policy: the greedy target, the per-(state, action) K&L coefficient ``A (pi' - pi)``, the
per-state gain ``A^pi(x, pi'(x))``, the reset distribution d, G, and the reset weights of each
rule (:data:`RULES`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cpi.envs import (
    combination_lock,
    concave_fork,
    coverage_family,
    initial_policy,
    planted_garnet,
    shifted_coverage,
)
from cpi.evaluation import advantage, evaluate, greedy_policy, improvable_set, occupancy
from cpi.mdp import TabularMDP
from cpi.selectors import reset_distribution, selection

#: The P2 families (the ``direct`` experiment and the H = 3 theorem runs).
FAMILIES = ("coverage", "shifted", "planted", "lock")
#: Every family, the concave one included (the exact ``bounds`` cells).
ALL_FAMILIES = (*FAMILIES, "concave")

#: Family settings (docs/sweep.md, "Set-up shared by the new experiments").
DEFAULTS: dict[str, dict] = {
    "coverage": {"n_actions": 4, "horizon": 6, "noise": 0.1, "headroom": 2.0},
    "shifted": {"n_actions": 4, "horizon": 6, "noise": 0.1, "headroom": 2.0, "leak": 0.4,
                "side_level": 0.5},
    "planted": {"n_states": 30, "n_actions": 4, "branching": 3, "horizon": 5, "headroom": 2.0,
                "off_level": 0.5},
    "lock": {"n_actions": 2, "horizon": 6, "noise": 0.1, "headroom": 1.5},
    "concave": {"n_actions": 4, "horizon": 6, "noise": 0.1, "headroom": 2.0},
}

#: family -> (knob, swept values, default value). shifted: the off-G advantage side_level tau;
#: planted: the largest off-G advantage off_level tau; lock: ``tail`` = H - D - 1, the steps
#: after the prize, held fixed while the depth D moves p (the default couples them through a
#: fixed H = 6, so that CARO's rollouts shorten as p falls; ``None`` stands for that coupling).
KNOBS: dict[str, tuple[str, tuple, object]] = {
    "shifted": ("side_level", (0.0, 0.1, 0.25, 0.5, 0.75), 0.5),
    "planted": ("off_level", (0.1, 0.25, 0.5, 0.75, 0.9), 0.5),
    "lock": ("tail", (1, 3, 5), None),
}

#: The approximate selector of these experiments (false-discovery rate, recall).
APPROX = {"beta": 0.3, "gamma": 0.7}

FAMILY_LABEL = {"coverage": "coverage (clean)", "shifted": "shifted coverage",
                "planted": "planted Garnet", "lock": "combination lock",
                "concave": "concave fork"}


def build(family: str, x: float, tau: float, seed: int, **overrides) -> TabularMDP:
    """An instance of ``family`` at coverage p = x (lock: depth D = x), threshold tau.

    ``overrides`` replace the family's :data:`DEFAULTS`; for the lock, ``tail=k`` sets the
    horizon to D + 1 + k (the knob of :data:`KNOBS`)."""
    kw = {**DEFAULTS[family], **overrides}
    if family == "lock" and kw.get("tail") is not None:
        kw["horizon"] = int(round(x)) + 1 + int(kw["tail"])
    kw.pop("tail", None)
    if family == "concave":
        return concave_fork(float(x), tau, seed=seed, **kw)
    if family == "coverage":
        return coverage_family(float(x), tau, seed=seed, **kw)
    if family == "shifted":
        return shifted_coverage(float(x), tau, seed=seed, **kw)
    if family == "planted":
        return planted_garnet(float(x), tau, seed=seed, **kw)
    if family == "lock":
        return combination_lock(int(round(x)), tau, seed=seed, **kw)
    raise ValueError(f"family: expected one of {ALL_FAMILIES}, got {family!r}")


def _random(d, G):
    return np.ones_like(d)


def _oracle(d, G):
    return G.astype(np.float64)


def _approx(d, G):
    return selection("approx", G, d, APPROX["beta"], APPROX["gamma"]).s


#: Reset rule -> per-state acceptance probability s(x) given (d, G); reset weights are d s.
RULES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "random": _random, "oracle": _oracle, "approx": _approx}


@dataclass(frozen=True)
class ExactProblem:
    """Exact ingredients at a policy, flat-indexed like ``cpi.rollouts`` (X = H S).

    policy (H, S, A); coef (X, A) = A (pi' - pi) with pi' greedy in the exact Q; gain (X,) =
    A^pi(x, pi'(x)); d (X,) reset distribution; G (X,) bool improvable set; step (X,) the step h of
    each flat state; p_mass, p_reach: coverage of G (both readings); r_max, horizon, n_actions.
    """

    policy: np.ndarray
    coef: np.ndarray
    gain: np.ndarray
    d: np.ndarray
    G: np.ndarray
    step: np.ndarray
    p_mass: float
    p_reach: float
    r_max: float
    horizon: int
    n_actions: int

    def weights(self, rule: str | Callable) -> np.ndarray:
        """Reset weights d s of a rule name (or a callable (d, G) -> s)."""
        fn = RULES[rule] if isinstance(rule, str) else rule
        return self.d * fn(self.d, self.G)

    def signal(self, w: np.ndarray) -> float:
        """Exact policy advantage under reset weights w: sum w gain / sum w."""
        return float(w @ self.gain / w.sum())

    def env_steps_per_sample(self, w: np.ndarray) -> float:
        """Expected environment steps per accepted reset state and its Q-rollout: roll-ins to
        every candidate (candidates ~ d, accepted with probability s = w/d; a candidate at step h
        costs h) plus the Q-rollout (H - h)."""
        mass = float(w.sum())  # = sum d s, the acceptance probability of a candidate
        roll_in = float(self.d @ self.step) / mass
        q_part = float(w @ (self.horizon - self.step)) / mass
        return roll_in + q_part


def exact_problem(mdp: TabularMDP, tau: float, policy=None) -> ExactProblem:
    """:class:`ExactProblem` of ``policy`` (default: the family's initial policy) at ``tau``."""
    from cpi.evaluation import coverage_of

    pol = initial_policy(mdp) if policy is None else np.asarray(policy, dtype=np.float64)
    V, Q = evaluate(mdp, pol)
    A = mdp.n_actions
    tgt = greedy_policy(mdp, Q).reshape(-1, A)
    adv = advantage(mdp, pol, V, Q).reshape(-1, A)
    occ = occupancy(mdp, pol)
    G = improvable_set(mdp, pol, tau, V, Q)
    cov = coverage_of(mdp, pol, G, occ)
    d = reset_distribution(mdp, pol, occ)
    H, S = mdp.horizon, mdp.n_states
    return ExactProblem(
        policy=pol, coef=A * (tgt - pol.reshape(-1, A)), gain=(adv * tgt).sum(axis=1), d=d,
        G=G.ravel(), step=np.repeat(np.arange(H), S), p_mass=cov.mass, p_reach=cov.reach,
        r_max=mdp.r_max, horizon=H, n_actions=A)
