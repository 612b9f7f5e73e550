"""End-to-end searches: real Ray Tune, real Optuna (SQLite), real MLflow, short trials on MNIST subsets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from tiny_space import tiny_space

from nas import launch
from nas.cli import main
from nas.errors import NasError
from nas.results.layout import default_storage_url
from nas.results.pareto import front_of, hypervolume
from nas.results.records import records_from_study
from nas.search.options import SearchOptions
from nas.search.prepare import prepare_search
from nas.search.runs import open_search
from nas.search.store import open_storage

CRASHING = """
from nas import SearchSpace
from nas.snn import SNNMLP, SNNMLPConfig


def sample(trial):
    return SNNMLPConfig(img_size=28, in_chans=1, num_classes=10, patch_size=2, depths=(1, 1),
                        width=trial.suggest_categorical("width", [8, 16]))


class Crashing(SNNMLP):
    def forward(self, x):
        raise RuntimeError(f"cannot run width {self.config.width} on this device")


def build(config, data_info):
    return Crashing(config)  # builds (the space fits the data), then every trial raises in training


space = SearchSpace(name="crashing", sample=sample, build=build, epochs=1, trials=2)
"""

DIVERGING = """
import math

from nas import SearchSpace
from nas.snn import SNNMLP, SNNMLPConfig
from nas.train import TrainRecipe


class Diverging(SNNMLP):
    def forward(self, x):
        return super().forward(x) * math.nan


def sample(trial):
    return SNNMLPConfig(img_size=28, in_chans=1, num_classes=10, patch_size=2, depths=(1, 1),
                        width=trial.suggest_categorical("width", [8, 16]))


def build(config, data_info):
    return Diverging(config)


space = SearchSpace(name="diverging", sample=sample, build=build, epochs=2, trials=2,
                    recipe=TrainRecipe(batch_size=64, train_subset=128, val_subset=64, energy_images=32))
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, data_dir: Path):
    """One real search of 6 trials at concurrency 2, shared by the tests below."""
    folder = tmp_path_factory.mktemp("search")
    space = _write(folder, "tiny.py", tiny_space(epochs=3, train=256))
    root = folder / "runs"
    result = launch(SearchOptions(space=str(space), name="six", root=str(root), trials=6, concurrency=2, seed=0),
                    live=False)
    return result, root


def test_launch_of_six_trials_finishes_with_an_honest_study(finished) -> None:
    result, root = finished
    handle = open_search(root, "six")
    records = handle.records
    counted = [r for r in records
               if r.state != "DUPLICATE" and not (r.state == "FAIL" and r.fail_reason == "interrupted")]
    assert len(counted) == 6
    assert {r.state for r in counted} <= {"COMPLETE", "PRUNED"}
    for record in counted:
        epochs = [row["epoch"] for row in record.history]
        assert epochs == list(range(1, len(epochs) + 1)), "one history row per epoch, none twice"
        if record.state == "COMPLETE":
            assert epochs[-1] == 3 and record.values["val_acc"] == record.history[-1]["val_acc"]
            assert record.family == "snnmlp"
            assert record.user_attrs["time_steps"] == 1 and record.user_attrs["model_params"] > 0
            assert record.user_attrs["node_id"] == record.history[-1]["node_id"]
            assert (root / "six" / "trials" / str(record.number) / "trainer.pt").is_file()
        else:  # stopped early by MOASHA: never a finished point
            assert epochs[-1] < 3 and record.values is None
            assert set(record.user_attrs["last_values"]) == {"val_acc", "energy_uj"}


