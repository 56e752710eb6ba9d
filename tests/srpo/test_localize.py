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
        ("\\boxed{2} no wait \\boxed{4}", 5, 4, "boxed"),
        ("\\boxed{ 2 }", 5, 2, "boxed"),
        ("\\boxed{Step 2}", 5, 2, "boxed"),
        ("\\boxed{two} but Step 1 looks fine, Step 2 is wrong", 5, 2, "step_mention"),
        ("I think step 4 went wrong", 5, 4, "step_mention"),
        ("step 3 \\boxed{", 5, 3, "step_mention"),
    ],
)
def test_parse_good_and_malformed(text, n, k, source):
    r = parse_localization(text, n)
    assert (r.k, r.source, r.clamped) == (k, source, False)


@pytest.mark.parametrize("text, n, k, raw", [("\\boxed{9}", 5, 5, 9), ("\\boxed{0}", 5, 1, 0),
                                            ("\\boxed{-2}", 3, 1, -2), ("Step 12", 4, 4, 12)])
def test_parse_out_of_range_is_clamped_and_flagged(text, n, k, raw):
    r = parse_localization(text, n)
    assert r.k == k and r.raw == raw and r.clamped


@pytest.mark.parametrize("text", ["", None, "no idea", "\\boxed{}", "\\boxed{x+1}"])
def test_parse_empty_or_garbage_falls_back_and_is_counted(text):
    stats = LocalizationStats()
    rng = np.random.default_rng(1)
    r = parse_localization(text, 6, rng)
    assert r.source == "fallback_random" and r.is_fallback and 1 <= r.k <= 6
    stats.record(r)
    assert stats.fallbacks == 1 and stats.calls == 1
    # seeded fallback: same rng seed, same k
    assert parse_localization(text, 6, np.random.default_rng(1)).k == r.k


def test_parse_rejects_bad_n():
    with pytest.raises(ValueError, match="n_steps"):
        parse_localization("\\boxed{1}", 0)


def test_prompt_contents():
    p = build_localization_prompt("Compute x.", ["a = 1", "b = 2", "x = 4 \\boxed{4}"])
    for s in ("wrong", "FIRST", "not where the failure shows", "Do not re-solve", "in 1..3",
              "\\boxed{N}", "Step 1: a = 1", "Step 3: x = 4"):
        assert s in p
    assert p.endswith("Assistant: ")


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
