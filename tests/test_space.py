"""The SearchSpace contract: loading, replay on FixedTrial, and one clear error per bad file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
import pytest

from nas import SearchSpace, load_space
from nas.data import get_info
from nas.errors import NasError

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
SHIPPED = ["snnmlp", "mixer_snn", "spiking_resformer", "hybrid"]


def _write(tmp_path: Path, text: str, name: str = "space.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_replays_identically_on_fixed_trial(name: str) -> None:
    space = load_space(SPACES / f"{name}.py")
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(10):
        trial = study.ask()
        config = space.suggest(trial)
        assert space.config_for(trial.params) == config
        study.tell(trial, [0.0, 0.0])
    assert space.objectives == {"val_acc": "max", "energy_uj": "min"}
    assert space.dataset == "mnist"
    assert space.source_hash and space.source_text


@pytest.mark.parametrize("name", SHIPPED)
def test_twenty_sampled_configs_of_each_shipped_space_build_and_run(name: str) -> None:
    import torch

    torch.set_num_threads(2)
    space = load_space(SPACES / f"{name}.py")
    info = get_info("mnist")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    images = torch.randn(2, info.in_chans, info.img_size, info.img_size)
    for _ in range(20):
        trial = study.ask()
        model = space.build(space.suggest(trial, info), info).eval()
        with torch.no_grad():
            logits = model(images)
        assert logits.shape == (2, info.num_classes) and torch.isfinite(logits).all(), trial.params
        study.tell(trial, 0.0)


def test_shipped_spaces_are_conditional_per_stage() -> None:
    space = load_space(SPACES / "snnmlp.py")
    two = optuna.trial.FixedTrial({"stages": 2, "width": 16, "depth0": 1, "depth1": 2, "group0": 2, "group1": 4,
                                   "directions": "hw", "mlp_ratio": 2, "tau_init": 0.3, "vth_init": 0.0})
    config = space.suggest(two)
    assert config.depths == (1, 2) and config.lif_group == (2, 4) and config.pad_to is None
    hybrid = load_space(SPACES / "hybrid.py")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    families = set()
    for _ in range(30):
        trial = study.ask()
        hybrid.suggest(trial)
        family = trial.params["family"]
        families.add(family)
        assert all(k == "family" or k.startswith(family + ".") for k in trial.params)
        study.tell(trial, 0.0)
    assert families == {"snnmlp", "mixer", "resformer"}


def test_space_defined_in_code_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="objectives"):
        SearchSpace(name="x", sample=lambda t: 1, build=lambda c, d: None, objectives={"val_acc": "up"})
    with pytest.raises(ValueError, match="epochs"):
        SearchSpace(name="x", sample=lambda t: 1, build=lambda c, d: None, epochs=0)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NasError, match=r"nope\.py: search-space file not found"):
        load_space(tmp_path / "nope.py")


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "from nas import SearchSpace\n\ndef sample(trial)\n    return 1\n")
    with pytest.raises(NasError) as info:
        load_space(path)
    assert f"{path}:3: syntax error" in str(info.value)
    assert "\n" not in str(info.value)


def test_error_while_executing_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "from nas import SearchSpace\nx = 1\nundefined_name + 1\n")
    with pytest.raises(NasError, match=rf"{path}:3: NameError"):
        load_space(path)


def test_no_space_and_several_spaces(tmp_path: Path) -> None:
    path = _write(tmp_path, "x = 1\n")
    with pytest.raises(NasError, match="defines no SearchSpace"):
        load_space(path)
    path = _write(tmp_path, """
        from nas import SearchSpace
        a = SearchSpace(name="a", sample=lambda t: 1, build=lambda c, d: None)
        b = SearchSpace(name="b", sample=lambda t: 1, build=lambda c, d: None)
    """, "two.py")
    with pytest.raises(NasError, match=r"defines 2 SearchSpace objects \(a, b\)"):
        load_space(path)


def test_sampling_an_invalid_config_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, """
        from nas import SearchSpace
        from nas.snn import MixerSNN, MixerSNNConfig

        def sample(trial):
            dim = trial.suggest_categorical("dim", [25, 26])
            return MixerSNNConfig(img_size=28, in_chans=1, num_classes=10, patch_size=2, depths=(1, 1), dim=dim)

        space = SearchSpace(name="bad", sample=sample, build=MixerSNN)
    """)
    with pytest.raises(NasError) as info:
        load_space(path)
    message = str(info.value)
    assert message.startswith(f"{path}:7: ValueError:") and "dim" in message


def test_unreproducible_sample_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, """
        import random
        from nas import SearchSpace

        def sample(trial):
            return trial.suggest_int("a", 1, 3) + random.random()

        space = SearchSpace(name="noisy", sample=sample, build=lambda c, d: None)
    """)
    with pytest.raises(NasError, match="not reproducible"):
        load_space(path)
