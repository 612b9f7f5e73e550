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
"""

from __future__ import annotations

import copy
import dataclasses
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
from nas.results.layout import ARCH_FILE, ENERGY_FILE, SPACE_FILE
from nas.results.metrics import MODEL_METRICS
from nas.results.records import COMPLETE, TrialRecord
from nas.search.choices import EXPORT_FORMATS

FORMATS = EXPORT_FORMATS
FORMAT_VERSION = 1
CARD_FILE = "MODEL_CARD.md"
SAFETENSORS_FILE = "weights.safetensors"
STATE_DICT_FILE = "state_dict.pt"
TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.onnx"
ALIASES = ("best-accuracy", "min-energy", "knee")
TRACE_TOLERANCE = 1e-5
ONNX_TOLERANCE = 1e-4


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


@dataclass
class Evaluation:
    """Accuracy and energy of an exported model on a dataset's validation split."""

    val_acc: float
    report: Any  # nas.energy.EnergyReport
    dataset: str
    images: int


def parse_formats(text: str) -> tuple[str, ...]:
    """``"torchscript,onnx"`` -> ``("torchscript", "onnx")``; an unknown name is a ``NasError``."""
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise NasError(f"--format {text!r} names no format (choose from {', '.join(FORMATS)})")
    for name in names:
        if name not in FORMATS:
            raise NasError(f"--format {name!r} is not one of {', '.join(FORMATS)}")
    return names


# ---------------------------------------------------------------- choosing trials
def select_trials(
    records: Sequence[TrialRecord],
    objectives: dict[str, str],
    *,
    search: str,
    pareto: bool = False,
    knee: bool = False,
    trials: Sequence[int] = (),
) -> list[TrialRecord]:
    """The records that ``--pareto``, ``--knee`` or ``--trial N ...`` name, in trial order.

    A ``--trial`` must exist and be COMPLETE: pruned and failed trials are low-fidelity or have no
    weights, so they are refused with their state (and reason, when one was recorded).
    """
    import numpy as np

    from nas.results.pareto import front_of, knee_index

    if trials:
        by_number = {r.number: r for r in records}
        chosen = []
        for number in dict.fromkeys(trials):
            record = by_number.get(number)
            if record is None:
                known = f"0..{max(by_number)}" if by_number else "none"
                raise NasError(f"search {search!r} has no trial {number} (trials: {known})")
            if record.state != COMPLETE:
                reason = f": {record.fail_reason}" if record.fail_reason else ""
                raise NasError(f"trial {number} of search {search!r} is {record.state}{reason}; "
                               "only COMPLETE trials can be exported")
            chosen.append(record)
        return sorted(chosen, key=lambda r: r.number)
    front = front_of(records, objectives)
    if not front:
        raise NasError(f"search {search!r} has no complete feasible trial yet, so no Pareto front to export")
    if pareto:
        return front
    if not knee:
        raise NasError("choose the trials with exactly one of --pareto, --knee or --trial N")
    points = np.asarray([[float(r.values[m]) for m in objectives] for r in front], dtype=float)
    return [front[knee_index(points, list(objectives.values()))]]


# ---------------------------------------------------------------- export
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
    from nas.search.store import open_search
    from nas.space import load_space
    from nas.tracking import adopt_run_folder

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
    train_loader, val_loader, info = _loaders(space.recipe, settings)

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
    from nas.search.store import mask
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
                           f"{mask(handle.tracking_uri)}")
        if run_id is not None:
            found[record.number] = run_id
    return found


