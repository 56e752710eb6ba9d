"""Log-probabilities of chosen tokens, in chunks, without full-vocabulary logits for the batch.

The policy update needs log pi(y_t | x, y_<t) of every response token. Taking the model's logits
for a (B, T) batch materialises B x T x V floats (for a 150k vocabulary and 16k tokens: 9.8 GB in
fp32, and as much again for the backward). Here the decoder runs once to hidden states
(B, T, d); only the positions that predict response tokens are kept, (N, d); the output layer,
the log-softmax and the gather then run on chunks of ``chunk_tokens`` positions, each chunk under
activation checkpointing when gradients are needed, so that at most one chunk's (chunk, V) logits
exist at a time, forward or backward. The result equals the full computation (same operations,
same dtype; a test checks values and gradients).

Models whose output is not ``lm_head(decoder(x))`` (final-logit soft-capping, logit scaling) use
the plain full-logits path, which is always correct.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

__all__ = ["token_logprobs", "token_entropies", "split_lm"]

#: config attributes that change logits after the output layer; such models use the plain path
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier")


def split_lm(model):
    """``(decoder, output_layer)`` of a causal LM (peft wrappers included), or None when the
    logits are not simply ``output_layer(decoder(...).last_hidden_state)``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    for name in _LOGIT_TRANSFORMS:
        value = getattr(config, name, None)
        if value not in (None, 1, 1.0):
            return None
    get_decoder = getattr(base, "get_decoder", None)
    get_head = getattr(base, "get_output_embeddings", None)
    if get_decoder is None or get_head is None:
        return None
    try:
        decoder, head = get_decoder(), get_head()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or head is None or decoder is base:
        return None
    return decoder, head


def _chunk_logp(hidden: Tensor, targets: Tensor, head, temperature: float) -> Tensor:
    logits = head(hidden).float() / temperature
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _logp_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """(2, N): log pi of the targets and the entropy of each row of ``logits`` (already scaled)."""
    logz = torch.logsumexp(logits, dim=-1)
    logp_all = logits - logz.unsqueeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(dim=-1)
    return torch.stack([logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1), entropy])


def _chunk_logp_entropy(hidden: Tensor, targets: Tensor, head, temperature: float) -> Tensor:
    return _logp_entropy(head(hidden).float() / temperature, targets)


def _batch_inputs(model, prompt_ids_list, response_ids_list, device, pad_id):
    """The right-padded (B, T_max) model inputs and the (row, column, target) of every response
    token: ``(inputs, sequences, (row_t, col_t, target, sizes))``."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    sequences = []
    for i, (prompt, response) in enumerate(zip(prompt_ids_list, response_ids_list)):
        if len(prompt) == 0:
            raise ValueError(f"prompt_ids_list[{i}] is empty; a prompt needs at least one token")
        sequences.append([int(t) for t in prompt] + [int(t) for t in response])
    if not sequences:
        return None, [], (None, None, None, [])
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = torch.arange(length, device=device).unsqueeze(0).expand(len(sequences), -1)
    rows, cols, targets, sizes = [], [], [], []
    for i, (prompt, response) in enumerate(zip(prompt_ids_list, response_ids_list)):
        start = len(prompt)
        sizes.append(len(response))
        rows.extend([i] * len(response))
        cols.extend(range(start - 1, start - 1 + len(response)))
        targets.extend(int(t) for t in response)
    row_t = torch.tensor(rows, dtype=torch.long, device=device)
    col_t = torch.tensor(cols, dtype=torch.long, device=device)
    target = torch.tensor(targets, dtype=torch.long, device=device)
    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
              "use_cache": False}
    return inputs, sequences, (row_t, col_t, target, sizes)


def token_logprobs(
    model,
    prompt_ids_list: Sequence[Sequence[int]],
    response_ids_list: Sequence[Sequence[int]],
    device=None,
    temperature: float = 1.0,
    pad_id: int = 0,
    chunk_tokens: int | None = 1024,
    with_entropy: bool = False,
):
    """Log-probabilities of each response token given prompt and earlier response tokens.

    Differentiable (no ``no_grad`` inside). The B sequences prompt + response are right-padded into
    one (B, T_max) batch with an attention mask.

    Args:
        model: a causal LM (peft wrappers included).
        prompt_ids_list: B prompts, each non-empty.
        response_ids_list: B responses (may be empty).
        device: input device (default: the model's device).
        temperature: logits are divided by it (1.0: the model's own distribution).
        pad_id: id used for padding (masked out, never scored).
        chunk_tokens: positions per output-layer chunk (None: the plain full-logits path).
        with_entropy: also return the entropy of pi(. | x, y_<t) at every response position
            (nats, at ``temperature``; differentiable like the log-probs).

    Returns:
        B float32 tensors; entry i has shape (len(response_i),) and holds log pi(y_t | x, y_<t)
        in nats. With ``with_entropy``: ``(logprobs, entropies)``, two such lists.
    """
    if len(prompt_ids_list) != len(response_ids_list):
        raise ValueError(
            f"prompt_ids_list and response_ids_list must have the same length, got "
            f"{len(prompt_ids_list)} and {len(response_ids_list)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_tokens is not None and chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1 or None, got {chunk_tokens}")
    inputs, sequences, (row_t, col_t, target, sizes) = _batch_inputs(
        model, prompt_ids_list, response_ids_list, device, pad_id)
    if not sequences:
        return ([], []) if with_entropy else []
    rows = sizes and any(sizes)
    parts = split_lm(model) if chunk_tokens is not None else None
    if parts is None:
        logits = model(**inputs).logits
        if not rows:
            return _empty(logits, len(sequences), with_entropy)
        picked = logits[row_t, col_t].float() / temperature
        if with_entropy:
            both = _logp_entropy(picked, target)
            return list(torch.split(both[0], sizes)), list(torch.split(both[1], sizes))
        logp = picked.gather(-1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(picked, dim=-1)
        return list(torch.split(logp, sizes))
    decoder, head = parts
    hidden = decoder(**inputs).last_hidden_state
    if not rows:
        return _empty(hidden, len(sequences), with_entropy)
    selected = hidden[row_t, col_t]  # (N, d): only the positions that predict response tokens
    chunks = []
    recompute = torch.is_grad_enabled() and selected.requires_grad
    fn = _chunk_logp_entropy if with_entropy else _chunk_logp
    for start in range(0, selected.shape[0], chunk_tokens):
        h, t = selected[start:start + chunk_tokens], target[start:start + chunk_tokens]
        if recompute:
            chunks.append(checkpoint(fn, h, t, head, temperature, use_reentrant=False))
        else:
            chunks.append(fn(h, t, head, temperature))
    if with_entropy:
        both = torch.cat(chunks, dim=1)
        return list(torch.split(both[0], sizes)), list(torch.split(both[1], sizes))
    return list(torch.split(torch.cat(chunks), sizes))


def _empty(like: Tensor, n: int, with_entropy: bool):
    out = [like.new_zeros((0,), dtype=torch.float32) for _ in range(n)]
    return (out, [x.clone() for x in out]) if with_entropy else out


@torch.no_grad()
def token_entropies(model, prompt_ids_list, response_ids_list, device=None,
                    temperature: float = 1.0, pad_id: int = 0,
                    chunk_tokens: int | None = 1024) -> list[Tensor]:
    """Entropy (nats) of pi(. | x, y_<t) at every response position, no gradient: B tensors of
    shape (len(response_i),) (TreeRL's and the entropy rule's branch points)."""
    return token_logprobs(model, prompt_ids_list, response_ids_list, device, temperature, pad_id,
                          chunk_tokens, with_entropy=True)[1]
