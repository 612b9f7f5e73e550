"""SNN-MLP search space for CIFAR-10/100 on a GPU, centred on the paper's model brought to 32x32.

SNN-MLP (Li et al., CVPR 2022) has no CIFAR configuration; its data code has a small-image branch
(random crop with 4-pixel padding) and the model is SNN-MLP-T: width 96, depths (2, 2, 6, 2), MLP
ratio 4, LIF group 4, GroupNorm, drop-path 0.2, tau 0.25 and V_th 0.1 at the start (both learnt).
At 32x32 the 224 model's patch 4 becomes patch 2 and keeps its 4 stages (16/8/4/2). Each range
has the paper's value in it:

- ``width`` {64, 96, 128}; ``depth0``, ``depth1``, ``depth3`` {1, 2, 3}; ``depth2`` {4, 6, 8}.
- ``group`` (LIF window, every stage) {2, 4, 8}; ``mlp_ratio`` {3, 4}; ``drop_path`` {0.1, 0.2, 0.3}.
- ``norm`` GroupNorm (paper) or BatchNorm (faster to train); ``tau_init`` {0.15, 0.25, 0.35};
  ``vth_init`` {0.0, 0.1, 0.2}.

Recipe: the paper's (Swin-style) training: AdamW, base lr 5e-4 per 512 images (1.25e-4 at batch 128),
weight decay 0.05, 20 warm-up epochs of 300 (5 of a 100-epoch trial here), cosine to 1 % of the lr,
gradient clipping 5, label smoothing 0.1. At most 100 epochs a candidate over 64 trials. Its
augmentation (RandAugment rand-m9-mstd0.5-inc1, Mixup 0.8 / CutMix 1.0, random erasing 0.25) is
recorded in ``recipe.extra``; nas's loaders apply horizontal flips and shifts of up to 4 pixels.

Other image datasets fit too: ``fit_patch`` keeps the first stage at most 16 wide with a patch of at
most 4 and pads where the merges need it (mnist: 28 -> 32; 224: patch 4, 56/28/14/7 as the paper).
"""

from nas import SearchSpace
from nas.snn import SNNMLP, SNNMLPConfig
from nas.space import fit_patch
from nas.train import TrainRecipe

STAGES = 4


def sample(trial, data) -> SNNMLPConfig:
    """Draw one SNN-MLP for dataset ``data`` (CIFAR: patch 2, stages 16/8/4/2)."""
    patch, pad_to = fit_patch(data.img_size, STAGES, max_patch=4)
    depths = tuple(
        trial.suggest_int(f"depth{i}", 4, 8, step=2) if i == 2 else trial.suggest_int(f"depth{i}", 1, 3)
        for i in range(STAGES)
    )
    return SNNMLPConfig(
        **data.model_fields(),
        pad_to=pad_to,
        patch_size=patch,
        width=trial.suggest_categorical("width", [64, 96, 128]),
        depths=depths,
        lif_group=trial.suggest_categorical("group", [2, 4, 8]),
        directions="hw",
        mlp_ratio=trial.suggest_categorical("mlp_ratio", [3, 4]),
        drop_path_rate=trial.suggest_float("drop_path", 0.1, 0.3, step=0.1),
        norm=trial.suggest_categorical("norm", ["groupnorm", "batchnorm"]),
        tau_init=trial.suggest_float("tau_init", 0.15, 0.35, step=0.1),
        vth_init=trial.suggest_float("vth_init", 0.0, 0.2, step=0.1),
    )


space = SearchSpace(
    name="cifar_snnmlp",
    sample=sample,
    build=SNNMLP,
    dataset="cifar10",
    objectives={"val_acc": "max", "energy_uj": "min"},
    epochs=100,
    trials=64,
    recipe=TrainRecipe(
        batch_size=128, lr=5e-4 * 128 / 512, weight_decay=0.05, warmup_epochs=5, min_lr_ratio=0.01,
        label_smoothing=0.1, grad_clip=5.0,
        extra={"paper_epochs": 300,
               "paper_augmentation": "rand-m9-mstd0.5-inc1, mixup 0.8, cutmix 1.0, random erasing 0.25"},
    ),
)
