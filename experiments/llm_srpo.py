"""GRPO vs RRPO vs SRPO vs oracle resets on a language model, from one command.

CPU default (the tiny warm-started model on the synthetic chained-arithmetic task):

    python experiments/llm_srpo.py                 # all four methods, about 7 minutes on 2 cores
    python experiments/llm_srpo.py --quick         # a smoke run, about 3 minutes
    python experiments/llm_srpo.py --method srpo rrpo --split 2x4 --no-mask --seeds 3

GPU with a real model and a local dataset:

    python experiments/llm_srpo.py --device cuda --model /models/Qwen2.5-1.5B-Instruct \\
        --task data/numina_olympiad.jsonl --method grpo srpo --lora-rank 64

Writes to ``--out`` (default ``runs/llm``): ``metrics.parquet`` (one row per method x seed x
iteration; columns in ``srpo.metrics.METRIC_COLUMNS``), ``resets.parquet`` (one row per reset
parent), ``summary.json`` (per method: final held-out pass rate with a 95% interval across seeds,
steps to reach each comparator's final score, localization and compute statistics), and learning
curves vs rollouts and vs generated tokens (``learning_curves.png`` / ``.pdf``). Each run keeps a
checkpoint in ``--out/<method>-s<seed>/``; rerunning the same command resumes killed runs.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from srpo.trainer import METHODS, TrainConfig, train  # noqa: E402

QUICK = dict(steps=10, prompts_per_step=8, eval_size=128, eval_every=2)
# Default task and budget (6-step chains, lr 1e-4 in TrainConfig, 24 steps x 16 prompts x 8
# rollouts) were fixed from the warm start and GRPO alone, before any reset method was run, by
# criteria stated in paper_repro.md ("Choice of the default configuration").
DEFAULT = dict(steps=24, prompts_per_step=16, eval_size=256, eval_every=4)
DEFAULT_OUT = "runs/llm"
FIGURES_DIR = REPO_ROOT / "figures"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", nargs="+", default=list(METHODS), choices=METHODS,
                   help="methods to run (default: all four)")
    p.add_argument("--split", default="1x4", choices=("1x4", "2x4", "1x8"),
                   help="rollout layout of the reset methods (default 1x4)")
    p.add_argument("--no-mask", action="store_true",
                   help="ablation: train on the copied prefix too")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--model", default=None,
                   help="local Hugging Face model directory (default: the tiny warm-started model)")
    p.add_argument("--lora-rank", type=int, default=None, help="train a LoRA adapter of this rank")
    p.add_argument("--task", default="synthetic",
                   help="'synthetic' or a .jsonl/.parquet file with question and answer columns")
    p.add_argument("--seeds", type=int, default=None,
                   help="number of seeds 0..N-1 (default 5; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--steps", type=int, default=None, help="override the number of iterations")
    p.add_argument("--prompts-per-step", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--loss", default="reinforce", choices=("reinforce", "ppo-clip"))
    p.add_argument("--agg", default="seq-mean-token-mean",
                   choices=("seq-mean-token-mean", "token-mean"), help="loss aggregation")
    p.add_argument("--updates-per-step", type=int, default=1,
                   help="optimizer passes per batch (ppo-clip only)")
    p.add_argument("--kl-coef", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", default=DEFAULT_OUT, help="output directory")
    p.add_argument("--fresh", action="store_true", help="ignore existing checkpoints")
    p.add_argument("--no-copy-figures", action="store_true",
                   help="do not copy the learning curves to figures/ (the default run, "
                        "--out runs/llm without --quick, copies them as llm_learning_curves.*)")
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = 1 if args.quick else 5
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1; got {args.seeds}")
    if args.model is not None and not Path(args.model).exists():
        p.error(f"--model {args.model!r} does not exist (expected a local HF model directory)")
    if args.task != "synthetic":
        from srpo.tasks import load_dataset_file

        try:
            load_dataset_file(args.task)
        except ValueError as err:
            p.error(f"--task: {err}")
        if args.model is None:
            p.error("--task PATH needs --model (the tiny model only knows the synthetic task)")
        if "oracle" in args.method:
            p.error("--method oracle needs a step verifier, which only --task synthetic has")
    return args


def make_configs(args) -> list[TrainConfig]:
    sizes = dict(QUICK if args.quick else DEFAULT)
    if args.steps is not None:
        sizes["steps"] = args.steps
    if args.prompts_per_step is not None:
        sizes["prompts_per_step"] = args.prompts_per_step
    extra = {} if args.lr is None else {"lr": args.lr}
    out = Path(args.out)
    configs = []
    for seed in range(args.seeds):
        for method in args.method:
            configs.append(TrainConfig(
                method=method, split=args.split, mask_prefix=not args.no_mask, seed=seed,
                device=args.device, model=args.model, lora_rank=args.lora_rank, task=args.task,
                loss=args.loss, agg=args.agg, updates_per_step=args.updates_per_step,
                kl_coef=args.kl_coef, num_threads=args.threads,
                out_dir=str(out / f"{method}-s{seed}"), resume=not args.fresh,
                **sizes, **extra,
            ))
    return configs


# ------------------------------------------------------------------------------------------------
# Summary
# ------------------------------------------------------------------------------------------------


def _interval(values: np.ndarray) -> list[float] | None:
    """95% t-interval of the mean across seeds (None with one seed)."""
    if len(values) < 2:
        return None
    from scipy import stats

    m, se = float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))
    h = float(stats.t.ppf(0.975, len(values) - 1)) * se
    return [m - h, m + h]


def _mean_curve(df: pd.DataFrame, method: str) -> pd.Series:
    d = df[(df.method == method) & df.J.notna()]
    return d.groupby("iteration").J.mean()


def steps_to_reach(curve: pd.Series, target: float) -> int | None:
    """First evaluated iteration whose (seed-mean) J reaches ``target``; None if never."""
    hit = curve[curve >= target - 1e-12]
    return int(hit.index[0]) if len(hit) else None


def summarize(metrics: pd.DataFrame, resets: pd.DataFrame) -> dict:
    out: dict = {"methods": {}}
    methods = list(dict.fromkeys(metrics.method))
    finals = {}
    for m in methods:
        d = metrics[metrics.method == m]
        last = d.sort_values("iteration").groupby("seed").tail(1)
        finals[m] = float(last.J.mean())
        r = resets[resets.method == m] if len(resets) else resets
        trained = d[d.iteration > 0]
        entry = {
            "final_J": finals[m],
            "final_J_ci95": _interval(last.J.to_numpy(dtype=float)),
            "initial_J": float(d[d.iteration == 0].J.mean()),
            "seeds": int(d.seed.nunique()),
            "iterations": int(d.iteration.max()),
            "rollouts": int(last.rollouts.mean()),
            "generated_tokens": int(last.generated_tokens.mean()),
            "train_pass_rate_mean": float(trained.pass_rate.mean()),
            "reset_rate": float(trained.reset_rate.mean()),
            "localization_fallbacks": int(trained.localization_fallbacks.sum()),
            "grad_signal_reset": float(trained.grad_signal_reset.mean()),
            "grad_signal_base": float(trained.grad_signal_base.mean()),
            "wall_time_s": float(last.wall_time.sum()),
        }
        if len(r):
            clean = r[r.clean == True]  # noqa: E712 (nullable)
            dirty = r[r.clean == False]  # noqa: E712
            entry.update({
                "reset_events": int(len(r)),
                "reset_step_mean": float(r.k.mean()),
                "reset_rel_pos_mean": float((r.k / r.n).mean()),
                "deviation_mean": float(pd.to_numeric(r.deviation).mean()),
                "clean_prefix_rate": float(pd.to_numeric(r.clean).mean()),
                "suffix_pass_at_k": float(r.suffix_pass_at_k.mean()),
                "suffix_success": float((r.suffix_successes / r.n_suffixes).mean()),
                "suffix_pass_at_k_clean": float(clean.suffix_pass_at_k.mean()) if len(clean)
                else None,
                "suffix_pass_at_k_erroneous": float(dirty.suffix_pass_at_k.mean()) if len(dirty)
                else None,
                "sources": {str(k): int(v) for k, v in r.source.value_counts().items()},
            })
        out["methods"][m] = entry
    # steps to reach each comparator's final score (seed-mean curves)
    for m in methods:
        reach = {}
        for c in methods:
            if c == m:
                continue
            cm, cc = _mean_curve(metrics, m), _mean_curve(metrics, c)
            s_m = steps_to_reach(cm, finals[c])
            s_c = steps_to_reach(cc, finals[c])
            reach[c] = {"comparator_final_J": finals[c], "steps": s_m, "comparator_steps": s_c,
                        "speedup": (s_c / s_m) if s_m and s_c else None}
        out["methods"][m]["steps_to_reach_comparator_final"] = reach
    return out


def _clean(obj):
    """NaN/inf -> None recursively (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


DEFINITIONS = {
    "final_J": "held-out greedy pass@1 at the last iteration, mean over seeds",
    "final_J_ci95": "95% t-interval of that mean across seeds (null with one seed)",
    "steps_to_reach_comparator_final": (
        "steps: first evaluated iteration at which this method's seed-mean J reaches the "
        "comparator's final seed-mean J (null: never); comparator_steps: the same for the "
        "comparator itself; speedup = comparator_steps / steps"),
    "generated_tokens": "all generated tokens (base, parents, discarded, suffixes, localization)",
    "suffix_pass_at_k": "fraction of reset parents with at least one correct suffix",
    "clean_prefix_rate": "fraction of resets with k <= the verifier's first wrong step",
    "grad_signal_*": "mean over rollouts of mean over trained tokens of (|A|/T)(1 - pi(y_t))",
}


def plot_curves(metrics: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for x, ax in zip(("rollouts", "generated_tokens"), axes):
        for m in dict.fromkeys(metrics.method):
            d = metrics[(metrics.method == m) & metrics.J.notna()]
            g = d.groupby("iteration").agg(x=(x, "mean"), J=("J", "mean"), lo=("J", "min"),
                                           hi=("J", "max"))
            (line,) = ax.plot(g.x, g.J, marker="o", ms=3, label=m)
            if d.seed.nunique() > 1:
                ax.fill_between(g.x, g.lo, g.hi, alpha=0.2, color=line.get_color())
        ax.set_xlabel({"rollouts": "training rollouts",
                       "generated_tokens": "generated tokens (all)"}[x])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out greedy pass@1 (J)")
    axes[0].legend()
    fig.tight_layout()
    paths = [out / "learning_curves.png", out / "learning_curves.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths


def main(argv=None) -> dict:
    args = parse_args(argv)
    configs = make_configs(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars; ours is the one that matters

    total = sum(c.steps for c in configs)
    bar = tqdm(total=total, disable=not sys.stderr.isatty(), desc="iterations")
    t0 = time.time()
    frames, reset_frames = [], []
    for cfg in configs:
        bar.set_postfix_str(f"{cfg.method} seed {cfg.seed}")
        done = {"n": 0}

        def progress(it, steps, done=done):
            bar.update(it - done["n"])
            done["n"] = it

        frames.append(train(cfg, progress=progress))
        bar.update(cfg.steps - done["n"])
        r = pd.read_parquet(Path(cfg.out_dir) / "resets.parquet")
        if len(r):
            reset_frames.append(r)
        last = frames[-1].iloc[-1]
        msg = (f"{cfg.method} seed {cfg.seed}: J {frames[-1].J.iloc[0]:.3f} -> {last.J:.3f}, "
               f"{int(last.generated_tokens)} tokens, {last.wall_time:.0f}s")
        (bar.write if sys.stderr.isatty() else print)(msg)
    bar.close()
    metrics = pd.concat(frames, ignore_index=True)
    resets = pd.concat(reset_frames, ignore_index=True) if reset_frames else pd.DataFrame()
    metrics.to_parquet(out / "metrics.parquet", index=False)
    resets.to_parquet(out / "resets.parquet", index=False)
    summary = summarize(metrics, resets)
    summary["definitions"] = DEFINITIONS
    summary["command"] = " ".join(["python", "experiments/llm_srpo.py", *(argv or sys.argv[1:])])
    summary["wall_time_s"] = time.time() - t0
    summary["configs"] = [c.to_dict() for c in configs[: len(args.method)]]
    summary = _clean(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    paths = plot_curves(metrics, out)
    if (not args.no_copy_figures and not args.quick
            and out.resolve() == (REPO_ROOT / DEFAULT_OUT).resolve()):
        FIGURES_DIR.mkdir(exist_ok=True)
        for path in paths:
            shutil.copyfile(path, FIGURES_DIR / f"llm_{path.name}")
        shutil.copyfile(out / "summary.json", FIGURES_DIR / "llm_summary.json")
        print(f"copied learning curves to {FIGURES_DIR}/llm_learning_curves.png/.pdf")
    for m, e in summary["methods"].items():
        print(f"{m:7s} final J {e['final_J']:.3f} (start {e['initial_J']:.3f}); "
              f"reset rate {e['reset_rate']:.2f}; clean prefix {e.get('clean_prefix_rate')}; "
              f"fallbacks {e['localization_fallbacks']}")
    print(f"wrote {out}/metrics.parquet, resets.parquet, summary.json, learning_curves.png/.pdf "
          f"in {summary['wall_time_s']:.0f}s")
    return summary


if __name__ == "__main__":
    main()
