"""The sampling kernels of ``cpi.rollouts`` against their limits, measured in one run.

For every sampler (episode returns, full episodes, reset candidates, Q-rollouts, batched
Kakade-Langford terms) on three instances (a dense tabular MDP, a sweep-sized tabular MDP and a
10^6-node tree), three loops are timed alternately (kernel, same-walk, draws-only, ...), each
from the same Generator seed, so all three see the same machine load:

* the kernel: the compiled sampler as the public function runs it (``cpi.rollouts.run_*``), on
  tables built beforehand (the public functions add validation, a table-cache lookup and the
  Generator's state transfer, a few microseconds a call);
* the **same-walk limit** (:mod:`walk_limits`): the same uniforms and the same table reads,
  nothing else; for the episode kernel, the same walk that also writes each entry of its three
  (n, H) outputs once ("walk + outputs"; the walk without them is timed for information);
* the **draws-only limit**: a loop making as many uniforms of the same PCG64 stream as the
  kernel consumed (counted by stepping a copy of the generator from the kernel's initial to its
  final state) and nothing else.

Before timing, every same-walk reference is checked to end its stream(s) where the kernel does
and to produce the kernel's checksum (sum of returns, of accepted states, ...). Rates are
environment steps per second as the kernels count them (a reset candidate at step h: h steps;
a Q-rollout from step h: H - h; a tree episode: its length).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numba as nb
import numpy as np
import walk_limits as wl

from cpi import TabularMDP, TreeMDP, rollouts
from cpi.alias import policy_table, state_table, tables
from cpi.pcg import draw, jump_table, open_stream
from cpi.selectors import reset_distribution


@dataclass
class WalkRow:
    kernel: str
    instance: str
    rate: float  # env steps/s of the kernel
    walk: float  # env steps/s of the same-walk loop
    draws: float  # env steps/s of the draws-only loop
    walk_kind: str = ""
    info: dict[str, float] = field(default_factory=dict)  # name -> env steps/s, not limits

    @property
    def met(self) -> bool:
        return self.rate >= 0.7 * self.walk


@nb.njit(cache=True)
def _count_draws(rs0, rs1, limit):  # pragma: no cover - compiled
    """Uniforms between stream positions rs0 and rs1 (-1 if more than ``limit``)."""
    for k in range(limit + 1):
        if rs0[0] == rs1[0] and rs0[1] == rs1[1]:
            return k
        _, rs0 = draw(rs0)
    return -1


def count_draws(seed: int, rs1) -> int:
    n = _count_draws(open_stream(np.random.default_rng(seed)), rs1, 10**10)
    assert n >= 0
    return int(n)


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


@dataclass
class Case:
    """One kernel on one instance: callables of the three loops and what to check."""

    kernel: str
    instance: str
    run_kernel: Callable[[], tuple]  # -> (checksum, env steps, final stream(s))
    walks: dict[str, Callable[[], tuple]]  # name -> () -> (checksum, stream(s) after)
    seeds: tuple[int, ...]
    #: loops timed and checked like the walks but printed for information only (not limits)
    info: dict[str, Callable[[], tuple]] = field(default_factory=dict)


def _seeded(seed):
    return np.random.default_rng(seed)


def _stream(seed):
    return open_stream(np.random.default_rng(seed))


def tabular_cases(
    mdp: TabularMDP,
    pol: np.ndarray,
    label: str,
    n_ep: int,
    n_acc: int,
    n_q: int,
    kl_n: int,
    kl_reps: int,
) -> list[Case]:
    tb = tables(mdp)
    ptab = policy_table(mdp, pol)
    view = rollouts._tab(tb)
    H, A = mdp.horizon, mdp.n_actions
    d = reset_distribution(mdp, pol)
    X = d.size
    r = np.random.default_rng(11)
    sel = np.where(r.random(X) < 0.5, 0.7, 0.3)  # an approximate selector: draws for every offer
    G = r.random(X) < 0.3
    starts = rollouts.sample_resets(mdp, pol, n_q, np.ones(X), G, _seeded(1), _seeded(2)).states
    coef = np.ascontiguousarray((A * (r.dirichlet(np.ones(A), size=X) - pol.reshape(X, A))).ravel())
    w = d * (0.2 + r.random(X))
    xtab = state_table(w)
    jumps = jump_table(2 * H)
    start = (tb.start_cdf, tb.start_idx)

    def k_returns():
        out, rs = rollouts.run_returns(mdp, tb, ptab, n_ep, _stream(5))
        return out.sum(), n_ep * H, (rs,)

    def k_episodes():
        return _episodes_in_calls(mdp, tb, ptab, n_ep // 4)

    def k_resets():
        res = rollouts.run_resets(
            mdp, tb, ptab, n_acc, sel, G, 10**9, _stream(6), _stream(7), False
        )
        return int(res[0].sum()), res[2], res[5:]

    def k_q():
        _, qs, steps, rs = rollouts.run_q(mdp, tb, ptab, starts, 4, _stream(8))
        return qs.sum(), steps, (rs,)

    def k_kl():
        est, steps, rs = rollouts.run_kl(mdp, tb, ptab, xtab, coef, kl_n, kl_reps, _stream(9))
        return est.sum() * kl_n, steps, (rs,)

    ep = {
        "same walk": lambda n: wl.tab_episodes(*view, *start, ptab, H, n, open_stream(_seeded(5)))
    }
    res = {
        "serial": lambda: _pair(
            wl.tab_resets_serial(
                *view, *start, ptab, H, n_acc, sel, open_stream(_seeded(6)), open_stream(_seeded(7))
            )
        ),
        "lanes": lambda: _pair(
            wl.tab_resets_lanes(
                *view,
                *start,
                ptab,
                H,
                n_acc,
                sel,
                jumps,
                open_stream(_seeded(6)),
                open_stream(_seeded(7)),
            )
        ),
    }
    q = {
        "same walk": lambda: wl.tab_q(
            False, *view, ptab, H, starts.size * 4, 4, starts, xtab, coef, open_stream(_seeded(8))
        )
    }
    kl = {
        "same walk": lambda: wl.tab_q(
            True, *view, ptab, H, kl_n * kl_reps, kl_n, starts, xtab, coef, open_stream(_seeded(9))
        )
    }
    return [
        Case(
            "simulate_returns",
            label,
            k_returns,
            {k: (lambda f=f: f(n_ep)) for k, f in ep.items()},
            (5,),
        ),
        Case(
            "on_policy_episodes",
            label,
            k_episodes,
            {
                "walk + outputs": _stored_walk_in_calls(
                    mdp, wl.tab_episodes_stored, (*view, *start, ptab), n_ep // 4
                )
            },
            (5,),
            {k: (lambda f=f: f(n_ep // 4)) for k, f in ep.items()},
        ),
        Case("sample_resets", label, k_resets, res, (6, 7)),
        Case("q_rollouts (4 per state)", label, k_q, q, (8,)),
        Case("kl_estimates", label, k_kl, kl, (9,)),
    ]


#: Environment steps per call of the episode kernel (about 100,000: its three (n, H) outputs,
#: 2.4 MB, then stay in cache; one call of 10^7 steps writes 240 MB of fresh memory, and the
#: page faults, not the kernel, set its pace).
STEPS_PER_CALL = 100_000


def _episodes_in_calls(mdp, tb, ptab, n: int) -> tuple:
    """``n`` episodes in calls of about STEPS_PER_CALL steps, a multiple of LANES episodes (the
    same uniforms and walk as one call of n), the stream carried from call to call."""
    rs = _stream(5)
    chk = 0.0
    steps = 0
    for m in _call_sizes(mdp, n):
        _, _, rtg, k, rs = rollouts.run_episodes(mdp, tb, ptab, m, _u64(rs))
        chk += rtg[:, 0].sum()
        steps += int(k)
    return chk, steps, (rs,)


def _call_sizes(mdp, n: int) -> list[int]:
    per_call = max(8, (STEPS_PER_CALL // mdp.horizon) // 8 * 8)
    return [min(per_call, n - i0) for i0 in range(0, n, per_call)]


def _u64(rs) -> tuple:
    return tuple(np.uint64(v) for v in rs)


def _stored_walk_in_calls(mdp, walk, args, n: int) -> Callable[[], tuple]:
    """The episode kernel's limit: ``walk`` (a ``*_episodes_stored`` loop) over the same calls
    as :func:`_episodes_in_calls`, writing the outputs into buffers allocated once."""
    H = mdp.horizon
    sizes = _call_sizes(mdp, n)
    size = max(sizes) * H
    xs, acts, rew = np.empty(size, np.int64), np.empty(size, np.int64), np.empty(size)

    def run():
        rs = _stream(5)
        chk = 0.0
        for m in sizes:
            c, rs = walk(*args, H, xs[: m * H], acts[: m * H], rew[: m * H], _u64(rs))
            chk += c
        return chk, rs

    return run


def _pair(out):
    """(checksum, rs, rs_sel) -> (checksum, (rs, rs_sel))."""
    return out[0], (out[1], out[2])


def tree_cases(
    tree: TreeMDP, pol: np.ndarray, label: str, n_ep: int, n_acc: int, n_q: int, kl_terms: int
) -> list[Case]:
    tb = tables(tree)
    ptab = policy_table(tree, pol)
    children, reward, A = rollouts._tree(tb)
    N, H = tree.n_nodes, tree.horizon
    d = reset_distribution(tree, pol)
    r = np.random.default_rng(12)
    sel = np.where(r.random(N) < 0.5, 0.7, 0.3)
    G = r.random(N) < 0.3
    starts = rollouts.sample_resets(tree, pol, n_q, np.ones(N), G, _seeded(1), _seeded(2)).states
    coef = (A * (r.dirichlet(np.ones(A), size=N) - pol)).ravel()
    w = d * (0.2 + r.random(N))
    w[tree.is_leaf] = 0.0
    xtab = state_table(w)
    start = (tb.start_cdf, tb.start_idx)
    assert not tb.full_depth  # leaves at two depths: candidates walk whole episodes

    def k_returns():
        out, rs = rollouts.run_returns(tree, tb, ptab, n_ep, _stream(5))
        return out.sum(), None, (rs,)

    def k_episodes():
        return _episodes_in_calls(tree, tb, ptab, n_ep // 4)

    def k_resets():
        res = rollouts.run_resets(
            tree, tb, ptab, n_acc, sel, G, 10**9, _stream(6), _stream(7), False
        )
        return int(res[0].sum()), res[2], res[5:]

    def k_q():
        _, qs, steps, rs = rollouts.run_q(tree, tb, ptab, starts, 4, _stream(8))
        return qs.sum(), steps, (rs,)

    def k_kl():
        est, steps, rs = rollouts.run_kl(
            tree, tb, ptab, xtab, coef, kl_terms // 100, 100, _stream(9)
        )
        return est.sum() * (kl_terms // 100), steps, (rs,)

    def walk_ep(n):
        return wl.tree_episodes(children, reward, A, *start, ptab, n, open_stream(_seeded(5)))

    return [
        Case("simulate_returns", label, k_returns, {"same walk": lambda: walk_ep(n_ep)}, (5,)),
        Case(
            "on_policy_episodes",
            label,
            k_episodes,
            {
                "walk + outputs": _stored_walk_in_calls(
                    tree, wl.tree_episodes_stored, (children, reward, A, *start, ptab), n_ep // 4
                )
            },
            (5,),
            {"same walk": lambda: walk_ep(n_ep // 4)},
        ),
        Case(
            "sample_resets",
            label,
            k_resets,
            {
                "same walk": lambda: _pair(
                    wl.tree_resets(
                        children,
                        A,
                        *start,
                        ptab,
                        H,
                        n_acc,
                        sel,
                        open_stream(_seeded(6)),
                        open_stream(_seeded(7)),
                    )
                )
            },
            (6, 7),
        ),
        Case(
            "q_rollouts (4 per state)",
            label,
            k_q,
            {
                "same walk": lambda: wl.tree_q(
                    False,
                    children,
                    reward,
                    A,
                    ptab,
                    starts,
                    4,
                    0,
                    xtab,
                    coef,
                    open_stream(_seeded(8)),
                )
            },
            (8,),
        ),
        Case(
            "kl_estimates",
            label,
            k_kl,
            {
                "same walk": lambda: wl.tree_q(
                    True,
                    children,
                    reward,
                    A,
                    ptab,
                    starts,
                    4,
                    (kl_terms // 100) * 100,
                    xtab,
                    coef,
                    open_stream(_seeded(9)),
                )
            },
            (9,),
        ),
    ]


def check_case(case: Case) -> tuple[float, int]:
    """Run the kernel and every reference once; assert they walked the same path. Returns the
    kernel's env steps and the uniforms it consumed."""
    chk, steps, ends = case.run_kernel()
    ends = tuple(tuple(np.uint64(v) for v in e) for e in ends)  # kernels return plain ints
    for name, walk in {**case.walks, **case.info}.items():
        wchk, wend = walk()
        wend = wend if isinstance(wend[0], tuple) else (wend,)
        assert tuple(tuple(int(v) for v in e[:2]) for e in wend) == tuple(
            tuple(int(v) for v in e[:2]) for e in ends
        ), f"{case.kernel}/{name}: other stream end"
        assert close(float(wchk), float(chk)), f"{case.kernel}/{name}: checksum {wchk} vs {chk}"
    n_draws = sum(count_draws(s, e) for s, e in zip(case.seeds, ends, strict=True))
    return steps, n_draws
