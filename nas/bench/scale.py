"""The controller's real bookkeeping at scale, driven by the simulator: where does one controller choke?

:func:`run_scale` replays a search on a learning-curve table with :func:`nas.bench.simulator.simulate`
(K simulated workers, simulated epochs, so the controller is the only thing that takes real time) and
hands every trial event to the controller's own ``Bookkeeper``, exactly as Ray Tune's callbacks do in
``nas launch``: the study lives in a real Optuna RDB storage, every listener (the MLflow tracker in its
writer process, ``nas.tracking.TrackerProcess``) is told from the bookkeeper's background thread, the
front and hypervolume are updated by the same code. Each
step is timed (:class:`StepTimer`): the sampler's own work per ask (:class:`TimedSampler`), the
searcher's ``suggest`` (ask + sample + writes), ``record`` (one epoch into the study), ``tell``, each
listener call (:class:`TimedListener`) and each front update.

A table holds a few hundred architectures, far fewer than a scale run's trials; :class:`DistinctSpace`
gives every proposal one more continuous parameter (``scale_replica``, ignored when looking up the
table entry), so no proposal repeats another and each one is a new trial, as in a large real space.

:func:`check_stores` reads both stores back and lists every event that is missing or there twice.
"""

from __future__ import annotations

import contextlib
import resource
import threading
import time
from collections import defaultdict
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.bench.simulator import SimulationRun, SimulationSettings, simulate
from nas.bench.table_space import TableSpace

REPLICA = "scale_replica"  # the extra continuous parameter that makes every proposal distinct


class _ReplicaSpace:
    """The part of a ``SearchSpace`` the simulator calls: the table's ``suggest`` plus ``scale_replica``."""

    def __init__(self, space: Any) -> None:
        self._space = space

    def suggest(self, trial: Any, data_info: Any = None) -> Any:
        """Sample the table's space, then the replica parameter."""
        config = self._space.suggest(trial)
        trial.suggest_float(REPLICA, 0.0, 1.0)
        return config


class DistinctSpace:
    """A :class:`TableSpace` in which every proposal is a new architecture (see the module docstring)."""

    def __init__(self, base: TableSpace) -> None:
        self.base = base
        self.table = base.table
        self.entries = base.entries
        self.space = _ReplicaSpace(base.space)

    def nearest(self, params: Mapping[str, Any]) -> int:
        """The table entry a proposal stands for (its replica parameter ignored)."""
        return self.base.nearest({k: v for k, v in params.items() if k != REPLICA})

    def identity(self, params: Mapping[str, Any]) -> Hashable:
        """Every parameter, the replica included: two proposals are one architecture only if all are equal."""
        return tuple(sorted(params.items()))

    def untried(self, tried: set[Hashable], rng: Any) -> dict[str, Any] | None:
        """A random table entry with a fresh replica value (never exhausted)."""
        params = self.base.untried(set(), rng)
        if params is None:
            return None
        params[REPLICA] = rng.random()
        return params


class StepTimer:
    """Seconds spent in each named step, one sample per call; safe to use from several threads."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self.samples[step].append(elapsed)

    def add(self, step: str, seconds: float) -> None:
        """Record one sample measured elsewhere."""
        with self._lock:
            self.samples[step].append(seconds)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per step: calls, median, 90th percentile and last-tenth median (ms), and total seconds."""
        import numpy as np

        out: dict[str, dict[str, float]] = {}
        with self._lock:
            items = {k: list(v) for k, v in self.samples.items()}
        for step, values in sorted(items.items()):
            arr = np.asarray(values)
            tail = arr[-max(1, len(arr) // 10):]
            out[step] = {"calls": int(arr.size), "median_ms": 1000 * float(np.median(arr)),
                         "p90_ms": 1000 * float(np.percentile(arr, 90)),
                         "last_tenth_median_ms": 1000 * float(np.median(tail)), "total_s": float(arr.sum())}
        return out


def timed_sampler(sampler: Any, timer: StepTimer) -> Any:
    """``sampler`` wrapped so that its own work per ask (search space + joint sample) and per
    independent parameter is timed as ``sampler.ask`` and ``sampler.param``."""
    from optuna.samplers import BaseSampler

    class TimedSampler(BaseSampler):
        """Delegates everything to the wrapped sampler and times it."""

        def __init__(self) -> None:
            self.inner = sampler
            self._started: float | None = None

        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            self._started = time.perf_counter()
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
            try:
                return self.inner.sample_relative(study, trial, search_space)
            finally:
                if self._started is not None:
                    timer.add("sampler.ask", time.perf_counter() - self._started)
                    self._started = None

        def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
            with timer("sampler.param"):
                return self.inner.sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study: Any, trial: Any) -> None:
            self.inner.before_trial(study, trial)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Sequence[float] | None) -> None:
            self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self.inner.reseed_rng()

    return TimedSampler()


