"""Shared layers of the model zoo."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from nas.snn.fastpath import cpu_fast_paths_enabled, eager_cpu_float32


class Matmul(nn.Module):
    """``a @ b`` as a module, so that hooks (the energy meter, binary-input checks) can see
    products between two activations, e.g. the spike x real products inside DSSA."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)


class Seq(nn.Module):
    """Run stateless layers on a ``[T, B, ...]`` tensor by folding time into the batch.

    BatchNorm inside therefore pools its statistics over T and B together, as in spikingjelly's
    ``SeqToANNContainer``.
    """

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = layers[0] if len(layers) == 1 else nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x.flatten(0, 1))
        return y.unflatten(0, (x.shape[0], x.shape[1]))


class _WindowMaxPool(torch.autograd.Function):
    """k x k, stride-k max-pool of a float32 NCHW tensor, contiguous or channels-last, by the kernels
    of :mod:`nas.snn._pool_kernel` (PyTorch's results, see there). The output is contiguous; the input
    gradient has the input's layout."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, k: int) -> torch.Tensor:  # type: ignore[override]
        from nas.snn import _pool_kernel

        n, c, h, w = x.shape
        channels_last = not x.is_contiguous()
        out = torch.empty(n, c, h // k, w // k, dtype=x.dtype)
        arg = torch.empty(out.shape, dtype=torch.uint8)
        # A channels-last x goes to the kernel as its [N, H, W, C] view (no copy).
        _pool_kernel.pool_forward(k, channels_last)(_kernel_view(x, channels_last), out.numpy(), arg.numpy())
        ctx.save_for_backward(arg)
        ctx.k = k
        ctx.shape = x.shape
        ctx.channels_last = channels_last
        ctx.mark_non_differentiable(arg)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        from nas.snn import _pool_kernel

        (arg,) = ctx.saved_tensors
        layout = torch.channels_last if ctx.channels_last else torch.contiguous_format
        gx = torch.empty(ctx.shape, dtype=g.dtype, memory_format=layout)
        _pool_kernel.pool_backward(ctx.k, ctx.channels_last)(
            g.contiguous().numpy(), arg.numpy(), _kernel_view(gx, ctx.channels_last)
        )
        return gx, None


def _kernel_view(t: torch.Tensor, channels_last: bool) -> Any:
    """The numpy view of an NCHW tensor that the pool kernels take: [N, H, W, C] if channels-last."""
    return (t.permute(0, 2, 3, 1) if channels_last else t).numpy()


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with the CPU fast paths: the numba kernels of :mod:`nas.snn._pool_kernel` for a
    k x k stride-k pool of a float32 tensor, contiguous or channels-last (the zoo's stems), PyTorch's
    pool in channels-last otherwise.

    PyTorch's CPU max-pool over an NCHW tensor is a scalar loop: 10 ms for the Mixer-SNN stem's
    [64, 36, 28, 28] here, against 1.2 ms in channels-last, where it vectorises over channels, or
    2.4 ms with the copy into that layout (9.5 ms forward + backward, where the kernels take ~2 ms).
    The output is contiguous, so what follows is unchanged. Same maxima, same argmax (first in the
    window), so the output and its gradient are identical to the NCHW pool's.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.channels_last = cpu_fast_paths_enabled()

    def _window_size(self) -> int | None:
        """k when this pool is k x k with stride k, no padding, dilation 1, floor mode (else None)."""
        k, stride = _pair(self.kernel_size), _pair(self.stride if self.stride is not None else self.kernel_size)
        simple = (
            k[0] == k[1] == stride[0] == stride[1]
            and _pair(self.padding) == (0, 0)
            and _pair(self.dilation) == (1, 1)
            and not self.ceil_mode
            and not self.return_indices
        )
        return k[0] if simple and k[0] * k[0] <= 256 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if not self.channels_last or x.dim() != 4 or not eager_cpu_float32(x):
            return super().forward(x)
        k = self._window_size()
        layout_ok = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
        if k is not None and layout_ok and x.shape[2] >= k and x.shape[3] >= k:
            return _WindowMaxPool.apply(x, k)
        pooled = super().forward(x.contiguous(memory_format=torch.channels_last))
        if self.return_indices:
            return pooled[0].contiguous(), pooled[1].contiguous()
        return pooled.contiguous()


class TokenLinear(nn.Linear):
    """``nn.Linear`` over the channels of a token grid ``[N, H, W, C]``, with a CPU fast path: the
    product runs as a 1x1 convolution of the grid's memory read as a channels-last ``[N, C, H, W]`` map
    (no copy; the output ``[N, H, W, out]`` is contiguous).

    PyTorch's CPU linear calls MKL, whose float32 GEMM on this AMD EPYC reaches 70-95 GFLOP/s, while
    oneDNN's 1x1 convolution over the same memory reaches 95-175 (forward + backward, 1 thread, on
    Mixer-SNN's channel MLPs: [64, 196, 36] -> 108 4.4 against 2.0 ms, [64, 49, 216] -> 72 3.1 against
    1.7 ms). Results differ in float rounding only. Other inputs, tracing and modules built inside
    ``cpu_fast_paths(False)`` run ``nn.Linear``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grid_as_conv = cpu_fast_paths_enabled()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grid_as_conv and x.dim() == 4 and x.is_contiguous() and eager_cpu_float32(x):
            kernel = self.weight.view(self.out_features, self.in_features, 1, 1)
            return nn.functional.conv2d(x.permute(0, 3, 1, 2), kernel, self.bias).permute(0, 2, 3, 1)
        return super().forward(x)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


