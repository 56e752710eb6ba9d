"""experiments/llm_srpo.py: the documented GPU command on CPU at tiny size, one-line errors before any
file is written, checkpoint refusal naming --fresh, --steps 0, which runs may touch figures/."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.srpo.real_model import arithmetic_rows, make_model_dir, write_jsonl

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "llm_srpo.py"
GPU_COMMAND = ("--device cuda --model DIR --task numina.jsonl --lora-rank 64 --lr 5e-5 "
               "--prompts-per-step 32 --steps 24 --seeds 3").split()
#: the tiny sizes that make the documented command's code path run in seconds on a CPU
TINY = ["--prompts-per-step", "2", "--steps", "2", "--seeds", "1", "--max-thoughts", "2",
        "--max-thought-tokens", "6", "--localization-max-tokens", "6", "--eval-size", "2",
        "--eval-every", "1", "--max-fresh-chains", "8", "--threads", "1"]


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    model = make_model_dir(root / "qwen2-tiny")
    task = write_jsonl(root / "numina.jsonl", arithmetic_rows(40))  # one paper step's 32 prompts
    return model, task


def run(args, cwd, env_extra=None, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": str(REPO)}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in path.rglob("*")}


def test_the_documented_gpu_command_parses_as_written(real, monkeypatch):
    """Exactly the documented flags: no oracle (no step verifier), the release's limits."""
    from experiments import llm_srpo

    model, task = real
    argv = [a.replace("DIR", str(model)).replace("numina.jsonl", str(task)) for a in GPU_COMMAND]
    argv = [a if a != "cuda" else "cpu" for a in argv]  # the CPU stand-in of this machine
    args = llm_srpo.parse_args(argv)
    assert args.method == ["grpo", "rrpo", "srpo"] and args.oracle_dropped
    assert len(args.configs) == 9
    cfg = args.configs[0]
    assert (cfg.lora_rank, cfg.lora_alpha, cfg.lr, cfg.prompts_per_step, cfg.steps) == (
        64, None, 5e-5, 32, 24)
    assert (cfg.max_thoughts, cfg.max_thought_tokens, cfg.max_response_tokens, cfg.max_model_len,
            cfg.localization_max_new_tokens, cfg.localization_temperature) == (20, 256, 5120, 8192,
                                                                              4096, 0.3)
    assert cfg.localization_prompt == "release" and cfg.localization_fallback == "step1"
    assert cfg.grad_checkpointing is True and cfg.micro_batch_tokens == 16384


def test_recipe_paper_sets_the_whole_recipe(real):
    from experiments import llm_srpo

    model, task = real
    cfg = llm_srpo.parse_args(["--model", str(model), "--task", str(task), "--recipe", "paper",
                               "--lr", "1e-5"]).configs[0]
    assert (cfg.lora_rank, cfg.lora_alpha, cfg.lora_target_modules) == (64, 64, "all-linear")
    assert (cfg.weight_decay, cfg.grad_clip, cfg.prompts_per_step, cfg.rollouts_per_prompt) == (
        0.01, 1.0, 32, 8)
    assert (cfg.mini_batches, cfg.temperature, cfg.top_p, cfg.epochs, cfg.steps) == (
        4, 0.7, 0.95, 2, None)
    assert cfg.lr == 1e-5  # an explicit flag wins over the recipe


