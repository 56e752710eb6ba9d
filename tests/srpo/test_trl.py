"""SRPO inside TRL's GRPOTrainer against our own trainer, on one fixed batch (CPU, tiny model).

The fixed batch is a real ``1x4`` reset batch (``srpo.buffers.build_batch`` on a tiny Llama with
the project's tokenizer): base chains, suffixes with a copied, masked prefix. Our trainer's update
(``srpo.trainer._policy_update``) and ``SRPOTrainer``'s first step are run on copies of the same
weights; compared:

- advantages: TRL's are ``srpo.group_advantages``'s exactly (``SRPOTrainer``), and to float32
  rounding through the plain ``rollout_func`` + reward route (TRL's ``r - mean`` of the block);
- loss: like with like. TRL reports the ratio form at ratio 1 (value ``-A`` per token), our
  trainer REINFORCE's value (``-A log pi``): TRL's value equals ``srpo.masked_pg_loss(...,
  old_logprobs=logp.detach())`` and ours ``masked_pg_loss(...)`` on the same log-probs;
- gradient: the same, parameter by parameter, to float tolerance (``loss_type`` ``grpo`` =
  ``seq-mean-token-mean``, ``dapo`` = ``token-mean``);
- every generated token of the batch appears in the ``srpo/*`` metrics; the reset table is
  written with our trainer's columns.

Plus two TRL training steps of the tiny model through ``experiments/trl_srpo.py --quick``.
"""

import copy
import json
import os
import types

import numpy as np
import pandas as pd
import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
pytestmark = pytest.mark.trl
pytest.importorskip("trl", reason="TRL is not installed (the trl extra: pip install "
                                  "'credit-resets[trl]')")

from transformers import TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

import srpo.integrations.trl as srpo_trl  # noqa: E402
from srpo.advantages import group_advantages  # noqa: E402
from srpo.buffers import build_batch  # noqa: E402
from srpo.config import TrainConfig  # noqa: E402
from srpo.engines.base import GenerationConfig  # noqa: E402
from srpo.engines.hf import RolloutEngine  # noqa: E402
from srpo.integrations.trl import (  # noqa: E402
    SRPORollout,
    SRPOSettings,
    SRPOTrainer,
    check_grpo_config,
)
from srpo.localize import RandomLocalizer  # noqa: E402
from srpo.logprobs import token_logprobs  # noqa: E402
from srpo.loss import masked_pg_loss  # noqa: E402
from srpo.metrics import RESET_COLUMNS  # noqa: E402
from srpo.model import build_tiny_model, load_model, save_model  # noqa: E402
from srpo.tasks import ModularArithmeticTask  # noqa: E402
from srpo.tokenizer import build_tokenizer  # noqa: E402
from srpo.trainer import _policy_update  # noqa: E402

T = 0.7


@pytest.fixture(autouse=True)
def mixed_rewards(monkeypatch):
    """A random tiny model never solves the task: grade by response-length parity instead, so
    that groups have outcome differences (the update path is what is under test)."""
    monkeypatch.setattr(ModularArithmeticTask, "grade",
                        lambda self, problem, text: float(len(text) % 2))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = build_tokenizer()
    model = build_tiny_model(tok, n_layer=2, d_model=64, n_head=4, seed=0)
    return str(save_model(model, tok, tmp_path_factory.mktemp("trl_tiny")))


@pytest.fixture(scope="module")
def fixed(model_dir):
    """A real 1x4 RRPO batch on 2 prompts, built once (its rewards graded by parity)."""
    model, tok = load_model(model_dir)
    task = ModularArithmeticTask(n_steps=2)
    problems = task.sample(2, np.random.default_rng(3))
    engine = RolloutEngine(model, tok, GenerationConfig(temperature=T, top_p=1.0, max_thoughts=4,
                                                        max_thought_tokens=8))
    mp = pytest.MonkeyPatch()
    mp.setattr(ModularArithmeticTask, "grade", lambda self, problem, text: float(len(text) % 2))
    try:
        batch = build_batch(problems, task, engine, tok, "1x4", RandomLocalizer(),
                            np.random.default_rng(0), torch.Generator().manual_seed(0))
    finally:
        mp.undo()
    assert batch.events and any(s.prefix_len > 0 for s in batch.samples)
    return model, tok, task, problems, batch


