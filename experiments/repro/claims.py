"""The verdict block at the top of paper_repro.md, from ``docs/repro/claims.toml``.

One line per claim: the claim, the paper's number, ours with its interval, one verdict word and
a link to the section that argues it. A claim in the file::

    [[claim]]
    id = "p2-ratio"                       # unique, stable
    claim = "P2: Q-rollouts RR / CARO vs p"
    paper = "slope {{paper:p2_ratio_slope.value|sig}}"
    ours = "{{cpi:direct_sample_complexity_ratio_slope[coverage]}} (clean family)"
    verdict = "not reproduced"            # one of VERDICTS
    why = "tightness prediction; the bound itself holds"   # a few words, optional
    section = "p2-measured-directly"      # anchor of a heading of paper_repro.md

The fields are rendered like a template (placeholders, no typed numbers). The verdict is decided
by the section's own rule (docs/report.md); the block shortens it, the section keeps the detail.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from experiments.repro.sources import REPO_ROOT, load_file

#: the verdict words of the block, and what each means (printed under the block)
VERDICTS = {
    "reproduced": "the measurement agrees with the paper's number or the theory's prediction, "
    "in a setting that could have disagreed",
    "not reproduced": "it could have agreed and does not",
    "not testable here": "these instances or this scale cannot test it",
    "identity": "true by construction of the environment or by a proven lemma: checks the code",
}
FIELDS = ("id", "claim", "paper", "ours", "verdict", "section")
CLAIMS_FILE = "docs/repro/claims.toml"
#: the block must fit one screen
MAX_LINES = 40


class ClaimsError(ValueError):
    """A malformed claims file (names the claim and the field)."""


def load_claims(root: Path = REPO_ROOT) -> list[dict]:
    """The claims, checked: every field present, verdicts known, ids unique."""
    data = load_file(Path(root) / CLAIMS_FILE)
    claims = data.get("claim", [])
    seen = set()
    for i, c in enumerate(claims):
        name = c.get("id", f"#{i + 1}")
        missing = [f for f in FIELDS if not c.get(f)]
        if missing:
            raise ClaimsError(f"{CLAIMS_FILE}: claim {name!r}: missing {', '.join(missing)}")
        if c["verdict"] not in VERDICTS:
            raise ClaimsError(
                f"{CLAIMS_FILE}: claim {name!r}: verdict {c['verdict']!r} is not "
                f"one of {', '.join(VERDICTS)}"
            )
        if name in seen:
            raise ClaimsError(f"{CLAIMS_FILE}: claim id {name!r} appears twice")
        seen.add(name)
    return claims


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading (lower case, punctuation dropped, spaces to -)."""
    text = heading.strip().lower()
    text = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a document (duplicates numbered -1, -2 as GitHub does)."""
    out, counts = set(), {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = re.match(r"#{1,6} (.*)", line)
        if m and not in_code:
            a = github_anchor(re.sub(r"`", "", m.group(1)))
            n = counts.get(a, 0)
            counts[a] = n + 1
            out.add(a if n == 0 else f"{a}-{n}")
    return out


def verdict_block(sources, root: Path = REPO_ROOT, report=None) -> str:
    """The rendered block (a Markdown table and its legend)."""
    from experiments.repro.render import render_text

    claims = load_claims(root)
    lines = ["| claim | paper | ours (95% interval) | verdict | |", "|---|---|---|---|---|"]
    for c in claims:
        where = f"{CLAIMS_FILE} [{c['id']}]"
        cells = [
            render_text(c[f], sources, f"{where}.{f}", report).replace("\n", " ")
            for f in ("claim", "paper", "ours")
        ]
        verdict = f"**{c['verdict']}**" + (
            f": {render_text(c['why'], sources, where + '.why', report)}" if c.get("why") else ""
        )
        lines.append(
            f"| {cells[0]} | {cells[1]} | {cells[2]} | {verdict} | [more](#{c['section']}) |"
        )
    legend = "; ".join(f"*{k}*: {v}" for k, v in VERDICTS.items())
    lines += ["", f"Verdicts: {legend}."]
    return "\n".join(lines)
