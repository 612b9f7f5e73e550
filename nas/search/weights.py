"""Rebuilding a finished trial's trained model from its params and kept weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.search.trainable import CHECKPOINT_FILE


def trial_weights_path(search_dir: Path, number: int) -> Path:
    """Where the controller keeps the final checkpoint of a complete trial."""
    return Path(search_dir) / "trials" / str(number) / CHECKPOINT_FILE


def load_trial_model(space: Any, params: dict[str, Any], data_info: Any, weights: Path) -> Any:
    """The trial's architecture with its trained weights, in eval mode."""
    import torch

    if not weights.is_file():
        raise NasError(f"{weights}: the trial's weights are missing")
    model = space.build_model(params, data_info)
    state = torch.load(weights, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"] if "model" in state else state)
    return model.eval()
