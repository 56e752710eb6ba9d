"""Thought segmentation on token ids, prefix cuts, and boxed-answer extraction.

A response is a sequence of thoughts; each thought ends with the step delimiter (`</thought>`).
Boundaries are kept as half-open token-index spans `[start, end)` over the response ids, and a reset
prefix is cut on those ids. Nothing here decodes and re-encodes text to cut a prefix: re-tokenizing
a decoded prefix can change ids (a known bug class in GRPO trainers).

The rollout engine records spans while sampling, by decoded text
(`srpo.tokenizer.StopStringMatcher`). `thought_spans` below splits on the delimiter's *ids*: exact
when the delimiter is a single token (the tiny tokenizer), but blind to a BPE tokenizer's merges
(`.</thought>` -> `.</` `thought` `>`), so it is not used to segment real models' chains.

The straddling token. Under the Qwen2 / Llama-3 pre-tokenizers (and SentencePiece) the token that
completes the delimiter often carries the next thought's first characters (`>Then`,
`.</thought>So`). A span ends at that token (token spans tile the response, and the sampled ids
are never changed), and its text after the delimiter, the *carry*, belongs to the next thought:
`thought_texts` moves it there (`split_thought_text`), so that thought i's text is exactly what the
model wrote between the (i-1)-th and the i-th delimiter. `cut_prefix` cuts at a span end (ids
only, exact when no token straddles); `srpo.boundaries.cut_prefix_tokens` cuts exactly at the
delimiter, replacing only a straddling last token by the ids of its in-thought text.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The step delimiter that closes every thought (the paper's release uses this literal).
THOUGHT_DELIMITER = "</thought>"


def _ends_with(ids: Sequence[int], end: int, pattern: Sequence[int]) -> bool:
    """True when `ids[end - len(pattern):end] == pattern`."""
    n = len(pattern)
    if end < n:
        return False
    for offset in range(n):
        if ids[end - n + offset] != pattern[offset]:
            return False
    return True


def thought_spans(
    response_ids: Sequence[int],
    delimiter_ids: Sequence[int],
    eos_id: int | None = None,
) -> list[tuple[int, int]]:
    """Split response token ids into thoughts.

    Args:
        response_ids: the response's token ids, length T (no prompt).
        delimiter_ids: the delimiter's id sequence (see `srpo.tokenizer.delimiter_ids`), non-empty.
        eos_id: if given, a single end-of-sequence token right after a closed thought is attached to
            that thought's span instead of forming a span of its own.

    Returns:
        Half-open spans `[(s_1, e_1), ..., (s_n, e_n)]` with `s_1 = 0`, `e_i = s_{i+1}` and
        `e_n = T`. Every span but possibly the last ends right after a delimiter occurrence that
        lies wholly inside it; a trailing unfinished thought (no delimiter) is its own span.
        An empty response gives `[]`.

    Raises:
        ValueError: if `delimiter_ids` is empty.
    """
    if len(delimiter_ids) == 0:
        raise ValueError("delimiter_ids must be non-empty, got []")
    spans: list[tuple[int, int]] = []
    start = 0
    n_delim = len(delimiter_ids)
    for end in range(1, len(response_ids) + 1):
        if end - start >= n_delim and _ends_with(response_ids, end, delimiter_ids):
            spans.append((start, end))
            start = end
    if start < len(response_ids):
        tail = (start, len(response_ids))
        if eos_id is not None and spans and tail[1] - tail[0] == 1 and response_ids[start] == eos_id:
            spans[-1] = (spans[-1][0], tail[1])
        else:
            spans.append(tail)
    return spans


def check_spans(spans: Sequence[tuple[int, int]], length: int) -> None:
    """Raise ValueError unless `spans` tile `[0, length)` contiguously with non-empty spans."""
    position = 0
    for index, (start, end) in enumerate(spans):
        if start != position or end <= start:
            raise ValueError(
                f"spans[{index}] = {(start, end)} must start at {position} and be non-empty"
            )
        position = end
    if position != length:
        raise ValueError(f"spans end at {position}, expected the response length {length}")


def cut_prefix(response_ids: Sequence[int], spans: Sequence[tuple[int, int]], k: int) -> list[int]:
    """Ids of thoughts 1..k-1: the prefix kept when resetting at step k.

    Args:
        response_ids: the parent response's ids, length T.
        spans: its thought spans (as from `thought_spans`), n of them, tiling `[0, T)`.
        k: the 1-based reset step, in `1..n+1`. `k = 1` gives the empty prefix; `k = n + 1` keeps
            the whole response (useful when every written step is correct but the chain stopped).

    Returns:
        `list(response_ids[:spans[k-2][1]])` (a copy), so that
        `cut_prefix(...) + response_ids[len(prefix):] == response_ids` exactly.

    Raises:
        ValueError: if k is outside `1..n+1` or the spans do not tile the response.
    """
    check_spans(spans, len(response_ids))
    n = len(spans)
    if not 1 <= k <= n + 1:
        raise ValueError(f"k must be in 1..{n + 1} (n = {n} thoughts), got {k}")
    if k == 1:
        return []
    return list(response_ids[: spans[k - 2][1]])


def split_thought_text(text: str, carry: str = "",
                       delimiter: str = THOUGHT_DELIMITER) -> tuple[str, str]:
    """One thought's text and the carry it passes on.

    Args:
        text: the decoded text of the thought's span.
        carry: the text of the previous span past its delimiter (the tail of a straddling token).
        delimiter: the step delimiter.

    Returns:
        ``(thought, carry_out)``: ``carry + text`` up to and including the first delimiter, and
        the text after it; ``(carry + text, "")`` when the span holds no delimiter (a capped or
        unfinished thought).
    """
    full = carry + text
    position = full.find(delimiter)
    if position < 0:
        return full, ""
    end = position + len(delimiter)
    return full[:end], full[end:]


def thought_texts(tokenizer, response_ids: Sequence[int], spans: Sequence[tuple[int, int]],
                  delimiter: str = THOUGHT_DELIMITER) -> list[str]:
    """Decode each thought (for verifiers, the localization prompt and logs; never to rebuild ids).

    A span is decoded on its own; text that its last token carries past the delimiter (a
    straddling token, e.g. `>Then`) is moved to the next thought (`split_thought_text`), so that
    thought i is exactly the text between the (i-1)-th and the i-th delimiter. The carry of the
    last span (the start of a thought that was never written) is dropped.

    Returns:
        One string per span, special tokens (eos, pad) removed; delimiters are kept.
    """
    ids = list(response_ids)
    texts, carry = [], ""
    for s, e in spans:
        text, carry = split_thought_text(_decode_in_context(tokenizer, ids, s, e), carry,
                                         delimiter)
        texts.append(text)
    return texts


def _decode_in_context(tokenizer, ids: list[int], start: int, end: int) -> str:
    """``ids[start:end]`` decoded after the token before it, that token's own text removed: a
    SentencePiece decoder drops the space of a leading ``▁word`` only at the start of a text."""
    if start == 0:
        return tokenizer.decode(ids[start:end], skip_special_tokens=True)
    lead = tokenizer.decode(ids[start - 1:start], skip_special_tokens=True)
    text = tokenizer.decode(ids[start - 1:end], skip_special_tokens=True)
    if text.startswith(lead):
        return text[len(lead):]
    return tokenizer.decode(ids[start:end], skip_special_tokens=True)


def extract_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}` in `text`, with nested braces.

    Examples: `"a \\boxed{3} b \\boxed{\\frac{1}{2}}"` -> `"\\frac{1}{2}"`; `"\\boxed{3"` -> None.
    Whitespace between `\\boxed` and `{` is allowed. The content is stripped of outer spaces.
    """
    marker = "\\boxed"
    search_end = len(text)
    while True:
        position = text.rfind(marker, 0, search_end)
        if position < 0:
            return None
        cursor = position + len(marker)
        while cursor < len(text) and text[cursor] in " \t":
            cursor += 1
        if cursor < len(text) and text[cursor] == "{":
            depth = 0
            for index in range(cursor, len(text)):
                char = text[index]
                if char == "{":
                    depth += 1
                elif char == "}":
                    depth -= 1
                    if depth == 0:
                        return text[cursor + 1 : index].strip()
        # Unclosed or malformed: look for an earlier complete one.
        search_end = position
