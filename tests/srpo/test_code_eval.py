"""The ``code`` grader of experiments/llm_eval.py: rows of the release's layout are graded in the
sandbox on the tests training never sees, with the fraction of them passed and pass@k."""

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from srpo.code.evaluation import code_columns, grade_reference, problem_from_reference
from srpo.code.synthetic import SyntheticCodeTask, evaluate, near_miss, release_row, source
from srpo.data import read_problems
from srpo.graders import grade, infer_grader
from srpo.rollout import Chain
from srpo.tasks import DatasetTask
from tests.srpo.code_helpers import time_limit  # noqa: F401


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Six synthetic problems in the release's parquet layout, half of them held out."""
    task = SyntheticCodeTask()
    rng = np.random.default_rng(5)
    problems = task.sample(3, rng) + task.sample(3, rng, heldout=True)
    path = tmp_path_factory.mktemp("code") / "synthetic_code.parquet"
    pd.DataFrame([release_row(p) for p in problems]).to_parquet(path)
    programs = [task.programs[p.uid] for p in problems]
    return path, problems, programs


class CodeEngine:
    """Answers problem i with program i in a fenced block: the greedy call and the sampled
    call that follows it (llm_eval's order per batch) see the same problems."""

    def __init__(self, programs):
        self.programs, self.done, self.greedy = list(programs), 0, True

    def rollout(self, requests, temperature=None):
        start = self.done if self.greedy else self.done - len(requests)
        out = []
        for offset, request in enumerate(requests):
            text = f"Let me write it.</thought>\n```python\n{source(self.programs[start + offset])}\n```"
            out.append(
                [Chain(list(request.prompt_ids), [1], 0, [(0, 1)], text, 1, True, False, "length")]
                * request.n
            )
        if self.greedy:
            self.done += len(requests)
        self.greedy = not self.greedy
        return out


def test_code_rows_get_the_code_grader_and_only_for_evaluation(bench):
    path, problems, _ = bench
    rows = read_problems(path)
    assert {r.grader for r in rows} == {"code"}
    assert infer_grader("livecodebench_v6", "x") == "code" and infer_grader("gsm8k", "1") == "math"
    with pytest.raises(ValueError, match="task_type=.code."):
        DatasetTask(rows).grade(rows[0], "```python\npass\n```")


def test_greedy_and_pass_at_k_on_held_out_tests(bench):
    from experiments.llm_eval import evaluate_file, summarize

    path, problems, programs = bench
    rows_in = read_problems(path)
    rng = np.random.default_rng(0)
    answers = [p if i % 2 == 0 else near_miss(p, rng) for i, p in enumerate(programs)]
    args = argparse.Namespace(batch_size=4, samples=2, k=[1, 2], seed=0, temperature=0.7)

    class Tok:
        def encode(self, text):
            return [1, 2, 3]

    engine = CodeEngine(answers)
    rows = []
    evaluate_file(
        engine,
        Tok(),
        DatasetTask(rows_in),
        rows_in,
        0,
        args,
        set(),
        rows.extend,
        type("Bar", (), {"update": lambda self, n: None})(),
    )
    assert len(rows) == len(problems)
    for row, problem, answer in zip(rows, problems, answers):
        tests = problem.eval_tests
        hits = [evaluate(answer, json.loads(t.input)) == json.loads(t.expected) for t in tests]
        assert row["greedy_tests_passed"] == pytest.approx(sum(hits) / len(hits))
        assert row["greedy_correct"] == float(all(hits))
        assert row["eval_tests"] == len(tests)
        assert row["eval_split"] == (
            "heldout_problem" if problem.heldout_problem else "heldout_tests"
        )
        assert row["n_correct"] == 2 * all(hits) and row["pass@2"] == float(all(hits))
        assert row["tests_passed"] == sum(hits)
    frame = pd.DataFrame([{"file": str(path), "benchmark": path.stem, **r} for r in rows])
    summary = summarize(frame, args)
    assert summary.greedy_tests_passed.iloc[0] == pytest.approx(frame.greedy_tests_passed.mean())


def test_the_release_validation_is_a_separate_labelled_number(bench):
    path, problems, programs = bench
    training = next(p for p in problems if not p.heldout_problem)
    reference = release_row(training)["reward_model"]["ground_truth"]
    problem = problem_from_reference(reference)
    assert problem.heldout_mask == training.heldout_mask
    response = f"```python\n{source(programs[problems.index(training)])}\n```"
    assert grade("code", reference, response) == 1.0
    heldout = grade_reference(reference, response)
    release = grade_reference(reference, response, "release")
    assert len(heldout.outcomes) == len(training.heldout_tests)
    assert len(release.outcomes) == len(training.reward_tests)
    assert code_columns(reference, response)["eval_split"] == "heldout_tests"
    with pytest.raises(ValueError, match="split"):
        grade_reference(reference, response, "train")


def test_a_bad_code_row_is_named_when_read(tmp_path):
    path = tmp_path / "broken_code.jsonl"
    path.write_text(
        json.dumps(
            {
                "prompt": [{"role": "user", "content": "x"}],
                "data_source": "livecodebench",
                "reward_model": {"ground_truth": '{"inputs": [1]}'},
            }
        )
        + "\n"
    )
    with pytest.raises(
        ValueError, match="line 1: field 'reward_model.ground_truth' \\(the tests\\)"
    ):
        read_problems(path)
