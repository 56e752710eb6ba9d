"""The method registry's contracts: every method well formed, run keys of earlier runs unchanged,
the command line, TRL's refusals, and the entropies TreeRL branches on."""

from __future__ import annotations

import pytest
import torch

from srpo.advantages import ADVANTAGE_ESTIMATORS
from srpo.config import LOSSES, METHODS, ConfigError, TrainConfig
from srpo.loss import POLICY_LOSSES
from srpo.methods import COMPARISON_METHODS, get_method
from srpo.methods.base import RECIPE_FIELDS


def test_every_method_is_well_formed():
    assert set(LOSSES) == set(POLICY_LOSSES)
    assert set(COMPARISON_METHODS) <= set(METHODS)
    for name in METHODS:
        m = get_method(name)
        assert m.advantage == "auto" or m.advantage in ADVANTAGE_ESTIMATORS, name
        assert set(m.losses) <= set(POLICY_LOSSES), name
        assert m.defaults.get("loss", "reinforce") in m.losses, name
        assert set(m.release) <= set(RECIPE_FIELDS), name
        cfg = TrainConfig(method=name)
        assert cfg.loss in m.losses and cfg.options() == m.make_options({})


def test_run_keys_of_earlier_runs_are_unchanged():
    """Keys recorded from main before the registry: old checkpoints still resume."""
    recorded = {
        "grpo": "a9a5ba7b436244aa",
        "srpo": "5e48c8ba46de2a0b",
        "rrpo": "faac908ab96e53bf",
        "oracle": "f793538c39b5a979",
    }
    for method, key in recorded.items():
        assert TrainConfig(method=method, split="2x4").run_key() == key


def test_config_rejects_what_a_method_cannot_take():
    with pytest.raises(ConfigError, match="loss must be one of"):
        TrainConfig(method="critique-grpo", loss="reinforce")
    with pytest.raises(ConfigError, match="localization_offset applies to reset methods"):
        TrainConfig(method="grpo", localization_offset=1)
    with pytest.raises(ConfigError, match="has no option"):
        TrainConfig(method="spo-tree", method_options={"alpha": 3})
    with pytest.raises(ConfigError, match="method must be one of"):
        TrainConfig(method="ppo")
    assert TrainConfig(method="srpo-offset").localization_offset == 1


def test_command_line_methods_recipes_and_errors(capsys, tmp_path, monkeypatch):
    from experiments.llm_srpo import parse_args

    monkeypatch.chdir(tmp_path)  # the default outputs (runs/...) must not be a checkout's own runs

    args = parse_args(["--method", "all"])
    assert args.method == list(COMPARISON_METHODS) and args.out == "runs/llm_all"
    assert parse_args(["--method", "all", "--seeds", "1"]).out == "runs/llm_custom"
    assert all(c.warmstart for c in args.configs)  # follow-up warm start for every method
    args = parse_args(
        [
            "--method",
            "grpo,critique-grpo",
            "spo-tree",
            "--recipe",
            "paper",
            "--seeds",
            "1",
            "--out",
            "runs/x",
        ]
    )
    got = {c.method: (c.lr, c.temperature, c.loss, c.agg) for c in args.configs}
    assert got == {
        "grpo": (5e-5, 0.7, "ppo-clip", "token-mean"),
        "critique-grpo": (1e-6, 1.0, "critique-shaped", "seq-mean-token-sum-norm"),
        "spo-tree": (1e-6, 0.7, "ppo-clip", "token-mean"),
    }
    assert args.configs[0].adv_std == "unbiased" and args.configs[0].adv_eps == 1e-6
    args = parse_args(
        [
            "--method",
            "srpo",
            "grpo",
            "--localization-offset",
            "2",
            "--seeds",
            "1",
            "--out",
            "runs/x",
            "--no-followup-warmstart",
        ]
    )
    assert [c.localization_offset for c in args.configs] == [2, 0]
    for bad, message in (
        (["--method", "magic"], "invalid choice: 'magic'"),
        (["--method", "grpo", "--localization-offset", "1"], "applies to reset methods only"),
        (
            ["--method", "grpo", "--method-option", "alpha=3"],
            "no selected method has an option 'alpha'",
        ),
    ):
        with pytest.raises(SystemExit) as err:
            parse_args([*bad, "--out", "runs/x"])
        assert err.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "method", ["score", "critique-grpo", "spo-tree", "treerl", "entropy-reset"]
)
def test_trl_refuses_what_it_cannot_express(method):
    trl = pytest.importorskip("srpo.integrations.trl")
    with pytest.raises(ValueError, match="cannot run in TRL's GRPOTrainer"):
        trl.SRPOSettings(method=method)
    assert trl.SRPOSettings(method="srpo-offset").localization_offset == 1


def test_token_entropies_equal_the_full_softmax():
    from srpo.logprobs import token_entropies, token_logprobs
    from srpo.model import build_tiny_model
    from srpo.tokenizer import build_tokenizer

    tok = build_tokenizer()
    model = build_tiny_model(tok, n_layer=1, d_model=32, n_head=2, seed=0)
    prompts, responses = [[1, 5, 6], [1, 7]], [[8, 9, 10], [11]]
    chunked = token_entropies(model, prompts, responses, temperature=0.7, chunk_tokens=2)
    with torch.no_grad():
        for p, r, e in zip(prompts, responses, chunked):
            logits = model(torch.tensor([p + r])).logits[0, len(p) - 1 : len(p) + len(r) - 1] / 0.7
            logp = torch.log_softmax(logits.float(), dim=-1)
            torch.testing.assert_close(e, -(logp.exp() * logp).sum(-1), rtol=1e-5, atol=1e-6)
    lp, _ = token_logprobs(model, prompts, responses, temperature=0.7, with_entropy=True)
    plain = token_logprobs(model, prompts, responses, temperature=0.7)
    for a, b in zip(lp, plain):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_the_mutation_table_still_matches_the_source():
    """``tests/srpo/mutate_methods.py`` applies each plausible bug by replacing one line: every
    line it replaces must still exist once (a refactor that moves it must update the table)."""
    from pathlib import Path

    from tests.srpo.mutate_methods import MUT

    root = Path(__file__).resolve().parents[2]
    for name, path, old, _new in MUT:
        assert (root / path).read_text().count(old) == 1, name
