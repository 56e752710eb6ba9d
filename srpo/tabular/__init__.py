"""The ladder's middle rung: the language model's method code on a tabular softmax policy.

A tabular policy on a thought MDP plugs into the method registry's seams (``srpo.methods.base``):
an engine whose token ids are thought ids (``engine``), a codec, a scorer and a localizer with a
set precision and recall (``seams``), and a torch "model" whose logits are a table indexed by
state (``policy``), so that every plan, estimator, loss and optimizer step is the language
model's own code (``train``). ``mdp`` holds the thought MDPs (the language model's arithmetic task
and ``cpi``'s trees), ``envs`` their initial policies and exact evaluation. See docs/ladder.md.
"""

from srpo.tabular.engine import TabChain, TabularEngine
from srpo.tabular.envs import arithmetic_env, misconception_probabilities, tree_env
from srpo.tabular.mdp import ArithmeticThoughtMDP, TreeProblem, TreeTask, TreeThoughtMDP
from srpo.tabular.policy import PadTokenizer, TablePolicy, log_probabilities
from srpo.tabular.seams import SetLocalizer, ThoughtCodec, ThoughtScorer
from srpo.tabular.train import TabularConfig, TabularEnv, make_context, train_tabular

__all__ = [
    "ArithmeticThoughtMDP",
    "PadTokenizer",
    "SetLocalizer",
    "TabChain",
    "TablePolicy",
    "TabularConfig",
    "TabularEngine",
    "TabularEnv",
    "ThoughtCodec",
    "ThoughtScorer",
    "TreeProblem",
    "TreeTask",
    "TreeThoughtMDP",
    "arithmetic_env",
    "log_probabilities",
    "make_context",
    "misconception_probabilities",
    "train_tabular",
    "tree_env",
]
