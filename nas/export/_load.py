"""Reloading an export folder (``nas.load``) and measuring it again (``nas evaluate``)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from nas.errors import NasError, first_line
from nas.export._formats import load_weights
from nas.results.layout import ARCH_FILE, SPACE_FILE


@dataclass
class Evaluation:
    """Accuracy and energy of an exported model on a dataset's validation split."""

    val_acc: float
    report: Any  # nas.energy.EnergyReport
    dataset: str
    images: int


def measure_model(model: nn.Module, val_loader: Any, energy_images: int, profile: Any) -> tuple[float, Any]:
    """(val_acc over every validation batch, energy report of the first ``energy_images`` images):
    the very function the search's trainer measures with after each epoch."""
    from nas.train import evaluate_with_energy

    return evaluate_with_energy(model, val_loader, energy_images=energy_images, profile=profile)


def jsonable(value: Any) -> Any:
    """``value`` (a dataclass, dict, list, ...) as plain JSON types, the way ``arch.json`` stores it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, default=str))


def _loaders(recipe: Any, settings: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Train and validation loaders of an evaluation's ``settings`` (dataset, subsets, seed, batch size)."""
    from nas.data import make_loaders

    return make_loaders(
        settings["dataset"],
        batch_size=int(settings["batch_size"]),
        num_workers=recipe.num_workers,
        src=settings.get("data_src"),
        train_subset=settings.get("train_subset"),
        val_subset=settings.get("val_subset"),
        augment=recipe.augment,
        seed=int(settings["seed"]),
    )


def read_arch(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(export folder, its arch.json) for a folder or its arch.json; ``NasError`` when it is not an export."""
    path = Path(path)
    folder = path.parent if path.name == ARCH_FILE else path
    arch_path = folder / ARCH_FILE
    if not arch_path.is_file():
        raise NasError(f"{folder}: not an export folder ({ARCH_FILE} missing)")
    try:
        arch = json.loads(arch_path.read_text())
    except json.JSONDecodeError as error:
        raise NasError(f"{arch_path}: corrupt ({error})") from None
    for key in ("params", "model_config", "dataset", "weights"):
        if key not in arch:
            raise NasError(f"{arch_path}: field {key!r} missing")
    return folder, arch


def load(path: str | Path) -> nn.Module:
    """Rebuild an exported model (eval mode) from its folder's ``arch.json``, ``space.py`` and weights.

    The params are replayed on the copied space file; the resulting config must equal the recorded
    ``model_config`` (a space file edited since the export is refused rather than silently loaded).
    """
    from nas.data import DataInfo
    from nas.space import load_space

    folder, arch = read_arch(path)
    space = load_space(folder / SPACE_FILE, check_samples=0)
    try:
        info = DataInfo.from_dict(arch["dataset"]["info"])
    except (KeyError, TypeError, ValueError) as error:
        raise NasError(f"{folder / ARCH_FILE}: dataset.info is invalid ({error})") from None
    model = space.build_model(arch["params"], info)
    resolved = jsonable(getattr(model, "config", None) or space.config_for(arch["params"], info))
    if resolved != arch["model_config"]:
        raise NasError(f"{folder / SPACE_FILE}: its params {arch['params']} no longer build the exported "
                       "architecture (model_config differs from arch.json)")
    weights = folder / str(arch["weights"]["file"])
    if not weights.is_file():
        raise NasError(f"{weights}: the export's weights are missing")
    try:
        model.load_state_dict(load_weights(weights))
    except RuntimeError as error:
        raise NasError(f"{weights}: does not fit the architecture ({first_line(error)})") from None
    return model.eval()


def evaluate_export(path: str | Path, dataset: str | None = None) -> Evaluation:
    """Accuracy (every validation image of the export's evaluation settings) and energy report of an
    exported model; on the export's own dataset this repeats what the search measured."""
    from nas.data import get_info
    from nas.energy import profile_from_dict
    from nas.train import TrainRecipe

    folder, arch = read_arch(path)
    model = load(folder)
    ev = arch.get("evaluation") or {}
    recorded = arch["dataset"]
    name = dataset or recorded["name"]
    settings = {
        "dataset": name,
        "data_src": recorded.get("src") if name == recorded["name"] else None,
        "seed": int(ev.get("seed") or 0),
        "batch_size": int(ev.get("batch_size") or 64),
        "val_subset": ev.get("val_subset") if name == recorded["name"] else None,
        "train_subset": None,
    }
    info = get_info(name, src=settings["data_src"])
    want = recorded["info"]
    for key in ("img_size", "in_chans", "num_classes"):
        if getattr(info, key) != want[key]:
            raise NasError(f"--dataset {name}: {key} is {getattr(info, key)} but the model expects {want[key]}")
    _, val_loader, _ = _loaders(TrainRecipe(augment=False), settings)
    try:
        profile = profile_from_dict(arch["energy"]["profile"])
    except (KeyError, TypeError, ValueError) as error:
        raise NasError(f"{folder / ARCH_FILE}: energy.profile is invalid ({error})") from None
    val_acc, report = measure_model(model, val_loader, int(ev.get("energy_images") or 256), profile)
    images = sum(int(labels.numel()) for _, labels in val_loader)
    return Evaluation(val_acc=val_acc, report=report, dataset=name, images=images)
