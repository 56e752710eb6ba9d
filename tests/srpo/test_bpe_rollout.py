"""The GPU code path on CPU at tiny size: real architectures (Qwen2, Llama; random weights) with a
byte-level BPE tokenizer trained in the test, on which ``</thought>`` merges with the punctuation
before it. Thought boundaries by text, every eos id, capped thoughts, length caps, batching under a
token budget, sampled log-probs, chunked log-probs with LoRA and gradient checkpointing."""

import numpy as np
import pytest
import torch

from srpo.logprobs import split_lm, token_logprobs
from srpo.model import build_random_model, load_model
from srpo.rollout import GenerationConfig, RolloutEngine
from srpo.thoughts import check_spans, cut_prefix, thought_spans
from srpo.tokenizer import THOUGHT_DELIMITER, StopStringMatcher, delimiter_ids, eos_token_ids
from tests.srpo.real_model import arithmetic_rows, make_model_dir, make_tokenizer

ATOL = 1e-5


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def model(request, tok):
    eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
    return build_random_model(tok, request.param, n_layer=2, d_model=64, n_head=4, n_kv_head=2,
                              seed=1, eos_token_ids=eos)


def naive_spans(tokenizer, ids, cap=None, eos=()):
    """Reference segmentation: decode the whole current thought after every token."""
    spans, start = [], 0
    for end in range(1, len(ids) + 1):
        if ids[end - 1] in eos:
            if end - 1 == start and spans:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
            start = end
            break
        text = tokenizer.decode(ids[start:end], skip_special_tokens=False)
        if THOUGHT_DELIMITER in text or (cap is not None and end - start >= cap):
            spans.append((start, end))
            start = end
    if start < len(ids):
        spans.append((start, len(ids)))
    return spans


class Scripted(torch.nn.Module):
    """Forces a fixed token script after the prompt (one row), through a real model's forward."""

    def __init__(self, inner, script, prompt_len):
        super().__init__()
        self.inner, self.script, self.prompt_len = inner, script, prompt_len
        self.config = inner.config

    def forward(self, input_ids, attention_mask, position_ids, use_cache, **kw):
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids, use_cache=use_cache, **kw)
        generated = int(attention_mask[0].sum()) - self.prompt_len
        token = self.script[min(generated, len(self.script) - 1)]
        logits = torch.full_like(out.logits, -1e4)
        logits[..., token] = 0.0
        out.logits = logits
        return out


def scripted_chain(model, tok, text, config, prompt="What is 3 + 4?\n"):
    script = tok.encode(text, add_special_tokens=False)
    prompt_ids = tok.encode(prompt)
    engine = RolloutEngine(model, tok, config)
    engine.model = Scripted(model, script, len(prompt_ids))
    chain = engine.generate([prompt_ids], 1, torch.Generator().manual_seed(0))[0][0]
    return chain, script, engine


def test_the_delimiter_merges_with_punctuation_on_this_tokenizer(tok):
    alone = delimiter_ids(tok)
    ids = tok.encode("We add 3 and 4.</thought>", add_special_tokens=False)
    assert len(alone) > 1
    # the standalone ids never occur in context: an id-matching rule finds no boundary at all
    assert thought_spans(ids, alone) == [(0, len(ids))]
    assert StopStringMatcher(tok).spans(ids) == [(0, len(ids))]  # one closed thought, by text


def test_thought_boundaries_by_text_and_boxed_stop(model, tok):
    text = ("We add 3 and 4.</thought>The sum is 7.</thought>"
            "So the answer is \\boxed{7}.</thought> and more")
    chain, script, engine = scripted_chain(model, tok, text, GenerationConfig(max_thoughts=8,
                                                                             max_thought_tokens=40))
    assert chain.finished and chain.stop_reason == "boxed" and not chain.truncated
    assert chain.text == text[: text.index(" and more")]
    assert len(chain.spans) == 3
    assert chain.spans == naive_spans(tok, chain.response_ids)
    for start, end in chain.spans:
        assert tok.decode(chain.response_ids[start:end]).endswith(THOUGHT_DELIMITER)
    # the plain completion (localization) stops at the box too
    reply = engine.complete([tok.encode("What is 3 + 4?\n")], 60)[0]
    assert "\\boxed{7}" in tok.decode(reply) and "and more" not in tok.decode(reply)


