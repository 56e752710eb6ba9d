"""experiments/llm_eval.py: four answer types, greedy pass@1 and pass@k, resume, errors."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from srpo.data import read_problems
from srpo.rollout import Chain
from srpo.tasks import DatasetTask
from tests.srpo.real_model import arithmetic_rows, make_model_dir, write_jsonl

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    model = make_model_dir(root / "m")
    math = write_jsonl(root / "math5.jsonl", arithmetic_rows(3))
    mc = root / "csqa.parquet"
    pd.DataFrame({
        "data_source": ["commonsense_qa"] * 3,
        "prompt": [[{"role": "user", "content": f"Pick one: (A) x (B) y, case {i}"}] for i in range(3)],
        "reward_model": [{"ground_truth": g} for g in "ABA"],
    }).to_parquet(mc)
    yesno = write_jsonl(root / "strategyqa.jsonl", [
        {"question": f"Is {i} even?", "answer": "yes" if i % 2 == 0 else "no"} for i in range(3)])
    exact = write_jsonl(root / "sciknow.jsonl", [
        {"question": "Powerhouse of the cell?", "answer": "The mitochondria",
         "data_source": "SciKnowEval-biology"},
        {"question": "Salt?", "answer": "sodium chloride", "data_source": "SciKnowEval-chemistry"}])
    return model, [math, mc, yesno, exact]


class AnswerEngine:
    """Answers correctly on even problem indices (boxed), wrongly on odd ones."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = 0

    def rollout(self, requests, temperature=None):
        out = []
        for request in requests:
            answer = self.answers[self.calls]
            self.calls += 1
            text = f"Thinking.</thought>So \\boxed{{{answer}}}.</thought>"
            out.append([Chain(list(request.prompt_ids), [1, 2], 0, [(0, 2)], text, 2, True, False,
                              "boxed")] * request.n)
        return out


def test_every_answer_type_is_graded(files):
    from experiments.llm_eval import evaluate_file

    _, paths = files
    wrong = {"math": "999", "mc": "J", "yesno": "maybe", "substring": "argon"}
    for path in paths:
        problems = read_problems(path)
        graders = {p.grader for p in problems}
        assert len(graders) == 1
        grader = graders.pop()
        answers = [p.answer if i % 2 == 0 else wrong[grader] for i, p in enumerate(problems)]
        if grader == "yesno":  # answer in words, as a model would
            answers = [a if i % 2 == 0 else "maybe" for i, a in enumerate(answers)]
        rows = []
        args = argparse.Namespace(batch_size=2, samples=0, k=[], seed=0)

        class Tok:
            def encode(self, text):
                return [1, 2, 3]

        evaluate_file(AnswerEngine(answers), Tok(), DatasetTask(problems), problems, 0, args,
                      set(), rows.extend, type("Bar", (), {"update": lambda self, n: None})())
        assert [r["greedy_correct"] for r in rows] == [1.0 if i % 2 == 0 else 0.0
                                                       for i in range(len(problems))], grader
    assert {read_problems(p)[0].grader for p in paths} == {"math", "mc", "yesno", "substring"}


def run(args, cwd):
    return subprocess.run([sys.executable, str(REPO / "experiments" / "llm_eval.py"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                               "PYTHONPATH": str(REPO), "HOME": str(cwd)})


def test_end_to_end_resume_and_pass_at_k(files, tmp_path, capsys):
    from experiments.llm_eval import main

    model, paths = files
    common = ["--model", str(model), "--data", *map(str, paths[:3]), "--samples", "3", "--k", "1",
              "3", "--max-thoughts", "2", "--max-thought-tokens", "6", "--out", str(tmp_path / "e")]
    main(common + ["--limit", "1"])
    main(common + ["--limit", "2", "--batch-size", "1"])  # resumes: only the new problems
    assert "resuming: 3 problems already done" in capsys.readouterr().out
    examples = pd.read_parquet(tmp_path / "e" / "examples.parquet")
    assert len(examples) == 6 and set(examples.benchmark) == {"math5", "csqa", "strategyqa"}
    assert (examples.n_samples == 3).all()
    assert {"pass@1", "pass@3", "greedy_prediction", "greedy_stop_reason"} <= set(examples.columns)
    summary = pd.read_csv(tmp_path / "e" / "summary.csv")
    assert list(summary.graders) == ["math", "mc", "yesno"] and (summary.problems == 2).all()
    assert "greedy pass@1" in (tmp_path / "e" / "summary.md").read_text()
    # per-problem seeds: a fresh run with other batching gives the same chains
    main(common + ["--limit", "2", "--out", str(tmp_path / "f")])
    again = pd.read_parquet(tmp_path / "f" / "examples.parquet")
    key = ["file", "index"]
    pd.testing.assert_frame_equal(
        examples.sort_values(key).reset_index(drop=True)[["greedy_response", "n_correct"]],
        again.sort_values(key).reset_index(drop=True)[["greedy_response", "n_correct"]])
    # other settings in the same --out: refused in one line naming --fresh
    other = run(common + ["--limit", "2", "--temperature", "0.5"], tmp_path)
    assert other.returncode == 2 and "--fresh" in other.stderr and other.stderr.count("\n") == 1
    settings = json.loads((tmp_path / "e" / "eval_config.json").read_text())["settings"]
    assert settings["samples"] == 3


@pytest.mark.parametrize("extra, flag", [
    (["--adapter", "{tmp}"], "--adapter"),
    (["--samples", "2", "--k", "4"], "--k"),
    (["--grader", "vibes"], "--grader"),
    (["--limit", "0"], "--limit"),
])
def test_bad_inputs(files, tmp_path, extra, flag):
    from experiments import llm_eval

    model, paths = files
    argv = ["--model", str(model), "--data", str(paths[0]), "--out", str(tmp_path / "o"),
            *[e.format(tmp=tmp_path) for e in extra]]
    with pytest.raises(SystemExit) as err:
        llm_eval.parse_args(argv)
    assert err.value.code == 2
    assert not (tmp_path / "o").exists()