class TimedListener:
    """A controller listener (the MLflow tracker) whose every call is timed as ``listener.<method>``."""

    def __init__(self, listener: Any, timer: StepTimer, label: str = "mlflow") -> None:
        self._listener = listener
        self._timer = timer
        self._label = label

    def __getattr__(self, method: str) -> Any:
        handler = getattr(self._listener, method)
        if not callable(handler):
            return handler

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self._timer(f"{self._label}.{method}"):
                return handler(*args, **kwargs)

        return timed


class _Callbacks:
    """Simulator callbacks -> the controller's ``Bookkeeper``, as ``nas launch``'s Ray callback does it."""

    def __init__(self, prepared: Any, listeners: Sequence[Any], timer: StepTimer) -> None:
        self.prepared = prepared
        self.listeners = list(listeners)
        self.timer = timer
        self.bookkeeper: Any = None
        self.searcher: Any = None

    def on_search_start(self, searcher: Any) -> None:
        from nas.search.events import Bookkeeper

        timer = self.timer

        class TimedBookkeeper(Bookkeeper):
            def _update_front_now(self, *, force: bool) -> None:
                with timer("front"):
                    super()._update_front_now(force=force)

        self.searcher = searcher
        self.bookkeeper = TimedBookkeeper(self.prepared, searcher, self.listeners)

    def on_trial_start(self, trial: Any) -> None:
        self.bookkeeper.on_trial_start(trial)

    def on_trial_result(self, trial: Any, result: dict[str, Any]) -> None:
        self.bookkeeper.on_trial_result(trial, result)

    def on_trial_complete(self, trial: Any) -> None:
        self.bookkeeper.on_trial_complete(trial)

    def on_trial_error(self, trial: Any) -> None:
        self.bookkeeper.on_trial_error(trial)

    def close(self) -> list[str]:
        """What ``run_search`` does when Ray Tune returns: interrupt open trials, a forced front, drain."""
        self.bookkeeper.trials_interrupted(self.searcher.interrupt_open_trials())
        self.bookkeeper.update_front(force=True)
        return self.bookkeeper.close()


@dataclass
class ScaleRun:
    """What one scale run measured."""

    simulation: SimulationRun
    seconds: float  # wall time of the whole run, the bookkeeping thread drained
    controller_seconds: float  # wall time until the simulator returned (the event loop's share)
    events: int  # trial starts + results + ends handled
    steps: dict[str, dict[str, float]]
    peak_rss_mb: float
    errors: list[str] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        """Trial events per second, the bookkeeping thread drained."""
        return self.events / self.seconds if self.seconds > 0 else float("inf")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def prepare_scale_search(space: TableSpace, *, root: Path, name: str, storage_url: str, tracking_uri: str,
                         trials: int, workers: int) -> Any:
    """Create the study (as ``nas launch`` does), the run folder a CLI can read, and a ``PreparedSearch``."""
    from nas._urls import mask_url
    from nas.results.layout import SPACE_FILE
    from nas.search import runs, store
    from nas.search.options import PreparedSearch, SearchOptions
    from nas.search.prepare import create_study

    table = space.table
    search_dir = Path(root) / name
    search_dir.mkdir(parents=True, exist_ok=True)
    (search_dir / SPACE_FILE).write_text(table.space_source)
    real_space = space.space
    storage = store.open_storage(storage_url)
    study = create_study(storage, name, real_space, table.epochs, trials, dict(table.reference))
    options = SearchOptions(space=str(search_dir / SPACE_FILE), name=name, trials=trials, epochs=table.epochs,
                            concurrency=workers, root=str(root), storage=storage_url, tracking_uri=tracking_uri,
                            yes=True)
    runs.write_options(search_dir, {
        "name": name, "space": options.space, "trials": trials, "epochs": table.epochs,
        "storage": mask_url(storage_url), "tracking_uri": mask_url(tracking_uri),
        "objectives": dict(table.objectives), "concurrency": workers,
    })
    return PreparedSearch(options=options, space=real_space, name=name, root=Path(root), search_dir=search_dir,
                          storage_url=storage_url, tracking_uri=tracking_uri, study=study, trials=trials,
                          epochs=table.epochs, dataset=real_space.dataset, concurrency=workers,
                          cpus_per_trial=1.0, ray_address=None)


