"""benchmarks/bench_kv_cache.py runs at tiny size and reports both caches side by side."""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_kv_cache_quick(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_kv_cache
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    report = bench_kv_cache.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "bench_kv_cache.json").read_text())
    assert saved["decode"]["same_chains"] and saved["decode"]["model_cache"] == "PreallocatedCache"
    for row in report["writes"]:
        assert row["growing"] > 0 and row["preallocated"] > 0 and row["ratio"] > 0
        # the growing cache copies the whole cache every step: bytes grow with the length
    lengths = [w["copied_bytes_per_step_growing"] for w in report["writes"]]
    assert lengths == sorted(lengths)