def ordered(batch):
    return sorted(batch.samples, key=lambda s: s.prompt_index)


def reference(model, tok, samples, agg):
    """Advantages, padded log-probs at T, mask; REINFORCE and ratio-form values; REINFORCE grad."""
    model = copy.deepcopy(model)
    rewards = np.array([s.reward for s in samples])
    adv = group_advantages(rewards, np.array([s.group_id for s in samples]))
    lp = token_logprobs(model, [s.prompt_ids for s in samples], [s.response_ids for s in samples],
                        "cpu", temperature=T, pad_id=tok.pad_token_id)
    width = max(len(x) for x in lp)
    logp = torch.stack([torch.nn.functional.pad(x, (0, width - len(x))) for x in lp])
    mask = torch.zeros_like(logp)
    for i, s in enumerate(samples):
        mask[i, : len(s.loss_mask)] = torch.tensor(s.loss_mask, dtype=torch.float32)
    a = torch.as_tensor(adv, dtype=torch.float32)
    reinforce = masked_pg_loss(logp, a, mask, agg=agg)
    ratio_form = masked_pg_loss(logp, a, mask, agg=agg, old_logprobs=logp.detach())
    return adv, float(reinforce.detach()), float(ratio_form.detach())


class GradRecorder:
    """Stands in for the optimizer of ``_policy_update``: keeps the gradient it is asked to apply."""

    def __init__(self, model):
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.grads = None

    def zero_grad(self, set_to_none=True):
        for _, p in self.named:
            p.grad = None

    def step(self):
        self.grads = {n: p.grad.detach().clone() for n, p in self.named if p.grad is not None}


def ours(model, tok, samples, adv, agg):
    model = copy.deepcopy(model)
    config = TrainConfig(temperature=T, grad_clip=None, agg=agg, mini_batches=1, steps=1)
    recorder = GradRecorder(model)
    stats = _policy_update(model, None, recorder, samples, adv, config, tok)
    return stats["loss"], recorder.grads


class Capture(TrainerCallback):
    def __init__(self):
        self.trainer, self.grads = None, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.grads.append({n: p.grad.detach().clone()
                           for n, p in self.trainer.model.named_parameters() if p.grad is not None})


def grpo_args(tmp_path, loss_type, steps=1, **kw):
    base = dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, fp16=False,
                per_device_train_batch_size=16, gradient_accumulation_steps=1, num_generations=8,
                max_completion_length=64, max_steps=steps, learning_rate=1e-3, beta=0.0,
                scale_rewards="none", loss_type=loss_type, temperature=T, top_p=1.0,
                num_iterations=1, shuffle_dataset=False, logging_steps=1, report_to=[],
                save_strategy="no", max_grad_norm=0.0, seed=0, disable_dropout=True, optim="sgd",
                lr_scheduler_type="constant", weight_decay=0.0)
    base.update(kw)
    return GRPOConfig(**base)


def run_trl(model, tok, task, problems, batch, tmp_path, loss_type, plain=False):
    """One TRL step whose rollout function returns the fixed batch; returns what it computed."""
    seen = {}
    settings = SRPOSettings(method="rrpo", split="1x4", engine="hf", max_thoughts=4,
                            max_thought_tokens=8)
    capture = Capture()
    mp = pytest.MonkeyPatch()
    mp.setattr(srpo_trl, "build_batch", lambda *a, **k: batch)
    try:
        if plain:  # a plain GRPOTrainer with the rollout function and its reward
            rollout = SRPORollout(task, settings)

            class Plain(GRPOTrainer):
                def _generate_and_score_completions(self, inputs):
                    out = super()._generate_and_score_completions(inputs)
                    seen["advantages"] = out["advantages"].detach().clone()
                    return out

            trainer = Plain(model=model, reward_funcs=[rollout.reward],
                            args=grpo_args(tmp_path, loss_type), processing_class=tok,
                            train_dataset=rollout.dataset(problems), rollout_func=rollout,
                            callbacks=[capture, srpo_trl.SRPOCallback(rollout)])
        else:
            class Recording(SRPOTrainer):
                def _generate_and_score_completions(self, inputs):
                    out = super()._generate_and_score_completions(inputs)
                    seen["advantages"] = out["advantages"].detach().clone()
                    return out

                def _compute_loss(self, model, inputs):
                    loss = super()._compute_loss(model, inputs)
                    seen.setdefault("loss", float(loss.detach()))
                    return loss

            trainer = Recording(model, grpo_args(tmp_path, loss_type), task, problems, settings,
                                processing_class=tok, callbacks=[capture])
        capture.trainer = trainer
        trainer.train()
    finally:
        mp.undo()
    seen["grads"] = capture.grads[0]
    seen["log"] = [h for h in trainer.state.log_history if "loss" in h]
    return seen


