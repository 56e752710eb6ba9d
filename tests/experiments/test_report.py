"""paper_repro.md and README's "What we found" are renders of templates and summary files.

What fails here: a hand edit of any number in either document; a placeholder naming a key that
does not exist (with file, line and key in the message); a typed number in a template table
cell; a pending placeholder whose key has arrived; a claim with an unknown verdict or a dead
link; the paper's numbers drifting from the comparison figures' constants.
"""

from __future__ import annotations

import math
import re
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from experiments.repro import claims as cl  # noqa: E402
from experiments.repro.lint import numbers_in_cell, prose_problems, table_problems  # noqa: E402
from experiments.repro.render import (  # noqa: E402
    PLACEHOLDER,
    README_TEMPLATE,
    RenderError,
    format_value,
    reflow,
    render_all,
    section_files,
)
from experiments.repro.sources import SOURCES, KeyMissing, Sources, resolve  # noqa: E402


def _templates(root: Path = REPO) -> list[Path]:
    return [*section_files(root), root / README_TEMPLATE]


def _copy_root(tmp: Path) -> Path:
    """The files a render reads, copied (documents, templates, registered sources)."""
    for rel in ["README.md", "paper_repro.md", "docs/repro", *SOURCES.values()]:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, tmp / rel)
        elif src.is_file():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tmp / rel)
    return tmp


def _stale(root: Path) -> list[str]:
    docs, _ = render_all(root, Sources(root))
    return [name for name, text in docs.items() if (root / name).read_text() != text]


# ------------------------------------------------------------------ the committed documents
def test_committed_documents_are_fresh_renders():
    """(a)+(d) paper_repro.md and README's block equal a fresh render: no number typed by hand."""
    assert _stale(REPO) == [], (
        "run `python experiments/report.py` (edit docs/repro/, not the rendered files)"
    )


@pytest.mark.parametrize(
    "doc, source, key, spec",
    [
        ("paper_repro.md", "cpi", "direct_sample_complexity_ratio_slope[coverage]", "ci"),
        ("paper_repro.md", "cpi", "speedup_approx_vs_random_tuned", "x:1"),
        ("README.md", "comparison", "values.speedup_samples_oracle_vs_random.lm", "xv"),
    ],
)
def test_hand_edit_of_a_number_fails(tmp_path, doc, source, key, spec):
    """Any number typed over its rendered value (here: one digit changed) fails the check."""
    root = _copy_root(tmp_path)
    old = format_value(Sources(root).lookup(source, key), spec)
    digit = next(ch for ch in old if ch.isdigit())
    new = old.replace(digit, str((int(digit) + 1) % 10), 1)
    text = (root / doc).read_text()
    assert old in text, old
    (root / doc).write_text(text.replace(old, new, 1))
    assert _stale(root) == [doc]


def test_missing_key_names_file_line_and_key(tmp_path):
    """(b) a placeholder whose key does not exist stops the render with file:line and the key."""
    root = _copy_root(tmp_path)
    bad = root / "docs/repro/sections/99_bad.md"
    bad.write_text(
        "## Bad\n\nfine text\nslope {{cpi:direct_sample_complexity_ratio_slope[nope]}}\n"
    )
    with pytest.raises(RenderError, match=r"docs/repro/sections/99_bad\.md:4: .*\[nope\].*'nope'"):
        render_all(root, Sources(root))
    bad.write_text("## Bad\n\n{{cpi:no_such_key}}\n")
    with pytest.raises(RenderError, match=r"99_bad\.md:3: \{\{cpi:no_such_key\}\}: .*no_such_key"):
        render_all(root, Sources(root))
    bad.write_text("## Bad\n\n{{ cpi no_such }}\n")
    with pytest.raises(RenderError, match="malformed placeholder"):
        render_all(root, Sources(root))


def test_every_placeholder_resolves():
    """(b) every non-pending placeholder of every template and claim names an existing key."""
    _docs, used = render_all(REPO, Sources(REPO))
    assert len(used.used) > 500
    assert used.pending_present == [], (
        "these keys have arrived: drop the '?' of their placeholders: "
        + ", ".join(f"{w}:{ln} {ref}" for w, ln, ref in used.pending_present)
    )


