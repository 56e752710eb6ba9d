"""``--recipe paper --method grpo`` is the release's GRPO baseline (LLM_METHOD.md, "GRPO baseline").

verl's GRPO outcome estimator (``compute_grpo_outcome_advantage``, read in verl's
``verl/trainer/ppo/core_algos.py``): per group, ``(r - mean) / (torch.std(r) + epsilon)`` with
``torch.std``'s default Bessel correction (ddof 1) and ``epsilon = 1e-6`` added to the std, not
under the square root. It is written out independently below (numpy), and the plausible wrong
variants (population std; eps inside the root; no eps) are shown to differ. The loss is PPO-clip
0.2 with token-mean; SRPO and RRPO keep the population std, REINFORCE and seq-mean-token-mean.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from srpo.advantages import group_advantages
from srpo.config import PAPER_GRPO, PAPER_RECIPE, TrainConfig, paper_recipe


def verl_grpo(rewards: np.ndarray, groups: np.ndarray, epsilon: float = 1e-6) -> np.ndarray:
    """verl's formula, one group at a time (groups of at least two)."""
    out = np.zeros_like(rewards, dtype=np.float64)
    for g in np.unique(groups):
        idx = groups == g
        r = rewards[idx]
        out[idx] = (r - r.mean()) / (np.sqrt(((r - r.mean()) ** 2).sum() / (len(r) - 1)) + epsilon)
    return out


@pytest.mark.parametrize("binary", [True, False])
def test_the_release_estimator_is_verls_formula(binary):
    rng = np.random.default_rng(0)
    for _ in range(50):
        rewards = (rng.integers(0, 2, size=32) if binary else rng.random(32)).astype(float)
        groups = np.repeat(np.arange(4), 8)
        rng.shuffle(groups)  # groups need not be contiguous
        ours = group_advantages(rewards, groups, std="unbiased", std_eps=1e-6)
        assert np.allclose(ours, verl_grpo(rewards, groups), rtol=1e-12, atol=1e-12)
    # the plausible wrong estimators give other numbers on a non-constant group
    r = np.array([1.0, 0, 0, 0, 0, 0, 0, 0])
    g = np.zeros(8, dtype=int)
    right = verl_grpo(r, g)
    assert not np.allclose(group_advantages(r, g, std="population", std_eps=1e-6), right)
    assert not np.allclose(group_advantages(r, g, std="unbiased"), right, rtol=1e-9, atol=0)
    wrong_root = (r - r.mean()) / np.sqrt(r.var(ddof=1) + 1e-6)
    assert not np.allclose(wrong_root, right, rtol=1e-9, atol=0)
    # a constant group carries nothing (verl: 0 / (0 + eps) = 0)
    assert np.all(group_advantages(np.ones(8), g, std="unbiased", std_eps=1e-6) == 0)
    with pytest.raises(ValueError, match="std_eps"):
        group_advantages(r, g, std_eps=-1.0)


def test_paper_recipe_resolves_per_method():
    grpo, srpo, rrpo = paper_recipe("grpo"), paper_recipe("srpo"), paper_recipe("rrpo")
    assert (grpo["adv_std"], grpo["adv_eps"], grpo["loss"], grpo["clip_eps"], grpo["agg"]) == (
        "unbiased",
        1e-6,
        "ppo-clip",
        0.2,
        "token-mean",
    )
    for other in (srpo, rrpo):
        # the registry's release recipe of the reset methods repeats PAPER_RECIPE's values
        assert all(other[k] == v for k, v in PAPER_RECIPE.items())
        cfg = TrainConfig(**other, method="srpo")
        assert (cfg.adv_std, cfg.adv_eps, cfg.loss, cfg.agg) == (
            "population",
            0.0,
            "reinforce",
            "seq-mean-token-mean",
        )
    assert {k: grpo[k] for k in PAPER_GRPO} == PAPER_GRPO
    assert TrainConfig(adv_eps=1e-6).run_key() != TrainConfig().run_key()


def test_llm_srpo_recipe_paper_method_grpo_is_the_release_baseline(tmp_path):
    from experiments import llm_srpo

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    task = tmp_path / "train.jsonl"
    task.write_text(
        "".join(
            json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
            for i in range(64)
        )
    )
    base = [
        "--model",
        str(model),
        "--task",
        str(task),
        "--recipe",
        "paper",
        "--seeds",
        "1",
        "--out",
        str(tmp_path / "runs"),
    ]
    configs = {
        c.method: c
        for c in llm_srpo.parse_args(base + ["--method", "grpo", "rrpo", "srpo"]).configs
    }
    g = configs["grpo"]
    assert (g.adv_std, g.adv_eps, g.loss, g.clip_eps, g.agg, g.updates_per_step) == (
        "unbiased",
        1e-6,
        "ppo-clip",
        0.2,
        "token-mean",
        1,
    )
    assert (g.lora_rank, g.lr, g.mini_batches) == (64, 5e-5, 4)  # the rest of the recipe
    for m in ("rrpo", "srpo"):
        c = configs[m]
        assert (c.adv_std, c.adv_eps, c.loss, c.agg) == (
            "population",
            0.0,
            "reinforce",
            "seq-mean-token-mean",
        )
    # explicit flags still win over the recipe
    c = llm_srpo.parse_args(
        base
        + [
            "--method",
            "grpo",
            "--agg",
            "seq-mean-token-mean",
            "--adv-std",
            "population",
            "--adv-eps",
            "0",
        ]
    ).configs[0]
    assert (c.agg, c.adv_std, c.adv_eps, c.loss) == (
        "seq-mean-token-mean",
        "population",
        0.0,
        "ppo-clip",
    )


def test_the_trainer_uses_the_configured_estimator(tmp_path, monkeypatch):
    """One GRPO step: the advantages that reach the update are verl's formula of the batch."""
    import srpo.trainer as trainer
    from srpo.model import build_tiny_model, save_model
    from srpo.tasks import ModularArithmeticTask
    from srpo.tokenizer import build_tokenizer

    tok = build_tokenizer()
    model_dir = str(
        save_model(build_tiny_model(tok, n_layer=1, d_model=32, n_head=2), tok, tmp_path / "m")
    )
    monkeypatch.setattr(
        ModularArithmeticTask, "grade", lambda self, problem, text: float(len(text) % 2)
    )
    seen = []
    estimate = trainer.advantages_of  # the trainer's advantage phase (srpo.methods registry)

    def spy(method, config, batch, arrays):
        advantages = estimate(method, config, batch, arrays)
        seen.append((arrays["rewards"].copy(), arrays["group_index"].copy(),
                     np.asarray(advantages)))
        return advantages

    monkeypatch.setattr(trainer, "advantages_of", spy)
    config = TrainConfig(
        method="grpo",
        steps=1,
        prompts_per_step=2,
        model=model_dir,
        task_steps=2,
        max_thoughts=3,
        max_thought_tokens=6,
        eval_size=2,
        eval_every=1,
        out_dir=str(tmp_path / "run"),
        checkpoint_every=0,
        save_weights=False,
        **PAPER_GRPO,
    )
    torch.manual_seed(0)
    trainer.train(config)
    ((rewards, groups, advantages),) = seen
    assert len(np.unique(rewards)) == 2  # groups with outcome differences
    assert np.allclose(advantages, verl_grpo(rewards, groups), rtol=1e-12, atol=1e-12)
