"""benchmarks/bench_engines.py at tiny size on CPU: both tables, every number present (the GPU
path is the same code with a 1.5B shape, bf16 and vLLM's GPU memory share)."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")

REPO = Path(__file__).resolve().parents[2]


def run_bench(argv):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_engines
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return bench_engines.main(argv)


def check(report, out: Path, engines):
    saved = json.loads((out / "bench_engines.json").read_text())
    assert list(saved["engines"]) == engines
    for r in saved["engines"].values():
        assert r["chains_tokens_per_s"] > 0 and r["plain_tokens_per_s"] > 0
        assert r["chains_tokens"] > 0
    for name in engines:
        for trainer in ("ours", "trl"):
            step = saved["train_steps"][name][trainer]
            assert step["median_s"] > 0 and len(step["step_times_s"]) >= 1
    assert report["work"] == saved["work"]


@pytest.mark.trl
@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="TRL is not installed")
def test_bench_engines_hf_tiny(tmp_path):
    report = run_bench(["--device", "cpu", "--size", "tiny", "--engines", "hf", "--train",
                        "--out", str(tmp_path)])
    check(report, tmp_path, ["hf"])


@pytest.mark.vllm
@pytest.mark.timeout(900, method="thread")  # vLLM threads: see test_engines_vllm.py
@pytest.mark.trl
def test_bench_engines_both_engines_tiny(tmp_path):
    pytest.importorskip("vllm", reason="vLLM is not installed")
    pytest.importorskip("trl", reason="TRL is not installed")
    report = run_bench(["--device", "cpu", "--size", "tiny", "--engines", "hf", "vllm",
                        "--train", "--vllm-kv-cache-gib", "0.25", "--out", str(tmp_path)])
    check(report, tmp_path, ["hf", "vllm"])
    assert report["vllm_over_hf"]["chains"] > 0
