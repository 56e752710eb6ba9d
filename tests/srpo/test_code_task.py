"""The ``code`` task type of training (``srpo.code.task``, ``srpo.code.tiny``, issue 18).

What each test catches:

- ``test_reward_is_the_fraction_of_reward_tests_passed_in_the_sandbox``: reward = fraction of the
  reward tests (partial credit, not a 0/1 grade), correct = all pass, no code block = 0.
- ``test_j_reads_the_held_out_tests_never_the_reward_tests``: a program that hard-codes the
  reward tests' answers earns reward 1 and a low J: J reading the reward tests (the release's
  validation) fails it.
- ``test_the_last_fenced_block_is_graded``: the release's extraction (an earlier block that is
  right does not count).
- ``test_first_error_of_the_tiny_task``: the oracle's step verifier.
- ``test_a_chain_ends_at_a_closed_fence`` (tiny character tokenizer and a byte-level BPE one):
  ``answer="fence"`` ends the chain at the thought holding a closed block; ``boxed`` does not.
- ``test_a_coding_file_trains_on_training_problems_and_evaluates_held_out_tests``: the file
  path of ``build_task`` (release parquet layout): held-out problems never train.
- ``test_config_task_type``: resolution and one-line errors.
- ``test_every_method_runs_on_the_code_task``: every method of the registry, one step on the
  warm-started tiny coding model, with sandboxed grading counted (slow: shares the warm start
  with ``test_tiny_code_task_learns``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from srpo.code.grading import CodeGrader
from srpo.code.sandbox import SandboxConfig
from srpo.code.tiny import (
    CodeMisconceptionWriter,
    TinyCodeTask,
    program_of,
    solution_thoughts,
)
from srpo.config import ConfigError, TrainConfig
from srpo.thoughts import THOUGHT_DELIMITER
from tests.srpo.code_helpers import time_limit  # noqa: F401

TIME_LIMIT_S = 120
FAST = SandboxConfig(wall_timeout_s=2.0, cpu_time_s=2)


@pytest.fixture(scope="module")
def task():
    t = TinyCodeTask(grader=CodeGrader(FAST, workers=2, isolation="program"))
    yield t
    t.close()


def _problem(task, op, c, seed=0, keep=lambda p: True):
    """A training problem of the tiny task with program (op, c) (and ``keep(p)``)."""
    rng = np.random.default_rng(seed)
    while True:
        p = task.sample(1, rng)[0]
        if program_of(p) == (op, c) and keep(p):
            return p


def _near_fraction(p):
    """The fraction of p's reward tests that max(x, 7) passes when the program is max(x, 6)."""
    xs = [json.loads(t.input) for t in p.reward_tests]
    return float(np.mean([max(x, 7) == max(x, 6) for x in xs]))


def test_reward_is_the_fraction_of_reward_tests_passed_in_the_sandbox(task):
    p = _problem(task, "max", 6, keep=lambda p: 0 < _near_fraction(p) < 1)
    right = "".join(solution_thoughts("max", 6))
    near = "".join(solution_thoughts("max", 6, code_c=7))  # max(x, 7): right where x >= 7
    expected_near = _near_fraction(p)
    (r1, ok1), (r2, ok2), (r3, ok3) = task.score_many([p, p, p], [right, near, "op max</thought>"])
    assert (r1, ok1) == (1.0, True)
    assert r2 == pytest.approx(expected_near) and ok2 is False
    assert (r3, ok3) == (0.0, False)
    assert task.grade(p, near) == pytest.approx(expected_near)


def test_j_reads_the_held_out_tests_never_the_reward_tests(task):
    p = _problem(task, "+", 3)
    table = {json.loads(t.input): json.loads(t.expected) for t in p.reward_tests}
    code = f"\n```\ndef f(x): return {table!r}.get(x, -1)\n```"
    assert task.score(p, code) == (1.0, True)
    assert task.eval_scores([p], [code]) == [0.0]
    right = "".join(solution_thoughts("+", 3))
    assert task.eval_scores([p], [right]) == [1.0]


def test_the_last_fenced_block_is_graded(task):
    p = _problem(task, "*", 2)
    right = "\n```\ndef f(x): return x * 2\n```\n"
    wrong = "\n```\ndef f(x): return x * 3\n```\n"
    assert task.score(p, right + "then" + wrong)[1] is False
    assert task.score(p, wrong + "then" + right) == (1.0, True)


