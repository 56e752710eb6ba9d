"""A small tokenizer built in code, and helpers that work on token ids.

The tiny CPU model needs a tokenizer that exists without any download. `build_tokenizer` makes one
with the `tokenizers` library: every character of `string.printable` is a token, so
any English prompt encodes without unknown tokens, and a few frequent strings of the synthetic task
and of the localization prompt are single tokens so that sequences stay short. The step delimiter
`</thought>` is always exactly one token.

Helpers that work for any Hugging Face tokenizer (the tiny one or a real model's):

- `delimiter_ids(tokenizer)`: the token-id sequence of the step delimiter (one id for the tiny
  tokenizer; possibly several for a real BPE tokenizer).
- `BoxedDetector`: tells whether a sequence of token ids contains a complete `\\boxed{...}`.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import AddedToken, Tokenizer, decoders, models, processors
from transformers import PreTrainedTokenizerFast

from srpo.thoughts import extract_boxed

#: The step delimiter that closes every thought (the paper's release uses this literal).
THOUGHT_DELIMITER = "</thought>"

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
