"""Exporting a search's chosen trials: the checks, the staged folders, ``arch.json`` and the registry."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas._paths import check_writable
from nas.errors import NasError
from nas.export._card import CARD_FILE, model_card
from nas.export._formats import ONNX_FILE, TORCHSCRIPT_FILE, OnnxResult, save_weights, write_onnx, write_torchscript
from nas.export._load import jsonable, measure_model
from nas.export._select import select_trials
from nas.results.layout import ARCH_FILE, ENERGY_FILE, SPACE_FILE
from nas.results.metrics import MODEL_METRICS
from nas.results.records import TrialRecord
from nas.search.choices import EXPORT_FORMATS

FORMATS = EXPORT_FORMATS
FORMAT_VERSION = 1
ALIASES = ("best-accuracy", "min-energy", "knee")


@dataclass
class ExportOptions:
    """What ``nas export`` accepts. Exactly one of ``pareto``, ``knee`` and ``trials`` chooses the trials."""

    name: str
    root: str = "nas-runs"
    pareto: bool = False
    knee: bool = False
    trials: list[int] = field(default_factory=list)
    out: str = "exports"
    retrain_epochs: int = 0
    formats: tuple[str, ...] = FORMATS
    register: bool = False
    force: bool = False
    storage: str | None = None
    tracking_uri: str | None = None

    def validate(self) -> None:
        """One clear error for option values that cannot work."""
        chosen = sum([bool(self.pareto), bool(self.knee), bool(self.trials)])
        if chosen != 1:
            raise NasError("choose the trials with exactly one of --pareto, --knee or --trial N")
        if isinstance(self.retrain_epochs, bool) or not isinstance(self.retrain_epochs, int) or self.retrain_epochs < 0:
            raise NasError(f"--retrain-epochs must be a whole number >= 0, got {self.retrain_epochs!r}")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise NasError(f"--format {unknown[0]!r} is not one of {', '.join(FORMATS)}")


@dataclass
class ExportedModel:
    """One written export folder, as the CLI prints it."""

    trial: int
    folder: Path
    files: list[str]
    metrics: dict[str, float]
    weights_source: str  # "search" (the trial's own weights) or "retrained"
    pareto_rank: int | None
    onnx: str  # the file name, or why there is none
    run_id: str | None = None
    registered_version: str | None = None
    aliases: list[str] = field(default_factory=list)


def parse_formats(text: str) -> tuple[str, ...]:
    """``"torchscript,onnx"`` -> ``("torchscript", "onnx")``; an unknown name is a ``NasError``."""
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise NasError(f"--format {text!r} names no format (choose from {', '.join(FORMATS)})")
    for name in names:
        if name not in FORMATS:
            raise NasError(f"--format {name!r} is not one of {', '.join(FORMATS)}")
    return names


def export_search(options: ExportOptions, *, progress: Callable[[str], None] | None = None) -> list[ExportedModel]:
    """Export the chosen trials of a search (see the module docstring); returns what was written.

    ``progress`` is told each step as one line (loaders, each trial's model and measurement, the
    registry), so a caller can show that a long export is moving.

    Bad input (unknown search, a trial that does not exist or is not COMPLETE, missing weights, an
    output folder that exists and is not empty without ``force``, ``register`` without an MLflow run
    for a trial) raises ``NasError`` before anything is written.
    """
    from nas.results.layout import default_tracking_uri, trial_weights_path
    from nas.results.pareto import ranks_of
    from nas.search.runs import open_search
    from nas.space import load_space
    from nas.tracking import adopt_run_folder
    from nas.train import candidate_loaders

    options.validate()
    handle = open_search(options.root, options.name, storage=options.storage, tracking_uri=options.tracking_uri)
    records = handle.records
    chosen = select_trials(records, handle.objectives, search=handle.name, pareto=options.pareto,
                           knee=options.knee, trials=options.trials)
    for record in chosen:
        if not trial_weights_path(handle.search_dir, record.number).is_file():
            raise NasError(f"trial {record.number} of search {handle.name!r}: its weights are missing "
                           f"({trial_weights_path(handle.search_dir, record.number)})")
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise NasError(f"--out {out} exists and is not a folder")
    check_writable(out, "--out")  # before the data loaders are built and models traced
    targets = {r.number: out / f"{handle.name}-trial-{r.number}" for r in chosen}
    for target in targets.values():
        if target.exists() and not target.is_dir():
            raise NasError(f"{target} exists and is not a folder")
        if target.is_dir() and any(target.iterdir()) and not options.force:
            raise NasError(f"{target} exists and is not empty; pass --force to replace it")
    if options.register and handle.tracking_uri == default_tracking_uri(handle.root):
        adopt_run_folder(handle.root)  # a copied run folder registers its own artifacts, not the original's
    run_ids = _run_ids(handle, chosen, required=options.register)
    space = load_space(handle.space_file, check_samples=0)
    ranks = ranks_of(records, handle.objectives)

    dataset = str(handle.options.get("dataset") or space.dataset)
    settings = {
        "dataset": dataset,
        "data_src": handle.options.get("data_src"),
        "seed": int(handle.options.get("seed") or 0),
        "batch_size": space.recipe.batch_size,
        "val_subset": space.recipe.val_subset,
        "train_subset": space.recipe.train_subset,
        "energy_images": space.recipe.energy_images,
        "energy_profile": space.recipe.energy_profile,
    }
    say = progress or (lambda line: None)
    say(f"loading {dataset} for {len(chosen)} model(s) ...")
    train_loader, val_loader, info = candidate_loaders(dataset, space.recipe, src=settings["data_src"],
                                                       seed=settings["seed"])

    created_out = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    results: list[ExportedModel] = []
    models: dict[int, nn.Module] = {}
    try:
        for record in chosen:
            tmp = Path(tempfile.mkdtemp(prefix=f".{targets[record.number].name}.", dir=out))
            staged.append((tmp, targets[record.number]))
            say(f"trial {record.number}: " + (f"retraining for {options.retrain_epochs} epochs ..."
                                              if options.retrain_epochs else "loading its weights ..."))
            model, trained = _model_for(record, space, info, handle, options.retrain_epochs, settings,
                                        train_loader, val_loader)
            say(f"trial {record.number}: measuring val_acc and energy, writing {', '.join(options.formats)} ...")
            result = _write_folder(
                tmp, model, record,
                space=space, handle=handle, info=info, settings=settings, val_loader=val_loader,
                formats=options.formats, trained=trained, retrained=bool(options.retrain_epochs),
                rank=ranks.get(record.number),
                run_id=run_ids.get(record.number),
            )
            result.folder = targets[record.number]
            results.append(result)
            models[record.number] = model
        for tmp, target in staged:
            _readable(tmp)
            if target.exists():
                shutil.rmtree(target)  # checked above: empty, or --force
            tmp.rename(target)
        staged = []
    finally:
        for tmp, _ in staged:
            shutil.rmtree(tmp, ignore_errors=True)
        if staged and created_out and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
    if options.register:
        say(f"registering {len(results)} model(s) in MLflow as {handle.name!r} ...")
        _register(handle, results, models, info)
    return results


def _readable(folder: Path) -> None:
    """Ordinary permissions (mkdtemp and safetensors create owner-only entries)."""
    folder.chmod(0o755)
    for item in folder.iterdir():
        item.chmod(0o644)


def _run_ids(handle: Any, chosen: list[TrialRecord], *, required: bool) -> dict[int, str]:
    """MLflow child-run id of each chosen trial (lineage); with ``required``, a missing one is an error."""
    from nas._urls import mask_url
    from nas.tracking import find_trial_run_id

    found: dict[int, str] = {}
    for record in chosen:
        try:
            run_id = find_trial_run_id(handle.tracking_uri, handle.name, record.number)
        except NasError:
            if required:
                raise
            run_id = None
        if run_id is None and required:
            raise NasError(f"--register: trial {record.number} of search {handle.name!r} has no MLflow run in "
                           f"{mask_url(handle.tracking_uri)}")
        if run_id is not None:
            found[record.number] = run_id
    return found


def _model_for(record: TrialRecord, space: Any, info: Any, handle: Any, retrain_epochs: int,
               settings: dict[str, Any], train_loader: Any, val_loader: Any) -> tuple[nn.Module, int]:
    """The trial's trained model and how many epochs trained it (retrained from scratch when asked)."""
    from nas.results.layout import trial_weights_path
    from nas.train import build_candidate, load_trial_model

    if not retrain_epochs:
        model = load_trial_model(space, record.params, info, trial_weights_path(handle.search_dir, record.number))
        return model, _search_epochs(record)
    # Same seed as the search's trainable, so a retrain for the search's epochs repeats the trial.
    trainer = build_candidate(space, record.params, (train_loader, val_loader, info), epochs=retrain_epochs,
                              seed=int(settings["seed"]) + record.number).trainer
    # Only the last epoch's weights are exported and measured: skip the trainer's per-epoch evaluation.
    trainer.train_remaining()
    return trainer.model.eval(), retrain_epochs


