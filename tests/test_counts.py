"""One truth for trial counts: the study, ``nas status``, ``nas report``, MLflow and the live view agree.

A synthetic search (tests/test_tracking_support.py) with complete, pruned, failed, interrupted, duplicate
and dropped trials, written the way the controller writes them; no Ray.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient
from test_tracking_support import OBJECTIVES, REFERENCE, SyntheticSearch, run_synthetic_search

from nas.cli import main
from nas.results.pareto import HypervolumeHistory
from nas.results.records import OUTCOMES, TrialCounts, count_trials, outcome_of
from nas.search.progress import LiveView
from nas.search.runs import open_search, read_options
from nas.search.summary import status_row

# trial 2 is pruned and trial 5 fails (run_synthetic_search); 7 repeats trial 0; 8 is cut off by a stop;
# the proxy rung dropped 11
EXPECTED = TrialCounts(complete=7, pruned=1, failed=1, interrupted=1, duplicate=1, dropped=1)


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSearch:
    root = tmp_path_factory.mktemp("runs")
    return run_synthetic_search(root, "counts", trials=12, refresh_seconds=3600, duplicates=(7,), interrupted=(8,),
                                dropped=(11,))


def test_the_study_counts_each_outcome_once(search: SyntheticSearch) -> None:
    records = search.records
    assert count_trials(records) == EXPECTED
    assert EXPECTED.done == 9  # complete + pruned + failed: what the budget counts
    assert {outcome_of(r) for r in records} <= set(OUTCOMES)
    assert EXPECTED.text() == ("7 complete, 1 pruned, 1 failed, 1 interrupted (run again), "
                               "1 duplicate (not trained), 1 dropped by the proxy rung (not trained)")


def test_status_shows_the_same_counts(search: SyntheticSearch, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    summary = open_search(search.root, search.name).summary
    row = status_row(search.name, summary, read_options(search.root / search.name))
    assert {k: row[k] for k in ("complete", "pruned", "failed", "interrupted", "duplicate", "dropped", "running")} == {
        k: v for k, v in EXPECTED.as_dict().items() if k != "waiting"}
    monkeypatch.setenv("COLUMNS", "260")  # wide enough for every column as a table
    assert main(["status", search.name, "--root", str(search.root)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "complete" in line and "pruned" in line)
    body = next(line for line in out.splitlines() if search.name in line and "complete" not in line)
    cells = dict(zip([c.strip() for c in re.split(r"[┃│|]", header)], [c.strip() for c in re.split(r"[┃│|]", body)],
                     strict=False))
    assert tuple(cells[k] for k in ("complete", "pruned", "failed", "interrupted", "duplicate", "dropped")) == (
        "7", "1", "1", "1", "1", "1")


def test_the_report_shows_the_same_counts(search: SyntheticSearch, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", search.name, "--root", str(search.root), "--out", str(tmp_path)]) == 0
    html = (tmp_path / f"{search.name}.html").read_text()
    counts = re.search(r'<p class="meta" id="counts">([^<]*)', html).group(1)
    assert counts.startswith(f"9 trials done ({EXPECTED.text()})")


def test_mlflow_shows_the_same_counts_and_pruned_runs_are_not_failures(search: SyntheticSearch) -> None:
    client = MlflowClient(search.tracking_uri)
    metrics = client.get_run(search.tracker.parent_run_id).data.metrics
    outcomes = ("complete", "pruned", "failed", "interrupted", "duplicate", "dropped")
    assert {k: int(metrics[f"trials_{k}"]) for k in outcomes} == {
        k: v for k, v in EXPECTED.as_dict().items() if k not in ("running", "waiting")}
    runs = client.search_runs([search.tracker.experiment_id], "tags.`nas.role` = 'trial'", max_results=100)
    by_state: dict[str, list[str]] = {}
    for run in runs:
        by_state.setdefault(run.data.tags["nas.state"], []).append(run.info.status)
    # one run per trial that trained (a duplicate never did); a pruned run ended as planned: FINISHED
    assert {k: len(v) for k, v in by_state.items()} == {"complete": 7, "pruned": 1, "failed": 1, "interrupted": 1}
    assert set(by_state["pruned"]) == {"FINISHED"} and set(by_state["complete"]) == {"FINISHED"}
    assert by_state["failed"] == ["FAILED"] and by_state["interrupted"] == ["KILLED"]


def test_the_live_view_shows_the_same_counts(search: SyntheticSearch) -> None:
    view = LiveView(search.name, total_trials=12, objectives=OBJECTIVES, stream=io.StringIO(), live=False)
    records = search.records
    view.update_front(records, reference=REFERENCE, history=HypervolumeHistory(OBJECTIVES).update(records, REFERENCE))
    assert view.counts == {"complete": 7, "pruned": 1, "failed": 1}
    assert view.done == EXPECTED.done
