"""The simulator's measuring hooks and the scale driver that runs the controller's bookkeeping on them."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from test_bench import _rows, _toy_table

from nas.bench import SimulationSettings, TableEntry, TableSpace, load_table, resolve_table, simulate
from nas.bench.scale import (
    REPLICA,
    DistinctSpace,
    StepTimer,
    TimedListener,
    check_stores,
    prepare_scale_search,
    run_scale,
)
from nas.bench.table import DIVERGED, FAILED
from nas.tracking import TrackerProcess


def _toy() -> TableSpace:
    return TableSpace(_toy_table([
        TableEntry(0, {"arch": "a"}, _rows([0.5, 0.6, 0.7], 1.0, 10.0)),
        TableEntry(1, {"arch": "b"}, _rows([0.8, 0.85, 0.9], 2.0, 20.0)),
        TableEntry(2, {"arch": "c"}, _rows([0.3, 0.4, 0.45], 3.0, 5.0)),
        TableEntry(3, {"arch": "d"}, [], status=FAILED, reason="RuntimeError: cannot build d"),
        TableEntry(4, {"arch": "e"}, _rows([0.6], 1.5, 7.0), status=DIVERGED, reason="loss became nan"),
    ]))


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.searcher: Any = None

    def on_search_start(self, searcher: Any) -> None:
        self.searcher = searcher

    def on_trial_start(self, trial: Any) -> None:
        assert "optuna_number" in trial.config
        self.events.append(("start", trial.trial_id))

    def on_trial_result(self, trial: Any, result: dict[str, Any]) -> None:
        self.events.append(("result", trial.trial_id))

    def on_trial_complete(self, trial: Any) -> None:
        assert trial.last_result
        self.events.append(("complete", trial.trial_id))

    def on_trial_error(self, trial: Any) -> None:
        self.events.append(("error", trial.trial_id))


def test_hooks_change_nothing_and_hear_every_event_in_rays_order() -> None:
    space = _toy()
    settings = SimulationSettings(sampler="random", scheduler="moasha", workers=2, budget=1e6, seed=3)
    plain = simulate(space, settings)
    recorder, timer = _Recorder(), StepTimer()
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=3))
    hooked = simulate(space, settings, study=study, callbacks=recorder, timer=timer)
    assert [(t.entry, t.state, t.epochs, t.ended) for t in hooked.trials] == \
        [(t.entry, t.state, t.epochs, t.ended) for t in plain.trials]
    assert recorder.searcher is not None
    per_trial: dict[str, list[str]] = {}
    for kind, trial_id in recorder.events:
        per_trial.setdefault(trial_id, []).append(kind)
    assert len(per_trial) == len(hooked.trials)
    for kinds in per_trial.values():  # start, one result per epoch reported, then exactly one end
        assert kinds[0] == "start" and kinds[-1] in ("complete", "error")
        assert Counter(kinds)["complete"] + Counter(kinds)["error"] == 1
    assert {"suggest", "scheduler", "record", "tell", "callbacks"} <= set(timer.summary())


def test_distinct_space_never_repeats_and_maps_to_the_table() -> None:
    space = DistinctSpace(_toy())
    params = {"arch": "b", REPLICA: 0.25}
    assert space.nearest(params) == 1
    assert space.identity(params) != space.identity({**params, REPLICA: 0.5})
    import random

    drawn = space.untried({space.identity(params)}, random.Random(0))
    assert drawn is not None and REPLICA in drawn


def test_timed_listener_times_and_forwards() -> None:
    calls = []

    class Listener:
        def trial_epoch(self, number: int, metrics: dict, step: int) -> None:
            calls.append((number, step))

    timer = StepTimer()
    TimedListener(Listener(), timer).trial_epoch(3, {}, step=2)
    assert calls == [(3, 2)] and timer.summary()["mlflow.trial_epoch"]["calls"] == 1


@contextlib.contextmanager
def _scale_run(tmp_path: Path, space: TableSpace, *, workers: int, trials: int,
               scheduler: str = "moasha") -> Iterator[tuple[Any, Any, str]]:
    storage_url = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prepared = prepare_scale_search(space, root=tmp_path / "runs", name="scale", storage_url=storage_url,
                                    tracking_uri=tracking_uri, trials=trials, workers=workers)
    tracker = TrackerProcess(tracking_uri, "scale", objectives=dict(space.table.objectives))
    try:
        tracker.start_search(space_file=prepared.search_dir / "space.py", search_params={})
        timer = StepTimer()
        settings = SimulationSettings(sampler="random", scheduler=scheduler, workers=workers, budget=float("inf"),
                                      max_trials=trials, seed=0)
        run = run_scale(space, prepared, settings, listeners=[TimedListener(tracker, timer)], timer=timer)
        tracker.finish_search()
    finally:
        tracker.close()
    yield prepared, run, tracking_uri


def test_scale_run_puts_every_event_in_both_stores_once(tmp_path: Path) -> None:
    with _scale_run(tmp_path, _toy(), workers=3, trials=12) as (prepared, run, tracking_uri):
        assert len(run.simulation.trials) == 12 and not run.errors
        assert {t.state for t in run.simulation.trials} >= {"COMPLETE", "FAIL"}
        assert check_stores(prepared.study, tracking_uri, "scale", run.simulation) == []
        assert run.events == sum(2 + t.epochs for t in run.simulation.trials)
        assert {"sampler.ask", "suggest", "tell", "front", "mlflow.trial_started", "mlflow.trial_finished"} \
            <= set(run.steps)
        # A run logged twice is found.
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_experiment_by_name("scale")
        client.create_run(experiment.experiment_id, tags={"nas.role": "trial", "nas.trial_number": "0"})
        problems = check_stores(prepared.study, tracking_uri, "scale", run.simulation)
        assert problems == ["mlflow: trial 0 has 2 runs"]


@pytest.mark.slow  # about a minute on 2 cores
def test_scale_run_100_workers_2000_trials_sqlite(tmp_path: Path) -> None:
    """The issue's small scale run: every event in the study and in MLflow exactly once."""
    space = TableSpace(load_table(resolve_table("snnmlp")))
    with _scale_run(tmp_path, space, workers=100, trials=2000) as (prepared, run, tracking_uri):
        assert len(run.simulation.trials) == 2000 and not run.errors
        assert check_stores(prepared.study, tracking_uri, "scale", run.simulation) == []
