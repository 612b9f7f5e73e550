"""BatchNorm with a CPU fast path for training: the numba kernels of :mod:`nas.snn._norm_kernel`.

``BatchNorm1d`` and ``BatchNorm2d`` are PyTorch's modules (same parameters, buffers, state dict,
eval mode, export) whose training-mode forward of a contiguous ``[N, C, ...]`` float32 input on a
1-thread CPU computes the batch statistics, the normalisation and its gradient with those kernels:
3-8x faster forward than PyTorch's on the zoo's NCHW maps and token BNs (see the kernel module), the
backward as fast or faster. On more threads PyTorch's parallel kernel runs (on 2 threads it was as
fast as these on one). Running statistics are updated as PyTorch does (unbiased variance, momentum or
the cumulative average). Results differ from ``torch.nn.BatchNorm*`` in float rounding only. Modules
built inside ``nas.snn.fastpath.cpu_fast_paths(False)`` are plain PyTorch.

Mixer-SNN uses them (its maps and tokens are NCHW); SNN-MLP and SpikingResformer run channels-last on
the CPU fast path, where PyTorch's own BatchNorm is the faster one, and keep ``nn.BatchNorm2d``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from nas.snn.fastpath import cpu_fast_paths_enabled, eager_cpu_float32


def _kernel_view(t: torch.Tensor) -> Any:
    """A contiguous ``[N, C, ...]`` tensor as the kernels' ``[N, C, R]`` numpy view."""
    return t.reshape(t.shape[0], t.shape[1], -1).numpy()


class _BatchNormFunction(torch.autograd.Function):
    """``(x - mean) * invstd * weight + bias`` with the batch's own statistics, and its gradient with
    respect to x (through the statistics), weight and bias."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,  # type: ignore[override]
                mean: np.ndarray, invstd: np.ndarray) -> torch.Tensor:
        from nas.snn import _norm_kernel

        scale = invstd * weight.detach().numpy().astype(np.float64)
        y = torch.empty_like(x)
        _norm_kernel.normalise(_kernel_view(x), mean, scale, bias.detach().numpy().astype(np.float64), _kernel_view(y))
        ctx.save_for_backward(x, weight)
        ctx.stats = (mean, invstd)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        from nas.snn import _norm_kernel

        x, weight = ctx.saved_tensors
        mean, invstd = ctx.stats
        g = g.contiguous()
        chans = x.shape[1]
        count = x.numel() // chans
        sum_g = np.empty(chans, np.float64)
        sum_gx = np.empty(chans, np.float64)
        g_view, x_view = _kernel_view(g), _kernel_view(x)
        _norm_kernel.grad_sums(g_view, x_view, mean, sum_g, sum_gx)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # d/dx of the normalisation through mean and variance, one affine in g and x - mean:
            # w * invstd * (g - mean(g) - (x - mean) * invstd^2 * mean(g * (x - mean)))
            a = weight.detach().numpy().astype(np.float64) * invstd
            b = -a * invstd * invstd * sum_gx / count
            k = -a * sum_g / count
            grad_x = torch.empty_like(x)
            _norm_kernel.grad_input(g_view, x_view, mean, a, b, k, _kernel_view(grad_x))
        if ctx.needs_input_grad[1]:
            grad_w = torch.from_numpy((sum_gx * invstd).astype(np.float32))
        if ctx.needs_input_grad[2]:
            grad_b = torch.from_numpy(sum_g.astype(np.float32))
        return grad_x, grad_w, grad_b, None, None


class _FastBatchNorm:
    """The training-mode fast path shared by :class:`BatchNorm1d` and :class:`BatchNorm2d` (mixed in
    before PyTorch's class, whose ``forward`` runs where the kernels do not apply)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast = cpu_fast_paths_enabled()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = self._fast_forward(x)
        return super().forward(x) if fast is None else fast  # type: ignore[misc]

    def _fast_forward(self: Any, x: torch.Tensor) -> torch.Tensor | None:
        """The output by the kernels, or None where PyTorch's module must run (eval mode, no running
        statistics or affine, several threads, tracing, another device or dtype, a channels-last or
        strided input, a 2-D input)."""
        if not (self.fast and self.training and self.track_running_stats and self.affine):
            return None
        if not eager_cpu_float32(x) or torch.get_num_threads() != 1:
            return None
        count = x.numel() // x.shape[1] if x.dim() > 1 else 0
        if x.dim() < 3 or not x.is_contiguous() or count < 2:  # one value per channel: PyTorch's error
            return None
        self._check_input_dim(x)
        from nas.snn import _norm_kernel

        chans = x.shape[1]
        mean = np.empty(chans, np.float64)
        var = np.empty(chans, np.float64)
        _norm_kernel.stats(_kernel_view(x.detach()), mean, var)
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        with torch.no_grad():
            self.running_mean.mul_(1.0 - factor).add_(torch.from_numpy(mean).float(), alpha=factor)
            unbiased = torch.from_numpy(var * count / (count - 1)).float()
            self.running_var.mul_(1.0 - factor).add_(unbiased, alpha=factor)
        invstd = 1.0 / np.sqrt(var + self.eps)
        return _BatchNormFunction.apply(x, self.weight, self.bias, mean, invstd)


class BatchNorm1d(_FastBatchNorm, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with the CPU training fast path for ``[N, C, L]`` inputs (see module doc)."""


class BatchNorm2d(_FastBatchNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with the CPU training fast path for contiguous NCHW maps (see module doc)."""