def test_first_error_of_the_tiny_task(task):
    p = _problem(task, "min", 5)
    right = solution_thoughts("min", 5)
    assert task.first_error(p, right) is None
    assert task.first_error(p, solution_thoughts("max", 5)) == 1
    assert task.first_error(p, solution_thoughts("min", 4)) == 2
    assert task.first_error(p, right[:2] + [solution_thoughts("min", 4)[2]]) == 3
    assert task.first_error(p, right[:2]) == 3
    assert task.first_error(p, right + ["more" + THOUGHT_DELIMITER]) == 4
    writer = CodeMisconceptionWriter(1.0, 1.0, 0.0, seed=0)  # every program confused, always
    assert task.first_error(p, writer.solution(p, np.random.default_rng(0))) == 2


@pytest.mark.parametrize("kind", ["tiny", "bpe"])
def test_a_chain_ends_at_a_closed_fence(kind):
    from srpo.engines.base import GenerationConfig
    from srpo.engines.hf import RolloutEngine
    from srpo.tokenizer import build_bpe_tokenizer, build_tokenizer
    from tests.srpo.scripted_model import ScriptedLM

    thoughts = solution_thoughts("+", 4) + ["op *</thought>"]
    if kind == "tiny":
        tok = build_tokenizer()
    else:
        corpus = ["".join(thoughts), "Write f(x) with f(0)=4.", "def f(x): return x"] * 20
        tok = build_bpe_tokenizer(corpus, vocab_size=300, pattern="qwen2")
    prompt = tok.encode("Write f(x) with f(0)=4.\n")
    model = ScriptedLM(tok, prompt, "".join(thoughts))
    for answer, n_thoughts, reason in (("fence", 3, "fenced"), ("boxed", 4, "eos")):
        config = GenerationConfig(
            temperature=0.0, max_thoughts=8, max_thought_tokens=64, answer=answer
        )
        chain = RolloutEngine(model, tok, config, eos_ids=[tok.eos_token_id]).greedy([prompt])[0]
        assert len(chain.spans) == n_thoughts and chain.stop_reason == reason
        assert chain.finished is (answer == "fence")
    with pytest.raises(ValueError, match="answer must be one of"):
        GenerationConfig(answer="fenced")


def test_a_coding_file_trains_on_training_problems_and_evaluates_held_out_tests(tmp_path):
    import pandas as pd

    from srpo.code.formats import release_row
    from srpo.code.synthetic import SyntheticCodeTask
    from srpo.setup import build_task

    gen = SyntheticCodeTask(depth=2)
    rng = np.random.default_rng(0)
    problems = gen.sample(12, rng) + gen.sample(3, rng, heldout=True)
    path = tmp_path / "code.parquet"
    pd.DataFrame([release_row(p) for p in problems]).to_parquet(path)
    config = TrainConfig(
        task=str(path),
        task_type="code",
        model="unused",
        prompts_per_step=4,
        eval_size=100,
        out_dir=str(tmp_path / "run"),
    )
    task, eval_problems, source = build_task(config)
    try:
        assert source == "code_heldout"
        assert len(task.problems) == 12 and not any(p.heldout_problem for p in task.problems)
        assert len(eval_problems) == 15 and sum(p.heldout_problem for p in eval_problems) == 3
        assert "```python" in task.prompt(task.problems[0])
        p = task.problems[0]
        assert task.score(p, gen.reference_response(p)) == (1.0, True)  # same uid, same tests
        assert task.eval_scores([p], [gen.reference_response(p)]) == [1.0]
        assert task.eval_scores([eval_problems[0]], ["no code"]) == [0.0]
    finally:
        task.close()


