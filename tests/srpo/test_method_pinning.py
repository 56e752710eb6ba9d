"""Pinned numbers: one short seeded run of every existing method equals a recording of main.

The fixture ``tests/srpo/data/pinned_metrics.json`` was recorded from the code *before* the
method registry (issue 17): trainer and buffers as they were on main at ae8fbfb. Every later
refactor of the trainer, the buffers, the advantages or the loss must reproduce it: the same
chains, rewards, advantages, token counts, losses, evaluations and final weights, step by step.

Runs: a 1-layer random Llama (``n_layer=1, d_model=32``) on the synthetic task, graded by
response-length parity so that groups have outcome differences (a random model never solves the
task; the training path is what is pinned). Variants: grpo, rrpo, srpo, oracle (1x4), srpo 2x4,
rrpo 1x8, rrpo no-mask, and grpo with PPO-clip + 2 mini-batches + 2 updates + a k3 KL on a LoRA
adapter (the update path's other branches).

Re-record (only when a change is *meant* to change the numbers, with a TRAINER_VERSION bump):
``SRPO_PIN_RECORD=1 python -m pytest tests/srpo/test_method_pinning.py``.

Floats are compared at rtol 1e-6 (the recording machine and CI may round differently in the
last bits; a sampled token would flip only if a uniform draw landed within that of a boundary);
integers (token counts, rollouts, resets) exactly.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from srpo.model import build_tiny_model, save_model
from srpo.tasks import ModularArithmeticTask
from srpo.tokenizer import build_tokenizer
from srpo.trainer import TrainConfig, train

FIXTURE = Path(__file__).parent / "data" / "pinned_metrics.json"
RECORD = os.environ.get("SRPO_PIN_RECORD") == "1"

#: variant -> TrainConfig overrides
VARIANTS = {
    "grpo": dict(method="grpo"),
    "rrpo": dict(method="rrpo"),
    "srpo": dict(method="srpo"),
    "oracle": dict(method="oracle"),
    "srpo-2x4": dict(method="srpo", split="2x4", max_fresh_chains=12),
    "rrpo-1x8": dict(method="rrpo", split="1x8"),
    "rrpo-nomask": dict(method="rrpo", mask_prefix=False, seed=1),
    "rrpo-masked-seed1": dict(method="rrpo", seed=1),
    "grpo-ppo-kl-lora": dict(
        method="grpo",
        loss="ppo-clip",
        updates_per_step=2,
        mini_batches=2,
        kl_coef=0.1,
        agg="token-mean",
        lora_rank=2,
    ),
}

#: columns that measure the machine, not the run
_MACHINE = ("wall_time", "step_time_s", "cuda_peak_gib", "rss_max_gib")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = build_tokenizer()
    model = build_tiny_model(tok, n_layer=1, d_model=32, n_head=2, seed=0)
    return str(save_model(model, tok, tmp_path_factory.mktemp("pin_tiny")))


@pytest.fixture(autouse=True)
def parity_rewards(monkeypatch):
    monkeypatch.setattr(
        ModularArithmeticTask, "grade", lambda self, problem, text: float(len(text) % 2)
    )


def _config(model_dir, out, **kw):
    base = dict(
        steps=2,
        prompts_per_step=2,
        model=model_dir,
        task_steps=2,
        max_thoughts=3,
        max_thought_tokens=6,
        eval_size=4,
        eval_every=1,
        lr=1e-2,
        out_dir=str(out),
        checkpoint_every=0,
        localization_max_new_tokens=4,
        save_weights=False,
        seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def _record_of(df) -> list[dict]:
    rows = []
    for row in df.to_dict(orient="records"):
        keep = {}
        for k, v in row.items():
            if k in _MACHINE or k.startswith("time_"):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            keep[k] = v
        rows.append(keep)
    return rows


def _param_sum(model_dir, out) -> float:
    """Sum of |w| over the trained weights after the run (read from the final checkpoint)."""
    state = torch.load(Path(out) / "checkpoint.pt", weights_only=False)["model"]
    return float(sum(t.double().abs().sum() for t in state.values()))


def _run(model_dir, tmp_path, name):
    out = tmp_path / name
    df = train(_config(model_dir, out, checkpoint_every=2, **VARIANTS[name]))
    return {"rows": _record_of(df), "param_abs_sum": _param_sum(model_dir, out)}


def _same(a, b, where):
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or a is None or b is None:
        assert a == b, f"{where}: {a!r} != {b!r}"
    elif isinstance(a, int) and isinstance(b, int):
        assert a == b, f"{where}: {a} != {b}"
    else:
        assert math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9), f"{where}: {a} != {b}"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_run_equals_the_recording_of_main(model_dir, tmp_path, name):
    got = _run(model_dir, tmp_path, name)
    if RECORD:
        data = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}
        data[name] = got
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        pytest.skip("recorded")
    want = json.loads(FIXTURE.read_text())[name]
    assert len(got["rows"]) == len(want["rows"])
    for it, (g, w) in enumerate(zip(got["rows"], want["rows"])):
        missing = sorted(set(w) - set(g))
        assert not missing, f"{name} iteration {it}: columns gone: {missing}"
        for col in w:
            _same(g[col], w[col], f"{name} iteration {it} column {col}")
    _same(got["param_abs_sum"], want["param_abs_sum"], f"{name} final weights")
