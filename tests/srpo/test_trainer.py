"""The RL loop end to end on a tiny random model: updates, metrics, determinism, resume, CLI."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from srpo.metrics import METRIC_COLUMNS, RESET_COLUMNS
from srpo.model import build_tiny_model, save_model
from srpo.tasks import ModularArithmeticTask
from srpo.tokenizer import build_tokenizer
from srpo.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = build_tokenizer()
    model = build_tiny_model(tok, n_layer=1, d_model=32, n_head=2, seed=0)
    return str(save_model(model, tok, tmp_path_factory.mktemp("tiny")))


@pytest.fixture(autouse=True)
def mixed_rewards(monkeypatch):
    """A random tiny model never solves the task; grade by response-length parity instead so
    that groups have outcome differences (the training path is what is under test)."""
    monkeypatch.setattr(ModularArithmeticTask, "grade",
                        lambda self, problem, text: float(len(text) % 2))


def _config(model_dir, out, **kw):
    base = dict(method="srpo", steps=2, prompts_per_step=2, model=model_dir, task_steps=2,
                max_thoughts=3, max_thought_tokens=6, eval_size=4, eval_every=1, lr=1e-2,
                out_dir=str(out), checkpoint_every=1, localization_max_new_tokens=4)
    base.update(kw)
    return TrainConfig(**base)


def test_srpo_steps_change_every_parameter_and_log_every_column(model_dir, tmp_path):
    from srpo.model import load_model

    initial, _ = load_model(model_dir)
    df = train(_config(model_dir, tmp_path, steps=3))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"]
    unchanged = [n for n, p in initial.named_parameters() if torch.equal(p, state[n])]
    assert not unchanged, f"parameters not updated: {unchanged}"
    assert list(df.columns[: len(METRIC_COLUMNS)]) == list(METRIC_COLUMNS)
    disk = pd.read_parquet(tmp_path / "metrics.parquet")
    assert set(METRIC_COLUMNS) <= set(disk.columns) and list(disk.iteration) == [0, 1, 2, 3]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [0, 1, 2, 3]
    resets = pd.read_parquet(tmp_path / "resets.parquet")
    assert list(resets.columns) == list(RESET_COLUMNS) and len(resets) > 0
    last = df.iloc[-1]
    assert last.generated_tokens == sum(
        last[c] for c in ("tokens_base", "tokens_parent", "tokens_discarded", "tokens_suffix",
                          "tokens_localization"))
    assert last.tokens_localization > 0 and last.rollouts == 3 * 2 * 8
    assert np.isfinite(df.J).all() and (df.J == df.eval_pass_rate).all()


def _comparable(df):
    """Drop what measures the machine, not the run: times and memory."""
    drop = [c for c in df.columns if c == "wall_time" or c.startswith("time_")
            or c == "step_time_s" or c.endswith("_gib")]
    return df.drop(columns=drop).reset_index(drop=True)


@pytest.mark.parametrize("method", ["srpo", "grpo"])
def test_same_seed_same_metrics(model_dir, tmp_path, method):
    a = train(_config(model_dir, tmp_path / "a", method=method))
    b = train(_config(model_dir, tmp_path / "b", method=method))
    pd.testing.assert_frame_equal(_comparable(a), _comparable(b))


def test_killed_and_resumed_equals_uninterrupted(model_dir, tmp_path):
    full = train(_config(model_dir, tmp_path / "full", method="rrpo", steps=4,
                         checkpoint_every=2))

    class Killed(Exception):
        pass

    def kill_at_3(row):
        if row["iteration"] == 3:
            raise Killed

    cfg = _config(model_dir, tmp_path / "resumed", method="rrpo", steps=4, checkpoint_every=2)
    with pytest.raises(Killed):
        train(cfg, callback=kill_at_3)
    resumed = train(cfg)
    pd.testing.assert_frame_equal(_comparable(full), _comparable(resumed))
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [0, 1, 2, 3, 4]
    r_full = pd.read_parquet(tmp_path / "full" / "resets.parquet")
    r_res = pd.read_parquet(tmp_path / "resumed" / "resets.parquet")
    pd.testing.assert_frame_equal(r_full, r_res)


def test_config_errors(model_dir, tmp_path):
    with pytest.raises(ValueError, match="method must be one of"):
        _config(model_dir, tmp_path, method="ppo")
    with pytest.raises(ValueError, match="split must be one of"):
        _config(model_dir, tmp_path, split="3x3")
    with pytest.raises(ValueError, match="does not exist"):
        train(_config(str(tmp_path / "nope"), tmp_path))


def test_cli_rejects_unknown_method(capsys):
    from experiments.llm_srpo import main

    with pytest.raises(SystemExit) as err:
        main(["--method", "srpo", "magic"])
    assert err.value.code != 0
    assert "magic" in capsys.readouterr().err


def test_policy_update_uses_logprobs_at_the_sampling_temperature(model_dir):
    """REINFORCE needs log pi of the policy that sampled: logits / the rollout temperature."""
    from srpo.buffers import TrainingSample
    from srpo.model import load_model
    from srpo.rollout import token_logprobs
    from srpo.trainer import _policy_update

    model, tok = load_model(model_dir)
    samples = [
        TrainingSample([1, 5, 6], [7, 8, 9, 2], [0, 1, 1, 1], 1.0, 0, True, 0, prefix_len=1),
        TrainingSample([1, 5, 6], [7, 10, 2], [0, 1, 1], 0.0, 0, True, 0, prefix_len=1),
    ]
    adv = np.array([1.0, -1.0])
    cfg = TrainConfig(model=model_dir, temperature=0.5, grad_clip=None, lr=1e-6)
    assert cfg.mini_batches == 1 and cfg.micro_batch_tokens is None
    with torch.no_grad():
        lps = token_logprobs(model, [s.prompt_ids for s in samples],
                             [s.response_ids for s in samples], temperature=0.5)
    expected = -float(lps[0][1:].mean() - lps[1][1:].mean()) / 2
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    stats = _policy_update(model, None, opt, samples, adv, cfg, tok)
    assert stats["loss"] == pytest.approx(expected, rel=1e-5)


def test_lora_initialisation_is_seeded(model_dir, tmp_path):
    """A new LoRA adapter draws its init from the global torch RNG; the run must seed it."""
    states = []
    for run in ("a", "b"):
        torch.manual_seed(123 if run == "a" else 456)  # whatever the caller left behind
        train(_config(model_dir, tmp_path / run, method="grpo", steps=0, lora_rank=2))
        states.append(torch.load(tmp_path / run / "checkpoint.pt", weights_only=False)["model"])
    assert states[0].keys() == states[1].keys() and any("lora_A" in k for k in states[0])
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_checkpoint_of_an_older_trainer_is_not_resumed(model_dir, tmp_path, monkeypatch):
    import srpo.config as config_module

    cfg = _config(model_dir, tmp_path, method="grpo", steps=1)
    monkeypatch.setattr(config_module, "TRAINER_VERSION", config_module.TRAINER_VERSION - 1)
    old_key = cfg.run_key()
    train(cfg)
    monkeypatch.undo()
    assert cfg.run_key() != old_key
    with pytest.raises(ValueError, match="different configuration"):
        train(cfg)
    assert list(tmp_path.iterdir())  # the refused run changed nothing: the old files are intact
    assert json.loads((tmp_path / "checkpoint.json").read_text())["run_key"] == old_key
