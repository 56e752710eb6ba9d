"""The localization parser, the prompt and the non-model localizers."""

import numpy as np
import pytest

from srpo.localize import (
    LocalizationStats,
    ParentView,
    RandomLocalizer,
    build_localization_prompt,
    make_localizer,
    parse_localization,
)


@pytest.mark.parametrize(
    "text, n, k, source",
    [
        ("The first error is in step 3. \\boxed{3}", 5, 3, "boxed"),
        ("\\boxed{2} no wait \\boxed{4}", 5, 4, "boxed"),  # the LAST box counts
        ("\\boxed{ 2 }", 5, 2, "boxed"),
        ("\\boxed{Step 2}", 5, 2, "boxed"),
        ("\\boxed{0}", 5, 1, "boxed_zero"),  # "no error": the empty prefix
        ("\\boxed{two} but Step 1 looks fine, Step 2 is wrong", 5, 2, "step_mention"),
        ("I think step 4 went wrong", 5, 4, "step_mention"),
        ("step 3 \\boxed{", 5, 3, "step_mention"),
        ("Step 2 is where it breaks. \\boxed{9}", 5, 2, "step_mention"),  # out of range: falls through
        ("Step 2, then Step 12 \\boxed{-2}", 5, 2, "step_mention"),  # last mention IN RANGE
        ("\\boxed{3} and then \\boxed{x+1}", 5, 1, "fallback_step1"),  # last box not an integer
    ],
)
def test_parse_follows_the_release_rule(text, n, k, source):
    r = parse_localization(text, n)
    assert (r.k, r.source) == (k, source)
    assert r.is_fallback == source.startswith("fallback")


@pytest.mark.parametrize("text, n, raw", [("\\boxed{9}", 5, 9), ("\\boxed{-2}", 3, -2),
                                          ("\\boxed{7}", 6, 7)])
def test_parse_out_of_range_is_flagged_and_becomes_a_full_restart(text, n, raw):
    r = parse_localization(text, n)
    assert (r.k, r.raw, r.out_of_range, r.source) == (1, raw, True, "fallback_step1")


@pytest.mark.parametrize("text", ["", None, "no idea", "\\boxed{}", "\\boxed{x+1}"])
def test_parse_empty_or_garbage_falls_back_and_is_counted(text):
    stats = LocalizationStats()
    r = parse_localization(text, 6)
    assert (r.k, r.source) == (1, "fallback_step1") and r.is_fallback
    stats.record(r)
    assert stats.fallbacks == 1 and stats.calls == 1
    # the random fallback is an option, seeded
    rng = np.random.default_rng(1)
    r = parse_localization(text, 6, rng, fallback="random")
    assert r.source == "fallback_random" and r.is_fallback and 1 <= r.k <= 6
    assert parse_localization(text, 6, np.random.default_rng(1), fallback="random").k == r.k


def test_parse_rejects_bad_n_and_fallback():
    with pytest.raises(ValueError, match="n_steps"):
        parse_localization("\\boxed{1}", 0)
    with pytest.raises(ValueError, match="fallback must be one of"):
        parse_localization("\\boxed{1}", 3, fallback="coin")


def test_compact_prompt_contents():
    p = build_localization_prompt("Compute x.", ["a = 1", "b = 2", "x = 4 \\boxed{4}"])
    for s in ("wrong", "FIRST", "not where the failure shows", "Do not re-solve", "in 1..3",
              "\\boxed{N}", "Step 1: a = 1", "Step 3: x = 4"):
        assert s in p
    assert p.endswith("Assistant: ")


def test_release_prompt_has_the_release_content_in_order():
    thoughts = ["a = 1</thought>", "b = 2</thought>", "x = 4 \\boxed{4}</thought>"]
    p = build_localization_prompt("Compute x.", thoughts, style="release")
    cues = ["first wrong thought", "solution you wrote earlier", "Problem:\nCompute x.",
            "Your incorrect reasoning chain", "Step 1: a = 1\nStep 2: b = 2\nStep 3: x = 4 \\boxed{4}",
            "final answer of this chain is wrong", "at least one of its steps is wrong",
            "originated", "not the later step where the failure becomes visible",
            "misread", "without justification", "slip in logic", "several steps",
            "cannot be justified from the problem and the earlier steps",
            "Do not solve the problem again", "exactly one step number between 1 and 3",
            "stop at the first step that cannot be justified", "\\boxed{N} on a line of its own",
            "not the answer to the problem", "nothing after it"]
    positions = [p.find(c) for c in cues]
    assert all(i >= 0 for i in positions), [c for c, i in zip(cues, positions) if i < 0]
    assert positions == sorted(positions)
    assert "</thought>" not in p  # delimiters stripped from the displayed steps
    assert not p.startswith("User:")  # raw text without a chat template


def test_release_prompt_goes_through_the_chat_template():
    from srpo.tokenizer import build_bpe_tokenizer

    tok = build_bpe_tokenizer(["some text</thought> more text"] * 20, vocab_size=300)
    p = build_localization_prompt("Q?", ["a</thought>"], tok, style="release")
    assert p.startswith("<|im_start|>user\n") and p.endswith("<|im_start|>assistant\n")


def test_random_localizer_uniform_and_seeded():
    parents = [ParentView(None, "q", ["s"] * 4) for _ in range(4000)]
    loc = RandomLocalizer()
    ks = [r.k for r in loc.locate(parents, np.random.default_rng(0))]
    counts = np.bincount(ks, minlength=5)[1:]
    assert counts.min() > 900 and set(ks) == {1, 2, 3, 4}
    ks2 = [r.k for r in RandomLocalizer().locate(parents, np.random.default_rng(0))]
    assert ks == ks2
    assert loc.stats.calls == 4000 and loc.stats.fallbacks == 0


def test_make_localizer_errors():
    assert make_localizer("none") is None
    with pytest.raises(ValueError, match="localizer must be one of"):
        make_localizer("psychic")
    with pytest.raises(ValueError, match="needs engine"):
        make_localizer("self")


def test_oracle_localizer_uses_the_step_verifier_and_counts_fallbacks():
    from srpo.tasks import ModularArithmeticTask

    task = ModularArithmeticTask(n_steps=3, modulus=10)
    p = task.make_problem(3, [("+", 4), ("*", 2), ("-", 1)])  # 7, 4, 3
    wrong2 = ["3+4=7</thought>", "7*2=5</thought>", "5-1=4 \\boxed{4}</thought>"]
    right = ["3+4=7</thought>", "7*2=4</thought>", "4-1=3 \\boxed{3}</thought>"]
    loc = make_localizer("oracle", task=task)
    res = loc.locate([ParentView(p, "q", wrong2), ParentView(p, "q", right)],
                     np.random.default_rng(0))
    assert (res[0].k, res[0].source) == (2, "oracle")
    assert res[1].source == "oracle_fallback_random" and res[1].is_fallback
    assert loc.stats.fallbacks == 1 and loc.stats.calls == 2
