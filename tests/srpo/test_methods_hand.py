"""Every method's plan, advantages and gradient masks on scripted chains, against hand computation.

No model: ``tests/srpo/scripted.py`` hands out scripted continuations (2 tokens per thought) with
known rewards. Each expected number below is worked out by hand in the comment next to it, not by
the code under test. The mutations these tests catch are listed in the report of issue 17 (a
wrong sibling mean in SPO-Tree, TreeRL's 1/sqrt(leaves) missing, SCoRe's shaping sign,
Critique-GRPO's f(p) on the wrong rows, the offset's direction, the prefix mask).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from srpo.config import TrainConfig
from srpo.loss import POLICY_LOSSES
from srpo.methods import get_method
from srpo.trainer import advantages_of
from tests.srpo.scripted import ScriptEngine, SLocalizer, SProblem, context

P = (1, 2)  # the prompt's token ids


def _adv(name, batch, arrays=None, **cfg):
    config = TrainConfig(method=name, **cfg)
    arrays = batch.arrays() if arrays is None else arrays
    return advantages_of(get_method(name), config, batch, arrays)


# ------------------------------------------------------------------------------------------------
# GRPO
# ------------------------------------------------------------------------------------------------


def test_grpo_groups_zscores_and_the_release_estimator():
    chains = [[10, 11], [12, 13], [14, 15], [16, 17]]
    prob = SProblem(P, rewards={(10, 11): 1.0})
    eng = ScriptEngine({P: chains})
    batch = get_method("grpo").plan(context(eng, rollouts_per_prompt=4), [prob])
    assert [s.reward for s in batch.samples] == [1.0, 0.0, 0.0, 0.0]
    assert all(s.loss_mask == [1, 1] for s in batch.samples)
    # mean 1/4, population std sqrt(1/4 * 3/4) = 0.4330127: (3/4) / 0.4330127 = sqrt(3)
    np.testing.assert_allclose(
        _adv("grpo", batch, rollouts_per_prompt=4),
        [math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3)],
        rtol=1e-12,
    )
    # release: sample std sqrt((9/16 + 3/16) / 3) = 1/2, plus 1e-6
    np.testing.assert_allclose(
        _adv("grpo", batch, rollouts_per_prompt=4, adv_std="unbiased", adv_eps=1e-6),
        [0.75 / 0.500001, -0.25 / 0.500001, -0.25 / 0.500001, -0.25 / 0.500001],
        rtol=1e-12,
    )
    assert batch.accounting.generated_tokens == eng.generated == 8


# ------------------------------------------------------------------------------------------------
# Resets (rrpo / srpo / oracle / srpo-offset share the plan; they differ in the localizer)
# ------------------------------------------------------------------------------------------------


def _reset_setup(offset=0, mask_prefix=True, correct=None):
    # fresh chains: success, success, failure (3 thoughts), success, success -> base 0,1,3,4
    fresh = [[10, 11], [12, 13], [20, 21, 22, 23, 24, 25], [14, 15], [16, 17]]
    rewards = {(10, 11): 1.0, (12, 13): 1.0, (14, 15): 1.0, (16, 17): 1.0}
    kept = {3: [20, 21, 22, 23], 2: [20, 21], 1: []}  # prefix of reset step k: thoughts 1..k-1
    suffix_scripts = {k: [[30 + j, 40 + j] for j in range(4)] for k in kept}
    script = {P: fresh}
    for k, prefix in kept.items():
        script.setdefault(P + tuple(prefix), []).extend(suffix_scripts[k])
    for j in range(4):  # suffix 0 of every reset succeeds
        for prefix in kept.values():
            rewards[tuple(prefix) + (30 + j, 40 + j)] = 1.0 if j == 0 else 0.0
    prob = SProblem(P, rewards=rewards, first_error=2, correct=correct or {})
    eng = ScriptEngine(script)
    loc = SLocalizer([3])
    ctx = context(
        eng,
        localizer=loc,
        rollouts_per_prompt=8,
        localization_offset=offset,
        mask_prefix=mask_prefix,
    )
    return get_method("srpo").plan(ctx, [prob]), eng, loc


@pytest.mark.parametrize("offset,k,prefix", [(0, 3, 4), (1, 2, 2), (5, 1, 0)])
def test_reset_prefix_mask_groups_and_offset(offset, k, prefix):
    batch, eng, loc = _reset_setup(offset)
    base = [s for s in batch.samples if not s.is_reset_group]
    suffix = [s for s in batch.samples if s.is_reset_group]
    assert [s.response_ids for s in base] == [[10, 11], [12, 13], [14, 15], [16, 17]]
    assert len(loc.seen) == 1 and loc.seen[0].response_ids == [20, 21, 22, 23, 24, 25]
    ev = batch.events[0]
    # the localizer said 3; the offset moves it N earlier, floor 1; the verifier's error is 2
    assert (ev.k, ev.n, ev.prefix_tokens, ev.first_error) == (k, 3, prefix, 2)
    assert ev.deviation == k - 2 and ev.clean == (k <= 2)
    for s in suffix:
        assert s.loss_mask == [0] * prefix + [1, 1] and s.prefix_len == prefix
    # base group rewards 1,1,1,1 -> zeros; suffix group 1,0,0,0 -> sqrt(3), -1/sqrt(3) x 3
    r3 = 1 / math.sqrt(3)
    np.testing.assert_allclose(
        _adv("srpo", batch), [0, 0, 0, 0, math.sqrt(3), -r3, -r3, -r3], rtol=1e-12, atol=1e-15
    )
    acc = batch.accounting
    assert (acc.tokens_base, acc.tokens_parent, acc.tokens_suffix) == (8, 6, 8)
    assert acc.generated_tokens == eng.generated


def test_no_mask_trains_the_copied_prefix():
    batch, _, _ = _reset_setup(0, mask_prefix=False)
    assert all(s.loss_mask == [1] * 6 for s in batch.samples if s.is_reset_group)


def test_failed_parent_is_chosen_by_correct_not_by_reward():
    """A partial-credit chain (reward 0.9: not all tests pass, issue 18) is a failure: the
    parent, although its reward is above any 0.5 threshold."""
    fresh = [[10, 11], [12, 13], [14, 15], [16, 17], [18, 19]]
    prob = SProblem(
        P,
        rewards={(10, 11): 0.9, (12, 13): 1.0, (14, 15): 1.0, (16, 17): 1.0, (18, 19): 1.0},
        correct={(10, 11): False},
    )
    eng = ScriptEngine({P: fresh + [[50, 51]] * 4})  # 1-thought parent: k = 1, empty prefix
    ctx = context(eng, localizer=SLocalizer([2]), rollouts_per_prompt=8)
    batch = get_method("rrpo").plan(ctx, [prob])
    assert batch.events[0].n == 1 and batch.events[0].k == 1  # k clamped to the 1 thought
    assert [s.response_ids for s in batch.samples if not s.is_reset_group][0] == [12, 13]
    assert [s.reward for s in batch.samples if s.is_reset_group] == [0.0] * 4


# ------------------------------------------------------------------------------------------------
# SCoRe
# ------------------------------------------------------------------------------------------------


def test_score_pairs_shaping_kl_and_training_prompt():
    # two pairs; y1 rewards 0, 1; y2 (from prompt + y1 + instruction) rewards 1, 1
    y1 = [[10, 11], [12, 13]]
    script = {P: y1, P + (10, 11, 900): [[20, 21]], P + (12, 13, 900): [[22, 23]]}
    prob = SProblem(P, rewards={(12, 13): 1.0, (20, 21): 1.0, (22, 23): 1.0})
    eng = ScriptEngine(script)
    batch = get_method("score").plan(context(eng, rollouts_per_prompt=4), [prob])
    assert [s.kind for s in batch.samples] == ["attempt1", "attempt2"] * 2
    assert all(s.prompt_ids == list(P) for s in batch.samples)  # y2 trained under the prompt
    assert [s.response_ids for s in batch.samples] == [[10, 11], [20, 21], [12, 13], [22, 23]]
    arrays = batch.arrays()
    arrays["seq_kl"] = np.array([0.1, 0.2, 0.3, 0.4])
    # stage II, alpha 10, KL 0.01:  y1_a: 0 - .001; y2_a: 1 + 10 (1 - 0) - .002;
    #                               y1_b: 1 - .003; y2_b: 1 + 10 (1 - 1) - .004
    np.testing.assert_allclose(
        _adv("score", batch, arrays, rollouts_per_prompt=4),
        [-0.001, 10.998, 0.997, 0.996],
        rtol=1e-12,
    )
    # stage I: R'(y1) = 0 - 0.1 KL, R'(y2) = R(y2) - 0.01 KL
    np.testing.assert_allclose(
        _adv("score", batch, arrays, rollouts_per_prompt=4, method_options={"stage": 1}),
        [-0.01, 0.998, -0.03, 0.996],
        rtol=1e-12,
    )
    acc = batch.accounting
    assert (acc.tokens_base, acc.tokens_followup, acc.generated_tokens) == (4, 4, eng.generated)


# ------------------------------------------------------------------------------------------------
# Critique-GRPO
# ------------------------------------------------------------------------------------------------


def _critique_batch():
    originals = [[10, 11], [12, 13], [14, 15], [16, 17]]
    script = {P: originals}
    for o, verdict, ref in zip(originals, (0, 1, 0, 0), ([20, 21], [22, 23], [24, 25], [26, 27])):
        script[P + tuple(o) + (900 + verdict,)] = [ref]
    prob = SProblem(P, rewards={(12, 13): 1.0, (22, 23): 1.0, (24, 25): 1.0})
    eng = ScriptEngine(script)
    return get_method("critique-grpo").plan(context(eng, rollouts_per_prompt=4), [prob]), eng


def test_critique_buffer_verdicts_and_dr_grpo_advantages():
    batch, eng = _critique_batch()
    # the critique shows the verifier's verdict (900 + 1 after the only correct original)
    assert [c[-1] for c in eng.contexts[4:]] == [900, 901, 900, 900]
    # buffer: the first 3 originals + the first correct refinement (index 1: [22, 23])
    assert [s.response_ids for s in batch.samples] == [[10, 11], [12, 13], [14, 15], [22, 23]]
    assert [s.kind for s in batch.samples] == ["original"] * 3 + ["refinement"]
    # rewards 0, 1, 0, 1: mean 1/2, no std
    np.testing.assert_allclose(
        _adv("critique-grpo", batch, rollouts_per_prompt=4), [-0.5, 0.5, -0.5, 0.5]
    )
    acc = batch.accounting  # 3 trained originals, 1 discarded, 4 refinements generated
    assert (acc.tokens_base, acc.tokens_discarded, acc.tokens_followup) == (6, 2, 8)
    assert acc.generated_tokens == eng.generated


def test_critique_shaping_gradient_on_refinement_tokens_only():
    batch, _ = _critique_batch()
    arrays = batch.arrays()
    adv = torch.tensor([-0.5, 0.5, -0.5, 0.5])
    lp = torch.log(torch.full((4, 2), 0.5)).requires_grad_(True)
    mask = torch.ones(4, 2)
    loss, _ = POLICY_LOSSES["critique-shaped"](
        lp,
        adv,
        mask,
        agg="seq-mean-token-sum-norm",
        old_logprobs=lp.detach(),
        shaped=arrays["is_refinement"],
        gamma=0.1,
        norm_tokens=10,
    )
    loss.backward()
    # originals: d(-A r)/d lp = -A at r = 1, / 10 (fixed length) / 4 (sequences)
    # refinement: d(-A p/(p+0.1))/d lp = -A * 0.1 p / (p + 0.1)^2 = -0.5 * 0.05/0.36, / 40
    want = torch.tensor([[0.5, 0.5], [-0.5, -0.5], [0.5, 0.5]]) / 40
    torch.testing.assert_close(lp.grad[:3], want, rtol=1e-6, atol=0)
    torch.testing.assert_close(
        lp.grad[3], torch.full((2,), -0.5 * 0.05 / 0.36 / 40), rtol=1e-6, atol=0
    )


# ------------------------------------------------------------------------------------------------
# SPO-Tree
# ------------------------------------------------------------------------------------------------


def _spo_batch(early=False):
    # level 1: segments A = [10, 11], B = [12, 13] (cut at 2 tokens); level 2: 4 leaves each
    first = [[10, 11, 1, 1], [12, 13] if early else [12, 13, 1, 1]]
    script = {
        P: first,
        P + (10, 11): [[20, 21], [22, 23], [24, 25], [26, 27]],
        P + (12, 13): [[30, 31], [32, 33], [34, 35], [36, 37]],
    }
    rewards = {(10, 11, 20, 21): 1.0, (10, 11, 22, 23): 1.0, (12, 13, 30, 31): 1.0, (12, 13): 1.0}
    eng = ScriptEngine(script)
    ctx = context(
        eng,
        rollouts_per_prompt=8,
        options=get_method("spo-tree").make_options({"segment_tokens": 2}),
    )
    return get_method("spo-tree").plan(ctx, [SProblem(P, rewards=rewards)]), eng


def test_spo_tree_segment_advantages_by_hand():
    batch, eng = _spo_batch()
    assert len(batch.samples) == 8 and all(s.loss_mask == [1] * 4 for s in batch.samples)
    # V(A) = mean(1, 1, 0, 0) = 1/2, V(B) = mean(1, 0, 0, 0) = 1/4; siblings' mean 3/8
    # A-segment tokens: 1/2 - 3/8 = 1/8; B: -1/8. Leaves: R - V(parent).
    want = [
        [1 / 8] * 2 + [0.5] * 2,
        [1 / 8] * 2 + [0.5] * 2,
        [1 / 8] * 2 + [-0.5] * 2,
        [1 / 8] * 2 + [-0.5] * 2,
        [-1 / 8] * 2 + [0.75] * 2,
        [-1 / 8] * 2 + [-0.25] * 2,
        [-1 / 8] * 2 + [-0.25] * 2,
        [-1 / 8] * 2 + [-0.25] * 2,
    ]
    arrays = batch.arrays()
    np.testing.assert_allclose(_adv("spo-tree", batch, arrays), want, rtol=1e-12)
    # probability mask: token 3 of leaf 0 had pi_old = 0.95 >= 0.9: it gets 0 and the other three
    # tokens of that sequence are scaled by 4 / 3
    old = np.log(np.full((8, 4), 0.5))
    old[0, 3] = math.log(0.95)
    arrays["old_logprobs"] = old
    masked = np.array(want)
    masked[0] = [1 / 8 * 4 / 3, 1 / 8 * 4 / 3, 0.5 * 4 / 3, 0.0]
    np.testing.assert_allclose(_adv("spo-tree", batch, arrays), masked, rtol=1e-12)
    acc = batch.accounting
    assert (acc.tokens_base, acc.tokens_branch) == (4, 16) and acc.generated_tokens == 20
    assert eng.generated == 20


def test_spo_tree_a_segment_that_ends_early_is_a_leaf():
    batch, _ = _spo_batch(early=True)
    assert len(batch.samples) == 5
    b = [i for i, s in enumerate(batch.samples) if s.response_ids == [12, 13]]
    assert len(b) == 1
    # V(A) = 1/2, V(B) = R(B) = 1; siblings' mean 3/4: A -> -1/4, B -> +1/4
    adv = _adv("spo-tree", batch)
    want = np.full((5, 2), -0.25)
    want[b[0]] = 0.25
    np.testing.assert_allclose(adv[:, :2], want, rtol=1e-12)
    np.testing.assert_allclose(adv[b[0], 2:], [0, 0])  # padding


# ------------------------------------------------------------------------------------------------
# TreeRL
# ------------------------------------------------------------------------------------------------


def test_treerl_entropy_forks_and_advantages_by_hand():
    a, b = [10, 11, 12, 13], [20, 21, 22, 23]
    ent = {tuple(a): [0.1, 0.9, 0.2, 0.3], tuple(b): [0.1, 0.1, 0.8, 0.1]}
    script = {
        P: [a, b],
        P + (10,): [[30, 31, 32], [33, 34, 35], [36, 37, 38]],
        P + (20, 21): [[40, 41], [42, 43], [44, 45]],
    }
    rewards = {tuple(a): 1.0, (10, 36, 37, 38): 1.0}
    eng = ScriptEngine(script)

    def entropy(prompts, responses):
        return [np.array(ent[tuple(r)]) for r in responses]

    ctx = context(eng, rollouts_per_prompt=8, entropy=entropy)
    batch = get_method("treerl").plan(ctx, [SProblem(P, rewards=rewards, first_error=1)])
    # A forks at its token 1 (entropy 0.9): 3 continuations of [10]; B at token 2 (0.8)
    assert eng.contexts[2:] == [P + (10,)] * 3 + [P + (20, 21)] * 3
    by_resp = {tuple(s.response_ids): s for s in batch.samples}
    assert len(batch.samples) == 8
    # V(root) = 2/8; V(A head) = (1 + 0 + 0 + 1)/4 = 1/2 over 4 leaves; V(B head) = 0
    # A head: ((1/2 - 1/4) + (1/2 - 1/4)) / sqrt(4) = 1/4; A tail (R 1): (3/4 + 1/2) / 1 = 5/4
    # a failed A continuation: (-1/4 - 1/2) = -3/4; B head: (-1/4 - 1/4)/2 = -1/4; B leaves: -1/4
    adv = _adv("treerl", batch)
    row = {k: adv[i] for i, k in enumerate(tuple(s.response_ids) for s in batch.samples)}
    np.testing.assert_allclose(row[tuple(a)], [0.25, 1.25, 1.25, 1.25], rtol=1e-12)
    np.testing.assert_allclose(row[(10, 30, 31, 32)], [0.25, -0.75, -0.75, -0.75], rtol=1e-12)
    np.testing.assert_allclose(row[(10, 36, 37, 38)], [0.25, 1.25, 1.25, 1.25], rtol=1e-12)
    np.testing.assert_allclose(row[tuple(b)], [-0.25] * 4, rtol=1e-12)
    np.testing.assert_allclose(row[(20, 21, 40, 41)], [-0.25] * 4, rtol=1e-12)
    assert set(by_resp) == set(row)
    # the fork of the failed chain B is logged like a reset: token 2 lies in thought 2
    (ev,) = batch.events
    assert (ev.k, ev.n, ev.source, ev.first_error, ev.clean) == (2, 2, "entropy", 1, False)
    assert batch.accounting.generated_tokens == eng.generated == 8 + 9 + 6
