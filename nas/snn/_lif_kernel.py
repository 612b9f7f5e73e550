"""Numba kernels of the fused multi-step LIF / PLIF / IF neuron on CPU (forward and backward).

Every element is charged, fired and reset over all T steps in one sweep, and its gradient is carried
back over the T steps in one sweep, instead of spikingjelly's ~10 tensor-wide torch ops per step,
each a pass over memory. The arithmetic repeats spikingjelly's torch reference
(``spikingjelly/_ops/lif/reference.py``) operation by operation, in float32, and the backward repeats
the order in which autograd adds up that reference's gradient terms, so spikes are identical and
gradients agree to the last bit, except where torch's own ``sigmoid`` rounds differently (the
sigmoid surrogate, see :func:`_exp`) and in the order of PLIF's sum over elements for d loss / d q.

Conventions (all arrays float32, C-contiguous, the time axis first):

- ``mode`` selects the charge: ``LIF_DECAY_INPUT`` ``h = v + (x - (v - r)) / tau``,
  ``LIF`` ``h = v - (v - r) / tau + x``, ``PLIF_DECAY_INPUT`` / ``PLIF`` the same with ``* q``
  (``q = sigmoid(w)``) in place of ``/ tau``, ``IF`` ``h = v + x``; ``decay`` is ``tau`` or ``q``.
- fire: ``s = (h - th >= 0)``; reset: hard ``v = s * r + (1 - s) * h``, soft ``v = h - s * th``.
- An optional array argument is passed as an empty array when absent (one compiled signature).

Speed notes (measured on the 2-core AMD EPYC, 1 thread):

- The kernels are built per neuron configuration (mode, reset, and for the backward detach and
  surrogate), as closures whose settings numba compiles as constants: with run-time flags LLVM could
  not unswitch them all and left loops scalar or carrying every variant's work (soft reset forward 5x,
  backward 1.3-2x slower). A process compiles the configurations it meets, whatever the architecture,
  and ``cache=True`` keeps them on disk (closures over plain constants cache; over another compiled
  function they would not, hence ``inline="always"`` helpers and loops inlined in the kernels).
- Elements go in blocks of ``_BLOCK`` so that a block's state stays in cache (256 KiB, in L2) while
  the T rows stream through. Long rows stream faster: 65536 elements against 4096 took the
  [4, 64, 256, 8, 8] benchmark's forward from 2.1 to 1.6 ms and its backward from 2.5 to 2.2 ms
  (calls of both variants alternating in one process). Rows are sliced as ``a[t, i0:i1]``: a row
  taken as ``a[t]`` with a reversed ``t`` left the loop scalar (12x slower).
- The forward pass saves the charged potentials and the backward overwrites them with the input
  gradient: recomputing them from x instead cost the backward 1.7x (4.5 against 2.7 ms on the
  [4, 64, 256, 8, 8] benchmark, where a fresh gradient buffer adds another 0.5 ms of page faults).
- ``error_model="numpy"``: numba's default tests every float division for a zero divisor, a branch
  the vectoriser cannot take.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

LIF_DECAY_INPUT = 0
LIF = 1
PLIF_DECAY_INPUT = 2
PLIF = 3
IF = 4

SIGMOID = 0
ATAN = 1

_BLOCK = 65536

_F = np.float32
_ZERO = _F(0.0)
_ONE = _F(1.0)
_HALF = _F(0.5)
_LOG2E = _F(1.4426950408889634)
# ln 2 split in two: the high part has few mantissa bits, so n * _LN2_HI is exact for |n| <= 128.
_LN2_HI = _F(0.693359375)
_LN2_LO = _F(-2.12194440e-4)
_EXP_LO = _F(-87.0)
_EXP_HI = _F(88.0)
# Taylor coefficients of exp on |r| <= ln2 / 2: the degree-7 remainder is < 1e-8, below half an ulp.
_C3, _C4, _C5, _C6, _C7 = (_F(1.0 / math.factorial(k)) for k in range(3, 8))

_JIT = {"error_model": "numpy", "cache": True, "nogil": True}


@intrinsic
def _float_from_bits(typingctx, bits):  # type: ignore[no-untyped-def]
    """Reinterpret int32 bits as float32 (an LLVM bitcast, which vectorises; numba has no scalar view)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@numba.njit(inline="always", **_JIT)