def rel_err(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    num = sum(float(((a[n] - b[n]) ** 2).sum()) for n in a)
    den = sum(float((b[n] ** 2).sum()) for n in b)
    return (num / den) ** 0.5


@pytest.mark.parametrize("loss_type,agg", [("grpo", "seq-mean-token-mean"), ("dapo", "token-mean")])
def test_trl_step_equals_our_trainer_on_a_fixed_batch(fixed, tmp_path, loss_type, agg):
    model, tok, task, problems, batch = fixed
    samples = ordered(batch)
    adv, reinforce_value, ratio_value = reference(model, tok, samples, agg)
    our_loss, our_grads = ours(model, tok, samples, adv, agg)
    trl = run_trl(copy.deepcopy(model), tok, task, problems, batch, tmp_path, loss_type)

    # advantages: exactly srpo.group_advantages (float32), not a renormalised version
    assert torch.equal(trl["advantages"], torch.as_tensor(adv, dtype=torch.float32))
    assert np.abs(adv).max() > 0.5  # groups with outcome differences: a real test
    # loss values, like with like (the two forms differ: their gradients agree)
    assert our_loss == pytest.approx(reinforce_value, rel=1e-5, abs=1e-7)
    assert trl["loss"] == pytest.approx(ratio_value, rel=1e-5, abs=1e-6)
    assert abs(reinforce_value - ratio_value) > 1e-3
    # the gradient, parameter by parameter
    assert set(trl["grads"]) == set(our_grads)
    assert rel_err(trl["grads"], our_grads) < 1e-5
    assert sum(float(g.norm()) for g in our_grads.values()) > 0

    # every generated token of the batch is in the metrics; the reset table is written
    log = trl["log"][0]
    acc = batch.accounting
    assert log["srpo/generated_tokens"] == acc.generated_tokens
    assert log["srpo/generated_tokens"] == sum(log[f"srpo/tokens_{k}"] for k in (
        "base", "parent", "discarded", "suffix", "localization"))
    resets = pd.read_parquet(tmp_path / "resets.parquet")
    assert list(resets.columns) == list(RESET_COLUMNS) and len(resets) == len(batch.events)
    assert list(resets.k) == [e.k for e in batch.events]


def test_plain_grpo_trainer_with_the_rollout_function_gives_srpo_advantages(fixed, tmp_path):
    model, tok, task, problems, batch = fixed
    samples = ordered(batch)
    adv, *_ = reference(model, tok, samples, "seq-mean-token-mean")
    _, our_grads = ours(model, tok, samples, adv, "seq-mean-token-mean")
    trl = run_trl(copy.deepcopy(model), tok, task, problems, batch, tmp_path, "grpo", plain=True)
    # TRL's r - mean of the block of 8 = the subgroup z-scores (each subgroup sums to 0)
    assert np.allclose(trl["advantages"].numpy(), adv, atol=1e-6)
    assert rel_err(trl["grads"], our_grads) < 1e-5
    assert (tmp_path / "resets.parquet").is_file()


@pytest.mark.parametrize("reinforce", [True, False])
def test_old_logprobs_are_computed_only_when_the_loss_uses_them(fixed, tmp_path, reinforce):
    """Two mini-batches per generation: TRL computes old log-probs (a no-grad forward pass over
    the whole generation) for its ratio. The release's REINFORCE never uses them: TRL must not
    compute them; the PPO-clip GRPO baseline uses TRL's (kept in the batch)."""
    model, tok, task, problems, batch = fixed
    calls, kept = [], []

    class Counting(SRPOTrainer):
        def _get_per_token_logps_and_entropies(self, *a, **k):
            calls.append(torch.is_grad_enabled())
            return super()._get_per_token_logps_and_entropies(*a, **k)

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            kept.append("old_per_token_logps" in out)
            return out

    settings = SRPOSettings(method="rrpo", split="1x4", engine="hf", max_thoughts=4,
                            max_thought_tokens=8, reinforce_minibatches=reinforce)
    args = grpo_args(tmp_path, "grpo", steps=2, per_device_train_batch_size=8,
                     steps_per_generation=2)
    mp = pytest.MonkeyPatch()
    mp.setattr(srpo_trl, "build_batch", lambda *a, **k: batch)
    try:
        trainer = Counting(copy.deepcopy(model), args, task, problems, settings,
                           processing_class=tok)
        trainer.train()
    finally:
        mp.undo()
    assert kept == [not reinforce]  # one generation for the two optimizer steps
    no_grad = calls.count(False)  # forward passes outside the loss: the old log-probs
    assert no_grad == (0 if reinforce else 1), calls
    assert calls.count(True) == 2  # the two mini-batches' losses
    assert trainer.args.gradient_accumulation_steps == 1  # restored


def test_grpo_config_is_checked_field_by_field(tmp_path):
    settings = SRPOSettings()
    good = grpo_args(tmp_path, "grpo")
    check_grpo_config(good, settings)
    bad = {
        "scale_rewards": dict(scale_rewards="group"),
        "per_device_train_batch_size": dict(per_device_train_batch_size=12, num_generations=8),
        "loss_type": dict(loss_type="dr_grpo"),
        "mask_truncated_completions": dict(mask_truncated_completions=True),
    }
    bad["vllm_importance_sampling_correction"] = dict(
        use_vllm=True, vllm_importance_sampling_correction=True)
    bad["vllm_tensor_parallel_size"] = dict(
        use_vllm=True, vllm_importance_sampling_correction=False, vllm_mode="colocate",
        vllm_tensor_parallel_size=2)
    for name, change in bad.items():
        # GRPOConfig validates only the global batch: a process's share is ours to check (12
        # rows of one process out of e.g. 2 x 12 are not whole prompts of 8)
        args = types.SimpleNamespace(**{**vars(good), **change})
        with pytest.raises(ValueError, match=f"GRPOConfig.{name}"):
            check_grpo_config(args, settings)
    small = types.SimpleNamespace(**{**vars(good), "num_generations": 2,
                                     "per_device_train_batch_size": 8})
    with pytest.raises(ValueError, match="too small"):
        check_grpo_config(small, settings)
    with pytest.raises(ValueError, match="model_path"):
        SRPOSettings(engine="vllm")
    with pytest.raises(ValueError, match="method"):
        SRPOSettings(method="ppo")


def test_rollout_function_refuses_split_blocks(fixed):
    model, tok, task, problems, batch = fixed
    rollout = SRPORollout(task, SRPOSettings(), problems)

    class Stub:  # what the rollout function reads from a trainer
        num_generations = 8
        model = torch.nn.Linear(1, 1)

    prompts = [task.prompt(problems[0])] * 8 + [task.prompt(problems[1])] * 4
    with pytest.raises(ValueError, match="whole blocks"):
        rollout(prompts, Stub())
    prompts = [task.prompt(problems[0])] * 4 + [task.prompt(problems[1])] * 4
    with pytest.raises(ValueError, match="repeated num_generations"):
        rollout(prompts, Stub())


def test_two_trl_training_steps_of_the_tiny_model(model_dir, tmp_path):
    """``experiments/trl_srpo.py --quick``: two SRPO steps (self-localization) on CPU."""
    from experiments import trl_srpo

    out = tmp_path / "quick"
    info = trl_srpo.main(["--quick", "--model", model_dir, "--out", str(out)])
    state = json.loads((out / "trainer_state.json").read_text())
    steps = [h for h in state["log_history"] if "loss" in h]
    assert [h["step"] for h in steps] == [1, 2]
    for h in steps:
        assert h["srpo/generated_tokens"] > 0 and h["srpo/tokens_localization"] > 0
        assert h["srpo/total_rollouts"] == 16 * h["step"]
    assert steps[1]["srpo/total_generated_tokens"] == sum(h["srpo/generated_tokens"] for h in steps)
    resets = pd.read_parquet(out / "resets.parquet")
    assert list(resets.columns) == list(RESET_COLUMNS) and set(resets.iteration) <= {1, 2}
    assert set(resets.source) <= {"boxed", "boxed_zero", "step_mention", "fallback_step1"}
    trained, _ = load_model(out / "model")
    initial, _ = load_model(model_dir)
    changed = [n for (n, p), q in zip(trained.named_parameters(), initial.parameters())
               if not torch.equal(p, q)]
    assert changed  # the updates reached the weights
    assert info["processes"] == 1 and info["settings"]["method"] == "srpo"


def documented_trl_commands(path):
    """Every ``experiments/trl_srpo.py`` command line of a markdown file, continuation lines
    joined, with its number of processes (``--num_processes``, else 1)."""
    import shlex

    blocks = path.read_text().split("```")[1::2]  # the code blocks
    text = "\n".join(b for b in blocks if b.startswith("bash")).replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if "experiments/trl_srpo.py" not in line or line.lstrip().startswith("#"):
            continue
        tokens = shlex.split(line.split("&")[0])
        world = int(tokens[tokens.index("--num_processes") + 1]) if "--num_processes" in tokens else 1
        out.append((world, tokens[tokens.index("experiments/trl_srpo.py") + 1:]))
    return out


@pytest.mark.parametrize("doc", ["docs/engines.md", "README.md"])
def test_the_documented_multi_gpu_commands_parse_as_written(doc, model_dir, tmp_path,
                                                            monkeypatch):
    """The paper's recipe on 1, 2 and 4 processes: whole prompts on every process, the paper's
    32 x 8 rollouts in 4 optimizer steps per generation, the release's limits, TRL's vLLM."""
    from pathlib import Path

    from experiments import trl_srpo

    repo = Path(__file__).resolve().parents[2]
    task = tmp_path / "train.parquet"
    pd.DataFrame({"question": [f"What is {i} + 3?" for i in range(40)],
                  "answer": [str(i + 3) for i in range(40)]}).to_parquet(task)
    commands = documented_trl_commands(repo / doc)
    worlds = {w for w, argv in commands if "--recipe" in argv}
    assert {2, 4} <= worlds, worlds
    for world, argv in commands:
        if "--quick" in argv:
            continue
        argv = [a.replace("train.parquet", str(task)) if a.endswith("train.parquet") else a
                for a in argv]
        argv = [model_dir if a.endswith("DIR") else a for a in argv]
        monkeypatch.setenv("WORLD_SIZE", str(world))
        args = trl_srpo.parse_args(argv)
        cfg = args.config
        assert (cfg.prompts_per_step, cfg.rollouts_per_prompt, cfg.mini_batches) == (32, 8, 4)
        assert (cfg.lora_rank, cfg.lr, cfg.max_thoughts, cfg.max_thought_tokens,
                cfg.max_response_tokens, cfg.max_model_len) == (64, 5e-5, 20, 256, 5120, 8192)
        rows_per_process = args.per_device_batch * cfg.mini_batches * args.grad_accum
        assert rows_per_process * world == 32 * 8 and rows_per_process % 8 == 0
        assert args.use_vllm and args.bf16


def one_gpu_commands():
    """The one-GPU TRL command of docs/engines.md and the one in trl_srpo.py's docstring."""
    import shlex
    from pathlib import Path

    from experiments import trl_srpo

    repo = Path(__file__).resolve().parents[2]
    docs = [argv for world, argv in documented_trl_commands(repo / "docs" / "engines.md")
            if world == 1 and "--use-vllm" in argv]
    text = trl_srpo.__doc__.replace("\\\n", " ")
    script = [shlex.split(line.strip())[2:] for line in text.splitlines()
              if line.strip().startswith("python experiments/trl_srpo.py") and "DIR" in line
              and "--recipe" in line]
    return docs, script


def test_the_one_gpu_trl_example_has_the_documented_geometry(model_dir, tmp_path, monkeypatch):
    """trl_srpo.py's one-GPU example and docs/engines.md's: the same batch geometry (8 rows
    per micro-batch, 8 accumulated, 4 optimizer steps per generation) and checkpointing on."""
    from experiments import trl_srpo

    task = tmp_path / "train.parquet"
    pd.DataFrame({"question": ["What is 2 + 3?"] * 40, "answer": ["5"] * 40}).to_parquet(task)
    docs, script = one_gpu_commands()
    assert len(docs) == 1 and len(script) == 1
    monkeypatch.setenv("WORLD_SIZE", "1")
    geometry = []
    for argv in docs + script:
        argv = [str(task) if a.endswith("train.parquet") else model_dir if a == "DIR" else a
                for a in argv]
        args = trl_srpo.parse_args(argv)
        geometry.append((args.per_device_batch, args.grad_accum, args.config.mini_batches,
                         args.gradient_checkpointing, args.bf16, args.use_vllm))
    assert geometry[0] == geometry[1] == (8, 8, 4, True, True, True), geometry


def test_steps_count_iterations_as_in_llm_srpo(model_dir, tmp_path):
    """``--steps 3 --mini-batches 2``: 3 generations of 2 optimizer steps each (TRL max_steps
    6), as ``llm_srpo.py --steps 3`` runs 3 iterations."""
    from experiments import llm_srpo, trl_srpo

    argv = ["--model", model_dir, "--steps", "3", "--mini-batches", "2", "--prompts-per-step",
            "2", "--out", str(tmp_path / "t")]
    args = trl_srpo.parse_args(argv)
    assert trl_srpo.grpo_config(args).max_steps == 6
    ours = llm_srpo.parse_args(["--steps", "3", "--mini-batches", "2", "--prompts-per-step",
                                "2", "--method", "srpo", "--seeds", "1", "--out",
                                str(tmp_path / "o")])
    assert ours.configs[0].steps == args.config.steps == 3


def test_the_paper_recipe_grpo_in_trl_is_the_releases_baseline(model_dir, tmp_path):
    from experiments import trl_srpo

    task = tmp_path / "train.parquet"
    pd.DataFrame({"question": ["What is 2 + 3?"] * 40, "answer": ["5"] * 40}).to_parquet(task)
    for method, expected in (("grpo", ("unbiased", 1e-6, "ppo-clip", "dapo", 0.2)),
                             ("srpo", ("population", 0.0, "reinforce", "grpo", 0.2))):
        args = trl_srpo.parse_args(["--model", model_dir, "--task", str(task), "--recipe",
                                    "paper", "--method", method, "--out", str(tmp_path / method)])
        cfg = args.config
        grpo = trl_srpo.grpo_config(args)
        assert (cfg.adv_std, cfg.adv_eps, cfg.loss, grpo.loss_type, grpo.epsilon) == expected


@pytest.mark.slow
def test_two_processes_share_the_prompts_and_sum_their_tokens(model_dir, tmp_path):
    """``torchrun --nproc_per_node 2`` (accelerate's multi-process path, gloo on CPU): each process
    holds whole prompts, the token counts are totals over processes, the reset table holds both
    processes' rows."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo),
           "TRL_EXPERIMENTAL_SILENCE": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           str(repo / "experiments" / "trl_srpo.py"), "--quick", "--model",
                           model_dir, "--out", str(out)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "srpo_run.json").read_text())["processes"] == 2
    state = json.loads((out / "trainer_state.json").read_text())
    steps = [h for h in state["log_history"] if "loss" in h]
    assert [h["srpo/total_rollouts"] for h in steps] == [16, 32]  # 2 processes x 1 prompt x 8
    for h in steps:
        assert h["srpo/generated_tokens"] == sum(h[f"srpo/tokens_{k}"] for k in (
            "base", "parent", "discarded", "suffix", "localization"))
    resets = pd.read_parquet(out / "resets.parquet")
    assert set(resets.prompt_index) == {0, 1}  # rank 0's prompt and rank 1's
