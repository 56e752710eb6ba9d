"""The tiny tokenizer and model, and loading/saving local models."""

import string

import pytest
import torch

from srpo.model import build_tiny_model, load_model, save_model
from srpo.tokenizer import THOUGHT_DELIMITER, BoxedDetector, build_tokenizer, delimiter_ids


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_tokenizer_round_trip_printable_ascii(tokenizer):
    text = string.printable + " start 3; +4 (mod 10) Step 2 is wrong \\boxed{7}"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_special_tokens_and_delimiter(tokenizer):
    assert tokenizer.pad_token == "<pad>" and tokenizer.bos_token == "<bos>"
    assert tokenizer.eos_token == "<eos>"
    ids = tokenizer("3+4=7</thought>").input_ids
    assert ids[0] == tokenizer.bos_token_id
    delim = delimiter_ids(tokenizer)
    assert len(delim) == 1 and ids[-1] == delim[0]
    # the delimiter survives skip_special_tokens (it is part of the text)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "3+4=7" + THOUGHT_DELIMITER
    with pytest.raises(ValueError, match="delimiter"):
        delimiter_ids(tokenizer, "")


def test_boxed_detector(tokenizer):
    detector = BoxedDetector(tokenizer)
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    assert detector.contains_boxed(enc("1+2=3 \\boxed{3}</thought>"))
    assert not detector.contains_boxed(enc("1+2=3 \\boxed{3"))
    assert not detector.contains_boxed(enc("1+2=3</thought>"))
    assert detector.boxed_answer(enc("\\boxed{1} \\boxed{2}")) == "2"


def test_tiny_model_seeded_and_global_rng_untouched(tokenizer):
    state = torch.random.get_rng_state()
    a = build_tiny_model(tokenizer, seed=3)
    b = build_tiny_model(tokenizer, seed=3)
    c = build_tiny_model(tokenizer, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))
    logits = a(input_ids=torch.tensor([[1, 5, 6]])).logits
    assert logits.shape == (1, 3, len(tokenizer))
    with pytest.raises(ValueError, match="n_head"):
        build_tiny_model(tokenizer, d_model=63, n_head=4)


def test_save_load_round_trip_and_lora(tokenizer, tmp_path):
    model = build_tiny_model(tokenizer, seed=1)
    save_model(model, tokenizer, tmp_path / "m")
    loaded, tok2 = load_model(tmp_path / "m")
    x = torch.tensor([tokenizer("start 1; +2").input_ids])
    torch.testing.assert_close(loaded(input_ids=x).logits, model(input_ids=x).logits)
    assert tok2.encode("3+4=7</thought>") == tokenizer.encode("3+4=7</thought>")

    lora, _ = load_model(tmp_path / "m", lora_rank=4)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)
    save_model(lora, tokenizer, tmp_path / "adapter")
    again, _ = load_model(tmp_path / "adapter")
    torch.testing.assert_close(again(input_ids=x).logits, lora(input_ids=x).logits)


def test_load_model_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_model(tmp_path / "missing")
    with pytest.raises(ValueError, match="config.json"):
        load_model(tmp_path)


def test_an_exported_adapter_names_its_base_by_an_absolute_path(tmp_path, monkeypatch):
    """A model given by a relative path: the adapter saved from it loads from elsewhere."""
    import json

    from srpo.model import build_random_model, load_model, save_model
    from tests.srpo.real_model import make_tokenizer

    tok = make_tokenizer()
    save_model(build_random_model(tok, "qwen2", n_layer=1, d_model=32, n_head=2), tok,
               tmp_path / "base")
    monkeypatch.chdir(tmp_path)
    model, tok = load_model("base", lora_rank=4)
    save_model(model, tok, tmp_path / "adapter")
    base = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())[
        "base_model_name_or_path"]
    assert base == str((tmp_path / "base").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    reloaded, _ = load_model(tmp_path / "adapter")
    assert hasattr(reloaded, "peft_config")