def _search_epochs(record: TrialRecord) -> int:
    return int(record.last_metrics.get("epoch") or len(record.history))


def _write_folder(folder: Path, model: nn.Module, record: TrialRecord, *, space: Any, handle: Any, info: Any,
                  settings: dict[str, Any], val_loader: Any, formats: Sequence[str], trained: int,
                  retrained: bool, rank: int | None, run_id: str | None) -> ExportedModel:
    from nas._urls import mask_url
    from nas.energy import get_profile

    model.eval()
    val_acc, report = measure_model(model, val_loader, int(settings["energy_images"]), settings["energy_profile"])
    metrics = {"val_acc": val_acc, **report.metrics()}
    recorded = {k: record.last_metrics[k] for k in MODEL_METRICS if k in record.last_metrics}
    source = "retrained" if retrained else "search"
    files = [ARCH_FILE, SPACE_FILE]
    shutil.copyfile(handle.space_file, folder / SPACE_FILE)
    weights_file = save_weights(model, folder)
    files.append(weights_file)
    (folder / ENERGY_FILE).write_text(json.dumps(report.to_dict(), indent=2, default=str))
    files.append(ENERGY_FILE)

    example = _example_batch(val_loader)
    torchscript = None
    if "torchscript" in formats:
        write_torchscript(model, example, folder / TORCHSCRIPT_FILE)
        torchscript = TORCHSCRIPT_FILE
        files.append(TORCHSCRIPT_FILE)
    onnx = OnnxResult(reason="not requested (--format)")
    if "onnx" in formats:
        onnx = write_onnx(model, example, folder / ONNX_FILE)
        if onnx.reason is None:
            files.append(ONNX_FILE)
    onnx_note = onnx.reason
    if onnx.reason is None:
        onnx_entry = {"file": ONNX_FILE, "batch": onnx.batch or "dynamic", "dynamic_batch_error": onnx.dynamic_error}
    else:
        onnx_entry = {"file": None, "reason": onnx.reason}

    resolved = getattr(model, "config", None) or space.config_for(record.params, info)
    profile = get_profile(settings["energy_profile"])
    arch = {
        "format_version": FORMAT_VERSION,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "search": handle.name,
        "trial": record.number,
        "space_name": handle.study.user_attrs.get("space_name", space.name),
        "space_file": SPACE_FILE,
        "space_hash": handle.study.user_attrs.get("space_hash", space.source_hash),
        "params": record.params,
        "family": getattr(model, "family", record.family),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "time_steps": int(getattr(model, "time_steps", 1)),
        "model_config": jsonable(resolved),
        "input_shape": [*([info.time_steps] if info.time_steps else []), info.in_chans, info.img_size, info.img_size],
        "dataset": {"name": settings["dataset"], "src": settings.get("data_src"), "info": info.to_dict()},
        "evaluation": {k: settings.get(k) for k in ("dataset", "batch_size", "val_subset", "seed", "energy_images")},
        "recipe": jsonable(space.recipe.to_dict()),
        "energy": {"profile": profile.to_dict(), "counting_policy": jsonable(report.policy)},
        "metrics": jsonable(metrics),
        "search_metrics": jsonable(recorded),
        "weights": {"file": weights_file, "source": source, "epochs": trained,
                    "search_epochs": _search_epochs(record)},
        "objectives": dict(handle.objectives),
        "pareto_rank": rank,
        "lineage": {"search": handle.name, "trial": record.number, "mlflow_run_id": run_id,
                    "tracking_uri": mask_url(handle.tracking_uri)},
        "torchscript": torchscript,
        "onnx": onnx_entry,
    }
    (folder / ARCH_FILE).write_text(json.dumps(arch, indent=2, default=str))
    (folder / CARD_FILE).write_text(model_card(arch))
    files.append(CARD_FILE)
    return ExportedModel(trial=record.number, folder=folder, files=files, metrics=metrics, weights_source=source,
                         pareto_rank=rank, onnx=ONNX_FILE if onnx_note is None else onnx_note, run_id=run_id)


