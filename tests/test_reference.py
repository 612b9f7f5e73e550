"""The hypervolume reference fixed from the space: saturated energy bounds any weights' energy."""

from __future__ import annotations

import textwrap

import pytest
import torch

from nas.data import get_info
from nas.energy import calibrate_norms, measure, saturated_report
from nas.search.reference import MARGIN, space_reference
from nas.space import load_space, load_space_source


@pytest.mark.parametrize("name", ["snnmlp", "mixer_snn", "spiking_resformer"])
def test_saturated_energy_bounds_the_energy_of_any_weights(name: str) -> None:
    import optuna

    space = load_space(f"search_spaces/{name}.py", check_samples=0)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3)).ask()
    torch.manual_seed(0)
    model = space.build(space.sample(trial), get_info("mnist"))
    images = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    bound = saturated_report(model, images[:2])
    for trial in range(2):
        torch.manual_seed(trial)
        for p in model.parameters():
            p.data.normal_(0, 0.5)  # weights far from the initial ones: more spikes
        calibrate_norms(model, images)
        measured = measure(model, images[:2])
        assert measured.energy_uj <= bound.energy_uj * (1 + 1e-9)
        assert measured.sops <= bound.sops * (1 + 1e-9)
        assert measured.macs == pytest.approx(bound.macs)  # real-valued inputs: dense MACs either way
    if name.startswith("snnmlp"):  # no spikes at all: the bound is the energy itself
        assert bound.sops == 0 and measured.energy_uj == pytest.approx(bound.energy_uj)


def test_space_reference_is_the_costliest_architecture_with_a_margin() -> None:
    space = load_space("search_spaces/mixer_snn.py", check_samples=0)
    reference = space_reference(space, samples=8)
    assert reference["val_acc"] == 0.0
    # The largest Mixer-SNN of the space: widest, deepest, T = 2 (coordinate ascent finds it from 8 draws).
    largest = {"reset": "hard", "surrogate": "sigmoid", "tau": 2.0, "v_threshold": 0.5, "alpha_sigmoid": 4.0,
               "dim": 48, "depth0": 2, "depth1": 2, "channel_ratio": 3, "spe": True, "time_steps": 2}
    info = get_info("mnist")
    model = space.build(space.config_for(largest), info)
    bound = saturated_report(model, torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    assert reference["energy_uj"] == pytest.approx(MARGIN * bound.energy_uj, rel=1e-6)


def test_a_space_that_cannot_be_built_here_leaves_the_cost_to_the_first_trials() -> None:
    source = textwrap.dedent('''
        from nas import SearchSpace
        from nas.snn import SNNMLPConfig


        def sample(trial):
            return SNNMLPConfig(img_size=28, in_chans=1, num_classes=10, patch_size=2, depths=(1, 1),
                                width=trial.suggest_categorical("width", [8, 16]))


        def build(config, data_info):
            raise RuntimeError("needs a GPU")


        space = SearchSpace(name="gpu_only", sample=sample, build=build)
    ''')
    space = load_space_source(source, "gpu_only.py", check_samples=0)
    assert space_reference(space) == {"val_acc": 0.0}
