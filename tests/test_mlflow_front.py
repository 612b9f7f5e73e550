"""What MLflow holds for browsing a front: nas metric names only, light refreshes, saved views, the experiment kind."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow import MlflowClient
from test_tracking_support import OBJECTIVES, REFERENCE

from nas.results.metrics import METRICS
from nas.results.records import TrialRecord
from nas.tracking import CHART_VIEW, EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, FRONT_VIEW, SHARED_VIEW_TAG, MlflowTracker


def _tracker(tmp_path: Path, name: str = "front") -> MlflowTracker:
    space = tmp_path / "space.py"
    space.write_text("# a space\n")
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", name, objectives=OBJECTIVES, refresh_seconds=3600)
    tracker.start_search(space_file=space, search_params={})
    return tracker


def test_child_runs_hold_only_nas_metrics_and_the_front_is_light_until_the_end(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)
    client = MlflowClient(tracker.tracking_uri)
    tracker.trial_started(0, {"width": 16, "depth": 2}, attrs={})
    tracker.trial_epoch(0, {"val_acc": 0.9, "energy_uj": 2.0}, step=1)
    ray_result = {"val_acc": 0.9, "energy_uj": 2.0, "epoch": 1, "pid": 4242, "timestamp": 1.7e9,
                  "time_total_s": 3.5, "training_iteration": 1, "attempt_started_at": 1.7e9, "done": True}
    tracker.trial_finished(0, "complete", final_metrics=ray_result)
    child = client.get_run(tracker._children[0])
    assert set(child.data.metrics) == {"val_acc", "energy_uj"} and set(child.data.metrics) <= set(METRICS)
    record = TrialRecord(number=0, state="COMPLETE", params={"width": 16, "depth": 2},
                         values={"val_acc": 0.9, "energy_uj": 2.0})
    tracker.update_front([record], reference=REFERENCE, history=[1.0])  # a throttled refresh
    names = {a.path for a in client.list_artifacts(tracker.parent_run_id)}
    assert {"pareto.png", "pareto.csv"} <= names and not names & {"pareto.html", "hypervolume.html"}
    tracker.finish_search()  # the held-back interactive pages are written once, at the end
    names = {a.path for a in client.list_artifacts(tracker.parent_run_id)}
    assert {"pareto.html", "hypervolume.html"} <= names


def test_the_saved_views_show_the_front_and_the_objectives_chart(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)
    tracker.trial_started(0, {"width": 16, "depth": 2}, attrs={})
    experiment = MlflowClient(tracker.tracking_uri).get_experiment(tracker.experiment_id)
    front = json.loads(experiment.tags[SHARED_VIEW_TAG + FRONT_VIEW])
    assert front["searchFilter"] == "tags.pareto = 'true'"
    assert front["orderByKey"] == "metrics.`val_acc`" and front["orderByAsc"] is False
    assert front["selectedColumns"] == ["metrics.`val_acc`", "metrics.`energy_uj`", "params.`depth`", "params.`width`"]
    chart = json.loads(experiment.tags[SHARED_VIEW_TAG + CHART_VIEW])["compareRunCharts"][0]
    assert (chart["type"], chart["xaxis"]["key"], chart["yaxis"]["key"]) == ("SCATTER", "energy_uj", "val_acc")
    note = experiment.tags["mlflow.note.content"]
    assert f"viewStateShareKey={FRONT_VIEW}" in note and f"viewStateShareKey={CHART_VIEW}" in note
    assert "workflowType=machine_learning" in note
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_an_experiment_made_without_its_kind_gets_it_on_resume(tmp_path: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("old", artifact_location=(tmp_path / "mlartifacts" / "old").as_uri())
    space = tmp_path / "space.py"
    space.write_text("# a space\n")
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "old", objectives=OBJECTIVES)
    tracker.start_search(space_file=space, search_params={}, resume=True)
    assert client.get_experiment_by_name("old").tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
