"""Numba kernels of a k x k, stride-k max-pool over NCHW planes on CPU (forward and backward).

The zoo's small-image stems pool 2x2 with stride 2 right after their conv + BN, on the largest
activations of the network. PyTorch's CPU max-pool over an NCHW tensor is a scalar loop, and the
channels-last detour of :class:`nas.snn.layers.MaxPool2d` pays two layout copies of the input-sized
tensor (the input forward, its gradient backward) plus a slow scatter: 9.5 ms forward + backward on
Mixer-SNN's [64, 36, 28, 28] stem here, against ~2 ms for these kernels.

Same results as PyTorch's kernel (``aten/src/ATen/native/cpu/MaxPoolKernel.cpp``): a window's
elements are visited row by row, an element replaces the maximum when it is larger or NaN (so the
first maximum wins a tie, the last NaN wins over numbers), starting from -inf at the window's first
element; the backward adds each output's gradient to a zeroed input gradient at its argmax (windows
do not overlap, so each input gets at most one term: ``0 + g``, as PyTorch's ``+=``). The argmax is
kept as its offset in the window (uint8, k * k <= 256) rather than PyTorch's int64 flat index.

Arrays are C-contiguous: ``x [P, H, W]`` (P = N * C planes), ``out`` and ``arg [P, H // k, W // k]``;
rows and columns past the last whole window are ignored, as PyTorch's floor mode does.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"error_model": "numpy", "cache": True, "nogil": True}


_FORWARD: dict[int, object] = {}


def pool_forward(k: int):  # type: ignore[no-untyped-def]
    """The forward kernel for windows of ``k`` (built on first use, then kept).

    ``kernel(x, out, arg)`` writes the maxima of the k x k windows of ``x`` into ``out`` and their
    offsets ``dy * k + dx`` into ``arg``.
    """
    kernel = _FORWARD.get(k)
    if kernel is None:
        kernel = _FORWARD[k] = _build_forward(k)
    return kernel


def _build_forward(k: int):  # type: ignore[no-untyped-def]
    # k is a compile-time constant (a closure variable): the window loops unroll. One output at a
    # time is faster here than vectorising over a row: the zoo's rows are 14 outputs, shorter than a
    # vector loop's step plus its remainder (0.6 against 2.9 ms on [64, 36, 28, 28]).
    @numba.njit(**_JIT)
    def kernel(x, out, arg):  # type: ignore[no-untyped-def]
        planes, oh_n, ow_n = out.shape
        for p in range(planes):
            for oh in range(oh_n):
                for ow in range(ow_n):
                    best = np.float32(-np.inf)
                    code = 0
                    for dy in range(k):
                        for dx in range(k):
                            v = x[p, oh * k + dy, ow * k + dx]
                            if v > best or v != v:
                                best = v
                                code = dy * k + dx
                    out[p, oh, ow] = best
                    arg[p, oh, ow] = code

    return kernel


@numba.njit(**_JIT)
def pool_backward(g, arg, k, gx):  # type: ignore[no-untyped-def]
    """d loss / d x into ``gx`` (zeroed here) from d loss / d out ``g`` and the offsets ``arg``."""
    planes, oh_n, ow_n = g.shape
    zero = np.float32(0.0)
    gx[:] = zero
    for p in range(planes):
        for oh in range(oh_n):
            g_row = g[p, oh, 0:ow_n]
            a_row = arg[p, oh, 0:ow_n]
            for ow in range(ow_n):
                code = np.int64(a_row[ow])
                dy = code // k
                dx = code - dy * k
                # zero + g, not g: PyTorch adds into zeros, which turns a -0.0 gradient into +0.0
                gx[p, oh * k + dy, ow * k + dx] = zero + g_row[ow]