# ------------------------------------------------------------------ no typed numbers
def test_template_tables_hold_no_typed_numbers():
    """(c)+(d) no numeric literal in a table cell outside placeholders (rules: lint.py)."""
    problems = []
    for path in _templates():
        problems += table_problems(path.read_text(), str(path.relative_to(REPO)))
    for c in cl.load_claims(REPO):
        for f in ("paper", "ours", "why"):
            problems += [
                f"claims.toml [{c['id']}].{f}: {n!r}" for n in numbers_in_cell(c.get(f, ""))
            ]
    assert problems == [], "\n".join(problems)


def test_template_prose_holds_no_measured_numbers():
    problems = []
    for path in _templates():
        problems += prose_problems(path.read_text(), str(path.relative_to(REPO)))
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(
    "cell, found",
    [
        ("0.649 [0.579, 0.720]", ["0.649", "0.579", "0.720"]),
        ("{{cpi:x}} (RRPO 1.99x)", ["1.99"]),
        ("ahead by 17.5%", ["17.5"]),
        ("{{cpi:a|x:1}} vs {{cpi:b|pct}}", []),
        ("P2, pass@4, R_max^2, OLMo-3-7B, 1/p², (1−β)γ, `--seeds 3`", []),
        ("p = 0.1, recover = 0 and 0.1 trees", []),
        ("slope -2", ["-2"]),
    ],
)
def test_number_detector(cell, found):
    assert numbers_in_cell(cell) == found


def test_table_check_fails_on_an_injected_number():
    text = (
        "| claim | ours | verdict |\n|---|---|---|\n"
        "| P1 at p = 0.1 | {{cpi:a}} | holds, 0.97 of cells |\n"
    )
    problems = list(table_problems(text, "t.md"))
    assert len(problems) == 1 and "'0.97'" in problems[0] and "t.md:3" in problems[0]
    assert list(prose_problems("final J 0.649 at p = 0.1\n", "t.md"))
    assert not list(prose_problems("lr 1e-4, 16 prompts x 8 rollouts, p = 0.1\n", "t.md"))


# ------------------------------------------------------------------ formats and keys
@pytest.mark.parametrize(
    "value, spec, text",
    [
        ({"estimate": -1.63562, "ci": [-1.67654, -1.60195]}, "ci", "-1.64 [-1.68, -1.60]"),
        ({"value": 0.659, "lo": 0.644, "hi": 0.673}, "pct", "65.9% [64.4, 67.3]"),
        ({"value": 1.15, "lo": 0.0, "hi": 1.4}, "x", "1.15x [0.00, 1.40]"),
        ({"estimate": 14.728, "ci": [6.01, 24.81]}, "x:1", "14.7x [6.0, 24.8]"),
        (0.287, "pctv", "28.7%"),
        (-2.0, "sig", "-2"),
        (50914, "int", "50914"),
        (0.349, "+ci:2", "+0.35"),
        ({"estimate": 0.0, "ci": [None, None]}, "v:3", "0.000"),
        ("27c86eea", "text", "27c86eea"),
    ],
)
def test_formats(value, spec, text):
    assert format_value(value, spec) == text


def test_null_needs_or():
    rec = {"estimate": None, "ci": [None, None]}
    with pytest.raises(ValueError, match="null"):
        format_value(rec, "x")
    assert format_value(rec, "x", null="not reached") == "not reached"
    assert format_value("not reached", "x", null="not reached") == "not reached"
    with pytest.raises(ValueError, match="text"):
        format_value("not reached", "x")
    assert math.isnan(float("nan"))


def test_key_grammar():
    data = {
        "a": {"recover=0.1": {"estimate": 1}},
        "settings": [{"hard_step": 1, "p": 0.1}, {"hard_step": 3, "p": 0.3}],
        "ci": [1, 2],
    }
    assert resolve(data, "a[recover=0.1].estimate") == 1
    assert resolve(data, "settings[hard_step=3].p") == 0.3
    assert resolve(data, "settings[1].p") == 0.3
    assert resolve(data, "ci[0]") == 1
    with pytest.raises(KeyMissing, match="0 list elements match"):
        resolve(data, "settings[hard_step=2]")
    with pytest.raises(KeyMissing, match="no 'b'"):
        resolve(data, "a.b")


