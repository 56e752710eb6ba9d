"""One algorithm on three rungs: CPI, SRPO on a tabular policy, SRPO on the language model (issue 19).

Usage::

    python experiments/llm_ladder.py --quick      # CI smoke, minutes -> runs/ladder_quick
    python experiments/llm_ladder.py measure      # LM warm start + p before any RL
    python experiments/llm_ladder.py predict      # the CPI and tabular rungs (the prediction)
    python experiments/llm_ladder.py train        # the LM runs (refuses without a prediction)
    python experiments/llm_ladder.py summary      # speed-ups with CIs -> summary.json
    python experiments/llm_ladder.py              # all four, in this order
    python experiments/compare.py --only ladder   # figures/ladder.png / .pdf

The family (``experiments/ladder/family.py``, docs/ladder.md): 6-step chains, a hard step at
position 2 on a share ``hard_fraction`` of the problems; p_reach moves with the share while the
hard step's per-visit difficulty stays fixed. Phases (each resumes where a kill left it: every
cell and LM run is written when it finishes and skipped when its file exists):

1. ``measure``: p_reach / p_mass / the state reading of the tabular rung's initial policy at
   every setting (exact) -> ``pre_rl.json``; with the phase ``measure`` alone also the LM's.
2. ``predict``: the CPI rung at the tabular p_reach values and the tabular rung at every setting
   (GRPO, RRPO, SRPO with the set (beta, gamma) of ``LadderSize``, oracle; plus SGD against Adam
   at the lowest p) -> ``cells/``, ``predictions.json``; the default size copies it to
   ``figures/ladder_predictions.json`` (commit it before the LM runs). No LM is needed.
3. ``train``: the family's warm start (cached) and the LM's p_reach / p_mass / state reading /
   self-localizer before any RL (``experiments.coverage_study.measure.measure_setting``) ->
   ``lm_pre_rl.json``; then the LM runs (the four methods, every setting and seed; SGD against
   Adam at the lowest p for GRPO and the oracle), equal rollouts per iteration -> ``lm/``.
4. ``summary``: speed-ups over GRPO with 95% bootstrap intervals per rollout and per generated
   token on every rung, (1 - beta, gamma), the optimiser test -> ``summary.json``; the default
   size copies it to ``figures/ladder_summary.json``.

``--lm-settings N`` runs the LM at the N lowest settings only (the rest can follow: rerun
without it). Wall times are printed; the default's measured time is in docs/ladder.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from experiments.ladder.runs import METHODS, SIZES, cached_cell  # noqa: E402

DEFAULT_OUT = Path("runs/ladder")
FIGURES = REPO_ROOT / "figures"
PHASES = ("measure", "predict", "train", "summary", "all")


def _say(msg: str) -> None:
    print(f"[llm_ladder {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _jsonable(obj):
    if hasattr(obj, "value") and hasattr(obj, "lo"):
        from experiments.ladder.summary import estimate_dict

        return estimate_dict(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item"):
        return _jsonable(obj.item())
    return obj


def _write_json(path: Path, data) -> None:
    """``experiments.artifacts.stable_json`` (sorted keys, rounded floats), atomically."""
    from experiments.artifacts import stable_json

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(stable_json(_jsonable(data)))
    tmp.replace(path)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------ measure
def run_measure_tabular(args) -> dict:
    """p_reach, p_mass and the state reading of the tabular rung's initial policy at every
    setting (exact, cheap) -> ``pre_rl.json`` (the prediction's input)."""
    from experiments.ladder.family import tabular_p_reach

    out, size = Path(args.out), args.size
    fam = size.family
    path = out / "pre_rl.json"
    spec = {"family": fam.to_dict()}
    if path.is_file():
        pre = json.loads(path.read_text())
        if pre.get("spec") == _jsonable(spec):
            return pre
    settings = []
    for f in fam.hard_fractions:
        tab = tabular_p_reach(fam.tabular_env(f))
        settings.append({"hard_fraction": f, "tabular": tab})
        _say(
            f"measure: hard_fraction {f:g}: tabular p_reach {tab['p_reach'].fmt(digits=3)}, "
            f"state reading {tab['p_state_model'].fmt(digits=2)}"
        )
    _write_json(path, {"spec": spec, "settings": settings})
    return json.loads(path.read_text())


def run_measure_lm(args) -> dict:
    """The LM's warm start (cached) and its p_reach, p_mass, state reading and self-localizer
    (1 - beta, gamma) before any RL at every setting -> ``lm_pre_rl.json``."""
    import torch

    from experiments.coverage_study.measure import measure_setting
    from srpo.warmstart import load_warm_start, warm_start

    out, size = Path(args.out), args.size
    fam = size.family
    path = out / "lm_pre_rl.json"
    spec = {
        "family": fam.to_dict(),
        "n_model": size.n_model,
        "n_sampled": size.n_sampled,
        "n_per_problem": size.n_per_problem,
    }
    if path.is_file():
        pre = json.loads(path.read_text())
        if pre.get("spec") == _jsonable(spec):
            _say(f"measure: reusing {path}")
            return pre
    torch.set_num_threads(args.threads)
    t0 = time.time()
    model, tokenizer, info = load_warm_start(
        warm_start(fam.warmstart_config(), cache_dir=args.cache_dir)
    )
    _say(f"measure: LM warm start ready ({time.time() - t0:.0f}s): {info['eval']}")
    settings = []
    for f in fam.hard_fractions:
        rec, _chains = measure_setting(
            model,
            tokenizer,
            fam.task(f),
            position=fam.hard_step,
            n_model=size.n_model,
            n_sampled=size.n_sampled,
            n_per_problem=size.n_per_problem,
            seed=0,
            max_thoughts=fam.n_steps + 2,
            n_boot=size.n_boot,
        )
        settings.append({"hard_fraction": f, "lm": rec})
        sl = rec["self_localizer"]
        _say(
            f"measure: hard_fraction {f:g}: LM p_reach {rec['p_reach'].fmt(digits=3)}, "
            f"state reading {rec['p_state'].fmt(digits=2)}, self 1-beta "
            f"{sl['precision'].fmt(digits=2)}, gamma {sl['recall'].fmt(digits=2)}"
        )
    pre = {
        "spec": spec,
        "warmstart_key": fam.warmstart_config().key,
        "warmstart_eval": info["eval"],
        "settings": settings,
        "wall_time_s": time.time() - t0,
    }
    _write_json(path, pre)
    return json.loads(path.read_text())


def _localizer_of(size) -> tuple[float, float]:
    """(beta, gamma) of the tabular and CPI SRPO: ``LadderSize.srpo_beta`` / ``srpo_gamma``."""
    return size.srpo_beta, size.srpo_gamma


# ------------------------------------------------------------------------------------ predict
def _cpi_curves(args, pre: dict):
    import pandas as pd

    from experiments.ladder.runs import cpi_cell

    size, out = args.size, Path(args.out)
    beta, gamma = _localizer_of(args.size)
    frames = []
    for s in pre["settings"]:
        p = max(float(s["tabular"]["p_reach"]["value"] or 0.0), 1e-3)
        for seed in range(size.cpi_seeds):
            tag = f"p{p:.4g}-b{beta:.3g}-g{gamma:.3g}-s{seed}"  # a new measurement: new cells
            path = out / "cells" / "cpi" / f"{tag}.parquet"
            frames.append(
                cached_cell(
                    path, lambda p=p, seed=seed: cpi_cell(p, beta, gamma, seed, size)
                ).assign(hard_fraction=s["hard_fraction"])
            )
        _say(f"predict: CPI at p {p:.3g} (hard_fraction {s['hard_fraction']:g}) done")
    return pd.concat(frames, ignore_index=True)


def _tabular_curves(args, pre: dict, optimizer: str, fractions):
    import pandas as pd

    from experiments.ladder.runs import tabular_cell

    size, out = args.size, Path(args.out)
    beta, gamma = _localizer_of(args.size)
    methods = METHODS if optimizer == "adamw" else ("grpo", "oracle")
    frames = []
    for f in fractions:
        t0 = time.time()
        for seed in range(size.seeds):
            for m in methods:
                loc = f"-b{beta:.3g}-g{gamma:.3g}" if m == "srpo" else ""
                path = out / "cells" / "tabular" / f"f{f:g}-{m}{loc}-{optimizer}-s{seed}.parquet"
                frames.append(
                    cached_cell(
                        path,
                        lambda f=f, m=m, seed=seed: tabular_cell(
                            f, m, seed, optimizer, beta, gamma, size
                        ),
                    )
                )
        _say(
            f"predict: tabular ({optimizer}) at hard_fraction {f:g} done ({time.time() - t0:.0f}s)"
        )
    return pd.concat(frames, ignore_index=True)


def run_predict(args, pre: dict) -> dict:
    from experiments.ladder.summary import speedup_table

    size, out = args.size, Path(args.out)
    fam = size.family
    low = min(fam.hard_fractions)
    cpi = _cpi_curves(args, pre)
    tab = _tabular_curves(args, pre, "adamw", fam.hard_fractions)
    sgd = _tabular_curves(args, pre, "sgd", (low,))
    beta, gamma = _localizer_of(args.size)
    pred = {
        "size": size.name,
        "pre_rl_sha256": _sha(out / "pre_rl.json"),
        "localizer": {"beta": beta, "gamma": gamma, "one_minus_beta": 1.0 - beta},
        "p_reach": {f"{s['hard_fraction']:g}": s["tabular"]["p_reach"] for s in pre["settings"]},
        "cpi": speedup_table(cpi, "hard_fraction", n_boot=size.n_boot),
        "tabular": speedup_table(tab, "hard_fraction", n_boot=size.n_boot),
        "tabular_sgd": speedup_table(sgd, "hard_fraction", methods=("oracle",), n_boot=size.n_boot),
        "size_spec": size.to_dict(),
    }
    _write_json(out / "predictions.json", pred)
    if size.name == "default" and Path(args.out) == DEFAULT_OUT:
        shutil.copy(out / "predictions.json", FIGURES / "ladder_predictions.json")
        _say("predict: copied to figures/ladder_predictions.json -- commit it before `train`")
    return json.loads((out / "predictions.json").read_text())


# -------------------------------------------------------------------------------------- train
def _finished(cfg) -> bool:
    import pandas as pd

    d = Path(cfg.out_dir)
    try:
        info = json.loads((d / "run_info.json").read_text())
        last = int(pd.read_parquet(d / "metrics.parquet")["iteration"].max())
    except Exception:
        return False
    return info.get("run_key") == cfg.run_key() and last >= cfg.steps


def _lm_all_configs(args):
    """Every LM run, in the order they are trained: the lowest and the highest setting first,
    then the SGD runs at the lowest, then the settings between (so that a run cut short by a
    deadline has the two ends and the optimiser test; it resumes where it stopped)."""
    from experiments.ladder.runs import lm_configs

    size, out = args.size, Path(args.out)
    fr = sorted(size.family.hard_fractions)[: args.lm_settings or None]
    kw = {"threads": args.threads, "cache_dir": args.cache_dir}
    ends = [fr[0]] + ([fr[-1]] if len(fr) > 1 else [])
    return (
        lm_configs(size, out, fractions=ends, **kw)
        + lm_configs(size, out, methods=("grpo", "oracle"), fractions=fr[:1], optimizer="sgd", **kw)
        + lm_configs(size, out, fractions=fr[1:-1], **kw)
    )


def run_train(args) -> None:
    from srpo.trainer import train

    out = Path(args.out)
    if not (out / "predictions.json").is_file():
        raise SystemExit(
            f"llm_ladder: error: no prediction in {out}; run `python "
            f"experiments/llm_ladder.py predict --out {out}` first (the prediction "
            "must exist before any LM run)"
        )
    run_measure_lm(args)  # the LM's p before any RL (its warm start is trained here if needed)
    configs = _lm_all_configs(args)
    index, count = args.shard
    todo = [c for i, c in enumerate(configs) if i % count == index and not _finished(c)]
    _say(f"train: {len(configs) - len(todo)} of {len(configs)} LM runs already finished")
    t0 = time.time()
    for n, cfg in enumerate(todo, start=1):
        t1 = time.time()
        df = train(cfg)
        _say(
            f"train: [{n}/{len(todo)}] {cfg.out_dir}: J {df.J.iloc[0]:.3f} -> "
            f"{df.J.dropna().iloc[-1]:.3f} ({time.time() - t1:.0f}s; {time.time() - t0:.0f}s "
            "in all)"
        )


# ------------------------------------------------------------------------------------ summary
def _lm_curves(args):
    import pandas as pd

    frames, resets = [], []
    for cfg in _lm_all_configs(args):
        if not _finished(cfg):
            continue
        d = Path(cfg.out_dir)
        m = pd.read_parquet(d / "metrics.parquet").dropna(subset=["J"])
        f = float(cfg.task_options["hard_fraction"])
        frames.append(
            pd.DataFrame(
                {
                    "method": cfg.method,
                    "seed": cfg.seed,
                    "optimizer": cfg.optimizer,
                    "hard_fraction": f,
                    "iteration": m["iteration"],
                    "score": m["J"],
                    "rollouts": m["rollouts"],
                    "generated_tokens": m["generated_tokens"],
                }
            )
        )
        if (d / "resets.parquet").is_file() and cfg.method == "srpo":
            r = pd.read_parquet(d / "resets.parquet")
            if len(r):
                resets.append(r)
    lm = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return lm, (pd.concat(resets, ignore_index=True) if resets else pd.DataFrame())


def _complete(records: list, fractions, methods) -> list:
    """``records`` plus a null record for every (setting, method) they lack."""
    nan = {"value": None, "lo": None, "hi": None, "n": None}
    have = {(r["hard_fraction"], r["method"]) for r in records}
    out = list(records)
    for f in fractions:
        for m in methods:
            if (float(f), m) not in have:
                rec = {"hard_fraction": float(f), "method": m, "final": nan}
                if m != "grpo":
                    rec.update(per_rollout=nan, per_token=nan)
                out.append(rec)
    return sorted(out, key=lambda r: (r["hard_fraction"], r["method"]))


def run_summary(args, pre: dict, pred: dict) -> dict:
    from experiments.comparison.stats import selector_quality
    from experiments.ladder.summary import speedup_table

    size, out = args.size, Path(args.out)
    lm, resets = _lm_curves(args)
    n_expected = len(_lm_all_configs(args))
    summary = {
        "size": size.name,
        "predictions_sha256": _sha(out / "predictions.json"),
        "predictions": pred,
        "lm_runs": {
            "finished": int(lm.groupby(["method", "seed", "optimizer", "hard_fraction"]).ngroups)
            if len(lm)
            else 0,
            "expected": n_expected,
        },
    }
    low = min(size.family.hard_fractions)
    adam = lm[lm["optimizer"] == "adamw"] if len(lm) else lm
    sgd = lm[(lm["optimizer"] == "sgd") & (lm["hard_fraction"] == low)] if len(lm) else lm
    # every (setting, method) has a record: null estimates where no LM run has finished
    summary["lm"] = _complete(
        speedup_table(adam, "hard_fraction", n_boot=size.n_boot) if len(adam) else [],
        size.family.hard_fractions,
        METHODS,
    )
    summary["lm_sgd"] = _complete(
        speedup_table(sgd, "hard_fraction", methods=("oracle",), n_boot=size.n_boot)
        if len(sgd)
        else [],
        (low,),
        ("grpo", "oracle"),
    )
    if len(resets):
        from experiments.comparison.schema import map_llm_resets

        q = selector_quality(map_llm_resets(resets), "self", n_boot=size.n_boot)
        summary["lm_self_localizer"] = {
            "one_minus_beta": q.precision,
            "gamma": q.recall,
            "product": q.product,
            "n_parents": q.n_parents,
        }
    lm_pre = {}
    if (out / "lm_pre_rl.json").is_file():
        lm_pre = {
            f"{s['hard_fraction']:g}": s["lm"]
            for s in json.loads((out / "lm_pre_rl.json").read_text())["settings"]
        }
    nan = {"value": None, "lo": None, "hi": None, "n": None}
    summary["lm_self_localizer_pre_rl"] = {
        f"{f:g}": {
            "one_minus_beta": lm_pre[f"{f:g}"]["self_localizer"]["precision"],
            "gamma": lm_pre[f"{f:g}"]["self_localizer"]["recall"],
        }
        if f"{f:g}" in lm_pre
        else {"one_minus_beta": nan, "gamma": nan}
        for f in size.family.hard_fractions
    }
    summary.setdefault(
        "lm_self_localizer", {"one_minus_beta": nan, "gamma": nan, "product": nan, "n_parents": 0}
    )
    summary["pre_rl"] = {}
    for s in pre["settings"]:
        key = f"{s['hard_fraction']:g}"
        lm_s = lm_pre.get(key, {})
        summary["pre_rl"][key] = {
            "lm_p_reach": lm_s.get("p_reach", nan),
            "lm_p_mass": lm_s.get("p_mass", nan),
            "lm_p_state": lm_s.get("p_state", nan),
            "tabular_p_reach": s["tabular"]["p_reach"],
            "tabular_p_mass": s["tabular"]["p_mass"],
            "tabular_p_state": s["tabular"]["p_state_model"],
        }
    _write_json(out / "summary.json", summary)
    if size.name == "default" and Path(args.out) == DEFAULT_OUT:
        shutil.copy(out / "summary.json", FIGURES / "ladder_summary.json")
        _say("summary: copied to figures/ladder_summary.json")
    return summary


# ---------------------------------------------------------------------------------------- CLI
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="llm_ladder",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("phase", nargs="?", default="all", choices=PHASES)
    ap.add_argument("--quick", action="store_true", help="smoke size (a few minutes; CI)")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"output directory (default {DEFAULT_OUT}; {DEFAULT_OUT}_quick with --quick)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument(
        "--lm-settings",
        type=int,
        default=0,
        metavar="N",
        help="LM runs at the N lowest settings only (default 0: all)",
    )
    ap.add_argument("--cache-dir", default=None, help="warm-start cache root")
    ap.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="train: this process runs LM runs I, I+N, I+2N, ... (default 0/1: "
        "all); run `measure` first so shards do not train the warm start twice",
    )
    args = ap.parse_args(argv)
    try:
        index, count = (int(x) for x in args.shard.split("/"))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        ap.error(f"--shard must be I/N with 0 <= I < N; got {args.shard!r}")
    args.shard = (index, count)
    if args.threads < 1 or args.lm_settings < 0:
        ap.error(
            f"--threads must be >= 1 and --lm-settings >= 0; got {args.threads}, {args.lm_settings}"
        )
    args.size = SIZES["quick" if args.quick else "default"]
    if args.out is None:
        args.out = Path(f"{DEFAULT_OUT}_quick") if args.quick else DEFAULT_OUT
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    pre = run_measure_tabular(args)
    if args.phase == "measure":
        run_measure_lm(args)
        return 0
    pred_path = Path(args.out) / "predictions.json"
    if args.phase in ("predict", "all") or not pred_path.is_file():
        if args.phase in ("train", "summary"):
            return run_train(args) or 1  # refuses with a clear message
        pred = run_predict(args, pre)
    else:
        pred = json.loads(pred_path.read_text())
    if args.phase in ("train", "all"):
        run_train(args)
    if args.phase in ("summary", "all"):
        run_summary(args, pre, pred)
    _say(f"done in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
