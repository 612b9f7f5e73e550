"""A run folder works from wherever it is copied or moved, and never reaches back into the original.

search.json keeps the run folder's own SQLite files relative to the folder (``sqlite:///{run_folder}/...``)
and MLflow's absolute artifact locations are re-pointed to the folder's own ``mlartifacts/`` by the
commands that use them (``adopt_run_folder``). The slow test copies a real search, resumes and exports it
from the copy and checks, by checksums, that nothing in the original changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from test_tracking_support import run_synthetic_search
from tiny_space import tiny_space

from nas.cli import main
from nas.search.runs import read_options, write_options
from nas.search.store import RUN_FOLDER, located_url, portable_url
from nas.tracking import MlflowTracker, adopt_run_folder


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under a folder, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_urls_of_the_run_folder_are_kept_relative_to_it(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    url = f"sqlite:///{(root / 'optuna.db').resolve()}"
    assert portable_url(url, root) == f"sqlite:///{RUN_FOLDER}/optuna.db"
    moved = tmp_path / "elsewhere"
    assert located_url(portable_url(url, root), moved) == f"sqlite:///{(moved / 'optuna.db').resolve()}"
    # anything outside the run folder stays as it was given
    for other in (f"sqlite:///{tmp_path / 'shared.db'}", "postgresql+psycopg2://u:***@db/nas", "http://mlflow:5000"):
        assert portable_url(other, root) == other and located_url(other, root) == other


def test_a_copied_synthetic_folder_reads_and_writes_only_itself(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    original = tmp_path / "original"
    search = run_synthetic_search(original, "synth", trials=6)
    options = read_options(original / "synth")  # as the controller writes it
    options["storage"] = portable_url(options["storage"], original)
    options["tracking_uri"] = portable_url(options["tracking_uri"], original)
    write_options(original / "synth", options)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    before = checksums(original)

    assert main(["status", "--root", str(copy)]) == 0
    assert main(["report", "--root", str(copy)]) == 0
    assert "newest" in capsys.readouterr().err  # no name given: the newest search, and it says so
    assert adopt_run_folder(copy) > 0
    assert adopt_run_folder(copy) == 0  # in place now: nothing more to write
    tracker = MlflowTracker(located_url(options["tracking_uri"], copy), "synth", objectives=search.tracker.objectives)
    tracker.start_search(space_file=copy / "synth" / "space.py", search_params={}, resume=True)
    tracker.finish_search()
    client = MlflowClient(located_url(options["tracking_uri"], copy))
    run = client.get_run(tracker.parent_run_id)
    assert run.info.artifact_uri.startswith((copy / "mlartifacts").resolve().as_uri())
    assert checksums(original) == before


@pytest.fixture()
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory lands here, and is seen
    old = os.environ.get("NAS_DATA_DIR")
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path / "data") if old is None else old)
    yield tmp_path


def nas(*args: str, cwd: Path) -> None:
    """Run the nas command in its own process, as a user would (nothing stays open between commands)."""
    done = subprocess.run([sys.executable, "-m", "nas.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_a_copied_search_resumes_and_exports_from_its_new_place(in_tmp: Path) -> None:
    space = in_tmp / "tiny.py"
    space.write_text(tiny_space(epochs=1, trials=2, train=128))
    original, copy = in_tmp / "original", in_tmp / "copy"
    nas("launch", str(space), "--name", "portable", "--root", str(original), "--concurrency", "1", cwd=in_tmp)
    saved = json.loads((original / "portable" / "search.json").read_text())
    assert saved["storage"] == f"sqlite:///{RUN_FOLDER}/optuna.db"
    assert saved["tracking_uri"] == f"sqlite:///{RUN_FOLDER}/mlflow.db"
    shutil.copytree(original, copy)
    before = checksums(original)
    # one more trial for the copy, so that its resume runs something
    options = read_options(copy / "portable")
    write_options(copy / "portable", {**options, "trials": options["trials"] + 1})

    nas("resume", "portable", "--root", str(copy), cwd=in_tmp)
    nas("export", "--root", str(copy), "--pareto", "--out", str(in_tmp / "exports"), "--format", "state_dict",
        "--register", cwd=in_tmp)
    nas("report", "--root", str(copy), cwd=in_tmp)

    assert checksums(original) == before
    assert not (in_tmp / "mlruns").exists(), "MLflow wrote to the working directory"
    client = MlflowClient(f"sqlite:///{copy / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("portable")
    assert experiment.artifact_location.startswith((copy / "mlartifacts").resolve().as_uri())
    runs = client.search_runs([experiment.experiment_id])
    assert all(run.info.artifact_uri.startswith((copy / "mlartifacts").resolve().as_uri()) for run in runs)
    assert len([r for r in runs if r.data.tags.get("nas.role") == "trial"]) >= 3
