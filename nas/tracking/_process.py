"""MLflow tracking in a process of its own (``TrackerProcess``): the controller queues events and goes on.

An ``MlflowTracker`` in the controller shares its interpreter lock with the event loop that asks the
sampler and writes the study: at thousands of trials MLflow's writes took as much of the controller as
the search itself (``benchmarks/bench_scale.py``). Here the tracker lives in one child process (still
one writer, so a SQLite store never sees two) fed by a bounded queue:

- trial events (``trial_started``, ``trial_epoch``, ``trial_finished``, ``update_front``,
  ``search_resumed``) are queued and return at once; when the writer falls ``QUEUE_LIMIT`` events
  behind, queuing waits for room instead of growing memory;
- the writer takes everything queued (up to ``BATCH_LIMIT`` events) and writes it inside
  ``MlflowTracker.batched``: one ``log_batch`` per run for all of its params, tags and metrics, so the
  further it falls behind, the fewer calls each event costs; of several front updates queued together
  only the newest is drawn;
- the other calls (``check_reachable``, ``start_search``, ``finish_search``, ``child_run_id``,
  ``drain``) wait for the writer's answer, which comes after everything queued before them; their
  errors are raised in the controller as they were raised in the writer.

Nothing is lost on a crash: the study is written before an event is queued, and a resume
(``search_resumed``) writes what MLflow lacks from the study, every epoch included. A writer whose
controller died writes what already reached its queue and exits.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._python import helper_env
from nas.errors import NasError
from nas.results.records import RUNNING, WAITING, TrialRecord
from nas.tracking._tracker import MlflowTracker, _is_number, log_model_on_run

if TYPE_CHECKING:  # pragma: no cover
    import numpy
    import torch

QUEUE_LIMIT = 10_000
BATCH_LIMIT = 1_000
_POLL_S = 1.0  # how often a waiting controller checks that the writer is still alive

_EVENT, _CALL, _STOP = "event", "call", "stop"
_FRONT = "update_front"


class WriterStopped(NasError):
    """The MLflow writer process is gone (killed, out of memory): its queue cannot be written any more."""


class TrackerProcess:
    """``MlflowTracker``'s interface, with the tracker running in a child process (see the module docstring).

    Arguments are ``MlflowTracker``'s and are checked here, before the process starts.
    """

    def __init__(self, tracking_uri: str, search_name: str, *, objectives: dict[str, str],
                 artifact_location: str | None = None, refresh_seconds: float = 10.0) -> None:
        settings = {"tracking_uri": tracking_uri, "search_name": search_name, "objectives": dict(objectives),
                    "artifact_location": artifact_location, "refresh_seconds": refresh_seconds}
        checked = MlflowTracker(**settings)  # raises on bad arguments; opens nothing
        self.tracking_uri = tracking_uri
        self.search_name = search_name
        self.objectives = dict(objectives)
        self.artifact_location = checked.artifact_location
        self.errors: list[str] = []  # errors of queued events, gathered by drain()
        self._parent_run_id: str | None = None
        self._sent_final: set[int] = set()  # trials whose finished record the writer holds
        self._calls = itertools.count()
        self._pending: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=QUEUE_LIMIT)
        self._process, self._requests, self._replies = _start_writer(settings)
        self._feeder = threading.Thread(target=self._feed, name="nas-mlflow-feeder", daemon=True)
        self._feeder.start()
        self._stopped = False

    # ------------------------------------------------------------ calls that wait for the writer
    def check_reachable(self) -> None:
        """``MlflowTracker.check_reachable`` in the writer."""
        self._call("check_reachable")

    def start_search(self, *, space_file: Path, search_params: dict[str, Any], resume: bool = False) -> str:
        """``MlflowTracker.start_search`` in the writer; returns the parent run id."""
        self._parent_run_id = self._call("start_search", space_file=Path(space_file), search_params=search_params,
                                         resume=resume)
        return self._parent_run_id

    @property
    def parent_run_id(self) -> str:
        """Run id of the search's parent run (after ``start_search``)."""
        if self._parent_run_id is None:
            raise RuntimeError("TrackerProcess.start_search() has not been called")
        return self._parent_run_id

    def child_run_id(self, number: int) -> str:
        """The run id of trial ``number``'s child run, once everything queued before is written."""
        return self._call("child_run_id", number)

    def timings(self) -> dict[str, list[float]]:
        """Seconds of each batch the writer wrote (``batch``) and its number of events (``batch_events``)."""
        return self._call("_timings")

    def drain(self) -> list[str]:
        """Wait until everything queued so far is written; returns (and forgets) the errors it met."""
        if not self._stopped:
            try:
                self.errors += self._call("_drain")
            except WriterStopped:
                self._note_stopped()
        errors, self.errors = self.errors, []
        return errors

    def finish_search(self, status: str = "FINISHED") -> None:
        """``MlflowTracker.finish_search`` in the writer, then stop the writer. A stopped writer is left alone."""
        if self._stopped:
            return
        try:
            self._call("finish_search", status)
        finally:
            self.close()

    def log_trial_model(self, number: int, model: torch.nn.Module, input_example: numpy.ndarray) -> None:
        """Log a trial's trained network on its child run (from this process: the model need not travel)."""
        from mlflow import MlflowClient

        run_id = self.child_run_id(number)
        log_model_on_run(MlflowClient(tracking_uri=self.tracking_uri), self.tracking_uri, run_id, model,
                         input_example)

    def close(self) -> None:
        """Stop the writer after it wrote everything queued (without ending the search's runs)."""
        if self._stopped:
            return
        self._stopped = True
        self._put((_STOP,))
        self._pending.put(None)
        self._feeder.join()
        self._requests.close()  # end of input: the writer exits once it has written what it read
        try:
            self._process.wait(timeout=600)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._replies.close()

    # ------------------------------------------------------------ trial events (queued)
    def trial_started(self, number: int, params: dict[str, Any], *, attrs: dict[str, Any]) -> None:
        """Queue ``MlflowTracker.trial_started``."""
        self._post("trial_started", number, dict(params), attrs=dict(attrs))

    def trial_epoch(self, number: int, metrics: dict[str, float], step: int) -> None:
        """Queue ``MlflowTracker.trial_epoch``."""
        self._post("trial_epoch", number, dict(metrics), step)

    def trial_finished(self, number: int, state: str, *, reason: str | None = None,
                       final_metrics: Mapping[str, Any] | None = None) -> None:
        """Queue ``MlflowTracker.trial_finished`` (only the numeric final metrics travel)."""
        numbers = {k: v for k, v in (final_metrics or {}).items() if _is_number(v)}
        self._post("trial_finished", number, state, reason=reason, final_metrics=numbers or None)

    def search_resumed(self, records: list[TrialRecord], *, attrs: dict[str, Any]) -> None:
        """Queue ``MlflowTracker.search_resumed``."""
        self._post("search_resumed", list(records), attrs=dict(attrs))

    def update_front(self, records: list[TrialRecord], *, reference: dict[str, float], history: list[float],
                     force: bool = False) -> None:
        """Queue ``MlflowTracker.update_front``; only the records the writer does not hold yet travel
        (a finished trial's record does not change, so each one is sent once)."""
        changed = [r for r in records if r.number not in self._sent_final]
        self._sent_final.update(r.number for r in changed if r.state not in (RUNNING, WAITING))
        self._post(_FRONT, changed, reference=dict(reference), history=list(history), force=force)

    # ------------------------------------------------------------ plumbing
    def _alive(self) -> bool:
        return self._process.poll() is None

    def _post(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self._stopped:
            return
        if not self._alive():
            self._note_stopped()
            return
        self._put((_EVENT, method, args, kwargs))

    def _put(self, item: tuple[Any, ...]) -> None:
        """Queue ``item`` for the feeder thread; waits for room while the writer lives."""
        while True:
            try:
                self._pending.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                if not self._alive():
                    self._note_stopped()
                    return

    def _feed(self) -> None:
        """The feeder thread: send queued items down the pipe in order (a full pipe makes it wait)."""
        while (item := self._pending.get()) is not None:
            try:
                self._requests.send(item)
            except (OSError, ValueError):  # the writer is gone; _put and _call notice it
                return

    def _note_stopped(self) -> None:
        message = (f"the MLflow writer process stopped (exit code {self._process.returncode}); the study has every "
                   "event, and nas resume brings MLflow up to date")
        if message not in self.errors:
            self.errors.append(message)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._stopped:
            raise RuntimeError(f"TrackerProcess.{method}: the writer was closed")
        number = next(self._calls)
        self._put((_CALL, number, method, args, kwargs))
        while True:
            if not self._replies.poll(_POLL_S):
                if not self._alive():
                    raise WriterStopped(f"the MLflow writer process stopped (exit code {self._process.returncode}) "
                                        f"before answering {method}")
                continue
            try:
                answer, ok, value = self._replies.recv()
            except EOFError:
                self._process.wait()
                raise WriterStopped(f"the MLflow writer process stopped (exit code {self._process.returncode}) "
                                    f"before answering {method}") from None
            if answer != number:
                continue  # the answer to a call whose caller gave up (an interrupted wait)
            if ok:
                return value
            kind, message = value
            raise _ERRORS.get(kind, RuntimeError)(message if kind in _ERRORS else f"{kind}: {message}")


def _start_writer(settings: dict[str, Any]) -> tuple[subprocess.Popen[bytes], Connection, Connection]:
    """Start the writer (``serve`` in a new interpreter) with two pipes of its own (requests in, replies out).

    A fresh interpreter rather than ``multiprocessing``'s spawn, which would run the caller's main script
    again in the child; the pipes are ``multiprocessing.connection`` ends (pickled messages).
    """
    request_read, request_write = os.pipe()
    reply_read, reply_write = os.pipe()
    try:
        process = subprocess.Popen([sys.executable, "-c", _WRITER_MAIN, str(request_read), str(reply_write)],
                                   pass_fds=(request_read, reply_write), env=helper_env(), stdin=subprocess.DEVNULL)
    finally:
        os.close(request_read)
        os.close(reply_write)
    requests, replies = Connection(request_write, readable=False), Connection(reply_read, writable=False)
    requests.send(settings)
    return process, requests, replies


_ERRORS: dict[str, type[Exception]] = {"NasError": NasError, "ValueError": ValueError, "RuntimeError": RuntimeError}


_WRITER_MAIN = ("import sys; from multiprocessing.connection import Connection; "
                "from nas.tracking._process import serve; "
                "serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))")


def serve(requests: Connection, replies: Connection) -> None:
    """The writer process: apply queued events in batches and answer calls, until told to stop or orphaned
    (end of input: the controller closed its end or died)."""
    # Ctrl-C and SIGTERM reach the whole process group; the controller decides when the writer stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from nas._quiet import quiet_libraries

    quiet_libraries()  # the writer's errors reach the controller through drain()
    writer = _Writer(MlflowTracker(**requests.recv()))
    try:
        while (item := _receive(requests)) is not None and item[0] != _STOP:
            batch = [item]
            while batch[-1][0] == _EVENT and len(batch) < BATCH_LIMIT and requests.poll(0):
                if (item := _receive(requests)) is None:
                    break
                batch.append(item)
            tail = batch.pop() if batch[-1][0] != _EVENT else None
            writer.apply(batch)
            if tail is None:
                continue
            if tail[0] == _STOP:
                return
            _, number, method, args, kwargs = tail
            try:
                replies.send((number, True, writer.call(method, *args, **kwargs)))
            except Exception as error:  # sent back to the caller as it was raised
                replies.send((number, False, (type(error).__name__, str(error))))
    finally:
        writer.close()


def _receive(requests: Connection) -> tuple[Any, ...] | None:
    """The next item; ``None`` at end of input."""
    try:
        return requests.recv()
    except EOFError:
        return None


class _Writer:
    """The writer process's side: the tracker, the trial records of the front, the errors and timings."""

    def __init__(self, tracker: MlflowTracker) -> None:
        self.tracker = tracker
        self.records: dict[int, TrialRecord] = {}
        self.errors: list[str] = []
        self.timings: dict[str, list[float]] = defaultdict(list)

    def apply(self, events: list[tuple[Any, ...]]) -> None:
        """Write a batch of queued events; the newest front update of the batch is drawn after the rest."""
        if not events:
            return
        started = time.perf_counter()
        front: dict[str, Any] | None = None
        try:
            with self.tracker.batched():
                for _, method, args, kwargs in events:
                    if method == _FRONT:
                        self.records.update((r.number, r) for r in args[0])
                        force = bool(kwargs["force"] or (front and front["force"]))
                        front = {**kwargs, "force": force}
                        continue
                    self._guarded(method, *args, **kwargs)
                if front is not None:
                    records = [self.records[n] for n in sorted(self.records)]
                    self._guarded(_FRONT, records, **front)
        except Exception as error:  # the batch's writes (batched() writes them on leaving)
            self.errors.append(f"{type(error).__name__}: {error}")
        self.timings["batch"].append(time.perf_counter() - started)
        self.timings["batch_events"].append(float(len(events)))

    def _guarded(self, method: str, *args: Any, **kwargs: Any) -> None:
        try:
            getattr(self.tracker, method)(*args, **kwargs)
        except Exception as error:  # one event's trouble must not stop the others; reported by drain()
            self.errors.append(f"{method}: {type(error).__name__}: {error}")

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Answer a call: the tracker's method, or the writer's own ``_drain`` / ``_timings``."""
        if method == "_drain":
            errors, self.errors = self.errors, []
            return errors
        if method == "_timings":
            return {k: list(v) for k, v in self.timings.items()}
        return getattr(self.tracker, method)(*args, **kwargs)

    def close(self) -> None:
        """Stop the tracker's helper."""
        self.tracker.close()
