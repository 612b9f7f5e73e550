"""What happens while a search runs: Ray Tune's trial events, turned into study extras and listener calls.

Ray Tune calls :func:`ray_callback`'s callback in its event loop; the :class:`Bookkeeper` reads each
event, writes what the study lacks (restarts, the summary, the hypervolume history) and tells the
listeners (MLflow tracking, which queues for its writer process, and the live view) through one
:class:`EventPump` thread, so slow tracking never holds up the trials. The hypervolume history is
computed here once per front update and handed to every listener.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import traceback_line
from nas.results.layout import SPACE_FILE, trial_dir
from nas.results.metrics import METRICS
from nas.results.records import COMPLETE, FAIL, PRUNED, TrialRecord, record_of, records_from_study
from nas.search import store

if TYPE_CHECKING:  # pragma: no cover
    from nas.search.options import PreparedSearch

log = logging.getLogger(__name__)


class EventPump:
    """One background thread that runs listener work in submission order.

    Ray Tune calls callbacks inside its event loop, so slow tracking (MLflow writes, artifact
    refreshes) would hold up every trial's next step. Listeners still see exactly one caller thread,
    in order, so a SQLite-backed MLflow store never has two writers.

    While a slot changes trials (``hold`` at a trial's end, ``release`` when the next one starts, at
    most ``HOLD_LIMIT_S``) the thread waits between items: the handover runs on the event loop, and
    tracking work started then would take turns with it on the interpreter lock.

    The queue holds at most ``QUEUE_LIMIT`` items: when tracking falls that far behind (a slow MLflow
    server, thousands of workers), ``submit`` waits for room instead of letting the backlog, and what a
    crash would lose of it, grow without bound. The study is written before anything is queued: a
    resume ends every trial's MLflow run as the study says and logs the epochs MLflow lacks from the
    trials' histories (``search_resumed``), so nothing still queued when the process died is lost.
    """

    HOLD_LIMIT_S = 0.5
    QUEUE_LIMIT = 10_000
    IDLE_S = 0.25  # how long the queue stays empty before ``on_idle`` runs

    def __init__(self, on_idle: Callable[[], None] | None = None) -> None:
        import queue
        import threading

        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None] = queue.Queue(
            maxsize=self.QUEUE_LIMIT)
        self._on_idle = on_idle
        self.errors: list[str] = []
        self._handovers = 0
        self._held_until = 0.0
        self._thread = threading.Thread(target=self._run, name="nas-bookkeeping", daemon=True)
        self._thread.start()

    def hold(self) -> None:
        """A slot starts changing trials: pause between items until ``release`` (or the limit)."""
        self._handovers += 1
        self._held_until = time.monotonic() + self.HOLD_LIMIT_S

    def release(self) -> None:
        """A new trial started; go on once no other handover is under way."""
        self._handovers = max(0, self._handovers - 1)
        if self._handovers == 0:
            self._held_until = 0.0

    def _run(self) -> None:
        import queue

        while True:
            try:
                item = self._queue.get(timeout=self.IDLE_S)
            except queue.Empty:
                if self._on_idle is not None:
                    self._call(self._on_idle, (), {})
                continue
            if item is None:
                return
            while (wait := self._held_until - time.monotonic()) > 0:
                time.sleep(min(wait, 0.005))
            self._call(*item)

    def _call(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            function(*args, **kwargs)
        except Exception as error:  # tracking trouble must not stop the search; reported at the end
            log.warning("bookkeeping: %s failed: %s", getattr(function, "__name__", function), error)
            self.errors.append(f"{type(error).__name__}: {error}")

    def submit(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``function(*args, **kwargs)``."""
        self._queue.put((function, args, kwargs))

    def close(self) -> None:
        """Run everything queued, then stop the thread."""
        self._held_until = 0.0
        self._queue.put(None)
        self._thread.join()