def test_config_task_type():
    assert TrainConfig(task="synthetic_code").task_type == "code"
    assert TrainConfig().task_type == "qa"
    cfg = TrainConfig(task="synthetic_code")
    assert cfg.max_thought_tokens == 48 and cfg.steps == 40 and cfg.is_tiny
    assert TrainConfig().run_key() == TrainConfig(task_type="qa").run_key()
    for kwargs, field in (
        (dict(task="synthetic_code", task_type="qa"), "task_type"),
        (dict(task_type="code"), "task_type"),
        (dict(task="x.parquet", task_type="code", eval_split=0.2), "eval_split"),
        (dict(task="x.parquet", task_type="maths"), "task_type"),
    ):
        with pytest.raises(ConfigError) as err:
            TrainConfig(**kwargs)
        assert err.value.field == field and "\n" not in str(err.value)
    assert TrainConfig(task="synthetic_code", method="oracle").method == "oracle"


# ---- end to end: every method of the registry on the warm-started tiny coding model ----------


@pytest.fixture(scope="module")
def code_model():
    """The tiny coding task's warm start, trained (about 100 CPU-seconds) or loaded from the cache
    before any test's time limit starts (module fixtures are set up first)."""
    from srpo.setup import warm_start_config
    from srpo.warmstart import warm_start

    return warm_start(warm_start_config(TrainConfig(task="synthetic_code", out_dir="unused")))


@pytest.fixture
def graded(monkeypatch):
    """Counts the programs the sandbox grades (``CodeGrader.grade_many``)."""
    counter = {"programs": 0, "verdicts": 0}
    original = CodeGrader.grade_many

    def counting(self, jobs):
        reports = original(self, jobs)
        counter["programs"] += len(reports)
        counter["verdicts"] += sum(len(r.outcomes) for r in reports)
        return reports

    monkeypatch.setattr(CodeGrader, "grade_many", counting)
    return counter


@pytest.mark.parametrize("method", sorted(__import__("srpo.config").config.METHODS))
def test_every_method_runs_on_the_code_task(method, tmp_path, graded, code_model):
    """One step of 2 prompts x 8 rollouts; J before and after on 4 held-out problems. Every
    method must produce chains the sandbox grades (fenced code from the warm-started model), a
    finite J in [0, 1] at both evaluations, and tokens."""
    from srpo.trainer import train

    config = TrainConfig(
        task="synthetic_code",
        method=method,
        steps=1,
        prompts_per_step=2,
        eval_size=4,
        eval_every=1,
        checkpoint_every=0,
        save_weights=False,
        out_dir=str(tmp_path),
    )
    df = train(config)
    js = df.J.dropna()
    assert list(js.index) == [0, 1] and ((js >= 0) & (js <= 1)).all()
    assert int(df.generated_tokens.iloc[-1]) > 0
    assert graded["programs"] >= 2 * 8 + 2 * 4  # the training chains and both evaluations
    assert graded["verdicts"] > 0


def test_tiny_code_task_learns(tmp_path, code_model):
    """GRPO, 6 steps x 8 prompts x 8 rollouts at lr 1e-4 (the CPU default), J on 64 held-out
    problems: the warm-started model starts well below 100% of the held-out tests and improves.
    Calibration (seed 0, before this test was written): J 0.770 at step 0, 0.818 at steps 3, 6
    and 9 of a 12-step run. Deterministic on CPU (seeded, one thread)."""
    from srpo.trainer import train

    config = TrainConfig(
        task="synthetic_code",
        method="grpo",
        steps=6,
        prompts_per_step=8,
        eval_size=64,
        eval_every=6,
        checkpoint_every=0,
        save_weights=False,
        out_dir=str(tmp_path),
    )
    js = train(config).J.dropna()
    assert js.iloc[0] < 0.85  # well below 100%: room to learn
    assert js.iloc[-1] >= js.iloc[0] + 0.03


def test_trl_runs_the_code_task(tmp_path, graded, code_model):
    """``experiments/trl_srpo.py --quick --task synthetic_code``: two SRPO steps in TRL's
    GRPOTrainer with rewards from the sandbox."""
    from experiments import trl_srpo

    out = tmp_path / "trl"
    info = trl_srpo.main(["--quick", "--task", "synthetic_code", "--out", str(out)])
    state = json.loads((out / "trainer_state.json").read_text())
    steps = [h for h in state["log_history"] if "loss" in h]
    assert [h["step"] for h in steps] == [1, 2]
    assert all(h["srpo/generated_tokens"] > 0 for h in steps)
    assert graded["programs"] >= 2 * 16  # every training chain graded in the sandbox
    assert info["settings"]["answer"] == "fence"