def repeat_time(x: torch.Tensor, time_steps: int) -> torch.Tensor:
    """Direct encoding: the same tensor at every one of ``time_steps`` steps (a view, no copy)."""
    return x.unsqueeze(0).expand(time_steps, *x.shape)


def halving_resolutions(first: int, stages: int, *, round_up: bool = False) -> tuple[int, ...]:
    """Side of the feature map in each of ``stages`` stages, halved between stages.

    ``round_up`` for a 3x3 stride-2 conv with padding 1 (odd sides round up); otherwise a 2x2
    merge (callers reject odd sides before a merge).
    """
    out = []
    for _ in range(stages):
        out.append(first)
        first = (first + 1) // 2 if round_up else first // 2
    return tuple(out)


def as_int_tuple(value: object, field: str, length: int | None = None) -> tuple[int, ...]:
    """``value`` as a tuple of ints (a single int is repeated ``length`` times); ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and length is not None:
        return (value,) * length
    if not isinstance(value, tuple | list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{field} must be a tuple of ints, got {value!r}")
    if length is not None and len(value) != length:
        raise ValueError(f"{field} must have {length} entries (one per stage), got {value!r}")
    return tuple(value)


def check_int(value: object, field: str, minimum: int = 1) -> int:
    """``value`` if it is an int >= ``minimum``; ValueError naming ``field`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{field} must be an int >= {minimum}, got {value!r}")
    return value


def check_data_fields(config: object) -> None:
    """Validate the dataset-facing fields that every family's config has."""
    for name in ("img_size", "in_chans", "num_classes"):
        check_int(getattr(config, name), name)


def check_float(value: object, field: str, low: float | None = None, high: float | None = None) -> float:
    """``value`` as a float inside ``[low, high]``; ValueError naming ``field`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{field} must be a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{field} must be in [{low}, {high}], got {value!r}")
    return float(value)


def check_choice(value: object, field: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``; ValueError naming ``field`` otherwise."""
    if value not in choices:
        raise ValueError(f"{field} must be one of {choices}, got {value!r}")
    return value  # type: ignore[return-value]


def apply_data_info(config: object, data_info: object | None) -> object:
    """The config with ``img_size``, ``in_chans`` and ``num_classes`` taken from ``data_info``.

    ``dataclasses.replace`` re-runs the config's validation on the final values.
    """
    if data_info is None:
        return config
    changes = {name: getattr(data_info, name) for name in ("img_size", "in_chans", "num_classes")}
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]


def config_from_dict(cls: type, d: dict) -> object:
    """Rebuild a config dataclass from ``dataclasses.asdict`` output: lists back to tuples,
    the nested ``neuron`` dict back to a ``NeuronConfig``."""
    from nas.snn.neuron import NeuronConfig, dataclass_fields

    kwargs = {}
    for key, value in dataclass_fields(cls, d, f"{cls.__name__}.from_dict needs a dict").items():
        if key == "neuron":
            value = NeuronConfig.from_dict(value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
