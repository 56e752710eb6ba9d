"""The trainer on a task file with a real architecture (random Qwen2, BPE tokenizer): epochs, eval
sources, mini-batches, token-capped micro-batches, LoRA + checkpointing, KL through the disabled
adapter, weights export, resume of the epoch stream."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from srpo.buffers import TrainingSample
from srpo.config import PAPER_RECIPE, RELEASE_PROFILE, SYNTHETIC_PROFILE, ConfigError, TrainConfig
from srpo.model import load_model
from srpo.tasks import DatasetTask
from srpo.trainer import _micro_batches, _mini_batches, _policy_update, train
from tests.srpo.real_model import arithmetic_rows, make_model_dir, write_jsonl


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    return make_model_dir(root / "m"), write_jsonl(root / "train.jsonl", arithmetic_rows(9)), \
        write_jsonl(root / "val.jsonl", arithmetic_rows(3, seed=5))


@pytest.fixture(autouse=True)
def mixed_rewards(monkeypatch):
    """A random model solves nothing; grade by response-length parity so that groups differ."""
    monkeypatch.setattr(DatasetTask, "grade", lambda self, problem, text: float(len(text) % 2))


def _config(real, out, **kw):
    model, task, _ = real
    base = dict(method="srpo", model=str(model), task=str(task), prompts_per_step=3,
                max_thoughts=2, max_thought_tokens=5, localization_max_new_tokens=5,
                max_fresh_chains=8, eval_size=2, eval_every=1, lr=1e-2, lora_rank=4,
                out_dir=str(out), checkpoint_every=1)
    base.update(kw)
    return TrainConfig(**base)


def test_profiles_resolve_by_task(real):
    synthetic = TrainConfig()
    assert (synthetic.max_thoughts, synthetic.max_thought_tokens, synthetic.steps) == (8, 24, 40)
    assert synthetic.max_response_tokens == 8 * 24  # never binds before the thought cap
    assert synthetic.localization_prompt == "compact" and synthetic.localization_top_p == 1.0
    filed = TrainConfig(task=str(real[1]), top_p=0.9)
    for name, value in RELEASE_PROFILE.items():
        if value is not None:
            assert getattr(filed, name) == value, name
    assert filed.localization_top_p == 0.9 and filed.steps is None
    assert TrainConfig(split="1x8").localization_temperature == 0.0
    assert set(SYNTHETIC_PROFILE) >= set(RELEASE_PROFILE)
    assert set(PAPER_RECIPE) <= set(TrainConfig.__dataclass_fields__)
    with pytest.raises(ConfigError, match="mini_batches must be <= prompts_per_step") as err:
        TrainConfig(mini_batches=9)
    assert err.value.field == "mini_batches"


def test_micro_and_mini_batch_plans():
    lengths = [10, 10, 30, 5, 5, 5]
    assert _micro_batches(list(range(6)), lengths, 64, None) == [[0, 1, 2, 3, 4, 5]]
    assert _micro_batches(list(range(6)), lengths, 2, None) == [[0, 1], [2, 3], [4, 5]]
    assert _micro_batches(list(range(6)), lengths, 64, 40) == [[0, 1], [2], [3, 4, 5]]
    samples = [TrainingSample([1], [2], [1], 0.0, g, False, p) for p, g in
               [(0, 0), (0, 0), (1, 1), (2, 2), (2, 3), (3, 4)]]
    assert _mini_batches(samples, 2) == [[0, 1, 2], [3, 4, 5]]
    assert _mini_batches(samples, 1) == [list(range(6))]


def _samples(tok):
    prompts = [tok.encode(f"What is {i} + 1?\n") for i in range(4)]
    out = []
    for i, p in enumerate(prompts):
        for j in range(2):
            response = tok.encode(f"We add {i} and {j}.</thought>", add_special_tokens=False)
            mask = [0] * 3 + [1] * (len(response) - 3) if j else [1] * len(response)
            out.append(TrainingSample(p, response, mask, float(j), i, bool(j), i))
    return out


def _update(real, samples, adv, **kw):
    torch.manual_seed(0)
    model, tok = load_model(real[0], lora_rank=4)
    cfg = TrainConfig(model=str(real[0]), lr=1e-2, grad_clip=None, lora_rank=4, **kw)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    stats = _policy_update(model, None, opt, samples, adv, cfg, tok)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}, stats


def test_micro_batch_caps_do_not_change_the_update(real):
    tok = load_model(real[0])[1]
    samples = _samples(tok)
    adv = np.array([1.0, -1.0] * 4)
    reference, stats = _update(real, samples, adv)
    for kw in ({"micro_batch_size": 3}, {"micro_batch_tokens": 40}, {"logprob_chunk_tokens": 2},
               {"grad_checkpointing": True}):
        params, other = _update(real, samples, adv, **kw)
        # The loss (~5e-3) is a sum of +-log-prob terms of size ~1-10 that nearly cancel; float32
        # round-off in those terms (~1e-7 relative, summed in another order when chunked) reaches
        # ~2e-7 absolute on some CPUs, so the tolerance is absolute at the terms' scale.
        assert other["loss"] == pytest.approx(stats["loss"], rel=1e-5, abs=1e-6), kw
        for name in reference:
            torch.testing.assert_close(params[name], reference[name], atol=1e-6, rtol=1e-5)


def test_mini_batches_are_sequential_updates_on_prompt_parts(real):
    tok = load_model(real[0])[1]
    samples = _samples(tok)
    adv = np.array([1.0, -1.0] * 4)
    params, stats = _update(real, samples, adv, mini_batches=2, prompts_per_step=4)
    assert stats["optimizer_updates"] == 2
    # reference: two one-mini-batch updates, prompts 0-1 then 2-3, with one optimizer
    torch.manual_seed(0)
    model, tok = load_model(real[0], lora_rank=4)
    cfg = TrainConfig(model=str(real[0]), lr=1e-2, grad_clip=None, lora_rank=4)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    for part in (slice(0, 4), slice(4, 8)):
        _policy_update(model, None, opt, samples[part], adv[part], cfg, tok)
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(params[name], p.detach(), atol=1e-6, rtol=1e-5)
    single, _ = _update(real, samples, adv)
    assert any(not torch.allclose(single[n], params[n]) for n in params)


def test_file_task_epochs_eval_sources_and_weights(real, tmp_path):
    _, _, val = real
    df = train(_config(real, tmp_path / "a", epochs=2, eval_task=str(val), kl_coef=0.1,
                       grad_checkpointing=True))
    assert list(df.iteration) == list(range(7))  # 2 epochs x 9 problems // 3 per step
    # the reference is the model with its adapter disabled: equal to the policy before the
    # first update (LoRA B starts at 0), different after
    assert df.kl.iloc[1] == pytest.approx(0.0, abs=1e-7) and df.kl.iloc[-1] > 1e-6
    info = json.loads((tmp_path / "a" / "run_info.json").read_text())
    assert (info["eval_source"], info["eval_problems"], info["train_problems"]) == ("eval_task", 2, 9)
    adapter = tmp_path / "a" / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    assert json.loads((adapter / "trainer_state.json").read_text())["iteration"] == 6
    assert json.loads((tmp_path / "a" / "checkpoint.json").read_text())["iteration"] == 6
    trained, _ = load_model(adapter)  # the export loads back (peft) and holds the trained adapter
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    lora_b = [n for n in state if "lora_B" in n][0]
    exported = dict(trained.named_parameters())
    assert torch.equal(exported[lora_b].detach().cpu(), state[lora_b])
    split = train(_config(real, tmp_path / "b", steps=1, eval_split=1 / 3))
    info = json.loads((tmp_path / "b" / "run_info.json").read_text())
    assert (info["eval_source"], info["train_problems"]) == ("eval_split", 6) and len(split) == 2


def _comparable(df):
    drop = [c for c in df.columns if c == "wall_time" or c.startswith("time_")
            or c == "step_time_s" or c.endswith("_gib")]
    return df.drop(columns=drop).reset_index(drop=True)


def test_file_task_resume_continues_the_epoch_stream(real, tmp_path):
    full = train(_config(real, tmp_path / "full", method="rrpo", steps=4, checkpoint_every=2,
                         mini_batches=3))
    assert (full.optimizer_updates.iloc[1:] == 3).all()

    class Killed(Exception):
        pass

    def kill_at_3(row):
        if row["iteration"] == 3:
            raise Killed

    cfg = _config(real, tmp_path / "resumed", method="rrpo", steps=4, checkpoint_every=2,
                  mini_batches=3)
    with pytest.raises(Killed):
        train(cfg, callback=kill_at_3)
    resumed = train(cfg)
    pd.testing.assert_frame_equal(_comparable(full), _comparable(resumed))
