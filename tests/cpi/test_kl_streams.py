"""KLStreams: K&L estimates read off growing per-repetition streams (cpi/kl_streams.py).

* the estimates at n are unbiased for the exact policy advantage with the variance of a mean of
  n i.i.d. terms (tabular and tree);
* extending in pieces gives bit for bit the estimates of extending at once, and a mark passed on
  the way gives the estimate a direct extension to it would give (nested prefixes);
* the lane kernel draws each repetition's terms as a plain-Python loop over that repetition's
  own generator does (frozen copy of the step in test_sampling_order.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from cpi import TabularMDP, evaluate
from cpi.kl_streams import KLStreams
from cpi.selectors import reset_distribution
from tests.cpi import test_sampling_order as frozen


def _case(case):
    mdp, pol = frozen.CASES[case]()
    A = mdp.n_actions
    V, Q = evaluate(mdp, pol)
    adv = (Q - (V[:-1, :, None] if isinstance(mdp, TabularMDP) else V[:, None])).reshape(-1, A)
    rng = np.random.default_rng(3)
    tgt = rng.dirichlet(np.ones(A), size=adv.shape[0])
    coef = A * (tgt - pol.reshape(-1, A))
    d = reset_distribution(mdp, pol)
    w = d * (rng.random(d.size) < 0.6)
    if not isinstance(mdp, TabularMDP):
        w[mdp.is_leaf] = 0.0
        adv[mdp.is_leaf] = 0.0
    if w.sum() == 0:
        w = d.copy()
    exact = float(w @ np.einsum("xa,xa->x", tgt, adv)) / w.sum()
    return mdp, pol, coef, w, exact


@pytest.mark.parametrize("case", ["tabular", "tabular_long", "tree"])
def test_estimates_are_unbiased_with_the_iid_variance(case):
    mdp, pol, coef, w, exact = _case(case)
    ks = KLStreams(mdp, pol, coef, w, 2000, np.random.default_rng(5))
    one = ks.extend(1)  # 2000 single terms: their variance
    est = ks.extend(40)
    term_var = one.var(ddof=1)
    assert abs(one.mean() - exact) < 5 * np.sqrt(term_var / one.size)
    assert abs(est.mean() - exact) < 5 * np.sqrt(term_var / (40 * est.size))
    assert 0.8 < est.var(ddof=1) / (term_var / 40) < 1.25
    assert ks.n == 40 and ks.terms_drawn == 40 * 2000 and ks.env_steps > 0


@pytest.mark.parametrize("case", ["tabular", "tree"])
def test_extending_in_pieces_equals_extending_at_once(case):
    mdp, pol, coef, w, _ = _case(case)
    a = KLStreams(mdp, pol, coef, w, 19, np.random.default_rng(1))
    b = KLStreams(mdp, pol, coef, w, 19, np.random.default_rng(1))
    a.extend(3)
    a.extend(11, marks=[5, 8])
    np.testing.assert_array_equal(a.extend(30), b.extend(30, marks=[3, 5, 8, 11]))
    for m in (3, 5, 8, 11):
        np.testing.assert_array_equal(a.means(m), b.means(m))
    np.testing.assert_array_equal(a.extend(11), b.means(11))  # no new draws below n
    assert a.n == 30
    with pytest.raises(ValueError, match="^n: 7 terms were not recorded"):
        a.means(7)


def test_lanes_draw_each_repetition_as_its_own_serial_stream():
    mdp, pol, coef, w, _ = _case("tabular")
    reps, n = 13, 6
    ks = KLStreams(mdp, pol, coef, w, reps, np.random.default_rng(2))
    got = ks.extend(n)
    tb = frozen.tables(mdp)
    ptab, xtab = frozen.policy_table(mdp, pol), frozen.state_table(w)
    S, A, H = mdp.n_states, mdp.n_actions, mdp.horizon
    seeds = np.random.default_rng(2).integers(0, 2**63, size=(reps, 2), dtype=np.int64)
    want = np.zeros(reps)
    for r in range(reps):
        g_r = np.random.Generator(np.random.PCG64(seeds[r]))
        for _ in range(n):
            x0 = frozen.draw_alias(xtab, 0, H * S, g_r.random())
            a = frozen.uniform_action(A, g_r.random())
            h0, s0 = divmod(x0, S)
            g = tb.R[s0, a]
            s = frozen.next_state(tb, s0 * A + a, g_r.random())
            for h in range(h0 + 1, H):
                s, _, rew = frozen.tab_step(tb, ptab, S, A, h, s, g_r)
                g += rew
            want[r] += coef.ravel()[x0 * A + a] * g
    np.testing.assert_array_equal(got, want / n)
