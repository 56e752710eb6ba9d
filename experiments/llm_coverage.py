"""Does the language model's reset benefit follow the simulation's p-dependence? (issue 11)

Usage::

    python experiments/llm_coverage.py --quick     # smoke, minutes -> runs/llm_coverage_quick
    python experiments/llm_coverage.py measure     # warm start + p before any RL
    python experiments/llm_coverage.py predict     # the simulation's prediction at those p
    python experiments/llm_coverage.py train       # the LM runs (refuses without a prediction)
    python experiments/llm_coverage.py             # all three phases, in this order
    python experiments/compare.py                  # draws figures/compare_coverage.png

The task family (``experiments/coverage_study/family.py``): chained arithmetic mod 5 with ``n_steps``
steps, all ``+``/``-`` but one ``*``, the hard step; the warm start's misconceptions sit on
multiplication facts only, so the policy errs at the hard step wherever it is. A setting fixes
the hard step at position j: an early one makes the coverage p small, a late one large, with the
same wrong step.

Phases (each resumes where a kill left it; rerunning a finished phase reuses its files):

1. ``measure``: the family's warm start (cached, see ``srpo/warmstart.py``) and, for every
   setting, the coverage of the warm-started policy before any RL, both readings
   (``experiments/coverage_study/measure.py``), and its self-localizer's (beta, gamma)
   -> ``pre_rl.json``, ``pre_rl_chains.parquet``.
2. ``predict``: the simulation (``cpi``) at those p values: tuned-step learning curves and the
   phase map (``experiments/coverage_study/prediction.py``) -> ``prediction.json``,
   ``prediction_curves.parquet``, ``prediction.png``/``.pdf``.
3. ``train``: GRPO, RRPO, SRPO and oracle reset at every setting and seed, same rollouts per
   iteration for every method -> ``<hard step>/<method>-s<seed>/``, then ``metrics.parquet`` and
   ``resets.parquet`` (a ``hard_step`` column added) and ``summary.json``. It refuses to start
   without a prediction made from the same measurement.

The default size (``--out runs/llm_coverage``, no size flag) also copies ``pre_rl.json`` and the
prediction to the tracked ``figures/`` (``coverage_pre_rl.json``, ``coverage_prediction.*``);
``--quick`` and any other size write only under ``--out``. ``summary.json`` records the size
(``quick`` / ``default`` / ``custom``), which ``experiments/compare.py`` reads to decide whether
its figure may replace the published one.

Threads: ``--threads`` torch threads per run (default 1; the warm start always uses 1 so its
cache key, and therefore the model, is the same on every machine); ``--jobs N`` (default 2 where two
one-thread runs fit the cores) trains N runs at
once in worker processes (the numbers do not depend on it). A run's checkpoints belong to its
thread count: rerun with the same ``--threads`` to resume, or ``--fresh``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from experiments.cli_checks import out_dir_problem, whole_number_problem  # noqa: E402
from experiments.coverage_study.family import DEFAULT_FAMILY, QUICK_FAMILY, FamilyConfig  # noqa: E402

DEFAULT_OUT = Path("runs/llm_coverage")
FIGURES_DIR = REPO_ROOT / "figures"
METHODS = ("grpo", "rrpo", "srpo", "oracle")
PHASES = ("measure", "predict", "train", "all")


@dataclass(frozen=True)
class RunSize:
    """Sizes of one invocation.

    Attributes:
        name: ``quick`` / ``default`` (``custom`` once a size flag overrides a field).
        family: the task family and its warm start.
        seeds: seeds 0..seeds-1 per method and setting.
        steps, prompts_per_step, rollouts_per_prompt: the RL budget (the same for every method).
        lr: learning rate of every method.
        eval_size, eval_every: held-out greedy evaluation.
        n_model: problems for the teacher-forced step probabilities (pre-RL).
        n_sampled, n_per_problem: problems and chains each for the sampled pre-RL reading.
        prediction: size name of ``experiments.coverage_study.prediction.SIZES``.
    """

    name: str
    family: FamilyConfig
    seeds: int
    steps: int
    prompts_per_step: int
    rollouts_per_prompt: int
    lr: float
    eval_size: int
    eval_every: int
    n_model: int
    n_sampled: int
    n_per_problem: int
    prediction: str


QUICK = RunSize("quick", QUICK_FAMILY, seeds=1, steps=2, prompts_per_step=4,
                rollouts_per_prompt=8, lr=1e-4, eval_size=16, eval_every=1, n_model=32,
                n_sampled=8, n_per_problem=4, prediction="quick")
#: printed at the start of a --quick run: what its numbers can and cannot show
SMOKE_NOTE = ("smoke size (--quick): checks the pipeline end to end, nothing is learned at this "
              "size -- a 1-layer warm start of 120 steps solves no 4-step chain (greedy pass 0.0 "
              "is expected) and 2 RL steps do not move J (J 0.000 -> 0.000 is expected)")
DEFAULT = RunSize("default", DEFAULT_FAMILY, seeds=5, steps=16, prompts_per_step=8,
                  rollouts_per_prompt=8, lr=1e-4, eval_size=128, eval_every=4, n_model=512,
                  n_sampled=96, n_per_problem=4, prediction="default")


# ------------------------------------------------------------------------------------- helpers
def _jsonable(obj):
    """Estimates and other dataclasses -> dicts; NaN/inf -> None; numpy scalars -> Python."""
    import numpy as np

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2))
    tmp.replace(path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _say(msg: str) -> None:
    print(msg, flush=True)


def is_default_destination(args) -> bool:
    """Whether this invocation may write the tracked figures/: the default size at the default
    output directory, without --no-copy-figures."""
    return (args.size.name == "default" and not args.no_copy_figures
            and Path(args.out).resolve() == (REPO_ROOT / DEFAULT_OUT).resolve())


# ------------------------------------------------------------------------------------- phase 1
def run_measure(args) -> dict:
    """Warm start (cached) and the pre-RL coverage of every setting -> pre_rl.json."""
    import pandas as pd
    import torch

    from experiments.coverage_study.measure import measure_setting
    from srpo.warmstart import load_warm_start, warm_start

    out = Path(args.out)
    path = out / "pre_rl.json"
    size = args.size
    fam = size.family
    ws_config = fam.warmstart_config()
    if path.is_file():
        pre = json.loads(path.read_text())
        if pre.get("warmstart_key") == ws_config.key and pre.get("measure") == _measure_spec(size):
            _say(f"measure: reusing {path}")
            return pre
    torch.set_num_threads(args.threads)
    from srpo.warmstart import default_cache_dir

    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    where = cache / "warmstart" / ws_config.key
    if not (where / "warmstart.json").is_file():
        _say(f"measure: training the family's warm start ({ws_config.steps} steps, 1 thread); "
             f"cached in {where} (set CREDIT_RESETS_CACHE or --cache-dir to move it)")
    t0 = time.time()
    from srpo.progress import warm_start_progress

    model_dir = warm_start(ws_config, cache_dir=cache, verbose=args.verbose,
                           progress=warm_start_progress())
    model, tokenizer, info = load_warm_start(model_dir)
    _say(f"measure: warm start ready ({time.time() - t0:.0f}s): {info['eval']}")
    records, chains = [], []
    for j in fam.positions:
        t1 = time.time()
        rec, ch = measure_setting(model, tokenizer, fam.task(j), position=j,
                                  n_model=size.n_model, n_sampled=size.n_sampled,
                                  n_per_problem=size.n_per_problem, seed=0,
                                  max_thoughts=fam.n_steps + 2)
        records.append({"hard_step": j, **rec})
        chains.append(ch)
        sl = rec["self_localizer"]
        _say(f"measure: hard step {j}/{fam.n_steps}: p (state) {rec['p_state'].fmt(digits=3)}, "
             f"p_reach {rec['p_reach'].fmt(digits=3)}, p_mass {rec['p_mass'].fmt(digits=3)}, "
             f"self 1-beta {sl['precision'].fmt(digits=2)}, gamma {sl['recall'].fmt(digits=2)} "
             f"({time.time() - t1:.0f}s)")
    pre = {"family": fam.to_dict(), "warmstart_key": ws_config.key,
           "warmstart_eval": info["eval"], "measure": _measure_spec(size),
           "settings": records, "definitions": _DEFINITIONS}
    out.mkdir(parents=True, exist_ok=True)
    pd.concat(chains, ignore_index=True).to_parquet(out / "pre_rl_chains.parquet", index=False)
    _write_json(path, pre)
    return json.loads(path.read_text())


def _measure_spec(size: RunSize) -> dict:
    return {"n_model": size.n_model, "n_sampled": size.n_sampled,
            "n_per_problem": size.n_per_problem, "positions": list(size.family.positions)}


_DEFINITIONS = {
    "p_state": "state reading (docs/compare.md): sum min(f, n) / sum n over sampled failed "
               "chains; 95% bootstrap over chains",
    "p_state_model": "the same, computed from the policy's step probabilities q_k",
    "p_reach": "trajectory reading: P(an on-policy chain visits G_tau), G_tau = clean prefixes "
               "whose correct next step has advantage (1 - q_k) prod_{i>k} q_i >= tau",
    "p_mass": "trajectory reading: (1/H) sum_h d_h(G_tau)",
    "self_localizer": "the pre-RL policy localizing its own sampled failed chains: precision "
                      "1-beta, recall gamma, product, margin (1-beta) gamma - p_state",
}


# ------------------------------------------------------------------------------------- phase 2
def run_predict(args, pre: dict) -> dict:
    """The simulation at the measured p values -> prediction.json (+ figure)."""
    from experiments.comparison.coverage import prediction_figure
    from experiments.coverage_study.prediction import SIZES, predict

    out = Path(args.out)
    path = out / "prediction.json"
    pre_sha = _sha256(out / "pre_rl.json")
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("pre_rl_sha256") == pre_sha and old.get("size_name") == args.size.prediction:
            _say(f"predict: reusing {path}")
            return old
    lm_present = any((out / str(j)).is_dir() for j in args.size.family.positions)
    settings = [{"hard_step": s["hard_step"], "p": s["p_state"]["value"],
                 "beta": 1.0 - s["self_localizer"]["precision"]["value"],
                 "gamma": s["self_localizer"]["recall"]["value"]} for s in pre["settings"]]
    t0 = time.time()
    rec = predict(settings, SIZES[args.size.prediction], out, progress=_say)
    rec.update({
        "size_name": args.size.prediction, "pre_rl_sha256": pre_sha,
        "lm_runs_present_when_written": lm_present,
        "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": time.time() - t0,
        "note": "computed from the pre-RL measurement only, before any LM run of this output "
                "directory (lm_runs_present_when_written says whether one existed)",
    })
    _write_json(path, rec)
    rec = json.loads(path.read_text())
    prediction_figure(pre, rec, out)
    _say(f"predict: wrote {path} and prediction.png ({time.time() - t0:.0f}s)")
    return rec


# ------------------------------------------------------------------------------------- phase 3
def make_configs(args) -> list:
    from srpo.trainer import TrainConfig

    size, fam = args.size, args.size.family
    configs = []
    for seed in range(size.seeds):
        for j in fam.positions:
            for method in args.methods:
                configs.append(TrainConfig(
                    method=method, split="1x4", seed=seed, steps=size.steps,
                    prompts_per_step=size.prompts_per_step,
                    rollouts_per_prompt=size.rollouts_per_prompt, lr=size.lr,
                    task_steps=fam.n_steps, task_modulus=fam.modulus, task_ops=fam.easy_ops,
                    task_options=fam.task_options(j), warmstart=fam.warmstart_overrides(),
                    max_thoughts=fam.n_steps + 2, eval_size=size.eval_size,
                    eval_every=size.eval_every, num_threads=args.threads,
                    cache_dir=args.cache_dir,
                    out_dir=str(Path(args.out) / str(j) / f"{method}-s{seed}"),
                    resume=not args.fresh))
    return configs


def _finished(cfg) -> bool:
    """The run's outputs exist, belong to this configuration and reach its last step."""
    import pandas as pd

    d = Path(cfg.out_dir)
    info = d / "run_info.json"
    if not (info.is_file() and (d / "metrics.parquet").is_file()):
        return False
    try:
        if json.loads(info.read_text()).get("run_key") != cfg.run_key():
            return False
        return int(pd.read_parquet(d / "metrics.parquet")["iteration"].max()) >= cfg.steps
    except Exception:
        return False


