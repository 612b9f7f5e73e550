"""Operator-level counting helpers: is a tensor binary, and how many accumulations do its spikes trigger."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

# Binary means: every value in [0, 1] and sum(x) == sum(x * x), i.e. sum(x * (1 - x)) == 0 up to float32
# rounding of the two sums. Three cheap passes (aminmax, sum, dot) instead of an elementwise
# (x == 0) | (x == 1) test, which costs ~10x more on CPU and would eat the speed budget.
_BINARY_RTOL = 1e-6

_CONV_FUNCTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def exact_sum(x: torch.Tensor) -> torch.Tensor:
    """``x.sum()`` as float64, exact for spike counts: a float32 sum of 0/1 values is exact below 2^24
    (float64 passes over ``x`` cost ~10x more on CPU, so they are only paid above that)."""
    total = x.sum()
    if total.item() < 2**24:
        return total.double()
    return x.sum(dtype=torch.float64)


def spike_total(x: torch.Tensor, total: torch.Tensor | None = None) -> float | None:
    """The number of spikes in ``x`` if ``x`` is binary (all values 0 or 1), else ``None``.

    ``total`` may pass the float64 sum of ``x`` when the caller has it already (it saves one pass).
    """
    if x.dtype == torch.bool:
        return float(x.sum().item())
    if not x.is_floating_point():
        x = x.float()
    if x.numel() == 0:
        return 0.0
    flat = x.reshape(-1)  # one copy if x is a strided view: every pass below is then contiguous (faster)
    low, high = torch.aminmax(flat)
    if low.item() < 0.0 or high.item() > 1.0:
        return None
    s = float((exact_sum(flat) if total is None else total).item())
    squares = float(torch.dot(flat, flat).item())
    if abs(s - squares) > _BINARY_RTOL * max(s, 1.0):
        return None
    return s


def _axis_coverage(size: int, kernel: int, stride: int, pad_left: int, pad_right: int, dilation: int) -> list[int]:
    """How many (output position, kernel tap) pairs read each input index along one axis."""
    outputs = (size + pad_left + pad_right - dilation * (kernel - 1) - 1) // stride + 1
    cover = [0] * size
    for o in range(max(outputs, 0)):
        for k in range(kernel):
            i = o * stride - pad_left + k * dilation
            if 0 <= i < size:
                cover[i] += 1
    return cover


@functools.lru_cache(maxsize=512)
def _zero_padded_fanout(
    spatial: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],  # (left, right) per axis, first axis first
    dilation: tuple[int, ...],
) -> torch.Tensor:
    # zero padding makes the fan-out separable: the product of the per-axis coverages
    fanout = torch.ones(())
    for axis, size in enumerate(spatial):
        left, right = padding[2 * axis], padding[2 * axis + 1]
        cover = _axis_coverage(size, kernel[axis], stride[axis], left, right, dilation[axis])
        fanout = fanout.unsqueeze(-1) * torch.tensor(cover, dtype=torch.float32)
    return fanout


def _autograd_fanout(conv: nn.Module, spatial: tuple[int, ...]) -> torch.Tensor:
    # reflect/replicate/circular padding: a border input is read again through the padding; let
    # PyTorch count it as the gradient of sum(conv(pad(x), ones)) with respect to x
    x = torch.ones(1, 1, *spatial, requires_grad=True)
    weight = torch.ones(1, 1, *conv.kernel_size)
    with torch.enable_grad():
        padded = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        y = _CONV_FUNCTIONS[len(spatial)](padded, weight, None, conv.stride, 0, conv.dilation)
        (grad,) = torch.autograd.grad(y.sum(), x)
    return grad[0, 0].detach()


def conv_spatial_fanout(conv: nn.Module, in_spatial: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Fan-out of each input position of one channel of ``conv``: the number of output positions it
    reaches per output channel of its group, for an input of spatial shape ``in_spatial`` (float32).

    Zero padding (ints, 'same' or 'valid'), stride and dilation use an exact separable count, cached
    per geometry; other padding modes ask autograd.
    """
    if conv.padding_mode == "zeros":
        # nn.Conv stores padding as (left, right) pairs, last axis first; 'same' may be asymmetric
        pads = list(conv._reversed_padding_repeated_twice)
        per_axis = [pads[2 * i : 2 * i + 2] for i in range(len(pads) // 2)][::-1]
        padding = tuple(p for pair in per_axis for p in pair)
        fanout = _zero_padded_fanout(
            tuple(in_spatial), tuple(conv.kernel_size), tuple(conv.stride), padding, tuple(conv.dilation)
        )
    else:
        fanout = _autograd_fanout(conv, tuple(in_spatial))
    return fanout.to(device)


def conv_dense_macs(conv: nn.Module, out: torch.Tensor) -> int:
    """MACs of ``conv`` if every input were real: output elements x (C_in / groups) x kernel volume
    (the thop/fvcore convention; padded positions included)."""
    kernel = 1
    for size in conv.kernel_size:
        kernel *= int(size)
    return int(out.numel()) * (conv.in_channels // conv.groups) * kernel
