"""Rollout engine: KV-cache exactness, caps, seeding, suffix sampling, token log-probs.

Tolerance for cache vs recompute logits: atol 1e-5, rtol 1e-5 in float32 (the two paths run the
same arithmetic in a different order / batch layout).
"""

import pytest
import torch

from srpo.model import build_tiny_model
from srpo.rollout import (
    Chain,
    GenerationConfig,
    RolloutEngine,
    _cache_keyword,
    _output_cache,
    sample_from_logits,
    token_logprobs,
)
from srpo.thoughts import check_spans, cut_prefix, thought_spans
from srpo.tokenizer import build_tokenizer

ATOL = 1e-5


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_model(tokenizer, n_layer=2, d_model=64, n_head=4, seed=0)


@pytest.fixture(scope="module")
def engine(model, tokenizer):
    return RolloutEngine(model, tokenizer, GenerationConfig(max_thoughts=4, max_thought_tokens=12))


def _prompts(tokenizer):
    return [
        tokenizer("start 3; +4; *2 (mod 10)\n").input_ids,
        tokenizer("hi\n").input_ids,
        tokenizer("start 7; -1; -2; +5 (mod 10)\n").input_ids,
    ]


def test_cached_continuation_matches_full_recompute(model, tokenizer):
    cache_name, _ = _cache_keyword(model)
    ids = torch.tensor([tokenizer("start 3; +4; *2 (mod 10)\n3+4=7</thought>7*2=4").input_ids])
    split = 9
    with torch.no_grad():
        full = model(input_ids=ids).logits
        out = model(input_ids=ids[:, :split], use_cache=True)
        cache = _output_cache(out)
        steps = [out.logits]
        for t in range(split, ids.shape[1]):
            out = model(input_ids=ids[:, t : t + 1], **{cache_name: cache}, use_cache=True)
            cache = _output_cache(out)
            steps.append(out.logits)
        chunked = model(input_ids=ids[:, :split], use_cache=True)
        rest = model(input_ids=ids[:, split:], **{cache_name: _output_cache(chunked)}, use_cache=True)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(rest.logits, full[:, split:], atol=ATOL, rtol=1e-5)


def test_left_padded_batch_matches_single(engine, tokenizer):
    prompts = _prompts(tokenizer)
    with torch.no_grad():
        batch_logits, *_ = engine._prefill(prompts)
        for i, prompt in enumerate(prompts):
            single, *_ = engine._prefill([prompt])
            torch.testing.assert_close(batch_logits[i], single[0], atol=ATOL, rtol=1e-5)


def _check_chain(chain: Chain, engine: RolloutEngine):
    cfg = engine.config
    # spans recorded while sampling equal the same rule applied after the fact
    assert chain.spans == engine.stop_matcher.spans(chain.response_ids, cfg.max_thought_tokens,
                                                    engine.eos_ids)
    check_spans(chain.spans, len(chain.response_ids))
    assert len(chain.spans) <= cfg.max_thoughts
    for start, end in chain.spans:
        length = end - start
        if chain.response_ids[end - 1] == engine.eos_id and length > 1:
            length -= 1
        assert length <= cfg.max_thought_tokens
    assert chain.n_generated == len(chain.response_ids) - chain.prefix_len
    assert chain.n_generated <= cfg.token_budget
    assert not (chain.finished and chain.truncated)
    assert chain.text == engine.tokenizer.decode(chain.response_ids, skip_special_tokens=True)


def test_generate_caps_seeding_and_batch_independence(engine, tokenizer):
    prompts = _prompts(tokenizer)
    a = engine.generate(prompts, 3, torch.Generator().manual_seed(0))
    b = engine.generate(prompts, 3, torch.Generator().manual_seed(0))
    c = engine.generate(prompts, 3, torch.Generator().manual_seed(1))
    assert len(a) == 3 and all(len(group) == 3 for group in a)
    ids = lambda groups: [[ch.response_ids for ch in g] for g in groups]  # noqa: E731
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)
    for group in a:
        for chain in group:
            _check_chain(chain, engine)
            assert chain.prefix_len == 0
    assert any(ch.truncated for g in a for ch in g)
    # a chain depends only on its own seed: the first prompt alone gives the same chains
    alone = engine.generate(prompts[:1], 3, torch.Generator().manual_seed(0))
    assert ids(alone)[0] == ids(a)[0]


