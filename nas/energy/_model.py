"""Measuring a model by name from the command line: its trained weights, or random ones made plausible.

``nas energy`` builds a model of the zoo, loads a checkpoint into it (:func:`load_checkpoint`) or, without
one, recalibrates BatchNorm on random images, and measures it on random images (:func:`measure_on_random`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from nas.energy._calibrate import calibrate_norms
from nas.energy._meter import EnergyReport, measure
from nas.energy._profiles import Profile
from nas.errors import NasError, first_line


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a ``state_dict`` file (or a dict holding one under ``"state_dict"``) into ``model``.

    Only tensors are read (``weights_only=True``); anything that cannot be loaded is one ``NasError``.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise NasError(f"checkpoint {path}: {first_line(error)}") from error
    except Exception as error:  # torch's weights-only unpickler raises anything on a file of another kind
        raise NasError(f"checkpoint {path}: not a readable state_dict file (torch.load with weights_only=True "
                       "failed)") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError, AttributeError) as error:
        raise NasError(f"checkpoint {path}: {first_line(error)}") from error


def input_size(model: nn.Module, img_size: int | None = None, in_chans: int | None = None) -> tuple[int, int]:
    """(image size, channels) a model is measured at: the given ones, else its config's (224 and 3 by default)."""
    config = getattr(model, "config", None)
    return img_size or getattr(config, "img_size", 224), in_chans or getattr(config, "in_chans", 3)


def measure_on_random(model: nn.Module, profile: Profile, *, batch_size: int, img_size: int | None = None,
                      in_chans: int | None = None, calibrate: bool = False, name: str = "model") -> EnergyReport:
    """Energy report of ``model`` on ``batch_size`` seeded random images.

    ``calibrate``: recompute BatchNorm statistics on the images first (random weights; see
    :func:`calibrate_norms`). Running out of memory is a ``NasError`` naming the sizes to lower.
    """
    size, chans = input_size(model, img_size, in_chans)
    # training-mode BatchNorm needs 2 images or more, whatever batch_size is
    random_images = torch.randn(max(batch_size, 2), chans, size, size, generator=torch.Generator().manual_seed(0))
    images = random_images[:batch_size]
    if calibrate:
        calibrate_norms(model, random_images)
    try:
        return measure(model, images, profile)
    except (MemoryError, RuntimeError) as error:
        if not isinstance(error, MemoryError) and "alloc" not in str(error):
            raise
        raise NasError(f"model {name} at --img-size {size} and --batch-size {batch_size} needs more "
                       "memory than this machine has; try a smaller --img-size or --batch-size") from error
