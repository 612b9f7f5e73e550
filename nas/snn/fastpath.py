"""The switch between the zoo's CPU fast paths and the plain implementations they replace.

Modules read it when they are built: spiking neurons (``make_neuron``: the fused kernels of
:mod:`nas.snn.fused`), SNN-MLP's spatial scan (:mod:`nas.snn.scan`), max-pooling
(:class:`nas.snn.layers.MaxPool2d`), Mixer-SNN's training-mode BatchNorm (:mod:`nas.snn.norm`) and channel
MLPs (:class:`nas.snn.layers.TokenLinear`), and the channels-last layouts of SNN-MLP, SpikingResformer and
Mixer-SNN's stem. The fast paths compute the same results (see each module for how exactly); the switch
exists to measure and test one against the other, e.g. ``with cpu_fast_paths(False): before = MixerSNN(cfg)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

_enabled = True


@contextmanager
def cpu_fast_paths(enabled: bool) -> Iterator[None]:
    """Build modules with (``True``, the default) or without the CPU fast paths inside this block."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


def cpu_fast_paths_enabled() -> bool:
    """Whether modules built now use the CPU fast paths (see :func:`cpu_fast_paths`)."""
    return _enabled


def eager_cpu_float32(x: torch.Tensor) -> bool:
    """Whether a call on ``x`` may take a numba kernel: eager (not traced, scripted or compiled), on the
    CPU, float32 and not empty."""
    # Tracing and compiling first: under tracing, sizes are tensors and comparing them warns.
    return (
        not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
        and not torch.compiler.is_compiling()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.numel() > 0
    )
