"""The coverage knob of the synthetic task (hard step position) and what it strictly needs in the
warm start and the trainer: additive, the plain task and its caches unchanged."""

import hashlib
import json

import numpy as np
import pytest

from srpo.config import _KEY_IF_SET, _NOT_IN_KEY
from srpo.tasks import ModularArithmeticTask, apply_op, format_step
from srpo.trainer import TRAINER_VERSION, TrainConfig, build_task
from srpo.warmstart import MisconceptionWriter, WarmStartConfig


def _digest(problems) -> str:
    text = "\n".join(f"{p.question}|{p.answer}" for p in problems)
    return hashlib.sha256(text.encode()).hexdigest()


def test_plain_task_bit_identical():
    # Reference: the plain generator's draws written out by hand (start, then ops, then operands).
    rng_ref = np.random.default_rng(123)
    task = ModularArithmeticTask(n_steps=6)
    expected = []
    for _ in range(50):
        start = int(rng_ref.integers(0, 10))
        op_index = rng_ref.integers(0, 3, size=6)
        operands = rng_ref.integers(1, 10, size=6)
        expected.append(task.make_problem(start, [(("+", "-", "*")[int(i)], int(x))
                                                  for i, x in zip(op_index, operands)]))
    got = task.sample(50, np.random.default_rng(123))
    assert got == expected
    # the knob's fields at their defaults change nothing
    same = ModularArithmeticTask(n_steps=6, hard_steps=(), hard_ops=("*",), hard_operands=(),
                                 easy_operands=())
    assert _digest(same.sample(50, np.random.default_rng(123))) == _digest(got)


@pytest.mark.parametrize("position", [1, 4, 10])
def test_hard_step_position_and_operators(position):
    task = ModularArithmeticTask(n_steps=10, ops=("+",), hard_steps=(position,), hard_ops=("*",),
                                 hard_operands=(3, 7, 9), easy_operands=(1,))
    for p in task.sample(200, np.random.default_rng(position)):
        assert p.n_steps == 10
        assert task.hard_step_of(p) == position
        op, x = p.ops[position - 1]
        assert op == "*" and x in (3, 7, 9)
        easy = [pair for i, pair in enumerate(p.ops, start=1) if i != position]
        assert easy == [("+", 1)] * 9


def test_same_stream_same_problems_at_every_position():
    """Settings differ only in where the hard step sits: same seed, same starts and easy steps."""
    def draw(position):
        t = ModularArithmeticTask(n_steps=8, ops=("+", "-"), hard_steps=(position,),
                                  hard_operands=(3,))
        return [(p.start, [pair for i, pair in enumerate(p.ops, 1) if i != position])
                for p in t.sample(20, np.random.default_rng(5))]
    a, b = draw(1), draw(5)
    assert [x[0] for x in a] == [x[0] for x in b]              # same starts
    assert all(len(x[1]) == 7 for x in a)


def test_mixture_of_positions_is_uniform():
    task = ModularArithmeticTask(n_steps=5, ops=("+",), hard_steps=(1, 2, 3, 4, 5),
                                 easy_operands=(1,))
    counts = np.bincount([task.hard_step_of(p) for p in task.sample(5000, np.random.default_rng(0))],
                         minlength=6)[1:]
    assert counts.min() > 900 and counts.max() < 1100


def test_bijective_steps_never_recover():
    """Mod 10 with additions and multiplications by units: one wrong step loses the answer."""
    task = ModularArithmeticTask(n_steps=6, ops=("+",), hard_steps=(3,), hard_operands=(3, 7, 9),
                                 easy_operands=(1, 2, 5))
    rng = np.random.default_rng(0)
    for p in task.sample(300, rng):
        thoughts = task.reference_solution(p, 0.0, rng)
        k = int(rng.integers(0, 6))
        # rewrite step k+1 with a wrong value and propagate correctly from it
        values = p.values()
        bad = (values[k + 1] + int(rng.integers(1, 10))) % 10
        prev = values[k]
        wrong = thoughts[:k]
        for i in range(k, 6):
            op, x = p.ops[i]
            v = bad if i == k else apply_op(prev, op, x, 10)
            wrong.append(format_step(prev, op, x, v, final=i == 5))
            prev = v
        assert task.first_error(p, wrong) == k + 1
        assert task.grade(p, "".join(wrong)) == 0.0


def test_bad_knob_values():
    with pytest.raises(ValueError, match="hard_steps"):
        ModularArithmeticTask(n_steps=4, hard_steps=(5,))
    with pytest.raises(ValueError, match="hard_ops"):
        ModularArithmeticTask(hard_ops=("/",))
    with pytest.raises(ValueError, match="hard_operands"):
        ModularArithmeticTask(modulus=10, hard_steps=(1,), hard_operands=(10,))
    with pytest.raises(ValueError, match="easy_operands"):
        ModularArithmeticTask(modulus=5, hard_steps=(1,), easy_operands=(0,))


def test_warmstart_key_and_misconceptions():
    # the plain warm start's key (hence its cache and model) is what it was before the knob
    plain = WarmStartConfig()
    fields = {k: v for k, v in plain.__dict__.items() if k not in (
        "eval_size", "hard_steps", "hard_ops", "hard_operands", "easy_operands",
        "confused_ops", "init", "followup_fraction", "hard_fraction", "family")}
    payload = json.dumps({"v": 1, **fields}, sort_keys=True)
    assert plain.key == hashlib.sha256(payload.encode()).hexdigest()[:16]
    # family: confusions only on the hard operator's facts that the task asks
    fam = WarmStartConfig(n_steps=6, ops=("+",), hard_steps=(1, 2, 3, 4, 5, 6), hard_ops=("*",),
                          hard_operands=[3, 7, 9], easy_operands=[1], confused_ops=["*"],
                          confused_fraction=0.5)
    assert fam.key != plain.key and fam.hard_operands == (3, 7, 9)
    writer = MisconceptionWriter(fam)
    assert writer.wrong_value and all(op == "*" and x in (3, 7, 9)
                                      for (_l, op, x) in writer.wrong_value)
    assert 0.3 < len(writer.wrong_value) / 30 < 0.7
    task = fam.task()
    assert task.hard_steps == (1, 2, 3, 4, 5, 6) and task.easy_operands == (1,)