def _exp(x: float) -> float:
    """float32 exp within ~1.5 ulp (max relative error 9e-8), in plain arithmetic so it vectorises.

    numba calls libm's scalar ``expf`` (no SVML here), which stops the whole loop from vectorising
    (8x slower backward). torch's ``sigmoid`` itself is not exactly rounded either, so no exp
    reproduces it bit for bit; with this one, 98% of the Sigmoid surrogate's derivatives equal torch's
    and the rest differ by ``alpha * 2**-23`` (measured on 4M values). Arguments are clamped to
    [-87, 88] (results stay normal floats); NaN passes.
    """
    x = x if not x < _EXP_LO else _EXP_LO
    x = x if not x > _EXP_HI else _EXP_HI
    n = np.floor(x * _LOG2E + _HALF)
    r = x - n * _LN2_HI
    r = r - n * _LN2_LO
    p = _ONE + r * (_ONE + r * (_HALF + r * (_C3 + r * (_C4 + r * (_C5 + r * (_C6 + r * _C7))))))
    return p * _float_from_bits(np.int32((np.int32(n) + 127) << 23))


@numba.njit(inline="always", **_JIT)
def _surrogate_grad(z: float, surrogate: int, alpha: float, atan_scale: float, atan_half: float) -> float:
    """d spike / d z of spikingjelly's surrogates, with its torch ops in the same order (z = h - th).

    Sigmoid: ``s = sigmoid(alpha * z); (1 - s) * s * alpha``. ATan: ``(alpha / 2) / (1 + w * w)`` with
    ``w = z * (pi / 2 * alpha)``; torch evaluates ``scalar / tensor`` as ``reciprocal(t) * scalar``.
    """
    if surrogate == SIGMOID:
        s = _ONE / (_ONE + _exp(-(alpha * z)))
        return (_ONE - s) * s * alpha
    w = z * atan_scale
    return (_ONE / (_ONE + w * w)) * atan_half


@numba.njit(inline="always", **_JIT)
def _charge(v: float, x: float, mode: int, decay: float, vr: float) -> float:
    if mode == LIF_DECAY_INPUT:
        return v + (x - (v - vr)) / decay
    if mode == LIF:
        return v - (v - vr) / decay + x
    if mode == PLIF_DECAY_INPUT:
        return v + (x - (v - vr)) * decay
    if mode == PLIF:
        return v - (v - vr) * decay + x
    return v + x


@numba.njit(inline="always", **_JIT)
def _reset(h: float, spike: float, hard: bool, th: float, vr: float) -> float:
    if hard:
        return spike * vr + (_ONE - spike) * h
    return h - spike * th


@numba.njit(inline="always", **_JIT)
def _initial_state(v, v0, v0_fill):  # type: ignore[no-untyped-def]
    if v0.shape[0] > 0:
        v[:] = v0
    else:
        v[:] = v0_fill


_FORWARD: dict[tuple[int, bool, bool], object] = {}


def forward_kernel(mode: int, hard: bool, save_h: bool):  # type: ignore[no-untyped-def]
    """The forward kernel of one neuron configuration (built on first use, then kept).

    ``kernel(x, v0, v0_fill, decay, th, vr, spikes, v_out, h_out)`` charges, fires and resets
    ``x [T, N]`` from ``v0 [N]`` (or the constant ``v0_fill`` when ``v0`` is empty), writing
    ``spikes [T, N]``, the final state ``v_out [N]`` and, with ``save_h``, the charged potentials
    ``h_out [T, N]`` that the backward kernel needs.
    """
    key = (mode, hard, save_h)
    kernel = _FORWARD.get(key)
    if kernel is None:
        kernel = _FORWARD[key] = _build_forward(mode, hard, save_h)
    return kernel


def _build_forward(mode: int, hard: bool, save_h: bool):  # type: ignore[no-untyped-def]
    # Closure variables are compile-time constants to numba (and part of its cache key).
    @numba.njit(**_JIT)
    def kernel(x, v0, v0_fill, decay, th, vr, spikes, v_out, h_out):  # type: ignore[no-untyped-def]
        steps, n = x.shape
        for i0 in range(0, n, _BLOCK):
            i1 = min(i0 + _BLOCK, n)
            v = v_out[i0:i1]
            _initial_state(v, v0[i0:i1] if v0.shape[0] > 0 else v0, v0_fill)
            for t in range(steps):
                x_row = x[t, i0:i1]
                s_row = spikes[t, i0:i1]
                h_row = h_out[t, i0:i1] if save_h else x_row[0:0]
                for i in range(i1 - i0):
                    h = _charge(v[i], x_row[i], mode, decay, vr)
                    spike = _ONE if h - th >= _ZERO else _ZERO
                    s_row[i] = spike
                    if save_h:
                        h_row[i] = h
                    v[i] = _reset(h, spike, hard, th, vr)

    return kernel


@numba.njit(inline="always", **_JIT)
def _grad_h(h, gv, gs, th, vr, hard, detach, surrogate, alpha, atan_scale, atan_half):  # type: ignore[no-untyped-def]
    """d loss / d h[t] from d loss / d spike[t] (``gs``) and d loss / d v[t] (``gv``), the terms added
    in the order in which autograd adds those of spikingjelly's reference (it matters for 3 terms)."""
    sg = _surrogate_grad(h - th, surrogate, alpha, atan_scale, atan_half)
    spike = _ONE if h - th >= _ZERO else _ZERO
    g_spike = gs
    if hard:
        if not detach:
            g_spike = g_spike + -(gv * h)
            g_spike = g_spike + gv * vr
        return gv * (_ONE - spike) + g_spike * sg
    if not detach:
        g_spike = g_spike + -gv * th
    return gv + g_spike * sg


