"""Synthetic modular-arithmetic task and real dataset files."""

import json

import numpy as np
import pandas as pd
import pytest

from srpo.tasks import (
    DatasetTask,
    ModArithProblem,
    ModularArithmeticTask,
    Task,
    apply_op,
    load_dataset_file,
)

D = "</thought>"


@pytest.fixture
def task():
    return ModularArithmeticTask(n_steps=3, modulus=10)


@pytest.fixture
def problem(task):
    # start 3; +4; *2; -1 (mod 10): 3 -> 7 -> 4 -> 3
    return task.make_problem(3, [("+", 4), ("*", 2), ("-", 1)])


def test_problem_values_and_question(problem):
    assert problem.question == "start 3; +4; *2; -1 (mod 10)"
    assert problem.values() == [3, 7, 4, 3]
    assert problem.answer == "3"
    assert apply_op(2, "-", 5, 10) == 7


def test_protocol(task, tmp_path):
    assert isinstance(task, Task) and task.has_step_verifier
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "1"}) + "\n")
    dataset = DatasetTask.from_file(path)
    assert isinstance(dataset, Task) and not dataset.has_step_verifier


def test_first_error_hand_cases(task, problem):
    good = [f"3+4=7{D}", f"7*2=4{D}", f"4-1=3 \\boxed{{3}}{D}"]
    assert task.first_error(problem, good) is None
    assert task.grade(problem, "".join(good)) == 1.0
    # wrong value at step 2, then correct propagation from the wrong value
    assert task.first_error(problem, [good[0], f"7*2=5{D}", f"5-1=4 \\boxed{{4}}{D}"]) == 2
    assert task.grade(problem, "".join([good[0], f"7*2=5{D}", f"5-1=4 \\boxed{{4}}{D}"])) == 0.0
    assert task.first_error(problem, [f"3+4=8{D}"] + good[1:]) == 1  # wrong value
    assert task.first_error(problem, [f"3*4=2{D}"] + good[1:]) == 1  # wrong operator
    assert task.first_error(problem, [good[0], f"8*2=6{D}", good[2]]) == 2  # wrong left operand
    assert task.first_error(problem, [good[0], "garbage", good[2]]) == 2  # unparseable
    assert task.first_error(problem, [good[0], f"7*2=4 \\boxed{{4}}{D}", good[2]]) == 2  # early box
    assert task.first_error(problem, [good[0], good[1], f"4-1=3{D}"]) == 3  # no box at the end
    assert task.first_error(problem, [good[0], good[1], f"4-1=3 \\boxed{{5}}{D}"]) == 3
    assert task.first_error(problem, good[:2]) == 3  # stopped early: first missing step
    assert task.first_error(problem, [*good, f"1+1=2{D}"]) == 4  # thought after the last step
    assert task.first_error(problem, ["4-1=3"]) == 1
    assert task.first_error(problem, []) == 1
    # the delimiter is optional in the verifier's input; spaces are tolerated
    assert task.first_error(problem, ["3 + 4 = 7", "7*2=4", "4-1=3 \\boxed{ 3 }"]) is None


def test_grade_hand_cases(task, problem):
    assert task.grade(problem, "\\boxed{3}") == 1.0
    assert task.grade(problem, "\\boxed{4} then \\boxed{3}") == 1.0
    assert task.grade(problem, "\\boxed{3} then \\boxed{4}") == 0.0
    assert task.grade(problem, "\\boxed{x}") == 0.0
    assert task.grade(problem, "3") == 0.0


def test_sample_deterministic_and_knobs():
    task = ModularArithmeticTask(n_steps=5, modulus=7, ops=("+",))
    a = task.sample(20, np.random.default_rng(0))
    b = task.sample(20, np.random.default_rng(0))
    c = task.sample(20, np.random.default_rng(1))
    assert a == b and a != c
    for p in a:
        assert isinstance(p, ModArithProblem)
        assert p.n_steps == 5 and p.modulus == 7
        assert all(op == "+" and 1 <= x <= 6 for op, x in p.ops)
        assert 0 <= p.start < 7
    with pytest.raises(ValueError, match="ops"):
        ModularArithmeticTask(ops=("/",))
    with pytest.raises(ValueError, match="modulus"):
        ModularArithmeticTask(modulus=1)


