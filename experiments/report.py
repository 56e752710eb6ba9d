"""Render paper_repro.md and README's "What we found" from templates and summary files.

Usage::

    python experiments/report.py            # write paper_repro.md and README.md's block
    python experiments/report.py --check    # exit 1 (with a diff) if either is not a fresh render
    python experiments/report.py --keys cpi # list the keys of one source
    python experiments/report.py --pending  # placeholders waiting for a rerun

Templates: ``docs/repro/sections/*.md`` (paper_repro.md, in file-name order),
``docs/repro/readme_found.md`` (README's block), ``docs/repro/claims.toml`` (the verdict block).
Sources: :data:`experiments.repro.sources.SOURCES`. How to add a section, a source or a claim:
docs/report.md. A placeholder whose key is missing stops the render with one line naming the
template file, its line and the key.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from experiments.repro.render import RenderError, render_all  # noqa: E402
from experiments.repro.sources import KeyMissing, Sources, split_key  # noqa: E402


def _keys(obj, prefix: str = "", depth: int = 0):
    """Flattened keys of a source, for ``--keys`` (records are leaves)."""
    if isinstance(obj, dict) and not ({"estimate", "value"} & set(obj)) and depth < 6:
        for k, v in obj.items():
            name = str(k)
            try:
                simple = split_key(name) == [("field", name)]
            except KeyMissing:
                simple = False
            sub = (f"{prefix}.{name}" if prefix else name) if simple else f"{prefix}[{name}]"
            yield from _keys(v, sub, depth + 1)
    else:
        yield prefix


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="report", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 with a diff if a document is not a fresh render",
    )
    ap.add_argument(
        "--keys", metavar="SOURCE", default=None, help="list the keys of one source and exit"
    )
    ap.add_argument(
        "--pending",
        action="store_true",
        help="list the placeholders that wait for a rerun ({{?...}}) and exit",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sources = Sources(REPO_ROOT)
    if args.keys:
        try:
            data = sources[args.keys]
        except KeyMissing as exc:
            print(f"report: error: {exc}", file=sys.stderr)
            return 2
        for key in _keys(data):
            print(f"{args.keys}:{key}")
        return 0
    try:
        docs, used = render_all(REPO_ROOT, sources)
    except (RenderError, KeyMissing) as exc:
        print(f"report: error: {exc}", file=sys.stderr)
        return 2
    if args.pending:
        for where, line, ref in used.pending:
            print(f"{where}:{line}: {ref} (pending rerun)")
        return 0
    stale = []
    for name, text in docs.items():
        path = REPO_ROOT / name
        old = path.read_text() if path.is_file() else ""
        if old == text:
            continue
        stale.append(name)
        if args.check:
            diff = difflib.unified_diff(
                old.splitlines(),
                text.splitlines(),
                f"{name} (committed)",
                f"{name} (rendered)",
                lineterm="",
                n=1,
            )
            print("\n".join(list(diff)[:80]))
        else:
            path.write_text(text)
    if args.check:
        if stale:
            print(
                f"report: {', '.join(stale)} differ from a fresh render: run "
                "`python experiments/report.py` (edit docs/repro/, not the rendered file)",
                file=sys.stderr,
            )
            return 1
        print(f"report: up to date ({len(used.used)} numbers, {len(used.pending)} pending rerun)")
        return 0
    print(
        f"report: wrote {', '.join(stale) or 'nothing (up to date)'}; {len(used.used)} numbers"
        f", {len(used.pending)} pending rerun"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
