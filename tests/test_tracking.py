"""MlflowTracker against a real SQLite MLflow store and a real Optuna study (tests/test_tracking_support.py)."""

from __future__ import annotations

import csv
import io
import socket
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from test_tracking_support import OBJECTIVES, REFERENCE, SyntheticSearch, run_synthetic_search

from nas.errors import NasError
from nas.results.pareto import front_of, hypervolume, hypervolume_history, ranks_of
from nas.results.records import COMPLETE
from nas.tracking import MlflowTracker, mask_secrets

TRIALS = 8
MODEL_TRIAL = 0


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def search(root: Path) -> SyntheticSearch:
    # Throttled like a real search: the first update refreshes the artifacts, the forced last one again.
    return run_synthetic_search(root, "synth", trials=TRIALS, refresh_seconds=3600, log_models=(MODEL_TRIAL,))


def _runs(search: SyntheticSearch) -> list:
    client = MlflowClient(search.tracking_uri)
    return list(client.search_runs([search.tracker.experiment_id], max_results=1000))


def test_one_parent_and_one_child_per_trial(search: SyntheticSearch) -> None:
    runs = _runs(search)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_id == search.tracker.parent_run_id
    assert parent.data.tags["nas.search"] == "synth"
    assert parent.info.status == "FINISHED"
    assert sorted(int(r.data.tags["nas.trial_number"]) for r in children) == list(range(TRIALS))
    for r in children:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.info.run_name == f"trial-{r.data.tags['nas.trial_number']}"
    experiment = MlflowClient(search.tracking_uri).get_experiment(search.tracker.experiment_id)
    assert experiment.name == "synth"
    # artifacts of a SQLite store live in the run folder, not in ./mlruns of whatever the cwd was
    assert experiment.artifact_location == (search.root / "mlartifacts" / "synth").resolve().as_uri()


def test_child_params_tags_and_states_match_the_study(search: SyntheticSearch) -> None:
    by_number = {int(r.data.tags["nas.trial_number"]): r for r in _runs(search) if "nas.trial_number" in r.data.tags}
    expected_status = {
        "COMPLETE": ("complete", "FINISHED"),
        "PRUNED": ("pruned", "FINISHED"),
        "FAIL": ("failed", "FAILED"),
    }
    for record in search.records:
        run = by_number[record.number]
        tag_state, status = expected_status[record.state]
        assert run.data.tags["nas.state"] == tag_state
        assert run.info.status == status
        for key, value in record.params.items():
            assert run.data.params[key] == str(value)
        assert run.data.params["nas.family"] == record.family
        assert run.data.params["nas.energy_profile"] == "45nm"
        assert run.data.params["nas.counting_policy"] == "sops-after-first-layer"
        assert run.data.params["nas.space_file"] == "space.py"
        assert len(run.data.params["nas.space_hash"]) == 64
        assert run.data.tags["nas.family"] == record.family
        if record.state == "FAIL":
            assert run.data.tags["nas.fail_reason"] == "RuntimeError: synthetic failure"
        if record.state == COMPLETE:
            assert run.data.metrics["val_acc"] == pytest.approx(record.values["val_acc"])
    # per-epoch metrics are stepped by epoch
    client = MlflowClient(search.tracking_uri)
    history = client.get_metric_history(by_number[0].info.run_id, "energy_uj")
    assert sorted({m.step for m in history}) == [1, 2]


def test_front_tags_match_the_front(search: SyntheticSearch) -> None:
    records = search.records
    front = {r.number for r in front_of(records, OBJECTIVES)}
    complete = {r.number for r in records if r.state == COMPLETE}
    assert 0 < len(front) < len(complete), "the synthetic study should have dominated trials"
    tagged = {}
    for run in _runs(search):
        tags = run.data.tags
        if "pareto" in tags:
            tagged[int(tags["nas.trial_number"])] = (tags["pareto"], tags["pareto_rank"])
    assert set(tagged) == complete
    assert {n for n, (on, _) in tagged.items() if on == "true"} == front
    assert all(rank == "0" for n, (_, rank) in tagged.items() if n in front)
    assert all(int(rank) > 0 for n, (_, rank) in tagged.items() if n not in front)


