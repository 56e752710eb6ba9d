"""Numba kernels against plain NumPy/Python references of the same computation, in one run.

Run: ``python benchmarks/bench_kernels.py`` (about 20 s on one core; prints two tables;
``--only-sampling`` the second; ``--clock cpu`` on a shared machine).

Rows (every speed is a median over ``--repeats`` timed calls after a warm-up call that compiles):

* tree evaluation (values + Q, backward) and tree occupancy (forward) on a complete 4-ary tree
  of ~10^6 nodes in breadth-first order, in node-action updates per second, against a
  NumPy reference vectorised level by level (the level index lists are built before timing);
  goal for evaluation: >= 1e8 updates/s. The public ``cpi.evaluate`` (which also validates the
  policy) against the bare kernel, timed alternately: goal >= 0.9x (validation <= 10%).
* tabular evaluation and occupancy (S=200, A=4, H=50), in (s, a, s') updates per second
  (H*S*A*S per call), against a NumPy ``einsum`` reference, one step at a time; ``cpi.evaluate``
  against the kernel as for the tree.
* ``simulate_returns`` on the tabular MDP above and on the tree against a pure Python loop that
  draws from a ``numpy.random.Generator`` at every step (goal >= 50x); both checked unbiased.
* every sampling kernel (episode returns, episodes, reset candidates, Q-rollouts, K&L terms) on
  a dense tabular MDP, a sweep-sized one and the tree, against its **same-walk limit** (the same
  uniforms and table reads, nothing else; for the episode kernel, whose results are three
  (n, H) arrays, the same walk that also writes each output entry once: "walk + outputs") and
  its **draws-only limit**, timed alternately in the same run; goal: >= 0.7x the same-walk
  limit (``sampling_cases.py``, ``walk_limits.py``; docs/speed.md says why).
* peak resident memory of the whole run (``resource.getrusage``).

Everything runs on one core: BLAS threads are pinned to 1 before NumPy is imported and
``numba.set_num_threads(1)``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import walk_limits as wl  # noqa: E402
from sampling_cases import WalkRow, check_case, tabular_cases, tree_cases  # noqa: E402

from cpi import TabularMDP, TreeMDP, evaluate, value  # noqa: E402
from cpi import evaluation as ev  # noqa: E402
from cpi.envs import coverage_family, initial_policy  # noqa: E402
from cpi.pcg import open_stream  # noqa: E402
from cpi.rollouts import on_policy_episodes  # noqa: E402


@dataclass
class Row:
    name: str
    unit: str
    kernel: float  # work units per second
    reference: float | None  # work units per second, or None if there is no reference row
    goal: str = ""
    met: bool | None = None


CLOCK = time.perf_counter  # --clock cpu switches to time.process_time (robust on a shared box)


def median_time(fn, repeats: int) -> float:
    """Median time of ``fn()`` over ``repeats`` calls (the caller warms it up first)."""
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return float(np.median(times))


def paired_times(fn_a, fn_b, repeats: int) -> tuple[float, float]:
    """Median times of two functions timed alternately (a, b, a, b, ...)."""
    ta, tb = [], []
    for _ in range(repeats):
        t0 = CLOCK()
        fn_a()
        ta.append(CLOCK() - t0)
        t0 = CLOCK()
        fn_b()
        tb.append(CLOCK() - t0)
    return float(np.median(ta)), float(np.median(tb))


# ---------------------------------------------------------------------------------------------
# Instances
# ---------------------------------------------------------------------------------------------
def complete_tree(n_target: int, A: int, seed: int) -> tuple[TreeMDP, np.ndarray]:
    """Complete A-ary tree in breadth-first (heap) order with N = 1 + A*k >= n_target nodes.

    Node n is internal iff its children A*n+1 .. A*n+A exist; rewards on the leaves only.
    """
    k = -(-(n_target - 1) // A)
    N = 1 + A * k
    children = np.full((N, A), -1, dtype=np.int64)
    internal = np.arange(k)
    children[internal] = A * internal[:, None] + 1 + np.arange(A)
    rng = np.random.default_rng(seed)
    reward = np.zeros(N)
    leaves = children[:, 0] < 0
    reward[leaves] = (rng.random(int(leaves.sum())) < 0.3).astype(float)
    policy = rng.dirichlet(np.ones(A), size=N)
    return TreeMDP(children, reward, name="bench-tree"), policy


def random_tabular(S: int, A: int, H: int, seed: int) -> tuple[TabularMDP, np.ndarray]:
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(S, 0.1), size=(S, A))  # dense rows, uneven mass
    R = rng.random((S, A))
    mu = rng.dirichlet(np.ones(S))
    policy = rng.dirichlet(np.ones(A), size=(H, S))
    return TabularMDP(P, R, mu, H, name="bench-tabular"), policy


# ---------------------------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------------------------
def tree_levels(tree: TreeMDP) -> list[np.ndarray]:
    """Internal nodes grouped by depth (precomputed, not timed)."""
    internal = ~tree.is_leaf
    return [np.flatnonzero(internal & (tree.depth == h)) for h in range(tree.horizon)]


def tree_evaluate_numpy(tree: TreeMDP, policy: np.ndarray, levels) -> tuple[np.ndarray, np.ndarray]:
    N, A = tree.children.shape
    V = np.zeros(N)
    Q = np.zeros((N, A))
    for nodes in reversed(levels):
        ch = tree.children[nodes]
        q = tree.reward[ch] + V[ch]
        Q[nodes] = q
        V[nodes] = np.einsum("na,na->n", policy[nodes], q)
    return V, Q


def tree_occupancy_numpy(tree: TreeMDP, policy: np.ndarray, levels) -> np.ndarray:
    d = tree.mu.copy()
    for nodes in levels:
        d[tree.children[nodes]] += d[nodes, None] * policy[nodes]
    return d


def tabular_evaluate_numpy(P, R, policy) -> tuple[np.ndarray, np.ndarray]:
    H, S, A = policy.shape
    V = np.zeros((H + 1, S))
    Q = np.empty((H, S, A))
    for h in range(H - 1, -1, -1):
        Q[h] = R + np.einsum("sat,t->sa", P, V[h + 1])
        V[h] = np.einsum("sa,sa->s", policy[h], Q[h])
    return V, Q


def tabular_occupancy_numpy(P, mu, policy) -> np.ndarray:
    H, S, A = policy.shape
    d = np.empty((H, S))
    d[0] = mu
    for h in range(H - 1):
        d[h + 1] = np.einsum("s,sa,sat->t", d[h], policy[h], P)
    return d


def rollouts_python(P, R, mu, policy, n_episodes: int, rng: np.random.Generator) -> np.ndarray:
    """Pure Python episode loop: one Generator draw per sampled quantity per step."""
    H = policy.shape[0]
    P_cdf = np.cumsum(P, axis=-1)
    pol_cdf = np.cumsum(policy, axis=-1)
    mu_cdf = np.cumsum(mu)
    S = mu.shape[0]
    A = policy.shape[2]
    returns = np.empty(n_episodes)
    for e in range(n_episodes):
        s = min(int(np.searchsorted(mu_cdf, rng.random(), side="right")), S - 1)
        ret = 0.0
        for h in range(H):
            a = min(int(np.searchsorted(pol_cdf[h, s], rng.random(), side="right")), A - 1)
            ret += R[s, a]
            s = min(int(np.searchsorted(P_cdf[s, a], rng.random(), side="right")), S - 1)
        returns[e] = ret
    return returns


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------
def bench_tree(n_nodes: int, repeats: int) -> list[Row]:
    tree, policy = complete_tree(n_nodes, A=4, seed=0)
    levels = tree_levels(tree)
    n_updates = int((~tree.is_leaf).sum()) * tree.n_actions
    print(
        f"tree: N={tree.n_nodes:,} nodes, A={tree.n_actions}, depth {tree.horizon}, "
        f"{n_updates:,} node-action updates per call",
        flush=True,
    )

    def k_eval():
        return ev._tree_evaluate(tree.children, tree.reward, policy, tree.is_leaf)

    def k_occ():
        return ev._tree_occupancy(tree.children, tree.mu, policy)

    # warm up (compile) and check that kernel and reference agree before timing either
    V, Q = k_eval()
    V_ref, Q_ref = tree_evaluate_numpy(tree, policy, levels)
    assert np.allclose(V, V_ref, atol=1e-10) and np.allclose(Q, Q_ref, atol=1e-10)
    assert np.allclose(k_occ(), tree_occupancy_numpy(tree, policy, levels), atol=1e-12)
    evaluate(tree, policy)

    t_k, t_api = interleaved_times([k_eval, lambda: evaluate(tree, policy)], repeats)
    t_r = median_time(lambda: tree_evaluate_numpy(tree, policy, levels), repeats)
    t_ko = median_time(k_occ, repeats)
    t_ro = median_time(lambda: tree_occupancy_numpy(tree, policy, levels), repeats)
    unit = "node-action/s"
    return [
        Row(
            "tree evaluate, 1e6 nodes (kernel)",
            unit,
            n_updates / t_k,
            n_updates / t_r,
            ">= 1e8",
            n_updates / t_k >= 1e8,
        ),
        Row(
            "  cpi.evaluate (validates) against the kernel",
            unit,
            n_updates / t_api,
            n_updates / t_k,
            ">= 0.9x kernel",
            t_k / t_api >= 0.9,
        ),
        Row("tree occupancy, 1e6 nodes (kernel)", unit, n_updates / t_ko, n_updates / t_ro),
    ]


def bench_tabular(S: int, A: int, H: int, repeats: int) -> list[Row]:
    mdp, policy = random_tabular(S, A, H, seed=1)
    n_updates = H * S * A * S
    print(f"tabular: S={S}, A={A}, H={H}, {n_updates:,} (s, a, s') updates per call", flush=True)

    def k_eval():
        return ev._tabular_evaluate(mdp.P, mdp.R, policy)

    def k_occ():
        return ev._tabular_occupancy(mdp.P, mdp.mu, policy)

    V, Q = k_eval()
    V_ref, Q_ref = tabular_evaluate_numpy(mdp.P, mdp.R, policy)
    assert np.allclose(V, V_ref, atol=1e-9) and np.allclose(Q, Q_ref, atol=1e-9)
    assert np.allclose(k_occ(), tabular_occupancy_numpy(mdp.P, mdp.mu, policy), atol=1e-12)

    def api_10():  # ~1 ms calls: ten per timing, for both sides
        for _ in range(10):
            evaluate(mdp, policy)

    def kernel_10():
        for _ in range(10):
            k_eval()

    t_k, t_api = (t / 10 for t in interleaved_times([kernel_10, api_10], repeats))
    t_r = median_time(lambda: tabular_evaluate_numpy(mdp.P, mdp.R, policy), repeats)
    t_ko = median_time(k_occ, repeats)
    t_ro = median_time(lambda: tabular_occupancy_numpy(mdp.P, mdp.mu, policy), repeats)
    unit = "(s,a,s')/s"
    return [
        Row(f"tabular evaluate S={S} A={A} H={H} (kernel)", unit, n_updates / t_k, n_updates / t_r),
        Row(
            "  cpi.evaluate (validates) against the kernel",
            unit,
            n_updates / t_api,
            n_updates / t_k,
            ">= 0.9x kernel",
            t_k / t_api >= 0.9,
        ),
        Row(
            f"tabular occupancy S={S} A={A} H={H} (kernel)",
            unit,
            n_updates / t_ko,
            n_updates / t_ro,
        ),
    ]


def tree_rollouts_python(tree: TreeMDP, policy, n_episodes: int, rng: np.random.Generator):
    """Pure Python episode loop on a tree; returns (returns, number of steps taken)."""
    pol_cdf = np.cumsum(policy, axis=-1)
    mu_cdf = np.cumsum(tree.mu)
    children, reward = tree.children, tree.reward
    A = tree.n_actions
    returns = np.empty(n_episodes)
    steps = 0
    for e in range(n_episodes):
        x = int(np.searchsorted(mu_cdf, rng.random(), side="right"))
        ret = 0.0
        while children[x, 0] >= 0:
            a = min(int(np.searchsorted(pol_cdf[x], rng.random(), side="right")), A - 1)
            x = int(children[x, a])
            ret += reward[x]
            steps += 1
        returns[e] = ret
    return returns, steps


def bench_python_rollouts(
    S: int, A: int, H: int, n_nodes: int, n_episodes: int, n_ref: int, repeats: int
) -> list[Row]:
    """simulate_returns against a pure Python loop (tabular and tree), both checked unbiased."""
    from cpi.rollouts import simulate_returns

    rows = []
    mdp, policy = random_tabular(S, A, H, seed=2)
    tree, tpol = complete_tree(n_nodes, A=4, seed=0)
    for label, m, pol, n in (
        (f"tabular S={S} A={A} H={H}", mdp, policy, n_episodes),
        ("tree 1e6 nodes", tree, tpol, n_episodes),
    ):
        tab = isinstance(m, TabularMDP)
        J = value(m, pol)
        if tab:
            ref = rollouts_python(m.P, m.R, m.mu, pol, n_ref, np.random.default_rng(3))
            ref_steps = n_ref * H
            t_r = median_time(
                lambda m=m, pol=pol: rollouts_python(
                    m.P, m.R, m.mu, pol, n_ref, np.random.default_rng(3)
                ),
                max(1, repeats // 2),
            )
        else:
            ref, ref_steps = tree_rollouts_python(m, pol, n_ref, np.random.default_rng(6))
            t_r = median_time(
                lambda m=m, pol=pol: tree_rollouts_python(m, pol, n_ref, np.random.default_rng(6)),
                max(1, repeats // 2),
            )
        assert abs(ref.mean() - J) < 5 * ref.std() / np.sqrt(ref.size) + 1e-9, "reference biased"
        out = simulate_returns(m, pol, n, np.random.default_rng(4))
        assert abs(out.mean() - J) < 5 * out.std() / np.sqrt(n) + 1e-9, "kernel biased"
        steps = n * H if tab else on_policy_episodes(m, pol, n, np.random.default_rng(4))[3]
        t_k = median_time(
            lambda m=m, pol=pol, n=n: simulate_returns(m, pol, n, np.random.default_rng(4)), repeats
        )
        rate, ref_rate = steps / t_k, ref_steps / t_r
        rows.append(
            Row(
                f"simulate_returns, {label} vs Python loop",
                "env steps/s",
                rate,
                ref_rate,
                ">= 50x Python",
                rate / ref_rate >= 50,
            )
        )
    return rows


def bench_sampling(repeats: int, scale: float) -> list[WalkRow]:
    """Every sampling kernel against its same-walk and draws-only limits (sampling_cases.py)."""
    cases = []
    mdp, pol = random_tabular(200, 4, 50, seed=2)
    k = max(1, int(round(scale * 100_000)))
    cases += tabular_cases(
        mdp,
        pol,
        "dense S=200 A=4 H=50",
        n_ep=k,
        n_acc=k,
        n_q=k // 4,
        kl_n=max(1, k // 400),
        kl_reps=400,
    )
    cov = coverage_family(0.1, 0.1, seed=3, n_actions=4, horizon=6, noise=0.1, headroom=2.0)
    k = max(8, int(round(scale * 800_000)))
    cases += tabular_cases(
        cov,
        initial_policy(cov),
        "sweep S=24 A=4 H=6",
        n_ep=k,
        n_acc=k,
        n_q=k // 4,
        kl_n=max(1, k // 400),
        kl_reps=400,
    )
    tree, tpol = complete_tree(1_000_000, A=4, seed=0)
    k = max(100, int(round(scale * 200_000)))
    cases += tree_cases(
        tree, tpol, "tree 1e6 nodes A=4", n_ep=k, n_acc=k // 2, n_q=k // 8, kl_terms=k
    )
    rows = []
    for case in cases:
        steps, n_draws = check_case(case)
        if steps is None:  # tree returns: the episode kernel's count of the same walk
            steps = on_policy_episodes(tree, tpol, k, np.random.default_rng(5))[3]
        rs0 = open_stream(np.random.default_rng(13))
        nw = len(case.walks)
        fns = [
            case.run_kernel,
            *case.walks.values(),
            *case.info.values(),
            lambda n=n_draws, rs=rs0: wl.draws_only(n, rs),
        ]
        times = interleaved_times(fns, repeats)
        walk_t = min(times[1 : 1 + nw])
        kind = list(case.walks)[int(np.argmin(times[1 : 1 + nw]))]
        info = {k: steps / t for k, t in zip(case.info, times[1 + nw : -1], strict=True)}
        rows.append(
            WalkRow(
                case.kernel,
                case.instance,
                steps / times[0],
                steps / walk_t,
                steps / times[-1],
                kind if nw > 1 or kind != "same walk" else "",
                info,
            )
        )
        extra = "".join(f", {rows[-1].rate / v:.2f}x {k} (information)" for k, v in info.items())
        print(
            f"  {case.kernel:<26} {case.instance:<22} {steps / times[0]:.3g} env steps/s, "
            f"{rows[-1].rate / rows[-1].walk:.2f}x {kind}{extra}",
            flush=True,
        )
    return rows


def interleaved_times(fns, repeats: int) -> list[float]:
    """Median time of each function, calling them in turn (f0, f1, ..., f0, f1, ...) after one
    warm-up call each, so that every function sees the same machine load."""
    for f in fns:
        f()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for f, ts in zip(fns, times, strict=True):
            t0 = CLOCK()
            f()
            ts.append(CLOCK() - t0)
    return [float(np.median(ts)) for ts in times]


# ---------------------------------------------------------------------------------------------
def print_table(rows: list[Row], peak_mib: float) -> None:
    header = (
        f"| {'computation':<58} | {'unit':<14} | {'Numba':>9} | {'reference':>16} | "
        f"{'ratio':>7} | {'goal':<17} | {'met':<4} |"
    )
    print()
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        ratio = r.kernel / r.reference if r.reference else float("nan")
        met = "" if r.met is None else ("yes" if r.met else "NO")
        ref = f"{r.reference:.3g}" if r.reference is not None else "-"
        rtxt = f"{ratio:>6.2f}x" if ratio < 10 else f"{ratio:>6.1f}x"
        print(
            f"| {r.name:<58} | {r.unit:<14} | {r.kernel:>9.3g} | {ref:>16} | "
            f"{rtxt} | {r.goal:<17} | {met:<4} |"
        )
    print(
        f"| {'peak memory (maxrss) of this run':<58} | {'MiB':<14} | {peak_mib:>9.0f} | "
        f"{'':>16} | {'':>7} | {'':<17} | {'':<4} |"
    )


def print_walk_table(rows: list[WalkRow]) -> None:
    header = (
        f"| {'sampling kernel':<26} | {'instance':<22} | {'env steps/s':>11} | "
        f"{'same walk':>9} | {'ratio':>6} | {'draws only':>10} | {'ratio':>6} | "
        f"{'met (>= 0.7x same walk)':<23} |"
    )
    print()
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        kind = f" ({r.walk_kind})" if r.walk_kind else ""
        print(
            f"| {r.kernel:<26} | {r.instance:<22} | {r.rate:>11.3g} | {r.walk:>9.3g} | "
            f"{r.rate / r.walk:>5.2f}x | {r.draws:>10.3g} | {r.rate / r.draws:>5.2f}x | "
            f"{('yes' if r.met else 'NO') + kind:<23} |"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row (median)")
    parser.add_argument("--tree-nodes", type=int, default=1_000_000)
    parser.add_argument(
        "--episodes",
        type=int,
        default=200_000,
        help="kernel episodes per call (Python comparison rows)",
    )
    parser.add_argument("--ref-episodes", type=int, default=2_000, help="reference episodes")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="work per call of the sampling rows (1: 30-150 ms each)",
    )
    parser.add_argument(
        "--only-sampling",
        action="store_true",
        help="only the sampling kernels against their limits",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall (quiet machine) or this process's CPU time (shared machine)",
    )
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time

    numba.set_num_threads(1)
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
        f"{platform.machine()}, numba threads {numba.get_num_threads()}, "
        f"repeats {args.repeats} (median), clock {args.clock}",
        flush=True,
    )
    t0 = time.perf_counter()
    rows = []
    if not args.only_sampling:
        rows += bench_tree(args.tree_nodes, args.repeats)
        rows += bench_tabular(200, 4, 50, args.repeats)
        rows += bench_python_rollouts(
            200, 4, 50, args.tree_nodes, args.episodes, args.ref_episodes, args.repeats
        )
    print("sampling kernels against their limits:", flush=True)
    walk_rows = bench_sampling(args.repeats, args.scale)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if rows:
        print_table(rows, peak_mib)
        print(
            "\nreference: the NumPy/Python implementation of the same computation; "
            "cpi.evaluate rows: against the bare kernel (validation costs the difference)"
        )
    print_walk_table(walk_rows)
    print(
        "\nsame walk: a loop making the kernel's uniforms (same stream, same order) and its "
        "table reads, nothing else (benchmarks/walk_limits.py; checked to end where the kernel "
        "ends, with its checksum); walk + outputs: the same walk that also writes each of the "
        "episode kernel's output entries once (its results are memory it must write); draws "
        f"only: as many uniforms and nothing else. Peak memory {peak_mib:.0f} MiB."
    )
    for r in walk_rows:
        for k, v in r.info.items():
            print(
                f"  for information: {r.kernel}, {r.instance}: {r.rate / v:.2f}x {k} "
                "(the walk without the outputs)"
            )
    print(f"total wall time {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