class Bookkeeper:
    """Ray Tune callback: the single place where trial events reach the study's extras and listeners.

    The front (records of every trial, the summary, the hypervolume history, the listeners' views) is
    updated after trials end, but at most once per ``FRONT_INTERVAL_S`` and never sooner than
    ``FRONT_SHARE`` times as long as the last update took after it, so that at thousands of trials
    the update, which reads the whole study, stays a small share of the controller's time; an update
    held back is made when the queue runs empty, and a forced one (the end of the search) at once.
    """

    FRONT_INTERVAL_S = 1.0
    FRONT_SHARE = 9.0

    def __init__(self, prepared: PreparedSearch, searcher: Any, listeners: Sequence[Any]) -> None:
        self.prepared = prepared
        self.searcher = searcher
        self.listeners = list(listeners)
        self.numbers: dict[str, int] = {}
        self.nodes: dict[int, str] = {}
        self.started: set[int] = set()  # trials listeners heard start
        self.started_at = time.monotonic()
        self._pump = EventPump(on_idle=self._front_if_due)
        self._front_pending = False  # an update is queued
        self._front_wanted = False  # an update was held back by the interval
        self._front_due = 0.0  # monotonic time before which no unforced update runs
        self._finished_records: dict[int, TrialRecord] = {}  # a finished trial's record does not change
        self._metric_names: list[str] | None = None
        from nas.results.pareto import HypervolumeHistory

        self.history = HypervolumeHistory(prepared.objectives)

    def _notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        self._pump.submit(self._notify_now, method, *args, **kwargs)

    def _notify_now(self, method: str, *args: Any, **kwargs: Any) -> None:
        for listener in self.listeners:
            handler = getattr(listener, method, None)
            if handler is not None:
                handler(*args, **kwargs)

    def number_of(self, trial: Any) -> int | None:
        if trial.trial_id not in self.numbers:
            number = (trial.config or {}).get("optuna_number")
            if number is None:
                return None
            self.numbers[trial.trial_id] = int(number)
        return self.numbers[trial.trial_id]

    def _attrs(self) -> dict[str, Any]:
        return {
            "family": None,
            "space_file": Path(self.prepared.space.source_file or SPACE_FILE).name,
            "space_hash": self.prepared.space.source_hash,
            "energy_profile": self.prepared.space.recipe.energy_profile,
            "dataset": self.prepared.dataset,
            "search": self.prepared.name,
        }

    def on_trial_start(self, trial: Any) -> None:
        self._pump.release()
        number = self.number_of(trial)
        if number is None:
            return
        self.started.add(number)
        attrs = {**self._attrs(), **(trial.config.get("proxy") or {})}
        self._notify("trial_started", number, dict(trial.config.get("params", {})), attrs=attrs)

    def trials_interrupted(self, numbers: Sequence[int]) -> None:
        """Tell listeners that these trials were cut off (the searcher has recorded them as interrupted)."""
        for number in numbers:
            if number in self.started:
                self._notify("trial_finished", number, "failed", reason="interrupted")

    def search_resumed(self) -> None:
        """Tell listeners (``search_resumed``) the study as a resume finds it, after interrupted trials were failed.

        A killed controller may have left MLflow behind the study; the tracker settles that from here.
        """
        self._notify("search_resumed", records_from_study(self.prepared.study), attrs=self._attrs())

    def on_trial_result(self, trial: Any, result: dict[str, Any]) -> None:
        number = self.number_of(trial)
        if number is None:
            return
        # What was built and where it ran travel in every result; the searcher stores them in the
        # trial's history and records.py reads them from there, so nothing is written here.
        node = result.get("node_id") or result.get("node_ip") or result.get("hostname")
        if node:
            self.nodes[number] = str(node)
        metrics = {k: float(v) for k, v in result.items()
                   if k in _TRACKED_METRICS and isinstance(v, int | float) and not isinstance(v, bool)}
        if "epoch" in result:
            self._notify("trial_epoch", number, metrics, step=int(result["epoch"]))

    def on_trial_recover(self, trial: Any) -> None:
        """Ray restarts a trial that crashed (e.g. its node died): count it on the same Optuna trial."""
        number = self.number_of(trial)
        if number is None:
            return
        study = self.prepared.study
        frozen = store.frozen_trial(study, number)
        self._set_attr(number, "ray_restarts", int(frozen.user_attrs.get("ray_restarts", 0)) + 1)
        # Wall-clock time, comparable with the kill time of a node in another process (benchmarks).
        self._set_attr(number, "ray_restarted_at", [*frozen.user_attrs.get("ray_restarted_at", []), time.time()])

    def _set_attr(self, number: int, key: str, value: Any) -> None:
        store.set_open_trial_attr(self.prepared.study, number, key, value)

    def on_trial_error(self, trial: Any) -> None:
        if not self.searcher.exhausted:  # another trial will take the slot
            self._pump.hold()
        number = self.number_of(trial)
        reason = error_reason(trial)
        self.searcher.record_failure_reason(trial.trial_id, reason)
        if number is not None:
            self._finish(number, trial)

    def on_trial_complete(self, trial: Any) -> None:
        if not self.searcher.exhausted:  # another trial will take the slot
            self._pump.hold()
        number = self.number_of(trial)
        if number is not None:
            self._finish(number, trial)

    def _finish(self, number: int, trial: Any) -> None:
        # The searcher has told the study by now (Ray calls it before callbacks); reading the outcome
        # back and copying weights happen off the event loop.
        self._pump.submit(self._finish_now, number, getattr(trial, "checkpoint", None), dict(trial.last_result or {}))
        self.update_front(force=False)

    def _finish_now(self, number: int, checkpoint: Any, last_result: dict[str, Any]) -> None:
        frozen = store.frozen_trial(self.prepared.study, number)
        state = frozen.state.name
        if state == COMPLETE:
            _keep_final_weights(checkpoint, trial_dir(self.prepared.search_dir, number))
        label = {COMPLETE: "complete", PRUNED: "pruned", FAIL: "failed"}.get(state, state.lower())
        self._notify_now("trial_finished", number, label, reason=frozen.user_attrs.get("fail_reason"),
                         final_metrics=last_result)

    def update_front(self, *, force: bool) -> None:
        """Recompute the front off Ray's event loop; several completions in a row need one update."""
        if self._front_pending and not force:
            return
        if not force and time.monotonic() < self._front_due:
            self._front_wanted = True  # made when due, by the next completion or the idle pump
            return
        self._front_pending = True
        self._pump.submit(self._update_front_now, force=force)

    def _front_if_due(self) -> None:
        """The pump ran empty: make a held-back front update once it is due."""
        if self._front_wanted and not self._front_pending and time.monotonic() >= self._front_due:
            self._update_front_now(force=False)

    def close(self) -> list[str]:
        """Finish all queued bookkeeping, and wait for listeners that write elsewhere (``drain``, the MLflow
        writer process) to write it; returns the errors met on the way."""
        self._pump.close()
        errors = list(self._pump.errors)
        for listener in self.listeners:
            drain = getattr(listener, "drain", None)
            if drain is not None:
                errors += drain()
        return errors

    def _update_front_now(self, *, force: bool) -> None:
        self._front_pending = False
        self._front_wanted = False
        started = time.monotonic()
        try:
            self._publish_front(force=force)
        finally:
            ended = time.monotonic()
            self._front_due = ended + max(self.FRONT_INTERVAL_S, self.FRONT_SHARE * (ended - started))

    def _records(self, frozen: Sequence[Any]) -> list[TrialRecord]:
        """Every trial's record; a finished trial's is made once and kept."""
        if self._metric_names is None:
            self._metric_names = list(self.prepared.study.metric_names or [])
        records = []
        for trial in frozen:
            record = self._finished_records.get(trial.number)
            if record is None:
                record = record_of(trial, self._metric_names)
                if trial.state.is_finished():
                    self._finished_records[trial.number] = record
            records.append(record)
        return sorted(records, key=lambda r: r.number)

    def _publish_front(self, *, force: bool) -> None:
        from collections import Counter

        from nas.search.summary import SUMMARY_ATTR, search_summary

        frozen = self.prepared.study.get_trials(deepcopy=False)
        records = self._records(frozen)
        # What nas status / nas pareto show, so that they need not read every trial of a large study.
        self.prepared.study.set_user_attr(SUMMARY_ATTR, search_summary(
            records, self.prepared.objectives, Counter(t.state.name for t in frozen)))
        reference = _ensure_reference(self.prepared.study, records, self.prepared.objectives)
        if reference is None:
            return
        values = self.history.update(records, reference)
        if values:
            self.prepared.study.set_user_attr(
                "hypervolume_history", [[n, v] for n, v in zip(self.history.numbers, values, strict=True)])
        self._notify_now("update_front", records, reference=reference, history=values, force=force)


