"""Hybrid search space: the first choice is the family, so the three families compete on one front.

Each family keeps a compact version of its own space (see snnmlp.py, mixer_snn.py and
spiking_resformer.py for the full ones). Param names are prefixed by the family, because a
define-by-run parameter must keep one distribution across the whole study.

Sized for ``mnist`` on a 2-core CPU; widen each branch as its own file explains.
"""

from nas import SearchSpace
from nas.snn import (
    SNNMLP,
    MixerSNN,
    MixerSNNConfig,
    NeuronConfig,
    SNNMLPConfig,
    SpikingResformer,
    SpikingResformerConfig,
)
from nas.train import TrainRecipe

MNIST = {"img_size": 28, "in_chans": 1, "num_classes": 10}


def _neuron(trial, family: str) -> NeuronConfig:
    return NeuronConfig(v_threshold=trial.suggest_float(f"{family}.v_threshold", 0.25, 1.0, step=0.25))


def _snnmlp(trial) -> SNNMLPConfig:
    stages = trial.suggest_int("snnmlp.stages", 2, 3)
    return SNNMLPConfig(
        **MNIST, patch_size=2, pad_to=32 if stages == 3 else None, norm="batchnorm",
        width=trial.suggest_categorical("snnmlp.width", [16, 32]),
        depths=tuple(trial.suggest_int(f"snnmlp.depth{i}", 1, 2) for i in range(stages)),
        lif_group=trial.suggest_categorical("snnmlp.group", [2, 4]),
    )


def _mixer(trial) -> MixerSNNConfig:
    return MixerSNNConfig(
        **MNIST, stem="conv_pool", patch_size=2, spe=True,
        dim=trial.suggest_categorical("mixer.dim", [24, 48]),
        depths=(1, trial.suggest_int("mixer.depth1", 1, 2)),
        time_steps=trial.suggest_int("mixer.time_steps", 1, 2),
        neuron=_neuron(trial, "mixer"),
    )


def _resformer(trial) -> SpikingResformerConfig:
    width = trial.suggest_categorical("resformer.width", [16, 32])
    return SpikingResformerConfig(
        **MNIST, stem="conv_pool", planes=(width, 2 * width, 4 * width), heads=(1, 1, max(1, width // 8)),
        blocks=(1, 1, 1), patch_sizes=(2, 1, 1), group_size=16, rate_momentum=0.9,
        scaling=trial.suggest_categorical("resformer.scaling", ["rate", "fixed"]),
        time_steps=trial.suggest_int("resformer.time_steps", 1, 2),
        neuron=_neuron(trial, "resformer"),
    )


FAMILIES = {"snnmlp": (_snnmlp, SNNMLP), "mixer": (_mixer, MixerSNN), "resformer": (_resformer, SpikingResformer)}


def sample(trial):
    """Pick a family, then draw an architecture of that family."""
    family = trial.suggest_categorical("family", list(FAMILIES))
    return FAMILIES[family][0](trial)


def build(config, data_info):
    """Build the model class that matches the config's family."""
    model_class = {SNNMLPConfig: SNNMLP, MixerSNNConfig: MixerSNN, SpikingResformerConfig: SpikingResformer}
    return model_class[type(config)](config, data_info)


space = SearchSpace(
    name="hybrid",
    sample=sample,
    build=build,
    dataset="mnist",
    objectives={"val_acc": "max", "energy_uj": "min"},
    epochs=3,
    trials=24,
    recipe=TrainRecipe(batch_size=64, lr=2e-3, weight_decay=0.01, label_smoothing=0.1),
)