def test_tiny_run_of_the_documented_command(real, tmp_path):
    model, task = real
    argv = [a.replace("DIR", str(model)).replace("numina.jsonl", str(task)) for a in GPU_COMMAND]
    argv = [a if a != "cuda" else "cpu" for a in argv] + TINY + ["--out", str(tmp_path / "out")]
    figures = tree(REPO / "figures")
    result = run(argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "oracle method is not run" in result.stdout
    assert "no held-out set" in result.stdout
    out = tmp_path / "out"
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert sorted(metrics.method.unique()) == ["grpo", "rrpo", "srpo"]
    assert set(metrics.iteration) == {0, 1, 2}
    for column in ("time_fresh_s", "time_update_s", "step_time_s", "rss_max_gib",
                   "optimizer_updates", "update_tokens"):
        assert column in metrics.columns
    resets = pd.read_parquet(out / "resets.parquet")
    assert {"fallback", "raw_k", "source"} <= set(resets.columns)
    srpo_resets = resets[resets.method == "srpo"]
    # a random model never answers \boxed{N}: every self-localization is a counted step-1 fallback
    assert len(srpo_resets) and srpo_resets.fallback.all()
    assert set(srpo_resets.source) == {"fallback_step1"} and (srpo_resets.k == 1).all()
    srpo_rows = metrics[(metrics.method == "srpo") & (metrics.iteration > 0)]
    assert srpo_rows.localization_fallbacks.sum() == len(srpo_resets)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["default_run"] is False and summary["run"]["methods"] == [
        "grpo", "rrpo", "srpo"]
    assert summary["methods"]["srpo"]["fallback_rate"] == 1.0
    # the adapter is exported in peft form and loads back
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = out / "srpo-s0" / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    assert json.loads((adapter / "trainer_state.json").read_text())["iteration"] == 2
    base = AutoModelForCausalLM.from_pretrained(str(model))
    PeftModel.from_pretrained(base, str(adapter))
    info = json.loads((out / "srpo-s0" / "run_info.json").read_text())
    assert info["eval_source"] == "train" and info["steps"] == 2
    assert tree(REPO / "figures") == figures  # a non-default run never touches figures/
    # rerunning with another configuration is refused in one line naming --fresh, nothing written
    before = tree(out)
    again = run(argv[:-2] + ["--lr", "1e-3", "--out", str(out)], cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "--fresh" in again.stderr
    assert "different configuration" in again.stderr
    assert tree(out) == before


BAD_INPUTS = [
    (["--device", "cuda"], "--device"),
    (["--model", "{empty}"], "--model"),
    (["--out", "{file}"], "--out"),
    (["--lora-rank", "-4"], "--lora-rank"),
    (["--threads", "0"], "--threads"),
    (["--lr", "-0.1"], "--lr"),
    (["--steps", "-1"], "--steps"),
    (["--task", "{bad_jsonl}", "--model", "{model}"], "--task"),
    # a file smaller than one step's prompts (issue 21: a traceback after the model loaded)
    (["--task", "{short}", "--model", "{model}", "--prompts-per-step", "8"], "--prompts-per-step"),
    (["--task", "{short}", "--model", "{model}", "--recipe", "paper"], "--prompts-per-step"),
]


@pytest.mark.parametrize("argv, flag", BAD_INPUTS)
def test_bad_input_is_one_line_naming_the_flag_and_writes_nothing(argv, flag, tmp_path, real):
    model, _ = real
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "bad.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n{"question": "q"}\n')
    write_jsonl(tmp_path / "short.jsonl", arithmetic_rows(3))
    names = {"empty": tmp_path / "empty", "file": tmp_path / "a_file",
             "bad_jsonl": tmp_path / "bad.jsonl", "short": tmp_path / "short.jsonl",
             "model": model}
    argv = [a.format(**names) for a in argv]
    cache = tmp_path / "cache"
    before = tree(tmp_path)
    result = run(argv, cwd=tmp_path, env_extra={"CREDIT_RESETS_CACHE": str(cache)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("llm_srpo.py: error: ") and flag in result.stderr
    assert tree(tmp_path) == before  # no runs/, no cache, nothing


def test_a_short_training_file_fails_in_train_before_the_model_loads(tmp_path):
    """The library path: ``train`` checks one step's prompts before loading the model (here a
    directory that is no model at all) and before writing config.json."""
    from srpo.config import ConfigError, TrainConfig
    from srpo.trainer import train

    task = write_jsonl(tmp_path / "short.jsonl", arithmetic_rows(3))
    (tmp_path / "not_a_model").mkdir()
    config = TrainConfig(task=str(task), model=str(tmp_path / "not_a_model"), prompts_per_step=8,
                         out_dir=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="prompts_per_step must be <= the 3 training problems"):
        train(config)
    assert not (tmp_path / "out").exists()


def test_more_bad_inputs_in_process(real, capsys):
    from experiments import llm_srpo

    model, task = real
    cases = [
        (["--max-thoughts", "0"], "--max-thoughts must be a whole number >= 1; got 0"),
        (["--steps", "-3"], "--steps must be a whole number >= 0; got -3"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["--mini-batches", "99"], "--mini-batches must be <= --prompts-per-step"),
        (["--localization-temperature", "-1"], "--localization-temperature must be >= 0"),
        (["--eval", str(task)], "--eval and --eval-split need --task FILE"),
        (["--task", str(task)], "--task FILE needs --model"),
        (["--task", str(task), "--model", str(model), "--method", "oracle"], "step verifier"),
        (["--task", str(task), "--model", str(model), "--eval", str(task), "--eval-split", "0.2"],
         "pass one of them"),
        (["--seeds", "0"], "--seeds must be a whole number >= 1; got 0"),
    ]
    for argv, expected in cases:
        with pytest.raises(SystemExit) as err:
            llm_srpo.parse_args(argv)
        message = capsys.readouterr().err
        assert err.value.code == 2 and expected in message and message.count("\n") == 1, message


def test_steps_zero_writes_valid_outputs(real, tmp_path, capsys):
    from experiments.llm_srpo import main

    model, _ = real
    main(["--model", str(model), "--steps", "0", "--seeds", "1", "--method", "grpo", "srpo",
          "--eval-size", "2", "--out", str(tmp_path / "o")])
    printed = capsys.readouterr().out
    metrics = pd.read_parquet(tmp_path / "o" / "metrics.parquet")
    assert list(metrics.iteration) == [0, 0]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["methods"]["srpo"]["iterations"] == 0
    assert "n/a" in printed and "None" not in printed
    assert (tmp_path / "o" / "learning_curves.png").is_file()


def test_only_the_full_default_run_may_copy_figures(monkeypatch):
    from experiments import llm_srpo

    monkeypatch.chdir(REPO)
    assert llm_srpo.is_default_run(llm_srpo.parse_args([]))
    assert llm_srpo.is_default_run(llm_srpo.parse_args(["--threads", "2", "--fresh"]))
    for argv in (["--quick"], ["--seeds", "2"], ["--method", "srpo"], ["--lr", "1e-4"],
                 ["--out", "runs/other"], ["--no-mask"], ["--max-thoughts", "8"]):
        assert not llm_srpo.is_default_run(llm_srpo.parse_args(argv)), argv
    assert llm_srpo.parse_args(["--quick"]).out == llm_srpo.QUICK_OUT


def test_summary_numbers_are_formatted():
    from experiments.llm_srpo import fmt

    assert fmt(0.43243243243243246) == "0.432"
    assert fmt(0.43243243243243246, pct=True) == "43.2%"
    assert fmt(None) == "n/a" and fmt(float("nan")) == "n/a"


def test_import_srpo_without_torch_names_the_extra():
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import srpo\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    # one line, no traceback, and the install line the README gives
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("ModuleNotFoundError: srpo needs torch")
    assert 'pip install -e ".[llm]"' in result.stderr
    assert 'pip install -e ".[llm]"' in (REPO / "README.md").read_text()
    # still an ImportError for code that catches it (compare.py's provenance does)
    caught = subprocess.run([sys.executable, "-c", code.replace(
        "import srpo\n", "try:\n    import srpo\nexcept ImportError as e:\n    print('caught')\n")],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert caught.returncode == 0 and caught.stdout.strip() == "caught" and not caught.stderr


def test_parallel_jobs_give_the_serial_numbers(real, tmp_path):
    """``--jobs 2`` trains the runs in worker processes; every number equals ``--jobs 1``'s."""
    model, task = real
    base = ["--model", str(model), "--task", str(task), "--method", "grpo", "srpo", *TINY]
    frames = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        result = run([*base, "--jobs", jobs, "--out", str(out)], cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        frames[jobs] = pd.read_parquet(out / "metrics.parquet")
    assert "[2/2]" in result.stdout  # the parallel path's per-run lines
    timing = [c for c in frames["1"].columns
              if c.endswith("_s") or "time" in c or c.startswith("rss") or "gib" in c]
    pd.testing.assert_frame_equal(frames["1"].drop(columns=timing),
                                  frames["2"].drop(columns=timing))
    with pytest.raises(SystemExit):
        from experiments.llm_srpo import parse_args
        parse_args(["--jobs", "0"])
