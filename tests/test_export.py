"""nas export / nas.load / nas evaluate on a short real search (issue 8).

One search of 4 tiny SNN-MLP trials per module (Ray, FFCV, MLflow, all real) is shared by the tests;
the spiking family (Mixer-SNN) is checked for TorchScript and ONNX without a search.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import nas
from nas.errors import NasError
from nas.export import (
    ONNX_FILE,
    TORCHSCRIPT_FILE,
    ExportOptions,
    evaluate_export,
    export_search,
    parse_formats,
    write_onnx,
    write_torchscript,
)
from nas.results.records import COMPLETE

SPACE = textwrap.dedent(
    """
    from nas import SearchSpace
    from nas.snn.snnmlp import SNNMLP, SNNMLPConfig
    from nas.train import TrainRecipe


    def sample(trial):
        return SNNMLPConfig(
            img_size=28, in_chans=1, num_classes=10, patch_size=2, norm="batchnorm",
            width=trial.suggest_categorical("width", [8, 16]),
            depths=(1, trial.suggest_int("depth1", 1, 2)), lif_group=2, mlp_ratio=2,
        )


    space = SearchSpace(name="tiny", sample=sample, build=SNNMLP, epochs=2, trials=4,
                        recipe=TrainRecipe(batch_size=64, train_subset=256, val_subset=128, energy_images=64))
    """
)

# Loads a TorchScript file with torch alone and fails if nas or spikingjelly got imported on the way.
STANDALONE = textwrap.dedent(
    """
    import sys
    import torch

    module = torch.jit.load(sys.argv[1])
    batch = torch.load(sys.argv[2])
    with torch.no_grad():
        first, second = module(batch), module(batch)
    leaked = sorted({name.split(".")[0] for name in sys.modules} & {"nas", "spikingjelly"})
    if leaked:
        raise SystemExit(f"loading imported {leaked}")
    torch.save({"first": first, "second": second}, sys.argv[3])
    """
)


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from nas import launch
    from nas.search.options import SearchOptions
    from nas.search.runs import open_search

    base = tmp_path_factory.mktemp("export-search")
    space = base / "tiny_space.py"
    space.write_text(SPACE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NAS_DATA_DIR", str(base / "data"))
        launch(SearchOptions(space=str(space), name="tiny", root=str(base / "runs"), trials=4, concurrency=2,
                             seed=0), live=False)
        handle = open_search(base / "runs", "tiny")
        yield SimpleNamespace(base=base, root=base / "runs", name="tiny", handle=handle)


@pytest.fixture(scope="module")
def exported(search: SimpleNamespace) -> SimpleNamespace:
    out = search.base / "exports"
    results = export_search(ExportOptions(name=search.name, root=str(search.root), pareto=True, out=str(out),
                                          register=True))
    return SimpleNamespace(out=out, results=results)


def _front(search: SimpleNamespace) -> list:
    from nas.results.pareto import front_of

    return front_of(search.handle.records, search.handle.objectives)


def _run_standalone(tmp_path: Path, script: Path, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    torch.save(batch, tmp_path / "batch.pt")
    (tmp_path / "standalone.py").write_text(STANDALONE)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "standalone.py"), str(script), str(tmp_path / "batch.pt"),
         str(tmp_path / "logits.pt")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return torch.load(tmp_path / "logits.pt")


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")} if folder.exists() else {}


def test_pareto_export_writes_one_folder_per_front_member(search: SimpleNamespace, exported: SimpleNamespace) -> None:
    front = _front(search)
    assert front
    assert sorted(p.name for p in exported.out.iterdir()) == sorted(f"tiny-trial-{r.number}" for r in front)
    for record in front:
        folder = exported.out / f"tiny-trial-{record.number}"
        names = {p.name for p in folder.iterdir()}
        assert {"arch.json", "space.py", "weights.safetensors", TORCHSCRIPT_FILE, "MODEL_CARD.md"} <= names
        arch = json.loads((folder / "arch.json").read_text())
        assert arch["params"] == record.params and arch["trial"] == record.number
        assert arch["family"] == "snnmlp" and arch["time_steps"] == 1
        assert arch["model_config"]["width"] == record.params["width"]
        assert arch["dataset"]["name"] == "mnist" and arch["dataset"]["info"]["img_size"] == 28
        assert arch["energy"]["profile"]["name"] == "45nm" and "convention" in arch["energy"]["counting_policy"]
        assert arch["pareto_rank"] == 0 and arch["weights"]["source"] == "search"
        assert arch["metrics"]["val_acc"] == record.values["val_acc"]
        assert (folder / "space.py").read_text() == search.handle.space_file.read_text()
        card = (folder / "MODEL_CARD.md").read_text()
        run_id = arch["lineage"]["mlflow_run_id"]
        assert run_id and run_id in card
        for word in ("val_acc", "energy_uj", "sops", "macs", "firing_rate", "params", "Pareto rank", "mnist"):
            assert word in card
    assert not list(exported.out.glob(".*")), "a temporary folder was left behind"


def test_torchscript_runs_without_nas_and_matches_the_live_model(exported: SimpleNamespace, tmp_path: Path) -> None:
    folder = exported.results[0].folder
    live = nas.load(folder)
    batch = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))  # not the traced batch size
    with torch.no_grad():
        expected = live(batch)
    got = _run_standalone(tmp_path, folder / TORCHSCRIPT_FILE, batch)
    torch.testing.assert_close(got["first"], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(got["second"], got["first"], atol=0, rtol=0)


def test_load_and_evaluate_reproduce_the_recorded_val_acc(
    search: SimpleNamespace, exported: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    from nas.cli import main

    records = {r.number: r for r in search.handle.records}
    first, last = exported.results[0], exported.results[-1]
    evaluation = evaluate_export(first.folder)  # the Python API on one front member ...
    assert evaluation.val_acc == records[first.trial].values["val_acc"]
    assert evaluation.report.energy_uj == pytest.approx(records[first.trial].values["energy_uj"], rel=1e-9)
    assert evaluation.images == 128
    assert main(["evaluate", str(last.folder)]) == 0  # ... and the command on another
    out = capsys.readouterr().out
    assert f"val_acc {records[last.trial].values['val_acc']!r} on 128 validation images of mnist" in out
    assert "profile 45nm" in out


def test_onnx_matches_the_live_model(exported: SimpleNamespace) -> None:
    import onnxruntime

    for result in exported.results:
        folder = result.folder
        arch = json.loads((folder / "arch.json").read_text())
        assert arch["onnx"]["file"] == ONNX_FILE, arch["onnx"]
        session = onnxruntime.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
        size = 3 if arch["onnx"]["batch"] == "dynamic" else arch["onnx"]["batch"]
        batch = torch.randn(size, 1, 28, 28, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            expected = nas.load(folder)(batch)
        got = torch.from_numpy(session.run(None, {"images": batch.numpy()})[0])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_registry_holds_the_versions_with_the_three_aliases(search: SimpleNamespace, exported: SimpleNamespace) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=search.handle.tracking_uri, registry_uri=search.handle.tracking_uri)
    versions = client.search_model_versions(f"name = '{search.name}'")
    assert sorted(int(v.version) for v in versions) == list(range(1, len(exported.results) + 1))
    by_trial = {r.trial: r for r in exported.results}
    accs = {r.trial: r.metrics["val_acc"] for r in exported.results}
    energies = {r.trial: r.metrics["energy_uj"] for r in exported.results}
    for alias in ("best-accuracy", "min-energy", "knee"):
        version = client.get_model_version_by_alias(search.name, alias)
        trial = int(version.tags["nas.trial_number"])
        assert alias in by_trial[trial].aliases
        assert float(version.tags["val_acc"]) == accs[trial]
        assert version.run_id == by_trial[trial].run_id
    best = client.get_model_version_by_alias(search.name, "best-accuracy")
    assert accs[int(best.tags["nas.trial_number"])] == max(accs.values())
    lean = client.get_model_version_by_alias(search.name, "min-energy")
    assert energies[int(lean.tags["nas.trial_number"])] == min(energies.values())


def test_knee_with_retraining_says_so_and_remeasures(search: SimpleNamespace, tmp_path: Path) -> None:
    import numpy as np

    from nas.results.pareto import knee_index

    front = _front(search)
    objectives = search.handle.objectives
    points = np.asarray([[r.values[m] for m in objectives] for r in front])
    knee = front[knee_index(points, list(objectives.values()))]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NAS_DATA_DIR", str(search.base / "data"))
        results = export_search(ExportOptions(name=search.name, root=str(search.root), knee=True, out=str(tmp_path),
                                              retrain_epochs=1, formats=("state_dict",)))
        assert [r.trial for r in results] == [knee.number]
        folder = results[0].folder
        arch = json.loads((folder / "arch.json").read_text())
        assert arch["weights"]["source"] == "retrained" and arch["weights"]["epochs"] == 1
        assert "retrained from scratch for 1 epochs" in (folder / "MODEL_CARD.md").read_text()
        assert arch["onnx"]["file"] is None and not (folder / TORCHSCRIPT_FILE).exists()
        assert evaluate_export(folder).val_acc == arch["metrics"]["val_acc"]


def _fail_and_prune(search: SimpleNamespace) -> dict[str, int]:
    """Numbers of a FAIL and a PRUNED trial of the search (told to the study when it has none)."""
    import optuna

    states: dict[str, int] = {}
    for record in search.handle.records:
        if record.state != COMPLETE:
            states.setdefault(record.state, record.number)
    from nas.search.runs import open_search

    study = open_search(search.root, search.name, read_only=False).study  # handles for reading are read-only
    for state in ("FAIL", "PRUNED"):
        if state not in states:
            trial = study.ask()
            study.tell(trial, state=getattr(optuna.trial.TrialState, state))
            states[state] = trial.number
    return states


def test_bad_input_gives_one_clear_error_and_writes_nothing(
    search: SimpleNamespace, exported: SimpleNamespace, tmp_path: Path
) -> None:
    states = _fail_and_prune(search)
    fresh = tmp_path / "fresh"
    cases = [
        (ExportOptions(name="no-such-search", root=str(search.root), pareto=True, out=str(fresh)), "unknown search"),
        (ExportOptions(name=search.name, root=str(search.root), trials=[states["FAIL"]], out=str(fresh)),
         f"trial {states['FAIL']} of search 'tiny' is FAIL"),
        (ExportOptions(name=search.name, root=str(search.root), trials=[states["PRUNED"]], out=str(fresh)),
         f"trial {states['PRUNED']} of search 'tiny' is PRUNED"),
        (ExportOptions(name=search.name, root=str(search.root), trials=[9999], out=str(fresh)), "has no trial 9999"),
        (ExportOptions(name=search.name, root=str(search.root), pareto=True, out=str(exported.out)),
         "exists and is not empty; pass --force"),
    ]
    before = _snapshot(exported.out)
    for options, message in cases:
        with pytest.raises(NasError, match=message) as caught:
            export_search(options)
        assert "\n" not in str(caught.value)
        assert not fresh.exists()
        assert _snapshot(exported.out) == before
    with pytest.raises(NasError, match="--format 'tflite'"):
        parse_formats("torchscript,tflite")


def test_cli_export_error_is_one_line(search: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from nas.cli import main

    code = main(["export", search.name, "--root", str(search.root), "--trial", "9999", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "has no trial 9999" in err
    assert not (tmp_path / "x").exists()


def test_spiking_family_torchscript_and_onnx_match(tmp_path: Path) -> None:
    from nas.snn import MixerSNN, MixerSNNConfig

    torch.manual_seed(0)
    config = MixerSNNConfig(img_size=28, in_chans=1, num_classes=10, dim=12, depths=(1, 1), patch_size=2,
                            stem="conv_pool", time_steps=2)
    model = MixerSNN(config)
    model.train()
    model(torch.randn(8, 1, 28, 28))  # move the BatchNorm statistics off their initial values
    model.eval()
    example = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(3)) * 2
    write_torchscript(model, example, tmp_path / TORCHSCRIPT_FILE)
    batch = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(4)) * 2
    with torch.no_grad():
        expected = model(batch)
    assert float(expected.abs().max()) > 0
    got = _run_standalone(tmp_path, tmp_path / TORCHSCRIPT_FILE, batch)
    torch.testing.assert_close(got["first"], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(got["second"], got["first"], atol=0, rtol=0)

    import onnxruntime

    onnx = write_onnx(model, example, tmp_path / ONNX_FILE)
    assert onnx.reason is None, onnx.reason
    session = onnxruntime.InferenceSession(str(tmp_path / ONNX_FILE), providers=["CPUExecutionProvider"])
    feed = batch if onnx.batch is None else example
    with torch.no_grad():
        want = model(feed)
    torch.testing.assert_close(torch.from_numpy(session.run(None, {"images": feed.numpy()})[0]), want,
                               atol=1e-5, rtol=0)


def test_onnx_failure_is_reported_and_leaves_no_file(tmp_path: Path) -> None:
    class Bessel(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.special.bessel_j0(x).flatten(1)  # no ONNX operator for it in opset 17

    result = write_onnx(Bessel(), torch.randn(2, 1, 4, 4), tmp_path / ONNX_FILE)
    assert result.reason is not None and "bessel_j0" in result.reason and "\n" not in result.reason
    assert not (tmp_path / ONNX_FILE).exists()


def test_load_refuses_a_folder_that_is_not_an_export(tmp_path: Path) -> None:
    with pytest.raises(NasError, match="not an export folder"):
        nas.load(tmp_path)
    assert os.listdir(tmp_path) == []
