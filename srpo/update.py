"""The update phase: log-probs a method needs, then the registered policy loss and the optimizer.

``PolicyUpdater`` runs on one batch of ``TrainingSample``\\ s:

1. ``plan``: the batch is split into ``mini_batches`` parts by prompt (one optimizer step each;
   the release: 4) and each part into micro-batches capped in sequences and padded tokens;
2. ``precompute``: no-grad log-probs per micro-batch of the sampling policy (``old``: PPO ratios,
   SPO-Tree's probability mask) and of the reference policy (``ref``: the k3 KL penalty, SCoRe's
   KL in the reward), when the loss or the method needs them;
3. ``update``: per micro-batch the registered loss (``srpo.loss.POLICY_LOSSES[config.loss]``) on
   log-probs at the sampling temperature, plus ``kl_coef`` x k3 KL and minus ``entropy_coef`` x
   entropy, weighted so that the micro-batches of a part add up to the part's aggregated loss;
   gradient clipping; one optimizer step per part (``updates_per_step`` passes).

Advantages may be per sequence (B,) or per token (list of (T_i,) arrays).
"""

from __future__ import annotations

import numpy as np
import torch

from srpo.loss import POLICY_LOSSES, aggregate, gradient_signal, kl_k3
from srpo.metrics import nanmean

__all__ = ["PolicyUpdater", "micro_batches", "mini_batches"]


