"""The sparsity-aware Hamming-distance kernel score (SAHD) of SNASNet (Kim et al., ECCV 2022).

Per call of a spiking layer, the binary activations ``x`` of the ``B`` images (``[B, N]``) give
``r_i = sum_k x_ik / N`` (image i's firing rate), ``d_ij`` = Hamming distance of rows i and j,
``E_ij = N (r_i (1 - r_j) + (1 - r_i) r_j)`` (the Hamming distance expected from the two rates alone) and
``K_ij = N - d_ij / (2 (E_ij + 1e-3))``. The kernel of a batch is the mean of ``K`` over all calls of all
spiking layers (layers of different ``N`` mixed, as coded in SNASNet), and the batch's score is
``log |det K|``. A network whose images give more distinct spike patterns than their rates explain
scores higher.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nas.proxy._layers import spike_patterns, spiking_layers

# SNASNet's guard against E_ij = 0 (two silent or two saturated images).
_EPS = 1e-3


def hamming_kernel(spikes: torch.Tensor) -> torch.Tensor:
    """``K`` (float64 ``[B, B]``) of one call from its binary activations ``spikes`` (``[B, N]``, 0/1)."""
    if spikes.dim() != 2:
        raise ValueError(f"spikes must be [B, N], got shape {tuple(spikes.shape)}")
    n = spikes.shape[1]
    x = spikes.float()
    counts = x.sum(1)
    # d_ij = c_i + c_j - 2 <x_i, x_j>: one [B, N] x [N, B] product. Spike counts are integers, exact in
    # float32 below 2^24 per row; everything after it is float64 so the small K differences survive.
    overlap = (x @ x.T).double()
    counts = counts.double()
    distance = counts[:, None] + counts[None, :] - 2.0 * overlap
    rate = counts / n
    expected = n * (rate[:, None] * (1.0 - rate[None, :]) + (1.0 - rate[:, None]) * rate[None, :])
    return n - distance / (2.0 * (expected + _EPS))


def log_abs_det(kernel: torch.Tensor) -> float:
    """``log |det kernel|`` (``-inf`` for a singular kernel, e.g. every image with the same pattern)."""
    return float(torch.linalg.slogdet(kernel.double()).logabsdet.item())


class SAHDRecorder:
    """Sums the per-call kernels of every spiking layer of ``model`` while it runs forward passes.

    Use as a context manager (hooks installed on entry, removed on exit); call :meth:`start_batch`
    before each batch and read :meth:`batch_kernel` after it. Per-layer sums are kept too, for
    :meth:`layer_kernels`. Raises ``ValueError`` on a layer output without the batch axis.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers = spiking_layers(model)
        self._handles: list[Any] = []
        self._batch = 0
        self._sums: dict[str, torch.Tensor] = {}
        self._calls: dict[str, int] = {}

    def __enter__(self) -> SAHDRecorder:
        for name, module in self.layers:
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def start_batch(self, batch: int) -> None:
        """Forget the previous batch; the next forward passes are of ``batch`` images."""
        self._batch = batch
        self._sums = {}
        self._calls = {}

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if not isinstance(out, torch.Tensor):
                return
            with torch.no_grad():
                for x in spike_patterns(module, out, self._batch):
                    k = hamming_kernel(x)
                    self._sums[name] = self._sums[name] + k if name in self._sums else k
                    self._calls[name] = self._calls.get(name, 0) + 1

        return hook

    @property
    def calls(self) -> int:
        """Calls recorded in the current batch (all layers)."""
        return sum(self._calls.values())

    def batch_kernel(self) -> torch.Tensor | None:
        """Mean ``K`` over every call of the current batch (``None`` when no spiking layer ran)."""
        if not self._sums:
            return None
        return sum(self._sums.values()) / self.calls  # type: ignore[return-value]

    def layer_kernels(self) -> dict[str, torch.Tensor]:
        """Mean ``K`` over the calls of each spiking layer that ran in the current batch."""
        return {name: total / self._calls[name] for name, total in self._sums.items()}
