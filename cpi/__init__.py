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
