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
    return df.drop(columns=["wall_time"]).reset_index(drop=True)


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


def test_cli_clear_errors(tmp_path, capsys):
    from experiments.llm_srpo import main

    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "missing")])
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?"}\n')
    with pytest.raises(SystemExit):
        main(["--task", str(bad), "--model", str(tmp_path)])
    err = capsys.readouterr().err
    assert "row 1" in err and "answer" in err
