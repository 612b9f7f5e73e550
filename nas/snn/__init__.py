"""nas.snn: the spiking model zoo (SNN-MLP, Mixer-SNN, SpikingResformer).

Each family is a typed, self-validating config dataclass plus an ``nn.Module`` built from it;
published variants are registered by name (``create_model``, ``list_models``). Only torch and
spikingjelly are used here.
"""

from __future__ import annotations

from nas.snn._registry import create_model, list_models, register_model
from nas.snn.layers import Matmul
from nas.snn.mixer import MixerSNN, MixerSNNConfig
from nas.snn.neuron import NeuronConfig, reset_states
from nas.snn.resformer import SpikingResformer, SpikingResformerConfig
from nas.snn.snnmlp import SNNMLP, SNNMLPConfig

__all__ = [
    "create_model",
    "list_models",
    "register_model",
    "reset_states",
    "NeuronConfig",
    "SNNMLP",
    "SNNMLPConfig",
    "MixerSNN",
    "MixerSNNConfig",
    "SpikingResformer",
    "SpikingResformerConfig",
    "Matmul",
]
