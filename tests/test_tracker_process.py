"""MLflow tracking in its writer process: every event once, in batches, errors reported, nothing lost on a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from nas.errors import NasError
from nas.results.records import COMPLETE, TrialRecord
from nas.tracking import MlflowTracker, TrackerProcess, WriterStopped
from nas.tracking._batch import MAX_ENTITIES, MAX_PARAMS, MAX_TAGS, batch_chunks

OBJECTIVES = {"val_acc": "max", "energy_uj": "min"}
REPO = Path(__file__).resolve().parents[1]


def _space(tmp_path: Path) -> Path:
    space = tmp_path / "space.py"
    space.write_text("SPACE = None\n")
    return space


def _trial_runs(uri: str, name: str) -> dict[int, object]:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], "tags.`nas.role` = 'trial'", max_results=1000)
    found: dict[int, object] = {}
    for run in runs:
        number = int(run.data.tags["nas.trial_number"])
        assert number not in found, f"trial {number} has two runs"
        found[number] = run
    return found


def _steps(uri: str, run: object) -> list[int]:
    return sorted(m.step for m in MlflowClient(tracking_uri=uri).get_metric_history(run.info.run_id, "val_acc"))


def test_events_reach_mlflow_once_in_batches(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = TrackerProcess(uri, "s", objectives=OBJECTIVES)
    try:
        tracker.check_reachable()
        parent = tracker.start_search(space_file=_space(tmp_path), search_params={"trials": 60})
        assert tracker.parent_run_id == parent
        for n in range(60):
            tracker.trial_started(n, {"width": n % 4}, attrs={"family": "snnmlp"})
            for epoch in (1, 2):
                tracker.trial_epoch(n, {"val_acc": 0.1 * epoch + n / 1000, "energy_uj": 5.0}, step=epoch)
            tracker.trial_finished(n, "complete" if n % 3 else "pruned",
                                   final_metrics={"val_acc": 0.2 + n / 1000, "energy_uj": 5.0, "pid": 7,
                                                  "hostname": "node-1"})
        assert tracker.drain() == []
        timings = tracker.timings()
        assert sum(timings["batch_events"]) == 60 * 4
        assert len(timings["batch"]) < 60 * 4  # the queued events were written together, not one call each
        assert tracker.child_run_id(5)
        tracker.finish_search()
    finally:
        tracker.close()
    runs = _trial_runs(uri, "s")
    assert sorted(runs) == list(range(60))
    for n, run in runs.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["nas.state"] == ("complete" if n % 3 else "pruned")
        assert run.data.params["width"] == str(n % 4)
        assert _steps(uri, run) == [1, 2]  # the final metrics repeat epoch 2's value: logged once
        assert "pid" not in run.data.metrics
    parent_run = MlflowClient(tracking_uri=uri).get_run(parent)
    assert parent_run.info.status == "FINISHED"


def test_errors_come_back_as_raised_and_queued_errors_through_drain(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(ValueError, match="search_name is empty"):
        TrackerProcess(uri, "", objectives=OBJECTIVES)  # refused before a process starts
    first = TrackerProcess(uri, "s", objectives=OBJECTIVES)
    first.start_search(space_file=_space(tmp_path), search_params={})
    first.trial_epoch(99, {"val_acc": 0.5}, step=1)  # a trial that never started
    first.trial_started(0, {"width": 1}, attrs={})
    errors = first.drain()
    assert len(errors) == 1 and "trial 99 has no MLflow run" in errors[0]
    first.finish_search()
    assert sorted(_trial_runs(uri, "s")) == [0]  # the writer went on after the bad event
    second = TrackerProcess(uri, "s", objectives=OBJECTIVES)
    try:
        with pytest.raises(NasError, match="already holds this search"):
            second.start_search(space_file=_space(tmp_path), search_params={})
    finally:
        second.close()


def test_a_killed_writer_is_reported_not_waited_for(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = TrackerProcess(uri, "s", objectives=OBJECTIVES)
    tracker.start_search(space_file=_space(tmp_path), search_params={})
    os.kill(tracker._process.pid, signal.SIGKILL)
    tracker._process.wait()
    tracker.trial_started(0, {}, attrs={})  # returns at once
    errors = tracker.drain()
    assert len(errors) == 1 and "writer process stopped" in errors[0] and "nas resume" in errors[0]
    with pytest.raises(WriterStopped):
        tracker.finish_search()


def test_a_dead_controllers_queue_is_still_written(tmp_path: Path) -> None:
    """The controller dies without closing: what reached the writer's pipe is written, then the writer exits."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from nas.tracking import TrackerProcess
        tracker = TrackerProcess({uri!r}, "s", objectives={OBJECTIVES!r})
        tracker.start_search(space_file=Path({str(_space(tmp_path))!r}), search_params={{}})
        for n in range(40):
            tracker.trial_started(n, {{"width": n}}, attrs={{}})
            tracker.trial_epoch(n, {{"val_acc": 0.5, "energy_uj": 1.0}}, step=1)
            tracker.trial_finished(n, "complete")
        while not tracker._pending.empty():
            time.sleep(0.01)
        time.sleep(0.2)  # the feeder thread has handed its last item to the pipe
        print(tracker._process.pid, flush=True)
        os._exit(0)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr
    writer = int(done.stdout.split()[0])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(writer, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the orphaned writer did not exit")
    runs = _trial_runs(uri, "s")
    assert sorted(runs) == list(range(40))
    assert all(run.info.status == "FINISHED" and _steps(uri, run) == [1] for run in runs.values())


def test_resume_logs_the_epochs_mlflow_lacks_from_the_study(tmp_path: Path) -> None:
    """A controller killed with epochs still queued: the study's history fills them in, none twice."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = _space(tmp_path)
    tracker = MlflowTracker(uri, "s", objectives=OBJECTIVES)
    tracker.start_search(space_file=space, search_params={})
    tracker.trial_started(0, {"width": 1}, attrs={})
    tracker.trial_epoch(0, {"val_acc": 0.3, "energy_uj": 2.0}, step=1)  # epochs 2 and 3 never reached MLflow
    tracker.close()  # killed: the run stays RUNNING, trial 1 has no run at all
    history = [{"epoch": e, "val_acc": 0.3 + e / 10, "energy_uj": 2.0} for e in (1, 2, 3)]
    records = [TrialRecord(number=0, state=COMPLETE, params={"width": 1}, values={"val_acc": 0.6, "energy_uj": 2.0},
                           history=history),
               TrialRecord(number=1, state=COMPLETE, params={"width": 2}, values={"val_acc": 0.6, "energy_uj": 2.0},
                           history=history[:2])]
    resumed = MlflowTracker(uri, "s", objectives=OBJECTIVES)
    resumed.start_search(space_file=space, search_params={}, resume=True)
    resumed.search_resumed(records, attrs={})
    resumed.finish_search()
    runs = _trial_runs(uri, "s")
    assert _steps(uri, runs[0]) == [1, 2, 3] and _steps(uri, runs[1]) == [1, 2]
    assert {run.info.status for run in runs.values()} == {"FINISHED"}


def test_batch_chunks_stay_within_mlflows_limits() -> None:
    params = [Param(f"p{i}", "v") for i in range(250)]
    tags = [RunTag(f"t{i}", "v") for i in range(120)]
    metrics = [Metric("m", 1.0, 0, i) for i in range(2500)]
    chunks = list(batch_chunks(params, tags, metrics))
    assert all(len(p) <= MAX_PARAMS and len(t) <= MAX_TAGS and len(p) + len(t) + len(m) <= MAX_ENTITIES
               for p, t, m in chunks)
    assert [x for c in chunks for x in c[0]] == params and [x for c in chunks for x in c[1]] == tags
    assert [x for c in chunks for x in c[2]] == metrics
    assert list(batch_chunks([], [], [])) == []
