"""Mixer-SNN search space for CIFAR-10/100 on a GPU, centred on the paper's model brought to 32x32.

Mixer-SNN (Li et al., TNNLS 2024) trains CIFAR by upsampling to 224 and running the ImageNet model
(MLP-SPE-T: patch 4, dim 78, depths (2, 8, 14, 2), channel ratio 3, spiking patch encoding, LIF tau
2 / V_th 1 / sigmoid 4, T = 4). Here the model runs at 32x32 instead: the paper's patch stem with
patch 2 and its 4 stages (16/8/4/2), the token mixers sized for them. Each range has the paper's
value in it (depths scaled to CIFAR):

- ``dim`` {48, 78, 96} (multiples of 3 for the PatchCell); ``channel_ratio`` {2, 3, 4}; ``spe`` on/off.
- depths per stage: ``depth0`` {1, 2}, ``depth1`` {2, 4}, ``depth2`` {2, 4, 6}, ``depth3`` {1, 2}.
- ``time_steps`` {2, 4, 6}; ``v_threshold`` {0.5, 0.75, 1.0}; ``tau`` {1.5, 2, 2.5, 3}.

Recipe: the paper's: SGD with momentum 0.9 (nas uses Nesterov), lr 0.1 for 512 images (0.025 at
batch 128), no weight decay, cosine without warm-up, label smoothing 0.1, 100 epochs, over 64 trials.
Its augmentation (RandAugment rand-m9-mstd0.5-inc1, Mixup 0.8 / CutMix 1.0, random erasing 0.25,
colour jitter 0.4) is recorded in ``recipe.extra``; nas's loaders apply flips and 4-pixel shifts.

Other image datasets: the patch is the power of two (at most 4) that keeps the first stage at most
16 wide, and the model keeps as many of the 4 stages as halve evenly (mnist 28: patch 2, stages
14/7; digits: 8/4/2; 224: patch 4, 56/28/14/7). Depth knobs exist only for the stages that fit.
"""

from nas import SearchSpace
from nas.snn import MixerSNN, MixerSNNConfig, NeuronConfig
from nas.space import fit_patch, fit_stages
from nas.train import TrainRecipe

STAGES = 4
DEPTHS = ((1, 2), (2, 4), (2, 4, 6), (1, 2))  # choices per stage


def sample(trial, data) -> MixerSNNConfig:
    """Draw one Mixer-SNN for dataset ``data`` (CIFAR: patch 2, stages 16/8/4/2)."""
    patch, _ = fit_patch(data.img_size, 1, max_patch=4, pad=False)
    stages = fit_stages(data.img_size // patch, STAGES)
    return MixerSNNConfig(
        **data.model_fields(),
        stem="patch",
        patch_size=patch,
        dim=trial.suggest_categorical("dim", [48, 78, 96]),
        depths=tuple(trial.suggest_categorical(f"depth{i}", list(DEPTHS[i])) for i in range(stages)),
        channel_ratio=trial.suggest_categorical("channel_ratio", [2, 3, 4]),
        spe=trial.suggest_categorical("spe", [True, False]),
        time_steps=trial.suggest_categorical("time_steps", [2, 4, 6]),
        neuron=NeuronConfig(
            tau=trial.suggest_float("tau", 1.5, 3.0, step=0.5),
            v_threshold=trial.suggest_float("v_threshold", 0.5, 1.0, step=0.25),
            surrogate="sigmoid",
            alpha=4.0,
        ),
    )


space = SearchSpace(
    name="cifar_mixer_snn",
    sample=sample,
    build=MixerSNN,
    dataset="cifar10",
    objectives={"val_acc": "max", "energy_uj": "min"},
    epochs=100,
    trials=64,
    recipe=TrainRecipe(
        batch_size=128, optimizer="sgd", lr=0.1 * 128 / 512, momentum=0.9, weight_decay=0.0, label_smoothing=0.1,
        extra={"paper_epochs": 100, "paper_resolution": 224,
               "paper_augmentation": "rand-m9-mstd0.5-inc1, mixup 0.8, cutmix 1.0, random erasing 0.25, "
                                     "colour jitter 0.4"},
    ),
)