def _example_batch(val_loader: Any, count: int = 4) -> torch.Tensor:
    for images, _ in val_loader:
        return images[:count].detach().clone().cpu()
    raise NasError("the validation loader yielded no batch; cannot trace the model")


def _register(handle: Any, results: list[ExportedModel], models: dict[int, nn.Module], info: Any) -> None:
    """Register every export under the search name; aliases name the best, leanest and knee exports."""
    import numpy as np

    from nas.results.pareto import knee_index
    from nas.tracking import RegistryEntry, register_models, trial_model_uri

    steps = (info.time_steps,) if info.time_steps else ()  # event frames: [1, T, C, H, W]
    example = np.zeros((1, *steps, info.in_chans, info.img_size, info.img_size), dtype=np.float32)
    entries = []
    for result in results:
        # The search's own logged model is reused when the weights are the trial's; a retrained (or
        # never logged) model is logged on the trial's run first.
        uri = trial_model_uri(handle.tracking_uri, result.run_id) if result.weights_source == "search" else None
        tags = {k: str(v) for k, v in result.metrics.items()}
        tags |= {"nas.trial_number": str(result.trial), "nas.weights": result.weights_source,
                 "nas.export_folder": str(result.folder.resolve())}
        entries.append(RegistryEntry(number=result.trial, run_id=result.run_id or "", model_uri=uri,
                                     model=models[result.trial], input_example=example, tags=tags))
    accs = [r.metrics["val_acc"] for r in results]
    energies = [r.metrics["energy_uj"] for r in results]
    points = np.asarray([[a, e] for a, e in zip(accs, energies, strict=True)], dtype=float)
    aliases = {
        "best-accuracy": results[int(np.argmax(accs))].trial,
        "min-energy": results[int(np.argmin(energies))].trial,
        "knee": results[knee_index(points, ["max", "min"])].trial,
    }
    versions = register_models(handle.tracking_uri, handle.name, entries, aliases)
    for result in results:
        result.registered_version = versions.get(result.trial)
        result.aliases = [alias for alias, number in aliases.items() if number == result.trial]
