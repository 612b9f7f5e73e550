"""Numba kernels of SNN-MLP's spatial LIF scan on CPU (forward and backward).

The tensor is viewed as ``[A, L, I]`` (C-contiguous): the scan runs along L, cut into windows of ``s``
positions; A and I are independent lines (for a scan along H of an NCHW tensor, A = N*C and I = W;
along W, A = N*C*H and I = 1). In each window, from a zero state (as ``nas.snn.scan.
spatial_lif_reference``, in float32 and in the same operation order)::

    u = x[0]                       (first position)
    u = tau * m + x[j]             (the others)
    fired = u > vth
    y[j] = u if fired else vth
    m = 0 if fired else u

and the last ``L mod s`` positions pass through (``y = x``). The backward repeats autograd's gradients
of that reference: d y / d u = fired, d m / d u = not fired (no surrogate); d loss / d tau and
d loss / d vth are summed over all elements in float64 (autograd sums each position's float32
products with torch's reduction, so the two agree to ~1e-7 relative, not bit for bit).

With I > 1 the innermost loop runs over I and vectorises; with I = 1 (a scan along the contiguous
axis) a scalar loop over each line is 4x faster than that loop of length one. The backward recomputes
each window's potentials from ``x`` into a small scratch (saving them in the forward pass would write
and read back a tensor the size of ``x``). One compiled signature whatever the shape or ``s``;
``cache=True`` keeps it on disk.
"""

from __future__ import annotations

import numba
import numpy as np

_F = np.float32
_ZERO = _F(0.0)

_JIT = {"error_model": "numpy", "cache": True, "nogil": True}


@numba.njit(**_JIT)
def _forward_lines(x, tau, vth, s, y):  # type: ignore[no-untyped-def]
    lines, length, inner = x.shape
    m = np.empty(inner, np.float32)
    for a in range(lines):
        for k in range(length // s):
            for j in range(s):
                x_row = x[a, k * s + j]
                y_row = y[a, k * s + j]
                for i in range(inner):
                    u = x_row[i] if j == 0 else tau * m[i] + x_row[i]
                    fired = u > vth
                    y_row[i] = u if fired else vth
                    m[i] = _ZERO if fired else u


@numba.njit(**_JIT)
def _forward_scalar(x, tau, vth, s, y):  # type: ignore[no-untyped-def]
    lines, length = x.shape
    for a in range(lines):
        xa = x[a]
        ya = y[a]
        for k in range(length // s):
            m = _ZERO
            for j in range(s):
                p = k * s + j
                u = xa[p] if j == 0 else tau * m + xa[p]
                fired = u > vth
                ya[p] = u if fired else vth
                m = _ZERO if fired else u


@numba.njit(**_JIT)
def forward(x, tau, vth, s, y):  # type: ignore[no-untyped-def]
    """Scan ``x [A, L, I]`` into ``y`` (same shape) with windows of ``s`` positions."""
    lines, length, inner = x.shape
    if inner == 1:
        _forward_scalar(x.reshape(lines, length), tau, vth, s, y.reshape(lines, length))
    else:
        _forward_lines(x, tau, vth, s, y)
    tail = length // s * s
    y[:, tail:, :] = x[:, tail:, :]


@numba.njit(**_JIT)
def _backward_lines(x, gy, tau, vth, s, gx, d_tau, d_vth):  # type: ignore[no-untyped-def]
    lines, length, inner = x.shape
    u_win = np.empty((s, inner), np.float32)
    m = np.empty(inner, np.float32)
    g_m = np.empty(inner, np.float32)
    for a in range(lines):
        for k in range(length // s):
            base = k * s
            for j in range(s):
                x_row = x[a, base + j]
                u_row = u_win[j, :]
                for i in range(inner):
                    u = x_row[i] if j == 0 else tau * m[i] + x_row[i]
                    u_row[i] = u
                    m[i] = _ZERO if u > vth else u
            g_m[:] = _ZERO
            for jj in range(s):
                j = s - 1 - jj
                u_row = u_win[j, :]
                gy_row = gy[a, base + j]
                gx_row = gx[a, base + j]
                # Few arrays per loop: with more, LLVM gives up the runtime alias checks it needs to
                # vectorise (3x slower).
                for i in range(inner):
                    # Both loads before the choice: as a choice between two addresses to load from,
                    # LLVM left this loop scalar with a branch (10x slower on random spikes).
                    g_fired = gy_row[i]
                    g_carried = g_m[i]
                    g_u = g_fired if u_row[i] > vth else g_carried
                    gx_row[i] = g_u
                    g_m[i] = g_u * tau
                for i in range(inner):
                    g_y = np.float64(gy_row[i])
                    d_vth[i] += _ZERO if u_row[i] > vth else g_y
                if j > 0:
                    m_row = u_win[j - 1, :]
                    for i in range(inner):
                        m_prev = m_row[i]
                        d_tau[i] += np.float64(gx_row[i] * (_ZERO if m_prev > vth else m_prev))


@numba.njit(**_JIT)
def _backward_scalar(x, gy, tau, vth, s, gx, d_tau, d_vth):  # type: ignore[no-untyped-def]
    # d_tau and d_vth hold one float64 sum per position along the line: a single running sum would
    # chain every element's addition on the last one's (latency-bound, 2x slower).
    lines, length = x.shape
    u_win = np.empty(s, np.float32)
    for a in range(lines):
        xa = x[a]
        gya = gy[a]
        gxa = gx[a]
        for k in range(length // s):
            base = k * s
            m = _ZERO
            for j in range(s):
                u = xa[base] if j == 0 else tau * m + xa[base + j]
                u_win[j] = u
                m = _ZERO if u > vth else u
            g_m = _ZERO
            for jj in range(s):
                j = s - 1 - jj
                p = base + j
                fired = u_win[j] > vth
                g_y = gya[p]
                g_u = g_y if fired else g_m
                gxa[p] = g_u
                d_vth[p] += _ZERO if fired else np.float64(g_y)
                if j > 0:
                    m_prev = u_win[j - 1]
                    d_tau[p] += np.float64(g_u * (_ZERO if m_prev > vth else m_prev))
                g_m = g_u * tau


@numba.njit(**_JIT)
def backward(x, gy, tau, vth, s, gx):  # type: ignore[no-untyped-def]
    """Write ``gx`` (d loss / d x) from ``gy`` (d loss / d y); return (d loss / d tau, d loss / d vth)."""
    lines, length, inner = x.shape
    if inner == 1:
        d_tau = np.zeros(length, np.float64)
        d_vth = np.zeros(length, np.float64)
        flat = (lines, length)
        _backward_scalar(x.reshape(flat), gy.reshape(flat), tau, vth, s, gx.reshape(flat), d_tau, d_vth)
    else:
        d_tau = np.zeros(inner, np.float64)
        d_vth = np.zeros(inner, np.float64)
        _backward_lines(x, gy, tau, vth, s, gx, d_tau, d_vth)
    tail = length // s * s
    gx[:, tail:, :] = gy[:, tail:, :]
    return d_tau.sum(), d_vth.sum()
