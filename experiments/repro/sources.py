"""The summary files the documents are rendered from, and how a key names a value in them.

A *source* is a committed file under the repository, registered by name in :data:`SOURCES`
(a new experiment adds one line). JSON and TOML are read. A *key* is a path into the file:

* ``name`` -- a field of a mapping (letters, digits, ``_``, ``-``);
* ``.name`` -- a nested field;
* ``[member]`` -- a field of a mapping whose name has other characters (``[recover=0.1]``,
  ``[coverage/p/random]``), the sweep's ``key[member]`` convention;
* ``[3]`` -- an element of a list by position;
* ``[field=value,...]`` -- the one element of a list of mappings whose fields have these
  values (``settings[hard_step=3]``); values compare as text, so ``3`` matches ``3`` and ``3.0``
  does not.

So ``cpi:direct_sample_complexity_ratio_slope[coverage]`` is the coverage member of that summary
key, ``coverage_pre_rl:settings[hard_step=3].p_reach`` the pre-RL p_reach at hard step 3. A key
that does not resolve raises :class:`KeyMissing` naming the part that failed and what was there.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

#: source name -> file (relative to the repository root). One line per summary file.
SOURCES: dict[str, str] = {
    # the theory sweep (experiments/cpi_sweep.py, default run; copy of runs/cpi_sweep/summary.json)
    "cpi": "figures/cpi_sweep_summary.json",
    # the LM runs (experiments/llm_srpo.py, default run; copy of runs/llm/summary.json)
    "llm": "figures/llm_summary.json",
    # simulation vs LM table (experiments/compare.py; copy of runs/compare/comparison.json)
    "comparison": "figures/comparison.json",
    # the prefix-mask ablation (P9): `llm_srpo.py --method srpo --no-mask --out runs/llm_nomask`,
    # then copy its runs/llm_nomask/summary.json here (a non-default run never writes figures/)
    "llm_nomask": "figures/llm_nomask_summary.json",
    # the coverage experiment (experiments/llm_coverage.py measure / predict, compare.py)
    "coverage_pre_rl": "figures/coverage_pre_rl.json",
    "coverage_prediction": "figures/coverage_prediction.json",
    # the same prediction step rerun on the LM rerun's pre-RL measurement (not the one judged)
    "coverage_prediction_rerun": "figures/coverage_prediction_rerun.json",
    "coverage": "figures/compare_coverage.json",
    # the ladder (experiments/llm_ladder.py, default run): the CPI and tabular rungs' prediction
    # (committed before the LM runs) and the summary of all three rungs
    "ladder_predictions": "figures/ladder_predictions.json",
    "ladder": "figures/ladder_summary.json",
    # the coding curves (experiments/llm_code.py, default run; copy of runs/llm_code/code_summary.json)
    "llm_code": "figures/llm_code_summary.json",
    # the paper's own numbers, each with where in the paper it is from
    "paper": "docs/repro/paper_numbers.toml",
}


class KeyMissing(LookupError):
    """A placeholder's key does not resolve in its source."""


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError as exc:
            raise RuntimeError(
                f"reading {path} needs Python >= 3.11 (tomllib) or `pip install tomli`"
            ) from exc
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def load_file(path: Path) -> Any:
    """The parsed contents of a JSON or TOML file."""
    if path.suffix == ".toml":
        return _load_toml(path)
    return json.loads(path.read_text())


class Sources:
    """Lazily loaded sources: ``Sources()[name]`` is the parsed file.

    Args:
        root: repository root the registered paths are relative to.
        registry: name -> path (default :data:`SOURCES`).
    """

    def __init__(self, root: Path = REPO_ROOT, registry: dict[str, str] | None = None):
        self.root = Path(root)
        self.registry = dict(SOURCES if registry is None else registry)
        self._cache: dict[str, Any] = {}

    def path(self, name: str) -> Path:
        if name not in self.registry:
            known = ", ".join(sorted(self.registry))
            raise KeyMissing(f"unknown source {name!r} (registered: {known})")
        return self.root / self.registry[name]

    def __getitem__(self, name: str) -> Any:
        if name not in self._cache:
            path = self.path(name)
            if not path.is_file():
                raise KeyMissing(f"source {name!r}: file {self.registry[name]} does not exist")
            self._cache[name] = load_file(path)
        return self._cache[name]

    def lookup(self, name: str, key: str) -> Any:
        """The value ``key`` names in source ``name``."""
        return resolve(self[name], key, where=f"{name}:")


_TOKEN = re.compile(r"\.?([A-Za-z0-9_\-]+)|\[([^\]]*)\]")


def split_key(key: str) -> list[tuple[str, str]]:
    """``"a[b].c[0]"`` -> ``[("field", "a"), ("member", "b"), ("field", "c"), ("member", "0")]``.

    Raises:
        KeyMissing: the key has characters outside the grammar.
    """
    parts, pos = [], 0
    while pos < len(key):
        m = _TOKEN.match(key, pos)
        if m is None or (pos == 0 and key.startswith(".")):
            raise KeyMissing(f"malformed key {key!r} at {key[pos:]!r}")
        parts.append(("field", m.group(1)) if m.group(1) is not None else ("member", m.group(2)))
        pos = m.end()
    if not parts:
        raise KeyMissing("empty key")
    return parts


def _select(items: list, spec: str, where: str) -> Any:
    if re.fullmatch(r"-?\d+", spec):
        i = int(spec)
        if not -len(items) <= i < len(items):
            raise KeyMissing(f"{where}[{spec}]: list has {len(items)} elements")
        return items[i]
    conds = []
    for cond in spec.split(","):
        if "=" not in cond:
            raise KeyMissing(f"{where}[{spec}]: a list is indexed by position or field=value")
        f, v = cond.split("=", 1)
        conds.append((f.strip(), v.strip()))
    hits = [
        it
        for it in items
        if isinstance(it, dict) and all(f in it and _as_text(it[f]) == v for f, v in conds)
    ]
    if len(hits) != 1:
        raise KeyMissing(f"{where}[{spec}]: {len(hits)} list elements match (need exactly one)")
    return hits[0]


def _as_text(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def resolve(obj: Any, key: str, where: str = "") -> Any:
    """Follow ``key`` (grammar: module docstring) into ``obj``."""
    cur, path = obj, where
    for kind, name in split_key(key):
        if isinstance(cur, dict):
            if name not in cur:
                near = ", ".join(sorted(map(str, cur))[:12])
                raise KeyMissing(f"{path or 'top level'}: no {name!r} (has: {near})")
            cur = cur[name]
            path += (
                f"[{name}]"
                if kind == "member"
                else (("." if path and not path.endswith(":") else "") + name)
            )
        elif isinstance(cur, list):
            if kind != "member":
                raise KeyMissing(f"{path}: a list, index it with [N] or [field=value]")
            cur = _select(cur, name, path)
            path += f"[{name}]"
        else:
            raise KeyMissing(f"{path}: a {type(cur).__name__}, has no field {name!r}")
    return cur
