"""Spaces that fit the data: one entry point (suggest / config_for) with the dataset's shape, the
mnist configs unchanged, every shipped space fitting every image dataset nas knows, and one-line
refusals for data a space cannot fit."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import optuna
import pytest
import torch

from nas import SearchSpace, load_space
from nas.data import DataInfo, get_info
from nas.errors import NasError
from nas.space import fit_patch, fit_stages
from nas.train import TrainRecipe

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
MNIST_SPACES = ["snnmlp", "mixer_snn", "spiking_resformer", "hybrid"]
IMAGE_SPACES = MNIST_SPACES + ["cifar_snnmlp", "cifar_mixer_snn", "cifar_spiking_resformer"]
REFERENCE = Path(__file__).resolve().parent / "data" / "mnist_space_configs.json"


def info(name: str, side: int, chans: int, classes: int, time_steps: int = 0) -> DataInfo:
    return DataInfo(name, side, chans, classes, (0.0,) * chans, (1.0,) * chans, 10, 2, time_steps=time_steps)


# Every image dataset nas knows, at the sizes it comes in.
IMAGE_DATA = [
    info("digits", 8, 1, 10),
    info("mnist", 28, 1, 10),
    info("cifar10", 32, 3, 10),
    info("cifar100", 32, 3, 100),
    info("imagefolder", 64, 3, 7),
    info("imagefolder", 224, 3, 1000),
]


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("name", MNIST_SPACES)
def test_mnist_draws_the_params_and_configs_recorded_before_the_data_aware_change(name: str) -> None:
    # tests/data/mnist_space_configs.json: 40 draws of RandomSampler(seed=2024) from the spaces at
    # d1d3806, the commit the learning-curve tables were built from.
    reference = json.loads(REFERENCE.read_text())["spaces"][name]
    space = load_space(SPACES / f"{name}.py")
    mnist = get_info("mnist")
    for data_info in (mnist, None):  # explicit, and the space's own dataset by default
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2024))
        distributions = {}
        for params, type_name, config_dict in reference["draws"]:
            trial = study.ask()
            config = space.suggest(trial, data_info)
            assert trial.params == params
            assert type(config).__name__ == type_name
            assert json.loads(json.dumps(dataclasses.asdict(config))) == config_dict
            assert space.config_for(params, data_info) == config
            distributions.update(
                {k: json.loads(optuna.distributions.distribution_to_json(v)) for k, v in trial.distributions.items()}
            )
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        assert distributions == reference["distributions"]


@pytest.mark.parametrize("name", IMAGE_SPACES)
@pytest.mark.parametrize("data_info", IMAGE_DATA, ids=lambda d: f"{d.name}{d.img_size}")
def test_every_shipped_space_fits_every_image_dataset(name: str, data_info: DataInfo) -> None:
    space = load_space(SPACES / f"{name}.py", check_samples=0)
    space.check_fits(data_info, samples=12)  # draws and builds (on the meta device)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(6):
        trial = study.ask()
        config = space.suggest(trial, data_info)
        assert config.img_size == data_info.img_size and config.in_chans == data_info.in_chans
        assert config.num_classes == data_info.num_classes
        assert space.config_for(trial.params, data_info) == config
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)


@pytest.mark.parametrize("name", MNIST_SPACES)
@pytest.mark.parametrize("data_info", [IMAGE_DATA[0], IMAGE_DATA[2]], ids=["digits", "cifar10"])
def test_sampled_models_run_on_small_datasets(name: str, data_info: DataInfo) -> None:
    torch.set_num_threads(2)
    space = load_space(SPACES / f"{name}.py", check_samples=0)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    images = torch.randn(2, data_info.in_chans, data_info.img_size, data_info.img_size)
    for _ in range(4):
        trial = study.ask()
        model = space.build(space.suggest(trial, data_info), data_info).eval()
        with torch.no_grad():
            logits = model(images)
        assert logits.shape == (2, data_info.num_classes) and torch.isfinite(logits).all(), trial.params
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def test_sizes_follow_the_data() -> None:
    space = load_space(SPACES / "snnmlp.py", check_samples=0)
    three = {"stages": 3, "width": 16, "depth0": 1, "depth1": 1, "depth2": 1, "group0": 2, "group1": 2, "group2": 2,
             "directions": "hw", "mlp_ratio": 2, "tau_init": 0.3, "vth_init": 0.0}
    by_side = {d.img_size: space.config_for(three, d) for d in IMAGE_DATA}
    assert (by_side[28].patch_size, by_side[28].pad_to) == (2, 32)  # as before: 16/8/4
    assert (by_side[8].patch_size, by_side[8].pad_to) == (1, None)
    assert (by_side[32].patch_size, by_side[32].pad_to) == (2, None)
    assert by_side[64].patch_size == 4
    resformer = load_space(SPACES / "cifar_spiking_resformer.py", check_samples=0)
    params = {"width": 64, "blocks": "123", "dssa_patches": "421", "ffn_ratio": 4, "time_steps": 4, "tau": 2.0,
              "v_threshold": 1.0}
    cifar = resformer.config_for(params, get_info("cifar10"))
    # The paper's CIFAR model at the centre of the space: stride-1 stem, stages 32/16/8.
    assert cifar.stem == "cifar" and cifar.stage_resolutions() == (32, 16, 8)
    assert (cifar.planes, cifar.heads, cifar.blocks, cifar.patch_sizes) == ((64, 192, 384), (1, 3, 6), (1, 2, 3),
                                                                           (4, 2, 1))
    mixer = load_space(SPACES / "cifar_mixer_snn.py", check_samples=0)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    assert mixer.suggest(trial, get_info("cifar10")).stage_resolutions() == (16, 8, 4, 2)
    assert {f"depth{i}" for i in range(4)} <= set(trial.params)
    trial = study.ask()
    assert mixer.suggest(trial, get_info("mnist")).stage_resolutions() == (14, 7)  # only the stages that fit
    assert "depth2" not in trial.params


def test_fit_helpers() -> None:
    assert fit_patch(28, 2) == (2, None) and fit_patch(28, 3) == (2, 32)
    assert fit_patch(224, 4, max_patch=4) == (4, None)
    assert fit_patch(28, 3, pad=False) == (1, None)
    with pytest.raises(ValueError, match="img_size 28"):
        fit_patch(28, 4, pad=False)
    assert (fit_stages(14, 4), fit_stages(16, 4), fit_stages(8, 4), fit_stages(7, 4)) == (2, 4, 3, 1)


@pytest.mark.parametrize("name", IMAGE_SPACES)
def test_image_spaces_refuse_event_data_in_one_line(name: str) -> None:
    space = load_space(SPACES / f"{name}.py", check_samples=0)
    with pytest.raises(NasError) as error:
        space.check_fits(info("dvsgesture", 64, 2, 11, time_steps=16))
    message = str(error.value)
    assert "\n" not in message and "time_steps" in message and "dvsgesture" in message and name in message


def test_a_space_that_cannot_fit_names_the_field() -> None:
    space = load_space(SPACES / "spiking_resformer.py", check_samples=0)
    with pytest.raises(NasError) as error:
        space.check_fits(info("imagefolder", 50, 3, 4))
    message = str(error.value)
    assert "\n" not in message and "imagefolder (50x50x3)" in message and "patch_sizes[0]" in message


OLD_STYLE = """
    from nas import SearchSpace
    from nas.snn import SNNMLP, SNNMLPConfig

    def sample(trial):
        return SNNMLPConfig(img_size=28, in_chans=1, num_classes=10, patch_size=2, pad_to=32, norm="batchnorm",
                            width=trial.suggest_categorical("width", [8, 16]), depths=(1, 1), lif_group=2)

    space = SearchSpace(name="old", sample=sample, build=SNNMLP)
