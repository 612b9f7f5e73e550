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

Arrays are C-contiguous: ``out``, ``arg`` and the output gradient ``[N, C, H // k, W // k]``; ``x``
and its gradient ``[N, C, H, W]``, or ``[N, H, W, C]`` for a channels-last tensor (``channels_last``).
Rows and columns past the last whole window are ignored, as PyTorch's floor mode does.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

_JIT = {"error_model": "numpy", "cache": True, "nogil": True}


def pool_forward(k: int, channels_last: bool):  # type: ignore[no-untyped-def]
    """The forward kernel for windows of ``k`` and the layout of ``x`` (built on first use, then kept).

    ``kernel(x, out, arg)`` writes the maxima of the k x k windows of ``x`` into ``out`` and their
    offsets ``dy * k + dx`` into ``arg``.
    """
    return _build_forward(k, channels_last)


@functools.cache
def _build_forward(k: int, channels_last: bool):  # type: ignore[no-untyped-def]
    # k is a compile-time constant (a closure variable): the window loops unroll. One output at a
    # time is faster here than vectorising over a row: the zoo's rows are 14 outputs, shorter than a
    # vector loop's step plus its remainder (0.6 against 2.9 ms on [64, 36, 28, 28]).
    @numba.njit(**_JIT)
    def kernel(x, out, arg):  # type: ignore[no-untyped-def]
        batch, chans, oh_n, ow_n = out.shape
        # Channels-last: each image's outputs go to a [OH, OW, C] scratch, the channels innermost
        # (the loop vectorises along x's memory), then into out[n] transposed, in cache.
        best = np.empty((oh_n, ow_n, chans) if channels_last else (0, 0, 0), np.float32)
        code = np.empty(best.shape, np.uint8)
        for n in range(batch):
            if channels_last:
                for oh in range(oh_n):
                    for ow in range(ow_n):
                        b = best[oh, ow, 0:chans]
                        a = code[oh, ow, 0:chans]
                        for c in range(chans):
                            b[c] = -np.inf
                            a[c] = 0
                        for dy in range(k):
                            for dx in range(k):
                                row = x[n, oh * k + dy, ow * k + dx, 0:chans]
                                for c in range(chans):
                                    v = row[c]
                                    take = v > b[c] or v != v
                                    b[c] = v if take else b[c]
                                    a[c] = np.uint8(dy * k + dx) if take else a[c]
                for c in range(chans):
                    for oh in range(oh_n):
                        for ow in range(ow_n):
                            out[n, c, oh, ow] = best[oh, ow, c]
                            arg[n, c, oh, ow] = code[oh, ow, c]
                continue
            for c in range(chans):
                for oh in range(oh_n):
                    for ow in range(ow_n):
                        top = np.float32(-np.inf)
                        offset = 0
                        for dy in range(k):
                            for dx in range(k):
                                v = x[n, c, oh * k + dy, ow * k + dx]
                                if v > top or v != v:
                                    top = v
                                    offset = dy * k + dx
                        out[n, c, oh, ow] = top
                        arg[n, c, oh, ow] = offset

    return kernel


def pool_backward(k: int, channels_last: bool):  # type: ignore[no-untyped-def]
    """The backward kernel for windows of ``k`` and a layout (built on first use, then kept; with k
    a constant, splitting an offset into dy, dx is no integer division: 1.5 against 0.4 ms here).

    ``kernel(g, arg, gx)`` writes d loss / d x into ``gx`` (zeroed here) from d loss / d out ``g``
    and the offsets ``arg``, all in the layout of the forward pass.
    """
    return _build_backward(k, channels_last)


@functools.cache
def _build_backward(k: int, channels_last: bool):  # type: ignore[no-untyped-def]
    @numba.njit(**_JIT)
    def kernel(g, arg, gx):  # type: ignore[no-untyped-def]
        zero = np.float32(0.0)
        batch, chans, oh_n, ow_n = g.shape
        for n in range(batch):
            gx[n] = zero  # one image at a time: the scatter below then writes into cache
            for c in range(chans):
                for oh in range(oh_n):
                    for ow in range(ow_n):
                        code = np.int64(arg[n, c, oh, ow])
                        dy = code // k
                        dx = code - dy * k
                        # zero + g, not g: PyTorch adds into zeros, which turns a -0.0 gradient into +0.0
                        if channels_last:
                            gx[n, oh * k + dy, ow * k + dx, c] = zero + g[n, c, oh, ow]
                        else:
                            gx[n, c, oh * k + dy, ow * k + dx] = zero + g[n, c, oh, ow]

    return kernel
