"""The tabular rung runs the language model's own method code (issue 19).

* ``test_both_rungs_build_the_same_batch``: the same scripted thoughts fed to the language
  model's side (its tokenizer, ``TokenizerCodec``, ``TaskScorer``) and to the tabular side
  (``TabularEngine``, ``ThoughtCodec``, ``ThoughtScorer``) give the same buffer -- samples,
  groups, rewards, thought-level masks, reset events, chain counts -- and the same advantages,
  for GRPO, RRPO, SRPO (set localizer), the oracle, every split and the no-mask ablation.
* ``test_golden_buffer``: a hand-derived buffer both rungs must build (so a change of the shared
  buffer code fails too, not only a change of one rung's seams).
* ``test_tabular_training_goes_through_the_registry``: ``train_tabular`` builds its batches with
  the registered plan and its update with ``PolicyUpdater``.
* the table model's log-probs, the exact evaluation and the set localizer against independent
  references.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srpo.localize import OracleLocalizer, RandomLocalizer
from srpo.methods import RolloutContext, TaskScorer, TokenizerCodec, get_method
from srpo.tabular import (
    ArithmeticThoughtMDP,
    SetLocalizer,
    TablePolicy,
    TabularConfig,
    arithmetic_env,
    make_context,
    train_tabular,
    tree_env,
)
from srpo.tasks import ModularArithmeticTask
from srpo.tokenizer import build_tokenizer
from srpo.trainer import advantages_of
from tests.srpo.ladder_script import (
    ExplicitScript,
    ScriptedLMEngine,
    ScriptedTabularEngine,
    SeededScript,
)

pytestmark = pytest.mark.timeout(120)

TASK = ModularArithmeticTask(
    n_steps=4,
    modulus=10,
    ops=("+",),
    hard_steps=(2,),
    hard_ops=("*",),
    hard_operands=(3, 7, 9),
    easy_operands=(1,),
    hard_fraction=0.5,
)
WRONG = {(4, "*", 7): 5, (2, "*", 3): 1}


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _env():
    return arithmetic_env(TASK, WRONG, 0.6, 0.02, TASK.sample(8, np.random.default_rng(3)))


def _localizer(method: str, beta: float, gamma: float):
    kind = get_method(method).localizer
    return {
        "none": None,
        "random": RandomLocalizer(),
        "oracle": OracleLocalizer(TASK),
        "self": SetLocalizer(TASK, beta, gamma),
    }[kind]


def _batches(tok, problems, script_factory, method, split="1x4", mask=True, beta=0.3, gamma=0.8):
    """(LM batch, LM advantages, tabular batch, tabular advantages, tabular mdp)."""
    env = _env()
    cfg = TabularConfig(method=method, split=split, mask_prefix=mask, beta=beta, gamma=gamma)
    tc = cfg.train_config()
    codec = TokenizerCodec(tok, TASK)
    lm_ctx = RolloutContext(
        engine=ScriptedLMEngine(tok, codec, problems, script_factory()),
        codec=codec,
        scorer=TaskScorer(TASK),
        task=TASK,
        rng=np.random.default_rng(7),
        generator=None,
        localizer=_localizer(method, beta, gamma),
        options=tc.options(),
        split=split,
        mask_prefix=mask,
    )
    policy = TablePolicy(env.mdp, env.logits0)
    tab_engine = ScriptedTabularEngine(env.mdp, policy, problems, script_factory())
    tab_ctx = make_context(
        env, tab_engine, cfg, tc, np.random.default_rng(7), np.random.default_rng(0)
    )
    spec = get_method(method)
    lm = spec.plan(lm_ctx, problems)
    tab = spec.plan(tab_ctx, problems)
    return (
        lm,
        advantages_of(spec, tc, lm, lm.arrays()),
        tab,
        advantages_of(spec, tc, tab, tab.arrays()),
        env.mdp,
    )


def _lm_view(tok, batch):
    """Thought-level view of a language-model batch: per sample (prompt, group, reset group,
    kind, reward, correct, event, thoughts, thought mask, prefix thoughts)."""
    delim = tok.convert_tokens_to_ids("</thought>")
    rows = []
    for s in batch.samples:
        ids, spans, start = s.response_ids, [], 0
        for t, x in enumerate(ids):
            if x == delim:
                spans.append((start, t + 1))
                start = t + 1
        texts = [tok.decode(ids[a:b]) for a, b in spans]
        mask = []
        for a, b in spans:
            values = set(s.loss_mask[a:b])
            assert len(values) == 1, "a thought's tokens must share one mask value"
            mask.append(values.pop())
        prefix = sum(b <= s.prefix_len for _a, b in spans)
        rows.append(
            (
                s.prompt_index,
                s.group_id,
                s.is_reset_group,
                s.kind,
                s.reward,
                s.correct,
                s.event_index,
                tuple(texts),
                tuple(mask),
                prefix,
            )
        )
    return rows


def _tab_view(mdp, batch):
    return [
        (
            s.prompt_index,
            s.group_id,
            s.is_reset_group,
            s.kind,
            s.reward,
            s.correct,
            s.event_index,
            tuple(mdp.thought_texts(s.prompt_ids, s.response_ids)),
            tuple(s.loss_mask),
            s.prefix_len,
        )
        for s in batch.samples
    ]


def _events(batch):
    return [
        (
            e.prompt_index,
            e.n,
            e.k,
            e.source,
            e.fallback,
            e.raw,
            e.first_error,
            e.deviation,
            e.clean,
            tuple(e.suffix_rewards),
            tuple(e.suffix_correct),
        )
        for e in batch.events
    ]


def _counts(batch):
    a = batch.accounting
    return (
        a.chains_fresh,
        a.chains_discarded,
        a.chains_suffix,
        a.localization_calls,
        tuple(batch.first_round_rewards),
        batch.prompts_reset,
        batch.n_prompts,
    )


def _assert_same(tok, lm, lm_adv, tab, tab_adv, mdp):
    assert _lm_view(tok, lm) == _tab_view(mdp, tab)
    assert _events(lm) == _events(tab)
    assert _counts(lm) == _counts(tab)
    np.testing.assert_allclose(lm_adv, tab_adv, atol=1e-12)


CASES = [
    ("grpo", "1x4", True),
    ("rrpo", "1x4", True),
    ("srpo", "1x4", True),
    ("oracle", "1x4", True),
    ("rrpo", "2x4", True),
    ("srpo", "1x8", True),
    ("oracle", "2x4", True),
    ("rrpo", "1x4", False),
]


@pytest.mark.parametrize("method,split,mask", CASES)
def test_both_rungs_build_the_same_batch(tok, method, split, mask):
    problems = TASK.sample(6, np.random.default_rng(11))
    p_right = [0.55 if TASK.hard_step_of(p) else 0.97 for p in problems]
    lm, lm_adv, tab, tab_adv, mdp = _batches(
        tok, problems, lambda: SeededScript(p_right, seed=5), method, split, mask
    )
    assert lm.events or method == "grpo"  # the script does produce resets
    _assert_same(tok, lm, lm_adv, tab, tab_adv, mdp)


# ------------------------------------------------------------------------------ golden buffer
def _golden_problems():
    # P0: 3 -> 4 (+1) -> 8 (*7) -> 9 -> 0; P1: no hard step, 0 -> 1 -> 2 -> 3 -> 4
    return [
        TASK.make_problem(3, [("+", 1), ("*", 7), ("+", 1), ("+", 1)]),
        TASK.make_problem(0, [("+", 1)] * 4),
    ]


def _golden_script():
    ok0, bad0, ok1 = [4, 8, 9, 0], [4, 1, 2, 3], [1, 2, 3, 4]
    return ExplicitScript(
        {
            (0, ()): [ok0, bad0, bad0, ok0, ok0],  # c1 is the parent, base = c0 c2 c3 c4
            (1, ()): [ok1] * 12,  # no failure within the cap: one GRPO group
            (0, (4,)): [[8, 9, 0], [1, 2, 3], [8, 9, 0], [5, 6, 7]],  # suffixes after k = 2
        }
    )


@pytest.mark.parametrize("mask", [True, False])
def test_golden_buffer(tok, mask):
    """Hand-derived: P0 finds its parent (c1, first error at step 2) in the first five chains,
    base = c0 c2 c3 c4 with rewards 1 0 1 1; P1 never fails within the 12-chain cap, so its first
    8 chains form one group and 4 are discarded; the oracle resets P0 at k = 2 (prefix: one
    thought) and its 4 suffixes score 1 0 1 0."""
    lm, lm_adv, tab, tab_adv, mdp = _batches(
        tok, _golden_problems(), _golden_script, "oracle", mask=mask
    )
    z = np.sqrt(3.0)  # rewards 1 0 1 1: mean 3/4, population std sqrt(3)/4
    want_adv = [1 / z, -z, 1 / z, 1 / z] + [0.0] * 8 + [1, -1, 1, -1]
    for view in (_tab_view(mdp, tab), _lm_view(tok, lm)):
        assert [r[1] for r in view] == [0] * 4 + [1] * 8 + [2] * 4
        assert [r[4] for r in view] == [1, 0, 1, 1] + [1] * 8 + [1, 0, 1, 0]
        assert [r[2] for r in view] == [False] * 12 + [True] * 4
        masks = [r[8] for r in view]
        assert masks[:12] == [(1, 1, 1, 1)] * 12
        want = (0 if mask else 1, 1, 1, 1)
        assert masks[12:] == [want] * 4
        assert [r[9] for r in view[12:]] == [1] * 4
    for adv in (tab_adv, lm_adv):
        np.testing.assert_allclose(adv, want_adv, atol=1e-12)
    assert _events(tab) == [
        (0, 4, 2, "oracle", False, 2, 2, 0, True, (1.0, 0.0, 1.0, 0.0), (True, False, True, False))
    ]
    assert _counts(tab)[:3] == (17, 4, 4)
    assert _counts(tab)[4:] == ((1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0), 1, 2)
    _assert_same(tok, lm, lm_adv, tab, tab_adv, mdp)


# ------------------------------------------------------------------------- one code path
def test_tabular_training_goes_through_the_registry(monkeypatch):
    import srpo.update as update
    from srpo.methods import resets

    calls = {"plan": 0, "update": 0}
    plan, upd = resets.reset_batch, update.PolicyUpdater.update

    def counted_plan(ctx, problems):
        calls["plan"] += 1
        return plan(ctx, problems)

    def counted_update(self, *a, **k):
        calls["update"] += 1
        return upd(self, *a, **k)

    monkeypatch.setattr(update.PolicyUpdater, "update", counted_update)
    import dataclasses

    import srpo.methods as registry

    patched = dataclasses.replace(get_method("rrpo"), plan=counted_plan)
    monkeypatch.setitem(registry.METHODS, "rrpo", patched)
    frame, resets_frame = train_tabular(_env(), TabularConfig(method="rrpo", steps=3))
    assert calls == {"plan": 3, "update": 3}
    assert len(frame) == 4 and len(resets_frame) > 0


# ------------------------------------------------------------------- model and references
def test_table_logprobs_are_the_sampling_distribution():
    """token_logprobs of the table model at every response token equals log of the
    probability the engine sampled it with (states recomputed step by step)."""
    from srpo.logprobs import token_logprobs
    from srpo.tabular import TabularEngine

    env = _env()
    mdp = env.mdp
    policy = TablePolicy(
        mdp, env.logits0 + np.random.default_rng(0).normal(0, 1, env.logits0.shape)
    )
    engine = TabularEngine(mdp, policy, temperature=0.7)
    problems = TASK.sample(5, np.random.default_rng(2))
    chains = [
        c
        for g in engine.generate([mdp.prompt_ids(p) for p in problems], 3, np.random.default_rng(1))
        for c in g
    ]
    lp = token_logprobs(
        policy, [c.prompt_ids for c in chains], [c.response_ids for c in chains], temperature=0.7
    )
    for c, row in zip(chains, lp):
        ops, true = mdp.problem_arrays(np.array([c.prompt_ids]))
        written = np.array([c.response_ids])
        for h, a in enumerate(c.response_ids):
            st = mdp.step_states(ops, true, written, h)[0]
            assert row[h].item() == pytest.approx(np.log(engine.probs[st, a]), abs=1e-5)


def test_exact_success_matches_sampling():
    env = _env()
    mdp = env.mdp
    probs = np.exp(env.logits0)
    probs /= probs.sum(axis=1, keepdims=True)
    problems = TASK.sample(4, np.random.default_rng(9))
    prompts = np.array([mdp.prompt_ids(p) for p in problems])
    exact = mdp.success_probability(probs, prompts)
    from srpo.tabular import TabularEngine

    engine = TabularEngine(mdp, TablePolicy(mdp, np.log(probs)))
    n = 4000
    groups = engine.generate(prompts.tolist(), n, np.random.default_rng(4))
    for p, g, want in zip(problems, groups, exact):
        got = np.mean([TASK.grade(p, c.text) for c in g])
        assert abs(got - want) < 4 * np.sqrt(want * (1 - want) / n) + 1e-3


def test_set_localizer_precision_and_recall():
    """Realised on failed chains: precision 1 - beta (answers with k <= first error, where a
    later step exists) and recall gamma (answers, not fallbacks)."""
    from srpo.localize import ParentView

    loc = SetLocalizer(TASK, beta=0.3, gamma=0.8)
    p = _golden_problems()[0]
    thoughts = ArithmeticThoughtMDP(TASK).thought_texts(
        ArithmeticThoughtMDP(TASK).prompt_ids(p), [4, 1, 2, 3]
    )
    res = loc.locate([ParentView(p, p.question, thoughts)] * 4000, np.random.default_rng(0))
    answered = [r for r in res if not r.is_fallback]
    assert len(answered) / len(res) == pytest.approx(0.8, abs=0.025)
    clean = np.mean([r.k <= 2 for r in answered])
    assert clean == pytest.approx(0.7, abs=0.03)
    assert {r.k for r in answered if r.k > 2} == {3, 4}


def test_same_seed_same_numbers_and_tree_rung():
    from cpi.envs import first_error_tree

    env = _env()
    a = train_tabular(env, TabularConfig(method="srpo", steps=4, seed=3, beta=0.2, gamma=0.9))
    b = train_tabular(env, TabularConfig(method="srpo", steps=4, seed=3, beta=0.2, gamma=0.9))
    assert a[0].equals(b[0]) and a[1].equals(b[1])
    tree = tree_env(first_error_tree(horizon=4, n_actions=3, p_correct=0.6, seed=1))
    frame, resets = train_tabular(tree, TabularConfig(method="oracle", steps=5, lr=0.1))
    assert frame["J"].iloc[-1] > frame["J"].iloc[0] and (resets["clean"] == True).all()  # noqa: E712


def test_sgd_steps_by_the_gradient():
    """optimizer='sgd': one update moves the table by exactly -lr x its gradient (no Adam
    normalisation)."""
    env = _env()
    cfg = TabularConfig(method="grpo", steps=1, optimizer="sgd", lr=0.5, grad_clip=None)
    tc = cfg.train_config()
    from srpo.setup import make_optimizer

    policy = TablePolicy(env.mdp, env.logits0)
    opt = make_optimizer([policy.table], tc)
    grad = torch.randn_like(policy.table)
    before = policy.table.detach().clone()
    policy.table.grad = grad.clone()
    opt.step()
    torch.testing.assert_close(policy.table.detach() - before, -0.5 * grad)
    assert isinstance(
        make_optimizer([policy.table], TabularConfig().train_config()), torch.optim.AdamW
    )


def test_mutation_lines_exist():
    """Every line ``tests/srpo/mutate_ladder.py`` replaces is still in the source (a stale
    mutation would silently test nothing)."""
    from pathlib import Path

    from tests.srpo.mutate_ladder import MUT

    root = Path(__file__).resolve().parents[2]
    for name, path, old, new in MUT:
        src = (root / path).read_text()
        assert old in src, f"{name}: {path} no longer contains the mutated line"
        assert new not in src, f"{name}: {path} holds the mutation"
