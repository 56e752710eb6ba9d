"""Every test has a time limit (pytest-timeout, configured in pyproject.toml): a test that hangs
fails after the limit instead of holding a CI run forever."""

import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml")

REPO = Path(__file__).resolve().parents[2]


def test_the_suite_has_a_default_time_limit():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert any(
        d.startswith("pytest-timeout") for d in project["project"]["optional-dependencies"]["test"]
    )
    options = project["tool"]["pytest"]["ini_options"]
    assert 0 < float(options["timeout"]) <= 1800


def test_a_hanging_test_fails_at_its_limit(tmp_path):
    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_hangs():\n    time.sleep(60)\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(REPO / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            "-o",
            "timeout=2",
            str(tmp_path / "test_hang.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Timeout" in done.stdout + done.stderr, done.stdout[-2000:]