def test_caps_many_seeds(tokenizer, model):
    config = GenerationConfig(temperature=1.0, top_p=1.0, max_thoughts=2, max_thought_tokens=5, max_new_tokens=8)
    engine = RolloutEngine(model, tokenizer, config)
    for group in engine.generate(_prompts(tokenizer), 8, torch.Generator().manual_seed(3)):
        for chain in group:
            _check_chain(chain, engine)


def test_thought_delimiter_and_boxed_stop(tokenizer):
    """A model forced to emit a fixed script closes thoughts and stops at the boxed thought."""
    script = tokenizer.encode("1+1=2</thought>2+1=3 \\boxed{3}</thought>9+9", add_special_tokens=False)

    class Scripted(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, position_ids, use_cache, **kw):
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids, use_cache=use_cache, **kw)
            generated = attention_mask.shape[1] - self.prompt_len
            token = script[min(generated, len(script) - 1)]
            logits = torch.full_like(out.logits, -1e4)
            logits[..., token] = 0.0
            out.logits = logits
            return out

    inner = build_tiny_model(tokenizer, seed=0)
    wrapped = Scripted(inner)
    engine = RolloutEngine(inner, tokenizer, GenerationConfig(max_thoughts=5, max_thought_tokens=20))
    engine.model = wrapped  # same forward signature as the inner model
    prompt = tokenizer("x").input_ids
    wrapped.prompt_len = len(prompt)
    chain = engine.generate([prompt], 1, torch.Generator().manual_seed(0))[0][0]
    assert chain.finished and not chain.truncated
    assert chain.text == "1+1=2</thought>2+1=3 \\boxed{3}</thought>"
    assert chain.spans == [(0, 6), (6, chain.n_generated)]
    # the plain completion stops at the boxed answer too
    assert engine.complete([prompt], 40)[0] == script[: script.index(tokenizer.convert_tokens_to_ids("}")) + 1]


def test_suffix_cached_equals_recompute(engine, tokenizer):
    prompt = _prompts(tokenizer)[0]
    for prefix in (
        [],
        tokenizer.encode("3+4=7</thought>", add_special_tokens=False),
        tokenizer.encode("3+4=7</thought>7*2=4</thought>", add_special_tokens=False),
    ):
        cached = engine.sample_suffixes(prompt, prefix, 4, torch.Generator().manual_seed(5))
        seq = engine.sample_suffixes_recompute(prompt, prefix, 4, torch.Generator().manual_seed(5))
        bat = engine.sample_suffixes_recompute(prompt, prefix, 4, torch.Generator().manual_seed(5), batched=True)
        assert [c.response_ids for c in cached] == [c.response_ids for c in seq] == [c.response_ids for c in bat]
        for chain in cached:
            assert chain.prefix_len == len(prefix)
            assert chain.response_ids[: len(prefix)] == prefix
            _check_chain(chain, engine)
            # thought counting continues from the prefix
            assert chain.spans[: len(thought_spans(prefix, engine.delimiter_ids))] == thought_spans(
                prefix, engine.delimiter_ids
            )


def test_suffix_from_parent_cut(engine, tokenizer):
    prompt = _prompts(tokenizer)[2]
    parent = engine.generate([prompt], 1, torch.Generator().manual_seed(11))[0][0]
    for k in range(1, len(parent.spans) + 1):
        prefix = cut_prefix(parent.response_ids, parent.spans, k)
        suffixes = engine.sample_suffixes(prompt, prefix, 2, torch.Generator().manual_seed(k))
        for chain in suffixes:
            assert chain.response_ids[: chain.prefix_len] == prefix
            _check_chain(chain, engine)


def test_first_token_distribution_cached_vs_recompute(engine, tokenizer):
    prompt = _prompts(tokenizer)[0]
    prefix = tokenizer.encode("3+4=7</thought>" * 6, add_special_tokens=False)
    with torch.no_grad():
        cached, cache, _, _ = engine._prefill([prompt + prefix])
        full = engine.model(input_ids=torch.tensor([prompt + prefix])).logits[:, -1]
    torch.testing.assert_close(cached, full, atol=ATOL, rtol=1e-5)


