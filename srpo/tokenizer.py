"""A small tokenizer built in code, and helpers that work on token ids.

The tiny CPU model needs a tokenizer that exists without any download. `build_tokenizer` makes one
with the `tokenizers` library: every character of `string.printable` is a token, so
any English prompt encodes without unknown tokens, and a few frequent strings of the synthetic task
and of the localization prompt are single tokens so that sequences stay short. The step delimiter
`</thought>` is always exactly one token.

`build_bpe_tokenizer` trains a byte-level BPE tokenizer (the kind real models use: GPT-2, Llama-3,
Qwen2) on a corpus in code, with the pre-tokenizer regex of GPT-2, Qwen2 or Llama-3
(`PRE_TOKENIZER_PATTERNS`). On it `</thought>` is *not* one token and merges with the punctuation
before it (`.</` `thought` `>`); under the Qwen2 / Llama-3 regex the `>` also merges with the next
thought's first word (`>Then`, `>So`): the token that completes the delimiter *straddles* two
thoughts, which is what the thought-boundary logic must survive (`srpo.boundaries`).
`build_sentencepiece_tokenizer` trains a SentencePiece-style BPE (Metaspace `▁` for spaces, no
split on punctuation, byte fallback), the layout of Llama-2 / Mistral vocabularies.

Helpers that work for any Hugging Face tokenizer (the tiny one or a real model's):

- `StopStringMatcher`: finds the end of a thought by the decoded text (the release's stop-string
  rule), whatever the tokenizer's merges.
- `eos_token_ids(tokenizer, model)`: every id that ends a chain (the tokenizer's eos and the
  model's generation-config eos list).
- `delimiter_ids(tokenizer)`: the token-id sequence of the delimiter encoded on its own (one id for
  the tiny tokenizer; informative only for a BPE tokenizer, where merges change it in context).
- `BoxedDetector`: tells whether a sequence of token ids contains a complete `\\boxed{...}`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import PreTrainedTokenizerFast

from srpo.thoughts import THOUGHT_DELIMITER, extract_boxed

__all__ = ["THOUGHT_DELIMITER", "build_tokenizer", "build_bpe_tokenizer", "eos_token_ids",
           "StopStringMatcher", "delimiter_ids", "BoxedDetector", "CHATML_TEMPLATE",
           "PRE_TOKENIZER_PATTERNS", "LLAMA3_CHAT_TEMPLATE", "build_sentencepiece_tokenizer"]

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<bos>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)

#: Character tokens: printable ASCII (codes 32..126) and the whitespace of `string.printable`.
CHARACTERS = tuple(chr(code) for code in range(32, 127)) + ("\n", "\t", "\r", "\x0b", "\x0c")

#: Multi-character strings that become single tokens (matched greedily, anywhere in the text).
#: They only shorten sequences; decoding is exact whether or not they are present.
WORD_TOKENS = (
    "\\boxed{",
    "start",
    "(mod ",
    "Step ",
    "step",
    "answer",
    "wrong",
    "first",
    "thought",
    "reasoning",
    "error",
    "the ",
    "The ",
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the tiny character-level tokenizer.

    Vocabulary (ids are stable across calls): `<pad>`=0, `<bos>`=1, `<eos>`=2, `<unk>`=3, then the
    100 characters of `CHARACTERS`, then `</thought>`, then `WORD_TOKENS`. Encoding with
    `add_special_tokens=True` (the default) prepends `<bos>`; `<eos>` is never added automatically.
    `</thought>` is an ordinary (non-special) added token, so `decode(..., skip_special_tokens=True)`
    keeps it.

    Returns:
        A `transformers.PreTrainedTokenizerFast` with pad, bos, eos and unk tokens set.
    """
    vocab: dict[str, int] = {}
    for token in SPECIAL_TOKENS + CHARACTERS:
        vocab[token] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
    core.decoder = decoders.Fuse()
    core.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    core.add_tokens(
        [AddedToken(THOUGHT_DELIMITER, normalized=False, special=False)]
        + [AddedToken(word, normalized=False, special=False) for word in WORD_TOKENS]
    )
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A $B",
        special_tokens=[(BOS_TOKEN, vocab[BOS_TOKEN])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="left",
    )
    return tokenizer


def delimiter_ids(tokenizer: PreTrainedTokenizerFast, delimiter: str = THOUGHT_DELIMITER) -> list[int]:
    """Token ids of the step delimiter, encoded on its own without special tokens.

    Args:
        tokenizer: any Hugging Face tokenizer.
        delimiter: the delimiter text (default `</thought>`).

    Returns:
        A non-empty list of ids; `[id]` for the tiny tokenizer. For a real BPE tokenizer the
        delimiter may be several ids; thought boundaries are then found by matching this id
        sequence (see `srpo.thoughts.thought_spans`).

    Raises:
        ValueError: if the delimiter is empty or encodes to no ids.
    """
    if not delimiter:
        raise ValueError("delimiter must be a non-empty string, got ''")
    ids = list(tokenizer.encode(delimiter, add_special_tokens=False))
    if not ids:
        raise ValueError(f"delimiter {delimiter!r} encodes to no token ids with this tokenizer")
    return ids


