"""group_advantages and masked_pg_loss against hand computations."""

import math

import numpy as np
import pytest
import torch

from srpo import group_advantages, masked_pg_loss
from srpo.loss import aggregate, gradient_signal, kl_k3


def test_group_advantages_unequal_and_constant_groups():
    rewards = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.5, 0.5, 0.5, 2.0])
    groups = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])  # sizes 3, 2 (constant), 3 (constant), 1
    adv = group_advantages(rewards, groups)
    # group 0: mean 1/3, population std sqrt(2/9)
    m, s = 1 / 3, math.sqrt(((1 - 1 / 3) ** 2 + 2 * (1 / 3) ** 2) / 3)
    np.testing.assert_allclose(adv[:3], [(1 - m) / s, -m / s, -m / s])
    np.testing.assert_array_equal(adv[3:], 0.0)


def test_group_advantages_noncontiguous_and_modes():
    rewards = np.array([1.0, 3.0, 0.0, 2.0])
    groups = ["a", "b", "a", "b"]
    pop = group_advantages(rewards, groups)
    np.testing.assert_allclose(pop, [1.0, 1.0, -1.0, -1.0])
    unb = group_advantages(rewards, groups, std="unbiased")
    np.testing.assert_allclose(unb, [1 / math.sqrt(2), 1 / math.sqrt(2), -1 / math.sqrt(2),
                                     -1 / math.sqrt(2)])
    none = group_advantages(rewards, groups, std="none")
    np.testing.assert_allclose(none, [0.5, 0.5, -0.5, -0.5])


def test_group_advantages_torch_in_torch_out():
    r = torch.tensor([0.0, 1.0, 1.0, 1.0], dtype=torch.float32)
    out = group_advantages(r, torch.tensor([0, 0, 1, 1]))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([-1.0, 1.0, 0.0, 0.0]))


@pytest.mark.parametrize(
    "rewards, groups, kw, match",
    [
        ([1.0, 0.0], [0], {}, "same shape"),
        ([1.0, float("nan")], [0, 0], {}, "finite"),
        ([1.0, 0.0], [0, 0], {"std": "sample"}, "std must be one of"),
    ],
)
def test_group_advantages_errors(rewards, groups, kw, match):
    with pytest.raises(ValueError, match=match):
        group_advantages(np.array(rewards), np.array(groups), **kw)


def _inputs():
    torch.manual_seed(0)
    lp = (-torch.rand(3, 4) * 2).requires_grad_(True)
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    adv = torch.tensor([1.5, -0.5, 2.0])
    return lp, mask, adv


def test_reinforce_seq_mean_token_mean_by_hand():
    lp, mask, adv = _inputs()
    loss = masked_pg_loss(lp, adv, mask)
    x = lp.detach()
    seq0 = -1.5 * (x[0, 1] + x[0, 2]) / 2
    seq1 = 0.5 * x[1].mean()
    torch.testing.assert_close(loss, (seq0 + seq1) / 2)  # seq 2 has no active token


def test_token_mean_by_hand():
    lp, mask, adv = _inputs()
    loss = masked_pg_loss(lp, adv, mask, agg="token-mean")
    x = lp.detach()
    expected = (-1.5 * (x[0, 1] + x[0, 2]) + 0.5 * x[1].sum()) / 6
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("ppo", [False, True])
def test_masked_tokens_get_exactly_zero_gradient(ppo):
    lp, mask, adv = _inputs()
    with torch.no_grad():
        lp[0, 0] = -float("inf")  # padding junk must not leak
        lp[2, 3] = float("nan")
    kw = {"old_logprobs": lp.detach().clone().nan_to_num(0.0) - 0.1, "clip": 0.2} if ppo else {}
    loss = masked_pg_loss(lp, adv, mask, **kw)
    loss.backward()
    assert torch.isfinite(loss)
    grad = lp.grad
    assert torch.all(grad[mask == 0] == 0.0)
    assert torch.all(grad[mask == 1] != 0.0)


def test_ppo_clip_by_hand():
    lp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    old = torch.tensor([[-1.5, -1.0, -0.5]])
    mask = torch.ones(1, 3)
    for a in (1.0, -1.0):
        adv = torch.tensor([a])
        loss = masked_pg_loss(lp, adv, mask, old_logprobs=old, clip=0.2)
        ratio = torch.exp(lp.detach() - old)
        per = torch.maximum(-a * ratio, -a * ratio.clamp(0.8, 1.2))
        torch.testing.assert_close(loss, per.mean())
    # ratios exp(0.5) = 1.65 (clipped for A > 0), exp(-1) = 0.37 (clipped for A < 0), 1
    _, stats = masked_pg_loss(lp, torch.tensor([1.0]), mask, old_logprobs=old, clip=0.2,
                              return_stats=True)
    assert stats["clip_frac"] == pytest.approx(1 / 3)
    assert stats["n_active_tokens"] == 3


def test_unclipped_ratio_gradient_equals_reinforce_at_old_policy():
    lp, mask, adv = _inputs()
    g1 = torch.autograd.grad(masked_pg_loss(lp, adv, mask), lp)[0]
    g2 = torch.autograd.grad(masked_pg_loss(lp, adv, mask, old_logprobs=lp.detach()), lp)[0]
    torch.testing.assert_close(g1, g2)


def test_aggregation_and_argument_errors():
    lp, mask, adv = _inputs()
    with pytest.raises(ValueError, match="agg must be one of"):
        masked_pg_loss(lp, adv, mask, agg="sum")
    with pytest.raises(ValueError, match="loss_mask must have shape"):
        masked_pg_loss(lp, adv, mask[:, :2])
    with pytest.raises(ValueError, match="clip needs old_logprobs"):
        masked_pg_loss(lp, adv, mask, clip=0.2)
    with pytest.raises(ValueError, match="advantages"):
        masked_pg_loss(lp, adv[:2], mask)
    # empty mask: zero loss, still differentiable
    z = aggregate(lp, torch.zeros_like(mask), "seq-mean-token-mean")
    assert float(z.detach()) == 0.0 and z.requires_grad


def test_per_token_advantages():
    lp, mask, _ = _inputs()
    adv_t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    loss = masked_pg_loss(lp, adv_t, mask, agg="token-mean")
    x = lp.detach()
    expected = -(adv_t * x * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, expected)


def test_gradient_signal_by_hand():
    lp = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.1, 0.2, 0.3]]))
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    g = gradient_signal(lp, torch.tensor([2.0, 1.0]), mask)
    torch.testing.assert_close(g[0], torch.tensor((2 / 2) * ((0.5 + 0.75) / 2)))
    assert torch.isnan(g[1])


def test_kl_k3_zero_at_reference_and_positive_elsewhere():
    lp, mask, _ = _inputs()
    assert float(kl_k3(lp, lp.detach(), mask)) == pytest.approx(0.0, abs=1e-7)
    kl = kl_k3(lp, lp.detach() - 0.3, mask)
    assert float(kl) == pytest.approx(math.exp(-0.3) + 0.3 - 1, rel=1e-5)
    kl.backward()
    assert torch.all(lp.grad[mask == 0] == 0)
