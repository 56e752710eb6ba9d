"""Every entry point answers an unwritable ``--out`` in one line, while parsing (before any model
loads), and states each flag's limits in user words; smoke sizes never write the default run's
folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from experiments.cli_checks import out_dir_problem, user_words, whole_number_problem  # noqa: E402

#: a folder no one can create, root included (Linux's /proc refuses new entries)
UNWRITABLE = Path("/proc/credit-resets-unwritable/out")
needs_proc = pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")


def _one_line(err: str) -> str:
    """The one error line (argparse's usage block above it, where a script keeps it, aside)."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def blocked(tmp_path) -> Path:
    """An --out whose parent is a file (unwritable for every user)."""
    (tmp_path / "file").write_text("not a directory")
    return tmp_path / "file" / "out"


def test_out_dir_problem(tmp_path, blocked):
    assert out_dir_problem(tmp_path / "new" / "dir") is None
    assert (tmp_path / "new" / "dir").is_dir()
    assert "is a file, not a directory" in out_dir_problem(blocked)
    assert "is a file; expected a directory" in out_dir_problem(tmp_path / "file")
    if Path("/proc/self").exists():
        assert "cannot be written" in out_dir_problem(UNWRITABLE)


def test_user_words():
    assert whole_number_problem("--steps", -3, 0) == "--steps must be a whole number >= 0; got -3"
    assert whole_number_problem("--steps", None, 0) is None
    flags = {"steps": "--steps", "prompts_per_step": "--prompts-per-step"}
    assert (
        user_words("steps must be an integer >= 1 or None; got -3", flags)
        == "--steps must be a whole number >= 1; got -3"
    )
    assert (
        user_words("mini_batches must be <= prompts_per_step = 16", flags)
        == "mini_batches must be <= --prompts-per-step = 16"
    )
    assert user_words("grad_clip must be > 0 or None; got -1") == "grad_clip must be > 0; got -1"


def _parse_error(parse, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
    return _one_line(capsys.readouterr().err)


@needs_proc
@pytest.mark.parametrize("where", ["proc", "file_parent"])
def test_cpi_sweep_and_compare(where, blocked, capsys):
    from experiments import compare, cpi_sweep

    out = str(UNWRITABLE if where == "proc" else blocked)
    assert "--out" in _parse_error(cpi_sweep.options_from_args, ["--out", out], capsys)
    assert compare.main(["--out", out]) == 2  # before any input is read (none exists here)
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("compare: error: --out") and (
        "cannot be written" in line or "is a file" in line
    )
    assert compare.main(["--n-boot", "5"]) == 2
    assert "--n-boot must be a whole number >= 10; got 5" in capsys.readouterr().err


@needs_proc
@pytest.mark.parametrize("where", ["proc", "file_parent"])
def test_llm_entry_points(where, blocked, tmp_path, capsys):
    """llm_srpo, llm_coverage, llm_eval, trl_srpo: the --out error comes from parse_args."""
    pytest.importorskip("torch")
    from experiments import llm_coverage, llm_eval, llm_srpo, trl_srpo

    out = str(UNWRITABLE if where == "proc" else blocked)
    for mod in (llm_srpo, llm_coverage, trl_srpo):
        line = _parse_error(mod.parse_args, ["--out", out], capsys)
        assert "--out" in line and ("cannot be written" in line or "is a file" in line), line
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    data = tmp_path / "bench.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n')
    line = _parse_error(
        llm_eval.parse_args, ["--model", str(model), "--data", str(data), "--out", out], capsys
    )
    assert "--out" in line


def test_flag_limits_in_user_words(tmp_path, capsys):
    pytest.importorskip("torch")
    from experiments import llm_coverage, llm_eval, llm_srpo, trl_srpo

    out = str(tmp_path / "o")
    assert "--steps must be a whole number >= 0; got -3" in _parse_error(
        llm_srpo.parse_args, ["--steps", "-3", "--out", out], capsys
    )
    assert "--steps must be a whole number >= 1; got -3" in _parse_error(
        llm_coverage.parse_args, ["--steps", "-3", "--out", out], capsys
    )
    assert "--grad-accum must be a whole number >= 1; got 0" in _parse_error(
        trl_srpo.parse_args, ["--grad-accum", "0", "--out", out], capsys
    )
    assert "--samples must be a whole number >= 0; got -1" in _parse_error(
        llm_eval.parse_args, ["--model", out, "--data", out, "--samples", "-1"], capsys
    )
    assert not Path(out).exists()  # no folder for a command that fails


def test_smoke_sizes_never_write_the_default_folder(tmp_path, capsys, monkeypatch):
    from experiments import cpi_sweep

    monkeypatch.chdir(tmp_path)
    assert cpi_sweep.options_from_args(["--quick"]).out == Path("runs/cpi_sweep_quick")
    assert cpi_sweep.options_from_args(["--seeds", "2"]).out == Path("runs/cpi_sweep_custom")
    opts = cpi_sweep.options_from_args([])
    assert opts.out == Path("runs/cpi_sweep") and opts.figures_copy is not None
    assert cpi_sweep.options_from_args(["--quick"]).figures_copy is None
    assert cpi_sweep.options_from_args(["--seeds", "3"]).figures_copy is None
    line = _parse_error(cpi_sweep.options_from_args, ["--quick", "--out", "runs/cpi_sweep"], capsys)
    assert "holds the default run" in line
    pytest.importorskip("torch")
    from experiments import llm_coverage

    assert llm_coverage.parse_args(["--quick"]).out == Path("runs/llm_coverage_quick")
    from experiments import llm_srpo

    assert llm_srpo.parse_args(["--quick"]).out == llm_srpo.QUICK_OUT
    assert llm_srpo.parse_args(["--seeds", "1", "--steps", "1"]).out == llm_srpo.CUSTOM_OUT
    assert "holds the default run" in _parse_error(
        llm_coverage.parse_args, ["--quick", "--out", "runs/llm_coverage"], capsys
    )
