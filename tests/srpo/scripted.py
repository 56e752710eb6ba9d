"""A scripted rollout engine, codec, scorer and localizer: method plans without a model.

Token ids are plain integers; a chain's continuation of a context (prompt + prefix) is popped from
a script in order; every ``THOUGHT`` tokens make one thought. Rewards are looked up per response.
The engine records every generated token, so token accounting can be checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

THOUGHT = 2  # tokens per thought of a scripted chain


@dataclass
class Limits:
    max_new_tokens: int | None = None


@dataclass
class SChain:
    prompt_ids: list[int]
    response_ids: list[int]
    prefix_len: int
    spans: list[tuple[int, int]]
    text: str
    n_generated: int
    stop_reason: str


def spans_of(n: int) -> list[tuple[int, int]]:
    return [(s, min(s + THOUGHT, n)) for s in range(0, n, THOUGHT)]


class ScriptEngine:
    """``generate`` / ``sample_suffix_groups`` over a script: context tuple -> continuations."""

    def __init__(self, script: dict[tuple, list[list[int]]]):
        self.script = {tuple(k): [list(c) for c in v] for k, v in script.items()}
        self.config = Limits()
        self.generated = 0
        self.contexts: list[tuple] = []

    def _chain(self, prompt, prefix) -> SChain:
        key = tuple(prompt) + tuple(prefix)
        self.contexts.append(key)
        cont = self.script[key].pop(0)
        stop = "boxed"
        cap = self.config.max_new_tokens
        if cap is not None and len(cont) > cap:
            cont, stop = cont[:cap], "max_new_tokens"
        resp = list(prefix) + list(cont)
        self.generated += len(cont)
        return SChain(
            list(prompt),
            resp,
            len(prefix),
            spans_of(len(resp)),
            " ".join(map(str, resp)),
            len(cont),
            stop,
        )

    def generate(self, prompts, n_per_prompt=1, generator=None, temperature=None):
        return [[self._chain(p, []) for _ in range(n_per_prompt)] for p in prompts]

    def sample_suffix_groups(self, groups, generator=None, temperature=None):
        return [[self._chain(p, prefix) for _ in range(k)] for p, prefix, _spans, k in groups]


@dataclass(frozen=True)
class SProblem:
    prompt: tuple
    rewards: dict = field(default_factory=dict)  # response tuple -> reward (default 0)
    correct: dict = field(default_factory=dict)  # response tuple -> verdict (default reward==1)
    first_error: int | None = None
    question: str = "q"


class SCodec:
    def prompt_ids(self, problem):
        return list(problem.prompt)

    def question(self, problem):
        return problem.question

    def thoughts(self, chain):
        return [str(chain.response_ids[s:e]) for s, e in chain.spans]

    def cut_prefix(self, chain, k):
        from srpo.methods.base import PrefixCut
        from srpo.thoughts import cut_prefix

        ids = cut_prefix(chain.response_ids, chain.spans, k)
        return PrefixCut(ids, list(chain.spans[: k - 1]))

    def followup_ids(self, prompt_ids, response_ids, message):
        verdict = 1 if "is correct" in message else 0
        return list(prompt_ids) + list(response_ids) + [900 + verdict]


class SScorer:
    def score(self, problem, chain):
        from srpo.methods import Score

        key = tuple(chain.response_ids)
        reward = float(problem.rewards.get(key, 0.0))
        return Score(reward, bool(problem.correct.get(key, reward == 1.0)))


class STask:
    has_step_verifier = True

    def first_error(self, problem, thoughts):
        return problem.first_error


class SLocalizer:
    """Returns the scripted k for every parent (in order)."""

    name = "scripted"

    def __init__(self, ks):
        self.ks = list(ks)
        self.seen = []

    def locate(self, parents, rng, **kw):
        from srpo.localize import LocalizationResult

        self.seen += parents
        return [LocalizationResult(self.ks.pop(0), "boxed", raw=None) for _ in parents]


def context(engine, localizer=None, options=None, entropy=None, **kw):
    from srpo.methods import RolloutContext

    return RolloutContext(
        engine=engine,
        codec=SCodec(),
        scorer=SScorer(),
        task=STask(),
        rng=np.random.default_rng(0),
        generator=None,
        localizer=localizer,
        options=options,
        token_entropy=entropy,
        **kw,
    )
