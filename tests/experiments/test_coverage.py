"""The coverage experiment: the two readings of p, the prediction, the figure, the provenance of
published comparisons, and ``experiments/llm_coverage.py --quick`` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from experiments.comparison import provenance as pv  # noqa: E402
from experiments.comparison import stats as st  # noqa: E402
from experiments.coverage_study.measure import readings_from_q, step_probabilities  # noqa: E402
from experiments.coverage_study.prediction import exact_phase  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


# ------------------------------------------------------------------------ readings of p
def _monte_carlo(q: np.ndarray, tau: float, m: int, rng) -> dict:
    """Chains sampled step by step from q (after an error the answer is lost)."""
    n, H = q.shape
    ok = rng.random((n, m, H)) < q[:, None, :]
    first = np.where(ok.all(axis=2), 0, np.argmin(ok, axis=2) + 1)        # 0: no error
    fail = first > 0
    after = np.concatenate([np.cumprod(q[:, ::-1], axis=1)[:, ::-1][:, 1:], np.ones((n, 1))], 1)
    G = (1 - q) * after >= tau                                            # (n, H)
    reached = np.where(fail[..., None], np.arange(1, H + 1)[None, None, :] <= first[..., None],
                       True)                                             # clean prefix before k
    visits = reached & G[:, None, :]
    return {"p_state": first[fail].sum() / (H * fail.sum()),
            "reach": visits.any(axis=2).mean(), "mass": visits.sum(axis=2).mean() / H,
            "pass": (~fail).mean()}


def test_readings_match_monte_carlo():
    rng = np.random.default_rng(0)
    H = 6
    q = np.clip(rng.uniform(0.75, 1.0, size=(40, H)), 0, 1)
    q[:, 2] = rng.uniform(0.2, 0.6, size=40)           # a hard step at position 3
    r = readings_from_q(q, tau=0.1)
    mc = _monte_carlo(q, 0.1, 4000, rng)
    assert r["f_sum"].sum() / (H * r["fail"].sum()) == pytest.approx(mc["p_state"], abs=0.01)
    assert r["reach"].mean() == pytest.approx(mc["reach"], abs=0.01)
    assert r["mass"].mean() == pytest.approx(mc["mass"], abs=0.005)
    assert r["pass"].mean() == pytest.approx(mc["pass"], abs=0.01)


def test_readings_closed_forms_one_hard_step():
    """One hard step at j with error e, perfect easy steps: p_state = j / H, p_reach = 1 for
    e * 1 >= tau, p_mass = 1 / H; the trajectory reading does not move with j."""
    H = 10
    for j in (1, 4, 10):
        q = np.ones((1, H))
        q[0, j - 1] = 0.5
        r = readings_from_q(q, tau=0.1)
        assert r["f_sum"][0] / (H * r["fail"][0]) == pytest.approx(j / H)
        assert r["reach"][0] == pytest.approx(1.0) and r["mass"][0] == pytest.approx(1 / H)
    q = np.ones((1, H))
    q[0, 0] = 0.95                                     # advantage 0.05 < tau: nothing in G
    r = readings_from_q(q, tau=0.1)
    assert r["reach"][0] == 0 and r["mass"][0] == 0


@pytest.fixture(scope="module")
def tiny():
    from srpo.model import build_tiny_model
    from srpo.tokenizer import build_tokenizer

    torch.set_num_threads(1)
    tok = build_tokenizer()
    return build_tiny_model(tok, n_layer=1, d_model=32, n_head=2, seed=3), tok


def test_step_probabilities_against_token_logprobs(tiny):
    """Without top-p, q_k is the product of the teacher-forced token probabilities of thought k
    at the sampling temperature (srpo.rollout.token_logprobs, an independent code path)."""
    from srpo.rollout import token_logprobs
    from srpo.tasks import ModularArithmeticTask

    model, tok = tiny
    task = ModularArithmeticTask(n_steps=4, ops=("+",), hard_steps=(2,), easy_operands=(1, 2))
    problems = task.sample(5, np.random.default_rng(0))
    q = step_probabilities(model, tok, task, problems, temperature=0.7, top_p=1.0)
    for i, p in enumerate(problems):
        thoughts = task.reference_solution(p, 0.0, np.random.default_rng(0))
        ids = [tok.encode(t, add_special_tokens=False) for t in thoughts]
        lp = token_logprobs(model, [tok.encode(task.prompt(p))], [sum(ids, [])],
                            temperature=0.7)[0].detach().numpy()
        bounds = np.cumsum([0] + [len(x) for x in ids])
        ref = [np.exp(lp[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:])]
        np.testing.assert_allclose(q[i], ref, rtol=1e-4)


def test_nucleus_probability_matches_the_sampler(tiny):
    """With top-p, each token's probability is what srpo.rollout.sample_from_logits draws: checked
    on a dense grid of uniforms for the first token of a solution."""
    from srpo.rollout import sample_from_logits
    from srpo.tasks import ModularArithmeticTask

    model, tok = tiny
    task = ModularArithmeticTask(n_steps=1, ops=("+",))
    p = task.sample(1, np.random.default_rng(1))[0]
    prompt = tok.encode(task.prompt(p))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1:].float()
    u = (torch.arange(200_000, dtype=torch.float64) + 0.5) / 200_000
    drawn = sample_from_logits(logits.expand(len(u), -1), 0.7, 0.5, u.float())
    freq = torch.bincount(drawn, minlength=logits.shape[-1]).double() / len(u)
    first = tok.encode(task.reference_solution(p, 0.0, np.random.default_rng(0))[0],
                       add_special_tokens=False)[0]
    # the thought's first token alone: a one-token "solution" through the same code
    probs = torch.softmax(logits[0] / 0.7, -1)
    sorted_p, order = probs.sort(descending=True)
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order[(sorted_p.cumsum(0) - sorted_p) < 0.5]] = True
    mine = float(probs[first] / probs[keep].sum()) if keep[first] else 0.0
    assert float(freq[first]) == pytest.approx(mine, abs=2e-4)
    q = step_probabilities(model, tok, task, [p], temperature=0.7, top_p=0.5)
    assert 0.0 <= q[0, 0] <= max(mine, 1e-12) + 1e-9   # the whole thought is at most its 1st token


# ------------------------------------------------------------------------ prediction pieces
def test_exact_phase_follows_the_boundary():
    good = exact_phase(0.1, beta=0.0, gamma=1.0)
    assert good["theory_beats_random"] and good["ratio_self_vs_random"] > 1
    assert good["ratio_oracle_vs_random"] == pytest.approx(good["ratio_self_vs_random"], rel=1e-6)
    bad = exact_phase(0.3, beta=0.9, gamma=0.5)
    assert not bad["theory_beats_random"] and bad["ratio_self_vs_random"] < 1


def test_loglog_slope_recovers_a_power_law():
    ps = np.array([0.05, 0.1, 0.3, 0.9])
    vals = 2.0 * ps ** -1.0
    rng = np.random.default_rng(0)
    draws = vals[:, None] * np.exp(rng.normal(0, 0.05, size=(4, 500)))
    est = st.loglog_slope(ps, vals, draws)
    assert est.value == pytest.approx(-1.0) and est.lo < -1.0 < est.hi and est.hi - est.lo < 0.2
    draws[0, :400] = np.nan                            # mostly "not reached": no interval
    assert not np.isfinite(st.loglog_slope(ps, vals, draws).lo)


# ------------------------------------------------------------------------ provenance
def test_cell_verdict_against_the_predicted_interval():
    from experiments.comparison.coverage import cell_verdict

    pred = st.Estimate(5.0, 4.0, 6.0)
    nan = float("nan")
    assert cell_verdict(pred, st.Estimate(1.0, 0.9, 1.1)) == "below"
    assert cell_verdict(pred, st.Estimate(4.5, 3.0, 7.0)) == "inside"
    assert cell_verdict(pred, st.Estimate(9.0, 7.0, 12.0)) == "above"
    # not reached: slower than the comparator (< 1): below a prediction above 1 only
    assert cell_verdict(pred, st.Estimate(nan, nan, nan)) == "below"
    assert cell_verdict(st.Estimate(1.2, 0.96, 1.6), st.Estimate(nan, nan, nan)) == "n/a"
    # a point without an interval is compared as a point
    assert cell_verdict(pred, st.Estimate(5.5, nan, nan)) == "inside"
    assert cell_verdict(st.Estimate(nan, nan, nan), st.Estimate(1.0, 0.9, 1.1)) == "n/a"


def test_sim_provenance(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    assert pv.sim_provenance(d).kind == "unknown"
    meta = {"size": "default", "complete": True, "p_values": None, "seeds": None,
            "base_seed": 0, "n_seeds": 5, "cells_total": 690}
    (d / "sweep.json").write_text(json.dumps(meta))
    assert pv.sim_provenance(d).is_default
    (d / "sweep.json").write_text(json.dumps({**meta, "size": "quick"}))
    assert pv.sim_provenance(d).kind == "quick"
    (d / "sweep.json").write_text(json.dumps({**meta, "p_values": [0.1]}))
    prov = pv.sim_provenance(d)
    assert prov.kind == "custom" and "p_values" in prov.reasons[0]


def _llm_dir(root: Path, command: str, configs: list[dict], seeds: int, steps: int) -> Path:
    d = root / "llm"
    d.mkdir(parents=True)
    rows = [{"method": c["method"], "seed": s, "iteration": it}
            for c in configs for s in range(seeds) for it in range(steps + 1)]
    pd.DataFrame(rows).to_parquet(d / "metrics.parquet")
    (d / "summary.json").write_text(json.dumps({"command": command, "configs": configs}))
    return d


def test_llm_provenance(tmp_path):
    from experiments.llm_srpo import make_configs, parse_args

    default = make_configs(parse_args([]))
    first = [c.to_dict() for c in default[:4]]
    steps = first[0]["steps"]
    d = _llm_dir(tmp_path / "a", "python experiments/llm_srpo.py", first, 5, steps)
    assert pv.llm_provenance(d).is_default, pv.llm_provenance(d).reasons
    quick = [c.to_dict() for c in make_configs(parse_args(["--quick"]))]
    d = _llm_dir(tmp_path / "b", "python experiments/llm_srpo.py --quick", quick, 1,
                 quick[0]["steps"])
    prov = pv.llm_provenance(d)
    assert prov.kind == "quick" and any("--quick" in r for r in prov.reasons)
    assert "1 seeds" in prov.description
    d = _llm_dir(tmp_path / "c", "python experiments/llm_srpo.py --threads 1", first, 3, steps)
    assert pv.llm_provenance(d).kind == "custom"          # 3 seeds of 5
    lr = [{**c, "lr": 3e-4} for c in first]
    d = _llm_dir(tmp_path / "d", "python experiments/llm_srpo.py --lr 3e-4", lr, 5, steps)
    assert any("lr" in r for r in pv.llm_provenance(d).reasons)


def test_compare_never_publishes_smoke_runs(tmp_path, monkeypatch):
    """compare.py copies into the published figures/ only from full default runs."""
    import experiments.compare as cmp
    from tests.experiments.test_compare import _cpi_fixture, _llm_fixture

    published = tmp_path / "published"
    published.mkdir()
    (published / "compare_phase_map.png").write_bytes(b"published")
    monkeypatch.setattr(cmp, "DEFAULT_FIGURES", published)
    cpi, llm = _cpi_fixture(tmp_path), _llm_fixture(tmp_path)
    (cpi / "sweep.json").write_text(json.dumps({"size": "default", "complete": True}))
    (llm / "summary.json").write_text(json.dumps({
        "command": "python experiments/llm_srpo.py --quick", "configs": []}))
    res = cmp.run_comparison(cpi, llm, tmp_path / "out", figures_copy=published, n_boot=20)
    assert res.copied == [] and "not copied" in res.not_copied and "--quick" in res.not_copied
    assert (published / "compare_phase_map.png").read_bytes() == b"published"
    assert (tmp_path / "out" / "compare_phase_map.png").stat().st_size > 1000
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert "QUICK run, not published" in md and str(llm) in md
    # (another destination than the published folder receives the copies: test_compare.py)
    # full default inputs are published
    monkeypatch.setattr(pv, "llm_provenance", lambda d, metrics=None: pv.RunProvenance(
        "language model", str(d), "default", "fixture"))
    res = cmp.run_comparison(cpi, llm, tmp_path / "out", figures_copy=published, n_boot=20)
    assert len(res.copied) == 10 and (published / "compare_phase_map.png").read_bytes() != \
        b"published"


# ------------------------------------------------------------------------ end to end
def _run(args, cwd, timeout=900):
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_llm_coverage_quick_end_to_end(tmp_path):
    """--quick: measure, predict, train, then compare.py draws the figure; a rerun resumes."""
    out, cache = tmp_path / "cov", tmp_path / "cache"
    base = [str(REPO / "experiments" / "llm_coverage.py"), "--quick", "--out", str(out),
            "--cache-dir", str(cache)]
    # the LM runs refuse to start before a prediction exists
    proc = subprocess.run([sys.executable, *base[:1], "train", *base[1:]], capture_output=True,
                          text=True, cwd=tmp_path, env=ENV, timeout=900)
    assert proc.returncode != 0 and "prediction" in proc.stderr + proc.stdout
    assert not (out / "metrics.parquet").exists()
    first = _run(base, tmp_path)
    assert "smoke size (--quick)" in first and "J 0.000 -> 0.000 is expected" in first
    pre = json.loads((out / "pre_rl.json").read_text())
    pred = json.loads((out / "prediction.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert [s["hard_step"] for s in pre["settings"]] == [1, 4]
    assert pred["lm_runs_present_when_written"] is False
    assert summary["size"] == "quick" and summary["complete"]
    for s in pre["settings"]:
        assert 0 < s["p_state"]["value"] <= 1 and s["p_reach"]["value"] is not None
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert set(metrics["method"]) == {"grpo", "rrpo", "srpo", "oracle"}
    assert set(metrics["hard_step"]) == {1, 4}
    stamp = (out / "1" / "srpo-s0" / "metrics.parquet").stat().st_mtime_ns
    again = _run(base, tmp_path)
    assert "reusing" in again
    assert (out / "1" / "srpo-s0" / "metrics.parquet").stat().st_mtime_ns == stamp
    figs = tmp_path / "figs"
    text = _run([str(REPO / "experiments" / "compare.py"), "--only", "coverage", "--coverage",
                 str(out), "--out", str(tmp_path / "cmp"), "--figures-dir", str(figs),
                 "--n-boot", "20"], tmp_path)
    assert "QUICK run, not published" in text
    for f in ("compare_coverage.png", "compare_coverage.pdf", "compare_coverage.md"):
        assert (tmp_path / "cmp" / f).stat().st_size > 500
    md = (tmp_path / "cmp" / "compare_coverage.md").read_text()
    assert "Drawn from:" in md and "hard step" in md and "## Verdict" in md
