"""Numba kernels of training-mode BatchNorm on CPU: batch statistics, the normalisation, the backward.

A tensor reaches the kernels as a ``[N, C, R]`` view (no copy) of a contiguous ``[N, C, ...]``: an NCHW
map (R = H * W) or ``BatchNorm1d``'s ``[N, C, L]`` (R = L).

Why: PyTorch's CPU BatchNorm forward in training walks each channel with a scalar Welford update:
2.4 ms on Mixer-SNN's [64, 36, 28, 28] stem in NCHW and 1.8 ms on its [64, 196, 108] token BN,
against 0.3 ms for these kernels (1 thread, the 2-core AMD EPYC); the backward costs about the same
either way. Mixer-SNN runs ~20 BatchNorms a step, a quarter of its training step under PyTorch's.

Channels-last maps are left to PyTorch, whose kernel for them vectorises over channels: kernels
for that layout measured no faster (SNN-MLP's median candidate, all channels-last: 43.8 against
42.1 ms a training step).

Numerics: statistics are summed in float64 around a shift (the channel's first element), so the
variance keeps its digits even when the mean is large against the spread; the reductions may be
reordered (``fastmath={"reassoc"}``) so that they vectorise. Results differ from PyTorch's in float
rounding only (and are closer to a float64 computation: PyTorch sums a weight's gradient in float32).
NaN and infinity propagate as in PyTorch.

Arrays: ``x``, ``y``, ``g`` (d loss / d y) and ``gx`` float32 ``[N, C, R]``; per-channel arrays
float64. Element-wise arithmetic is float64 too, centred on the mean: ``x * scale + offset`` in float32
(PyTorch's form) loses the digits of a small spread around a large mean (values near 1000 with a spread
of 0.01: outputs off by ~1e-2), and the kernels are bound by memory, not arithmetic.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"error_model": "numpy", "cache": True, "nogil": True}
# Sums along a contiguous row vectorise only when their order may change.
_REDUCE = {**_JIT, "fastmath": {"reassoc"}}


@numba.njit(**_REDUCE)
def stats(x, mean, var):  # type: ignore[no-untyped-def]
    """Per-channel mean and biased variance of ``x`` [N, C, R] into ``mean``, ``var`` [C]."""
    batch, chans, rest = x.shape
    count = batch * rest
    for c in range(chans):
        shift = np.float64(x[0, c, 0])
        total = 0.0
        squares = 0.0
        for n in range(batch):
            row = x[n, c, 0:rest]
            for r in range(rest):
                d = np.float64(row[r]) - shift
                total += d
                squares += d * d
        m = total / count
        mean[c] = shift + m
        var[c] = max(squares / count - m * m, 0.0)


@numba.njit(**_JIT)
def normalise(x, mean, scale, bias, y):  # type: ignore[no-untyped-def]
    """``y = (x - mean[c]) * scale[c] + bias[c]`` over ``[N, C, R]``, in float64."""
    batch, chans, rest = x.shape
    for n in range(batch):
        for c in range(chans):
            m = mean[c]
            a = scale[c]
            b = bias[c]
            src = x[n, c, 0:rest]
            dst = y[n, c, 0:rest]
            for r in range(rest):
                dst[r] = np.float32((np.float64(src[r]) - m) * a + b)


@numba.njit(**_REDUCE)
def grad_sums(g, x, mean, sum_g, sum_gx):  # type: ignore[no-untyped-def]
    """Per channel: ``sum(g)`` and ``sum(g * (x - mean))`` over ``[N, C, R]``."""
    batch, chans, rest = x.shape
    for c in range(chans):
        m = mean[c]
        total = 0.0
        product = 0.0
        for n in range(batch):
            grow = g[n, c, 0:rest]
            xrow = x[n, c, 0:rest]
            for r in range(rest):
                gv = np.float64(grow[r])
                total += gv
                product += gv * (np.float64(xrow[r]) - m)
        sum_g[c] = total
        sum_gx[c] = product


@numba.njit(**_JIT)
def grad_input(g, x, mean, a, b, k, gx):  # type: ignore[no-untyped-def]
    """``gx = g * a[c] + (x - mean[c]) * b[c] + k[c]`` over ``[N, C, R]``, in float64 (the input
    gradient, see norm.py)."""
    batch, chans, rest = x.shape
    for n in range(batch):
        for c in range(chans):
            m = mean[c]
            ac = a[c]
            bc = b[c]
            kc = k[c]
            grow = g[n, c, 0:rest]
            xrow = x[n, c, 0:rest]
            out = gx[n, c, 0:rest]
            for r in range(rest):
                out[r] = np.float32(np.float64(grow[r]) * ac + (np.float64(xrow[r]) - m) * bc + kc)
