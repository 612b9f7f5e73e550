"""SpikingResformer search space for event-camera data (DVS128 Gesture, CIFAR10-DVS, N-MNIST), for a GPU.

The centre is the paper's DVS Gesture model, ``spikingresformer_dvsg`` (Shi et al., CVPR 2024): a
stride-1 3x3 stem on 64x64 frames (stages 64/32/16), planes (32, 96, 192), heads (1, 3, 6), blocks
(1, 2, 3), DSSA patches (4, 2, 1), GWFFN ratio 4 with groups of 32 channels, PLIF neurons (tau 2 at
the start, V_th 1, ATan), T = 16 frames binned by event count. Each range has that value in it:

- ``width`` C of planes (C, 3C, 6C) in {16, 32, 48}; heads (1, 3, 6).
- ``blocks`` (1, 1, 1) to (1, 2, 3); ``dssa_patches`` (4, 2, 1), (2, 2, 1) or (2, 1, 1), those that
  divide the stage sides (N-MNIST's 34x34 frames leave only (2, 1, 1)).
- ``ffn_ratio`` {2, 4}; ``neuron`` PLIF (learnt leak) or LIF; ``v_threshold`` {0.5, 0.75, 1.0}.

T is not searched: it is the data's (``nas data build dvsgesture-t8`` for 8 frames), and the models
take the frames one per step, without repeating anything over time. With binary frames the energy
meter counts the stem as synaptic operations; with event counts above 1 it counts MACs.

Recipe: the paper's direct DVS training: batch 8, AdamW, weight decay 0.05, label smoothing 0.1,
300 epochs; lr 1e-4 for DVS Gesture (use 5e-4 for CIFAR10-DVS). A search trains each candidate for
at most 100 epochs over 32 trials. The paper's augmentation (roll, rotation, shear and cutout of the
frames, mixup) is recorded in ``recipe.extra``; nas's loaders shift frames by up to 1/14 of the side
(1/8 with mirroring for CIFAR10-DVS).
"""

from nas import SearchSpace
from nas.snn import NeuronConfig, SpikingResformer, SpikingResformerConfig
from nas.snn.layers import halving_resolutions
from nas.snn.resformer import STEM_REDUCTION, stem_for
from nas.train import TrainRecipe

BLOCK_LAYOUTS = {"111": (1, 1, 1), "112": (1, 1, 2), "122": (1, 2, 2), "123": (1, 2, 3)}
PATCH_LAYOUTS = {"421": (4, 2, 1), "221": (2, 2, 1), "211": (2, 1, 1)}
GROUP_SIZE = 32
MAX_FIRST_STAGE = 64  # the paper keeps the full 64x64 frame in stage 1


def sample(trial, data) -> SpikingResformerConfig:
    """Draw one SpikingResformer for the event dataset ``data`` (T frames of 2 x side x side)."""
    width = trial.suggest_categorical("width", [16, 32, 48])
    stem = stem_for(data.img_size, MAX_FIRST_STAGE)
    sides = halving_resolutions(data.img_size // STEM_REDUCTION[stem], 3, round_up=True)
    patches = {k: v for k, v in PATCH_LAYOUTS.items() if all(s % p == 0 for s, p in zip(sides, v, strict=True))}
    if not patches:
        raise ValueError(f"dssa_patches: no layout of {list(PATCH_LAYOUTS)} divides the stage sides {sides}")
    return SpikingResformerConfig(
        **data.model_fields(),
        stem=stem,
        planes=(width, 3 * width, 6 * width),
        heads=(1, 3, 6),
        blocks=BLOCK_LAYOUTS[trial.suggest_categorical("blocks", list(BLOCK_LAYOUTS))],
        patch_sizes=patches[trial.suggest_categorical("dssa_patches", list(patches))],
        ffn_ratio=trial.suggest_categorical("ffn_ratio", [2, 4]),
        group_size=GROUP_SIZE,
        time_steps=data.time_steps,
        neuron=NeuronConfig(
            kind=trial.suggest_categorical("neuron", ["plif", "lif"]),
            tau=2.0,
            v_threshold=trial.suggest_float("v_threshold", 0.5, 1.0, step=0.25),
            surrogate="atan",
            alpha=2.0,
        ),
    )


space = SearchSpace(
    name="dvs_spiking_resformer",
    sample=sample,
    build=SpikingResformer,
    dataset="dvsgesture",
    inputs="events",
    objectives={"val_acc": "max", "energy_uj": "min"},
    epochs=100,
    trials=32,
    recipe=TrainRecipe(
        batch_size=8, lr=1e-4, weight_decay=0.05, label_smoothing=0.1,
        extra={"paper_epochs": 300, "paper_lr_cifar10dvs": 5e-4,
               "paper_augmentation": "roll, rotate, shear-x, cutout of the frames; mixup"},
    ),
)
