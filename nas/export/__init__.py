"""Export and reload of a search's winners: a self-contained folder per chosen trial.

``export_search`` writes, for each chosen COMPLETE trial, ``<out>/<search>-trial-<n>/`` with

- ``arch.json``: space name, params, the fully resolved model config, family, T, dataset info, the
  evaluation settings (batch size, validation subset, seed), the energy profile and counting policy,
  the metrics of the exported weights and those the search recorded, and the trial's lineage;
- ``space.py``: a copy of the search-space file (``nas.load`` replays the params on it);
- ``weights.safetensors`` (or ``state_dict.pt`` when safetensors is not installed);
- ``model.torchscript.pt``: a traced module that runs with plain ``torch.jit.load``, without nas or
  spikingjelly (their neurons are swapped for plain-torch equivalents before tracing, and the
  multi-step state starts from zero inside the traced forward);
- ``model.onnx`` where the export succeeds (``arch.json`` says why when it does not);
- ``energy.json`` (the per-layer energy report) and ``MODEL_CARD.md``.

Everything a user can get wrong is checked before anything is written; each folder is written into
a temporary folder beside the target and renamed into place at the end.

The room's modules: ``_select`` (which trials), ``_export`` (the checks, folders, ``arch.json`` and the
registry), ``_formats`` (weights, TorchScript, ONNX), ``_card`` (the model card), ``_load`` (``nas.load``
and ``nas evaluate``). What other rooms and scripts use is re-exported here.
"""

from __future__ import annotations

from nas.export._card import CARD_FILE, model_card
from nas.export._export import (
    ALIASES,
    FORMAT_VERSION,
    FORMATS,
    ExportedModel,
    ExportOptions,
    export_search,
    parse_formats,
)
from nas.export._formats import (
    ONNX_FILE,
    SAFETENSORS_FILE,
    STATE_DICT_FILE,
    TORCHSCRIPT_FILE,
    OnnxResult,
    save_weights,
    write_onnx,
    write_torchscript,
)
from nas.export._load import Evaluation, evaluate_export, load, measure_model, read_arch
from nas.export._select import select_trials
from nas.snn.plain import PlainNeuron, plain_copy

__all__ = [
    "ALIASES",
    "CARD_FILE",
    "FORMATS",
    "FORMAT_VERSION",
    "ONNX_FILE",
    "SAFETENSORS_FILE",
    "STATE_DICT_FILE",
    "TORCHSCRIPT_FILE",
    "Evaluation",
    "ExportOptions",
    "ExportedModel",
    "OnnxResult",
    "PlainNeuron",
    "evaluate_export",
    "export_search",
    "load",
    "measure_model",
    "model_card",
    "parse_formats",
    "plain_copy",
    "read_arch",
    "save_weights",
    "select_trials",
    "write_onnx",
    "write_torchscript",
]
