"""A tiny SNN-MLP search space for end-to-end search tests: seconds per trial on MNIST subsets."""

from __future__ import annotations

TEMPLATE = """
from nas import SearchSpace
from nas.snn import SNNMLP, SNNMLPConfig
from nas.train import TrainRecipe


def sample(trial):
    return SNNMLPConfig(img_size=28, in_chans=1, num_classes=10, patch_size=2, norm="batchnorm",
                        width=trial.suggest_categorical("width", [8, 12, 16]),
                        depths=(1, trial.suggest_int("depth1", 1, 2)),
                        lif_group=trial.suggest_categorical("group", [2, 4]), mlp_ratio=2)


space = SearchSpace(name="tiny", sample=sample, build=SNNMLP, epochs={epochs}, trials={trials},
                    recipe=TrainRecipe(batch_size=64, train_subset={train}, val_subset=128, energy_images=64))
"""


def tiny_space(*, epochs: int, trials: int = 6, train: int = 256) -> str:
    """Source text of the tiny space (12 distinct architectures)."""
    return TEMPLATE.format(epochs=epochs, trials=trials, train=train)
