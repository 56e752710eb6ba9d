"""README.md's "CPI in a few lines": the block runs and prints every number its text states."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _section() -> tuple[str, str]:
    text = README.read_text()
    sec = text.split("## CPI in a few lines", 1)[1].split("\n## ", 1)[0]
    code = sec.split("```python", 1)[1].split("```", 1)[0]
    prose = sec.split("```python", 1)[1].split("```", 1)[1]
    return code, prose


def test_readme_snippet_prints_the_numbers_its_text_states():
    code, prose = _section()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    printed = out.getvalue()
    assert "Coverage(reach=0.05, mass=0.05)" in printed
    numbers = re.findall(r"\b\d+\.\d+(?:e-\d+)?\b", prose)
    assert len(numbers) >= 7
    assert "1000 Q-rollouts" in printed and "after 5 updates" in printed
    for num in numbers:
        assert num in printed, f"README states {num}, the snippet printed:\n{printed}"
