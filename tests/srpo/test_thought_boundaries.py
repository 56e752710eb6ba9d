"""Thought spans, Step lines and reset prefixes under real tokenizers' pre-tokenizers.

Three tokenizers are trained here with the ``tokenizers`` library, built the way real vocabularies
are (not through ``srpo.tokenizer``, so that they are an independent reference):

- ``qwen2``: byte-level BPE with Qwen2's pre-tokenizer regex and a ChatML chat template;
- ``llama3``: byte-level BPE with Llama-3's regex (digits in threes) and its header template;
- ``sentencepiece``: Metaspace (``▁``) BPE split at spaces only, with byte fallback (Llama-2 /
  Mistral layout).

Under each, the token that completes ``</thought>`` carries the next thought's first word
(``>Then``, ``.</thought>So``), which the tests check first (else they would test nothing). Then:
every thought text and ``Step i`` line equals the i-th thought written; ``cut_prefix_tokens(k)``
decodes to exactly thoughts 1..k-1 and keeps every parent id but the straddling one; and through
the Hugging Face engine (a scripted policy that writes a known chain) and ``build_batch``, the
localizer sees the right steps, a boxed answer right after a straddling ``>\\`` ends the chain, and
reset suffixes continue from a prefix that ends at the delimiter.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from srpo.buffers import build_batch
from srpo.engines.base import GenerationConfig
from srpo.engines.hf import RolloutEngine
from srpo.localize import LocalizationResult, build_localization_text
from srpo.thoughts import THOUGHT_DELIMITER, check_spans, thought_texts
from srpo.tokenizer import StopStringMatcher
from tests.srpo.scripted_model import ScriptedLM

QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
FIRST_WORDS = ["Then", "So", "Finally", "Next", "Now", "Thus", "First", "We", "Hence"]
WORDS = [
    "we",
    "add",
    "the",
    "sum",
    "is",
    "check",
    "carry",
    "result",
    "gives",
    "value",
    "so",
    "and",
    "it",
    "multiply",
    "answer",
    "step",
    "again",
]
TOKENIZERS = ("qwen2", "llama3", "sentencepiece")


def random_thoughts(rng: np.random.Generator, n: int | None = None) -> list[str]:
    """A chain in the release's format: n thoughts, each closed by the delimiter with no space
    after it, the next one starting with a capitalised word; the last holds the boxed answer."""
    n = int(rng.integers(2, 6)) if n is None else n
    out = []
    for i in range(n):
        first = str(rng.choice(FIRST_WORDS))
        a, b = int(rng.integers(2, 99)), int(rng.integers(2, 99))
        body = " ".join(str(w) for w in rng.choice(WORDS, size=int(rng.integers(1, 5))))
        if i == n - 1:
            out.append(f"{first} the answer is \\boxed{{{a + b}}}.{THOUGHT_DELIMITER}")
        else:
            out.append(f"{first} {body} {a} + {b} = {a + b}.{THOUGHT_DELIMITER}")
    return out


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    texts = ["".join(random_thoughts(rng)) for _ in range(n)]
    # a boxed answer that opens a thought right after a delimiter: ">\" merges under the regexes
    texts += [f"We check.{THOUGHT_DELIMITER}\\boxed{{{i}}}{THOUGHT_DELIMITER}" for i in range(60)]
    texts += [f"Q: What is {i} + {i + 1}?\n" for i in range(40)]
    return texts


def byte_level(regex: str, template: str, specials: list[str]) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(
        corpus(),
        trainers.BpeTrainer(
            vocab_size=900,
            min_frequency=2,
            special_tokens=specials,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=specials[0], pad_token=specials[0], padding_side="left"
    )
    tok.chat_template = template
    return tok


def sentencepiece_style() -> PreTrainedTokenizerFast:
    texts = corpus()
    core = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    core.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="first", split=True
    )
    core.decoder = decoders.Sequence(
        [
            decoders.Replace("\u2581", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    alphabet = sorted({c for t in texts for c in t.replace(" ", "\u2581")})
    core.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=900,
            min_frequency=2,
            special_tokens=specials,
            initial_alphabet=alphabet,
            show_progress=False,
        ),
    )
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", core.token_to_id("<s>"))]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        unk_token="<unk>",
        padding_side="left",
    )
    tok.chat_template = CHATML
    return tok


@pytest.fixture(scope="module", params=TOKENIZERS)
def tok(request):
    if request.param == "qwen2":
        return byte_level(QWEN2_REGEX, CHATML, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    if request.param == "llama3":
        return byte_level(
            LLAMA3_REGEX,
            LLAMA3_TEMPLATE,
            ["<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        )
    return sentencepiece_style()


def straddlers(tok, ids) -> list[str]:
    """Texts of tokens that hold the delimiter's last character and a letter after it."""
    return [
        t for t in (tok.decode([i]) for i in ids) if ">" in t and t.split(">", 1)[1][:1].isalpha()
    ]