def test_nas_pareto_shows_a_truly_non_dominated_front(finished, capsys: pytest.CaptureFixture[str]) -> None:
    result, root = finished
    assert main(["pareto", "six", "--root", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows, "a finished search has a non-empty front"
    complete = [r for r in open_search(root, "six").records if r.state == "COMPLETE"]
    points = {r.number: (r.values["val_acc"], r.values["energy_uj"]) for r in complete}
    shown = [row["trial"] for row in rows]
    for number in shown:
        acc, energy = points[number]
        for other, (acc2, energy2) in points.items():
            dominates = acc2 >= acc and energy2 <= energy and (acc2 > acc or energy2 < energy)
            assert not (other != number and dominates), f"trial {other} dominates front member {number}"
    non_dominated = {n for n, (a, e) in points.items()
                     if not any(a2 >= a and e2 <= e and (a2 > a or e2 < e) for a2, e2 in points.values())}
    # One row per distinct point: its lowest-numbered trial, and a ``trials`` count when points are shared.
    by_point: dict[tuple[float, float], list[int]] = {}
    for number in sorted(non_dominated):
        by_point.setdefault(points[number], []).append(number)
    assert sorted(shown) == sorted(numbers[0] for numbers in by_point.values())
    counts = {row["trial"]: row.get("trials", 1) for row in rows}
    assert counts == {numbers[0]: len(numbers) for numbers in by_point.values()}
    pruned = {r.number for r in open_search(root, "six").records if r.state == "PRUNED"}
    assert not pruned & non_dominated
    assert {r.number for r in result.front} == non_dominated


def test_hypervolume_history_is_stored_and_non_decreasing(finished) -> None:
    _, root = finished
    study = open_search(root, "six").study
    history = [value for _, value in study.user_attrs["hypervolume_history"]]
    assert history and all(b >= a for a, b in zip(history, history[1:], strict=False))
    assert set(study.user_attrs["reference"]) == {"val_acc", "energy_uj"}


def test_the_reference_is_fixed_from_the_space_and_contains_every_point(finished) -> None:
    result, root = finished
    handle = open_search(root, "six")
    reference = handle.study.user_attrs["reference"]
    assert reference["val_acc"] == 0.0 and "firing at every step" in handle.study.user_attrs["reference_basis"]
    rows = [row for r in handle.records for row in r.history if row.get("energy_uj") is not None]
    assert rows and all(0.0 <= row["val_acc"] and row["energy_uj"] < reference["energy_uj"] for row in rows)
    # Every complete point counts: the normalised hypervolume is that of the whole front.
    front = np.array([[r.values["val_acc"], r.values["energy_uj"]] for r in result.front])
    expected = hypervolume(front, ["max", "min"], [0.0, reference["energy_uj"]]) / reference["energy_uj"]
    assert 0.0 < result.normalised_hypervolume == pytest.approx(expected)
    assert handle.normalised_hypervolume == pytest.approx(expected)


def test_the_default_sqlite_study_is_in_wal_mode(finished) -> None:
    # Written after every epoch from inside Ray's event loop: WAL with synchronous=NORMAL keeps each
    # commit to one append (and lets `nas status` read during a search).
    import sqlite3

    _, root = finished
    with sqlite3.connect(root / "optuna.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    storage = open_storage(default_storage_url(root))
    with storage.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_status_lists_the_search(finished, capsys: pytest.CaptureFixture[str]) -> None:
    _, root = finished
    assert main(["status", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "six" in out and "sqlite" in out


def test_a_trial_that_raises_is_failed_with_its_reason_and_the_search_finishes(tmp_path: Path, data_dir) -> None:
    space = _write(tmp_path, "crashing.py", CRASHING)
    result = launch(SearchOptions(space=str(space), name="crash", root=str(tmp_path / "runs"), trials=2,
                                  concurrency=2, max_failures=0, scheduler="none"), live=False)
    records = [r for r in result.records if r.fail_reason != "duplicate"]
    assert len(records) == 2
    for record in records:
        assert record.state == "FAIL"
        assert "RuntimeError: cannot run width" in record.fail_reason
    assert result.front == []


@pytest.mark.parametrize("scheduler", ["moasha", "none"])
def test_a_diverging_candidate_is_failed_and_the_search_finishes(tmp_path: Path, data_dir, scheduler: str) -> None:
    # The real trainable: a NaN loss stops training at its first step, and the report it makes then
    # must not trip Ray Tune's check for missing metrics (which would abort the whole search).
    space = _write(tmp_path, "diverging.py", DIVERGING)
    result = launch(SearchOptions(space=str(space), name="nan", root=str(tmp_path / "runs"), trials=2,
                                  concurrency=2, max_failures=0, scheduler=scheduler), live=False)
    records = [r for r in result.records if r.fail_reason != "duplicate"]
    assert len(records) == 2
    for record in records:
        assert record.state == "FAIL"
        assert record.fail_reason.startswith("diverged: loss became nan at epoch 1, step 0"), record.fail_reason
    assert result.front == [] and not result.interrupted


def _study_states(root: Path, name: str) -> list[str]:
    if not (root / "optuna.db").is_file():
        return []
    from nas.errors import NasError
    from nas.search.store import open_storage

    try:  # read-only: a reader that creates the tables races the controller creating them
        study = optuna.load_study(study_name=name, storage=open_storage(default_storage_url(root), read_only=True))
    except (KeyError, NasError):  # no study yet, or the file's tables not written yet
        return []
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path: Path, data_dir) -> None:
    space = _write(tmp_path, "tiny.py", tiny_space(epochs=2, train=512))
    root = tmp_path / "runs"
    env = {**os.environ, "NAS_DATA_DIR": str(data_dir)}
    command = [sys.executable, "-m", "nas.cli", "launch", str(space), "--name", "killed", "--root", str(root),
               "--trials", "6", "--concurrency", "2", "--scheduler", "none"]
    controller = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            states = _study_states(root, "killed")
            if states.count("COMPLETE") >= 1 and "RUNNING" in states:
                break
            if controller.poll() is not None:
                pytest.fail("the controller ended before it could be killed")
            time.sleep(0.5)
        else:
            pytest.fail("no trial completed within 300 s")
    finally:
        os.killpg(controller.pid, signal.SIGKILL)  # the controller and the Ray it started, like a reboot
        controller.wait()
    before = optuna.load_study(study_name="killed", storage=default_storage_url(root)).get_trials()
    completed_before = {t.number: t.values for t in before if t.state.name == "COMPLETE"}
    assert any(t.state.name == "RUNNING" for t in before)

    assert main(["resume", "killed", "--root", str(root)]) == 0
    records = records_from_study(optuna.load_study(study_name="killed", storage=default_storage_url(root)))
    by_number = {r.number: r for r in records}
    for number, values in completed_before.items():  # nothing completed was lost or re-run
        assert by_number[number].state == "COMPLETE" and list(by_number[number].values.values()) == values
    interrupted = [r for r in records if r.fail_reason == "interrupted"]
    assert interrupted, "the trials in flight at the kill are recorded as interrupted"
    # A kill right after study.ask() leaves a trial with no params: it never reached Ray, nothing to
    # re-run. Every interrupted trial that had been sampled is re-run exactly once.
    sampled = [r.number for r in interrupted if r.params]
    assert sampled
    retries = [r for r in records if "retry_of" in r.user_attrs]
    assert sorted(r.user_attrs["retry_of"] for r in retries) == sorted(sampled)
    for retry in retries:  # re-run with the same architecture, once
        assert retry.params == by_number[retry.user_attrs["retry_of"]].params
        assert retry.state == "COMPLETE"
    counted = [r for r in records if r.state in ("COMPLETE", "PRUNED")
               or (r.state == "FAIL" and r.fail_reason not in ("interrupted", "duplicate"))]
    assert len(counted) == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trials", "0"], "--trials must be at least 1, got 0"),
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["--epochs", "-2"], "--epochs must be at least 1, got -2"),
        (["--storage", "notaurl"], "is not a SQLAlchemy URL"),
        (["--storage", "postgresql+psycopg2://nas:secret@127.0.0.1:1/nas"], "is unreachable"),
        (["--address", "127.0.0.1:1"], "no Ray cluster answers there"),
        (["--tracking-uri", "http://127.0.0.1:1"], "127.0.0.1:1"),
    ],
)
def test_bad_launch_options_fail_in_one_line_and_touch_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    root = tmp_path / "runs"
    space = Path(__file__).resolve().parents[1] / "search_spaces" / "snnmlp.py"
    assert main(["launch", str(space), "--root", str(root), "--name", "bad", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("nas: error:")
    assert "secret" not in err[0]
    assert not (root / "bad").exists()
    assert _study_states(root, "bad") == []


def test_space_that_does_not_load_gives_the_loader_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = _write(tmp_path, "broken.py", "from nas import SearchSpace\nspace = SearchSpace(\n")
    assert main(["launch", str(broken), "--root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"nas: error: {broken}:") and "syntax error" in err and "Traceback" not in err


def test_objective_the_trainer_never_reports_is_refused(tmp_path: Path) -> None:
    space = _write(tmp_path, "latency.py", tiny_space(epochs=1, train=64).replace(
        'name="tiny",', 'name="tiny", objectives={"val_acc": "max", "latency_ms": "min"},'))
    with pytest.raises(NasError, match="objective 'latency_ms' is never reported"):
        prepare_search(SearchOptions(space=str(space), root=str(tmp_path / "runs")))
    assert not (tmp_path / "runs").exists()


def test_existing_name_without_resume_is_refused(finished, capsys: pytest.CaptureFixture[str]) -> None:
    result, root = finished
    before = len(open_search(root, "six").records)
    space = root.parent / "tiny.py"
    assert main(["launch", str(space), "--root", str(root), "--name", "six"]) == 2
    err = capsys.readouterr().err
    assert "search 'six' already exists" in err and "--resume" in err
    assert len(open_search(root, "six").records) == before


def test_unknown_search_for_pareto(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pareto", "nope", "--root", str(tmp_path)]) == 2
    assert "unknown search 'nope'" in capsys.readouterr().err


def test_front_of_records_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    from nas.results.records import TrialRecord

    records = [TrialRecord(number=i, state="COMPLETE", params={}, values={"val_acc": float(a), "energy_uj": float(e)})
               for i, (a, e) in enumerate(rng.random((40, 2)))]
    front = {r.number for r in front_of(records, {"val_acc": "max", "energy_uj": "min"})}
    expected = {r.number for r in records if not any(
        o.values["val_acc"] >= r.values["val_acc"] and o.values["energy_uj"] <= r.values["energy_uj"]
        and (o.values["val_acc"] > r.values["val_acc"] or o.values["energy_uj"] < r.values["energy_uj"])
        for o in records)}
    assert front == expected


def test_mlflow_holds_one_parent_and_one_child_per_trial_with_front_tags(finished) -> None:
    import csv
    import io

    import mlflow

    from nas.results.layout import default_tracking_uri

    result, root = finished
    client = mlflow.MlflowClient(tracking_uri=default_tracking_uri(root))
    experiment = client.get_experiment_by_name("six")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    records = open_search(root, "six").records
    ran = {r.number for r in records if r.state in ("COMPLETE", "PRUNED", "FAIL") and r.history}
    numbers = sorted(int(c.data.tags["nas.trial_number"]) for c in children)
    assert numbers == sorted(ran), "exactly one child run per trial that ran"
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    front = {r.number for r in result.front}
    tagged = {int(c.data.tags["nas.trial_number"]) for c in children if c.data.tags.get("pareto") == "true"}
    assert tagged == front
    history = [m.value for m in sorted(client.get_metric_history(parent.info.run_id, "hypervolume"),
                                       key=lambda m: m.step)]
    assert history and all(b >= a - 1e-12 for a, b in zip(history, history[1:], strict=False))
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.html", "pareto.csv", "pareto.png", "hypervolume.html"} <= artifacts
    text = Path(client.download_artifacts(parent.info.run_id, "pareto.csv")).read_text()
    assert {int(row["trial"]) for row in csv.DictReader(io.StringIO(text))} == front


def test_nas_report_contains_the_front(finished, tmp_path: Path) -> None:
    result, root = finished
    assert main(["report", "six", "--root", str(root), "--out", str(tmp_path)]) == 0
    import re

    html = next(tmp_path.glob("*.html")).read_text()
    listed = re.search(r'<p id="front-trials">Front \((\d+) trials\): ([^<]*)</p>', html)
    assert listed is not None
    assert {int(n) for n in re.findall(r"#(\d+)", listed.group(2))} == {r.number for r in result.front}
    front_table = html.split('<table id="front-table">')[1].split("</table>")[0]
    assert {int(n) for n in re.findall(r'data-trial="(\d+)"', front_table)} == {r.number for r in result.front}
    assert "Firing rates and energy of the front" in html


def test_a_search_with_the_proxy_rung_scores_every_trial_and_never_trains_what_it_dropped(
        tmp_path: Path, data_dir) -> None:
    import mlflow

    from nas.results.layout import default_tracking_uri

    space = _write(tmp_path, "tiny.py", tiny_space(epochs=1, trials=3, train=128))
    root = tmp_path / "runs"
    result = launch(SearchOptions(space=str(space), name="proxied", root=str(root), trials=3, concurrency=1,
                                  scheduler="none", proxy="sahd", proxy_rule="top", seed=0),
                    live=False)
    records = [r for r in result.records if r.state != "DUPLICATE"]
    trained = [r for r in records if r.state == "COMPLETE"]
    dropped = [r for r in records if r.state == "DROPPED"]
    assert len(trained) == 3 and len(dropped) == 6, [(r.number, r.state) for r in records]
    assert all("proxy_score" in r.user_attrs and "proxy_energy_uj" in r.user_attrs for r in records)
    for r in dropped:  # never trained: no epoch, no weights, no MLflow run
        assert r.history == [] and r.values is None
        assert not (root / "proxied" / "trials" / str(r.number)).exists()
    client = mlflow.MlflowClient(tracking_uri=default_tracking_uri(root))
    experiment = client.get_experiment_by_name("proxied")
    children = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert sorted(int(c.data.tags["nas.trial_number"]) for c in children) == sorted(r.number for r in trained)
    for child in children:
        record = next(r for r in trained if r.number == int(child.data.tags["nas.trial_number"]))
        assert child.data.params["nas.proxy_score"] == str(record.user_attrs["proxy_score"])