def test_parent_metrics(search: SyntheticSearch) -> None:
    client = MlflowClient(search.tracking_uri)
    parent = search.tracker.parent_run_id
    # "hypervolume" is the fraction of the reference box; the raw value and the reference sit beside it.
    box = 1.0
    for name, direction in OBJECTIVES.items():
        box *= abs(REFERENCE[name] - (1.0 if direction == "max" else 0.0))
    normalised = sorted(client.get_metric_history(parent, "hypervolume"), key=lambda m: (m.step, m.timestamp))
    history = sorted(client.get_metric_history(parent, "hypervolume_raw"), key=lambda m: (m.step, m.timestamp))
    assert [m.value for m in normalised] == pytest.approx([m.value / box for m in history])
    tags = client.get_run(parent).data.tags
    assert {k: float(tags[f"nas.reference.{k}"]) for k in OBJECTIVES} == REFERENCE
    values = [m.value for m in history]
    assert values == sorted(values), "hypervolume must be non-decreasing"
    records = search.records
    complete = [r for r in records if r.state == COMPLETE]
    assert history[-1].step == len(complete)
    points = [[r.values[n] for n in OBJECTIVES] for r in complete]
    assert values[-1] == pytest.approx(hypervolume(points, list(OBJECTIVES.values()), list(REFERENCE.values())))
    # the tracker extends the history incrementally; it must equal the history computed in one go
    ordered = sorted(complete, key=lambda r: (r.completed, r.number))
    expected = hypervolume_history([[r.values[n] for n in OBJECTIVES] for r in ordered], list(OBJECTIVES.values()),
                                   list(REFERENCE.values()))
    by_step = {m.step: m.value for m in history}
    assert [by_step[k] for k in range(1, len(complete) + 1)] == pytest.approx(expected)
    metrics = client.get_run(parent).data.metrics
    assert metrics["front_size"] == len(front_of(records, OBJECTIVES))
    assert metrics["best_val_acc"] == pytest.approx(max(r.values["val_acc"] for r in complete))
    assert metrics["min_energy_uj"] == pytest.approx(min(r.values["energy_uj"] for r in complete))
    assert metrics["trials_pruned"] == 1 and metrics["trials_failed"] == 1


def test_artifacts_hold_the_front(search: SyntheticSearch) -> None:
    client = MlflowClient(search.tracking_uri)
    parent = search.tracker.parent_run_id
    names = {a.path for a in client.list_artifacts(parent)}
    assert {"pareto.html", "pareto.png", "pareto.csv", "hypervolume.html", "space.py"} <= names
    folder = Path(client.download_artifacts(parent, "", dst_path=str(search.root / "downloaded")))
    rows = list(csv.DictReader(io.StringIO((folder / "pareto.csv").read_text())))
    front = front_of(search.records, OBJECTIVES)
    assert [int(r["trial"]) for r in rows] == [r.number for r in front]
    for row, record in zip(rows, front, strict=True):
        assert float(row["val_acc"]) == record.values["val_acc"]
        assert float(row["energy_uj"]) == record.values["energy_uj"]
        assert int(row["width"]) == record.params["width"]
    html = (folder / "pareto.html").read_text()
    assert f"Pareto front ({len(front)} trials)" in html
    assert (folder / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "space.py").read_text() == search.space_file.read_text()
    # search params are on the parent, the Optuna storage URL among them
    params = client.get_run(parent).data.params
    assert params["dataset"] == "synthetic" and params["space_file"] == "space.py"


def test_logged_model_loads_back(search: SyntheticSearch) -> None:
    import mlflow.pytorch
    import torch
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    run = next(r for r in _runs(search) if r.data.tags.get("nas.trial_number") == str(MODEL_TRIAL))
    uri = run.data.tags["nas.model_uri"]
    with _use_tracking_uri(search.tracking_uri):
        model = mlflow.pytorch.load_model(uri)
    torch.manual_seed(MODEL_TRIAL)
    expected = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.ones(2, 4)
    assert torch.allclose(model(x), expected(x))


def test_resume_and_retry_reuse_runs(search: SyntheticSearch) -> None:
    tracker = MlflowTracker(search.tracking_uri, "synth", objectives=OBJECTIVES)
    before = {r.info.run_id for r in _runs(search)}
    parent = tracker.start_search(space_file=search.space_file, search_params={"dataset": "synthetic", "seed": 1},
                                  resume=True)
    assert parent == search.tracker.parent_run_id
    failed = next(r for r in search.records if r.state == "FAIL").number
    child = tracker.trial_started(failed, {"width": 16, "depth": 1, "time_steps": 1}, attrs={"family": "snnmlp"})
    tracker.trial_finished(failed, "failed", reason="retried and failed again")
    tracker.finish_search()
    after = _runs(search)
    assert {r.info.run_id for r in after} == before
    by_id = {r.info.run_id: r for r in after}
    assert by_id[child].data.tags["nas.trial_number"] == str(failed)
    assert by_id[child].data.tags["nas.fail_reason"] == "retried and failed again"
    # the changed seed is kept as a tag, the first value stays the param
    assert by_id[parent].data.params["seed"] == "0"
    assert by_id[parent].data.tags["nas.resumed.seed"] == "1"


def test_a_second_search_of_the_same_name_is_refused(search: SyntheticSearch) -> None:
    tracker = MlflowTracker(search.tracking_uri, "synth", objectives=OBJECTIVES)
    with pytest.raises(NasError, match="already holds this search"):
        tracker.start_search(space_file=search.space_file, search_params={})