_TRACKED_METRICS = ("epoch", *METRICS)


def error_reason(trial: Any) -> str:
    """One line from a Ray trial's error: the line naming the exception, not the whole traceback."""
    text = ""
    error_file = getattr(trial, "error_file", None)
    if error_file and os.path.isfile(error_file):
        with open(error_file) as handle:
            text = handle.read()
    if not text and getattr(trial, "error_msg", None):
        text = trial.error_msg
    return traceback_line(text)


def _keep_final_weights(checkpoint: Any, folder: Path) -> None:
    """Copy a complete trial's last checkpoint next to the search, where export finds it."""
    if checkpoint is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    with checkpoint.as_directory() as source:
        for item in Path(source).iterdir():
            if item.is_file():
                shutil.copy2(item, folder / item.name)


def _ensure_reference(study: Any, records: list[TrialRecord], objectives: dict[str, str]) -> dict[str, float] | None:
    """The study's fixed hypervolume reference point.

    Set from the space before the first trial (``prepare_search``); an objective the space cannot bound
    (``epoch_seconds``, ``train_loss``) is fixed once from the first complete trials (1.1 x the worst).
    """
    import numpy as np

    from nas.results.pareto import default_reference

    stored = {k: float(v) for k, v in (study.user_attrs.get("reference") or {}).items()}
    if all(name in stored for name in objectives):
        return stored
    complete = [r for r in records if r.state == COMPLETE and r.values]
    if not complete:
        return None
    points = np.array([[r.values[m] for m in objectives] for r in complete], dtype=float)
    reference = {k: float(v) for k, v in default_reference(objectives, points, given=stored).items()}
    study.set_user_attr("reference", reference)
    return reference