def _loaders(recipe: Any, settings: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The search's own train and validation loaders (same subsets, seed and batch size)."""
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


def _model_for(record: TrialRecord, space: Any, info: Any, handle: Any, retrain_epochs: int,
               settings: dict[str, Any], train_loader: Any, val_loader: Any) -> tuple[nn.Module, int]:
    """The trial's trained model and how many epochs trained it (retrained from scratch when asked)."""
    from nas.results.layout import trial_weights_path
    from nas.train import CandidateTrainer, load_trial_model

    if not retrain_epochs:
        model = load_trial_model(space, record.params, info, trial_weights_path(handle.search_dir, record.number))
        return model, _search_epochs(record)
    # Same seed as the search's trainable, so a retrain for the search's epochs repeats the trial.
    torch.manual_seed(int(settings["seed"]) + record.number)
    model = space.build(space.config_for(record.params, info), info)
    trainer = CandidateTrainer(model, train_loader, val_loader, space.recipe, epochs=retrain_epochs)
    # Only the last epoch's weights are exported and measured: skip the trainer's per-epoch evaluation.
    while trainer.epoch < trainer.total_epochs:
        trainer.train_one_epoch()
        trainer.epoch += 1
    return trainer.model.eval(), retrain_epochs


def _search_epochs(record: TrialRecord) -> int:
    return int(record.last_metrics.get("epoch") or len(record.history))


def measure_model(model: nn.Module, val_loader: Any, energy_images: int, profile: Any) -> tuple[float, Any]:
    """(val_acc over every validation batch, energy report of the first ``energy_images`` images):
    the very function the search's trainer measures with after each epoch."""
    from nas.train import evaluate_with_energy

    return evaluate_with_energy(model, val_loader, energy_images=energy_images, profile=profile)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, default=str))


def _write_folder(folder: Path, model: nn.Module, record: TrialRecord, *, space: Any, handle: Any, info: Any,
                  settings: dict[str, Any], val_loader: Any, formats: Sequence[str], trained: int,
                  retrained: bool, rank: int | None, run_id: str | None) -> ExportedModel:
    from nas.energy import get_profile
    from nas.search.store import mask

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
        "model_config": _jsonable(resolved),
        "input_shape": [*([info.time_steps] if info.time_steps else []), info.in_chans, info.img_size, info.img_size],
        "dataset": {"name": settings["dataset"], "src": settings.get("data_src"), "info": info.to_dict()},
        "evaluation": {k: settings.get(k) for k in ("dataset", "batch_size", "val_subset", "seed", "energy_images")},
        "recipe": _jsonable(space.recipe.to_dict()),
        "energy": {"profile": profile.to_dict(), "counting_policy": _jsonable(report.policy)},
        "metrics": _jsonable(metrics),
        "search_metrics": _jsonable(recorded),
        "weights": {"file": weights_file, "source": source, "epochs": trained,
                    "search_epochs": _search_epochs(record)},
        "objectives": dict(handle.objectives),
        "pareto_rank": rank,
        "lineage": {"search": handle.name, "trial": record.number, "mlflow_run_id": run_id,
                    "tracking_uri": mask(handle.tracking_uri)},
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


# ---------------------------------------------------------------- weights
def save_weights(model: nn.Module, folder: Path) -> str:
    """Write the model's state dict as safetensors (or ``state_dict.pt`` without it); returns the file name."""
    # Clones: safetensors refuses tensors that share storage, and views of a bigger buffer.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    try:
        from safetensors.torch import save_file
    except ImportError:
        torch.save(state, folder / STATE_DICT_FILE)
        return STATE_DICT_FILE
    save_file(state, str(folder / SAFETENSORS_FILE), metadata={"format": "pt"})
    return SAFETENSORS_FILE


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise NasError(f"{path}: reading safetensors needs the safetensors package (pip install "
                               "safetensors)") from None
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except NasError:
        raise
    except Exception as error:  # corrupt files raise format-specific errors
        raise NasError(f"{path}: unreadable weights ({str(error).strip().splitlines()[0]})") from None


# ---------------------------------------------------------------- TorchScript and ONNX
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

    from nas.snn import reset_states

    reset_states(model)  # neuron state left by the last forward may hold autograd history: not copyable
    clone = copy.deepcopy(model).eval()
    for module in list(clone.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, BaseNode):
                setattr(module, child_name, PlainNeuron(child))
    return clone


