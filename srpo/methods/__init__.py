"""The method registry: every training method the paper compares, one module each.

A method (``srpo.methods.base.Method``) names

* its **rollout plan**: which chains are sampled, from which prefixes, and which tokens carry
  gradient (``plan(ctx, problems) -> Batch``);
* its **advantage estimator** and **policy loss**, by registered name
  (``srpo.advantages.ADVANTAGE_ESTIMATORS``, ``srpo.loss.POLICY_LOSSES``: pure functions with
  stated shapes, groups given by an index array, explicit loss masks, named aggregation modes,
  per-sequence (B,) or per-token (B, T) advantages);
* its **release recipe**: the learning rate, temperature and loss settings of the authors' runs
  (``Method.release``, applied by ``--recipe paper``), and its own options
  (``Method.options``, ``TrainConfig.method_options``).

The trainer (``srpo.trainer``) is a loop of phases that never looks at a method's name: set up,
roll out (``method.plan``), log-probs the method needs, advantages (the registered estimator),
update (the registered loss), evaluate, checkpoint. Adding a baseline is adding a module here
that calls ``register_method``, and its name to ``_MODULES``.

==================  =========================================================================
name                what it is (module)
==================  =========================================================================
``grpo``            R fresh chains, one group, z-scores (``grpo``)
``rrpo``            1x4 / 2x4 / 1x8 resets at a uniform step (``resets``)
``srpo``            resets at the step the policy names as its first error (``resets``)
``oracle``          resets at the step verifier's first error (``resets``)
``srpo-offset``     SRPO with the localized step moved N earlier (``resets``; the release's
                    ``SRPO_LOC_OFFSET``, ``--localization-offset N``, default 1)
``entropy-reset``   resets at the thought holding the parent's highest-entropy token
                    (``resets``; TreeRL's branch rule as a localizer, for the selector study)
``fixed-reset``     resets at the thought holding a fixed token position (``resets``;
                    SPO-Tree's branch rule as a localizer)
``score``           SCoRe: 4 (first attempt, correction) pairs, stage-II shaping (``score``)
``critique-grpo``   8 chains + refinements after a binary critique (``critique_grpo``)
``spo-tree``        a [2, 4] segment tree, segment advantages, probability mask (``spo_tree``)
``treerl``          EPTree: forks at the highest-entropy tokens, global + local advantages
                    (``treerl``)
==================  =========================================================================

The seams a plan depends on (``srpo.methods.base``): the rollout engine
(``ThoughtEngine``-like: rollout requests -> chains with thought spans; suffix groups from a
prefix), a codec (prompt and follow-up ids, thought texts), a scorer (``(reward, correct)``), a
localizer, and seeded random streams; optionally per-token entropies. No plan imports a tokenizer
or a model. Two consequences, which later work relies on:

* a tabular softmax policy on a thought MDP (issue 19) runs every plan unchanged: it supplies an
  engine whose "tokens" are thought ids (chains with one span per thought), a codec over those
  ids, a scorer and, for the entropy rule, its own entropies;
* tasks with fractional rewards (issue 18: the fraction of tests passed) return
  ``(reward, correct)`` through ``task.score(problem, text)`` (``TaskScorer``); failed parents and
  suffix successes use ``correct`` (all tests pass), the advantages use ``reward``.
"""

from __future__ import annotations

import importlib

from srpo.methods.base import Method, RolloutContext, Score, TaskScorer, TokenizerCodec

__all__ = [
    "Method",
    "RolloutContext",
    "Score",
    "TaskScorer",
    "TokenizerCodec",
    "METHODS",
    "register_method",
    "get_method",
    "method_names",
    "COMPARISON_METHODS",
]

#: name -> Method, filled by ``register_method`` as the modules below are imported
METHODS: dict[str, Method] = {}

#: the modules that register methods, in the order of ``method_names()``
_MODULES = ("grpo", "resets", "score", "critique_grpo", "spo_tree", "treerl")

#: the methods ``llm_srpo.py --method all`` runs (the paper's comparison; the selector-study
#: localizers ``entropy-reset`` / ``fixed-reset`` are run by name)
COMPARISON_METHODS = (
    "grpo",
    "rrpo",
    "srpo",
    "oracle",
    "srpo-offset",
    "score",
    "critique-grpo",
    "spo-tree",
    "treerl",
)


def register_method(method: Method) -> Method:
    """Add ``method`` to the registry (a name can be registered once)."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method called ``name`` (ValueError naming the known ones otherwise)."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method must be one of {method_names()}; got {name!r}") from None


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


for _module in _MODULES:
    importlib.import_module(f"srpo.methods.{_module}")
