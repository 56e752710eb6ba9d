"""LiveCodeBench ``code_generation_lite`` files -> one parquet file in the release's layout.

    python -m srpo.code.convert test6.jsonl --difficulty medium --out lcb_v6_medium.parquet

Reads LiveCodeBench rows (JSONL or parquet; private tests decoded without unpickling,
``srpo.code.formats``), keeps the chosen difficulties, and writes one row per problem: the
statement with LiveCodeBench-style instructions as a chat message, ``data_source`` =
``livecodebench``, every private test under ``reward_model.ground_truth`` (the reward /
held-out split is redone, seeded, whenever the file is read) and ``extra_info`` (id, function
name, starter code, difficulty). ``srpo.code.formats.read_code_problems`` and
``srpo.data.read_problems`` (grader ``code``) read it back. Bad input: one line on stderr,
exit status 2, nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from srpo.code.formats import lcb_problem, release_row

DIFFICULTIES = ("easy", "medium", "hard")


def convert(paths, difficulties=DIFFICULTIES, limit: int | None = None) -> list[dict]:
    """Release-layout rows of the LiveCodeBench problems in ``paths`` of these difficulties."""
    from srpo.data import _plain, _records

    rows = []
    for path in paths:
        for _location, where, record in _records(Path(path)):
            record = _plain(record)
            if str(record.get("difficulty", "")).lower() not in difficulties:
                continue
            try:
                rows.append(release_row(lcb_problem(record)))
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path}: {where}: {error}") from None
            if limit is not None and len(rows) >= limit:
                return rows
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m srpo.code.convert", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("files", nargs="+", help="LiveCodeBench code_generation_lite .jsonl/.parquet")
    p.add_argument("--difficulty", nargs="+", default=list(DIFFICULTIES), choices=DIFFICULTIES)
    p.add_argument("--limit", type=int, default=None, help="at most this many problems")
    p.add_argument("--out", required=True, help="the parquet file to write")
    args = p.parse_args(argv)
    for path in args.files:
        if not Path(path).is_file():
            p.exit(2, f"{p.prog}: error: {path!r} is not a file\n")
    if not args.out.endswith(".parquet"):
        p.exit(2, f"{p.prog}: error: --out must end in .parquet; got {args.out!r}\n")
    try:
        rows = convert(args.files, tuple(args.difficulty), args.limit)
    except ValueError as error:
        p.exit(2, f"{p.prog}: error: {error}\n")
    if not rows:
        p.exit(
            2,
            f"{p.prog}: error: no problem of difficulty {'/'.join(args.difficulty)} in "
            f"{', '.join(args.files)}\n",
        )
    import pandas as pd

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(args.out, index=False)
    print(f"wrote {len(rows)} problems to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
