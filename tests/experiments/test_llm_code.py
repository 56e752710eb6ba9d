"""experiments/llm_code.py: the coding learning curves (issue 18).

- ``test_speedup_*``: the speed-up's definition on hand-made curves (a comparator that reaches
  its final score at step 8 and SRPO at step 2: 4x; never reached: None; the bootstrap interval
  holds the point value when every seed agrees) -- a swapped ratio or a target taken from the
  wrong curve fails them.
- ``test_quick_run_writes_curves_summary_and_figures_and_resumes``: ``--quick`` end to end on
  the warm-started tiny coding model (sandboxed rewards and held-out J), then the same command
  again, which resumes (no step is retrained) and writes the same summary bytes.
"""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from experiments import llm_code

TIME_LIMIT_S = 900


@pytest.fixture(autouse=True)
def _limit():
    def expire(*_):
        raise TimeoutError(f"test exceeded {TIME_LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TIME_LIMIT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


STEPS = [0, 2, 4, 6, 8]


def test_speedup_is_comparator_steps_over_method_steps_to_the_comparators_final():
    grpo = np.array([[0.5, 0.55, 0.6, 0.65, 0.7]])
    srpo = np.array([[0.5, 0.72, 0.75, 0.76, 0.8]])
    assert llm_code.speedup(srpo, grpo, STEPS) == pytest.approx(8 / 2)
    assert llm_code.speedup(grpo, srpo, STEPS) is None  # grpo never reaches srpo's 0.8
    slow = np.array([[0.5, 0.5, 0.5, 0.6, 0.7]])
    assert llm_code.speedup(slow, grpo, STEPS) == pytest.approx(1.0)


def test_speedup_interval_from_seeds():
    grpo = np.array([[0.5, 0.55, 0.6, 0.65, 0.7]] * 3)
    srpo = np.array([[0.5, 0.72, 0.75, 0.76, 0.8]] * 3)
    assert llm_code._bootstrap(srpo, grpo, STEPS) == [pytest.approx(4.0), pytest.approx(4.0)]
    assert llm_code._bootstrap(srpo[:1], grpo[:1], STEPS) is None


def test_quick_run_writes_curves_summary_and_figures_and_resumes(tmp_path, capsys):
    out = tmp_path / "code"
    argv = ["--quick", "--out", str(out), "--jobs", "1"]
    summary = llm_code.main(argv)
    assert set(summary["methods"]) == {"grpo", "rrpo", "srpo"}
    for entry in summary["methods"].values():
        assert entry["steps"] == [0, 1, 2] and entry["seeds"] == 2
        assert all(0 <= j <= 1 for j in entry["J_mean"])
        assert entry["final_J_ci95"] is not None
    assert set(summary["speedup"]) == {"srpo_vs_grpo", "srpo_vs_rrpo"}
    for ext in ("png", "pdf"):
        assert (out / f"code_curves.{ext}").stat().st_size > 0
    first = (out / "code_summary.json").read_bytes()
    assert json.loads(first)["task"] == "synthetic_code"
    capsys.readouterr()
    llm_code.main(argv)  # every run finished: resumed, nothing retrained
    printed = capsys.readouterr().out
    assert "reused" in printed or "finished" in printed
    assert (out / "code_summary.json").read_bytes() == first


def _documented_command() -> list[str]:
    """The ``llm_code.py`` line of docs/code.md's GPU block, continuation lines joined."""
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "code.md").read_text()
    joined = text.replace("\\\n", " ")
    line = next(ln for ln in joined.splitlines() if "experiments/llm_code.py --task data/" in ln)
    tokens = shlex.split(line)
    return tokens[tokens.index("experiments/llm_code.py") + 1 :]


def test_the_documented_livecodebench_command_parses_as_written(tmp_path):
    """docs/code.md's GPU command, with a tiny Qwen2 model and a release-layout file of synthetic
    problems standing in for OLMo and LiveCodeBench, CPU for cuda and the Hugging Face engine for
    vLLM (not installed here): llm_srpo.py accepts what llm_code.py passes and trains the three
    methods on the code task with the paper's recipe, J every step."""
    import pandas as pd

    from experiments import llm_srpo
    from srpo.code.formats import release_row
    from srpo.code.synthetic import SyntheticCodeTask
    from tests.srpo.real_model import make_model_dir

    model = make_model_dir(tmp_path / "qwen2-tiny")
    gen = SyntheticCodeTask()
    data = tmp_path / "lcb.parquet"
    problems = gen.sample(40, np.random.default_rng(0))
    pd.DataFrame([release_row(p) for p in problems]).to_parquet(data)
    argv = []
    for token in _documented_command():
        token = token.replace("data/lcb_v6_medium.parquet", str(data))
        token = token.replace("/models/OLMo-3-7B-Instruct", str(model))
        argv.append("cpu" if token == "cuda" else token)
    argv[argv.index("--out") + 1] = str(tmp_path / "out")
    cut = argv.index("--engine")
    argv = argv[:cut] + argv[cut + 2 :]  # vLLM and its memory share: not on this machine
    cut = argv.index("--vllm-gpu-memory-utilization")
    argv = argv[:cut] + argv[cut + 2 :]
    raw, rest = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = llm_code.build_parser().parse_args(raw)
    args.rest = rest
    srpo_args = llm_srpo.parse_args(llm_code.llm_srpo_argv(args))
    assert srpo_args.method == ["grpo", "rrpo", "srpo"] and len(srpo_args.configs) == 9
    cfg = srpo_args.configs[0]
    assert cfg.task_type == "code" and cfg.eval_every == 1 and cfg.epochs == 1
    assert (cfg.lora_rank, cfg.lr, cfg.prompts_per_step) == (64, 5e-5, 32)
