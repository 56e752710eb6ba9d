"""Apply each plausible bug of either rung's buffer once and report which test catches it.

    python tests/srpo/mutate_ladder.py        # runs tests/srpo/test_tabular_rung.py per mutation

The mutations change the tabular rung's seams (its engine, codec, scorer, localizer), the
language model's seams (its codec, scorer) or the buffer code both share (``reset_batch``, the
advantage estimator): the batch-identity test catches the first two kinds, the golden buffer the
third. Not collected by pytest; ``tests/srpo/test_tabular_rung.py`` checks that every replaced
line still exists
(``test_mutation_lines_exist``, left out of the mutation runs).
"""

import sys

from tests.srpo.mutate_methods import main as _run

MUT = [
    (
        "tabular codec keeps k thoughts instead of k-1",
        "srpo/tabular/seams.py",
        "PrefixCut(list(chain.response_ids[: k - 1]), [(i, i + 1) for i in range(k - 1)])",
        "PrefixCut(list(chain.response_ids[:k]), [(i, i + 1) for i in range(k)])",
    ),
    (
        "tabular engine counts the copied prefix as generated",
        "srpo/tabular/engine.py",
        "chains.append(TabChain(p, acts, len(pre), len(acts) - len(pre), stop, self.mdp))",
        "chains.append(TabChain(p, acts, 0, len(acts), stop, self.mdp))",
    ),
    (
        "tabular scorer: success = no wrong value up to the end",
        "srpo/tabular/mdp.py",
        "return float(int(response_ids[-1]) == int(problem.answer))",
        "return float(int(response_ids[0]) == self.problem_arrays(np.array([self.prompt_ids(problem)]))[1][0, 1])",
    ),
    (
        "set localizer: an erroneous answer lands on the first error",
        "srpo/tabular/seams.py",
        'out.append(LocalizationResult(int(f + 1 + later % (p.n - f)), "boxed", raw=None))',
        'out.append(LocalizationResult(int(f), "boxed", raw=None))',
    ),
    (
        "language model codec keeps one thought more",
        "srpo/methods/base.py",
        "cut = cut_prefix_tokens(self.tokenizer, chain.response_ids, chain.spans, k, self.delimiter)",
        "cut = cut_prefix_tokens(self.tokenizer, chain.response_ids, chain.spans, min(k + 1, len(chain.spans)), self.delimiter)",
    ),
    (
        "shared buffer: a 13th fresh chain allowed",
        "srpo/methods/resets.py",
        "len(s.chains) < ctx.max_fresh_chains]\n        if not todo:\n            return\n"
        "        counts = [min(s.needed(spec), ctx.max_fresh_chains - len(s.chains))",
        "len(s.chains) < ctx.max_fresh_chains + 1]\n        if not todo:\n            return\n"
        "        counts = [min(s.needed(spec), ctx.max_fresh_chains + 1 - len(s.chains))",
    ),
    (
        "shared buffer: the parent joins the base group",
        "srpo/methods/resets.py",
        "            self.parents.append(i)\n        elif len(self.base) < spec.n_base:",
        "            self.parents.append(i)\n        if len(self.base) < spec.n_base:",
    ),
    (
        "shared estimator: sample std instead of population",
        "srpo/advantages.py",
        'ddof = 0 if std == "population" else 1',
        "ddof = 1",
    ),
]

if __name__ == "__main__":
    import tests.srpo.mutate_methods as mm

    mm.MUT = MUT
    # the line-existence check fails under every mutation by design: leave it out here
    _run(sys.argv[1:] or ["tests/srpo/test_tabular_rung.py", "-k", "not mutation_lines_exist"])