def _make_ray_callback_class() -> type:
    from ray import tune

    class RayCallback(tune.Callback):
        """Forwards Ray Tune's events to the bookkeeper, in the controller process."""

        def __init__(self, bookkeeper: Bookkeeper) -> None:
            self.bookkeeper = bookkeeper

        def __getstate__(self) -> dict[str, Any]:
            # Ray pickles the Tuner for Tuner.restore; nas resumes from the study instead, and the
            # bookkeeper holds live connections (MLflow client, the terminal view) that cannot travel.
            return {"bookkeeper": None}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.bookkeeper = state["bookkeeper"]

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if self.bookkeeper is not None:
                self.bookkeeper.on_trial_start(trial)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if self.bookkeeper is not None:
                self.bookkeeper.on_trial_result(trial, result)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if self.bookkeeper is not None:
                self.bookkeeper.on_trial_complete(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if self.bookkeeper is not None:
                self.bookkeeper.on_trial_error(trial)

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if self.bookkeeper is not None:
                self.bookkeeper.on_trial_recover(trial)

    return RayCallback


def ray_callback(bookkeeper: Bookkeeper) -> Any:
    """The Ray Tune callback that hands every trial event to ``bookkeeper`` (Ray is imported on first use)."""
    return _make_ray_callback_class()(bookkeeper)
