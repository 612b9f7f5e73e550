"""The MLflow bookkeeping of one search (``MlflowTracker``); the layout is described in ``nas.tracking``."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.dashboards.renderer import FrontRenderer
from nas.errors import NasError
from nas.results.layout import ARTIFACTS_DIR
from nas.results.metrics import METRICS
from nas.results.records import COMPLETE, FAIL, INTERRUPTED, PRUNED, TrialRecord, count_trials
from nas.tracking._batch import RunWrites, batch_chunks
from nas.tracking._common import file_sha256, log_pytorch_model, mask_secrets, masked_first_line, sqlite_path
from nas.tracking._probe import probe_http
from nas.tracking._views import CHART_VIEW, FRONT_VIEW, SHARED_VIEW_TAG, runs_views, view_link

if TYPE_CHECKING:  # pragma: no cover
    import numpy
    import torch
    from mlflow import MlflowClient

# MLflow's own HTTP retries during a search (its default, 7 retries with backoff 2, stalls the controller for
# minutes).
HTTP_MAX_RETRIES = "3"
HTTP_TIMEOUT_S = "30"

# Tells the MLflow 3 UI the experiment is model training, so it opens on the runs table, not on GenAI traces.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

_PARAM_VALUE_MAX = 6000  # MLflow 3 limit on a param value
_TAG_VALUE_MAX = 8000
REFRESH_SHARE = 9  # a front refresh waits at least this many times as long as the last one took

# How each outcome (nas.results.records.OUTCOMES) shows in MLflow: the tag nas.state and the run status.
# A pruned trial ended as planned (the scheduler stopped it early), so it is FINISHED, not a red cross;
# only failures are FAILED, and interrupted trials (they run again on resume) KILLED.
_STATES = {
    "complete": ("complete", "FINISHED"),
    "pruned": ("pruned", "FINISHED"),
    "failed": ("failed", "FAILED"),
    "fail": ("failed", "FAILED"),
}



def _as_text(value: Any, limit: int) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, Mapping | list | tuple):
        text = json.dumps(value, default=str, sort_keys=isinstance(value, Mapping))
    else:
        text = str(value)
    text = mask_secrets(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)



class MlflowTracker:
    """MLflow bookkeeping of one search, driven by the controller.

    ``tracking_uri``: ``sqlite:///<abs path>`` (default store in the run folder) or an MLflow
    server URL. ``objectives``: {name: "max" | "min"} in the study's order. ``artifact_location``:
    where the experiment's artifacts go when it is created (default for a SQLite store:
    ``<store folder>/mlartifacts/<search name>``; a server's own default otherwise).
    """

    def __init__(
        self,
        tracking_uri: str,
        search_name: str,
        *,
        objectives: dict[str, str],
        artifact_location: str | None = None,
        refresh_seconds: float = 10.0,
    ) -> None:
        if not search_name:
            raise ValueError("search_name is empty")
        if not objectives:
            raise ValueError("objectives is empty")
        for name, direction in objectives.items():
            if direction not in ("max", "min"):
                raise ValueError(f"objective {name!r} has direction {direction!r}, expected 'max' or 'min'")
        if refresh_seconds < 0:
            raise ValueError(f"refresh_seconds must be >= 0, got {refresh_seconds}")
        self.tracking_uri = tracking_uri
        self.search_name = search_name
        self.objectives = dict(objectives)
        self.refresh_seconds = float(refresh_seconds)
        db = sqlite_path(tracking_uri)
        if artifact_location is None and db is not None:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", search_name)
            artifact_location = (db.parent / ARTIFACTS_DIR / safe).resolve().as_uri()
        self.artifact_location = artifact_location
        if self._is_http:
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_MAX_RETRIES)
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_S)
        self._client_obj: MlflowClient | None = None
        self._lock = threading.RLock()
        self._renderer = FrontRenderer()
        self._experiment_id: str | None = None
        self._parent_run_id: str | None = None
        self._space_name: str | None = None
        self._space_hash: str | None = None
        self._children: dict[int, str] = {}  # trial number -> child run id
        self._open_children: set[int] = set()  # started by this tracker and not finished yet
        self._left_running: set[int] = set()  # children a killed controller left RUNNING (seen on resume)
        self._last_step: dict[int, int] = {}
        self._last_values: dict[int, dict[str, float]] = {}  # what was logged at a trial's last step
        self._front_tags: dict[int, tuple[str, str]] = {}  # what the store holds: (pareto, pareto_rank)
        self._last_count: int | None = None
        self._last_refresh = -math.inf
        self._refresh_cost = 0.0  # seconds the last refresh (rank tags and artifacts) took
        self._pending: tuple[list[TrialRecord], dict[str, float], list[float]] | None = None
        self._reference_logged: dict[str, float] | None = None
        self._view_params: list[str] | None = None  # architecture params the saved views show
        self._writes: RunWrites | None = None  # run writes held back while batched() is open

    # ------------------------------------------------------------ properties
    @property
    def parent_run_id(self) -> str:
        """Run id of the search's parent run (after ``start_search``)."""
        if self._parent_run_id is None:
            raise RuntimeError("MlflowTracker.start_search() has not been called")
        return self._parent_run_id

    @property
    def experiment_id(self) -> str:
        """Id of the search's MLflow experiment (after ``start_search``)."""
        if self._experiment_id is None:
            raise RuntimeError("MlflowTracker.start_search() has not been called")
        return self._experiment_id

    @property
    def _is_http(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))

    @property
    def _client(self) -> MlflowClient:
        if self._client_obj is None:
            from mlflow import MlflowClient

            self._client_obj = MlflowClient(tracking_uri=self.tracking_uri)
            if sqlite_path(self.tracking_uri) is not None:
                # Every epoch of every trial is a commit; with SQLite's default journal each commit
                # waits for its fsyncs (20-30 ms per write here), the same trade-off as the study's.
                from nas._sqlite import write_ahead_log

                write_ahead_log(self._client_obj._tracking_client.store.engine)
        return self._client_obj

    # ------------------------------------------------------------ batching
    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """Hold back the run writes (params, tags, metrics, end states) of the calls made inside and write
        them on leaving, one ``log_batch`` per run where MLflow's limits allow: a trial's start, epochs
        and end made inside cost one write instead of four or five. Written also when a call raises."""
        with self._lock:
            if self._writes is not None:  # nested: the outermost block writes
                yield
                return
            self._writes = RunWrites()
            try:
                yield
            finally:
                self._flush_writes()
                self._writes = None

    def _log(self, run_id: str, *, params: Iterable[Any] = (), tags: Iterable[Any] = (),
             metrics: Iterable[Any] = ()) -> None:
        """One run write, now or held back by ``batched``."""
        if self._writes is not None:
            self._writes.log(run_id, params=params, tags=tags, metrics=metrics)
            return
        for chunk in batch_chunks(list(params), list(tags), list(metrics)):
            self._client.log_batch(run_id, params=chunk[0], tags=chunk[1], metrics=chunk[2])

    def _end(self, run_id: str, status: str) -> None:
        """End a run, now or after the writes ``batched`` holds back."""
        if self._writes is not None:
            self._writes.end(run_id, status)
        else:
            self._client.set_terminated(run_id, status=status)

    def _flush_writes(self) -> None:
        """Write what ``batched`` holds so far: before a call that reads a run back or reopens it."""
        if self._writes:
            self._writes.flush(self._client)

    # ------------------------------------------------------------ reachability
    def check_reachable(self) -> None:
        """Raise ``NasError`` (one line) when the tracking store cannot be used; bounded to a few seconds."""
        where = mask_secrets(self.tracking_uri)
        if self._is_http:
            probe_http(self.tracking_uri, self.search_name)
            return
        db = sqlite_path(self.tracking_uri)
        if db is not None and not db.parent.is_dir():
            raise NasError(f"--tracking-uri {where}: folder {db.parent} does not exist")
        try:
            self._client.search_experiments(max_results=1)
        except Exception as error:  # store back ends raise unrelated exception types
            raise NasError(f"--tracking-uri {where} cannot be opened: {masked_first_line(error)}") from None

    # ------------------------------------------------------------ search
    def start_search(self, *, space_file: Path, search_params: dict[str, Any], resume: bool = False) -> str:
        """Open the experiment and the parent run; returns the parent run id.

        A new search refuses an experiment that already holds a parent run of that name; ``resume``
        re-opens that run (and creates it if tracking was off before). Params already logged keep
        their first value; a changed value on resume is recorded as a ``nas.resumed.<key>`` tag.
        """
        from mlflow.entities import Param, RunTag

        space_file = Path(space_file)
        if not space_file.is_file():
            raise NasError(f"space file {space_file} does not exist")
        with self._lock:
            client = self._client
            self._space_name = space_file.name
            self._space_hash = file_sha256(space_file)
            experiment = client.get_experiment_by_name(self.search_name)
            if experiment is not None and experiment.lifecycle_stage == "deleted":
                raise NasError(
                    f"MLflow experiment {self.search_name!r} is deleted but not purged; restore it in MLflow "
                    "or choose another --name"
                )
            if experiment is None:
                self._experiment_id = client.create_experiment(
                    self.search_name,
                    artifact_location=self.artifact_location,
                    # marks the experiment as model training (not GenAI) for the MLflow UI
                    tags={"nas.search": self.search_name, "mlflow.note.content": self._note(),
                          EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
                )
            else:
                self._experiment_id = experiment.experiment_id
                if EXPERIMENT_KIND_TAG not in experiment.tags:  # made by an older nas: opened on GenAI traces
                    client.set_experiment_tag(self._experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            parents = self._search(f"tags.`nas.role` = 'search' and tags.`nas.search` = '{self._quoted_name}'")
            if parents and not resume:
                raise NasError(
                    f"MLflow experiment {self.search_name!r} already holds this search "
                    f"(run {parents[0].info.run_id}); resume it or choose another --name"
                )
            params = {"space_file": self._space_name, "space_sha256": self._space_hash}
            params.update({k: v for k, v in search_params.items() if v is not None})
            params["objectives"] = self.objectives
            text_params = {k: _as_text(v, _PARAM_VALUE_MAX) for k, v in params.items()}
            tags = [RunTag("nas.search", self.search_name), RunTag("nas.role", "search"),
                    RunTag("nas.objectives", json.dumps(self.objectives)), RunTag("nas.space_sha256", self._space_hash)]
            if parents:
                parent = parents[0]
                self._parent_run_id = parent.info.run_id
                client.update_run(self._parent_run_id, status="RUNNING")
                old = parent.data.params
                tags += [RunTag(f"nas.resumed.{k}", v[:_TAG_VALUE_MAX]) for k, v in text_params.items()
                         if k in old and old[k] != v]
                text_params = {k: v for k, v in text_params.items() if k not in old}
                self._load_children()
            else:
                run = client.create_run(self._experiment_id, run_name=self.search_name,
                                        tags={"nas.search": self.search_name, "nas.role": "search",
                                              "mlflow.note.content": self._note(links=True)})
                self._parent_run_id = run.info.run_id
            self._log(self._parent_run_id, params=[Param(k, v) for k, v in text_params.items()], tags=tags)
            client.log_artifact(self._parent_run_id, str(space_file))
            self._publish_views([])
            return self._parent_run_id

    def finish_search(self, status: str = "FINISHED") -> None:
        """Write any artifact refresh that the throttle held back, end still-open child runs
        (``interrupted``) and end the parent run with ``status``. Nothing to do before ``start_search``
        created the parent run."""
        if status not in ("FINISHED", "FAILED", "KILLED"):
            raise ValueError(f"status must be FINISHED, FAILED or KILLED, got {status!r}")
        with self._lock:
            if self._parent_run_id is None:
                self._renderer.close()
                return
            parent = self._parent_run_id
            if self._pending is not None:
                records, reference, history = self._pending
                self._last_refresh = -math.inf  # the held-back refresh is due now
                self.update_front(records, reference=reference, history=history, force=True)
            for number in sorted(self._open_children):
                self.trial_finished(number, "failed", reason=INTERRUPTED)
            self._client.set_terminated(parent, status=status)
            self._renderer.close()

    def close(self) -> None:
        """Stop the helper that draws the front, without ending the search's runs (``finish_search`` does both)."""
        self._renderer.close()

    # ------------------------------------------------------------ trials
    def trial_started(self, number: int, params: dict[str, Any], *, attrs: dict[str, Any]) -> str:
        """Open (or re-open, for a retried trial) the child run ``trial-<number>``; returns its run id."""
        from mlflow.entities import Param, RunTag

        with self._lock:
            client = self._client
            attrs = dict(attrs)
            attrs.setdefault("space_file", self._space_name)
            attrs.setdefault("space_hash", self._space_hash)
            run_id = self._child_run_id(number)
            tags = {"nas.state": "running", "nas.trial_number": str(number)}
            tags.update({f"nas.{k}": _as_text(v, _TAG_VALUE_MAX) for k, v in attrs.items() if v is not None})
            values = {str(k): _as_text(v, _PARAM_VALUE_MAX) for k, v in params.items()}
            values.update({f"nas.{k}": _as_text(v, _PARAM_VALUE_MAX) for k, v in attrs.items() if v is not None})
            if run_id is None:
                run = client.create_run(
                    self.experiment_id,
                    run_name=f"trial-{number}",
                    tags={
                        "mlflow.parentRunId": self.parent_run_id,
                        "nas.role": "trial",
                        "nas.search": self.search_name,
                        "nas.trial_number": str(number),
                    },
                )
                run_id = run.info.run_id
                self._children[number] = run_id
            else:
                # A retried trial keeps its run; params are immutable in MLflow, so only new ones go in.
                self._flush_writes()
                old = client.get_run(run_id).data.params
                values = {k: v for k, v in values.items() if k not in old}
                client.update_run(run_id, status="RUNNING")
            self._log(run_id, params=[Param(k, v) for k, v in values.items()],
                      tags=[RunTag(k, v) for k, v in tags.items()])
            self._open_children.add(number)
            self._publish_views([str(k) for k in params])
            return run_id

    def search_resumed(self, records: list[TrialRecord], *, attrs: dict[str, Any]) -> None:
        """On resume, end the child runs of trials the study finished while a killed controller ran them.

        The controller writes the study first and MLflow after, so a controller killed in between
        leaves a child run RUNNING (or, for a trial Ray never started, none) although the study holds
        the trial as COMPLETE, PRUNED or FAIL (``interrupted``). Each such run is ended as the study
        says, so every trial of the study has one run in the same state, with every epoch the study holds
        (the epochs MLflow had not written yet are logged from the trial's history). Duplicates (never
        trained) have none.
        """
        for record in records:
            if record.state not in (COMPLETE, PRUNED, FAIL):
                continue
            missing = self._child_run_id(record.number) is None
            if not missing and record.number not in self._left_running:
                continue
            if missing:
                run_id = self.trial_started(record.number, record.params, attrs=attrs)
                logged = 0
            else:
                run_id = self._require_child(record.number)
                logged = self._stored_last_step(run_id)
            # The study is the journal: epochs that were still queued for MLflow when it stopped are in
            # the trial's history; each one MLflow lacks is logged at its epoch, none twice.
            for row in record.history:
                step = row.get("epoch")
                if isinstance(step, int | float) and int(step) > logged:
                    self._log_epoch(record.number, run_id, row, int(step))
            final = record.history[-1] if record.history else None
            self.trial_finished(record.number, record.state, reason=record.fail_reason, final_metrics=final)
            self._left_running.discard(record.number)

    def trial_epoch(self, number: int, metrics: dict[str, float], step: int) -> None:
        """Log one epoch's metrics (numeric entries only; ``epoch`` is the step, not a metric)."""
        with self._lock:
            self._log_epoch(number, self._require_child(number), metrics, step)

    def _log_epoch(self, number: int, run_id: str, metrics: Mapping[str, Any], step: int) -> None:
        self._log_metrics(run_id, metrics, step)
        if step >= self._last_step.get(number, step):
            self._last_step[number] = step
            self._last_values[number] = {k: float(v) for k, v in metrics.items() if _is_number(v)}

    def trial_finished(
        self, number: int, state: str, *, reason: str | None = None, final_metrics: dict | None = None
    ) -> None:
        """Record how a trial ended: ``complete`` (FINISHED), ``pruned`` (FINISHED) or ``failed`` (FAILED).

        Optuna's state names (COMPLETE, PRUNED, FAIL) are accepted too. A failed trial whose reason is
        ``interrupted`` (cut off by Ctrl-C, SIGTERM, the time budget or a killed controller; it runs
        again on resume) is recorded as ``interrupted`` (KILLED). ``final_metrics`` are logged at the
        trial's last step so MLflow shows them as the run's latest values (those equal to what that
        step logged already are not logged twice).
        """
        from mlflow.entities import RunTag

        key = state.lower()
        if key not in _STATES:
            raise ValueError(f"trial state {state!r} is not one of complete, pruned, failed")
        tag_state, run_status = _STATES[key]
        if run_status == "FAILED" and reason == INTERRUPTED:
            tag_state, run_status = INTERRUPTED, "KILLED"
        with self._lock:
            run_id = self._require_child(number)
            tags = [RunTag("nas.state", tag_state)]
            if reason:
                tags.append(RunTag("nas.fail_reason", _as_text(reason, _TAG_VALUE_MAX)))
            metrics = []
            if final_metrics:
                step = self._last_step.get(number)
                if step is None:
                    step = self._stored_last_step(run_id)
                known = self._last_values.get(number, {}) if step == self._last_step.get(number) else {}
                metrics = _metric_items({k: v for k, v in final_metrics.items()
                                         if not (_is_number(v) and known.get(k) == float(v))}, step)
            self._log(run_id, metrics=metrics, tags=tags)  # one write: SQLite commits are the cost
            self._end(run_id, run_status)
            self._open_children.discard(number)
            self._last_values.pop(number, None)

    # ------------------------------------------------------------ the front
    def update_front(self, records: list[TrialRecord], *, reference: dict[str, float], history: list[float],
                     force: bool = False) -> None:
        """Recompute the front from ``records`` (every trial of the study) and publish it.

        ``history`` is the controller's hypervolume after each complete feasible trial (completion order).

        Tags are written only where they change: ``pareto`` (true / false) at once, together with
        ``pareto_rank`` for a trial that joins or leaves the front or is tagged for the first time;
        rank shifts of the other trials with the artifact refresh. Parent metrics are logged when
        the number of complete trials changed (or ``force``); artifacts are rewritten at most every
        ``refresh_seconds`` (and at least ``REFRESH_SHARE`` times as long as the last refresh took) unless
        ``force`` (a held-back refresh, ranks included, is written by
        ``finish_search``).
        """
        from mlflow.entities import Metric, RunTag

        from nas.results.pareto import normalised_hypervolume, ranks_of

        names = list(self.objectives)
        missing = [n for n in names if n not in reference]
        if missing:
            raise ValueError(f"reference has no value for objective(s) {missing}")
        with self._lock:
            ranks = ranks_of(records, self.objectives)
            complete = [r for r in records if r.state == COMPLETE]
            started = time.monotonic()
            # A refresh rewrites every shifted rank and redraws every trial: at thousands of trials it takes
            # seconds, so it waits REFRESH_SHARE x as long as the last one took and stays a small share of
            # the tracker's time (bench_scale: 6 s every 10 s at 1,300 trials had MLflow 700 trials behind).
            interval = max(self.refresh_seconds, REFRESH_SHARE * self._refresh_cost) if self.refresh_seconds else 0.0
            refresh = force or started - self._last_refresh >= interval
            for r in complete:
                rank = ranks.get(r.number)
                run_id = self._children.get(r.number)
                if run_id is None:
                    continue  # a trial this search never tracked
                old_on, old_rank = self._front_tags.get(r.number, (None, None))
                on = "true" if rank == 0 else "false"
                # One new trial can shift the rank of hundreds of others: membership is written at
                # once, the other ranks with the (throttled) artifact refresh, so a completion costs
                # a few writes and not one per trial of the study.
                new_rank = "infeasible" if rank is None else str(rank)
                if old_rank is not None and not refresh and on == old_on:
                    new_rank = old_rank
                if (on, new_rank) == (old_on, old_rank):
                    continue
                tags = [RunTag("pareto", on)] if on != old_on else []
                if new_rank != old_rank:
                    tags.append(RunTag("pareto_rank", new_rank))
                self._log(run_id, tags=tags)
                self._front_tags[r.number] = (on, new_rank)

            count = len(complete)
            if reference != self._reference_logged:
                self._log(self.parent_run_id, tags=[RunTag(f"nas.reference.{n}", repr(float(reference[n])))
                                                    for n in names])
                self._reference_logged = dict(reference)
            if force or count != self._last_count:
                volume = history[-1] if history else 0.0
                normalised = normalised_hypervolume(volume, self.objectives, reference)
                now = int(time.time() * 1000)
                values = {
                    "hypervolume_raw": volume,
                    "front_size": float(sum(1 for k in ranks.values() if k == 0)),
                    **{f"trials_{k}": float(v) for k, v in count_trials(records).as_dict().items()
                       if k not in ("running", "waiting")},
                }
                accs = [v for v in (_metric_of(r, "val_acc") for r in complete) if v is not None]
                energies = [v for v in (_metric_of(r, "energy_uj") for r in complete) if v is not None]
                if normalised is not None:
                    values["hypervolume"] = normalised
                if accs:
                    values["best_val_acc"] = max(accs)
                if energies:
                    values["min_energy_uj"] = min(energies)
                self._log(self.parent_run_id, metrics=[Metric(k, float(v), now, count) for k, v in values.items()])
                self._last_count = count

            if refresh:
                self._refresh_artifacts(records, dict(reference), ranks, list(history), interactive=force)
                self._refresh_cost = time.monotonic() - started
            else:
                self._pending = (list(records), dict(reference), list(history))

    def _refresh_artifacts(self, records: list[TrialRecord], reference: dict[str, float], ranks: dict[int, int],
                           history: list[float], *, interactive: bool) -> None:
        """Publish the front's files. A throttled refresh writes the light ones (pareto.png, pareto.csv); the
        interactive pages, each carrying plotly (~4.6 MB), only a forced one, so a search uploads plotly a
        few times in all rather than once per refresh. Until then the refresh counts as held back."""
        with tempfile.TemporaryDirectory(prefix="nas-artifacts-") as tmp:
            self._renderer.write(
                records,
                objectives=self.objectives,
                reference=reference,
                folder=tmp,
                title=f"{self.search_name}: Pareto front",
                ranks=ranks,
                history=history,
                interactive=interactive,
            )
            self._client.log_artifacts(self.parent_run_id, tmp)
        self._last_refresh = time.monotonic()
        self._pending = None if interactive else (list(records), dict(reference), list(history))

    # ------------------------------------------------------------ models
    def log_trial_model(self, number: int, model: torch.nn.Module, input_example: numpy.ndarray) -> None:
        """Log a trial's trained network on its child run (for ``nas export``).

        Pickle serialisation (whole module; the spiking layers' state does not go through
        ``torch.export``), an explicit pip requirement list (skips MLflow's slow inference of it)
        and an input example (MLflow 3 asks for one). The model URI is tagged ``nas.model_uri``.
        """
        with self._lock:
            self._flush_writes()
            log_model_on_run(self._client, self.tracking_uri, self._require_child(number), model, input_example)

    def child_run_id(self, number: int) -> str:
        """The run id of trial ``number``'s child run (``ValueError`` if it has none)."""
        with self._lock:
            return self._require_child(number)

    # ------------------------------------------------------------ helpers
    @property
    def _quoted_name(self) -> str:
        if "'" in self.search_name:
            raise NasError(f"search name {self.search_name!r} contains a quote, which MLflow filters cannot hold")
        return self.search_name

    def _note(self, *, links: bool = False) -> str:
        """The markdown description of the experiment and of the parent run (``links``: to the saved views)."""
        objectives = ", ".join(f"{n} ({d})" for n, d in self.objectives.items())
        text = (
            f"nas search **{self.search_name}** ({objectives}). The parent run holds the Pareto front "
            "(artifacts pareto.png, pareto.csv, pareto.html, hypervolume.html); child runs are tagged "
            "pareto=true/false and nas.state (complete, pruned, failed, interrupted)."
        )
        if links:
            names = list(self.objectives)
            text += (f"\n\n[The Pareto front's runs, best {names[0]} first]"
                     f"({view_link(self.experiment_id, FRONT_VIEW)})")
            if len(names) >= 2:
                text += (f" · [{names[0]} against {names[1]}, every complete trial]"
                         f"({view_link(self.experiment_id, CHART_VIEW)})")
        return text

    def _publish_views(self, param_names: list[str]) -> None:
        """Write the saved views (``runs_views``) and the experiment's description that links them; again when
        a trial brings architecture params the views do not show yet."""
        if self._view_params is not None and set(param_names) <= set(self._view_params):
            return
        self._view_params = sorted(set(param_names) | set(self._view_params or []))
        for key, view in runs_views(self.objectives, self._view_params).items():
            self._client.set_experiment_tag(self.experiment_id, SHARED_VIEW_TAG + key, json.dumps(view))
        self._client.set_experiment_tag(self.experiment_id, "mlflow.note.content", self._note(links=True))

    def _search(self, filter_string: str) -> list[Any]:
        runs: list[Any] = []
        token = None
        while True:
            page = self._client.search_runs([self.experiment_id], filter_string=filter_string, max_results=1000,
                                            page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def _load_children(self) -> None:
        """Fill the trial-number -> run cache (and the stored front tags) from the store."""
        for run in self._search(f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'"):
            tags = run.data.tags
            if "nas.trial_number" not in tags:
                continue
            number = int(tags["nas.trial_number"])
            self._children.setdefault(number, run.info.run_id)
            if run.info.status == "RUNNING":
                self._left_running.add(number)
            if "pareto" in tags and "pareto_rank" in tags:
                self._front_tags[number] = (tags["pareto"], tags["pareto_rank"])

    def _child_run_id(self, number: int) -> str | None:
        # Complete after start_search: a new parent has no children, a resumed one had them all
        # looked up by tag there, and every child created since went through this cache.
        if self._parent_run_id is None:
            raise RuntimeError("MlflowTracker.start_search() has not been called")
        return self._children.get(number)

    def _require_child(self, number: int) -> str:
        run_id = self._child_run_id(number)
        if run_id is None:
            raise ValueError(f"trial {number} has no MLflow run: call trial_started() first")
        return run_id

    def _stored_last_step(self, run_id: str) -> int:
        self._flush_writes()
        run = self._client.get_run(run_id)
        if not run.data.metrics:
            return 0
        history = self._client.get_metric_history(run_id, next(iter(run.data.metrics)))
        return max((m.step for m in history), default=0)

    def _log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int) -> None:
        items = _metric_items(metrics, step)
        if items:
            self._log(run_id, metrics=items)



def log_model_on_run(client: MlflowClient, tracking_uri: str, run_id: str, model: torch.nn.Module,
                     input_example: numpy.ndarray) -> None:
    """Log a trained network as the MLflow model ``model`` of run ``run_id`` and tag the run ``nas.model_uri``."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(tracking_uri):
        model_uri = log_pytorch_model(client, run_id, model, input_example, name="model")
    client.set_tag(run_id, "nas.model_uri", model_uri)


def _metric_items(metrics: Mapping[str, Any], step: int) -> list[Any]:
    """MLflow metrics of the numeric entries named in ``METRICS`` (Ray's own result keys such as ``pid`` or
    ``timestamp`` are left out; ``epoch`` is the step, not a metric)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(str(k), float(v), now, int(step)) for k, v in metrics.items() if _is_number(v) and k in METRICS]


def _metric_of(record: TrialRecord, name: str) -> float | None:
    if record.values is not None and name in record.values:
        return float(record.values[name])
    value = record.last_metrics.get(name)
    return float(value) if _is_number(value) else None
