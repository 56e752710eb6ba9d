"""benchmarks/gpu_check.py runs on CPU at tiny size and reports every phase (the GPU path line by
line: a real architecture, a trained BPE tokenizer with Qwen2's regex, LoRA, checkpointing,
mini-batches, adapter export and the evaluation script), started as documented from a bare
checkout (``PYTHONPATH=.``) with gymnasium, math-verify and vLLM unimportable; its
``--paper-limits`` plan is the recipe's lengths and a real vocabulary."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

BLOCKER = """
import runpy, sys
BLOCKED = ("gymnasium", "math_verify", "vllm")
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: a GPU image without this package's extras")
sys.meta_path.insert(0, Block())
sys.argv = ["benchmarks/gpu_check.py"] + sys.argv[1:]
runpy.run_path("benchmarks/gpu_check.py", run_name="__main__")
"""


def _gpu_check():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return gpu_check


def test_gpu_check_tiny_on_cpu_without_the_extras(tmp_path):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": ".",
           "OMP_NUM_THREADS": "1", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", BLOCKER, "--device", "cpu", "--size", "tiny",
                           "--out", str(tmp_path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["iteration"] for s in saved["steps"]] == [1, 2]
    for step in saved["steps"]:
        for key in ("fresh_tokens_per_s", "suffix_tokens_per_s", "update_tokens_per_s",
                    "step_time_s", "rss_max_gib"):
            assert step[key] is not None and step[key] > 0, key
        assert "cuda_reserved_peak_gib" in step
    assert saved["eval"]["problems"] == 2 and saved["eval"]["tokens_per_s"] > 0
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    assert saved["settings"]["grad_checkpointing"] is True


def test_paper_limits_are_the_recipes_lengths_and_a_real_vocabulary():
    g = _gpu_check()
    for size, vocab, arch in (("1.5b", 151936, "qwen2"), ("7b", 100278, "llama"),
                              ("14b", 152064, "qwen2")):
        args = g.parse_args(["--device", "cpu", "--size", size, "--paper-limits"])
        planned = g.plan(args)
        run = planned["run"]
        assert planned["vocab"] == vocab and args.arch == arch
        assert (run["thoughts"], run["thought_tokens"], run["response_tokens"], run["model_len"],
                run["loc_tokens"], run["prompts"], run["mini_batches"], run["rank"],
                run["steps"]) == (20, 256, 5120, 8192, 4096, 32, 4, 64, 1)
        assert (run["loc_prompt"], run["loc_stop_at_boxed"]) == ("release", False)
    short = g.plan(g.parse_args(["--device", "cpu", "--size", "1.5b"]))
    assert short["vocab"] == 8192 and short["run"]["response_tokens"] == 4 * 128
    assert g.plan(g.parse_args(["--device", "cpu", "--size", "7b", "--paper-limits",
                                "--prompts", "4"]))["run"]["prompts"] == 4


def test_vocabulary_padding_and_the_prediction_report(tmp_path):
    import types

    from srpo.memory import PRESETS
    from srpo.tokenizer import build_bpe_tokenizer

    g = _gpu_check()
    tok = build_bpe_tokenizer(["We add 1 and 2.</thought>"] * 20, vocab_size=300)
    added = g.pad_vocabulary(tok, 1000)
    assert len(tok) == 1000 and added > 0 and tok.decode([999]) == f"<|reserved_{added - 1}|>"
    olmo = PRESETS["olmo-3-7b"]
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "num_hidden_layers": olmo.layers, "hidden_size": olmo.hidden,
        "num_attention_heads": olmo.heads, "num_key_value_heads": olmo.kv_heads,
        "intermediate_size": olmo.intermediate, "vocab_size": olmo.vocab}))
    step = {"time_fresh_s": 300.0, "time_localization_s": 100.0, "time_suffix_s": 150.0,
            "time_update_s": 200.0, "cuda_peak_gib": 80.0, "cuda_reserved_peak_gib": 90.0}
    report = g.predicted(None, {"prompts": 32}, types.SimpleNamespace(model=str(model)), [step])
    assert set(report["seconds"]) == set(report["measured_seconds"]) == {
        "fresh", "localization", "suffix", "update"}
    assert 60 < report["peak_gb"] < 141 and report["measured_reserved_gb"] > 90


def test_the_docs_table_is_what_paper_step_prints():
    """docs/llm.md's predicted H200 table is benchmarks/paper_step.py's output, row for row."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import paper_step
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    docs = (REPO / "docs" / "llm.md").read_text()
    printed = paper_step.main([]).splitlines()
    assert len(printed) == 18
    missing = [line for line in printed if line not in docs]
    assert not missing, missing