def test_pending_placeholder_fails_once_its_key_exists(tmp_path):
    root = _copy_root(tmp_path)
    (root / "docs/repro/sections/99_pending.md").write_text(
        "## P\n\n{{?cpi:not_yet}} and {{?cpi:dilution_slope}}\n"
    )
    docs, used = render_all(root, Sources(root))
    assert "(pending rerun: `cpi:not_yet`)" in docs["paper_repro.md"]
    assert [ref for _w, _l, ref in used.pending_present] == ["cpi:dilution_slope"]


def test_reflow_keeps_markdown_structure():
    text = (
        "para " + "word " * 40 + "\n\n- item " + "x " * 60 + "\n  more\n\n| a | b |\n|---|---|\n"
        "```bash\nlong " + "y " * 80 + "\n```\n"
    )
    out = reflow(text)
    assert all(len(ln) <= 100 for ln in out.split("\n") if not ln.startswith(("long", "|")))
    assert "| a | b |\n|---|---|" in out and ("long " + "y " * 80) in out
    assert not any(
        re.match(r"\s*- \S", ln) for ln in out.split("\n")[1:] if not ln.startswith("- item")
    )
    assert reflow("a -\n- b") == "a -\n- b"  # a list item stays one


# ------------------------------------------------------------------ claims and paper numbers
def test_verdict_block_is_one_screen_and_links_resolve():
    docs, _ = render_all(REPO, Sources(REPO))
    text = docs["paper_repro.md"]
    block = text.split("## Verdicts at a glance", 1)[1].split("\n## ", 1)[0].strip()
    assert len(block.splitlines()) <= cl.MAX_LINES
    targets = re.findall(r"\]\(#([^)]+)\)", block)
    assert len(targets) == len(cl.load_claims(REPO))
    missing = set(targets) - cl.anchors(text)
    assert not missing, f"claims link to missing sections: {missing}"


def test_claims_file_is_checked(tmp_path):
    root = _copy_root(tmp_path)
    path = root / cl.CLAIMS_FILE
    path.write_text(path.read_text().replace('verdict = "identity"', 'verdict = "holds"', 1))
    with pytest.raises(cl.ClaimsError, match="verdict 'holds' is not one of"):
        cl.load_claims(root)


def test_identity_claims_name_identity_records():
    """A claim marked 'identity' whose key is a sweep record must be one the sweep marks so."""
    src = Sources(REPO)
    for c in cl.load_claims(REPO):
        for m in PLACEHOLDER.finditer(c["ours"]):
            if m.group(2) != "cpi" or c["verdict"] != "identity":
                continue
            rec = src.lookup("cpi", m.group(3).split(".")[0])
            assert rec.get("kind") == "identity", (c["id"], m.group(0))


def test_paper_numbers_match_the_comparison_figures():
    from experiments.comparison.figures import PAPER

    paper = Sources(REPO)["paper"]
    for key, value in PAPER.items():
        assert paper[key]["value"] == pytest.approx(value), key
        assert paper[key]["where"]


def test_github_anchor():
    assert cl.github_anchor("|Y|, H and R_max at fixed p") == "y-h-and-r_max-at-fixed-p"
    assert (
        cl.github_anchor("Theorem 1's algorithms end to end") == "theorem-1s-algorithms-end-to-end"
    )


def template_keys(source: str) -> set[str]:
    """Every key of ``source`` the templates and claims cite (pending ones included)."""
    texts = [p.read_text() for p in _templates()] + [(REPO / cl.CLAIMS_FILE).read_text()]
    keys = set()
    for text in texts:
        for m in PLACEHOLDER.finditer(text):
            if m.group(2) == source:
                keys.update(k.strip() for k in m.group(3).split("&"))
    return keys
