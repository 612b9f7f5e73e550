"""Hybrid search space: the first choice is the family, so the three families compete on one front.

Each family keeps a compact version of its own space (see snnmlp.py, mixer_snn.py and
spiking_resformer.py for the full ones). Param names are prefixed by the family, because a
define-by-run parameter must keep one distribution across the whole study.

Sized for ``mnist`` on a 2-core CPU; widen each branch as its own file explains. Each branch fits any
image dataset with the same rules as its family's file (``fit_patch``, ``stem_for``).
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
from nas.snn.resformer import stem_for
from nas.space import fit_patch
from nas.train import TrainRecipe


def _neuron(trial, family: str) -> NeuronConfig:
    return NeuronConfig(v_threshold=trial.suggest_float(f"{family}.v_threshold", 0.25, 1.0, step=0.25))


def _snnmlp(trial, data) -> SNNMLPConfig:
    stages = trial.suggest_int("snnmlp.stages", 2, 3)
    patch, pad_to = fit_patch(data.img_size, stages)
    return SNNMLPConfig(
        **data.model_fields(), patch_size=patch, pad_to=pad_to, norm="batchnorm",
        width=trial.suggest_categorical("snnmlp.width", [16, 32]),
        depths=tuple(trial.suggest_int(f"snnmlp.depth{i}", 1, 2) for i in range(stages)),
        lif_group=trial.suggest_categorical("snnmlp.group", [2, 4]),
    )


def _mixer(trial, data) -> MixerSNNConfig:
    patch, _ = fit_patch(data.img_size, 2, pad=False)
    return MixerSNNConfig(
        **data.model_fields(), stem="conv_pool", patch_size=patch, spe=True,
        dim=trial.suggest_categorical("mixer.dim", [24, 48]),
        depths=(1, trial.suggest_int("mixer.depth1", 1, 2)),
        time_steps=trial.suggest_int("mixer.time_steps", 1, 2),
        neuron=_neuron(trial, "mixer"),
    )


def _resformer(trial, data) -> SpikingResformerConfig:
    width = trial.suggest_categorical("resformer.width", [16, 32])
    return SpikingResformerConfig(
        **data.model_fields(), stem=stem_for(data.img_size),
        planes=(width, 2 * width, 4 * width), heads=(1, 1, max(1, width // 8)),
        blocks=(1, 1, 1), patch_sizes=(2, 1, 1), group_size=16, rate_momentum=0.9,
        scaling=trial.suggest_categorical("resformer.scaling", ["rate", "fixed"]),
        time_steps=trial.suggest_int("resformer.time_steps", 1, 2),
        neuron=_neuron(trial, "resformer"),
    )


FAMILIES = {"snnmlp": (_snnmlp, SNNMLP), "mixer": (_mixer, MixerSNN), "resformer": (_resformer, SpikingResformer)}


def sample(trial, data):
    """Pick a family, then draw an architecture of that family for dataset ``data``."""
    family = trial.suggest_categorical("family", list(FAMILIES))
    return FAMILIES[family][0](trial, data)


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