def _train_one(cfg) -> str:
    """One RL run (in this process or a worker); returns its progress line."""
    from transformers.utils import logging as hf_logging

    from srpo.trainer import train

    hf_logging.disable_progress_bar()  # workers start clean (spawn): say it again here
    t1 = time.time()
    df = train(cfg)
    j = cfg.task_options["hard_steps"][0]
    return (f"hard step {j}, {cfg.method} seed {cfg.seed}: J {df.J.iloc[0]:.3f} -> "
            f"{df.J.iloc[-1]:.3f}, {int(df.generated_tokens.iloc[-1])} tokens "
            f"({time.time() - t1:.0f}s)")


def run_train(args, pre: dict, prediction: dict | None) -> dict:
    import pandas as pd

    out = Path(args.out)
    resetting = [m for m in args.methods if m != "grpo"]
    if resetting and (prediction is None or not (out / "prediction.json").is_file()):
        raise SystemExit(f"llm_coverage: error: no prediction in {out}; run "
                         f"`python experiments/llm_coverage.py predict --out {out}` first: the "
                         "prediction must be written before any reset method "
                         f"({', '.join(resetting)}) is trained (GRPO alone may run before)")
    if prediction is not None and prediction.get("pre_rl_sha256") != _sha256(out / "pre_rl.json"):
        raise SystemExit(f"llm_coverage: error: {out}/prediction.json was made from another "
                         "measurement than pre_rl.json; rerun the predict phase")
    configs = make_configs(args)
    t0 = time.time()
    todo = [c for c in configs if not (c.resume and _finished(c))]
    if len(todo) < len(configs):
        _say(f"train: reusing {len(configs) - len(todo)} finished runs")
    # the warm start is trained (or loaded) once here, not by several workers at once
    if todo:
        from srpo.progress import announce_warm_start, warm_start_progress
        from srpo.trainer import load_policy

        announce_warm_start(todo[0])
        load_policy(todo[0], progress=warm_start_progress())
    if args.jobs > 1 and len(todo) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: workers start clean (no torch state inherited from this process)
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_train_one, c): c for c in todo}
            for n, fut in enumerate(as_completed(futures), start=1):
                _say(f"train: [{n}/{len(todo)}] {fut.result()}")
    else:
        for n, cfg in enumerate(todo, start=1):
            _say(f"train: [{n}/{len(todo)}] {_train_one(cfg)}")
    frames, reset_frames = [], []
    for cfg in configs:
        j = cfg.task_options["hard_steps"][0]
        frames.append(pd.read_parquet(Path(cfg.out_dir) / "metrics.parquet").assign(hard_step=j))
        r = pd.read_parquet(Path(cfg.out_dir) / "resets.parquet")
        if len(r):
            reset_frames.append(r.assign(hard_step=j))
    metrics = pd.concat(frames, ignore_index=True)
    resets = pd.concat(reset_frames, ignore_index=True) if reset_frames else pd.DataFrame()
    metrics.to_parquet(out / "metrics.parquet", index=False)
    resets.to_parquet(out / "resets.parquet", index=False)
    size = args.size
    summary = {
        "size": size.name, "complete": True,
        "command": " ".join(["python", "experiments/llm_coverage.py", *args.argv]),
        "runs": {"positions": list(size.family.positions), "n_steps": size.family.n_steps,
                 "modulus": size.family.modulus, "methods": list(args.methods),
                 "seeds": size.seeds, "steps": size.steps,
                 "prompts_per_step": size.prompts_per_step,
                 "rollouts_per_prompt": size.rollouts_per_prompt, "lr": size.lr,
                 "eval_size": size.eval_size, "eval_every": size.eval_every,
                 "threads": args.threads, "jobs": args.jobs},
        "family": size.family.to_dict(),
        "prediction_sha256": (_sha256(out / "prediction.json")
                              if (out / "prediction.json").is_file() else None),
        "pre_rl_sha256": _sha256(out / "pre_rl.json"),
        "wall_time_s": time.time() - t0,
        "configs": [c.to_dict() for c in configs[: len(size.family.positions) * len(args.methods)]],
    }
    _write_json(out / "summary.json", summary)
    _say(f"train: wrote {out}/metrics.parquet, resets.parquet, summary.json "
         f"({time.time() - t0:.0f}s)")
    return summary


