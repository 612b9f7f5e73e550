"""SNN-MLP search space (Li et al., CVPR 2022): full-precision LIF scanned along space.

What is searched
----------------
- ``stages`` (2 or 3) and, for each stage that exists, its depth ``depth{i}`` and its LIF window
  length ``group{i}`` (the "group LIF": the scan restarts every ``group`` rows/columns; -1 = LIF off).
- ``directions``: vertical LIF ("h"), horizontal LIF ("w") or both branches ("hw", the paper).
- ``width`` (channels of stage 1; stage i has width * 2^i) and ``mlp_ratio`` of the channel MLP.
- LIF constants: the initial leak ``tau_init`` and threshold ``vth_init`` (both stay learnable).

Sized for the default dataset, ``mnist`` (28x28x1, 4,000 training images), on a 2-core CPU: a trial
takes seconds per epoch. With 3 stages the input is zero-padded to 32x32 so every patch merge halves
an even resolution (16 -> 8 -> 4); with 2 stages it runs at 14 -> 7.

Any image dataset: ``fit_patch`` picks the patch that keeps the first stage at most 16 wide (digits
8x8: patch 1; cifar 32x32: 2; 64x64: 4) and pads the input where the merges need an even side.

Norm: BatchNorm, not the paper's GroupNorm(1, C): in 3-epoch trials GroupNorm stalls near 0.87
while BatchNorm reaches 0.96-0.98 (platform notes §5). Set ``norm="groupnorm"`` for the faithful model.

Widening for CIFAR-10 / ImageNet
--------------------------------
``search_spaces/cifar_snnmlp.py`` is the GPU-sized space with the paper's settings at its centre
(patch 2, 4 stages at 32x32). For ImageNet-sized ``imagefolder`` data at 224: patch 4, 4 stages,
width {64, 96, 128}, depths up to (2, 2, 18, 2), groups {4, 7}; ``norm="groupnorm"`` is then fine.
"""

from nas import SearchSpace
from nas.snn import SNNMLP, SNNMLPConfig
from nas.space import fit_patch
from nas.train import TrainRecipe


def sample(trial, data) -> SNNMLPConfig:
    """Draw one SNN-MLP architecture for dataset ``data`` (define-by-run: per-stage knobs only for existing stages)."""
    stages = trial.suggest_int("stages", 2, 3)
    patch, pad_to = fit_patch(data.img_size, stages)
    return SNNMLPConfig(
        **data.model_fields(),
        pad_to=pad_to,
        patch_size=patch,
        width=trial.suggest_categorical("width", [16, 24, 32]),
        depths=tuple(trial.suggest_int(f"depth{i}", 1, 2) for i in range(stages)),
        lif_group=tuple(trial.suggest_categorical(f"group{i}", [-1, 2, 4]) for i in range(stages)),
        directions=trial.suggest_categorical("directions", ["h", "w", "hw"]),
        mlp_ratio=trial.suggest_categorical("mlp_ratio", [2, 3, 4]),
        tau_init=trial.suggest_float("tau_init", 0.1, 0.9, step=0.2),
        vth_init=trial.suggest_float("vth_init", -0.5, 0.5, step=0.25),
        norm="batchnorm",
    )


space = SearchSpace(
    name="snnmlp",
    sample=sample,
    build=SNNMLP,
    dataset="mnist",
    objectives={"val_acc": "max", "energy_uj": "min"},
    epochs=3,
    trials=16,
    recipe=TrainRecipe(batch_size=64, lr=2e-3, weight_decay=0.01, label_smoothing=0.1),
)