"""


def test_old_sample_trial_signature_still_works(tmp_path: Path) -> None:
    path = tmp_path / "old.py"
    path.write_text(textwrap.dedent(OLD_STYLE))
    space = load_space(path)
    trial = optuna.trial.FixedTrial({"width": 8})
    assert space.suggest(trial).width == 8
    cifar = get_info("cifar10")
    config = space.config_for({"width": 16}, cifar)
    assert config.img_size == 28  # the file's own sizes; build() resizes to the data
    assert space.build(config, cifar).config.img_size == 32
    space.check_fits(cifar)
    with pytest.raises(NasError, match=r"does not fit dataset imagefolder \(224x224x3\): pad_to must be >= img_size"):
        space.check_fits(info("imagefolder", 224, 3, 5))  # the file's fixed padding is smaller than the images


def test_space_sample_stays_callable_the_old_way() -> None:
    # Callers written before suggest() call space.sample(trial): they get the space's own dataset.
    space = load_space(SPACES / "snnmlp.py", check_samples=0)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    assert space.sample(trial) == space.config_for(trial.params, get_info("mnist"))
    again = dataclasses.replace(space, dataset="cifar10")  # the wrapper is rebuilt for the new dataset
    assert again.sample(optuna.trial.FixedTrial(trial.params)).in_chans == 3
    assert again.sample == space.sample


def test_inputs_field_is_checked() -> None:
    with pytest.raises(ValueError, match="inputs"):
        SearchSpace(name="x", sample=lambda t: 1, build=lambda c, d: None, inputs="audio")
    space = SearchSpace(name="x", sample=lambda t, d: 1, build=lambda c, d: None, recipe=TrainRecipe())
    assert space.inputs == "images" and space.sample.takes_data


def test_dvs_space_is_centred_on_the_registered_dvsg_model_and_takes_t_from_the_data() -> None:
    from nas.snn import create_model

    space = load_space(SPACES / "dvs_spiking_resformer.py")
    centre = {"width": 32, "blocks": "123", "dssa_patches": "421", "ffn_ratio": 4, "neuron": "plif",
              "v_threshold": 1.0}
    with torch.device("meta"):
        official = create_model("spikingresformer_dvsg").config
    assert space.config_for(centre, get_info("dvsgesture")) == official
    for name, steps in (("dvsgesture-t8", 8), ("nmnist", 10), ("cifar10dvs", 16)):
        data_info = get_info(name)
        space.check_fits(data_info, samples=12)
        assert data_info.time_steps == steps
        assert space.config_for({**centre, "dssa_patches": "211"}, data_info).time_steps == steps
    with pytest.raises(NasError) as error:
        space.check_fits(get_info("mnist"))
    assert "\n" not in str(error.value) and "time_steps: the data are static images" in str(error.value)
