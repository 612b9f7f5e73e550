"""Numba kernels of training-mode BatchNorm on CPU: batch statistics, the affine, and the backward.

A tensor reaches the kernels in one of two layouts, as a view (no copy):

- ``middle``: ``[N, C, R]``, the channel between batch and the rest, for contiguous ``[N, C]`` +
  anything (an NCHW map: R = H * W; ``BatchNorm1d`` on ``[N, C, L]``: R = L).
- ``inner``: ``[M, C]``, the channel innermost, for a channels-last ``[N, C, H, W]`` (M = N * H * W).

Why: PyTorch's CPU BatchNorm forward in training walks each channel with a scalar Welford update:
2.4 ms on Mixer-SNN's [64, 36, 28, 28] stem in NCHW and 1.8 ms on its [64, 196, 108] token BN,
against 0.3 ms for these kernels (1 thread, the 2-core AMD EPYC); the backward costs about the same
either way. Mixer-SNN runs ~20 BatchNorms a step, a quarter of its training step under PyTorch's.

Numerics: statistics are summed in float64 around a shift (the channel's first element), so the
variance keeps its digits even when the mean is large against the spread; the reductions of the
``middle`` layout may be reordered (``fastmath={"reassoc"}``) so that they vectorise. The results
differ from PyTorch's in float rounding only (relative ~1e-7 NCHW, ~1e-6 channels-last, where
PyTorch's own sums are float32). NaN and infinity propagate as in PyTorch.

Arrays: ``x``, ``y``, ``g`` (d loss / d y) and ``gx`` float32 in one layout; per-channel arrays
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
def stats_middle(x, mean, var):  # type: ignore[no-untyped-def]
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
def stats_inner(x, mean, var):  # type: ignore[no-untyped-def]
    """Per-channel mean and biased variance of ``x`` [M, C] into ``mean``, ``var`` [C]."""
    rows, chans = x.shape
    shift = np.empty(chans, np.float64)
    total = np.zeros(chans, np.float64)
    squares = np.zeros(chans, np.float64)
    for c in range(chans):
        shift[c] = x[0, c]
    for i in range(rows):
        row = x[i, 0:chans]
        for c in range(chans):
            d = np.float64(row[c]) - shift[c]
            total[c] += d
            squares[c] += d * d
    for c in range(chans):
        m = total[c] / rows
        mean[c] = shift[c] + m
        var[c] = max(squares[c] / rows - m * m, 0.0)


@numba.njit(**_JIT)
def normalise_middle(x, mean, scale, bias, y):  # type: ignore[no-untyped-def]
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


@numba.njit(**_JIT)
def normalise_inner(x, mean, scale, bias, y):  # type: ignore[no-untyped-def]
    """``y = (x - mean[c]) * scale[c] + bias[c]`` over ``[M, C]``, in float64."""
    rows, chans = x.shape
    for i in range(rows):
        src = x[i, 0:chans]
        dst = y[i, 0:chans]
        for c in range(chans):
            dst[c] = np.float32((np.float64(src[c]) - mean[c]) * scale[c] + bias[c])


@numba.njit(**_REDUCE)
def grad_sums_middle(g, x, mean, sum_g, sum_gx):  # type: ignore[no-untyped-def]
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
def grad_sums_inner(g, x, mean, sum_g, sum_gx):  # type: ignore[no-untyped-def]
    """Per channel: ``sum(g)`` and ``sum(g * (x - mean))`` over ``[M, C]``."""
    rows, chans = x.shape
    total = np.zeros(chans, np.float64)
    product = np.zeros(chans, np.float64)
    for i in range(rows):
        grow = g[i, 0:chans]
        xrow = x[i, 0:chans]
        for c in range(chans):
            gv = np.float64(grow[c])
            total[c] += gv
            product[c] += gv * (np.float64(xrow[c]) - mean[c])
    for c in range(chans):
        sum_g[c] = total[c]
        sum_gx[c] = product[c]


@numba.njit(**_JIT)
def grad_input_middle(g, x, mean, a, b, k, gx):  # type: ignore[no-untyped-def]
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


@numba.njit(**_JIT)
def grad_input_inner(g, x, mean, a, b, k, gx):  # type: ignore[no-untyped-def]
    """``gx = g * a[c] + (x - mean[c]) * b[c] + k[c]`` over ``[M, C]``, in float64."""
    rows, chans = x.shape
    for i in range(rows):
        grow = g[i, 0:chans]
        xrow = x[i, 0:chans]
        out = gx[i, 0:chans]
        for c in range(chans):
            out[c] = np.float32(np.float64(grow[c]) * a[c] + (np.float64(xrow[c]) - mean[c]) * b[c] + k[c])