def test_greedy_deterministic_and_complete(engine, tokenizer):
    prompts = _prompts(tokenizer)
    g1 = engine.greedy(prompts)
    g2 = engine.greedy(prompts)
    assert [c.response_ids for c in g1] == [c.response_ids for c in g2]
    # greedy first token is the argmax of the prompt's last logits
    with torch.no_grad():
        logits = engine.model(input_ids=torch.tensor([prompts[1]])).logits[0, -1]
    assert g1[1].response_ids[0] == int(logits.argmax())
    outs = engine.complete(prompts, 5, temperature=0.9, generator=torch.Generator().manual_seed(0))
    assert len(outs) == 3 and all(1 <= len(o) <= 5 for o in outs)
    again = engine.complete(prompts, 5, temperature=0.9, generator=torch.Generator().manual_seed(0))
    assert outs == again


def test_validation_errors(engine, tokenizer, model):
    prompt = _prompts(tokenizer)[0]
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="temperature"):
        GenerationConfig(temperature=-0.1)
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig(top_p=0.0)
    with pytest.raises(ValueError, match="max_thoughts"):
        GenerationConfig(max_thoughts=0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        engine.sample_suffixes(prompt, [], 0, g)
    with pytest.raises(ValueError, match="empty"):
        engine.generate([[]], 1, g)
    with pytest.raises(ValueError, match="generator"):
        engine.generate([prompt], 1, None)
    with pytest.raises(ValueError, match="n_per_prompt"):
        engine.generate([prompt], 0, g)
    with pytest.raises(ValueError, match="max_new_tokens"):
        engine.complete([prompt], 0)


def test_sample_from_logits_top_p_and_frequencies():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    draws = torch.rand(20000, generator=gen, dtype=torch.float64)
    tokens = sample_from_logits(logits.expand(20000, -1), 1.0, 1.0, draws)
    freq = torch.bincount(tokens, minlength=4).double() / 20000
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64), atol=0.015, rtol=0)
    nucleus = sample_from_logits(logits.expand(20000, -1), 1.0, 0.7, draws)
    assert set(nucleus.tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.7
    assert sample_from_logits(logits, 0.0, 1.0, None).item() == 0


def test_token_logprobs_matches_manual_and_is_differentiable(model, tokenizer):
    prompts = [tokenizer("start 1; +2\n").input_ids, tokenizer("hi").input_ids]
    responses = [tokenizer.encode("1+2=3</thought>", add_special_tokens=False), [5, 6, 7]]
    out = token_logprobs(model, prompts, responses, device="cpu")
    assert [o.shape for o in out] == [(len(r),) for r in responses]
    for prompt, response, logp in zip(prompts, responses, out):
        ids = torch.tensor([prompt + response])
        logits = model(input_ids=ids).logits[0].float().log_softmax(-1)
        manual = logits[len(prompt) - 1 : -1].gather(-1, ids[0, len(prompt) :, None]).squeeze(-1)
        torch.testing.assert_close(logp, manual, atol=ATOL, rtol=1e-5)
    sum(o.sum() for o in out).backward()
    assert model.model.embed_tokens.weight.grad is not None
    model.zero_grad(set_to_none=True)
    empty = token_logprobs(model, prompts, [[], []])
    assert [e.numel() for e in empty] == [0, 0]
    with pytest.raises(ValueError, match="empty"):
        token_logprobs(model, [[]], [[1]])


def test_lora_model_rollout_and_logprob_gradients(tokenizer, model, tmp_path):
    """A fresh LoRA adapter (B = 0) leaves the chains unchanged; log-probs reach the adapter."""
    from srpo.model import load_model, save_model

    save_model(model, tokenizer, tmp_path / "base")
    lora, _ = load_model(tmp_path / "base", lora_rank=4)
    config = GenerationConfig(max_thoughts=3, max_thought_tokens=8)
    prompts = _prompts(tokenizer)[:2]
    base_chains = RolloutEngine(model, tokenizer, config).generate(prompts, 2, torch.Generator().manual_seed(0))
    lora_chains = RolloutEngine(lora, tokenizer, config).generate(prompts, 2, torch.Generator().manual_seed(0))
    assert [[c.response_ids for c in g] for g in base_chains] == [[c.response_ids for c in g] for g in lora_chains]
    assert lora.training is False  # the engine restores the mode it found
    lora.train()
    RolloutEngine(lora, tokenizer, config).greedy(prompts[:1])
    assert lora.training is True
    chain = lora_chains[0][0]
    logp = token_logprobs(lora, [chain.prompt_ids], [chain.response_ids])[0]
    logp.sum().backward()
    grads = [p.grad for n, p in lora.named_parameters() if p.requires_grad and "lora_A" in n]
    assert grads and all(g is not None for g in grads)
