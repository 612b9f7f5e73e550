"""Which layers of a model spike, and the binary spike pattern of each call of one, as ``[B, N]`` rows."""

from __future__ import annotations

import torch
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

from nas.snn.snnmlp import SpatialLIF


def spiking_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every layer of ``model`` whose output carries spike decisions.

    These are spikingjelly neurons (any ``BaseNode``: the nas zoo's LIF, PLIF and IF nodes are those)
    and SNN-MLP's :class:`~nas.snn.snnmlp.SpatialLIF` scans with a window (``group >= 1``; with
    ``group = -1`` the scan is off and the layer is an identity, so it is left out).
    """
    root = type(model).__name__
    found = []
    for name, module in model.named_modules():
        if isinstance(module, BaseNode) or (isinstance(module, SpatialLIF) and module.group >= 1):
            found.append((name or root, module))
    return found


def spike_patterns(module: nn.Module, out: torch.Tensor, batch: int) -> list[torch.Tensor]:
    """The calls' binary patterns in one forward of ``module``: a list of bool ``[B, N]`` tensors.

    A multi-step spikingjelly node (``step_mode="m"``, output ``[T, B, ...]``) counts as T calls, one
    per time step, as a single-step node called T times would. A single-step node's ``[B, ...]`` output
    is one call. Spikes are the positive entries (spikingjelly's heaviside gives 0/1). A ``SpatialLIF``
    outputs ``u`` where it fired and exactly ``V_th`` elsewhere, so its spikes are ``out > V_th`` over
    the scanned windows (the last ``L mod group`` positions pass through unscanned and are left out);
    an input shorter than one window is not scanned and gives no call. ``batch`` is the number of images
    in the forward pass; a layer whose output does not keep it as the batch axis raises ``ValueError``.
    """
    if isinstance(module, SpatialLIF):
        length = out.shape[module.dim]
        windows = length // module.group
        if windows == 0:
            return []
        scanned = out.narrow(module.dim, 0, windows * module.group)
        steps = [scanned > module.v_threshold]
    elif getattr(module, "step_mode", "s") == "m":
        steps = list((out > 0).unbind(0))
    else:
        steps = [out > 0]
    for x in steps:
        if x.dim() < 1 or x.shape[0] != batch:
            raise ValueError(
                f"{type(module).__name__} output of shape {tuple(out.shape)} has no batch axis of {batch} images "
                f"{'after its time axis' if getattr(module, 'step_mode', 's') == 'm' else 'first'}"
            )
    return [x.reshape(batch, -1) for x in steps]
