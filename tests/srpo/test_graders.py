"""The graders on the answer styles models write: one table of (grader, reference, response, score).

Rows marked "issue 21" graded wrongly before (a letter with a bracket or in lower case, an
unboxed True, the article "a" taken for choice A, the first of two committed letters, a free-text
answer inside a sentence); the rest graded correctly before and must still.
"""

import pytest

from srpo.graders import extract_prediction, grade, infer_grader

TABLE = [
    # -- multiple choice --------------------------------------------------------------------------
    ("mc", "B", "B)", 1.0),  # issue 21
    ("mc", "B", "So we pick\nB)", 1.0),  # issue 21
    ("mc", "B", "b", 1.0),  # issue 21
    ("mc", "B", "Thinking.</thought>b</thought>", 1.0),  # issue 21
    ("mc", "B", "The answer is a fridge, option B.", 1.0),  # issue 21
    ("mc", "A", "The answer is a fridge, option B.", 0.0),  # issue 21
    ("mc", "B", "answer is (A) ... final: (B)", 1.0),  # issue 21
    ("mc", "A", "answer is (A) ... final: (B)", 0.0),  # issue 21
    ("mc", "C", "The answer is C. Option A is wrong because (b) fails.", 1.0),  # issue 21
    ("mc", "B", "\\boxed{(B)}", 1.0),
    ("mc", "(B) a tree", "\\boxed{\\text{B}}", 1.0),
    ("mc", "B", "\\boxed{b}", 1.0),
    ("mc", "B", "\\boxed{B. a tree}", 1.0),
    ("mc", "B", "I think the answer is (C).", 0.0),
    ("mc", "C", "I think the answer is (C).", 1.0),
    ("mc", "D", "Answer: D", 1.0),
    ("mc", "D", "The final answer is (D)", 1.0),
    ("mc", "A", "An apple is red.", 0.0),  # no committed letter at all
    ("mc", "E", "none of them", 0.0),
    # -- yes / no ---------------------------------------------------------------------------------
    ("yesno", "yes", "True", 1.0),  # issue 21
    ("yesno", "no", "It is false.", 1.0),  # issue 21
    ("yesno", "true", "Yes at first, but no.", 0.0),
    ("yesno", "no", "Yes at first, but no.", 1.0),
    ("yesno", "yes", "\\boxed{True}", 1.0),
    ("yesno", "0", "\\boxed{no}", 1.0),
    ("yesno", "yes", "maybe", 0.0),
    # -- free text: exact and the release's normalised substring ---------------------------------
    ("substring", "oxygen", "It is oxygen.", 1.0),  # issue 21
    ("substring", "Sodium chloride", "the product is sodium  chloride (table salt)", 1.0),
    ("substring", "oxygen", "It is oxygenated water.", 0.0),  # whole words only
    ("substring", "sodium chloride", "chloride of sodium", 0.0),
    ("substring", "The Mitochondria", "\\boxed{mitochondria.}", 1.0),
    ("exact", "oxygen", "It is oxygen.", 0.0),  # exact stays exact
    ("exact", "The Mitochondria", "\\boxed{mitochondria.}", 1.0),
    ("exact", "sodium chloride", "it is\nSodium  chloride</thought>", 1.0),
    ("exact", "sodium", "\\boxed{sodium chloride}", 0.0),
]


@pytest.mark.parametrize("grader, reference, response, expected", TABLE)
def test_grader_table(grader, reference, response, expected):
    assert grade(grader, reference, response) == expected, extract_prediction(grader, response)


def test_math_rows():  # math-verify is imported lazily: these rows need it
    pytest.importorskip("math_verify")
    assert grade("math", "0.5", "so \\boxed{\\frac{1}{2}}</thought>") == 1.0
    assert grade("math", "0.5", "the answer is 0.5") == 0.0


def test_sciknoweval_free_text_uses_the_substring_grader():
    assert infer_grader("SciKnowEval-biology", "photosynthesis") == "substring"
    assert infer_grader("SciKnowEval-physics", "B") == "mc"
