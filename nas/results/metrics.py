"""The names of what a trained candidate reports each epoch, spelled once for every room.

``val_acc`` (fraction 0..1), ``energy_uj`` (microjoules per image per inference), ``sops`` and
``macs`` (per image), ``firing_rate`` (mean over spiking layers), ``params``, ``time_steps``.
"""

from __future__ import annotations

# What describes a trained model (an export's recorded metrics, a model card's rows), and what each means.
MODEL_METRIC_MEANINGS = {
    "val_acc": "validation accuracy (0..1)",
    "energy_uj": "energy per image per inference, uJ",
    "sops": "synaptic operations per image",
    "macs": "MACs per image",
    "firing_rate": "mean firing rate",
    "params": "parameters",
    "time_steps": "time steps T",
}
MODEL_METRICS = tuple(MODEL_METRIC_MEANINGS)

# The metrics a trial reports each epoch (besides ``epoch``), under the names every room uses.
METRICS = (*MODEL_METRICS, "train_loss", "epoch_seconds", "lr")

# What an objective or constraint of a space may name: every reported metric but the learning rate.
OBJECTIVE_METRICS = tuple(m for m in METRICS if m != "lr")

# What ``nas train`` prints per epoch.
EPOCH_COLUMNS = ("epoch", "train_loss", *(m for m in METRICS if m not in ("train_loss", "lr")))

