"""Thought segmentation, prefix cuts on token ids, boxed-answer extraction."""

import numpy as np
import pytest

from srpo.thoughts import check_spans, cut_prefix, extract_boxed, thought_spans

DELIM = [9]
EOS = 2


def test_spans_single_token_delimiter():
    ids = [5, 6, 9, 7, 9, 8, 8]
    assert thought_spans(ids, DELIM) == [(0, 3), (3, 5), (5, 7)]
    assert thought_spans([], DELIM) == []
    assert thought_spans([9], DELIM) == [(0, 1)]
    assert thought_spans([5, 9], DELIM) == [(0, 2)]


def test_spans_multi_token_delimiter_and_eos():
    delim = [3, 4]
    ids = [1, 3, 4, 3, 5, 3, 4, EOS]
    assert thought_spans(ids, delim) == [(0, 3), (3, 7), (7, 8)]
    assert thought_spans(ids, delim, eos_id=EOS) == [(0, 3), (3, 8)]
    # a delimiter match must lie inside one thought: [4, 3, 4] after a close is one thought.
    assert thought_spans([3, 4, 3, 4], delim) == [(0, 2), (2, 4)]
    with pytest.raises(ValueError, match="delimiter_ids"):
        thought_spans([1], [])


def test_cut_prefix_round_trip_random():
    rng = np.random.default_rng(0)
    for _ in range(200):
        ids = rng.integers(0, 12, size=int(rng.integers(0, 40))).tolist()
        delim = [9] if rng.random() < 0.5 else [9, 10]
        spans = thought_spans(ids, delim)
        check_spans(spans, len(ids))
        for k in range(1, len(spans) + 2):
            prefix = cut_prefix(ids, spans, k)
            assert prefix + ids[len(prefix) :] == ids
            assert len(prefix) == (0 if k == 1 else spans[k - 2][1])
            # the prefix's own spans are the parent's first k-1 spans
            assert thought_spans(prefix, delim) == spans[: k - 1]


def test_cut_prefix_errors():
    ids = [5, 9, 6, 9]
    spans = thought_spans(ids, DELIM)
    assert cut_prefix(ids, spans, 1) == []
    assert cut_prefix(ids, spans, 2) == [5, 9]
    for bad in (0, 4):
        with pytest.raises(ValueError, match="k must be in 1..3"):
            cut_prefix(ids, spans, bad)
    with pytest.raises(ValueError, match="spans"):
        cut_prefix(ids, [(0, 2)], 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x \\boxed{3} y", "3"),
        ("\\boxed{1} then \\boxed{ 7 }", "7"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed {4}", "4"),
        ("\\boxed{2} \\boxed{unclosed", "2"),
        ("no answer", None),
        ("\\boxed{", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected
