"""nas.proxy: training-free scores of an untrained candidate on a few batches.

:func:`score` gives the sparsity-aware Hamming-distance kernel score (SAHD, SNASNet) of any model with
spiking layers, and the energy meter's figures at initialisation (dense MACs, firing rates, energy), in
one forward pass per batch. :func:`score_candidate` builds a search-space candidate first;
:func:`take_batches` keeps a few batches of a loader. Uses torch, ``nas.snn`` and ``nas.energy`` only.
"""

from __future__ import annotations

from nas.proxy._batches import take_batches
from nas.proxy._layers import spike_patterns, spiking_layers
from nas.proxy._sahd import SAHDRecorder, hamming_kernel, log_abs_det
from nas.proxy._score import ProxyScores, score, score_candidate

__all__ = [
    "ProxyScores",
    "SAHDRecorder",
    "hamming_kernel",
    "log_abs_det",
    "score",
    "score_candidate",
    "spike_patterns",
    "spiking_layers",
    "take_batches",
]
