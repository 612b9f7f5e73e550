"""Score an untrained candidate on a few batches: SAHD and the energy meter's figures at initialisation."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nas.energy import EnergyMeter, EnergyReport, Profile
from nas.errors import NasError
from nas.proxy._sahd import SAHDRecorder, log_abs_det
from nas.snn import reset_states


@dataclass
class ProxyScores:
    """Training-free scores of one model at initialisation.

    ``sahd`` is the mean over batches of ``log |det K|`` (higher is better; ``-inf`` when a batch's kernel
    is singular); ``sahd_per_batch`` and ``layer_sahd`` (each layer's own kernel, same mean over
    batches) say where it comes from. ``energy_uj_init``, ``firing_rate_init``, ``dense_macs``, ``macs``
    and ``sops`` are the energy meter's per-image figures on the same passes (``energy`` holds the whole
    report); they are those of random weights: the dense MACs are exact, the spike-dependent parts are
    an estimate. ``seconds`` and ``cpu_seconds`` are the cost of :func:`score`.
    """

    sahd: float
    sahd_per_batch: list[float]
    layer_sahd: dict[str, float]
    spiking_layers: int
    calls: int  # kernel calls per batch (time steps x spiking layers that ran)
    energy_uj_init: float
    firing_rate_init: float
    dense_macs: float
    macs: float
    sops: float
    params: int
    time_steps: int
    batch_size: int  # images per batch (-1 when the batches differ in size)
    batches: int
    seed: int
    seconds: float
    cpu_seconds: float
    energy: EnergyReport | None = field(default=None, repr=False)

    def metrics(self) -> dict[str, float | int | None]:
        """The flat numbers, JSON-ready (a non-finite ``sahd`` becomes ``None``)."""
        return {
            "sahd": self.sahd if math.isfinite(self.sahd) else None,
            "energy_uj_init": self.energy_uj_init,
            "firing_rate_init": self.firing_rate_init,
            "dense_macs": self.dense_macs,
            "macs_init": self.macs,
            "sops_init": self.sops,
            "params": self.params,
            "time_steps": self.time_steps,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
        }


@contextmanager
def _init_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode except BatchNorm, which normalises with the batch's own statistics; every buffer and
    the modules' modes are restored afterwards.

    Why BatchNorm in training mode: a fresh BN's running statistics are the identity, so in eval mode
    the small initial weights (std 0.02 in the zoo) would reach the neurons almost unscaled and barely
    any would fire; SNASNet scores its networks in training mode. The rest stays in eval mode so no
    dropout or drop-path noise enters the score and no training-only statistics (DSSA's running firing
    rates) move. Buffers are restored so that scoring leaves the model exactly as it was.
    """
    modes = {module: module.training for module in model.modules()}
    saved = [(buf, buf.detach().clone()) for buf in model.buffers()]
    model.eval()
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.train()
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, copy in saved:
                buf.copy_(copy)
        for module, mode in modes.items():
            module.training = mode
        reset_states(model)


def _images(batch: Any) -> torch.Tensor:
    images = batch[0] if isinstance(batch, tuple | list) else batch
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"batches must be image tensors or (images, labels) pairs, got {type(images).__name__}")
    if images.dim() < 1 or images.shape[0] < 2:
        raise ValueError(f"each batch needs at least 2 images for a kernel, got shape {tuple(images.shape)}")
    return images


def score(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    seed: int = 0,
    profile: str | Path | Profile = "45nm",
) -> ProxyScores:
    """SAHD and the initial energy figures of ``model`` on ``batches``, without training it.

    ``batches`` are ``[B, C, H, W]`` image tensors or ``(images, labels)`` pairs (labels are not used);
    SNASNet uses 2 batches of 256, LightSNN 2 of 64 (see :func:`take_batches`). Each batch is one
    forward pass (the model's spiking state reset before it) with BatchNorm on batch statistics and
    everything else in eval mode; SAHD and the energy meter (under ``profile``) hook the same pass.
    Torch's random generator is seeded with ``seed`` inside a forked state, so the same model and
    batches give the same scores and the caller's random stream is untouched. The model's weights,
    buffers and train/eval modes are as before afterwards.

    Raises :class:`~nas.errors.NasError` when ``model`` has no spiking layer (no spikingjelly neuron, no
    active SNN-MLP ``SpatialLIF``) or none of them ran: SAHD is not defined for it.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    recorder = SAHDRecorder(model)
    if not recorder.layers:
        raise NasError(f"{type(model).__name__} has no spiking layers (no spikingjelly neuron, no SNN-MLP LIF "
                       "scan with group >= 1): SAHD is not defined for it")
    meter = EnergyMeter(model, profile)
    per_batch: list[float] = []
    per_layer: dict[str, list[float]] = {}
    calls, sizes = 0, []
    with torch.random.fork_rng(devices=[]), torch.no_grad(), _init_mode(model), recorder, meter:
        torch.manual_seed(seed)
        for batch in batches:
            images = _images(batch)
            sizes.append(int(images.shape[0]))
            recorder.start_batch(sizes[-1])
            reset_states(model)
            model(images)
            kernel = recorder.batch_kernel()
            if kernel is None:
                raise NasError(f"{type(model).__name__}: none of its {len(recorder.layers)} spiking layers ran on "
                               f"a batch of shape {tuple(images.shape)}: SAHD is not defined for it")
            calls = recorder.calls
            per_batch.append(log_abs_det(kernel))
            for name, layer_kernel in recorder.layer_kernels().items():
                per_layer.setdefault(name, []).append(log_abs_det(layer_kernel))
    if not per_batch:
        raise ValueError("batches is empty: give at least one batch of images")
    report = meter.report()
    return ProxyScores(
        sahd=sum(per_batch) / len(per_batch),
        sahd_per_batch=per_batch,
        layer_sahd={name: sum(values) / len(values) for name, values in per_layer.items()},
        spiking_layers=len(recorder.layers),
        calls=calls,
        energy_uj_init=report.energy_uj,
        firing_rate_init=report.firing_rate,
        dense_macs=report.dense_macs,
        macs=report.macs,
        sops=report.sops,
        params=report.params,
        time_steps=report.time_steps,
        batch_size=sizes[0] if len(set(sizes)) == 1 else -1,
        batches=len(per_batch),
        seed=seed,
        seconds=time.perf_counter() - wall,
        cpu_seconds=time.process_time() - cpu,
        energy=report,
    )


def score_candidate(
    space: Any,
    params: Mapping[str, Any],
    data_info: Any,
    batches: Iterable[Any],
    *,
    seed: int = 0,
    profile: str | Path | Profile = "45nm",
) -> ProxyScores:
    """Build candidate ``params`` of a ``SearchSpace`` with weights seeded by ``seed``, then :func:`score` it.

    The model is built as ``nas.train.build_candidate`` builds it (seed, then
    ``space.build_model(params, data_info)``), inside a forked random state, so a trial's proxy and its
    training start from the same weights when they share the seed. ``seconds`` covers the scoring only.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = space.build_model(params, data_info)
    return score(model, batches, seed=seed, profile=profile)
