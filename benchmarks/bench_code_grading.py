"""Sandboxed grading of a training batch: one run per test (the release's layout) vs one run per
program (``CodeGrader(isolation="program")``, the training default), in the same run.

    python benchmarks/bench_code_grading.py                 # 64 programs x 8 tests, 2 workers
    python benchmarks/bench_code_grading.py --programs 256 --workers 4

The programs are the tiny coding task's (``srpo.code.synthetic``, depth 2): half correct, half
with one constant changed (partial credit), each graded on all 8 of its tests. Both layouts must
give the same verdicts (checked); printed: wall seconds, sandboxed runs, and the ratio
``test / program`` (the speed-up of the training default over the plain per-test reference).
Wall times on a loaded machine are not final numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def jobs(n: int, seed: int = 0) -> list:
    from srpo.code.synthetic import SyntheticCodeTask, near_miss, source

    task = SyntheticCodeTask(depth=2)
    rng = np.random.default_rng(seed)
    out = []
    for problem in task.sample((n + 1) // 2, rng):
        program = task.programs[problem.uid]
        out.append((source(program), problem.tests, problem.prelude))
        out.append((source(near_miss(program, rng)), problem.tests, problem.prelude))
    return out[:n]


def timed(isolation: str, batch: list, workers: int) -> tuple[float, int, list]:
    from srpo.code.grading import CodeGrader

    with CodeGrader(workers=workers, isolation=isolation) as grader:
        grader.grade_many(batch[:2])  # warm-up: the layer probe
        runs = grader.runs
        t0 = time.perf_counter()
        reports = grader.grade_many(batch)
        seconds = time.perf_counter() - t0
        return seconds, grader.runs - runs, [[o.verdict for o in r.outcomes] for r in reports]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--programs", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    batch = jobs(args.programs)
    per_test, runs_test, verdicts_test = timed("test", batch, args.workers)
    per_program, runs_program, verdicts_program = timed("program", batch, args.workers)
    if verdicts_test != verdicts_program:
        raise SystemExit("the two layouts disagree on some verdict")
    result = {
        "programs": len(batch),
        "tests": sum(len(t) for _, t, _ in batch),
        "seconds_per_test_runs": per_test,
        "seconds_per_program_runs": per_program,
        "runs_test": runs_test,
        "runs_program": runs_program,
        "ratio": per_test / per_program,
    }
    print(f"{result['programs']} programs, {result['tests']} tests, {args.workers} workers")
    print(f"  one run per test:    {per_test:7.2f} s  ({runs_test} sandboxed runs)")
    print(f"  one run per program: {per_program:7.2f} s  ({runs_program} sandboxed runs)")
    print(f"  ratio test/program:  {result['ratio']:.2f}x")
    return result


if __name__ == "__main__":
    main()
