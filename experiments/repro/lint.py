"""Checks that keep typed numbers out of the templates (tests/experiments/test_report.py).

*Table cells* (every ``|`` row of a template, outside code blocks, and the claims' fields) may
hold no numeric literal outside a placeholder. What does not count as a number:

* anything inside ``{{...}}`` or a backtick span (keys, commands, file names);
* digits glued to a name: ``P2``, ``pass@4``, ``R_max^2``, ``OLMo-3``, ``7B`` (a digit after a
  letter, ``_``, ``@``, ``^`` or ``-`` that follows a letter, or before a letter other than the
  ``x`` of a ratio);
* a reciprocal in a formula, ``1/p``, and the notation ``1 - β`` / ``1−β``;
* the cells of *setting columns* -- a column headed ``claim``, ``quantity``, ``knob``,
  ``family``, ``hard step j`` or ``hard step j (p)`` names a thing or a setting, not a result;
* :data:`ALLOWED` -- a short list of fixed expressions (section numbers, the theorem's
  constants), each with the reason it is not a measurement.

*Prose* (the other lines) is checked for the shapes measured numbers take -- two or more
decimals (``0.649``), a percentage (``17.5%``) or a ratio (``1.15x``) -- outside placeholders
and code; a parameter like ``p = 0.1`` or ``lr 1e-4`` is not flagged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

#: fixed expressions that are not measurements, and why
ALLOWED: dict[str, str] = {
    r"(?:§|section |Thm |Theorem |arXiv |issue )\s?\d+(?:\.\d+)?": "a name (a section, the "
    "theorem, the paper's id, an issue)",
    r"(?<![\w.])[A-Za-z] \+ 1\b": "a formula's X + 1 (the lock's D + 1 ancestors)",
    r"(?<![\w.])1\s?[−-]\s?[A-Za-zβγδτ]": "a formula's 1 - x (1 − β, 1 - delta, 1 − q_j)",
    r"constant 1/8": "the K&L constant named in the claim (THEORY.md)",
    r"\(\d+ H R_max\)": "a constant of the bound's formula in the claim",
    r"95%": "the level of every interval",
    r"(?<![A-Za-z])(?:recover|p|τ|tau|α|alpha|β|γ|step|batch|j|depth|deviation|H|k|noise|eps|"
    r"delta|lr|top_p|temperature|J|c|frac|side_level|off_level)\s*"
    r"(?:(?:[<>]=?|=|≤|≥)\s*[-+]?[\d.]+(?:\s*(?:,|and|/|to)\s*[-+]?[\d.]+)*"
    r"|∈\s*\{[^}]*\})": "a setting written as name = value (or name ∈ {values}, J < bound)",
}
SETTING_COLUMNS = {"claim", "quantity", "knob", "family", "hard step j", "hard step j (p)"}

_PLACEHOLDER = re.compile(r"\{\{.*?\}\}")
_CODE = re.compile(r"`[^`]*`")
_LINK_TARGET = re.compile(r"\]\([^)]*\)")
_NUMBER = re.compile(
    r"(?<![A-Za-z0-9_@^.])"  # not glued to a name before it
    r"(?<![A-Za-z][-−])(?<!\^-)"  # OLMo-3, Qwen-2.5, H−1, τ^-2
    r"(?<![A-Za-z]\+)"  # D+1
    r"[-+−]?\d+(?:[.,]\d+)*"  # 17, -1.64, 1,162
    r"(?!/[A-Za-zτ(])"  # 1/p, 1/(H R_max)
    r"(?![A-Za-wyzA-Z_])"  # 7B, 2k; the x of a ratio still counts
)
_PROSE_NUMBER = re.compile(r"(?<![A-Za-z0-9_@^.])[-+−]?\d+(?:\.\d{2,}|(?:\.\d+)?%|(?:\.\d+)?x\b)")


def _strip(text: str) -> str:
    text = _PLACEHOLDER.sub(" ", text)
    text = _CODE.sub(" ", text)
    text = _LINK_TARGET.sub("]", text)
    for pattern in ALLOWED:
        text = re.sub(pattern, " ", text)
    return text


def numbers_in_cell(cell: str) -> list[str]:
    """The numeric literals a table cell holds outside placeholders (see the module doc)."""
    return _NUMBER.findall(_strip(cell))


def _split_row(line: str) -> list[str]:
    """The cells of a table row; a ``|`` inside a placeholder or escaped does not split."""
    held: list[str] = []

    def hold(m):
        held.append(m.group(0))
        return f"\0{len(held) - 1}\0"

    body = _PLACEHOLDER.sub(hold, line.strip())
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", body)]
    return [re.sub(r"\0(\d+)\0", lambda m: held[int(m.group(1))], c) for c in cells]


def table_problems(text: str, where: str) -> Iterator[str]:
    """``where:line: column 'x': literal '0.649' in '...'`` for every number in a table cell."""
    header: list[str] | None = None
    in_code = False
    for i, line in enumerate(text.split("\n"), start=1):
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code or not line.startswith("|"):
            header = None
            continue
        cells = _split_row(line)
        if header is None:
            header = [c.lower() for c in cells]
        if all(re.fullmatch(r":?-{3,}:?", c) for c in cells if c):
            continue
        for j, cell in enumerate(cells):
            col = header[j] if j < len(header) else ""
            if col in SETTING_COLUMNS:
                continue
            for num in numbers_in_cell(cell):
                yield (
                    f"{where}:{i}: column {col!r}: typed number {num!r} in {cell[:80]!r} "
                    "(use a placeholder {{source:key|format}}; docs/report.md)"
                )


def prose_problems(text: str, where: str) -> Iterator[str]:
    """``where:line: typed number`` for measured-looking numbers in prose lines."""
    in_code = False
    for i, line in enumerate(text.split("\n"), start=1):
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code or line.startswith("|"):
            continue
        for num in _PROSE_NUMBER.findall(_strip(line)):
            yield (
                f"{where}:{i}: typed number {num!r} in prose: {line.strip()[:80]!r} (cite a "
                "key with a placeholder, or write the setting as a parameter)"
            )
