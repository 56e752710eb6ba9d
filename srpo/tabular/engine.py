"""A rollout engine over a thought MDP: the registry's engine seam for a tabular policy.

``TabularEngine(mdp, policy)`` answers ``generate(prompts, n, generator)`` and
``sample_suffix_groups([(prompt, prefix, spans, k)], generator)`` as ``srpo.engines`` do, with
chains whose token ids are thought ids (one id and one span per thought). Sampling is vectorised
over every chain of a call: one numpy pass per step for all rows, actions drawn by inverse CDF
from uniforms of the call's numpy ``Generator`` (the context's seed stream), so one seed gives the
same chains. ``sync(model)`` reloads ``softmax(table / temperature)`` after an update (the
trainer's phase 5).

``TabChain`` is a ``srpo.engines.base.Chain``-like record: ``prompt_ids``, ``response_ids``
(copied prefix + sampled thoughts), ``prefix_len``, ``spans``, ``n_generated`` (thoughts sampled
in this call: the per-token accounting counts thoughts), ``stop_reason`` and ``text`` (the
thoughts' text, built on first use: the arithmetic MDP writes them as the language model does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["TabChain", "TabularEngine", "EngineLimits"]


@dataclass
class EngineLimits:
    """The engine's ``config``: ``max_new_tokens`` (unused: a thought MDP has a horizon) and the
    delimiter name (for codecs that ask)."""

    max_new_tokens: int | None = None
    delimiter: str = "</thought>"
    temperature: float = 1.0


@dataclass
class TabChain:
    prompt_ids: list[int]
    response_ids: list[int]
    prefix_len: int
    n_generated: int
    stop_reason: str
    mdp: object = field(repr=False, default=None)
    _text: str | None = field(repr=False, default=None)

    @property
    def spans(self) -> list[tuple[int, int]]:
        return [(i, i + 1) for i in range(len(self.response_ids))]

    @property
    def thoughts(self) -> list[str]:
        return self.mdp.thought_texts(self.prompt_ids, self.response_ids)

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = "".join(self.thoughts)
        return self._text


class TabularEngine:
    """Vectorised sampling from a tabular policy on a thought MDP (module docstring).

    Args:
        mdp: ``ArithmeticThoughtMDP`` or ``TreeThoughtMDP``.
        policy: the ``TablePolicy`` (its probabilities are read now and at every ``sync``).
        temperature: sampling temperature (the updater's log pi uses the same one).
    """

    def __init__(self, mdp, policy, temperature: float = 1.0) -> None:
        self.mdp = mdp
        self.config = EngineLimits(temperature=temperature)
        self.calls = 0
        self.generated = 0
        self.sync(policy)

    def sync(self, model) -> None:
        self.probs = model.probabilities(self.config.temperature)
        self.cdf = np.cumsum(self.probs, axis=1)

    def close(self) -> None:
        pass

    # -- the seam ----------------------------------------------------------------------------------
    def generate(self, prompts, n_per_prompt: int = 1, generator=None, temperature=None):
        """``n_per_prompt`` fresh chains per prompt, prompt-major, in one vectorised pass."""
        flat = [list(p) for p in prompts for _ in range(n_per_prompt)]
        chains = self._chains(flat, [[] for _ in flat], generator)
        return [chains[i * n_per_prompt : (i + 1) * n_per_prompt] for i in range(len(prompts))]

    def sample_suffix_groups(self, groups, generator=None, temperature=None):
        """For each ``(prompt, prefix_ids, prefix_spans, k)``, k continuations of prompt + prefix."""
        prompts, prefixes, sizes = [], [], []
        for prompt, prefix, _spans, k in groups:
            prompts += [list(prompt)] * int(k)
            prefixes += [list(prefix)] * int(k)
            sizes.append(int(k))
        chains = self._chains(prompts, prefixes, generator)
        out, pos = [], 0
        for k in sizes:
            out.append(chains[pos : pos + k])
            pos += k
        return out

    # -- sampling ----------------------------------------------------------------------------------
    def _chains(self, prompts, prefixes, generator) -> list[TabChain]:
        if not prompts:
            return []
        self.calls += 1
        actions = self._continue(prompts, prefixes, generator)
        chains = []
        for p, pre, acts in zip(prompts, prefixes, actions):
            self.generated += len(acts) - len(pre)
            stop = "boxed" if len(acts) else "no_room"
            chains.append(TabChain(p, acts, len(pre), len(acts) - len(pre), stop, self.mdp))
        return chains

    def _draw(self, states: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Inverse-CDF actions of rows in ``states`` (B,) from uniforms ``u`` (B,)."""
        a = (u[:, None] >= self.cdf[states]).sum(axis=1)
        return np.minimum(a, self.mdp.n_actions - 1)

    def _continue(self, prompts, prefixes, generator) -> list[list[int]]:
        """Complete every prefix to the end of the episode: (B,) lists of thought ids."""
        if hasattr(self.mdp, "problem_arrays"):
            return self._continue_arith(prompts, prefixes, generator)
        return self._continue_tree(prompts, prefixes, generator)

    def _continue_arith(self, prompts, prefixes, generator):
        mdp = self.mdp
        B, H = len(prompts), mdp.H
        ops, true = mdp.problem_arrays(np.asarray(prompts, dtype=np.int64))
        written = np.zeros((B, H), dtype=np.int64)
        plen = np.fromiter((len(p) for p in prefixes), dtype=np.int64, count=B)
        for i, pre in enumerate(prefixes):
            written[i, : len(pre)] = pre
        u = generator.random((B, H))
        for h in range(int(plen.min()), H):
            rows = np.flatnonzero(plen <= h)
            st = mdp.step_states(ops[rows], true[rows], written[rows], h)
            written[rows, h] = self._draw(st, u[rows, h])
        return written.tolist()

    def _continue_tree(self, prompts, prefixes, generator):
        mdp = self.mdp
        B, H = len(prompts), mdp.H
        node = mdp.root_of(np.asarray(prompts, dtype=np.int64)).copy()
        out = [list(pre) for pre in prefixes]
        for i, pre in enumerate(prefixes):
            node[i] = mdp.node_after(node[i], pre)
        u = generator.random((B, H))
        plen = np.fromiter((len(p) for p in prefixes), dtype=np.int64, count=B)
        for h in range(int(plen.min()), H):
            rows = np.flatnonzero((plen <= h) & ~mdp._leaf[node])
            if rows.size == 0:
                break
            a = self._draw(node[rows], u[rows, h])
            node[rows] = mdp._children[node[rows], a]
            for r, x in zip(rows.tolist(), a.tolist()):
                out[r].append(x)
        return out
