"""The same scripted thoughts for both rungs: a language-model engine and a tabular engine that
write the values a script gives, each through its own rung's chain representation.

A script maps ``(problem index, written prefix values)`` to the continuations (lists of written
values) that the k-th call from that context returns: either given explicitly
(``ExplicitScript``) or drawn from a seeded generator keyed by the context and the call count
(``SeededScript``, so that both rungs get the same thoughts as long as they make the same calls).

* ``ScriptedLMEngine``: the language model's side. Thought i of a chain is the text the model
  writes (``srpo.tasks.format_step``), tokenized with the language model's tokenizer thought by
  thought; spans are the thoughts' token ranges; a reset prefix arrives as token ids and spans
  (cut by ``TokenizerCodec.cut_prefix``) and is read back through the tokenizer.
* ``ScriptedTabularEngine``: the tabular side: the real ``srpo.tabular.TabularEngine`` with its
  sampler replaced by the script (chains, prefixes, spans and counts are the engine's own).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from srpo.tabular.engine import TabularEngine
from srpo.tasks import apply_op, format_step

_VALUE = re.compile(r"=(\d+)")


class ExplicitScript:
    """``{(problem index, prefix tuple): [continuation, ...]}``, popped in order."""

    def __init__(self, table: dict) -> None:
        self.table = {k: [list(c) for c in v] for k, v in table.items()}

    def next(self, problem_index: int, problem, prefix: tuple) -> list[int]:
        return self.table[(problem_index, tuple(prefix))].pop(0)


class SeededScript:
    """Continuations drawn from a generator seeded by (seed, problem, prefix, call count): each
    step writes the true value with probability ``p_right`` (per problem, a list), else a
    uniformly drawn wrong one."""

    def __init__(self, p_right: list[float], seed: int = 0) -> None:
        self.p_right, self.seed = p_right, seed
        self.calls: dict = defaultdict(int)

    def next(self, problem_index: int, problem, prefix: tuple) -> list[int]:
        key = (problem_index, tuple(prefix))
        count = self.calls[key]
        self.calls[key] += 1
        rng = np.random.default_rng([self.seed, problem_index, len(prefix), *prefix, count])
        m = problem.modulus
        v = problem.start if not prefix else prefix[-1]
        out = []
        for op, x in problem.ops[len(prefix) :]:
            right = apply_op(v, op, x, m)
            v = (
                right
                if rng.random() < self.p_right[problem_index]
                else int((right + rng.integers(1, m)) % m)
            )
            out.append(v)
        return out


@dataclass
class LMChain:
    prompt_ids: list[int]
    response_ids: list[int]
    prefix_len: int
    spans: list[tuple[int, int]]
    text: str
    n_generated: int
    stop_reason: str = "boxed"


@dataclass
class Limits:
    max_new_tokens: int | None = None
    delimiter: str = "</thought>"


def _thought_strings(problem, prefix_values: list[int], values: list[int]) -> list[str]:
    v = problem.start if not prefix_values else prefix_values[-1]
    out = []
    for i, a in enumerate(values, start=len(prefix_values)):
        op, x = problem.ops[i]
        out.append(format_step(v, op, x, int(a), final=i == problem.n_steps - 1))
        v = int(a)
    return out


class ScriptedLMEngine:
    """The language model's side of the script (module docstring)."""

    def __init__(self, tokenizer, codec, problems, script) -> None:
        self.tok, self.script, self.problems = tokenizer, script, problems
        self.config = Limits()
        self.index = {tuple(codec.prompt_ids(p)): i for i, p in enumerate(problems)}

    def _values(self, prefix_ids, prefix_spans) -> list[int]:
        from srpo.thoughts import thought_texts

        texts = thought_texts(self.tok, list(prefix_ids), list(prefix_spans))
        return [int(_VALUE.search(t).group(1)) for t in texts]

    def _chain(self, prompt, prefix_ids, prefix_spans) -> LMChain:
        i = self.index[tuple(prompt)]
        problem = self.problems[i]
        pre_values = self._values(prefix_ids, prefix_spans)
        values = self.script.next(i, problem, tuple(pre_values))
        ids, spans = list(prefix_ids), list(prefix_spans)
        for text in _thought_strings(problem, pre_values, values):
            piece = self.tok.encode(text, add_special_tokens=False)
            spans.append((len(ids), len(ids) + len(piece)))
            ids += piece
        text = self.tok.decode(ids, skip_special_tokens=True)
        return LMChain(list(prompt), ids, len(prefix_ids), spans, text, len(ids) - len(prefix_ids))

    def generate(self, prompts, n_per_prompt=1, generator=None, temperature=None):
        return [[self._chain(p, [], []) for _ in range(n_per_prompt)] for p in prompts]

    def sample_suffix_groups(self, groups, generator=None, temperature=None):
        return [[self._chain(p, pre, spans) for _ in range(k)] for p, pre, spans, k in groups]


class ScriptedTabularEngine(TabularEngine):
    """``TabularEngine`` whose sampler is the script (module docstring)."""

    def __init__(self, mdp, policy, problems, script) -> None:
        super().__init__(mdp, policy)
        self.script, self.problems = script, problems
        self.index = {tuple(mdp.prompt_ids(p)): i for i, p in enumerate(problems)}

    def _continue(self, prompts, prefixes, generator):
        out = []
        for prompt, prefix in zip(prompts, prefixes):
            i = self.index[tuple(prompt)]
            out.append(list(prefix) + self.script.next(i, self.problems[i], tuple(prefix)))
        return out