def test_every_eos_id_ends_a_chain(model, tok):
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert {im_end, tok.eos_token_id} <= eos_token_ids(tok, model)
    chain, _, engine = scripted_chain(model, tok, "We add 3 and 4.</thought>Hmm<|im_end|> more",
                                      GenerationConfig(max_thoughts=8, max_thought_tokens=40))
    assert chain.stop_reason == "eos" and not chain.finished and not chain.truncated
    assert chain.response_ids[-1] == im_end
    assert len(chain.spans) == 2 and chain.spans == naive_spans(tok, chain.response_ids,
                                                                eos=engine.eos_ids)
    # an eos right after a closed thought joins that thought
    chain, _, _ = scripted_chain(model, tok, "We add 3 and 4.</thought><|endoftext|>",
                                 GenerationConfig(max_thoughts=8, max_thought_tokens=40))
    assert chain.stop_reason == "eos" and len(chain.spans) == 1
    check_spans(chain.spans, len(chain.response_ids))


def test_a_capped_thought_is_kept_and_the_chain_goes_on(model, tok):
    text = ("we add the numbers so the sum is then the answer check step first.</thought>"
            "\\boxed{7}.</thought>")
    cap = 6
    chain, script, _ = scripted_chain(model, tok, text, GenerationConfig(max_thoughts=20,
                                                                        max_thought_tokens=cap))
    assert chain.finished and chain.stop_reason == "boxed"
    assert chain.response_ids == script[: len(chain.response_ids)]
    assert chain.spans[0] == (0, cap)  # capped, kept, and the chain continued
    assert chain.spans == naive_spans(tok, chain.response_ids, cap=cap)
    assert all(e - s <= cap for s, e in chain.spans)
    # the same chain with too few thoughts allowed stops on the thought count
    short, _, _ = scripted_chain(model, tok, text, GenerationConfig(max_thoughts=2,
                                                                   max_thought_tokens=cap))
    assert short.stop_reason == "max_thoughts" and short.truncated and len(short.spans) == 2


def test_a_chain_stops_before_a_thought_that_would_pass_the_length_caps(model, tok):
    text = "We add 3 and 4.</thought>" * 10
    cfg = GenerationConfig(max_thoughts=20, max_thought_tokens=12, max_response_tokens=30)
    chain, script, _ = scripted_chain(model, tok, text, cfg)
    assert chain.stop_reason == "length" and chain.truncated
    assert len(chain.response_ids) + 12 > 30 >= len(chain.response_ids)
    prompt_len = len(tok.encode("What is 3 + 4?\n"))
    cfg = GenerationConfig(max_thoughts=20, max_thought_tokens=12, max_model_len=prompt_len + 30)
    by_model_len, _, _ = scripted_chain(model, tok, text, cfg)
    assert by_model_len.response_ids == chain.response_ids
    assert by_model_len.stop_reason == "length"


def test_segmentation_matches_the_naive_reference_on_random_text(tok):
    matcher = StopStringMatcher(tok)
    rng = np.random.default_rng(0)
    pieces = ["we", " add", " 3", ".", ",", ")", "}", "</thought>", " </thought>", "\n",
              "thought", "</", ">", "<", "/", "é", "ü"]
    for _ in range(150):
        text = "".join(rng.choice(pieces, size=int(rng.integers(1, 30))))
        ids = tok.encode(text, add_special_tokens=False)
        cap = int(rng.integers(2, 12)) if rng.random() < 0.5 else None
        assert matcher.spans(ids, cap) == naive_spans(tok, ids, cap), text


