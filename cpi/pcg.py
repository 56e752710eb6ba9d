"""numpy's PCG64 inside compiled kernels: the same uniforms as ``Generator.random()``, inlined.

A kernel that calls ``rng.random()`` on a ``numpy.random.Generator`` pays an indirect call per
draw, and the call hides the kernel's loop state from the compiler (it must assume the callee
writes memory). Here the 128-bit PCG64 state travels as a tuple of four ``uint64`` (state high
and low words, increment high and low words) through the kernel's locals, so it stays in
registers, and every draw is a few inlined instructions:

    state <- state * M + inc (mod 2**128);  x = rotr64(hi ^ lo, hi >> 58);  u = (x >> 11) 2**-53,

which is numpy's ``pcg64_next64`` (XSL-RR output of the stepped state) followed by
``next_double``: bit for bit the uniforms ``rng.random()`` would return, in the same order.
:func:`open_stream` reads a Generator's state, the kernel returns its final state and
:func:`close_stream` writes it back, so the Generator ends exactly where a run of
``rng.random()`` calls would have left it (the tests compare the states).

Jump-ahead (:func:`jump`, :func:`jump_table`): k steps of the generator are one affine map
``state <- M**k state + c_k inc`` with ``c_k = 1 + M + ... + M**(k-1)``, so a kernel can hand a
lane the stream position of a rollout whose draw count it knows and move on (``cpi.rollouts``
uses it to run reset candidates in lanes without changing which uniforms each candidate gets).

Generators backed by another bit generator (Philox, MT19937, PCG64DXSM) cannot be stepped here;
:func:`open_stream` seeds a PCG64 stream from one 128-bit draw of theirs instead (deterministic
given the Generator, but not the uniforms its own ``random()`` would give).
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

#: PCG64's 128-bit LCG multiplier (numpy's PCG_DEFAULT_MULTIPLIER_HIGH/LOW).
MULTIPLIER = (2549297995355413924 << 64) | 4865540595714422341
_MASK64 = (1 << 64) - 1
_MASK128 = (1 << 128) - 1


def _i128(builder, hi, lo):
    i128 = ir.IntType(128)
    return builder.or_(
        builder.shl(builder.zext(hi, i128), ir.Constant(i128, 64)), builder.zext(lo, i128)
    )


def _split(builder, x):
    i64 = ir.IntType(64)
    return builder.trunc(builder.lshr(x, ir.Constant(ir.IntType(128), 64)), i64), builder.trunc(
        x, i64
    )


@intrinsic
def _affine128(typingctx, hi, lo, mhi, mlo, chi, clo):
    """(hi, lo) <- (hi, lo) * (mhi, mlo) + (chi, clo) modulo 2**128 (one LLVM i128 mul-add)."""
    u64 = types.uint64
    sig = types.UniTuple(u64, 2)(u64, u64, u64, u64, u64, u64)

    def codegen(context, builder, signature, args):
        h, lo_, mh, ml, ch, cl = args
        s = builder.add(
            builder.mul(_i128(builder, h, lo_), _i128(builder, mh, ml)), _i128(builder, ch, cl)
        )
        return context.make_tuple(builder, signature.return_type, list(_split(builder, s)))

    return sig, codegen


@intrinsic
def _pcg_next(typingctx, hi, lo, ihi, ilo):
    """One PCG64 step: ``(u, hi', lo')`` with u = next_double of the stepped state."""
    u64 = types.uint64
    sig = types.Tuple((types.float64, u64, u64))(u64, u64, u64, u64)

    def codegen(context, builder, signature, args):
        h, lo_, ih, il = args
        i64 = ir.IntType(64)
        s = builder.add(
            builder.mul(_i128(builder, h, lo_), ir.Constant(ir.IntType(128), MULTIPLIER)),
            _i128(builder, ih, il),
        )
        nh, nl = _split(builder, s)
        x = builder.xor(nh, nl)
        rot = builder.lshr(nh, ir.Constant(i64, 58))
        back = builder.and_(builder.sub(ir.Constant(i64, 0), rot), ir.Constant(i64, 63))
        out = builder.or_(builder.lshr(x, rot), builder.shl(x, back))
        top = builder.uitofp(builder.lshr(out, ir.Constant(i64, 11)), ir.DoubleType())
        u = builder.fmul(top, ir.Constant(ir.DoubleType(), 1.0 / 9007199254740992.0))
        return context.make_tuple(builder, signature.return_type, [u, nh, nl])

    return sig, codegen


@nb.njit(cache=True, inline="always")
def draw(rs):  # pragma: no cover - compiled
    """``(u, rs')``: the next uniform in [0, 1) of stream ``rs`` and the advanced stream."""
    u, hi, lo = _pcg_next(rs[0], rs[1], rs[2], rs[3])
    return u, (hi, lo, rs[2], rs[3])


@nb.njit(cache=True, inline="always")
def jump(rs, table, k):  # pragma: no cover - compiled
    """Stream ``rs`` advanced by ``k`` draws (``table`` from :func:`jump_table`, k < len)."""
    m_hi, m_lo, c_hi, c_lo = table[k, 0], table[k, 1], table[k, 2], table[k, 3]
    # c_k * inc (mod 2**128), then state * M**k + c_k * inc
    a_hi, a_lo = _affine128(c_hi, c_lo, rs[2], rs[3], np.uint64(0), np.uint64(0))
    hi, lo = _affine128(rs[0], rs[1], m_hi, m_lo, a_hi, a_lo)
    return (hi, lo, rs[2], rs[3])


_JUMPS = np.zeros((1, 4), dtype=np.uint64)


def _words(x: int) -> tuple[int, int]:
    return (x >> 64) & _MASK64, x & _MASK64


def jump_table(k_max: int) -> np.ndarray:
    """(k_max + 1, 4) uint64 rows ``(M**k hi, lo, c_k hi, lo)`` for k = 0 .. k_max (cached)."""
    global _JUMPS
    if _JUMPS.shape[0] <= k_max:
        rows, m, c = [], 1, 0
        for _ in range(max(k_max + 1, 2 * _JUMPS.shape[0])):
            rows.append((*_words(m), *_words(c)))
            m, c = (m * MULTIPLIER) & _MASK128, (c * MULTIPLIER + 1) & _MASK128
        table = np.array(rows, dtype=np.uint64)
        table.setflags(write=False)
        _JUMPS = table
    return _JUMPS


def open_stream(rng: np.random.Generator) -> tuple:
    """The PCG64 state of ``rng`` as a kernel stream ``(hi, lo, inc_hi, inc_lo)`` of uint64.

    For a Generator with another bit generator, a fresh PCG64 stream seeded from it.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    bg = rng.bit_generator
    if type(bg) is not np.random.PCG64:
        bg = np.random.PCG64(rng.integers(0, 2**63, size=2, dtype=np.int64))
    st = bg.state["state"]
    s, inc = st["state"], st["inc"]
    u64 = np.uint64
    return (u64(s >> 64), u64(s & _MASK64), u64(inc >> 64), u64(inc & _MASK64))


def close_stream(rng: np.random.Generator, rs) -> None:
    """Store the final stream ``rs`` of a kernel back into ``rng`` (PCG64 Generators only)."""
    bg = rng.bit_generator
    if type(bg) is not np.random.PCG64:
        return
    st = bg.state
    st["state"]["state"] = (int(rs[0]) << 64) | int(rs[1])
    bg.state = st