def write_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Trace ``model`` on ``example`` and save it; the traced module must match the live one on
    ``example`` and on a batch of another size (else ``NasError``)."""
    import warnings

    plain = plain_copy(model)
    with torch.no_grad(), warnings.catch_warnings():
        # Shape-derived Python branches become constants; the check below on another batch size is the test.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(plain, example, check_trace=False)
        other = torch.cat([example, example.flip(0)])[: example.shape[0] + 1]
        for batch in (example, other):
            live = model.eval()(batch)
            got = traced(batch)
            if not torch.allclose(got, live, atol=TRACE_TOLERANCE, rtol=0):
                worst = float((got - live).abs().max())
                raise NasError(f"{path.name}: the traced model differs from the live one by {worst:.2e} "
                               f"(batch of {batch.shape[0]}); not exported")
    traced.save(str(path))


@dataclass
class OnnxResult:
    """What ``write_onnx`` produced: ``reason`` is None when the file was written; ``batch`` is None for a
    dynamic batch dimension, else the one batch size the file accepts (``dynamic_error`` says why)."""

    batch: int | None = None
    reason: str | None = None
    dynamic_error: str | None = None


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> OnnxResult:
    """Export ONNX (opset 17) with the TorchScript-based exporter and check it with onnxruntime.

    A dynamic-batch export that onnxruntime cannot run on another batch size (the spiking families
    have reshapes that the exporter freezes to the example's batch) is replaced by a fixed-batch one.
    """
    try:
        import onnxruntime
    except ImportError:
        return OnnxResult(reason="ONNX export needs the onnx and onnxruntime packages (pip install onnx onnxruntime)")
    plain = plain_copy(model)
    with torch.no_grad():
        other = torch.cat([example, example.flip(0)])[: example.shape[0] + 1]
        expected = {len(b): (b, model.eval()(b)) for b in (example, other)}
    failures: list[str] = []
    for dynamic in (True, False):
        try:
            _onnx_export(plain, example, path, dynamic)
            quiet = onnxruntime.SessionOptions()
            quiet.log_severity_level = 4  # a failed dynamic-batch run is expected and reported here
            session = onnxruntime.InferenceSession(str(path), quiet, providers=["CPUExecutionProvider"])
            for size, (batch, live) in expected.items():
                if not dynamic and size != example.shape[0]:
                    continue
                got = torch.from_numpy(session.run(None, {"images": batch.numpy()})[0])
                if not torch.allclose(got, live, atol=ONNX_TOLERANCE, rtol=0):
                    raise ValueError(f"onnxruntime differs from torch by {float((got - live).abs().max()):.2e}")
            if dynamic:
                return OnnxResult()
            return OnnxResult(batch=int(example.shape[0]), dynamic_error=failures[0])
        except Exception as error:  # exporters and onnxruntime raise many unrelated types; the reason matters
            path.unlink(missing_ok=True)
            text = str(error).strip().splitlines()
            failures.append(f"{type(error).__name__}: {text[0] if text else ''}"[:300])
    return OnnxResult(reason=f"ONNX export failed: {failures[-1]}", dynamic_error=failures[0])


def _onnx_export(plain: nn.Module, example: torch.Tensor, path: Path, dynamic: bool) -> None:
    import contextlib
    import io
    import warnings

    # The exporter prints the whole graph on some failures: keep the terminal to nas's own lines.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            plain, (example,), str(path), dynamo=False, opset_version=17,
            input_names=["images"], output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None,
        )


# ---------------------------------------------------------------- the model card
def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def model_card(arch: dict[str, Any]) -> str:
    """``MODEL_CARD.md`` of an export folder, from its ``arch.json``."""
    weights = arch["weights"]
    metrics, recorded = arch["metrics"], arch["search_metrics"]
    lineage = arch["lineage"]
    if weights["source"] == "retrained":
        where = (f"retrained from scratch for {weights['epochs']} epochs at export (the search trial trained "
                 f"{weights['search_epochs']}); metrics re-measured on the retrained weights")
    else:
        where = (f"the search trial's own weights ({weights['epochs']} epochs); metrics measured at export "
                 "on these weights")
    rows = [
        ("val_acc", "validation accuracy (0..1)"),
        ("energy_uj", "energy per image per inference, uJ"),
        ("sops", "synaptic operations per image"),
        ("macs", "MACs per image"),
        ("firing_rate", "mean firing rate"),
        ("params", "parameters"),
        ("time_steps", "time steps T"),
    ]
    table = ["| metric | meaning | exported weights | search trial |", "|---|---|---|---|"]
    table += [f"| {k} | {meaning} | {_fmt(metrics.get(k))} | {_fmt(recorded.get(k))} |" for k, meaning in rows]
    ds = arch["dataset"]
    ev = arch["evaluation"]
    profile = arch["energy"]["profile"]
    onnx = arch["onnx"]
    rank = arch["pareto_rank"]
    lines = [
        f"# {arch['search']} trial {arch['trial']}: {arch['family']} (T={arch['time_steps']})",
        "",
        f"Weights: {where}.",
        "",
        *table,
        "",
        f"- Dataset: {ds['name']} ({ds['info']['img_size']}x{ds['info']['img_size']}x{ds['info']['in_chans']}, "
        f"{ds['info']['num_classes']} classes); val_acc over {ev['val_subset'] or 'all'} validation images "
        f"(batch {ev['batch_size']}, seed {ev['seed']}); energy on the first {ev['energy_images']} of them.",
        f"- Energy profile: {profile['name']} (E_MAC {profile['e_mac_pj']} pJ, E_AC {profile['e_ac_pj']} pJ); "
        f"counting policy in arch.json (energy.counting_policy), per-layer figures in {ENERGY_FILE}.",
        f"- Pareto rank in the search: {'infeasible' if rank is None else rank}"
        f"{' (on the front)' if rank == 0 else ''}; objectives "
        + ", ".join(f"{k} ({v})" for k, v in arch["objectives"].items()) + ".",
        f"- Lineage: search `{lineage['search']}`, trial {lineage['trial']}, MLflow run "
        f"`{lineage['mlflow_run_id'] or 'unknown'}` ({lineage['tracking_uri']}).",
        f"- Space: `{arch['space_name']}` (copy in {SPACE_FILE}, hash {arch['space_hash']}); params "
        f"`{json.dumps(arch['params'], sort_keys=True)}`.",
        "",
        "## Files",
        "",
        f"- `{arch['weights']['file']}`: weights; `nas.load(folder)` rebuilds the model from arch.json + these.",
    ]
    if arch["torchscript"]:
        lines.append(f"- `{arch['torchscript']}`: TorchScript, `torch.jit.load(path)` needs only torch; input "
                     f"float32 `[B, {', '.join(str(d) for d in arch['input_shape'])}]` normalised with the "
                     "dataset's mean/std (arch.json dataset.info).")
    if onnx["file"]:
        batch = "dynamic batch" if onnx["batch"] == "dynamic" else \
            f"fixed batch of {onnx['batch']} (a dynamic batch failed: {onnx.get('dynamic_batch_error')})"
        lines.append(f"- `{ONNX_FILE}`: ONNX opset 17, {batch}, checked against the live model with onnxruntime.")
    else:
        lines.append(f"- No ONNX: {onnx['reason']}.")
    lines += ["- `nas evaluate <folder>` re-measures accuracy and energy.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- registry
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


# ---------------------------------------------------------------- reload and evaluate
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
    model = space.build(space.config_for(arch["params"], info), info)
    resolved = _jsonable(getattr(model, "config", None) or space.config_for(arch["params"], info))
    if resolved != arch["model_config"]:
        raise NasError(f"{folder / SPACE_FILE}: its params {arch['params']} no longer build the exported "
                       "architecture (model_config differs from arch.json)")
    weights = folder / str(arch["weights"]["file"])
    if not weights.is_file():
        raise NasError(f"{weights}: the export's weights are missing")
    try:
        model.load_state_dict(_load_weights(weights))
    except RuntimeError as error:
        raise NasError(f"{weights}: does not fit the architecture ({str(error).splitlines()[0]})") from None
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


__all__ = [
    "ALIASES",
    "Evaluation",
    "ExportOptions",
    "ExportedModel",
    "FORMATS",
    "OnnxResult",
    "PlainNeuron",
    "evaluate_export",
    "export_search",
    "load",
    "model_card",
    "parse_formats",
    "plain_copy",
    "read_arch",
    "select_trials",
]