def step_lines(thoughts: list[str]) -> list[str]:
    text = build_localization_text("What is 1 + 1?", thoughts, style="release")
    return [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Step ")]


def test_the_tokenizers_merge_the_delimiter_with_the_next_word(tok):
    rng = np.random.default_rng(1)
    ids = tok.encode("".join(random_thoughts(rng, 5)), add_special_tokens=False)
    assert straddlers(tok, ids), [tok.decode([i]) for i in ids]
    if tok.chat_template:
        assert tok.apply_chat_template(
            [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
        ).endswith("\n")


def test_thought_texts_step_lines_and_cuts_on_sampled_ids(tok):
    """Canonical ids of random chains (what a model samples): texts, Step lines and every cut."""
    from srpo.boundaries import cut_prefix_tokens

    matcher = StopStringMatcher(tok)
    rng = np.random.default_rng(2)
    split = 0
    for _ in range(12):
        thoughts = random_thoughts(rng)
        ids = tok.encode("".join(thoughts), add_special_tokens=False)
        spans = matcher.spans(ids)
        check_spans(spans, len(ids))
        assert len(spans) == len(thoughts)
        assert thought_texts(tok, ids, spans) == thoughts
        assert step_lines(thought_texts(tok, ids, spans)) == [
            t.replace(THOUGHT_DELIMITER, "").strip() for t in thoughts
        ]
        for k in range(1, len(spans) + 2):
            cut = cut_prefix_tokens(tok, ids, spans, k)
            assert cut.exact
            assert tok.decode(cut.ids) == "".join(thoughts[: k - 1]), (k, thoughts)
            check_spans(cut.spans, len(cut.ids))
            # ids are cut, never re-encoded: only the straddling token is replaced
            kept = spans[k - 2][1] - cut.replaced if k > 1 else 0
            assert cut.ids[:kept] == ids[:kept]
            split += cut.replaced
    assert split > 0


class _Task:
    """One question; every chain counts as wrong, so each prompt has a parent to reset."""

    has_step_verifier = False

    def prompt(self, problem):
        return problem

    def grade(self, problem, text):
        return 0.0


class _FixedK:
    """A localizer that resets every parent at step k and keeps the views it was shown."""

    name = "random"

    def __init__(self, k: int) -> None:
        self.k, self.views = k, []

    def locate(self, views, rng, generator=None):
        self.views.extend(views)
        return [LocalizationResult(min(self.k, v.n), "random") for v in views]


def _engine(tok, thoughts, question="Q: What is 2 + 3?\n", max_thoughts=20):
    prompt = tok.encode(question)
    model = ScriptedLM(tok, prompt, "".join(thoughts))
    config = GenerationConfig(
        temperature=0.0, top_p=1.0, max_thoughts=max_thoughts, max_thought_tokens=64
    )
    return RolloutEngine(model, tok, config, eos_ids=[tok.eos_token_id]), prompt, question


@pytest.mark.parametrize("k", [2, 3])
def test_engine_spans_localizer_steps_and_reset_suffixes(tok, k):
    thoughts = random_thoughts(np.random.default_rng(3), 4)
    engine, prompt, question = _engine(tok, thoughts)
    chain = engine.greedy([prompt])[0]
    assert chain.response_ids == tok.encode("".join(thoughts), add_special_tokens=False)
    assert straddlers(tok, chain.response_ids)
    assert thought_texts(tok, chain.response_ids, chain.spans) == thoughts
    assert chain.finished and chain.stop_reason == "boxed"

    localizer = _FixedK(k)
    batch = build_batch(
        [question],
        _Task(),
        engine,
        tok,
        "1x4",
        localizer,
        np.random.default_rng(0),
        torch.Generator().manual_seed(0),
    )
    assert [step_lines(v.thoughts) for v in localizer.views] == [
        [t.replace(THOUGHT_DELIMITER, "").strip() for t in thoughts]
    ]
    resets = [s for s in batch.samples if s.is_reset_group]
    assert len(resets) == 4 and batch.events[0].k == k
    for sample in resets:
        prefix = sample.response_ids[: sample.prefix_len]
        assert tok.decode(prefix) == "".join(thoughts[: k - 1])
        assert tok.decode(sample.response_ids, skip_special_tokens=True) == "".join(thoughts)
        assert sample.loss_mask == [0] * sample.prefix_len + [1] * (
            len(sample.response_ids) - sample.prefix_len
        )


def test_a_boxed_answer_right_after_a_straddling_token_ends_the_chain(tok):
    """``</thought>\\boxed{7}</thought>``: the ``\\`` rides on the token that closes the first
    thought (``>\\``); the second thought still holds the box, so the chain ends there."""
    thoughts = [
        f"We check.{THOUGHT_DELIMITER}",
        f"\\boxed{{7}}{THOUGHT_DELIMITER}",
        f"Then more.{THOUGHT_DELIMITER}",
    ]
    engine, prompt, _ = _engine(tok, thoughts)
    chain = engine.greedy([prompt])[0]
    assert thought_texts(tok, chain.response_ids, chain.spans)[:2] == thoughts[:2]
    assert chain.n_thoughts == 2 and chain.finished and chain.stop_reason == "boxed"


@pytest.mark.parametrize("pattern", ["qwen2", "llama3", "sentencepiece"])
def test_the_package_tokenizer_builders_straddle_too(pattern):
    """``srpo.tokenizer``'s builders (used by the GPU benchmarks) give the same merges."""
    from srpo.boundaries import cut_prefix_tokens
    from srpo.tokenizer import build_bpe_tokenizer, build_sentencepiece_tokenizer

    if pattern == "sentencepiece":
        built = build_sentencepiece_tokenizer(corpus(), vocab_size=900)
    else:
        built = build_bpe_tokenizer(corpus(), vocab_size=900, pattern=pattern)
    thoughts = random_thoughts(np.random.default_rng(4), 4)
    ids = built.encode("".join(thoughts), add_special_tokens=False)
    spans = StopStringMatcher(built).spans(ids)
    assert straddlers(built, ids)
    assert thought_texts(built, ids, spans) == thoughts
    assert built.decode(cut_prefix_tokens(built, ids, spans, 3).ids) == "".join(thoughts[:2])