def _pad(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    out = rows[0].new_zeros((len(rows), width))
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


def micro_batches(
    indices: list[int], lengths: list[int], max_seqs: int, max_tokens: int | None
) -> list[list[int]]:
    """Consecutive chunks of ``indices`` with at most ``max_seqs`` sequences and at most
    ``max_tokens`` padded tokens (chunk size x longest sequence); a longer sequence is alone."""
    chunks: list[list[int]] = []
    current: list[int] = []
    widest = 0
    for i in indices:
        width = max(widest, lengths[i])
        if current and (
            len(current) >= max_seqs
            or (max_tokens is not None and (len(current) + 1) * width > max_tokens)
        ):
            chunks.append(current)
            current, width = [], lengths[i]
        current.append(i)
        widest = width
    if current:
        chunks.append(current)
    return chunks


def mini_batches(samples, n_mini: int) -> list[list[int]]:
    """Sample indices split into ``n_mini`` parts by prompt (a prompt's groups stay together)."""
    if n_mini == 1:
        return [list(range(len(samples)))]
    prompts = sorted({s.prompt_index for s in samples})
    parts = np.array_split(np.array(prompts), n_mini)
    owner = {int(p): j for j, part in enumerate(parts) for p in part}
    out: list[list[int]] = [[] for _ in range(n_mini)]
    for i, s in enumerate(samples):
        out[owner[s.prompt_index]].append(i)
    return [part for part in out if part]


class PolicyUpdater:
    """Log-probs, losses and optimizer steps for one method (module docstring).

    Args:
        model: the policy (LoRA or full). ref_model: a frozen reference, or None (a LoRA model's
            adapter is disabled instead). optimizer: over the trainable parameters.
        config: ``srpo.config.TrainConfig``. tokenizer: for the pad id.
        loss_params: extra keyword arguments of the registered loss (``Method.loss_params``).
        needs: what the method needs besides the loss (``Method.needs``).
    """

    def __init__(
        self, model, ref_model, optimizer, config, tokenizer, loss_params=None, needs=frozenset()
    ) -> None:
        self.model, self.ref_model, self.optimizer = model, ref_model, optimizer
        self.config = config
        self.pad = tokenizer.pad_token_id or 0
        # log pi of the policy that sampled the rollouts: logits / the sampling temperature (as
        # in verl); top_p is not applied. Greedy sampling (temperature 0) falls back to 1.
        self.temperature = config.temperature if config.temperature > 0 else 1.0
        self.loss_fn = POLICY_LOSSES[config.loss]
        self.loss_params = dict(loss_params or {})
        # SCoRe's KL in the reward (ref_logprobs) is mean_t (log pi_old - log pi_ref): old too
        self.needs_old = config.loss != "reinforce" or bool(
            {"old_logprobs", "ref_logprobs"} & set(needs)
        )
        self.needs_ref = config.kl_coef > 0 or "ref_logprobs" in needs
        self.params = [p for p in model.parameters() if p.requires_grad]

    # -- log-probs --------------------------------------------------------------------------------
    def _logprobs(self, model, samples, masks, idx, grad, entropy=False):
        from srpo.logprobs import token_logprobs

        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx:
            out = token_logprobs(
                model,
                [samples[i].prompt_ids for i in idx],
                [samples[i].response_ids for i in idx],
                self.config.device,
                temperature=self.temperature,
                pad_id=self.pad,
                chunk_tokens=self.config.logprob_chunk_tokens,
                with_entropy=entropy,
            )
        lp, ent = out if entropy else (out, None)
        width = max(1, max(x.shape[0] for x in lp))
        mask = _pad([masks[i] for i in idx], width).to(lp[0].device)
        return _pad(lp, width), mask, None if ent is None else _pad(ent, width)

    def _reference(self, samples, masks, idx):
        if self.ref_model is not None:
            return self._logprobs(self.ref_model, samples, masks, idx, grad=False)[0]
        with self.model.disable_adapter():
            return self._logprobs(self.model, samples, masks, idx, grad=False)[0]

    def plan(self, samples):
        """``(minis, chunks, masks, n_tok, lengths)`` of a batch (module docstring, step 1)."""
        masks = [torch.tensor(s.loss_mask, dtype=torch.float32) for s in samples]
        lengths = [len(s.prompt_ids) + len(s.response_ids) for s in samples]
        minis = mini_batches(samples, self.config.mini_batches)
        chunks = [
            micro_batches(
                part, lengths, self.config.micro_batch_size, self.config.micro_batch_tokens
            )
            for part in minis
        ]
        return minis, chunks, masks, [int(m.sum()) for m in masks], lengths

    def precompute(self, samples) -> dict:
        """No-grad ``old`` and ``ref`` log-probs per micro-batch, as the loss and method need:
        ``{"plan": ..., "old": {(m, c): (b, w) tensor}, "ref": {...}}``."""
        plan = self.plan(samples)
        chunks, masks = plan[1], plan[2]
        old, ref = {}, {}
        if self.needs_old or self.needs_ref:
            for m, part in enumerate(chunks):
                for c, idx in enumerate(part):
                    if self.needs_old:
                        old[m, c] = self._logprobs(self.model, samples, masks, idx, False)[0]
                    if self.needs_ref:
                        ref[m, c] = self._reference(samples, masks, idx)
        return {"plan": plan, "old": old, "ref": ref}

    def per_sample(self, cache: dict, key: str, samples) -> list[np.ndarray] | None:
        """The cached ``key`` log-probs as one (T_i,) array per sample (None if not computed)."""
        if not cache[key]:
            return None
        chunks = cache["plan"][1]
        out: list = [None] * len(samples)
        for (m, c), t in cache[key].items():
            for row, i in enumerate(chunks[m][c]):
                n = len(samples[i].response_ids)
                out[i] = t[row, :n].detach().cpu().numpy().astype(np.float64)
        return out

    # -- the update -------------------------------------------------------------------------------
    def _advantage_rows(self, advantages, idx, width, device) -> torch.Tensor:
        """(b,) or (b, width) advantages of the micro-batch ``idx``."""
        if isinstance(advantages, np.ndarray) and advantages.ndim == 1:
            return torch.as_tensor(advantages, dtype=torch.float32)[idx].to(device)
        rows = [
            torch.as_tensor(
                np.asarray(advantages[i], dtype=np.float64)[:width], dtype=torch.float32
            )
            for i in idx
        ]
        return _pad(rows, width).to(device)

    def _weight(self, idx, part, n_tok) -> float:
        if self.config.agg == "token-mean":
            return sum(n_tok[i] for i in idx) / max(sum(n_tok[i] for i in part), 1)
        return sum(n_tok[i] > 0 for i in idx) / max(sum(n_tok[i] > 0 for i in part), 1)

    def _micro_loss(self, samples, masks, advantages, cache, m, c, idx, shaped):
        """The loss of one micro-batch (with grad) and its statistics."""
        cfg = self.config
        lp, mask, ent = self._logprobs(
            self.model, samples, masks, idx, True, entropy=cfg.entropy_coef > 0
        )
        a = self._advantage_rows(advantages, idx, lp.shape[1], lp.device)
        kw = dict(self.loss_params)
        if (m, c) in cache["old"]:
            kw["old_logprobs"] = cache["old"][m, c]
        if cfg.loss != "reinforce":
            kw["clip"] = cfg.clip_eps
        if shaped is not None:
            kw["shaped"] = shaped[idx]
        pg, st = self.loss_fn(lp, a, mask, agg=cfg.agg, norm_tokens=cfg.max_response_tokens, **kw)
        loss, kl = pg, None
        if cfg.kl_coef > 0:
            kl = kl_k3(lp, cache["ref"][m, c], mask, agg=cfg.agg)
            loss = loss + cfg.kl_coef * kl
        if ent is not None:
            loss = loss - cfg.entropy_coef * aggregate(ent, mask, cfg.agg, cfg.max_response_tokens)
        return lp, a, mask, loss, kl, st

    def update(self, samples, advantages, cache, shaped=None) -> dict:
        """Loss, backward and optimizer step(s) on one batch (module docstring); statistics."""
        cfg = self.config
        minis, plan, masks, n_tok, lengths = cache["plan"]
        losses, kls, clips, norms, g_reset, g_base = [], [], [], [], [], []
        training = self.model.training
        if cfg.grad_checkpointing:
            self.model.train()  # transformers checkpoints blocks only in training mode
        try:
            for epoch in range(cfg.updates_per_step):
                for m, (part, chunks) in enumerate(zip(minis, plan)):
                    self.optimizer.zero_grad(set_to_none=True)
                    totals = [0.0, 0.0, 0.0]  # loss, kl, clip fraction
                    for c, idx in enumerate(chunks):
                        lp, a, mask, loss, kl, st = self._micro_loss(
                            samples, masks, advantages, cache, m, c, idx, shaped
                        )
                        weight = self._weight(idx, part, n_tok)
                        (loss * weight).backward()
                        totals[0] += float(loss.detach()) * weight
                        totals[1] += 0.0 if kl is None else float(kl.detach()) * weight
                        totals[2] += st["clip_frac"] * weight
                        if epoch == 0:
                            g = gradient_signal(lp.detach(), a, mask).tolist()
                            for i, gi in zip(idx, g):
                                (g_reset if samples[i].is_reset_group else g_base).append(gi)
                    norm = self._step()
                    if epoch == 0:
                        losses.append(totals[0])
                        kls.append(totals[1])
                        clips.append(totals[2])
                        norms.append(norm)
        finally:
            self.model.train(training)
        return {
            "loss": float(np.mean(losses)),
            "kl": float(np.mean(kls)),
            "clip_frac": float(np.mean(clips)),
            "grad_norm": float(np.mean(norms)),
            "optimizer_updates": len(minis) * cfg.updates_per_step,
            "update_tokens": int(sum(lengths)),
            "grad_signal_reset": nanmean(g_reset),
            "grad_signal_base": nanmean(g_base),
        }

    def _step(self) -> float:
        if self.config.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        else:
            norm = torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in self.params if p.grad is not None])
            )
        self.optimizer.step()
        return float(norm)