# ------------------------------------------------------------------------------------- CLI
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="llm_coverage", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", nargs="?", default="all", choices=PHASES,
                    help="measure, predict, train, or all (default) in that order")
    ap.add_argument("--quick", action="store_true", help="smoke size (a few minutes)")
    ap.add_argument("--out", type=Path, default=None, metavar="DIR",
                    help=f"output directory (default {DEFAULT_OUT}; {DEFAULT_OUT}_quick with "
                         f"--quick, {DEFAULT_OUT}_custom with another size: only the default run "
                         f"writes {DEFAULT_OUT})")
    ap.add_argument("--seeds", type=int, default=None, metavar="N",
                    help="seeds 0..N-1 per method and setting (default 5; quick 1)")
    ap.add_argument("--steps", type=int, default=None, metavar="N", help="RL iterations per run")
    ap.add_argument("--prompts-per-step", type=int, default=None, metavar="N",
                    help="prompts per RL iteration")
    ap.add_argument("--lr", type=float, default=None, help="learning rate of every method")
    ap.add_argument("--positions", type=int, nargs="+", default=None, metavar="J",
                    help="hard-step positions of the settings (default 1 3 6 10)")
    ap.add_argument("--method", dest="methods", nargs="+", default=list(METHODS),
                    choices=METHODS, help="methods to train (default: all four)")
    ap.add_argument("--threads", type=int, default=1, metavar="N",
                    help="torch CPU threads per run (default 1)")
    ap.add_argument("--jobs", type=int, default=None, metavar="N",
                    help="RL runs in parallel worker processes (default: 2 when --threads x 2 "
                         "fits the cores, else 1; each run's numbers do not depend on it)")
    ap.add_argument("--cache-dir", default=None, metavar="DIR",
                    help="warm-start cache root (default $CREDIT_RESETS_CACHE or "
                         "~/.cache/credit-resets)")
    ap.add_argument("--fresh", action="store_true", help="ignore existing RL checkpoints")
    ap.add_argument("--no-copy-figures", action="store_true",
                    help="never copy to figures/ (the default run copies pre_rl.json and the "
                         "prediction there)")
    ap.add_argument("--verbose", action="store_true", help="print warm-start progress")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.jobs is None:
        args.jobs = max(1, min(2, (os.cpu_count() or 1) // max(1, args.threads)))
    for name in ("seeds", "steps", "threads", "jobs", "prompts_per_step"):
        if problem := whole_number_problem(f"--{name.replace('_', '-')}", getattr(args, name), 1):
            ap.error(problem)
    if args.lr is not None and not args.lr > 0:
        ap.error(f"--lr must be > 0; got {args.lr}")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        ap.error(f"--out {str(args.out)!r} is a file; expected a directory")
    base = QUICK if args.quick else DEFAULT
    over = {k: getattr(args, k) for k in ("seeds", "steps", "prompts_per_step", "lr")
            if getattr(args, k) is not None}
    if args.positions is not None:
        try:
            over["family"] = dataclasses.replace(base.family, positions=tuple(args.positions))
        except ValueError as err:
            ap.error(f"--positions: {err}")
    size = dataclasses.replace(base, **over)
    if any(getattr(size, k) != getattr(base, k) for k in over) or \
            list(args.methods) != list(METHODS):
        size = dataclasses.replace(size, name="custom")
    args.size = size
    if args.out is None:
        args.out = DEFAULT_OUT if size.name == "default" else Path(f"{DEFAULT_OUT}_{size.name}")
    elif size.name != "default" and args.out.resolve() in (DEFAULT_OUT.resolve(),
                                                           (REPO_ROOT / DEFAULT_OUT).resolve()):
        ap.error(f"{DEFAULT_OUT} holds the default run; a {size.name} run writes elsewhere "
                 "(omit --out, or pass another directory)")
    # last (no folder for a bad command), before any model loads
    if problem := out_dir_problem(args.out):
        ap.error(problem)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-save weight-writing bars; the runs' lines matter
    if args.size.name == "quick":
        _say(SMOKE_NOTE)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pre = prediction = None
    if args.phase in ("measure", "predict", "train", "all"):
        pre = run_measure(args)
    if args.phase in ("predict", "all"):
        prediction = run_predict(args, pre)
    elif args.phase == "train" and (out / "prediction.json").is_file():
        prediction = json.loads((out / "prediction.json").read_text())
    publish = is_default_destination(args)
    if publish and args.phase in ("measure", "predict", "all"):
        FIGURES_DIR.mkdir(exist_ok=True)
        shutil.copyfile(out / "pre_rl.json", FIGURES_DIR / "coverage_pre_rl.json")
        if (out / "prediction.json").is_file():
            shutil.copyfile(out / "prediction.json", FIGURES_DIR / "coverage_prediction.json")
            for ext in ("png", "pdf"):
                if (out / f"prediction.{ext}").is_file():
                    shutil.copyfile(out / f"prediction.{ext}",
                                    FIGURES_DIR / f"coverage_prediction.{ext}")
        _say(f"copied pre_rl.json and the prediction to {FIGURES_DIR}")
    if args.phase in ("train", "all"):
        run_train(args, pre, prediction)
        _say("next: python experiments/compare.py"
             + ("" if publish else f" --coverage {out} --only coverage --out {out}/compare"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