def test_trainer_task_options():
    cfg = TrainConfig(task_steps=5, task_ops=("+",), task_options={
        "hard_steps": [2], "hard_ops": ["*"], "hard_operands": [3], "easy_operands": [1]},
        eval_size=4)
    task, problems, _kind = build_task(cfg)
    assert task.hard_steps == (2,) and all(task.hard_step_of(p) == 2 for p in problems)
    # plain runs keep their run keys: task_options enters the key only when set
    d = TrainConfig().to_dict()
    for k in (*_NOT_IN_KEY, "engine", "task_options", *_KEY_IF_SET):
        d.pop(k)
    d["trainer_version"] = TRAINER_VERSION
    old = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    assert TrainConfig().run_key() == old
    assert cfg.run_key() != TrainConfig(task_steps=5, task_ops=("+",), eval_size=4).run_key()
    with pytest.raises(ValueError, match="task_options keys must be among"):
        TrainConfig(task_options={"n_steps": 3})


def test_warmstart_stages(tmp_path):
    """A stage continues the previous stage's model (trained first, then cached)."""
    from srpo.model import load_model
    from srpo.warmstart import warm_start

    tiny = dict(steps=2, n_layer=1, d_model=16, n_head=2, batch_size=4, eval_size=2, n_steps=3,
                num_threads=1)
    stage1 = WarmStartConfig(**tiny)
    # a second stage of 0 steps is the first stage's model, exactly
    stage2 = WarmStartConfig(**{**tiny, "steps": 0, "lr": 1e-3, "init": dict(tiny)})
    assert stage2.key not in (stage1.key, WarmStartConfig(**{**tiny, "lr": 1e-3}).key)
    path2 = warm_start(stage2, cache_dir=tmp_path)
    path1 = tmp_path / "warmstart" / stage1.key
    assert (path1 / "warmstart.json").is_file()          # the first stage was trained and cached
    w1 = dict(load_model(path1)[0].named_parameters())
    w2 = dict(load_model(path2)[0].named_parameters())
    assert w1.keys() == w2.keys() and all((w1[k] == w2[k]).all() for k in w1)
    fresh = dict(load_model(warm_start(WarmStartConfig(**{**tiny, "steps": 0}),
                                       cache_dir=tmp_path))[0].named_parameters())
    assert any(not (w1[k] == fresh[k]).all() for k in w1)  # stage 1 did train
    with pytest.raises(ValueError, match="init"):
        WarmStartConfig(**{**tiny, "d_model": 32, "init": dict(tiny)})


def test_hard_fraction_knob():
    """hard_fraction: the share of problems with the hard step (binomial); the problems that
    have it are drawn as at hard_fraction 1 (same operands); eval_hard_only evaluates on hard
    problems only; out-of-range values and a fraction without a hard step are refused."""
    import dataclasses

    import pytest

    base = ModularArithmeticTask(n_steps=6, ops=("+",), hard_steps=(2,), hard_operands=(3, 7, 9),
                                 easy_operands=(1,))
    part = dataclasses.replace(base, hard_fraction=0.2, eval_hard_only=True)
    got = part.sample(4000, np.random.default_rng(0))
    hard = [p for p in got if part.hard_step_of(p) is not None]
    assert abs(len(hard) / 4000 - 0.2) < 4 * np.sqrt(0.2 * 0.8 / 4000)
    assert {p.ops[1][1] for p in hard} == {3, 7, 9}
    assert all(p.ops[1] == ("+", 1) for p in got if part.hard_step_of(p) is None)
    assert all(part.hard_step_of(p) == 2 for p in part.sample_eval(50, np.random.default_rng(1)))
    assert base.sample_eval(20, np.random.default_rng(2)) == base.sample(
        20, np.random.default_rng(2))
    with pytest.raises(ValueError, match="hard_fraction must be in"):
        dataclasses.replace(base, hard_fraction=1.5)
    with pytest.raises(ValueError, match="needs hard_steps"):
        ModularArithmeticTask(hard_fraction=0.5)


def test_later_fields_leave_earlier_keys_unchanged(tmp_path):
    """Fields added to WarmStartConfig later (``family``, ``hard_fraction``) stay out of the keys
    at their defaults: the follow-up stage's ``init`` (embedded in the run key of every method
    with a follow-up warm start) and the run keys of the committed runs are what they were."""
    from experiments.llm_srpo import parse_args
    from srpo.warmstart import followup_stage

    init = followup_stage(WarmStartConfig())["init"]
    assert "family" not in init and "hard_fraction" not in init
    assert followup_stage(WarmStartConfig(hard_fraction=0.5))["init"]["hard_fraction"] == 0.5
    # the run keys of runs/llm (plain GRPO) and runs/llm_all (GRPO after the follow-up stage)
    plain = parse_args(["--out", str(tmp_path / "a")]).configs[0]
    every = parse_args(["--method", "all", "--out", str(tmp_path / "b")]).configs[0]
    assert (plain.method, plain.run_key()) == ("grpo", "e4cdddd1e6abb1c6")
    assert (every.method, every.run_key()) == ("grpo", "4021f9f6a22ffcdc")