def test_two_searches_in_one_process_stay_apart(search: SyntheticSearch, root: Path) -> None:
    # also: throttled refreshes and no forced last update, so finish_search must publish what was held back
    other = run_synthetic_search(root, "other", trials=5, seed=3, refresh_seconds=3600, final_force=False)
    assert other.tracker.experiment_id != search.tracker.experiment_id
    runs = _runs(other)
    assert len(runs) == 6
    assert {r.data.tags.get("mlflow.parentRunId") for r in runs} == {None, other.tracker.parent_run_id}
    ranks = ranks_of(other.records, OBJECTIVES)
    assert max(ranks.values()) > 0
    tagged = {
        int(r.data.tags["nas.trial_number"]): r.data.tags["pareto_rank"] for r in runs if "pareto_rank" in r.data.tags
    }
    assert tagged == {n: str(k) for n, k in ranks.items()}
    client = MlflowClient(other.tracking_uri)
    folder = Path(client.download_artifacts(other.tracker.parent_run_id, "pareto.csv", dst_path=str(root / "dl2")))
    trials = [int(row["trial"]) for row in csv.DictReader(io.StringIO(folder.read_text()))]
    assert trials == [r.number for r in front_of(other.records, OBJECTIVES)]


def test_secrets_are_masked_in_params(root: Path, search: SyntheticSearch) -> None:
    assert mask_secrets("postgresql+psycopg2://nas:hunter2@db:5432/nas") == "postgresql+psycopg2://nas:***@db:5432/nas"
    assert mask_secrets("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    tracker = MlflowTracker(search.tracking_uri, "masked", objectives=OBJECTIVES)
    parent = tracker.start_search(
        space_file=search.space_file,
        search_params={"storage": "postgresql://nas:hunter2@db/nas", "env": {"url": "http://u:pw@h:1/"}},
    )
    tracker.finish_search()
    params = MlflowClient(search.tracking_uri).get_run(parent).data.params
    assert params["storage"] == "postgresql://nas:***@db/nas"
    assert "pw" not in params["env"] and "hunter2" not in str(params)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_fails_fast_with_one_line() -> None:
    port = _free_port()  # nothing listens there once the socket is closed
    tracker = MlflowTracker(f"http://user:secret@127.0.0.1:{port}", "x", objectives=OBJECTIVES)
    start = time.monotonic()
    with pytest.raises(NasError) as info:
        tracker.check_reachable()
    assert time.monotonic() - start < 6
    message = str(info.value)
    assert "does not answer" in message and f"127.0.0.1:{port}" in message
    assert "secret" not in message and "\n" not in message


def test_non_mlflow_server_is_named(tmp_path: Path) -> None:
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        tracker = MlflowTracker(f"http://127.0.0.1:{server.server_port}", "x", objectives=OBJECTIVES)
        with pytest.raises(NasError, match="does not look like an MLflow tracking server"):
            tracker.check_reachable()
    finally:
        server.shutdown()
        server.server_close()


def test_bad_input_is_rejected(search: SyntheticSearch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="direction"):
        MlflowTracker(search.tracking_uri, "x", objectives={"val_acc": "up"})
    with pytest.raises(NasError, match="does not exist"):
        MlflowTracker(f"sqlite:///{tmp_path}/missing/mlflow.db", "x", objectives=OBJECTIVES).check_reachable()
    with pytest.raises(ValueError, match="trial state"):
        search.tracker.trial_finished(0, "done")
    with pytest.raises(ValueError, match="trial_started"):
        search.tracker.trial_epoch(999, {"val_acc": 0.5}, step=1)


def test_front_tags_match_nas_pareto(search: SyntheticSearch, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from nas.cli import main

    assert main(["pareto", "synth", "--root", str(search.root), "--json"]) == 0
    cli_front = {row["trial"] for row in json.loads(capsys.readouterr().out)}
    tagged = {int(r.data.tags["nas.trial_number"]) for r in _runs(search) if r.data.tags.get("pareto") == "true"}
    assert tagged == cli_front


def test_nas_report_writes_the_front(search: SyntheticSearch, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from nas.cli import main

    assert main(["report", "synth", "--root", str(search.root), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "synth.html"
    assert str(path) in out
    html = path.read_text()
    front = [r.number for r in front_of(search.records, OBJECTIVES)]
    assert f'<p id="front-trials">Front ({len(front)} trials): ' + ", ".join(f"#{n}" for n in front) in html
    for n in front:
        assert f'<tr class="front" data-trial="{n}">' in html
    # default place: the search's own folder
    assert main(["report", "synth", "--root", str(search.root)]) == 0
    assert (search.root / "synth" / "report.html").is_file()
    assert main(["report", "nope", "--root", str(search.root)]) == 2
    assert "unknown search 'nope'" in capsys.readouterr().err


def test_nas_ui_refuses_a_folder_without_a_store_and_a_busy_port(
    search: SyntheticSearch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nas.cli import main

    assert main(["ui", "--root", str(tmp_path), "--port", str(_free_port())]) == 2
    assert "no MLflow store here (mlflow.db missing)" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["ui", "--root", str(search.root), "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
