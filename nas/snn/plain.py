"""Spiking models in plain torch ops, for export: no spikingjelly custom op, no state between calls.

spikingjelly's nodes run a registered custom op (``sj_lif::forward``) that neither a process without
spikingjelly nor ONNX knows; :func:`plain_copy` swaps them for :class:`PlainNeuron`, which computes the
same forward pass.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from nas.errors import NasError


class PlainNeuron(nn.Module):
    """A multi-step LIF / PLIF / IF neuron in plain torch ops, for export only.

    spikingjelly's nodes run a registered custom op (``sj_lif::forward``) that neither a process
    without spikingjelly nor ONNX knows. This module computes the same forward pass (Heaviside spike,
    hard or soft reset) from ``v = v_reset`` (0 for a soft reset) at every call, so the traced graph
    carries no state between calls.
    """

    def __init__(self, node: nn.Module) -> None:
        super().__init__()
        from spikingjelly.activation_based import neuron

        self.v_threshold = float(node.v_threshold)
        self.v_reset = None if node.v_reset is None else float(node.v_reset)
        self.decay_input = bool(getattr(node, "decay_input", True))
        if isinstance(node, neuron.ParametricLIFNode):
            self.kind = "plif"
            self.register_buffer("w", node.w.detach().clone())
        elif isinstance(node, neuron.LIFNode):
            self.kind = "lif"
            self.tau = float(node.tau)
        elif isinstance(node, neuron.IFNode):
            self.kind = "if"
        else:
            raise NasError(f"cannot export neuron type {type(node).__name__} (known: LIF, PLIF, IF)")

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        reset = 0.0 if self.v_reset is None else self.v_reset
        # A Python float as the initial state: the traced graph then has no tensor sized by the
        # example batch (the ONNX exporter froze one made with full_like to the example's batch).
        v: torch.Tensor | float = reset
        spikes = []
        for x in x_seq.unbind(0):
            if self.kind == "if":
                h = v + x
            else:
                decay = torch.sigmoid(self.w) if self.kind == "plif" else 1.0 / self.tau
                h = v + (x - (v - reset)) * decay if self.decay_input else v - (v - reset) * decay + x
            spike = (h >= self.v_threshold).to(h.dtype)
            v = h - spike * self.v_threshold if self.v_reset is None else spike * reset + (1.0 - spike) * h
            spikes.append(spike)
        return torch.stack(spikes)


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode whose spikingjelly neurons are :class:`PlainNeuron` s."""
    from spikingjelly.activation_based.neuron import BaseNode

    from nas.snn.neuron import reset_states

    reset_states(model)  # neuron state left by the last forward may hold autograd history: not copyable
    clone = copy.deepcopy(model).eval()
    for module in list(clone.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, BaseNode):
                setattr(module, child_name, PlainNeuron(child))
    return clone
