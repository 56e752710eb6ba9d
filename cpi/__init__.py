"""cpi: conservative policy iteration with no, random, oracle and approximate resets.

Finite-horizon tabular and tree MDPs, exact evaluation, improvable sets and coverage, and the
CPI loop of Kakade & Langford with the reset rules of "Credit Assignment with Resets in Language
Model Reasoning" (arXiv 2605.25507). See docs/cpi.md.
"""

from cpi.mdp import MDP, TabularMDP, TreeMDP, check_policy, check_tau

__all__ = ["MDP", "TabularMDP", "TreeMDP", "check_policy", "check_tau"]

from cpi.evaluation import (  # noqa: E402
    Coverage,
    advantage,
    coverage,
    coverage_of,
    evaluate,
    greedy_policy,
    improvable_set,
    max_advantage,
    occupancy,
    value,
)

__all__ += [
    "Coverage",
    "advantage",
    "coverage",
    "coverage_of",
    "evaluate",
    "greedy_policy",
    "improvable_set",
    "max_advantage",
    "occupancy",
    "value",
]

from cpi import envs  # noqa: E402  (registers the gymnasium ids)
from cpi.algorithm import CPIConfig, CPIResult, optimal_value, run_cpi  # noqa: E402
from cpi.estimators import estimate_policy_advantage, true_policy_advantage  # noqa: E402
from cpi.rollouts import simulate_returns  # noqa: E402
from cpi.selectors import reset_distribution, selection  # noqa: E402
from cpi.step_rules import advantage_bound, theory_step  # noqa: E402

__all__ += [
    "envs",
    "CPIConfig",
    "CPIResult",
    "optimal_value",
    "run_cpi",
    "estimate_policy_advantage",
    "true_policy_advantage",
    "simulate_returns",
    "reset_distribution",
    "selection",
    "advantage_bound",
    "theory_step",
]
