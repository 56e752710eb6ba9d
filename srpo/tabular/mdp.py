"""Thought MDPs a tabular softmax policy acts in: token layout, states, rewards, exact values.

A tabular policy plugs into the method registry (``srpo.methods``) as a language model does: its
prompts and responses are *token ids*. Here one token is one whole thought (an action of the
thought MDP), so a response of n thoughts has n ids and n one-token spans. Two MDPs:

* ``ArithmeticThoughtMDP``: the language model's own task (``srpo.tasks.ModularArithmeticTask``).
  The prompt encodes the problem: ``[m + start, 2m + op_1, ..., 2m + op_H]`` (m the modulus, op_i
  the index of the i-th ``(operator, operand)`` in ``op_vocab``); a response token is the value
  written at a step (``0..m-1``), so thought i reads ``{v_(i-1)}{op}{operand}={a_i}`` with v the
  previous *written* value, exactly as the language model writes it
  (``srpo.tasks.format_step``, the last thought boxed). The state before step h+1
  (h = 0..H-1 thoughts written) is ``(h, op_(h+1), v_h, clean_h)``: the step index, the operation
  to apply, the current written value and whether every written value so far is the true one.
  The reward is the task's grade: 1 iff the last written value is the answer.
* ``TreeThoughtMDP``: a ``cpi.TreeMDP`` (the first-error trees of ``cpi.envs``, or a forest of
  them): the prompt is ``[A + r]`` for the r-th root of the start distribution, a response token
  is an action, the state is the node reached; the reward is the leaf's.

Both give, for a batch of token sequences, the state each position predicts from
(``states_torch``: the torch "model" ``srpo.tabular.policy.TablePolicy`` indexes its table with
it, so the registry's update code runs unchanged) and, for vectorised sampling, the state of a
batch of partial chains (``step_states``).

Shapes: B chains (rows), T token positions, S states, A actions (thoughts).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from srpo.tasks import ModArithProblem, ModularArithmeticTask, format_step

__all__ = ["ArithmeticThoughtMDP", "TreeThoughtMDP", "TreeProblem", "TreeTask"]

_OPS = ("+", "-", "*")


def _affine(op: str, operand: int, m: int) -> tuple[int, int]:
    """``(mul, add)`` with ``apply_op(v, op, operand, m) == (mul * v + add) % m``."""
    if op == "+":
        return 1, operand % m
    if op == "-":
        return 1, (-operand) % m
    return operand % m, 0


class ArithmeticThoughtMDP:
    """The thought MDP of a ``ModularArithmeticTask`` (module docstring).

    Args:
        task: the task (its ``n_steps`` H and ``modulus`` m; problems come from ``task.sample``).

    Attributes:
        op_vocab: every ``(operator, operand)`` with operator in ``+ - *`` and operand in
            ``1..m-1`` (27 for m = 10), in a fixed order; ``op_index`` maps back.
        n_actions: m (a thought writes one value). n_states: ``H * len(op_vocab) * m * 2``.
        prompt_len: H + 1 tokens. vocab: token ids are ``< 2m + len(op_vocab)``.
    """

    def __init__(self, task: ModularArithmeticTask) -> None:
        self.task = task
        self.H = int(task.n_steps)
        self.m = int(task.modulus)
        self.op_vocab = [(op, x) for op, x in itertools.product(_OPS, range(1, self.m))]
        self.op_index = {op: i for i, op in enumerate(self.op_vocab)}
        self.n_ops = len(self.op_vocab)
        self.n_actions = self.m
        self.n_states = self.H * self.n_ops * self.m * 2
        self.prompt_len = self.H + 1
        self.vocab = 2 * self.m + self.n_ops
        aff = np.array([_affine(op, x, self.m) for op, x in self.op_vocab], dtype=np.int64)
        self._mul, self._add = aff[:, 0], aff[:, 1]
        self._mul_t = torch.as_tensor(self._mul)
        self._add_t = torch.as_tensor(self._add)

    # -- problems and prompts ---------------------------------------------------------------------
    def prompt_ids(self, problem: ModArithProblem) -> list[int]:
        """``[m + start, 2m + op_1, ..., 2m + op_H]``."""
        if problem.n_steps != self.H or problem.modulus != self.m:
            raise ValueError(
                f"problem: expected {self.H} steps mod {self.m}; got "
                f"{problem.n_steps} steps mod {problem.modulus}"
            )
        return [self.m + int(problem.start)] + [
            2 * self.m + self.op_index[op] for op in problem.ops
        ]

    def problem_arrays(self, prompts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ops, true)`` of (B, H+1) prompt ids: op indices (B, H) and the true running values
        (B, H+1), ``true[:, 0]`` the start."""
        prompts = np.asarray(prompts, dtype=np.int64)
        ops = prompts[:, 1:] - 2 * self.m
        true = np.empty((prompts.shape[0], self.H + 1), dtype=np.int64)
        true[:, 0] = prompts[:, 0] - self.m
        for h in range(self.H):
            true[:, h + 1] = (self._mul[ops[:, h]] * true[:, h] + self._add[ops[:, h]]) % self.m
        return ops, true

    # -- states -----------------------------------------------------------------------------------
    def state_index(self, h, op, value, clean):
        """Flat state of ``(h, op, value, clean)`` (numpy or torch, broadcast)."""
        return ((h * self.n_ops + op) * self.m + value) * 2 + clean

    def step_states(self, ops, true, written, h: int) -> np.ndarray:
        """(B,) states before step h+1 of B partial chains whose first h values are
        ``written[:, :h]`` (ops, true from ``problem_arrays``)."""
        value = true[:, 0] if h == 0 else written[:, h - 1]
        clean = np.all(written[:, :h] == true[:, 1 : h + 1], axis=1).astype(np.int64)
        return self.state_index(h, ops[:, h], value, clean)

    def states_torch(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) long: the state from which position t predicts token t+1 (-1 where t+1 is not
        a response token). Rows are prompt + response, right-padded; every prompt has H+1 ids."""
        B, T = input_ids.shape
        L, H, m = self.prompt_len, self.H, self.m
        out = torch.full((B, T), -1, dtype=torch.long)
        n = min(H, T - L + 1)
        if n <= 0:
            return out
        ids = input_ids.long().cpu()
        ops = (ids[:, 1:L] - 2 * m).clamp(0, self.n_ops - 1)
        true = torch.empty((B, H + 1), dtype=torch.long)
        true[:, 0] = (ids[:, 0] - m).clamp(0, m - 1)
        for h in range(H):
            true[:, h + 1] = (self._mul_t[ops[:, h]] * true[:, h] + self._add_t[ops[:, h]]) % m
        written = torch.zeros((B, H), dtype=torch.long)
        w = ids[:, L : L + H].clamp(0, m - 1)
        written[:, : w.shape[1]] = w
        value = torch.cat([true[:, :1], written[:, : H - 1]], dim=1)
        eq = (written == true[:, 1:]).long()
        clean = torch.cat([torch.ones((B, 1), dtype=torch.long), torch.cumprod(eq, 1)[:, :-1]], 1)
        hs = torch.arange(H).unsqueeze(0)
        states = self.state_index(hs, ops, value, clean)
        out[:, L - 1 : L - 1 + n] = states[:, :n]
        return out

    # -- text, reward, verifier -------------------------------------------------------------------
    def thought_texts(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> list[str]:
        """The thoughts as the language model writes them (``format_step``; the H-th boxed)."""
        m = self.m
        v = int(prompt_ids[0]) - m
        out = []
        for h, a in enumerate(response_ids):
            op, x = self.op_vocab[int(prompt_ids[1 + h]) - 2 * m]
            out.append(format_step(v, op, x, int(a), final=h == self.H - 1))
            v = int(a)
        return out

    def reward(self, problem: ModArithProblem, response_ids: Sequence[int]) -> float:
        """1.0 iff the chain is complete and its last written value is the answer (the task's
        grade of the chain's text: only the H-th thought is boxed)."""
        if len(response_ids) != self.H:
            return 0.0
        return float(int(response_ids[-1]) == int(problem.answer))

    def correct_actions(self, prompts: np.ndarray) -> np.ndarray:
        """(B, H) the true value of every step (the locally correct action after a clean
        prefix)."""
        return self.problem_arrays(prompts)[1][:, 1:]

    # -- exact quantities of a policy ---------------------------------------------------------------
    def success_probability(self, probs: np.ndarray, prompts: np.ndarray) -> np.ndarray:
        """(B,) exact P(success) of the policy ``probs`` (S, A) on each prompt: a forward pass
        over (written value, clean) -- a wrong value that later lands back on the true one counts,
        as the grade counts it."""
        ops, true = self.problem_arrays(prompts)
        B, m = true.shape[0], self.m
        dist = np.zeros((B, m, 2))
        dist[np.arange(B), true[:, 0], 1] = 1.0
        values = np.arange(m)
        for h in range(self.H):
            st = self.state_index(
                h, ops[:, h, None, None], values[None, :, None], np.arange(2)[None, None, :]
            )
            p = probs[st]  # (B, m, 2, A)
            mass = dist[..., None] * p  # (B, v, c, a)
            ok = values[None, :] == true[:, h + 1, None]  # (B, a)
            new = np.zeros_like(dist)
            new[:, :, 1] = mass[:, :, 1, :].sum(axis=1) * ok
            new[:, :, 0] = mass[:, :, 0, :].sum(axis=1) + mass[:, :, 1, :].sum(axis=1) * ~ok
            dist = new
        return dist[np.arange(B), true[:, -1], :].sum(axis=1)

    def step_correct_probabilities(self, probs: np.ndarray, prompts: np.ndarray) -> np.ndarray:
        """(B, H) q[i, k]: probability of the true value at step k+1 after a clean prefix (the
        input of ``experiments.coverage_study.measure.readings_from_q``)."""
        ops, true = self.problem_arrays(prompts)
        hs = np.arange(self.H)[None, :]
        st = self.state_index(hs, ops, true[:, :-1], 1)
        return np.take_along_axis(probs[st], true[:, 1:, None], axis=2)[..., 0]


@dataclass(frozen=True)
class TreeProblem:
    """A start node of a ``TreeThoughtMDP``: ``root`` (node id) and its slot in the roots."""

    root: int
    slot: int
    question: str = ""

    @property
    def answer(self) -> str:  # pragma: no cover - trees have no answer text
        return ""


class TreeThoughtMDP:
    """A ``cpi.TreeMDP`` as a thought MDP (module docstring).

    Args:
        tree: the tree (``mu`` over its roots; reward on arriving at a node, summed along the
            chain). A ``first_error_tree`` (or a forest of them) also gives the step verifier
            through ``meta["first_error_step"]``.
    """

    def __init__(self, tree) -> None:
        self.tree = tree
        self.roots = np.flatnonzero(np.asarray(tree.mu) > 0)
        self.root_mass = np.asarray(tree.mu)[self.roots]
        self.n_actions = int(tree.n_actions)
        self.n_states = int(tree.n_nodes)
        self.H = int(tree.horizon)
        self.prompt_len = 1
        self.vocab = self.n_actions + len(self.roots)
        self._children = np.asarray(tree.children)
        self._children_t = torch.as_tensor(self._children.copy())
        self._roots_t = torch.as_tensor(self.roots)
        self._leaf = np.asarray(tree.is_leaf)
        self._fe = tree.meta.get("first_error_step")

    def prompt_ids(self, problem: TreeProblem) -> list[int]:
        return [self.n_actions + int(problem.slot)]

    def root_of(self, prompts: np.ndarray) -> np.ndarray:
        return self.roots[np.asarray(prompts, dtype=np.int64)[:, 0] - self.n_actions]

    def node_after(self, root: int, actions: Sequence[int]) -> int:
        node = int(root)
        for a in actions:
            node = int(self._children[node, int(a)])
        return node

    def states_torch(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) long: the node from which position t predicts token t+1 (-1 elsewhere and at
        leaves)."""
        ids = input_ids.long().cpu()
        B, T = ids.shape
        out = torch.full((B, T), -1, dtype=torch.long)
        node = self._roots_t[(ids[:, 0] - self.n_actions).clamp(0, len(self.roots) - 1)]
        for t in range(T - 1):
            live = node >= 0
            out[:, t] = torch.where(live, node, torch.full_like(node, -1))
            a = ids[:, t + 1].clamp(0, self.n_actions - 1)
            nxt = self._children_t[node.clamp(min=0), a]
            node = torch.where(live, nxt, node)
        return out

    def thought_texts(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> list[str]:
        return [f"a{int(a)}" for a in response_ids]

    def actions_of(self, thoughts: Sequence[str]) -> list[int]:
        return [int(t[1:]) for t in thoughts]

    def reward_of_node(self, node: int) -> float:
        return float(self.tree.reward[node])

    def path_reward(self, root: int, actions: Sequence[int]) -> float:
        node, total = int(root), 0.0
        for a in actions:
            node = int(self._children[node, int(a)])
            total += float(self.tree.reward[node])
        return total

    def first_error(self, root: int, actions: Sequence[int]) -> int | None:
        """1-based first wrong step on the path (``meta["first_error_step"]``), None if none."""
        if self._fe is None:
            return None
        fe = int(self._fe[self.node_after(root, actions)])
        return fe or None


class TreeTask:
    """The task protocol over a ``TreeThoughtMDP``: ``sample`` roots from mu, a step verifier
    from the tree's first-error bookkeeping (``has_step_verifier``), grading by the path reward."""

    def __init__(self, mdp: TreeThoughtMDP) -> None:
        self.mdp = mdp
        self.has_step_verifier = mdp._fe is not None

    def sample(self, n: int, rng: np.random.Generator) -> list[TreeProblem]:
        slots = rng.choice(len(self.mdp.roots), size=n, p=self.mdp.root_mass)
        return [
            TreeProblem(int(self.mdp.roots[s]), int(s), f"root {int(self.mdp.roots[s])}")
            for s in slots
        ]

    def prompt(self, problem: TreeProblem) -> str:
        return problem.question

    def first_error(self, problem: TreeProblem, thoughts: Sequence[str]) -> int | None:
        return self.mdp.first_error(problem.root, self.mdp.actions_of(thoughts))

    def grade(self, problem: TreeProblem, response_text: str) -> float:  # pragma: no cover
        raise ValueError("TreeTask grades chains by their path reward (srpo.tabular.seams)")