class BoxedDetector:
    """Detects a complete `\\boxed{...}` in a sequence of token ids.

    Decoding is used only to look for the answer; it never feeds back into the ids. A cheap
    pre-check skips the decode when none of the ids can contain a closing brace.

    Args:
        tokenizer: the tokenizer that produced the ids.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerFast) -> None:
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        # Ids whose token text contains "}" (byte-level BPE tokens keep "}" as a literal char).
        self._closing_ids = frozenset(i for t, i in vocab.items() if "}" in t)

    def contains_boxed(self, ids: Sequence[int]) -> bool:
        """True when the decoded ids contain a complete `\\boxed{...}` (balanced braces)."""
        if not any(i in self._closing_ids for i in ids):
            return False
        return self.boxed_answer(ids) is not None

    def boxed_answer(self, ids: Sequence[int]) -> str | None:
        """The content of the last complete `\\boxed{...}` in the decoded ids, or None."""
        text = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return extract_boxed(text)


#: A ChatML-style template (the layout of Qwen2 instruction models), used by `build_bpe_tokenizer`.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


#: Pre-tokenizer regexes of real byte-level BPE vocabularies (published in their tokenizer files).
#: ``gpt2``: a letter run takes at most a leading space (``>`` and ``Then`` stay apart); ``qwen2``
#: and ``llama3``: a letter run takes one leading non-letter, non-digit character, so ``>Then`` is
#: one pre-token and merges into one token when frequent (Llama-3 groups digits by up to three,
#: Qwen2 splits every digit).
PRE_TOKENIZER_PATTERNS = {
    "gpt2": None,  # the ByteLevel pre-tokenizer's own regex
    "qwen2": (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
              r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
    "llama3": (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
}

#: A Llama-3-style chat template (header tokens, ``<|eot_id|>`` ends a turn).
LLAMA3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def build_bpe_tokenizer(
    corpus: Iterable[str],
    vocab_size: int = 1024,
    chat_template: str | None = CHATML_TEMPLATE,
    min_frequency: int = 2,
    pattern: str = "gpt2",
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `corpus` (GPT-2 / Llama-3 / Qwen2 style).

    Special tokens: `<|endoftext|>` (eos and pad), `<|im_start|>`, `<|im_end|>` (chat turns); with
    `pattern="llama3"` also Llama-3's `<|start_header_id|>`, `<|end_header_id|>`, `<|eot_id|>`. The
    thought delimiter is deliberately *not* added as a token: it is learned like any text, so
    frequent contexts such as `.</thought>` merge across its first character (and, under the
    `qwen2` / `llama3` regex, `>Then` across its last).

    Args:
        corpus: training texts.
        vocab_size: target vocabulary size (bytes and specials included).
        chat_template: Jinja chat template stored on the tokenizer (None: no template).
        min_frequency: minimum pair count for a merge.
        pattern: the pre-tokenizer regex, a key of `PRE_TOKENIZER_PATTERNS`.

    Returns:
        A `PreTrainedTokenizerFast` (no bos token, as Qwen2; left padding).
    """
    if pattern not in PRE_TOKENIZER_PATTERNS:
        raise ValueError(f"pattern must be one of {tuple(PRE_TOKENIZER_PATTERNS)}; got {pattern!r}")
    core = Tokenizer(models.BPE())
    regex = PRE_TOKENIZER_PATTERNS[pattern]
    if regex is None:
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:  # the layout of Qwen2's and Llama-3's tokenizer files: the regex, then bytes
        core.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    core.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    if pattern == "llama3":
        specials += ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    core.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        padding_side="left",
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def build_sentencepiece_tokenizer(
    corpus: Iterable[str],
    vocab_size: int = 1024,
    min_frequency: int = 2,
    chat_template: str | None = CHATML_TEMPLATE,
) -> PreTrainedTokenizerFast:
    """Train a SentencePiece-style BPE tokenizer (the layout of Llama-2 / Mistral vocabularies).

    Spaces become `▁` (Metaspace, a `▁` prepended to the first word); text is split at spaces only,
    not at punctuation, so merges cross it (`.</thought>Then` can be one token); characters missing from the vocabulary fall
    back to byte tokens `<0x..>`. Decoding a span on its own drops a leading `▁`'s space, as
    SentencePiece does. Specials: `<unk>`, `<s>` (bos, prepended), `</s>` (eos, pad), plus the
    ChatML turn tokens.
    """
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first",
                                                  split=True)
    core.decoder = decoders.Sequence([
        decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(" ", 1, 0),
    ])
    corpus = list(corpus)
    alphabet = sorted({ch for text in corpus for ch in text.replace(" ", "\u2581")})
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=specials + byte_tokens, initial_alphabet=alphabet,
                                  show_progress=False)
    core.train_from_iterator(corpus, trainer)
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", core.token_to_id("<s>"))])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="</s>",
        unk_token="<unk>", padding_side="left",
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def eos_token_ids(tokenizer, model=None) -> frozenset[int]:
    """Every id that ends a chain: the tokenizer's eos plus the eos list of the model's generation
    config and model config (instruction models often end a turn with a second id, e.g. Qwen2's
    `<|im_end|>` next to `<|endoftext|>`).

    Raises:
        ValueError: if no eos id is found at all.
    """
    ids: set[int] = set()

    def add(value) -> None:
        if value is None:
            return
        if isinstance(value, (list, tuple, set, frozenset)):
            for v in value:
                add(v)
        else:
            ids.add(int(value))

    add(getattr(tokenizer, "eos_token_id", None))
    if model is not None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        add(getattr(getattr(base, "generation_config", None), "eos_token_id", None))
        add(getattr(getattr(base, "config", None), "eos_token_id", None))
    if not ids:
        raise ValueError("no end-of-sequence id: set tokenizer.eos_token or the model's "
                         "generation_config.eos_token_id")
    return frozenset(ids)


