"""The steps every sampling kernel is made of: alias draws, start states, one on-policy step.

Compiled helpers inlined into the kernels of :mod:`cpi.tabular_kernels` and
:mod:`cpi.tree_kernels`; ``rs`` is a PCG64 stream (:mod:`cpi.pcg`) threaded through them and
returned advanced. Every helper consumes its uniforms in a fixed order, documented where it is
defined: the sampling order of a kernel is the composition of its helpers'.

Arithmetic (the same draws as the original floating-point formulation, bit for bit): an alias
draw from k slots takes ``v = u k`` (rounded as a double), slot ``i = floor(v)`` and compares
the fraction ``f = (v - i) 2**32`` with the slot's 32-bit threshold T. Here ``F = floor(v
2**32)`` is computed once (scaling by 2**32 is exact), ``i = F >> 32`` and ``floor(f) = F mod
2**32``; for an integer T, ``f < T`` exactly when ``floor(f) < T``. ``u k < k`` always holds for
``u <= 1 - 2**-53`` (tests/cpi/test_sampling_order.py checks the largest u), so i < k.

Table reads go through :func:`load`, which skips the negative-index wraparound of Numba's
indexing (every index here is in range by construction): one instruction less per read, and
fewer live registers in the lane loops (the kernels are instruction-bound on small MDPs).
Tabular kernels read ``slots`` flattened to (3 nnz,) and ``R`` flattened to (S A,).
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba.core import cgutils, types
from numba.extending import intrinsic

from cpi.pcg import draw

_TWO32 = 4294967296.0
_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


@intrinsic
def load(typingctx, arr, idx):
    """``arr[idx]`` for a 1-d array and an index known to lie in [0, len(arr))."""
    if not isinstance(arr, types.Array) or arr.ndim != 1 or not isinstance(idx, types.Integer):
        return None
    sig = arr.dtype(arr, types.intp)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        return context.unpack_value(builder, aryty.dtype, ptr)

    return sig, codegen


@intrinsic
def store(typingctx, arr, idx, val):
    """``arr[idx] = val`` for a 1-d array and an index known to lie in [0, len(arr))."""
    if not isinstance(arr, types.Array) or arr.ndim != 1 or not isinstance(idx, types.Integer):
        return None
    sig = types.void(arr, types.intp, val)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        v = context.cast(builder, args[2], signature.args[2], aryty.dtype)
        context.pack_value(builder, aryty.dtype, v, ptr)
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, inline="always")
def alias_draw(tab, base, k, u):  # pragma: no cover - compiled
    """Index in [0, k) from the packed alias row starting at ``tab[base]`` (see
    :func:`cpi.alias.alias_pack`), given a uniform u."""
    F = np.uint64(u * k * _TWO32)
    i = np.int64(F >> _SHIFT32)
    w = load(tab, base + i)
    return i if (F & _LOW32) < (w >> _SHIFT32) else np.int64(w & _LOW32)


@nb.njit(cache=True, inline="always")
def start_state(cdf, idx, u):  # pragma: no cover - compiled
    """Start state by inverse CDF: ``idx[k]`` for the first k with ``cdf[k] > u`` (the start
    CDF's support, :func:`cpi.alias.start_support`; ``cdf[-1] == 1``). A branch-free binary
    search: ``np.searchsorted(cdf, u, side="right")``, without its mispredicted branches."""
    lo = 0
    n = cdf.shape[0]
    while n > 1:
        half = n >> 1
        lo = lo + half if load(cdf, lo + half - 1) <= u else lo
        n -= half
    return load(idx, lo + (load(cdf, lo) <= u))


@nb.njit(cache=True, inline="always")
def uniform_action(A, u):  # pragma: no cover - compiled
    """A uniform action in [0, A) from u (exploratory first action of a Q-rollout)."""
    return min(int(u * A), A - 1)


@nb.njit(cache=True, inline="always")
def next_state(ptr, slots, row, u):  # pragma: no cover - compiled
    """s' ~ P[s, a] for ``row = s*A + a`` from the alias slots (``slots`` flattened to (3 nnz,),
    see :class:`cpi.alias.TabularTables`), given a uniform u."""
    lo = load(ptr, row)
    F = np.uint64(u * (load(ptr, row + 1) - lo) * _TWO32)
    j = 3 * (lo + np.int64(F >> _SHIFT32))
    keep = (F & _LOW32) < load(slots, j)
    return np.int64(load(slots, j + 1)) if keep else np.int64(load(slots, j + 2))


@nb.njit(cache=True, inline="always")
def tab_step(ptab, ptr, slots, R, S, A, h, s, rs):  # pragma: no cover - compiled
    """One on-policy step of a tabular MDP from state s at step h (``R`` flattened to (S A,)).

    Draws, in order: the action ``a ~ pi_h(s)`` (one uniform), the next state ``s' ~ P[s, a]``
    (one uniform). Returns ``(s', a, R[s, a], rs)``.
    """
    u, rs = draw(rs)
    a = alias_draw(ptab, (h * S + s) * A, A, u)
    u, rs = draw(rs)
    row = s * A + a
    return next_state(ptr, slots, row, u), a, load(R, row), rs


@nb.njit(cache=True, inline="always")
def tree_step(children, ptab, A, x, rs):  # pragma: no cover - compiled
    """One on-policy step of a tree from node x (``children`` flattened to (N A,)): the action
    (one uniform) and its child. Returns ``(child, a, rs)``."""
    u, rs = draw(rs)
    a = alias_draw(ptab, x * A, A, u)
    return load(children, x * A + a), a, rs


@nb.njit(cache=True, inline="always")
def accept(p, rs):  # pragma: no cover - compiled
    """Accept with probability p, drawing from ``rs`` only when 0 < p < 1: ``(ok, rs)``."""
    if p >= 1.0:
        return True, rs
    if not p > 0.0:  # 0, negative or NaN: rejected without a draw
        return False, rs
    u, rs = draw(rs)
    return u < p, rs