def run_scale(space: TableSpace, prepared: Any, settings: SimulationSettings, listeners: Sequence[Any] = (),
              timer: StepTimer | None = None, history: int | None = None) -> ScaleRun:
    """Replay ``settings`` (workers, ``max_trials``) on ``space`` through the controller's bookkeeping.

    ``prepared`` comes from :func:`prepare_scale_search`; ``listeners`` are told every event (wrap them
    in :class:`TimedListener` to time them). The study's sampler is set here from ``settings`` (and
    ``history``, see ``make_sampler``) and timed.
    """
    from nas.search.searcher import make_sampler

    timer = timer or StepTimer()
    study = prepared.study
    study.sampler = timed_sampler(make_sampler(settings.sampler, seed=settings.seed, history=history), timer)
    callbacks = _Callbacks(prepared, listeners, timer)
    started = time.perf_counter()
    simulation = simulate(DistinctSpace(space), settings, study=study, callbacks=callbacks, timer=timer,  # type: ignore[arg-type]
                          true_hypervolume=0.0)
    controller_seconds = time.perf_counter() - started
    errors = callbacks.close()
    seconds = time.perf_counter() - started
    events = sum(2 + t.epochs for t in simulation.trials)
    return ScaleRun(simulation=simulation, seconds=seconds, controller_seconds=controller_seconds, events=events,
                    steps=timer.summary(), peak_rss_mb=peak_rss_mb(), errors=errors)


_MLFLOW_STATE = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}


def check_stores(study: Any, tracking_uri: str, name: str, simulation: SimulationRun, *,
                 metric_sample: int | None = None, seed: int = 0) -> list[str]:
    """Every way the stores differ from what the simulation did: missing, doubled or wrong events.

    Study: each simulated trial once, in its state, with one history row per epoch it reported, and no
    other trial left RUNNING. MLflow: one child run per trial, ended in its state, with ``val_acc`` at
    every reported epoch exactly once (checked on all runs, or on ``metric_sample`` of them). Empty
    when both stores hold every event exactly once.
    """
    import random

    from mlflow import MlflowClient

    from nas.results.records import records_from_study

    problems: list[str] = []
    simulated = {t.number: t for t in simulation.trials}
    if len(simulated) != len(simulation.trials):
        problems.append("the simulation ran some trial number twice")
    records = {r.number: r for r in records_from_study(study)}
    for number, trial in simulated.items():
        record = records.get(number)
        if record is None:
            problems.append(f"study: trial {number} missing")
            continue
        if record.state != trial.state:
            problems.append(f"study: trial {number} is {record.state}, the simulation ended it {trial.state}")
        epochs = [row.get("epoch") for row in record.history]
        if epochs not in _expected_epochs(trial):
            problems.append(f"study: trial {number} history epochs {epochs}, expected 1..{trial.epochs}")
    running = [n for n, r in records.items() if r.state == "RUNNING"]
    if running:
        problems.append(f"study: {len(running)} trial(s) left RUNNING: {running[:10]}")

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return [*problems, f"mlflow: no experiment {name!r}"]
    runs: dict[int, list[Any]] = defaultdict(list)
    token = None
    while True:
        page = client.search_runs([experiment.experiment_id], filter_string="tags.`nas.role` = 'trial'",
                                  max_results=1000, page_token=token)
        for run in page:
            runs[int(run.data.tags["nas.trial_number"])].append(run)
        token = page.token
        if not token:
            break
    for number in sorted(set(runs) - set(simulated)):
        problems.append(f"mlflow: run for trial {number}, which the simulation never started")
    numbers = sorted(simulated)
    checked = set(numbers if metric_sample is None or metric_sample >= len(numbers)
                  else random.Random(seed).sample(numbers, metric_sample))
    for number in numbers:
        found = runs.get(number, [])
        if len(found) != 1:
            problems.append(f"mlflow: trial {number} has {len(found)} runs")
            continue
        run = found[0]
        trial = simulated[number]
        want = _MLFLOW_STATE[trial.state]
        if run.data.tags.get("nas.state") != want:
            problems.append(f"mlflow: trial {number} tagged {run.data.tags.get('nas.state')!r}, expected {want!r}")
        if run.info.status == "RUNNING":
            problems.append(f"mlflow: trial {number} run still RUNNING")
        if number in checked:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
            # the final metrics are logged again at the last step (same value) so MLflow shows them as latest
            if sorted(set(steps)) not in _expected_epochs(trial) or len(steps) - len(set(steps)) > 1:
                problems.append(f"mlflow: trial {number} val_acc steps {steps}, expected 1..{trial.epochs} once each")
    return problems


def _expected_epochs(trial: Any) -> list[list[int]]:
    """The epochs a trial reported: all it ran, or for one that raised, all but the one that raised."""
    ran = list(range(1, trial.epochs + 1))
    return [ran, ran[:-1]] if trial.state == "FAIL" else [ran]

