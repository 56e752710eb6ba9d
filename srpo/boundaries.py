"""Cutting a reset prefix exactly at a thought's delimiter when a token straddles it.

Under the Qwen2 / Llama-3 pre-tokenizers (``[^\\r\\n\\p{L}\\p{N}]?\\p{L}+``) and SentencePiece
vocabularies, the token that completes ``</thought>`` often carries the next thought's first
characters: ``.</`` ``thought`` ``>Then``. The sampled ids are never changed (the parent and every
rollout train on what was sampled), and a thought's token span ends at that straddling token.

The rule for a reset at step k (keep thoughts 1..k-1), ``cut_prefix_tokens``:

1. If the last kept thought ends on a token boundary (its decoded text ends with the delimiter), the
   prefix is the parent's ids up to the span end, unchanged.
2. Otherwise the kept ids are the parent's ids up to (not including) the straddling token, followed
   by the ids of *only the straddler's text up to the end of the delimiter* (``>`` for ``>Then``;
   ``.</thought>`` for ``.</thought>So``). That piece is encoded on its own
   (``tokenizer.encode``), and the result is accepted only if decoding the kept ids followed by it
   adds exactly that text (checked in context: SentencePiece's encoder prepends a ``▁`` to a piece
   on its own); else it is spelled with single vocabulary tokens matched greedily by their text in
   context (built once per tokenizer). Nothing before the straddler is re-encoded.
3. If neither gives exact text (a tokenizer without the pieces: not seen in practice), the
   straddling token is kept whole and ``PrefixCut.exact`` is False (the caller counts it).

So the prefix decodes to exactly thoughts 1..k-1, its ids equal the parent's except possibly the
last one or few (the straddler's replacement), and the suffixes are sampled from there: their
first thought starts with whatever the policy writes next (it usually re-writes the carried word).
The replaced ids sit in the copied prefix, which the loss masks out (except in the no-mask
ablation, where they are trained on as copied tokens: a slightly non-canonical tokenization).
Both engines (Hugging Face, vLLM) get their reset prefixes from here (``srpo.buffers``).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from srpo.thoughts import THOUGHT_DELIMITER, check_spans

__all__ = ["PrefixCut", "cut_prefix_tokens", "encode_piece"]

#: tokens of context decoded around a piece to check it in place
_CONTEXT = 8
#: longest single-token text the greedy spelling looks for
_MAX_TOKEN_CHARS = 48


@dataclass(frozen=True)
class PrefixCut:
    """A reset prefix: thoughts 1..k-1 of a parent.

    Attributes:
        ids: the prefix's token ids.
        spans: its thought spans (the parent's first k-1, the last one ending at ``len(ids)``).
        replaced: number of trailing parent ids replaced (0 or 1: the straddling token) and
            ``len(ids) - (parent ids kept)`` ids put in their place.
        exact: the prefix decodes to exactly thoughts 1..k-1 (False only when a straddling token
            could not be split and was kept whole).
    """

    ids: list[int]
    spans: list[tuple[int, int]]
    replaced: int = 0
    exact: bool = True


def _decode(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(
        list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
    )


#: per tokenizer object (weakly held): its token-text table
_TOKEN_TEXTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _token_table(tokenizer) -> tuple[dict[str, int], int]:
    """Text of every vocabulary token as it decodes after a letter (so a SentencePiece ``▁x``
    reads `` x``), mapped to its id (a byte-fallback ``<0x..>`` token only where no other token
    has that text); and the longest text. Built once per tokenizer object."""
    cached = _TOKEN_TEXTS.get(tokenizer)
    if cached is not None:
        return cached
    anchor = tokenizer.encode("a", add_special_tokens=False)[-1:]
    lead = _decode(tokenizer, anchor)
    size = len(tokenizer)
    texts = tokenizer.batch_decode(
        [anchor + [i] for i in range(size)],
        skip_special_tokens=False,
        clean_up_tokenization_spaces=False,
    )
    names = tokenizer.convert_ids_to_tokens(list(range(size)))
    special = set(getattr(tokenizer, "all_special_ids", []))
    table: dict[str, int] = {}
    longest = 1
    for i, (text, name) in enumerate(zip(texts, names)):
        if i in special or not text.startswith(lead):
            continue
        piece = text[len(lead) :]
        if not piece or len(piece) > _MAX_TOKEN_CHARS:
            continue
        fallback = str(name).startswith("<0x")
        if piece not in table or (not fallback and str(names[table[piece]]).startswith("<0x")):
            table[piece] = i
            longest = max(longest, len(piece))
    _TOKEN_TEXTS[tokenizer] = (table, longest)
    return table, longest


def _spell(tokenizer, text: str) -> list[int] | None:
    """``text`` as single vocabulary tokens, longest match first (None if a character has none)."""
    table, longest = _token_table(tokenizer)
    out, position = [], 0
    while position < len(text):
        for size in range(min(longest, len(text) - position), 0, -1):
            token = table.get(text[position : position + size])
            if token is not None:
                out.append(token)
                position += size
                break
        else:
            return None
    return out


def encode_piece(tokenizer, context_ids: Sequence[int], text: str) -> list[int] | None:
    """Ids that, appended to ``context_ids``, add exactly ``text`` to its decoded text.

    Tries the tokenizer's own encoding of ``text``, then a greedy spelling with single vocabulary
    tokens; each is checked by decoding it after the last few context ids. None when neither
    works.
    """
    context = list(context_ids)[-_CONTEXT:]
    before = _decode(tokenizer, context)
    for make in (
        lambda: list(tokenizer.encode(text, add_special_tokens=False)),
        lambda: _spell(tokenizer, text),
    ):
        ids = make()
        if ids and _decode(tokenizer, context + ids) == before + text:
            return ids
    return None


def cut_prefix_tokens(
    tokenizer,
    response_ids: Sequence[int],
    spans: Sequence[tuple[int, int]],
    k: int,
    delimiter: str = THOUGHT_DELIMITER,
) -> PrefixCut:
    """The reset prefix at step k: thoughts 1..k-1, cut exactly at the (k-1)-th delimiter.

    Args:
        tokenizer: the policy's tokenizer.
        response_ids: the parent's response ids, length T.
        spans: its thought spans (n of them, tiling ``[0, T)``, as recorded while sampling).
        k: the 1-based reset step, in ``1..n+1`` (``k = 1``: the empty prefix).
        delimiter: the step delimiter.

    Returns:
        A ``PrefixCut`` (module docstring for the rule at a straddling token).

    Raises:
        ValueError: if k is outside ``1..n+1`` or the spans do not tile the response.
    """
    ids = [int(t) for t in response_ids]
    check_spans(spans, len(ids))
    n = len(spans)
    if not 1 <= k <= n + 1:
        raise ValueError(f"k must be in 1..{n + 1} (n = {n} thoughts), got {k}")
    if k == 1:
        return PrefixCut([], [])
    kept = [(int(s), int(e)) for s, e in spans[: k - 1]]
    start, end = kept[-1]
    text = _decode(tokenizer, ids[start:end])
    position = text.find(delimiter)
    stop = position + len(delimiter)
    if position < 0 or stop == len(text):  # capped / unfinished thought, or a clean boundary
        return PrefixCut(ids[:end], kept)
    head = _decode(tokenizer, ids[start : end - 1])
    piece_ids = None
    if text.startswith(head) and stop > len(head):
        piece_ids = encode_piece(tokenizer, ids[: end - 1], text[len(head) : stop])
    if piece_ids is None:
        return PrefixCut(ids[:end], kept, exact=False)
    prefix = ids[: end - 1] + piece_ids
    kept[-1] = (start, len(prefix))
    return PrefixCut(prefix, kept, replaced=1)
