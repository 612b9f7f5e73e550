"""Make an untrained model's activations plausible before measuring it (demos and smoke tests only)."""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def calibrate_norms(model: nn.Module, images: torch.Tensor, passes: int = 1) -> None:
    """Recompute BatchNorm running statistics from ``images`` (a cumulative average over ``passes``
    training-mode forward passes without gradients), so that a randomly initialised network's
    neurons see unit-scale currents and fire at all.

    Statistics a model updates only in training mode (e.g. DSSA's firing-rate buffers) are set too.
    Firing rates measured afterwards are still those of random weights: not meaningful as energy
    figures of a trained model. The model's train/eval mode and BN momenta are restored.
    """
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    try:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative moving average over the calibration passes
        model.train()
        with torch.no_grad():
            for _ in range(passes):
                functional.reset_net(model)
                model(images)
        functional.reset_net(model)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