def test_batched_budgeted_and_one_by_one_sampling_agree(model, tok):
    rows = arithmetic_rows(3)
    prompts = [tok.encode(r["question"] + "\n") for r in rows]
    base = dict(temperature=1.0, top_p=0.9, max_thoughts=3, max_thought_tokens=8)
    free = RolloutEngine(model, tok, GenerationConfig(**base))
    tight = RolloutEngine(model, tok, GenerationConfig(**base, max_batch_tokens=60))
    a = free.generate(prompts, 2, torch.Generator().manual_seed(3))
    b = tight.generate(prompts, 2, torch.Generator().manual_seed(3))
    assert [[c.response_ids for c in g] for g in a] == [[c.response_ids for c in g] for g in b]
    for group in a:
        for chain in group:
            check_spans(chain.spans, len(chain.response_ids))
            assert chain.spans == free.stop_matcher.spans(chain.response_ids, 8, free.eos_ids)
    # all reset groups in one call = one call per parent, with the parents' spans
    parents = [g[0] for g in a]
    groups = []
    for p, chain in zip(prompts, parents):
        k = len(chain.spans)
        groups.append((p, cut_prefix(chain.response_ids, chain.spans, k), chain.spans[: k - 1], 3))
    together = tight.sample_suffix_groups(groups, torch.Generator().manual_seed(9))
    gen = torch.Generator().manual_seed(9)
    apart = [free.sample_suffixes(p, pre, k, gen, prefix_spans=sp) for p, pre, sp, k in groups]
    assert [[c.response_ids for c in g] for g in together] == [[c.response_ids for c in g]
                                                              for g in apart]
    for (_p, prefix, spans, _k), group in zip(groups, together):
        for chain in group:
            assert chain.response_ids[: len(prefix)] == prefix and chain.spans[: len(spans)] == spans
            check_spans(chain.spans, len(chain.response_ids))


def test_sampled_logprobs_equal_a_recompute(model, tok):
    cfg = GenerationConfig(temperature=0.7, top_p=0.95, max_thoughts=2, max_thought_tokens=6,
                           logprobs=True)
    engine = RolloutEngine(model, tok, cfg)
    prompts = [tok.encode(r["question"] + "\n") for r in arithmetic_rows(2)]
    chains = [g[0] for g in engine.generate(prompts, 1, torch.Generator().manual_seed(0))]
    with torch.no_grad():
        again = token_logprobs(model, [c.prompt_ids for c in chains],
                               [c.response_ids for c in chains], temperature=0.7)
    for chain, lp in zip(chains, again):
        assert len(chain.logprobs) == chain.n_generated
        torch.testing.assert_close(torch.tensor(chain.logprobs), lp, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_chunked_logprobs_equal_full_logits_with_lora_and_checkpointing(tmp_path, arch):
    path = make_model_dir(tmp_path / arch, arch=arch)
    values, grads = [], []
    for chunk, ckpt in ((None, False), (3, False), (3, True)):
        torch.manual_seed(0)
        model, tok = load_model(path, lora_rank=4, lora_alpha=8, gradient_checkpointing=ckpt)
        assert split_lm(model) is not None
        with torch.no_grad():  # make the adapter non-trivial (B starts at zero)
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
        if ckpt:
            model.train()
        prompts = [tok.encode("What is 3 + 4?\n"), tok.encode("Q")]
        responses = [tok.encode("We add 3 and 4.</thought>", add_special_tokens=False), [5, 9]]
        out = token_logprobs(model, prompts, responses, temperature=0.7, chunk_tokens=chunk)
        (sum(o.sum() for o in out)).backward()
        values.append(torch.cat(out).detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    for v, g in zip(values[1:], grads[1:]):
        torch.testing.assert_close(v, values[0], atol=ATOL, rtol=1e-5)
        assert g.keys() == grads[0].keys() and g
        for name in g:
            torch.testing.assert_close(g[name], grads[0][name], atol=1e-5, rtol=1e-4)
