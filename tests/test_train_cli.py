"""`nas train`: one candidate outside any search, as a user debugging a space would run it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from nas.cli import main

SPACE = """
from nas import SearchSpace
from nas.snn import SNNMLP, SNNMLPConfig
from nas.train import TrainRecipe


def sample(trial):
    return SNNMLPConfig(img_size=28, in_chans=1, num_classes=10, patch_size=2, norm="batchnorm", depths=(1, 1),
                        width=trial.suggest_categorical("width", [8, 16]), lif_group=2, mlp_ratio=2)


space = SearchSpace(name="debug", sample=sample, build=SNNMLP, epochs=2,
                    recipe=TrainRecipe(batch_size=64, train_subset=256, val_subset=128, energy_images=64))
"""


@pytest.fixture
def space_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "debug.py"
    path.write_text(textwrap.dedent(SPACE))
    return path


def test_nas_train_prints_one_row_per_epoch(space_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(space_file), "--params", json.dumps({"width": 8}), "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1: val_acc" in out and "epoch 2" not in out
    assert "energy_uj" in out and "debug candidate" in out


def test_nas_train_reads_a_trial_config_file(space_file: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "arch.json"
    config.write_text(json.dumps({"params": {"width": 16}, "family": "snnmlp"}))
    assert main(["train", str(space_file), "--trial-config", str(config), "--epochs", "1"]) == 0
    assert "epoch 1: val_acc" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--params", '{"width": 8'], "--params: not valid JSON"),
        (["--params", "[8]"], "expected a JSON object of params, got list"),
        (["--params", "{}"], "params: 'width' is missing for space 'debug' on mnist (28x28x1)"),
        (["--params", '{"width": 8, "widht": 16}'], "params: unknown key(s) 'widht' for space 'debug'"),
        (["--params", '{"width": 12}'], "params do not fit space 'debug' on mnist (28x28x1): '12' not in (8, 16)"),
        (["--params", '{"width": 8}', "--epochs", "0"], "--epochs must be in 1..200, got 0"),
        (["--trial-config", "/nonexistent/arch.json"], "/nonexistent/arch.json: cannot read the trial config"),
    ],
)
def test_nas_train_bad_params(space_file: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                              message: str) -> None:
    assert main(["train", str(space_file), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nas: error:") and message in err and "\n" not in err