_BACKWARD: dict[tuple[int, bool, bool, int], object] = {}


def backward_kernel(mode: int, hard: bool, detach: bool, surrogate: int):  # type: ignore[no-untyped-def]
    """The backward kernel of one neuron configuration (built on first use, then kept).

    ``kernel(gs, gv, h, x, v0, v0_fill, decay, th, vr, alpha, atan_scale, atan_half, gv0) -> dq``
    overwrites the charged potentials ``h [T, N]`` of the forward pass with d loss / d x, from
    ``gs [T, N]`` (d loss / d spikes) and ``gv [N]`` (d loss / d final state, empty for none): step t's
    gradient replaces ``h[t]`` once nothing needs it any more, so the backward allocates nothing (a
    fresh [T, N] buffer costs page faults worth half the kernel here). ``gv0 [N]``, if not empty,
    receives d loss / d ``v0``. ``x`` and ``v0`` are only read for PLIF. ``atan_scale`` and
    ``atan_half`` are float32(pi / 2 * alpha) and float32(alpha / 2), rounded from the caller's double
    ``alpha`` as torch rounds them. Returns d loss / d q (PLIF; 0.0 otherwise), summed in float64.
    """
    key = (mode, hard, detach, surrogate)
    kernel = _BACKWARD.get(key)
    if kernel is None:
        kernel = _BACKWARD[key] = _build_backward(mode, hard, detach, surrogate)
    return kernel


def _build_backward(mode: int, hard: bool, detach: bool, surrogate: int):  # type: ignore[no-untyped-def]
    # Closure variables are compile-time constants to numba (and part of its cache key): the branches
    # below on mode, hard, detach and surrogate fold away.
    plif = mode == PLIF_DECAY_INPUT or mode == PLIF

    @numba.njit(**_JIT)
    def kernel(gs, gv, h, x, v0, v0_fill, decay, th, vr, alpha, atan_scale, atan_half, gv0):  # type: ignore[no-untyped-def]
        steps, n = h.shape
        carry_block = np.empty(_BLOCK, np.float32)
        v_prev_block = np.empty(_BLOCK if plif else 0, np.float32)
        dq_block = np.zeros(_BLOCK if plif else 0, np.float32)
        dq_total = 0.0
        for i0 in range(0, n, _BLOCK):
            i1 = min(i0 + _BLOCK, n)
            m = i1 - i0
            carry = carry_block[:m]
            _initial_state(carry, gv[i0:i1] if gv.shape[0] > 0 else gv, _ZERO)
            dq = dq_block[:m] if plif else dq_block
            dq[:] = _ZERO
            for k in range(steps):
                t = steps - 1 - k
                h_row = h[t, i0:i1]  # read, then overwritten with d loss / d x[t]
                gs_row = gs[t, i0:i1]
                if plif:
                    # v[t-1] from h[t-1], not overwritten yet (steps run backwards), or the initial state
                    v_prev = v_prev_block[:m]
                    if t > 0:
                        h_prev = h[t - 1, i0:i1]
                        for i in range(m):
                            spike = _ONE if h_prev[i] - th >= _ZERO else _ZERO
                            v_prev[i] = _reset(h_prev[i], spike, hard, th, vr)
                    else:
                        _initial_state(v_prev, v0[i0:i1] if v0.shape[0] > 0 else v0, v0_fill)
                    x_row = x[t, i0:i1]
                for i in range(m):
                    gh = _grad_h(
                        h_row[i], carry[i], gs_row[i], th, vr, hard, detach, surrogate, alpha, atan_scale, atan_half
                    )
                    if mode == LIF_DECAY_INPUT:
                        gd = gh / decay
                        h_row[i] = gd
                        carry[i] = gh + -gd
                    elif mode == LIF:
                        h_row[i] = gh
                        carry[i] = gh + -gh / decay
                    elif mode == PLIF_DECAY_INPUT:
                        gd = gh * decay
                        h_row[i] = gd
                        carry[i] = gh + -gd
                        dq[i] = dq[i] + gh * (x_row[i] - (v_prev[i] - vr))
                    elif mode == PLIF:
                        h_row[i] = gh
                        carry[i] = gh + -gh * decay
                        dq[i] = dq[i] + -gh * (v_prev[i] - vr)
                    else:
                        h_row[i] = gh
                        carry[i] = gh
            if gv0.shape[0] > 0:
                gv0[i0:i1] = carry
            for i in range(dq.shape[0]):
                dq_total += np.float64(dq[i])
        return dq_total

    return kernel
