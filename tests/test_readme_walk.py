"""The README's commands, in order, as a newcomer runs them, on a fresh copy of the repository.

Every command in a ``bash`` block of README.md is taken in order (``&&`` chains split, ``\\``
continuations joined) and either run or skipped for a stated reason:

* ``pip install ...`` runs as written, in a virtual environment layered over this interpreter
  (``--system-site-packages``: the dependencies are already here, the project is installed anew
  from the copy);
* ``python experiments/...`` runs as written, at the smallest size a flag of the script allows:
  ``--quick`` where the README line has no size flag (the sweep), a one-step run of every method
  where the README runs the full LLM default (``--seeds 1 --steps 1 --eval-size 8``), and the
  comparison pointed at those small runs' own folders;
* the test command (``pytest``) is skipped: it is what runs this test;
* GPU lines (``--device cuda``, ``accelerate launch``, the CUDA install) are skipped: no GPU here.

A README line of any other kind fails the test, so that a new command is walked (or its skip
argued here) before it is published. Checked: each command exits 0 without a traceback, and
``git status`` of the copy is clean after the whole walk: no tracked file changed (``figures/``,
paper_repro.md, the summaries) and no untracked file appeared outside the ignored ``runs/`` --
smoke runs write only there.

The copy is made from ``git ls-files`` (tracked files only, as a fresh clone has them) and
committed to a new git repository; the model caches go to a temporary directory (a cold start,
as on a fresh machine).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# a fresh venv and an install: longer than the suite's default limit
pytestmark = [pytest.mark.slow, pytest.mark.llm, pytest.mark.timeout(2700)]

GPU_MARKERS = ("--device cuda", "accelerate launch", "TRL_CFG=", '".[llm,vllm]"', "deepspeed")
#: per script: the flags added where the README line runs the full default
SMALL = {
    "experiments/cpi_sweep.py": ["--quick"],
    "experiments/llm_srpo.py": ["--seeds", "1", "--steps", "1", "--eval-size", "8"],
    # the small runs above write their own folders (a smoke size never writes the default run's),
    # so the comparison reads those
    "experiments/compare.py": ["--cpi", "runs/cpi_sweep_quick", "--llm", "runs/llm_custom"],
}
SIZE_FLAGS = ("--quick", "--full", "--tiny", "--steps", "--seeds")


def readme_commands(text: str) -> list[str]:
    """The commands of every ``bash`` block, in order: continuations joined, comments dropped,
    ``&&`` chains split."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        block = re.sub(r"\\\n\s*", " ", block)
        for line in block.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                commands.extend(" ".join(part.split()) for part in line.split("&&")
                                if part.strip())
    return commands


def classify(command: str) -> tuple[str, str]:
    """``("skip", why)``, ``("pip", command)`` or ``("python", command at walk size)``."""
    if "pytest" in command:
        return "skip", "the test command: it is what runs this walk"
    if any(marker in command for marker in GPU_MARKERS):
        return "skip", "GPU line: no GPU on this machine"
    words = shlex.split(command)
    if words[0] == "pip":
        return "pip", command
    if words[0] == "python" and len(words) > 1 and words[1] in SMALL | {
            "experiments/llm_coverage.py": []}:
        extra = []
        if not any(w.split("=")[0] in SIZE_FLAGS for w in words[2:]):
            extra = SMALL.get(words[1], [])
        return "python", " ".join([command, *extra])
    raise AssertionError(f"README command not covered by the walk (run it or argue its skip in "
                         f"tests/test_readme_walk.py): {command!r}")


def test_readme_commands_are_all_classified():
    """Fast: every README command is walked or skipped with a reason (no unknown lines)."""
    commands = readme_commands((REPO / "README.md").read_text())
    kinds = [classify(c)[0] for c in commands]
    assert "pip" in kinds and "python" in kinds
    assert any("cpi_sweep.py --quick" in classify(c)[1] for c in commands)


def test_readme_parser():
    text = ("x\n```bash\npip install -e . && python a.py  # comment\npython b.py \\\n"
            "    --flag 1\n```\n```python\nimport cpi\n```\n")
    assert readme_commands(text) == ["pip install -e .", "python a.py", "python b.py --flag 1"]
    with pytest.raises(AssertionError, match="not covered"):
        classify("python experiments/new_thing.py")
    assert classify("python experiments/llm_srpo.py --quick")[1].endswith("--quick")
    assert classify("python experiments/llm_srpo.py")[1].endswith("--eval-size 8")
    assert classify("python experiments/compare.py")[1].endswith("--llm runs/llm_custom")


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs a git checkout to copy the tracked files")
def test_readme_walk(tmp_path):
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    repo = tmp_path / "repo"
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():  # a tracked file deleted in the working tree is not copied
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / name)
    git = ["git", "-c", "user.name=walk", "-c", "user.email=walk@example.invalid",
           "-c", "commit.gpgsign=false"]
    subprocess.run(git + ["init", "-q"], cwd=repo, check=True)
    subprocess.run(git + ["add", "-A"], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-q", "-m", "fresh clone"], cwd=repo, check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    bindir = venv / "bin"
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
           "VIRTUAL_ENV": str(venv), "CREDIT_RESETS_CACHE": str(tmp_path / "cache"),
           "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "MPLBACKEND": "Agg",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    walked = []
    for command in readme_commands((repo / "README.md").read_text()):
        kind, run = classify(command)
        if kind == "skip":
            continue
        if kind == "pip":
            run = run.replace("pip install", "python -m pip install -q", 1)
        proc = subprocess.run(run, shell=True, cwd=repo, env=env, capture_output=True,
                              text=True, timeout=1800)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"README command failed: {run}\n{out[-4000:]}"
        assert "Traceback" not in out, f"traceback from {run}\n{out[-4000:]}"
        walked.append(run)
    # the project in the venv is the copy, not the checkout this test runs from
    where = subprocess.run(["python", "-c", "import cpi; print(cpi.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert str(repo) in where, where
    assert any("cpi_sweep.py" in r for r in walked) and any("llm_srpo.py" in r for r in walked)
    assert (repo / "runs" / "cpi_sweep_quick" / "summary.json").is_file()
    assert not (repo / "runs" / "cpi_sweep").exists(), "--quick wrote the default run's folder"
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout
    assert status == "", f"the README's commands left git status dirty:\n{status}"
