"""SNN-MLP's spatial LIF scan as a function: the torch reference loop and a fused CPU kernel.

:func:`spatial_lif_scan` runs the numba kernels of :mod:`nas.snn._scan_kernel` for float32 CPU
tensors (one sweep over each window, forward and backward) and :func:`spatial_lif_reference`, the
per-position torch loop, everywhere else (CUDA, tracing for export, ``torch.compile``). Both give the
same outputs and d loss / d x bit for bit; d loss / d tau and d loss / d V_th are sums over all
elements, added in another order (relative difference ~1e-7).
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from nas.snn.fastpath import eager_cpu_float32


@functools.cache
def _kernel() -> ModuleType:
    """The numba kernel module, imported on first use (importing numba costs ~0.4 s)."""
    return importlib.import_module("nas.snn._scan_kernel")


def spatial_lif_reference(x: torch.Tensor, tau: torch.Tensor, vth: torch.Tensor, group: int, dim: int) -> torch.Tensor:
    """The scan in torch ops (autograd gives its gradients): windows become a batch axis, so the
    Python loop runs over the ``group`` positions of a window only."""
    s = group
    length = x.shape[dim]
    windows = length // s if s >= 1 else 0
    if windows == 0:
        return x
    main = x.narrow(dim, 0, windows * s)
    shape = tuple(main.shape[:dim]) + (windows, s) + tuple(main.shape[dim + 1 :])
    steps = main.reshape(shape).unbind(dim + 1)
    outs = []
    m: torch.Tensor | None = None
    for xj in steps:
        u = xj if m is None else tau * m + xj
        fired = u > vth
        outs.append(torch.where(fired, u, vth))
        m = u.masked_fill(fired, 0.0)
    y = torch.stack(outs, dim + 1).reshape(main.shape)
    if windows * s < length:
        y = torch.cat([y, x.narrow(dim, windows * s, length - windows * s)], dim)
    return y


def _line_order(x: torch.Tensor, dim: int) -> list[int]:
    """Dims of ``x`` by decreasing stride (``dim`` kept among them), under which ``x`` is contiguous
    when it is dense in any layout (NCHW, channels-last); the identity order otherwise."""
    order = sorted(range(x.dim()), key=lambda d: (-x.stride(d), d))
    return order if x.permute(order).is_contiguous() else list(range(x.dim()))


def _as_lines(t: torch.Tensor, order: list[int], dim: int) -> torch.Tensor:
    """``t`` as ``[A, L, I]``: the dims before ``dim`` in ``order`` merged, ``dim``, the dims after merged."""
    t = t.permute(order).contiguous()
    p = order.index(dim)
    return t.reshape(int(np.prod(t.shape[:p], dtype=np.int64)), t.shape[p], -1)


class _FusedScan(torch.autograd.Function):
    """Autograd of the fused scan; outputs keep the input's memory layout."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, tau: torch.Tensor, vth: torch.Tensor, group: int, dim: int) -> torch.Tensor:  # type: ignore[override]
        order = _line_order(x, dim)
        x3 = _as_lines(x.detach(), order, dim)
        y3 = torch.empty_like(x3)
        tau32, vth32 = np.float32(tau.item()), np.float32(vth.item())
        _kernel().forward(x3.numpy(), tau32, vth32, group, y3.numpy())
        ctx.save_for_backward(x3)
        ctx.scalars = (tau32, vth32, group, dim, order)
        permuted = x.permute(order).shape
        ctx.permuted = permuted
        return y3.view(permuted).permute(_inverse(order))

    @staticmethod
    @once_differentiable  # the kernels' gradients have no graph of their own: refuse double backward
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        (x3,) = ctx.saved_tensors
        tau32, vth32, group, dim, order = ctx.scalars
        gy3 = _as_lines(gy, order, dim)
        gx3 = torch.empty_like(x3)
        d_tau, d_vth = _kernel().backward(x3.numpy(), gy3.numpy(), tau32, vth32, group, gx3.numpy())
        gx = gx3.view(ctx.permuted).permute(_inverse(order))
        g_tau = torch.tensor(d_tau, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        g_vth = torch.tensor(d_vth, dtype=torch.float32) if ctx.needs_input_grad[2] else None
        return gx, g_tau, g_vth, None, None


def _inverse(order: list[int]) -> list[int]:
    inverse = [0] * len(order)
    for i, d in enumerate(order):
        inverse[d] = i
    return inverse


def _fusable(x: torch.Tensor, tau: torch.Tensor, vth: torch.Tensor) -> bool:
    return (
        eager_cpu_float32(x)
        and tau.dtype == torch.float32
        and vth.dtype == torch.float32
        and tau.numel() == 1
        and vth.numel() == 1
    )


def spatial_lif_scan(
    x: torch.Tensor, tau: torch.Tensor, vth: torch.Tensor, group: int, dim: int, *, fused: bool = True
) -> torch.Tensor:
    """The spatial LIF scan of ``x`` along ``dim`` in windows of ``group`` positions (see
    ``nas.snn.snnmlp.SpatialLIF``); the fused kernel where it applies and ``fused`` is set."""
    if fused and _fusable(x, tau, vth) and 1 <= group <= x.shape[dim]:
        return _FusedScan.apply(x, tau, vth, group, dim)
    return spatial_lif_reference(x, tau, vth, group, dim)
