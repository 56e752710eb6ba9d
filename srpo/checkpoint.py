"""Checkpoints, weight exports and the metrics log of a run (atomic writes, resumable).

``save_checkpoint`` writes ``checkpoint.pt`` (model, optimizer, every random stream, the sampler,
all rows so far) and its small sidecar ``checkpoint.json`` (the run key, read by
``srpo.config.checkpoint_compatibility`` without loading torch); ``save_weights`` exports the
trained weights in Hugging Face form (``adapter/`` for a LoRA model, ``model/`` otherwise),
replacing the previous export atomically; ``append_row`` / ``write_rows`` keep ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch

__all__ = ["save_checkpoint", "save_weights", "jsonable", "write_rows", "append_row"]


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    from srpo import config as config_module

    sidecar = {
        "run_key": state["run_key"],
        "iteration": state["iteration"],
        "trainer_version": config_module.TRAINER_VERSION,
    }
    tmp_json = path.with_name("checkpoint.json.tmp")
    tmp_json.write_text(json.dumps(sidecar))
    os.replace(tmp_json, path.with_name("checkpoint.json"))


def save_weights(model, tokenizer, out: Path, iteration: int) -> Path:
    """Export the trained weights in Hugging Face form, replacing the previous export atomically
    (``adapter/`` for a peft model: ``save_pretrained`` of the adapter only; ``model/`` else)."""
    from srpo.model import save_model

    name = "adapter" if hasattr(model, "peft_config") else "model"
    final = out / name
    tmp = out / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model(model, tokenizer, tmp)
    (tmp / "trainer_state.json").write_text(json.dumps({"iteration": iteration}))
    old = out / f".{name}.old"
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    return final


def jsonable(v):
    """A value fit for JSON: numpy scalars as Python numbers, NaN and inf as None."""
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_rows(path: Path, rows: list[dict]) -> None:
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def append_row(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
