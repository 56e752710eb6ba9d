"""The preallocated KV cache (``srpo.kv_cache``) against transformers' growing cache and a full
recompute: same logits at every step (left padding, rows repeated and dropped, a capacity that
has to grow), and the same chains through the Hugging Face engine."""

from __future__ import annotations

import pytest
import torch

import srpo.engines.hf as hf
from srpo.engines.base import GenerationConfig
from srpo.engines.hf import RolloutEngine
from srpo.kv_cache import PreallocatedCache, make_cache
from srpo.model import build_random_model
from tests.srpo.real_model import make_tokenizer

ATOL = 2e-5


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model(request, tok):
    return build_random_model(
        tok, request.param, n_layer=2, d_model=64, n_head=4, n_kv_head=2, seed=3
    )


def _decode(model, ids, mask, cache, steps, drop_at, repeat):
    """Prefill left-padded ``ids``, repeat its rows (``repeat``: a prompt index per row), then
    feed each row's tokens ``steps[row]`` one by one, dropping row 0 before step ``drop_at``.
    Returns per-step logits (a list of (rows_t, V)), the rows kept and the cache."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        past_key_values=cache,
    )
    cache, logits = out.past_key_values, [out.logits[:, -1]]
    cache.batch_select_indices(repeat)
    mask, positions = mask[repeat], positions[repeat]
    logits = [logits[0][repeat]]
    rows = torch.arange(len(repeat))
    nxt = mask.sum(-1)
    for t in range(steps.shape[1]):
        if t == drop_at:
            keep = torch.arange(1, mask.shape[0])
            cache.batch_select_indices(keep)
            mask, nxt, rows = mask[keep], nxt[keep], rows[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], -1)
        out = model(
            input_ids=steps[rows, t : t + 1],
            attention_mask=mask,
            position_ids=nxt.unsqueeze(-1),
            use_cache=True,
            past_key_values=cache,
        )
        cache, nxt = out.past_key_values, nxt + 1
        logits.append(out.logits[:, -1])
    return logits, rows, cache


@pytest.mark.parametrize("capacity", [64, 9])  # 9: shorter than the sequence, the buffers grow
def test_preallocated_equals_growing_cache_and_a_full_recompute(model, tok, capacity):
    torch.manual_seed(0)
    prompts = [tok.encode("What is 3 + 4?\n"), tok.encode("Hi\n"), tok.encode("We add 5 and 6.")]
    width = max(len(p) for p in prompts)
    ids = torch.full((3, width), tok.pad_token_id)
    mask = torch.zeros((3, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    repeat = torch.tensor([0, 0, 1, 2, 2])
    steps = torch.randint(0, len(tok), (5, 8))
    with torch.no_grad():
        cache = make_cache(model, capacity)
        assert isinstance(cache, PreallocatedCache)
        ours, rows, cache = _decode(model, ids, mask, cache, steps, drop_at=3, repeat=repeat)
        ref, ref_rows, _ = _decode(model, ids, mask, None, steps, drop_at=3, repeat=repeat)
        assert torch.equal(rows, ref_rows)
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-5)
        assert cache.get_seq_length() == width + steps.shape[1]
        # a full recompute of each kept row (no padding, no cache) gives the last logits
        for j, r in enumerate(rows.tolist()):
            seq = torch.tensor([prompts[repeat[r]] + steps[r].tolist()])
            full = model(input_ids=seq).logits[0, -1]
            torch.testing.assert_close(ours[-1][j], full, atol=ATOL, rtol=1e-5)


def test_the_engine_decodes_in_a_preallocated_cache_with_the_same_chains(model, tok, monkeypatch):
    made = []

    def spy(m, capacity):
        cache = make_cache(m, capacity)
        made.append((type(cache), capacity))
        return cache

    config = GenerationConfig(temperature=0.0, top_p=1.0, max_thoughts=3, max_thought_tokens=6)
    prompts = [tok.encode("What is 3 + 4?\n"), tok.encode("Hi\n")]
    monkeypatch.setattr(hf, "make_cache", spy)
    ours = RolloutEngine(model, tok, config).greedy(prompts)
    suffixes = RolloutEngine(model, tok, config).sample_suffixes(
        prompts[0], ours[0].response_ids[:4], 3, torch.Generator().manual_seed(0), 0.7
    )
    assert made and all(kind is PreallocatedCache for kind, _ in made)
    # the capacity is the batch's reach: the longest context plus the largest remaining budget
    assert made[0][1] == max(len(p) for p in prompts) + 3 * 6
    monkeypatch.setattr(hf, "make_cache", lambda m, capacity: None)  # transformers' own cache
    ref = RolloutEngine(model, tok, config).greedy(prompts)
    ref_suffixes = RolloutEngine(model, tok, config).sample_suffixes(
        prompts[0], ours[0].response_ids[:4], 3, torch.Generator().manual_seed(0), 0.7
    )
    assert [c.response_ids for c in ours] == [c.response_ids for c in ref]
    assert [c.spans for c in ours] == [c.spans for c in ref]
    assert [c.response_ids for c in suffixes] == [c.response_ids for c in ref_suffixes]


def test_sliding_window_models_keep_their_own_cache(tok):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        use_sliding_window=True,
        sliding_window=16,
        max_window_layers=0,
    )
    assert make_cache(Qwen2ForCausalLM(config), 32) is None
