"""SpikingResformer search space (Shi et al., CVPR 2024): Dual Spike Self-Attention + grouped FFN.

What is searched
----------------
- ``width``: planes (C, 2C, 4C) of the three stages; heads follow from a head dimension of about 32.
- ``blocks`` per stage (DSSA + GWFFN pairs), as a layout: (1, 1, 1) or (1, 1, 2).
- DSSA: ``dssa_patches``, the p x p patch of each stage's key/value conv ((2, 1, 1) or (1, 1, 1),
  each dividing its stage's resolution); ``scaling``, how the two spike products are scaled: "rate"
  (the paper's firing-rate scaling c1 = 1/sqrt(r_Q d), c2 = 1/sqrt(r_A N')), "fixed" (1/sqrt(d),
  1/sqrt(N')) or "none"; and, for "rate" only, the running-rate ``rate_momentum``.
- ``ffn_ratio`` of the grouped-conv FFN (group size 16 channels).
- ``time_steps`` T, and neuron constants ``tau``, ``v_threshold``, ``reset``, surrogate.

Sized for ``mnist`` on a 2-core CPU: small-image stem (3x3 conv + BN + 2x2 max-pool: 28 -> 14, stages
14 / 7 / 4), T in {1, 2}, thresholds near 0.5, momentum 0.9-0.99 (the paper's 0.999 averages over
~1000 steps, longer than a whole trial here).

Any image dataset: ``stem_for`` picks the stem that keeps the first stage at most 16 wide (digits 8x8:
the stride-1 "cifar" stem, 8/4/2; cifar 32x32: "conv_pool", 16/8/4; 64x64 and 224x224: the /4
"imagenet" stem). A DSSA patch that does not divide its stage's side is refused.

Widening for CIFAR-10 / ImageNet
--------------------------------
``search_spaces/cifar_spiking_resformer.py`` is the GPU-sized space around the paper's CIFAR model
(stride-1 stem, stages 32/16/8, planes (64, 192, 384), patches (4, 2, 1), T = 4). ImageNet:
``stem="imagenet"``, planes (64, 192, 384) and up, head dimension 64, T = 4, the paper's momentum 0.999.
"""

from nas import SearchSpace
from nas.snn import NeuronConfig, SpikingResformer, SpikingResformerConfig
from nas.snn.resformer import stem_for
from nas.train import TrainRecipe

BLOCK_LAYOUTS = {"111": (1, 1, 1), "112": (1, 1, 2)}
PATCH_LAYOUTS = {"211": (2, 1, 1), "111": (1, 1, 1)}


def sample(trial, data) -> SpikingResformerConfig:
    """Draw one SpikingResformer architecture for dataset ``data``."""
    width = trial.suggest_categorical("width", [16, 24, 32])
    planes = (width, 2 * width, 4 * width)
    scaling = trial.suggest_categorical("scaling", ["rate", "fixed", "none"])
    reset = trial.suggest_categorical("reset", ["hard", "soft"])
    return SpikingResformerConfig(
        **data.model_fields(),
        stem=stem_for(data.img_size),
        planes=planes,
        heads=tuple(max(1, c // 32) if c % max(1, c // 32) == 0 else 1 for c in planes),
        blocks=BLOCK_LAYOUTS[trial.suggest_categorical("blocks", list(BLOCK_LAYOUTS))],
        patch_sizes=PATCH_LAYOUTS[trial.suggest_categorical("dssa_patches", list(PATCH_LAYOUTS))],
        scaling=scaling,
        rate_momentum=trial.suggest_categorical("rate_momentum", [0.9, 0.99]) if scaling == "rate" else 0.99,
        ffn_ratio=trial.suggest_categorical("ffn_ratio", [2, 4]),
        group_size=16,
        time_steps=trial.suggest_int("time_steps", 1, 2),
        neuron=NeuronConfig(
            tau=trial.suggest_float("tau", 1.5, 3.0, step=0.5),
            v_threshold=trial.suggest_float("v_threshold", 0.25, 1.0, step=0.25),
            v_reset=0.0 if reset == "hard" else None,
            surrogate=trial.suggest_categorical("surrogate", ["atan", "sigmoid"]),
            alpha=2.0,
        ),
    )


space = SearchSpace(
    name="spiking_resformer",
    sample=sample,
    build=SpikingResformer,
    dataset="mnist",
    objectives={"val_acc": "max", "energy_uj": "min"},
    epochs=3,
    trials=16,
    recipe=TrainRecipe(batch_size=64, lr=3e-3, weight_decay=0.01, label_smoothing=0.1),
)
