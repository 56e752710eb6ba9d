"""benchmarks/gpu_check.py runs on CPU at tiny size and reports every phase (the GPU path line by
line: a real architecture, a trained BPE tokenizer, LoRA, checkpointing, mini-batches, adapter
export and the evaluation script)."""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_tiny_on_cpu(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    report = gpu_check.main(["--device", "cpu", "--size", "tiny", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["steps"] == json.loads(json.dumps(report["steps"]))
    assert [s["iteration"] for s in saved["steps"]] == [1, 2]
    for step in saved["steps"]:
        for key in ("fresh_tokens_per_s", "suffix_tokens_per_s", "update_tokens_per_s",
                    "step_time_s", "rss_max_gib"):
            assert step[key] is not None and step[key] > 0, key
    assert saved["eval"]["problems"] == 2 and saved["eval"]["tokens_per_s"] > 0
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    assert saved["settings"]["grad_checkpointing"] is True
