"""``nas energy``: the per-layer table and JSON of registered models, and its one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from nas.cli import main
from nas.snn import create_model


def test_snnmlp_json_is_macs_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["energy", "snnmlp_t", "--img-size", "32", "--batch-size", "1", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["sops"] == 0 and report["macs"] == report["dense_macs"] > 0
    assert report["time_steps"] == 1 and report["images"] == 1
    assert report["profile"]["name"] == "45nm" and report["policy"]["encoding"] == "macs"
    assert report["energy_uj"] == pytest.approx(4.6e-6 * report["macs"])
    assert "untrained weights are not meaningful" in captured.err


def test_spikingresformer_table(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["energy", "spikingresformer_cifar", "--img-size", "16", "--time-steps", "1", "--batch-size", "1"]
    assert main(args + ["--profile", "45nm-fp16"]) == 0
    table = capsys.readouterr().out
    assert "stem.0 [encoding]" in table and "head [classifier]" in table
    assert "stages.0.matmul_attn" in table and "real@binary" in table  # K^T (real) @ Q (spikes)
    assert "profile 45nm-fp16: E_MAC 1.5 pJ, E_AC 0.4 pJ" in table
    assert "T=1" in table


def test_checkpoint(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    model = create_model("snnmlp_t", img_size=32, num_classes=10)
    good = tmp_path / "good.pt"
    torch.save({"state_dict": model.state_dict()}, good)
    args = ["energy", "snnmlp_t", "--img-size", "32", "--num-classes", "10", "--batch-size", "1", "--json"]
    assert main(args + ["--checkpoint", str(good)]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and json.loads(captured.out)["params"] == sum(
        p.numel() for p in model.parameters()
    )
    assert main(args[:-1] + ["--num-classes", "7", "--checkpoint", str(good)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nas: error: checkpoint {good}: Error(s) in loading state_dict") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["energy", "resnet50"], "unknown model 'resnet50' (known: "),
        (["energy", "snnmlp_t", "--profile", "7nm"], "unknown energy profile '7nm'"),
        (["energy", "snnmlp_t", "--time-steps", "4"], "model snnmlp_t: SNNMLPConfig has no field 'time_steps'"),
        (["energy", "snnmlp_t", "--checkpoint", "/nonexistent/w.pt"], "checkpoint /nonexistent/w.pt: "),
    ],
)
def test_errors_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("nas: error: ") and message in err[-1]
    assert all(line.startswith("nas: ") for line in err)
