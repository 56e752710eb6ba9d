"""Which runs a comparison was drawn from, and whether they are the full default (publishable) runs.

``experiments/compare.py`` copies its figures and table into the tracked ``figures/`` only when
every input it draws from is a *full default run*; anything else (a ``--quick`` smoke run, fewer
seeds or steps, another task, a partial sweep) is written under ``--out`` only. The decision is
made from what each run recorded about itself, never from its directory name:

* simulation (``experiments/cpi_sweep.py``): ``sweep.json`` -- ``size == "default"``, complete,
  and no override of the p grid, the seed count or the base seed;
* language model (``experiments/llm_srpo.py``): ``summary.json`` -- the recorded command has no
  ``--quick``, and the recorded configurations equal those the script builds with no arguments
  (fields that only place or speed up a run -- ``out_dir``, ``resume``, ``num_threads``,
  ``device``, ``cache_dir``, ``checkpoint_every`` -- aside), with every default method and seed
  present in ``metrics.parquet`` and trained to the last step;
* coverage experiment (``experiments/llm_coverage.py``): ``summary.json`` -- ``size ==
  "default"`` and ``complete``.

Each input also gets a one-line description (configuration, seeds, steps) printed in every
figure's footer and at the top of ``comparison.md``.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

__all__ = ["RunProvenance", "sim_provenance", "llm_provenance", "coverage_provenance",
           "footer_text", "all_default"]

#: fields of a TrainConfig that only place or speed up a run; they never make it non-default
LLM_NEUTRAL_FIELDS = ("out_dir", "resume", "num_threads", "device", "cache_dir",
                      "checkpoint_every")


@dataclass
class RunProvenance:
    """What one input run was.

    Attributes:
        side: ``simulation``, ``language model`` or ``coverage``.
        directory: the directory read.
        kind: ``default`` (the full default run), ``quick`` (a smoke run), ``custom`` (any other
            size or setting) or ``unknown`` (the run recorded nothing to decide from).
        description: one line: configuration, seeds, steps.
        reasons: why the run is not the full default one (empty when it is).
    """

    side: str
    directory: str
    kind: str
    description: str
    reasons: list[str] = field(default_factory=list)

    @property
    def is_default(self) -> bool:
        return self.kind == "default"

    def line(self) -> str:
        tag = "full default run" if self.is_default else f"{self.kind.upper()} run, not published"
        return f"{self.side}: {self.directory} [{tag}] {self.description}"


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ------------------------------------------------------------------------------------ simulation
def sim_provenance(directory: str | Path) -> RunProvenance:
    """Provenance of a ``cpi_sweep.py`` output directory from its ``sweep.json``."""
    d = Path(directory)
    meta = _read_json(d / "sweep.json")
    if meta is None:
        return RunProvenance("simulation", str(d), "unknown",
                             "no readable sweep.json: size and seeds unknown",
                             ["sweep.json missing or unreadable"])
    size = str(meta.get("size", "?"))
    reasons = []
    if size != "default":
        reasons.append(f"sweep size {size!r} (published: 'default')")
    if meta.get("complete") is False:
        reasons.append("sweep incomplete")
    for key, neutral in (("p_values", (None,)), ("seeds", (None,)), ("base_seed", (None, 0)),
                         ("max_cells", (None,))):
        if key in meta and meta[key] not in neutral:
            reasons.append(f"{key} = {meta[key]!r} (default {neutral[0]!r})")
    only = meta.get("only")
    n_seeds = meta.get("n_seeds", "?")
    desc = (f"cpi_sweep size {size}, {n_seeds} seeds per cell, "
            f"{meta.get('cells_total', '?')} cells"
            + (f", experiments {', '.join(only)}" if isinstance(only, list) and len(only) < 4
               else ""))
    kind = "default" if not reasons else ("quick" if size in ("quick", "tiny") else "custom")
    return RunProvenance("simulation", str(d), kind, desc, reasons)


# -------------------------------------------------------------------------------- language model
def _default_llm_configs() -> list[dict] | None:
    """The configurations ``experiments/llm_srpo.py`` builds with no arguments (None if the
    LLM side cannot be imported here)."""
    import tempfile

    try:
        from experiments.llm_srpo import make_configs, parse_args
    except Exception:  # torch or transformers missing: decide from the command alone
        return None
    # parse with an empty --out: parse_args checks the checkpoints under --out, and the default
    # runs/llm may hold another run's (out_dir is a neutral field, so the configs compare equal)
    with tempfile.TemporaryDirectory() as empty:
        return [c.to_dict() for c in make_configs(parse_args(["--out", empty]))]


def _config_diff(recorded: dict, default: dict) -> list[str]:
    diffs = []
    for key, value in recorded.items():
        if key in LLM_NEUTRAL_FIELDS or key not in default:
            continue
        ref = default[key]
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(ref, tuple):
            ref = list(ref)
        if value != ref:
            diffs.append(f"{key} = {value!r} (default {ref!r})")
    return diffs


def llm_provenance(directory: str | Path, metrics: pd.DataFrame | None = None) -> RunProvenance:
    """Provenance of an ``llm_srpo.py`` output directory from ``summary.json`` and the metrics."""
    d = Path(directory)
    summary = _read_json(d / "summary.json")
    if metrics is None and (d / "metrics.parquet").is_file():
        try:
            metrics = pd.read_parquet(d / "metrics.parquet")
        except Exception:
            metrics = None
    seeds = sorted(set(int(s) for s in metrics["seed"])) if metrics is not None else []
    methods = list(dict.fromkeys(metrics["method"])) if metrics is not None else []
    steps = int(metrics["iteration"].max()) if metrics is not None and len(metrics) else None
    if summary is None:
        return RunProvenance("language model", str(d), "unknown",
                             f"no readable summary.json; {len(seeds)} seeds, {steps} steps",
                             ["summary.json missing or unreadable"])
    command = str(summary.get("command", ""))
    configs = summary.get("configs") or []
    c0 = configs[0] if configs else {}
    desc = (f"{command or 'llm_srpo.py'}: methods {'/'.join(methods) or '?'}, "
            f"{len(seeds)} seeds, {steps} steps x {c0.get('prompts_per_step', '?')} prompts x "
            f"{c0.get('rollouts_per_prompt', '?')} rollouts, {c0.get('task_steps', '?')}-step "
            f"task, eval {c0.get('eval_size', '?')} problems")
    reasons = []
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = command.split()
    if "--quick" in tokens:
        reasons.append("a --quick smoke run")
    defaults = _default_llm_configs()
    if defaults is None:
        allowed = {"--threads", "--out", "--fresh", "--no-copy-figures", "--device"}
        flags = [t.split("=")[0] for t in tokens if t.startswith("--")]
        extra = [f for f in flags if f not in allowed and f != "--quick"]
        if extra:
            reasons.append(f"non-default flags {', '.join(extra)}")
    else:
        by_method = {}
        for c in defaults:
            by_method.setdefault(c["method"], c)
        default_seeds = sorted({c["seed"] for c in defaults})
        for c in configs:
            ref = by_method.get(c.get("method"))
            if ref is None:
                reasons.append(f"method {c.get('method')!r} is not a default method")
                continue
            reasons += [f"{c.get('method')}: {x}" for x in _config_diff(c, ref)]
        missing_m = [m for m in by_method if m not in methods]
        if missing_m:
            reasons.append(f"methods {', '.join(missing_m)} absent")
        if metrics is not None:
            missing_s = [s for s in default_seeds if s not in seeds]
            if missing_s:
                reasons.append(f"{len(seeds)} seeds (default {len(default_seeds)})")
            ref_steps = next(iter(by_method.values()))["steps"]
            if steps is not None and steps < ref_steps:
                reasons.append(f"{steps} steps (default {ref_steps})")
    reasons = list(dict.fromkeys(reasons))
    kind = "default" if not reasons else ("quick" if "--quick" in tokens else "custom")
    return RunProvenance("language model", str(d), kind, desc, reasons)


# ------------------------------------------------------------------------------ coverage runs
def coverage_provenance(directory: str | Path) -> RunProvenance:
    """Provenance of an ``llm_coverage.py`` output directory from its ``summary.json``."""
    d = Path(directory)
    summary = _read_json(d / "summary.json")
    if summary is None:
        return RunProvenance("coverage", str(d), "unknown", "no readable summary.json",
                             ["summary.json missing or unreadable"])
    size = str(summary.get("size", "?"))
    reasons = [] if size == "default" else [f"size {size!r} (published: 'default')"]
    if not summary.get("complete", False):
        reasons.append("runs incomplete")
    run = summary.get("runs", {})
    desc = (f"{summary.get('command', 'llm_coverage.py')}: hard steps "
            f"{run.get('positions', '?')} of {run.get('n_steps', '?')}, methods "
            f"{'/'.join(run.get('methods', [])) or '?'}, {run.get('seeds', '?')} seeds, "
            f"{run.get('steps', '?')} steps x {run.get('prompts_per_step', '?')} prompts x "
            f"{run.get('rollouts_per_prompt', '?')} rollouts")
    kind = "default" if not reasons else ("quick" if size == "quick" else "custom")
    return RunProvenance("coverage", str(d), kind, desc, reasons)


def all_default(provenances) -> bool:
    return all(p.is_default for p in provenances)


def footer_text(provenances) -> str:
    """Footer of every comparison figure: one line per input run."""
    return "drawn from: " + "\n".join(p.line() for p in provenances)
