"""File readers (JSONL, parquet, the release's parquet layout), graders, and the epoch sampler."""

import json

import numpy as np
import pandas as pd
import pytest

from srpo.data import EpochSampler, read_problems
from srpo.graders import grade, infer_grader
from srpo.tasks import DatasetTask


def _release_frame():
    """Rows as the release's data pipeline writes them: chat-list prompt, nested ground truth."""
    return pd.DataFrame({
        "data_source": ["commonsense_qa", "strategyqa", "numina_olympiads"],
        "prompt": [[{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Where do fish live? (A) sea (B) tree"}],
                   [{"role": "user", "content": "Can a fish climb a tree?"}],
                   [{"role": "user", "content": "Compute 1/2 + 1/4."}]],
        "reward_model": [{"style": "rule", "ground_truth": "A"},
                         {"style": "rule", "ground_truth": "false"},
                         {"style": "rule", "ground_truth": "\\frac{3}{4}"}],
        "extra_info": [{"index": 7}, {"index": 8}, {"index": 9}],
    })


def test_release_parquet_layout(tmp_path):
    path = tmp_path / "release.parquet"
    _release_frame().to_parquet(path)
    problems = read_problems(path)
    assert [p.question for p in problems] == ["Where do fish live? (A) sea (B) tree",
                                             "Can a fish climb a tree?", "Compute 1/2 + 1/4."]
    assert [p.answer for p in problems] == ["A", "false", "\\frac{3}{4}"]
    assert [p.grader for p in problems] == ["mc", "yesno", "math"]
    assert [p.uid for p in problems] == ["7", "8", "9"]
    assert problems[0].location.endswith("release.parquet:row 0")
    task = DatasetTask(problems)
    assert task.grade(problems[0], "The sea.</thought>So \\boxed{A}</thought>") == 1.0
    assert task.grade(problems[1], "No, fish cannot.</thought>\\boxed{no}</thought>") == 1.0
    assert task.grade(problems[2], "\\boxed{0.75}</thought>") == 1.0
    assert task.grade(problems[2], "\\boxed{A}</thought>") == 0.0
    # the whole grader of a file can be forced
    assert {p.grader for p in read_problems(path, grader="exact")} == {"exact"}
    assert len(read_problems(path, limit=2)) == 2


def test_configurable_fields_and_errors(tmp_path):
    path = tmp_path / "custom.jsonl"
    path.write_text(json.dumps({"q": "2+2?", "meta": {"gold": 4}}) + "\n\n"
                    + json.dumps({"q": "3+3?", "meta": {}}) + "\n")
    with pytest.raises(ValueError, match=r"custom.jsonl: line 1 has no question field"):
        read_problems(path)
    with pytest.raises(ValueError, match=r"custom.jsonl: line 3 has no answer field \('meta.gold'\)"):
        read_problems(path, question_field="q", answer_field="meta.gold")
    first = read_problems(path, question_field="q", answer_field="meta.gold", limit=1)[0]
    assert (first.question, first.answer, first.grader) == ("2+2?", "4", "math")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "a", "answer": "1"}\n{"question": \n')
    with pytest.raises(ValueError, match=r"broken.jsonl:2: not valid JSON"):
        read_problems(broken)
    bad_grader = tmp_path / "g.jsonl"
    bad_grader.write_text(json.dumps({"question": "a", "answer": "1", "grader": "vibes"}) + "\n")
    with pytest.raises(ValueError, match=r"g.jsonl: line 1: field 'grader' is 'vibes'"):
        read_problems(bad_grader)
    with pytest.raises(ValueError, match="grader must be one of"):
        read_problems(path, grader="vibes")


@pytest.mark.parametrize("grader, reference, response, expected", [
    ("math", "0.5", "so \\boxed{\\frac{1}{2}}</thought>", 1.0),
    ("math", "0.5", "the answer is 0.5", 0.0),  # no box: wrong
    ("mc", "B", "\\boxed{(B)}", 1.0),
    ("mc", "(B) a tree", "\\boxed{\\text{B}}", 1.0),
    ("mc", "B", "I think the answer is (C).", 0.0),
    ("mc", "C", "I think the answer is (C).", 1.0),
    ("yesno", "true", "Yes at first, but no.", 0.0),
    ("yesno", "no", "Yes at first, but no.", 1.0),
    ("yesno", "yes", "\\boxed{True}", 1.0),
    ("exact", "The Mitochondria", "\\boxed{mitochondria.}", 1.0),
    ("exact", "sodium chloride", "it is\nSodium  chloride</thought>", 1.0),
    ("exact", "sodium", "\\boxed{sodium chloride}", 0.0),
])
def test_graders(grader, reference, response, expected):
    assert grade(grader, reference, response) == expected


def test_grader_inference_and_errors():
    assert infer_grader("CommonsenseQA", "C") == "mc"
    assert infer_grader("strategyqa", "True") == "yesno"
    assert infer_grader("SciKnowEval-physics", "B") == "mc"
    assert infer_grader("SciKnowEval-biology", "photosynthesis") == "substring"
    assert infer_grader("hmmt_nov_2025", "12") == "math"
    assert infer_grader("", "e") == "math" and infer_grader("", "D") == "mc"
    with pytest.raises(ValueError, match="grader 'mc' needs a choice letter"):
        grade("mc", "seven", "\\boxed{A}")
    with pytest.raises(ValueError, match="grader must be one of"):
        grade("vibes", "a", "a")


def test_epoch_sampler_covers_each_epoch_once_and_resumes():
    sampler = EpochSampler(10, 3, np.random.default_rng(0))
    assert sampler.steps_per_epoch == 3
    epoch1 = [sampler.next_batch() for _ in range(3)]
    flat = [i for b in epoch1 for i in b]
    assert len(set(flat)) == 9  # one item dropped, none repeated
    state = sampler.state_dict()
    rng_state = sampler.rng.bit_generator.state
    rest = [sampler.next_batch() for _ in range(4)]
    assert sampler.epoch == 2
    again = EpochSampler(10, 3, np.random.default_rng(123))
    again.rng.bit_generator.state = rng_state
    again.load_state_dict(state)
    assert [again.next_batch() for _ in range(4)] == rest
    with pytest.raises(ValueError, match="prompts_per_step must be <= the 2 training problems"):
        EpochSampler(2, 3, np.random.default_rng(0))
