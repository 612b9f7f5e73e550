"""Train and evaluate one candidate architecture, one epoch at a time.

``CandidateTrainer.epochs()`` yields one metrics dict per epoch (names as in ARCHITECTURE.md:
``epoch``, ``train_loss``, ``val_acc``, ``energy_uj``, ``sops``, ``macs``, ``firing_rate``, ``params``,
``time_steps``, ``epoch_seconds``), so a Ray Tune trainable only has to report them. Energy is
measured after each epoch on a fixed validation subset, on the weights just trained: firing rates of
untrained weights say little (platform notes §3).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn


class CandidateDiverged(RuntimeError):
    """Training produced a NaN or infinite loss; the candidate's metrics would be garbage."""


@dataclass
class TrainRecipe:
    """How a candidate is trained. Defaults follow what worked for these families on a CPU
    (platform notes §5): batch 64, AdamW with weight decay 0.01 (none on norms, biases and LIF
    scalars), per-step cosine, label smoothing 0.1, eager mode."""

    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.01
    momentum: float = 0.9
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    label_smoothing: float = 0.1
    grad_clip: float | None = 5.0
    amp: bool = True
    compile: str = "auto"
    energy_images: int = 256
    energy_profile: str = "45nm"
    train_subset: int | None = None
    val_subset: int | None = None
    augment: bool = True
    num_workers: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"TrainRecipe.optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.compile not in ("auto", "always", "never"):
            raise ValueError(f"TrainRecipe.compile must be 'auto', 'always' or 'never', got {self.compile!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"TrainRecipe.batch_size must be a positive integer, got {self.batch_size!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainRecipe.lr must be positive, got {self.lr!r}")
        if self.warmup_epochs < 0:
            raise ValueError(f"TrainRecipe.warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        if self.energy_images < 1:
            raise ValueError(f"TrainRecipe.energy_images must be >= 1, got {self.energy_images!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able) of the recipe."""
        return asdict(self)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices and kernels only: norms, biases and scalar neuron
    constants (ndim <= 1) are not decayed."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, recipe: TrainRecipe) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov momentum) over ``parameter_groups``."""
    groups = parameter_groups(model, recipe.weight_decay)
    # Fused updates (one kernel over all tensors, CPU and CUDA): a small candidate has ~150 tensors,
    # whose one-by-one updates (PyTorch's CPU default) cost more than its convolutions, and the
    # multi-tensor ones still 3x the fused (AdamW on SNN-MLP's median candidate: 1.58 against 0.52 ms
    # a step; Mixer-SNN's 0.98 against 0.31). Same update up to float rounding.
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True, fused=True)
    return torch.optim.AdamW(groups, lr=recipe.lr, fused=True)


def cosine_with_warmup(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up, then cosine decay to ``min_ratio`` at ``total_steps``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def count_parameters(model: nn.Module) -> int:
    """Total number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy (fraction 0..1) of ``model`` over every batch of ``loader`` in eval mode."""
    model.eval()
    correct = total = 0
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        logits = model(images)
        correct += int((logits.argmax(dim=1) == labels).sum())
        total += int(labels.numel())
    return correct / max(total, 1)


@torch.no_grad()
def evaluate_with_energy(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str = "cpu",
    *,
    energy_images: int = 256,
    profile: str = "45nm",
) -> tuple[float, Any]:
    """Accuracy over the whole loader and an energy report of its first ``energy_images`` images.

    One pass: the meter's hooks count only the leading images (a fixed subset of a sequential
    validation loader), which costs a few percent of the pass instead of a second pass.
    """
    from nas.energy import EnergyMeter

    model.eval()
    correct = total = 0
    with EnergyMeter(model, profile) as meter:
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            wanted = max(0, energy_images - total)
            if 0 < wanted < images.shape[0]:  # split the batch at the subset's edge
                meter.active = True
                head_logits = model(images[:wanted])
                meter.active = False
                logits = torch.cat([head_logits, model(images[wanted:])])
            else:
                meter.active = wanted > 0
                logits = model(images)
            correct += int((logits.argmax(dim=1) == labels).sum())
            total += int(labels.numel())
        report = meter.report()
    return correct / max(total, 1), report


class CandidateTrainer:
    """Trains one model for up to ``epochs`` epochs and reports metrics after each.

    Checkpoints hold model, optimizer, LR schedule and the epoch counter, so a trial can stop after
    any epoch and continue later (the scheduler pauses and promotes; Ray restarts crashed trials).
    """

    def __init__(
        self,
        model: nn.Module,
        train_loader: Iterable,
        val_loader: Iterable,
        recipe: TrainRecipe,
        *,
        epochs: int,
        device: str | torch.device = "cpu",
    ) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.recipe = recipe
        self.total_epochs = epochs
        self.epoch = 0
        self.optimizer = make_optimizer(self.model, recipe)
        steps_per_epoch = max(1, len(train_loader))  # type: ignore[arg-type]
        total_steps = steps_per_epoch * epochs
        warmup_steps = int(round(recipe.warmup_epochs * steps_per_epoch))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: cosine_with_warmup(step, total_steps, warmup_steps, recipe.min_lr_ratio),
        )
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        self.use_amp = bool(recipe.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.step_model = self._maybe_compile(self.model)
        self.params = count_parameters(self.model)
        self.last_energy: Any = None  # EnergyReport of the latest validation pass

    def _maybe_compile(self, model: nn.Module) -> nn.Module:
        # Compiling a new architecture costs 60-85 s on this CPU and pays off only after 18-45 epochs
        # (platform notes §5), so "auto" compiles only on CUDA and only for long trials.
        wanted = self.recipe.compile == "always" or (
            self.recipe.compile == "auto" and self.device.type == "cuda" and self.total_epochs >= 20
        )
        return torch.compile(model) if wanted else model

    def train_one_epoch(self) -> float:
        """One pass over the training loader; returns the mean loss."""
        self.model.train()
        total_loss, batches = 0.0, 0
        for step, (images, labels) in enumerate(self.train_loader):
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, enabled=self.use_amp):
                loss = self.loss_fn(self.step_model(images), labels)
            if not torch.isfinite(loss):
                raise CandidateDiverged(f"loss became {float(loss.detach())} at epoch {self.epoch + 1}, step {step}")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.recipe.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            total_loss += float(loss.detach())
            batches += 1
        return total_loss / max(batches, 1)

    def epochs(self) -> Iterator[dict[str, Any]]:
        """Train the remaining epochs, yielding the metrics of each as soon as it ends."""
        while self.epoch < self.total_epochs:
            started = time.perf_counter()
            train_loss = self.train_one_epoch()
            self.epoch += 1
            val_acc, energy = evaluate_with_energy(self.model, self.val_loader, self.device,
                                                   energy_images=self.recipe.energy_images,
                                                   profile=self.recipe.energy_profile)
            metrics: dict[str, Any] = {
                "epoch": self.epoch,
                "train_loss": train_loss,
                "val_acc": val_acc,
                "lr": self.optimizer.param_groups[0]["lr"],
            }
            self.last_energy = energy
            metrics.update(energy.metrics())
            metrics["params"] = self.params
            metrics["epoch_seconds"] = time.perf_counter() - started
            yield metrics

    def train_remaining(self) -> None:
        """Train the remaining epochs without evaluating after each (when only the last weights matter)."""
        while self.epoch < self.total_epochs:
            self.train_one_epoch()
            self.epoch += 1

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training after ``self.epoch`` epochs."""
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by ``state_dict``."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write the trainer state to ``path`` atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Continue from a checkpoint written by ``save_checkpoint``."""
        self.load_state_dict(torch.load(Path(path), map_location=self.device, weights_only=False))


_PROCESS_LOADERS: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}


def candidate_loaders(
    dataset: str,
    recipe: TrainRecipe,
    *,
    src: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    reuse: bool = False,
) -> tuple[Any, Any, Any]:
    """Train and validation loaders for candidates of a search, and the dataset's ``DataInfo``.

    With ``reuse`` the loaders are kept for the life of the process (one dataset at a time): a Ray
    worker or a table-building worker trains many candidates and pays FFCV's numba compile once.
    """
    from nas.data import make_loaders

    key = (dataset, src, data_dir, recipe.batch_size, recipe.train_subset, recipe.val_subset, recipe.augment,
           recipe.num_workers, seed, device)
    if reuse and key in _PROCESS_LOADERS:
        return _PROCESS_LOADERS[key]
    loaders = make_loaders(
        dataset, batch_size=recipe.batch_size, device=device, num_workers=recipe.num_workers, src=src,
        data_dir=data_dir, train_subset=recipe.train_subset, val_subset=recipe.val_subset, augment=recipe.augment,
        seed=seed,
    )
    if reuse:
        _PROCESS_LOADERS.clear()  # one dataset per process at a time keeps memory flat
        _PROCESS_LOADERS[key] = loaders
    return loaders


@dataclass
class Candidate:
    """One architecture of a space, built and ready to train: config, model, trainer and data."""

    config: Any
    model: nn.Module
    trainer: CandidateTrainer
    data_info: Any


def build_candidate(
    space: Any,
    params: dict[str, Any],
    loaders: tuple[Any, Any, Any],
    *,
    epochs: int | None = None,
    recipe: TrainRecipe | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> Candidate:
    """Params of ``space`` -> config -> ``nn.Module`` (seeded) -> ``CandidateTrainer`` on ``loaders``.

    The one assembly path of a candidate: search trials, ``nas train`` and the learning-curve tables
    all go through it, so a candidate trains the same way wherever it runs.
    """
    train_loader, val_loader, info = loaders
    config = space.config_for(params, info)
    torch.manual_seed(seed)
    model = space.build(config, info)
    trainer = CandidateTrainer(model, train_loader, val_loader, recipe or space.recipe,
                               epochs=epochs or space.epochs, device=device)
    return Candidate(config=config, model=model, trainer=trainer, data_info=info)


def load_trial_model(space: Any, params: dict[str, Any], data_info: Any, weights: Path) -> nn.Module:
    """A finished trial's architecture with its kept trained weights, in eval mode."""
    from nas.errors import NasError

    if not weights.is_file():
        raise NasError(f"{weights}: the trial's weights are missing")
    model = space.build_model(params, data_info)
    state = torch.load(weights, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"] if "model" in state else state)
    return model.eval()
