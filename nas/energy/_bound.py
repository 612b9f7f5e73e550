"""An upper bound of a model's energy that holds for any weights: every spiking neuron fires every step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

from nas.energy._meter import EnergyReport, measure
from nas.energy._profiles import Profile


def saturated_report(
    model: nn.Module,
    images: torch.Tensor,
    profile: str | Path | Profile = "45nm",
    **policy: Any,
) -> EnergyReport:
    """The energy report of ``model`` with every spiking neuron's output forced to 1.

    A layer fed by spikes costs SOPs = sum over input spikes of their fan-out, which is largest when
    every input fires (firing rate 1: SOPs = its dense MACs); layers fed by real values cost their
    dense MACs whatever the weights. So this report's ``energy_uj``, ``sops`` and ``macs`` bound those of
    the same architecture with any trained weights, under the same profile and counting ``policy``
    (keyword arguments of :func:`nas.energy.measure`). ``images`` should be real-valued (e.g. random
    normal): an all-zero image would look like a spike tensor to the meter.
    """
    handles = [module.register_forward_hook(_fire_everywhere) for module in model.modules()
               if isinstance(module, BaseNode)]
    try:
        return measure(model, images, profile, **policy)
    finally:
        for handle in handles:
            handle.remove()


def _fire_everywhere(module: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
    return torch.ones_like(out) if isinstance(out, torch.Tensor) else out