def test_reference_solution_error_rates(task):
    rng = np.random.default_rng(0)
    problems = task.sample(300, rng)
    for p in problems[:50]:
        thoughts = task.reference_solution(p, 0.0, rng)
        assert task.first_error(p, thoughts) is None
        assert task.grade(p, "".join(thoughts)) == 1.0
    first_errors = []
    for p in problems:
        thoughts = task.reference_solution(p, 0.3, rng)
        assert len(thoughts) == p.n_steps and all(t.endswith(D) for t in thoughts)
        err = task.first_error(p, thoughts)
        first_errors.append(err)
        if err is None:
            assert task.grade(p, "".join(thoughts)) == 1.0
        else:
            # propagation: every later step computes correctly from the previous written value
            for t_prev, t in zip(thoughts[err - 1 :], thoughts[err:]):
                prev_value = int(t_prev.split("=")[1].split()[0].replace(D, ""))
                assert int(t.split("+")[0].split("-")[0].split("*")[0]) == prev_value
    # P(first error at step 1) = 0.3, P(no error) = 0.7^3 = 0.343
    counts = {k: first_errors.count(k) / len(first_errors) for k in (1, None)}
    assert abs(counts[1] - 0.3) < 0.08 and abs(counts[None] - 0.343) < 0.08
    # same rng seed, same solutions
    p = problems[0]
    assert task.reference_solution(p, 0.5, np.random.default_rng(3)) == task.reference_solution(
        p, 0.5, np.random.default_rng(3)
    )
    with pytest.raises(ValueError, match="error_rate"):
        task.reference_solution(p, 1.5, rng)


def test_load_jsonl_and_parquet(tmp_path):
    rows = [
        {"question": "What is 1/2?", "answer": "0.5"},
        {"question": "2+2?", "answer": 4, "id": "four"},
    ]
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    parquet = tmp_path / "data.parquet"
    pd.DataFrame({"question": ["What is 1/2?", "2+2?"], "answer": ["0.5", "4"]}).to_parquet(parquet)
    for path in (jsonl, parquet):
        problems = load_dataset_file(path)
        assert [p.question for p in problems] == ["What is 1/2?", "2+2?"]
        assert [p.answer for p in problems] == ["0.5", "4"]
    assert load_dataset_file(jsonl)[1].uid == "four"
    task = DatasetTask(load_dataset_file(jsonl))
    assert task.first_error(task.problems[0], ["anything"]) is None
    sample = task.sample(2, np.random.default_rng(0))
    assert sorted(p.question for p in sample) == sorted(r["question"] for r in rows)
    assert "What is 1/2?" in task.prompt(task.problems[0])


def test_missing_answer_errors(tmp_path):
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text(json.dumps({"question": "a", "answer": "1"}) + "\n" + json.dumps({"question": "b"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2 has no answer field"):
        load_dataset_file(jsonl)
    parquet = tmp_path / "bad.parquet"
    pd.DataFrame({"question": ["a", "b"], "answer": ["1", None]}).to_parquet(parquet)
    with pytest.raises(ValueError, match=r"bad.parquet: row 1: field 'answer' \(answer\) is empty"):
        load_dataset_file(parquet)
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset_file(tmp_path / "nope.jsonl")
    other = tmp_path / "x.csv"
    other.write_text("question,answer\n")
    with pytest.raises(ValueError, match="parquet"):
        load_dataset_file(other)


def test_math_verify_grading(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in [{"question": "half", "answer": "0.5"}, {"question": "frac", "answer": "\\frac{1}{3}"}]
        )
    )
    task = DatasetTask.from_file(path)
    half, third = task.problems
    assert task.grade(half, "so the answer is \\boxed{1/2}") == 1.0
    assert task.grade(half, "\\boxed{\\frac{1}{2}}") == 1.0
    assert task.grade(half, "\\boxed{0.5}") == 1.0
    assert task.grade(half, "\\boxed{1/3}") == 0.0
    assert task.grade(half, "0.5 without a box") == 0.0
    assert task.grade(third, "\\boxed{1/3}") == 1.0
