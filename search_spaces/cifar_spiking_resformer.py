"""SpikingResformer search space for CIFAR-10/100 on a GPU, centred on the paper's CIFAR model.

The centre is ``spikingresformer_cifar`` (Shi et al., CVPR 2024; ``configs/direct_training``): the
stride-1 3x3 "cifar" stem (stages 32/16/8), planes (64, 192, 384), heads of dimension 64, blocks
(1, 2, 3), DSSA patches (4, 2, 1), GWFFN ratio 4 with groups of 64 channels, LIF (tau 2, V_th 1,
hard reset, ATan), firing-rate scaling with momentum 0.999, T = 4. Each range has that value in it:

- ``width`` C of planes (C, 3C, 6C) in {32, 64, 96}; heads = planes // 64 (at least 1).
- ``blocks`` per stage from (1, 1, 2) to (2, 3, 3); ``dssa_patches`` (4, 2, 1), (2, 2, 1) or (2, 1, 1).
- ``ffn_ratio`` {2, 4}; ``time_steps`` {2, 4, 6}; ``tau`` {1.5, 2, 2.5, 3}; ``v_threshold`` {0.75, 1, 1.25}.

Recipe: the paper's CIFAR training (``spikingresformer_cifar``): batch 128, AdamW, lr 5e-4, weight
decay 0.01, label smoothing 0.1, 600 epochs. A search trains each candidate for at most 100 epochs
(the scheduler stops most far earlier) over 64 trials: about a day on one GPU. The paper's
augmentation (RandAugment rand-m7-n1-mstd0.5-inc1, Mixup alpha 0.5, horizontal flip, no crop) is
recorded in ``recipe.extra``; nas's loaders apply horizontal flips and shifts of up to 4 pixels.

Other image datasets fit too: ``stem_for(side, 32)`` keeps a stride-1 stem up to 32x32 (mnist 28/14/7,
digits 8/4/2), the 2x2-pooled stem up to 64 and the /4 ImageNet stem above; patch layouts that do
not divide a stage's side are left out.
"""

from nas import SearchSpace
from nas.snn import NeuronConfig, SpikingResformer, SpikingResformerConfig
from nas.snn.layers import halving_resolutions
from nas.snn.resformer import STEM_REDUCTION, stem_for
from nas.train import TrainRecipe

BLOCK_LAYOUTS = {"112": (1, 1, 2), "122": (1, 2, 2), "123": (1, 2, 3), "133": (1, 3, 3), "233": (2, 3, 3)}
PATCH_LAYOUTS = {"421": (4, 2, 1), "221": (2, 2, 1), "211": (2, 1, 1)}
HEAD_DIM = 64
GROUP_SIZE = 64
MAX_FIRST_STAGE = 32


def sample(trial, data) -> SpikingResformerConfig:
    """Draw one SpikingResformer for dataset ``data`` (CIFAR: 32x32 stages 32/16/8)."""
    width = trial.suggest_categorical("width", [32, 64, 96])
    planes = (width, 3 * width, 6 * width)
    stem = stem_for(data.img_size, MAX_FIRST_STAGE)
    sides = halving_resolutions(data.img_size // STEM_REDUCTION[stem], 3, round_up=True)
    # Only the layouts whose patches divide every stage's side (all of them at 32x32).
    patches = {k: v for k, v in PATCH_LAYOUTS.items() if all(s % p == 0 for s, p in zip(sides, v, strict=True))}
    if not patches:
        raise ValueError(f"dssa_patches: no layout of {list(PATCH_LAYOUTS)} divides the stage sides {sides}")
    return SpikingResformerConfig(
        **data.model_fields(),
        stem=stem,
        planes=planes,
        heads=tuple(max(1, c // HEAD_DIM) for c in planes),
        blocks=BLOCK_LAYOUTS[trial.suggest_categorical("blocks", list(BLOCK_LAYOUTS))],
        patch_sizes=patches[trial.suggest_categorical("dssa_patches", list(patches))],
        scaling="rate",
        rate_momentum=0.999,
        ffn_ratio=trial.suggest_categorical("ffn_ratio", [2, 4]),
        group_size=GROUP_SIZE,
        time_steps=trial.suggest_categorical("time_steps", [2, 4, 6]),
        neuron=NeuronConfig(
            tau=trial.suggest_float("tau", 1.5, 3.0, step=0.5),
            v_threshold=trial.suggest_float("v_threshold", 0.75, 1.25, step=0.25),
            v_reset=0.0,
            surrogate="atan",
            alpha=2.0,
        ),
    )


space = SearchSpace(
    name="cifar_spiking_resformer",
    sample=sample,
    build=SpikingResformer,
    dataset="cifar10",
    objectives={"val_acc": "max", "energy_uj": "min"},
    epochs=100,
    trials=64,
    recipe=TrainRecipe(
        batch_size=128, lr=5e-4, weight_decay=0.01, label_smoothing=0.1,
        extra={"paper_epochs": 600,
               "paper_augmentation": "rand-m7-n1-mstd0.5-inc1, mixup alpha 0.5 (no cutmix), hflip, no crop"},
    ),
)
