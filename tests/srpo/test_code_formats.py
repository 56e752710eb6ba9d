"""Test formats (srpo.code.formats), the splits (srpo.code.problem) and the synthetic task
(srpo.code.synthetic). Fixture rows are written here, in code: LiveCodeBench rows (private tests
compressed as LiveCodeBench stores them), MBPP and HumanEval rows, the release's parquet layout."""

import base64
import hashlib
import json
import os
import pickle
import zlib
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from srpo.code.cases import TestCase
from srpo.code.formats import (
    LCB_PRELUDE,
    decode_lcb_cases,
    ground_truth_tests,
    humaneval_problem,
    lcb_problem,
    mbpp_problem,
    read_code_problems,
    release_problem,
)
from srpo.code.grading import CodeGrader
from srpo.code.problem import heldout_mask, is_heldout_problem, make_problem, split_tests
from srpo.code.sandbox import SandboxConfig
from srpo.code.synthetic import (
    SyntheticCodeTask,
    evaluate,
    lcb_row,
    mbpp_row,
    near_miss,
    release_row,
    source,
)
from tests.srpo.code_helpers import time_limit  # noqa: F401


def compress(records) -> str:
    """LiveCodeBench's storage of private tests: base64(zlib(pickle(JSON string)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(records)))).decode()


def stdin_row(n_private=6):
    private = [
        {"input": f"{i} {i + 1}\n", "output": f"{2 * i + 1}\n", "testtype": "stdin"}
        for i in range(n_private)
    ]
    return {
        "question_id": "abc001_a",
        "question_title": "Sum",
        "platform": "atcoder",
        "question_content": "Print A+B.",
        "starter_code": "",
        "difficulty": "medium",
        "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
        "private_test_cases": compress(private),
        "metadata": "{}",
    }


def functional_row(n_private=5):
    private = [
        {
            "input": f"{json.dumps(list(range(i)))}\n{i}",
            "output": json.dumps(i * i),
            "testtype": "functional",
        }
        for i in range(n_private)
    ]
    return {
        "question_id": "3001",
        "question_content": "Return len(nums) * k.",
        "starter_code": "class Solution:\n    def lenTimes(self, nums: List[int], k: int) -> int:\n",
        "difficulty": "medium",
        "public_test_cases": "[]",
        "private_test_cases": compress(private),
        "metadata": json.dumps({"func_name": "lenTimes"}),
    }


# ---- LiveCodeBench ------------------------------------------------------------------------


def test_livecodebench_stdin_row():
    problem = lcb_problem(stdin_row())
    assert problem.uid == "abc001_a" and problem.style == "stdio" and problem.func_name == ""
    assert len(problem.tests) == 6 and {t.kind for t in problem.tests} == {"stdio"}
    assert len(problem.reward_tests) == 3 and len(problem.heldout_tests) == 3
    assert problem.public_tests == (TestCase("stdio", input="1 2\n", expected="3\n"),)
    assert problem.prelude == LCB_PRELUDE and problem.difficulty == "medium"


def test_livecodebench_functional_row():
    problem = lcb_problem(functional_row())
    assert problem.style == "call" and problem.func_name == "lenTimes"
    assert problem.tests[2] == TestCase(
        "call", input="[0, 1]\n2", expected="4", func_name="lenTimes"
    )
    assert len(problem.reward_tests) == 3 and len(problem.heldout_tests) == 2


def test_private_tests_as_plain_json_too():
    records = [{"input": "1\n", "output": "1\n", "testtype": "stdin"}] * 2
    assert decode_lcb_cases(json.dumps(records)) == records
    assert decode_lcb_cases(compress(records)) == records


class Bomb:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", ["bomb", "two strings", "a list", "a dict"])
def test_private_tests_are_decoded_without_running_anything(payload, tmp_path):
    marker = tmp_path / "executed"
    obj = {
        "bomb": Bomb(marker),
        "two strings": ("[]", "[]"),
        "a list": [1, 2],
        "a dict": {"a": "[]"},
    }[payload]
    data = base64.b64encode(zlib.compress(pickle.dumps(obj))).decode()
    with pytest.raises(ValueError, match="pickle|string"):
        decode_lcb_cases(data)
    assert not marker.exists()


def test_a_decompression_bomb_is_refused():
    data = base64.b64encode(zlib.compress(pickle.dumps("[" + " " * 5_000_000 + "]"))).decode()
    with pytest.raises(ValueError, match="more than"):
        decode_lcb_cases(data, max_bytes=1_000_000)
    assert decode_lcb_cases(data) == []


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("private_test_cases", "!!not base64!!", "neither JSON nor base64"),
        ("metadata", "{}", "func_name"),
    ],
)
def test_bad_livecodebench_rows(field, value, message):
    row = functional_row()
    row[field] = value
    with pytest.raises(ValueError, match=message):
        lcb_problem(row)


# ---- MBPP, HumanEval ----------------------------------------------------------------------


def test_mbpp_row():
    row = {
        "task_id": 11,
        "text": "Remove first and last occurrence of a char.",
        "test_list": [
            'assert remove_Occ("hello","l") == "heo"',
            'assert remove_Occ("abcda","a") == "bcd"',
            'assert remove_Occ("PHP","P") == "H"',
        ],
        "test_setup_code": "import math",
    }
    problem = mbpp_problem(row)
    assert problem.func_name == "remove_Occ" and problem.style == "assert"
    assert [t.kind for t in problem.tests] == ["expr"] * 3
    assert all(t.setup == "import math" for t in problem.tests)
    assert len(problem.reward_tests) == 2 and len(problem.heldout_tests) == 1


def test_humaneval_row():
    row = {
        "task_id": "HumanEval/0",
        "entry_point": "has_close_elements",
        "prompt": "from typing import List\n\n\ndef has_close_elements(numbers: List[float], "
        'threshold: float) -> bool:\n    """Close?"""\n',
        "test": "METADATA = {'author': 'x'}\n\n\ndef check(candidate):\n"
        "    assert candidate([1.0, 2.0], 0.5) == False\n"
        "    assert candidate([1.0, 1.1], 0.5) == True\n",
    }
    problem = humaneval_problem(row)
    assert problem.prelude == "from typing import List" and len(problem.tests) == 2
    assert problem.heldout_mask.count(True) == 1
    looped = dict(
        row, test="def check(candidate):\n    for x in [1]:\n        assert candidate(x)\n"
    )
    single = humaneval_problem(looped)
    assert len(single.tests) == 1 and single.heldout_problem  # one test: held out whole


# ---- the release's parquet layout ---------------------------------------------------------


def release_rows():
    call_truth = {
        "inputs": ["[1, 2]\n3", "[]\n1", "[5]\n0", "[1, 1, 1]\n2"],
        "outputs": ["6", "0", "0", "6"],
        "fn_name": "lenTimes",
    }
    apps_truth = {"inputs": [[[1, 2], 3], [[], 1]], "outputs": [6, 0], "fn_name": "lenTimes"}
    stdin_truth = {"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]}
    lcb_records = [{"input": "[1]\n2", "output": "2", "testtype": "functional"}] * 2
    return [
        {
            "prompt": [
                {"role": "system", "content": "You code."},
                {"role": "user", "content": "Return len(nums) * k."},
            ],
            "data_source": "livecodebench",
            "reward_model": {"style": "rule", "ground_truth": json.dumps(call_truth)},
            "extra_info": {"index": "lcb-1"},
        },
        {
            "prompt": [{"role": "user", "content": "Same, APPS encoding."}],
            "data_source": "apps",
            "reward_model": {"ground_truth": json.dumps(apps_truth)},
            "extra_info": {"index": "apps-1"},
        },
        {
            "prompt": [{"role": "user", "content": "Print A+B."}],
            "data_source": "livecodebench",
            "reward_model": {"ground_truth": json.dumps(stdin_truth)},
            "extra_info": {"index": "3"},
        },
        {
            "prompt": [{"role": "user", "content": "Double it."}],
            "data_source": "mbpp",
            "reward_model": {"ground_truth": "assert f(1) == 2\nassert f(2) == 4"},
            "extra_info": {"index": "4"},
        },
        {
            "prompt": [{"role": "user", "content": "Records."}],
            "data_source": "livecodebench",
            "reward_model": {"ground_truth": json.dumps(lcb_records)},
            "extra_info": {"index": "5", "func_name": "lenTimes"},
        },
    ]


def test_release_parquet_layout(tmp_path):
    path = tmp_path / "lcb_v6_medium.parquet"
    pd.DataFrame(release_rows()).to_parquet(path)
    problems = read_code_problems(path)
    assert [p.uid for p in problems] == ["lcb-1", "apps-1", "3", "4", "5"]
    assert [p.style for p in problems] == ["call", "call", "stdio", "assert", "call"]
    assert problems[0].question == "Return len(nums) * k." and problems[0].func_name == "lenTimes"
    assert problems[1].tests[0] == TestCase(
        "call", input="[1, 2]\n3", expected="6", func_name="lenTimes"
    )
    assert problems[3].prelude == "" and problems[0].prelude == LCB_PRELUDE
    with CodeGrader(SandboxConfig(wall_timeout_s=5)) as grader:
        right = (
            "```python\nclass Solution:\n    def lenTimes(self, nums, k):\n"
            "        return len(nums) * k\n```"
        )
        assert grader.reward(right, problems[0]) == (1.0, True)
        assert grader.evaluate(right, problems[1]).correct
        assert grader.reward(
            "```python\nprint(sum(map(int, input().split())))\n```", problems[2]
        ) == (1.0, True)


def test_a_non_coding_row_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "2+2?", "answer": "4"}) + "\n")
    with pytest.raises(ValueError, match="line 1: not a coding row"):
        read_code_problems(path)
    path.write_text(json.dumps({"prompt": "x", "reward_model": {"ground_truth": "{}"}}) + "\n")
    with pytest.raises(ValueError, match="line 1: reward_model.ground_truth holds no tests"):
        read_code_problems(path)


def test_ground_truth_written_with_str_is_read_without_eval():
    truth = {"inputs": ["1\n"], "outputs": ["1\n"]}
    tests, style = ground_truth_tests(str(truth))
    assert style == "stdio" and tests == (TestCase("stdio", input="1\n", expected="1\n"),)


# ---- the splits ---------------------------------------------------------------------------


def some_tests(n, salt=0):
    return [TestCase("stdio", input=f"{i} {salt}", expected=str(i)) for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 41), st.integers(0, 3), st.integers(0, 10**6))
def test_test_split_is_half_and_half_and_seeded(n, seed, salt):
    tests = some_tests(n, salt)
    reward, heldout = split_tests(tests, seed)
    assert len(reward) == (n + 1) // 2 and len(heldout) == n // 2
    assert sorted(map(repr, reward + heldout)) == sorted(map(repr, tests))  # a partition
    assert split_tests(tests, seed) == (reward, heldout)  # same seed: same split
    mask = heldout_mask(tests, seed)
    assert heldout == tuple(t for t, h in zip(tests, mask) if h)  # file order kept


def test_split_depends_on_the_problem_not_the_file_order():
    problems = [some_tests(10, salt) for salt in range(30)]
    first = [heldout_mask(p) for p in problems]
    assert [heldout_mask(p) for p in reversed(problems)] == first[::-1]
    assert len(set(first)) > 10  # problems get different splits
    other_seed = [heldout_mask(p, seed=1) for p in problems]
    assert other_seed != first


def test_problem_split_holds_out_about_a_fifth():
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    held = sum(is_heldout_problem(k) for k in keys)
    assert 330 <= held <= 470  # Binomial(2000, 0.2): mean 400, sd 18
    assert sum(is_heldout_problem(k, fraction=0.0) for k in keys) == 0
    assert sum(is_heldout_problem(k, fraction=1.0) for k in keys) == 2000


def test_eval_tests_are_never_reward_tests():
    for salt in range(40):
        problem = make_problem(str(salt), "q", some_tests(7, salt))
        if problem.heldout_problem:
            assert problem.eval_tests == problem.tests
        else:
            assert not set(map(repr, problem.eval_tests)) & set(map(repr, problem.reward_tests))
            assert problem.release_validation_tests == problem.reward_tests


# ---- the synthetic task family ------------------------------------------------------------


def test_synthetic_problems_are_seeded_and_non_trivial():
    task = SyntheticCodeTask()
    a = task.sample(20, np.random.default_rng(3))
    b = SyntheticCodeTask().sample(20, np.random.default_rng(3))
    assert [p.uid for p in a] == [p.uid for p in b]
    assert not any(p.heldout_problem for p in a)
    assert all(p.heldout_problem for p in task.heldout_set(5))
    for p in a:
        outputs = [json.loads(t.expected) for t in p.tests]
        assert len(p.tests) == 8 and len(p.reward_tests) == 4 and len(set(outputs)) >= 2
        program = task.programs[p.uid]
        assert all(
            evaluate(program, json.loads(t.input)) == json.loads(t.expected) for t in p.tests
        )
    assert len(Counter(source(task.programs[p.uid]) for p in a)) > 10


def test_synthetic_problems_in_every_layout_read_back_the_same():
    task = SyntheticCodeTask()
    (problem,) = task.sample(1, np.random.default_rng(0))
    assert lcb_problem(lcb_row(problem)).tests == problem.tests
    assert lcb_problem(lcb_row(problem)).heldout_mask == problem.heldout_mask
    assert release_problem(release_row(problem)).heldout_mask == problem.heldout_mask
    assert [t.kind for t in mbpp_problem(mbpp_row(problem)).tests] == ["expr"] * 8


def test_synthetic_reference_passes_and_a_near_miss_gets_its_fraction():
    """The grader's reward of a near miss equals the fraction of reward tests on which the
    near miss, evaluated directly (no sandbox), gives the expected output."""
    task = SyntheticCodeTask()
    rng = np.random.default_rng(1)
    problems = task.sample(4, rng)
    misses = [near_miss(task.programs[p.uid], rng) for p in problems]
    wrong = [f"```python\n{source(m)}\n```" for m in misses]
    with CodeGrader(SandboxConfig(wall_timeout_s=5), workers=2) as grader:
        rewards = grader.rewards(
            [task.reference_response(p) for p in problems] + wrong, problems + problems
        )
    assert rewards[:4] == [(1.0, True)] * 4
    for (reward, correct), miss, p in zip(rewards[4:], misses, problems):
        hits = [
            evaluate(miss, json.loads(t.input)) == json.loads(t.expected) for t in p.reward_tests
        ]
        assert reward == pytest.approx(sum(hits) / len(hits)) and correct == all(hits)
    assert any(r < 1.0 for r, _ in rewards[4:])


def test_livecodebench_files_convert_to_the_release_layout(tmp_path, capsys):
    from srpo.code.convert import main
    from srpo.data import read_problems

    rows = [stdin_row(), functional_row(), dict(stdin_row(), question_id="x", difficulty="hard")]
    source = tmp_path / "test6.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "lcb_v6_medium.parquet"
    assert main([str(source), "--difficulty", "medium", "--out", str(out)]) == 0
    back = read_code_problems(out)
    originals = [lcb_problem(r) for r in rows[:2]]
    assert [p.uid for p in back] == [p.uid for p in originals]
    for got, want in zip(back, originals):
        assert got.tests == want.tests and got.heldout_mask == want.heldout_mask
        assert got.heldout_problem == want.heldout_problem and got.func_name == want.func_name
    assert "starter code" in back[1].question and "stdin" in back[0].question
    assert {p.grader for p in read_problems(out)} == {"code"}
    with pytest.raises(SystemExit) as error:
        main([str(source), "--difficulty", "medium", "--out", str(tmp_path / "x.csv")])
    assert error.value.code == 2 and "--out" in capsys.readouterr().err
