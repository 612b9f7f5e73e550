"""Mixer-SNN search space (Li et al., TNNLS 2024): a spiking MLP whose inference is multiplication-free.

What is searched
----------------
- ``stages`` is fixed at 2 for 28x28 inputs (patch 2 gives 14 -> 7; a third stage would need an even 7);
  per stage the depth ``depth{i}`` (number of token + channel blocks).
- ``dim`` (channels of stage 1, a multiple of 3 for the spiking patch encoding) and ``channel_ratio``
  of the channel MLP; ``spe`` turns the spiking patch encoding (PatchCell) on or off.
- ``time_steps`` T: cost grows linearly with T.
- Neuron constants: ``tau``, ``v_threshold``, ``reset`` (hard to 0, or soft: subtract the threshold)
  and the surrogate gradient (``sigmoid`` / ``atan`` with its ``alpha``).

Sized for ``mnist`` on a 2-core CPU: a small-image stem (3x3 conv + BN + 2x2 max-pool), T in {1, 2}
and thresholds around 0.5 (at T <= 2, V_th = 1.0 leaves most neurons silent; platform notes §5).

Any image dataset: the stem's pooling (``patch_size``) is the smallest power of two that keeps the
first stage at most 16 wide with an even side for the second (digits 8x8: 1; cifar 32x32: 2; 64x64: 4;
failing that, the largest that gives an even side); the token mixers are sized for that resolution.
An odd side (e.g. 25), which no stage can halve, is refused.

Widening for CIFAR-10 / ImageNet
--------------------------------
``search_spaces/cifar_mixer_snn.py`` is the GPU-sized space (``stem="patch"``, patch 2, 4 stages
16/8/4/2, dim around 78, T around 4). ImageNet (224): patch 4, depths around (2, 8, 14, 2), dim
{78, 96}, T 4-6.
"""

from nas import SearchSpace
from nas.snn import MixerSNN, MixerSNNConfig, NeuronConfig
from nas.space import fit_patch
from nas.train import TrainRecipe

STAGES = 2


def sample(trial, data) -> MixerSNNConfig:
    """Draw one Mixer-SNN architecture for dataset ``data``."""
    patch, _ = fit_patch(data.img_size, STAGES, pad=False)
    reset = trial.suggest_categorical("reset", ["hard", "soft"])
    surrogate = trial.suggest_categorical("surrogate", ["sigmoid", "atan"])
    neuron = NeuronConfig(
        tau=trial.suggest_float("tau", 1.5, 3.0, step=0.5),
        v_threshold=trial.suggest_float("v_threshold", 0.25, 1.0, step=0.25),
        v_reset=0.0 if reset == "hard" else None,
        surrogate=surrogate,
        alpha=trial.suggest_float(f"alpha_{surrogate}", *((2.0, 5.0) if surrogate == "sigmoid" else (1.0, 4.0)),
                                  step=1.0),
    )
    return MixerSNNConfig(
        **data.model_fields(),
        stem="conv_pool",
        patch_size=patch,
        dim=trial.suggest_categorical("dim", [24, 36, 48]),
        depths=tuple(trial.suggest_int(f"depth{i}", 1, 2) for i in range(STAGES)),
        channel_ratio=trial.suggest_categorical("channel_ratio", [2, 3]),
        spe=trial.suggest_categorical("spe", [True, False]),
        time_steps=trial.suggest_int("time_steps", 1, 2),
        neuron=neuron,
    )


space = SearchSpace(
    name="mixer_snn",
    sample=sample,
    build=MixerSNN,
    dataset="mnist",
    objectives={"val_acc": "max", "energy_uj": "min"},
    epochs=3,
    trials=16,
    recipe=TrainRecipe(batch_size=64, lr=3e-3, weight_decay=0.01, label_smoothing=0.1),
)
