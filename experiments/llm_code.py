"""The paper's coding figure as a command: held-out fraction of tests passed vs step, GRPO / RRPO
/ SRPO, with speed-ups and 95% intervals (issue 18; docs/code.md).

CPU (the warm-started tiny model on the tiny coding task ``synthetic_code``, srpo.code.tiny;
reward = fraction of the reward tests passed in the sandbox, J = fraction of the held-out tests
passed, greedy, on held-out problems):

    python experiments/llm_code.py              # 3 seeds -> runs/llm_code, figures/llm_code_*
    python experiments/llm_code.py --quick      # 2 seeds x 2 steps -> runs/llm_code_quick only

GPU, LiveCodeBench v6 medium (the release's setup; every argument after ``--`` goes to
llm_srpo.py unchanged):

    python experiments/llm_code.py --task data/lcb_v6_medium.parquet --seeds 3 \\
        --out runs/lcb_v6_medium -- --device cuda --model /models/OLMo-3-7B-Instruct \\
        --recipe paper --epochs 1 --eval-every 1 --engine vllm --vllm-gpu-memory-utilization 0.35

The runs are ``llm_srpo.py``'s (resumable: rerunning the command continues killed runs; ``--fresh``
starts over; ``metrics.parquet`` / ``summary.json`` in ``--out``). This script adds
``code_summary.json``: per method the seed-mean curve with 95% t-intervals per evaluated step, and
SRPO's speed-up against GRPO and RRPO (steps for the comparator to reach its own final J divided
by SRPO's steps to reach it, seed-mean curves, as llm_srpo.py) with a 95% seed-bootstrap
interval; and ``code_curves.png`` / ``.pdf``. Only the full default run copies them to
``figures/llm_code_*``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from experiments.artifacts import write_json  # noqa: E402

METHODS = ("grpo", "rrpo", "srpo")
#: the CPU default: fixed before the first comparison run (docs/code.md)
DEFAULT = dict(seeds=3, steps=12, prompts=8, eval_size=128, eval_every=2)
QUICK = dict(seeds=2, steps=2, prompts=4, eval_size=16, eval_every=1)
DEFAULT_OUT, QUICK_OUT, CUSTOM_OUT = "runs/llm_code", "runs/llm_code_quick", "runs/llm_code_custom"
FIGURES = REPO_ROOT / "figures"
BOOTSTRAP = 2000


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llm_code.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--task",
        default="synthetic_code",
        help="synthetic_code (CPU) or a coding file (LiveCodeBench / release parquet)",
    )
    p.add_argument("--quick", action="store_true", help="2 seeds x 2 steps (CI smoke run)")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--prompts-per-step", type=int, default=None)
    p.add_argument("--eval-size", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--jobs", type=int, default=None, help="parallel runs (CPU)")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    p.add_argument("--cache-dir", default=None, help="warm-start cache")
    p.add_argument("--out", default=None, help=f"default {DEFAULT_OUT} ({QUICK_OUT} with --quick)")
    p.add_argument("rest", nargs="*", help="after --: arguments passed to llm_srpo.py")
    return p


def llm_srpo_argv(args) -> list[str]:
    """The llm_srpo.py command line of this run: the CPU default (or ``--quick``) sizes on the
    tiny task; on a coding file only the flags given here, J evaluated every step (as the
    release's validation), the rest llm_srpo.py's defaults for a file (the release's limits)."""
    tiny = args.task == "synthetic_code"
    sizes = (
        dict(QUICK if args.quick else DEFAULT)
        if tiny or args.quick
        else {"seeds": DEFAULT["seeds"], "eval_every": 1}
    )
    for name, dest in (
        ("seeds", "seeds"),
        ("steps", "steps"),
        ("prompts", "prompts_per_step"),
        ("eval_size", "eval_size"),
        ("eval_every", "eval_every"),
    ):
        value = getattr(args, dest, None)
        if value is not None:
            sizes[name] = value
    argv = [
        "--task",
        args.task,
        "--method",
        *METHODS,
        "--seeds",
        str(sizes.pop("seeds")),
        "--out",
        args.out,
        "--no-copy-figures",
    ]
    if not tiny:
        argv += ["--task-type", "code"]
    for name, flag in (
        ("steps", "--steps"),
        ("prompts", "--prompts-per-step"),
        ("eval_size", "--eval-size"),
        ("eval_every", "--eval-every"),
    ):
        if name in sizes:
            argv += [flag, str(sizes[name])]
    if args.jobs is not None:
        argv += ["--jobs", str(args.jobs)]
    if args.fresh:
        argv.append("--fresh")
    if args.cache_dir is not None:
        argv += ["--cache-dir", args.cache_dir]
    return argv + list(args.rest)


# ---- summary ------------------------------------------------------------------------------------


def _t_interval(values: np.ndarray) -> list[float] | None:
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None
    from scipy import stats

    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return [float(values.mean() - half), float(values.mean() + half)]


def _curves(metrics) -> dict:
    """method -> seed x evaluated-step matrix of J (rows: seeds in order), and the steps."""
    out = {}
    for m in METHODS:
        d = metrics[(metrics.method == m) & metrics.J.notna()]
        table = d.pivot_table(index="seed", columns="iteration", values="J")
        out[m] = (table.to_numpy(dtype=float), [int(c) for c in table.columns])
    return out


def _reach(mean_curve: np.ndarray, steps: list[int], target: float) -> int | None:
    hit = np.nonzero(mean_curve >= target - 1e-12)[0]
    return steps[int(hit[0])] if len(hit) else None


def speedup(curve_m: np.ndarray, curve_c: np.ndarray, steps: list[int]) -> float | None:
    """Comparator's steps to reach its own final seed-mean J over method m's steps to reach it
    (llm_srpo.py's definition); None if m never reaches it or either needs 0 steps."""
    mean_m, mean_c = np.nanmean(curve_m, axis=0), np.nanmean(curve_c, axis=0)
    target = mean_c[-1]
    s_m, s_c = _reach(mean_m, steps, target), _reach(mean_c, steps, target)
    return (s_c / s_m) if s_m and s_c else None


def _bootstrap(curve_m, curve_c, steps, seed: int = 0) -> list[float] | None:
    """95% percentile interval of the speed-up over seeds resampled with replacement (each
    method's seeds resampled separately); None with fewer than 2 seeds or when fewer than
    half of the resamples define a speed-up."""
    if len(curve_m) < 2 or len(curve_c) < 2:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(BOOTSTRAP):
        a = curve_m[rng.integers(0, len(curve_m), len(curve_m))]
        b = curve_c[rng.integers(0, len(curve_c), len(curve_c))]
        s = speedup(a, b, steps)
        values.append(np.nan if s is None else s)
    values = np.asarray(values)
    if np.isnan(values).mean() > 0.5:
        return None
    finite = values[np.isfinite(values)]
    return [float(np.quantile(finite, 0.025)), float(np.quantile(finite, 0.975))]


def summarize(metrics) -> dict:
    """Curves with intervals and SRPO's speed-ups (module docstring)."""
    curves = _curves(metrics)
    out: dict = {"methods": {}, "speedup": {}}
    for m, (matrix, steps) in curves.items():
        out["methods"][m] = {
            "steps": steps,
            "J_mean": [float(v) for v in np.nanmean(matrix, axis=0)],
            "J_ci95": [_t_interval(matrix[:, j]) for j in range(matrix.shape[1])],
            "initial_J": float(np.nanmean(matrix[:, 0])),
            "final_J": float(np.nanmean(matrix[:, -1])),
            "final_J_ci95": _t_interval(matrix[:, -1]),
            "gain": float(np.nanmean(matrix[:, -1] - matrix[:, 0])),
            "gain_ci95": _t_interval(matrix[:, -1] - matrix[:, 0]),
            "seeds": int(matrix.shape[0]),
        }
    srpo, srpo_steps = curves["srpo"]
    for c in ("grpo", "rrpo"):
        other, steps = curves[c]
        if steps != srpo_steps:
            raise ValueError(f"srpo and {c} were evaluated at different steps")
        value = speedup(srpo, other, steps)
        out["speedup"][f"srpo_vs_{c}"] = {
            "value": value,
            "ci95": _bootstrap(srpo, other, steps),
            "reached": value is not None,
        }
    return out


def plot(summary: dict, out: Path, footer: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.artifacts import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for m, entry in summary["methods"].items():
        steps, mean = entry["steps"], np.asarray(entry["J_mean"])
        ax.plot(steps, mean, marker="o", label=m.upper())
        lo = [c[0] if c else v for c, v in zip(entry["J_ci95"], mean)]
        hi = [c[1] if c else v for c, v in zip(entry["J_ci95"], mean)]
        ax.fill_between(steps, lo, hi, alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("fraction of held-out tests passed (greedy)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.text(0.01, 0.01, footer, fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return save_figure(fig, out / "code_curves", dpi=150)


def main(argv=None) -> dict:
    import pandas as pd

    raw = list(sys.argv[1:] if argv is None else argv)
    rest = []
    if "--" in raw:
        cut = raw.index("--")
        raw, rest = raw[:cut], raw[cut + 1 :]
    args = build_parser().parse_args(raw)
    args.rest = list(args.rest) + rest
    default_run = (
        not args.quick
        and args.out is None
        and args.task == "synthetic_code"
        and all(
            getattr(args, k) is None
            for k in ("seeds", "steps", "prompts_per_step", "eval_size", "eval_every")
        )
        and not args.rest
    )
    if args.out is None:
        args.out = QUICK_OUT if args.quick else (DEFAULT_OUT if default_run else CUSTOM_OUT)
    from experiments import llm_srpo

    llm_srpo.main(llm_srpo_argv(args))
    out = Path(args.out)
    metrics = pd.read_parquet(out / "metrics.parquet")
    summary = summarize(metrics)
    summary["command"] = "python experiments/llm_code.py " + " ".join(
        raw + (["--", *rest] if rest else [])
    )
    summary["task"] = args.task
    write_json(out / "code_summary.json", summary)
    footer = f"{args.task}; {summary['methods']['srpo']['seeds']} seeds; 95% t-intervals"
    plot(summary, out, footer)
    for name, entry in summary["speedup"].items():
        print(f"{name}: speed-up {entry['value']} (95% CI {entry['ci95']})", flush=True)
    if default_run:
        FIGURES.mkdir(exist_ok=True)
        shutil.copyfile(out / "code_summary.json", FIGURES / "llm_code_summary.json")
        for ext in ("png", "pdf"):
            shutil.copyfile(out / f"code_curves.{ext}", FIGURES / f"llm_code_curves.{ext}")
        print(f"copied code_summary.json and code_curves.* to {FIGURES}/llm_code_*", flush=True)
    return summary


if __name__ == "__main__":
    main()
