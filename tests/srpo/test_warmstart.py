"""Warm start: seeded data with a controllable error rate, and the on-disk cache."""

import json
import re

import numpy as np
import pytest

from srpo.tasks import apply_op
from srpo.warmstart import MisconceptionWriter, WarmStartConfig, warm_start


def test_misconception_writer_error_rate_and_greedy_gap():
    cfg = WarmStartConfig(confused_fraction=0.3, confusion_prob=0.8, noise_error_rate=0.0)
    writer, task = MisconceptionWriter(cfg), cfg.task()
    rng = np.random.default_rng(0)
    errors = steps = 0
    for p in task.sample(3000, rng):
        for t in writer.solution(p, rng):
            left, op, operand, value = re.match(r"(\d+)([+*-])(\d+)=(\d+)", t).groups()
            errors += int(value) != apply_op(int(left), op, int(operand), p.modulus)
            steps += 1
    # about 30% of the 10 x 3 x 9 facts are confused, each with one fixed wrong value
    realized = len(writer.wrong_value) / 270
    assert realized == pytest.approx(0.3, abs=0.06)
    # local (per-step) error rate ~ confused fraction x confusion probability
    assert errors / steps == pytest.approx(realized * 0.8, abs=0.02)


def test_warm_start_is_cached_by_config(tmp_path):
    cfg = WarmStartConfig(steps=2, n_layer=1, d_model=16, n_head=2, batch_size=4, eval_size=4,
                          n_steps=2)
    path = warm_start(cfg, cache_dir=tmp_path)
    info = json.loads((path / "warmstart.json").read_text())
    assert info["key"] == cfg.key and path.name == cfg.key
    mtime = (path / "warmstart.json").stat().st_mtime_ns
    assert warm_start(cfg, cache_dir=tmp_path) == path  # loaded, not retrained
    assert (path / "warmstart.json").stat().st_mtime_ns == mtime
    other = WarmStartConfig(**{**cfg.__dict__, "seed": 1})
    assert other.key != cfg.key
    with pytest.raises(ValueError, match="confusion_prob"):
        WarmStartConfig(confusion_prob=1.5)