class StopStringMatcher:
    """Ends a thought when its decoded text contains the stop string (the release's rule).

    Matching on decoded text rather than on the stop string's standalone token ids makes the rule
    independent of merges: with a byte-level BPE `.</thought>` may be `.</` `thought` `>`, which
    never contains the ids of `</thought>` encoded alone.

    Cost: only tokens whose own text contains the stop string's last character can complete it
    (`candidates`, computed once over the vocabulary); for those, the last `len(stop) + 1` tokens
    of the current thought are decoded. Every token that contributes to the stop string contributes
    at least one of its characters, so that window always holds a completed stop string. Assumes
    the stop string does not begin with whitespace (some decoders strip a leading space).

    Args:
        tokenizer: the policy's tokenizer.
        stop: the stop string (default `</thought>`).
    """

    def __init__(self, tokenizer, stop: str = THOUGHT_DELIMITER) -> None:
        if not stop:
            raise ValueError("stop string must be non-empty, got ''")
        self.tokenizer = tokenizer
        self.stop = stop
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))],
                                       skip_special_tokens=False,
                                       clean_up_tokenization_spaces=False)
        self.candidates = frozenset(i for i, text in enumerate(texts) if stop[-1] in text)
        self.window = len(stop) + 1

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False)

    def closes(self, ids: Sequence[int], start: int, end: int | None = None,
               carry: str = "") -> bool:
        """Whether the thought `ids[start:end]` (end: `len(ids)`), whose last token was just
        appended, now holds the stop string (it did not before, or it would have been closed
        then). `carry` is the thought's text that the previous thought's last token carried past
        its stop string (`srpo.thoughts.split_thought_text`); it counts while the window reaches
        the thought's first token."""
        end = len(ids) if end is None else end
        if end <= start or ids[end - 1] not in self.candidates:
            return False
        first = max(start, end - self.window)
        text = self._decode(ids[first:end])
        return self.stop in ((carry + text) if first == start else text)

    def carry_after(self, ids: Sequence[int], start: int, end: int, carry: str = "") -> str:
        """The text past the stop string in the thought `ids[start:end]` (that `closes`): what a
        straddling last token (e.g. `>Then`) carries into the next thought; "" when none."""
        first = max(start, end - self.window)
        text = self._decode(ids[first:end])
        if first == start:
            text = carry + text
        position = text.find(self.stop)
        return "" if position < 0 else text[position + len(self.stop):]

    def spans(
        self,
        ids: Sequence[int],
        max_thought_tokens: int | None = None,
        eos_ids: Iterable[int] = (),
    ) -> list[tuple[int, int]]:
        """Thought spans of a response segmented after the fact with the generation rule.

        A thought ends after the token that completes the stop string (text a straddling token
        carries past it starts the next thought), or after `max_thought_tokens` tokens (a capped
        thought is a span of its own, as during generation); an eos token ends the response and
        belongs to the thought it ends (a lone eos right after a closed thought is attached to
        that thought). Returns half-open spans tiling `[0, len(ids))` (see
        `srpo.thoughts.check_spans`).
        """
        return self.segment(ids, max_thought_tokens, eos_ids)[0]

    def segment(
        self,
        ids: Sequence[int],
        max_thought_tokens: int | None = None,
        eos_ids: Iterable[int] = (),
    ) -> tuple[list[tuple[int, int]], str]:
        """`spans(...)` and the carry of the last closed thought (its text past the stop string;
        "" when the last thought is open or capped)."""
        eos = frozenset(int(i) for i in eos_ids)
        ids = [int(i) for i in ids]
        spans: list[tuple[int, int]] = []
        start, carry = 0, ""
        for end in range(1, len(ids) + 1):
            token = ids[end - 1]
            if token in eos:
                if end - 1 == start and spans:
                    spans[-1] = (spans[-1][0], end)
                else:
                    spans.append((start, end))
                start, carry = end, ""
                break
            if self.closes(ids, start, end, carry):
                spans.append((start, end))
                carry = self.carry_after(ids, start, end, carry)
                start = end
            elif max_thought_tokens is not None and end - start >= max_thought_tokens:
                spans.append((start, end))
                start, carry = end, ""
        if start < len(ids):
            spans.append((start, len(ids)))
            carry = ""
        return spans, carry
