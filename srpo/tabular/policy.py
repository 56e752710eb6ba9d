"""The tabular softmax policy as a torch "language model": logits are a table indexed by state.

``TablePolicy(mdp, logits0)`` holds one trainable parameter, ``table`` (S, A). Called like a
causal LM (``model(input_ids=..., attention_mask=..., position_ids=..., use_cache=False)``), it
returns ``.logits`` of shape (B, T, A) with ``logits[b, t] = table[state(b, t)]``, the state from
which position t predicts token t+1 (``mdp.states_torch``; zeros where no response token is
predicted). That is all ``srpo.logprobs.token_logprobs`` reads (it has no ``get_decoder``, so the
plain full-logits path runs), so ``srpo.update.PolicyUpdater`` -- the registered loss, the masks,
the aggregation, gradient clipping and the optimizer step -- runs on it unchanged.

``probabilities(temperature)`` is the sampling distribution ``softmax(table / temperature)`` as
numpy (S, A) float64, for the engine and for exact evaluation.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

__all__ = ["TablePolicy", "PadTokenizer", "log_probabilities"]


class TablePolicy(torch.nn.Module):
    """A softmax policy with one logit per (state, action) (module docstring).

    Args:
        mdp: a thought MDP (``srpo.tabular.mdp``) with ``n_states``, ``n_actions`` and
            ``states_torch``.
        logits0: (S, A) initial logits (e.g. ``log_probabilities`` of an initial policy).
    """

    def __init__(self, mdp, logits0: np.ndarray) -> None:
        super().__init__()
        logits0 = np.asarray(logits0, dtype=np.float32)
        if logits0.shape != (mdp.n_states, mdp.n_actions):
            raise ValueError(
                f"logits0: expected shape (S, A) = ({mdp.n_states}, "
                f"{mdp.n_actions}); got {logits0.shape}"
            )
        self.mdp = mdp
        self.table = torch.nn.Parameter(torch.tensor(logits0))

    def forward(
        self, input_ids, attention_mask=None, position_ids=None, use_cache=False, **_
    ) -> SimpleNamespace:
        states = self.mdp.states_torch(input_ids).to(self.table.device)
        logits = self.table[states.clamp(min=0)]
        logits = torch.where((states >= 0).unsqueeze(-1), logits, torch.zeros_like(logits))
        return SimpleNamespace(logits=logits)

    @torch.no_grad()
    def probabilities(self, temperature: float = 1.0) -> np.ndarray:
        """(S, A) float64 ``softmax(table / temperature)``."""
        t = temperature if temperature > 0 else 1.0
        return torch.softmax(self.table.detach().double() / t, dim=-1).cpu().numpy()


class PadTokenizer:
    """What ``PolicyUpdater`` reads from a tokenizer: the pad id (any id: padded positions are
    never scored)."""

    pad_token_id = 0


def log_probabilities(probs: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """Logits of a policy given as probabilities (S, A): ``log(max(p, floor))`` (an action of
    probability 0 keeps a tiny one, so that RL can still find it)."""
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), floor))
