"""Everything MLflow: one experiment and one parent run per search, one child run per trial.

The controller owns one ``MlflowTracker`` and calls it from its own process only, so a SQLite
tracking store never sees concurrent writers (Ray workers never talk to MLflow). Layout:

- experiment = the search name (tag ``nas.search``); parent run named after the search with tags
  ``nas.search=<name>``, ``nas.role=search``; search options as params (passwords masked);
  the space file as an artifact.
- child run ``trial-<n>`` per Optuna trial number: tags ``mlflow.parentRunId``, ``nas.role=trial``,
  ``nas.trial_number``, ``nas.state`` (running / complete / pruned / failed / interrupted, ``nas.fail_reason``),
  ``pareto`` (true / false) and ``pareto_rank`` on complete trials; run status FINISHED for complete and
  pruned trials, FAILED for failed ones, KILLED for interrupted ones; the architecture params as
  params, the trial's attributes (family, space file and hash, energy profile, counting policy,
  ...) as ``nas.<key>`` params and tags; per-epoch metrics under the project's metric names.
- parent metrics stepped by the number of complete trials: ``hypervolume`` (normalised to the
  reference box, 0..1), ``hypervolume_raw``, ``front_size``, ``best_val_acc``, ``min_energy_uj``,
  ``trials_complete`` / ``_pruned`` / ``_failed`` / ``_interrupted`` / ``_duplicate`` / ``_dropped`` (``count_trials``,
  the numbers ``nas status`` and ``nas report`` show); the reference point as ``nas.reference.<objective>``
  tags on the parent run; artifacts
  ``pareto.png`` and ``pareto.csv`` refreshed at most every ``refresh_seconds``, the interactive
  ``pareto.html`` and ``hypervolume.html`` (plotly inlined) when the front is published with ``force``
  and at the end; drawn in a helper process (``nas.dashboards.renderer``).

Only ``mlflow.MlflowClient`` is used (no fluent active-run state), so two searches in one process
never see each other's runs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._serve import LocalServer, ServerHandle, check_port_free
from nas._urls import mask_urls_in
from nas.dashboards.renderer import FrontRenderer
from nas.errors import NasError, first_line
from nas.results.layout import MLFLOW_DB, default_tracking_uri
from nas.results.metrics import METRICS
from nas.results.records import COMPLETE, FAIL, INTERRUPTED, PRUNED, TrialRecord, count_trials

if TYPE_CHECKING:  # pragma: no cover
    import numpy
    import torch
    from mlflow import MlflowClient

# How long a tracking server may take to answer the reachability probe, and MLflow's own HTTP
# retries during a search (its default, 7 retries with backoff 2, stalls the controller for minutes).
PROBE_TIMEOUT_S = 5.0
HTTP_MAX_RETRIES = "3"
HTTP_TIMEOUT_S = "30"

# Tells the MLflow 3 UI the experiment is model training, so it opens on the runs table, not on GenAI traces.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
FRONT_FILTER = "tags.pareto = 'true'"  # the MLflow search filter of a search's front members
COMPLETE_FILTER = "tags.`nas.state` = 'complete'"
# Saved views of the runs table (shared views of MLflow's UI), linked from the experiment's description.
FRONT_VIEW = "nas-front"
CHART_VIEW = "nas-chart"
SHARED_VIEW_TAG = "mlflow.sharedViewState."

_PARAM_VALUE_MAX = 6000  # MLflow 3 limit on a param value
_TAG_VALUE_MAX = 8000
_BATCH_PARAMS = 100  # log_batch accepts at most 100 params per call
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


def mask_secrets(text: str) -> str:
    """``text`` with the password of any URL in it replaced by ``***`` (see ``nas._urls``)."""
    return mask_urls_in(text)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (identifies the exact space file a trial was sampled from)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    return None


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
        db = _sqlite_path(tracking_uri)
        if artifact_location is None and db is not None:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", search_name)
            artifact_location = (db.parent / "mlartifacts" / safe).resolve().as_uri()
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
        self._front_tags: dict[int, tuple[str, str]] = {}  # what the store holds: (pareto, pareto_rank)
        self._last_count: int | None = None
        self._last_refresh = -math.inf
        self._refresh_cost = 0.0  # seconds the last refresh (rank tags and artifacts) took
        self._pending: tuple[list[TrialRecord], dict[str, float], list[float]] | None = None
        self._reference_logged: dict[str, float] | None = None
        self._view_params: list[str] | None = None  # architecture params the saved views show

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
            if _sqlite_path(self.tracking_uri) is not None:
                # Every epoch of every trial is a commit; with SQLite's default journal each commit
                # waits for its fsyncs (20-30 ms per write here), the same trade-off as the study's.
                from nas.search.store import write_ahead_log

                write_ahead_log(self._client_obj._tracking_client.store.engine)
        return self._client_obj

    # ------------------------------------------------------------ reachability
    def check_reachable(self) -> None:
        """Raise ``NasError`` (one line) when the tracking store cannot be used; bounded to a few seconds."""
        where = mask_secrets(self.tracking_uri)
        if self._is_http:
            self._probe_http()
            return
        db = _sqlite_path(self.tracking_uri)
        if db is not None and not db.parent.is_dir():
            raise NasError(f"--tracking-uri {where}: folder {db.parent} does not exist")
        try:
            self._client.search_experiments(max_results=1)
        except Exception as error:  # store back ends raise unrelated exception types
            raise NasError(f"--tracking-uri {where} cannot be opened: {_first_line(error)}") from None

    def _probe_http(self) -> None:
        where = mask_secrets(self.tracking_uri)
        query = urllib.parse.urlencode({"experiment_name": self.search_name})
        try:
            base, headers = _split_credentials(self.tracking_uri)
        except ValueError as error:  # e.g. a port out of range
            raise NasError(f"--tracking-uri {where} is malformed ({error})") from None
        url = base.rstrip("/") + "/api/2.0/mlflow/experiments/get-by-name?" + query
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
                response.read(1)
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                raise NasError(
                    f"MLflow tracking server {where} refused access (HTTP {error.code}); "
                    "set MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD"
                ) from None
            if error.code == 404 and b"RESOURCE_DOES_NOT_EXIST" in error.read():
                return  # the server answered: the experiment does not exist yet
            raise NasError(
                f"{where} does not look like an MLflow tracking server (HTTP {error.code} on the REST API)"
            ) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise NasError(
                f"MLflow tracking server {where} does not answer ({reason}); start it or fix --tracking-uri"
            ) from None

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
            items = [Param(k, v) for k, v in text_params.items()]
            for i in range(0, max(len(items), 1), _BATCH_PARAMS):
                client.log_batch(self._parent_run_id, params=items[i : i + _BATCH_PARAMS],
                                 tags=tags if i == 0 else ())
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
                old = client.get_run(run_id).data.params
                values = {k: v for k, v in values.items() if k not in old}
                client.update_run(run_id, status="RUNNING")
            items = [Param(k, v) for k, v in values.items()]
            for i in range(0, max(len(items), 1), _BATCH_PARAMS):
                client.log_batch(run_id, params=items[i : i + _BATCH_PARAMS],
                                 tags=[RunTag(k, v) for k, v in tags.items()] if i == 0 else ())
            self._open_children.add(number)
            self._publish_views([str(k) for k in params])
            return run_id

    def search_resumed(self, records: list[TrialRecord], *, attrs: dict[str, Any]) -> None:
        """On resume, end the child runs of trials the study finished while a killed controller ran them.

        The controller writes the study first and MLflow after, so a controller killed in between
        leaves a child run RUNNING (or, for a trial Ray never started, none) although the study holds
        the trial as COMPLETE, PRUNED or FAIL (``interrupted``). Each such run is ended as the study
        says, so every trial of the study has one run in the same state. Duplicates (never trained) have none.
        """
        for record in records:
            if record.state not in (COMPLETE, PRUNED, FAIL):
                continue
            missing = self._child_run_id(record.number) is None
            if not missing and record.number not in self._left_running:
                continue
            if missing:
                self.trial_started(record.number, record.params, attrs=attrs)
            final = record.history[-1] if record.history else None
            self.trial_finished(record.number, record.state, reason=record.fail_reason, final_metrics=final)
            self._left_running.discard(record.number)

    def trial_epoch(self, number: int, metrics: dict[str, float], step: int) -> None:
        """Log one epoch's metrics (numeric entries only; ``epoch`` is the step, not a metric)."""
        with self._lock:
            run_id = self._require_child(number)
            self._log_metrics(run_id, metrics, step)
            self._last_step[number] = max(step, self._last_step.get(number, step))

    def trial_finished(
        self, number: int, state: str, *, reason: str | None = None, final_metrics: dict | None = None
    ) -> None:
        """Record how a trial ended: ``complete`` (FINISHED), ``pruned`` (FINISHED) or ``failed`` (FAILED).

        Optuna's state names (COMPLETE, PRUNED, FAIL) are accepted too. A failed trial whose reason is
        ``interrupted`` (cut off by Ctrl-C, SIGTERM, the time budget or a killed controller; it runs
        again on resume) is recorded as ``interrupted`` (KILLED). ``final_metrics`` are logged at the
        trial's last step so MLflow shows them as the run's latest values.
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
                metrics = _metric_items(final_metrics, step)
            self._client.log_batch(run_id, metrics=metrics, tags=tags)  # one write: SQLite commits are the cost
            self._client.set_terminated(run_id, status=run_status)
            self._open_children.discard(number)

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
            client = self._client
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
                client.log_batch(run_id, tags=tags)
                self._front_tags[r.number] = (on, new_rank)

            count = len(complete)
            if reference != self._reference_logged:
                client.log_batch(self.parent_run_id, tags=[RunTag(f"nas.reference.{n}", repr(float(reference[n])))
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
                client.log_batch(self.parent_run_id,
                                 metrics=[Metric(k, float(v), now, count) for k, v in values.items()])
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
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        with self._lock:
            run_id = self._require_child(number)
            with _use_tracking_uri(self.tracking_uri):
                model_uri = _log_pytorch_model(self._client, run_id, model, input_example, name="model")
            self._client.set_tag(run_id, "nas.model_uri", model_uri)

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
        run = self._client.get_run(run_id)
        if not run.data.metrics:
            return 0
        history = self._client.get_metric_history(run_id, next(iter(run.data.metrics)))
        return max((m.step for m in history), default=0)

    def _log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int) -> None:
        items = _metric_items(metrics, step)
        if items:
            self._client.log_batch(run_id, metrics=items)


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


def _first_line(error: BaseException) -> str:
    return mask_secrets(first_line(error))


def _split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """``(uri without user:password@, auth headers)``: MLflow's client (requests) sends URL credentials as
    HTTP basic auth, while urllib would take them for part of the host name."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None:
        return uri, _auth_headers()
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), {"Authorization": f"Basic {basic}"}


def _auth_headers() -> dict[str, str]:
    """The credentials MLflow's client would send, read from the same environment variables."""
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}
    return {}


def _log_pytorch_model(client: MlflowClient, run_id: str, model: Any, input_example: Any, *, name: str) -> str:
    """Log a torch module as an MLflow model of a run; returns its model URI.

    The logged model is created in the run's own experiment first: left to itself, ``log_model`` files it
    under MLflow's Default experiment, whose artifacts go to ``./mlruns`` of whatever the working directory
    is, outside the run folder.
    """
    import mlflow.pytorch

    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(experiment_id=experiment_id, name=name, source_run_id=run_id)
    info = mlflow.pytorch.log_model(model, name=name, input_example=input_example, pip_requirements=_pip_requirements(),
                                    serialization_format="pickle", run_id=run_id, model_id=logged.model_id)
    return info.model_uri


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in ("torch", "spikingjelly", "numpy"):
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return out



def view_link(experiment_id: str, view: str) -> str:
    """Address, relative to the MLflow UI, of one of a search's saved views (``FRONT_VIEW`` or ``CHART_VIEW``).

    ``workflowType=machine_learning`` switches MLflow 3's UI from GenAI to model training, where an
    experiment opens on its runs; ``compareRunsMode=CHART`` opens the chart view.
    """
    query = {"viewStateShareKey": view, "workflowType": "machine_learning"}
    if view == CHART_VIEW:
        query["compareRunsMode"] = "CHART"
    return f"#/experiments/{experiment_id}/runs?{urllib.parse.urlencode(query)}"


def runs_views(objectives: Mapping[str, str], param_names: list[str]) -> dict[str, dict[str, Any]]:
    """The saved views of a search's runs table, as MLflow's UI stores a shared view (experiment tag
    ``mlflow.sharedViewState.<key>``, JSON of its search facets and UI state).

    ``FRONT_VIEW``: the front's members (``tags.pareto = 'true'``), best first objective first, with the
    objectives and the architecture params as columns. ``CHART_VIEW``: every complete trial in the chart
    view, one scatter chart of the first objective against the second (val_acc against energy_uj).
    """
    names = list(objectives)
    first, direction = names[0], objectives[names[0]]
    columns = [f"metrics.`{n}`" for n in names] + [f"params.`{p}`" for p in param_names]
    sort = {"orderByKey": f"metrics.`{first}`", "orderByAsc": direction == "min"}
    views: dict[str, dict[str, Any]] = {FRONT_VIEW: {"searchFilter": FRONT_FILTER, **sort, "selectedColumns": columns}}
    if len(names) >= 2:
        section = "nas-front"
        chart = {"uuid": "nas-objectives", "type": "SCATTER", "xaxis": {"key": names[1], "type": "METRIC"},
                 "yaxis": {"key": first, "type": "METRIC"}, "runsCountToCompare": 1000, "metricSectionId": section,
                 "deleted": False, "isGenerated": False}
        views[CHART_VIEW] = {
            "searchFilter": COMPLETE_FILTER, **sort, "selectedColumns": columns, "compareRunCharts": [chart],
            # one chart, as wide as the section (MLflow's default is 3 columns of 360 px high cards)
            "compareRunSections": [{"uuid": section, "name": f"{first} against {names[1]}", "display": True,
                                    "isReordered": False, "deleted": False, "isGenerated": False,
                                    "columns": 1, "cardHeight": 480}],
        }
    return views


# ---------------------------------------------------------------- a run folder that was copied or moved
# MLflow records absolute artifact locations in its store; these columns hold them.
_LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                     ("logged_models", "artifact_location"), ("model_versions", "source"),
                     ("model_versions", "storage_location"))


def adopt_run_folder(root: str | Path) -> int:
    """Point the MLflow store of a run folder at the run folder's own artifacts, wherever the folder is now.

    A copied or moved folder's ``mlflow.db`` still names the artifacts of the folder it came from, so
    MLflow would read and write those. Every location under another folder's ``mlartifacts/`` is
    rewritten to this folder's; returns how many rows changed. Nothing is written when every location is
    in place already, nor for a folder without its own store.
    """
    import sqlite3

    db = Path(root) / MLFLOW_DB
    if not db.is_file():
        return 0
    here = (Path(root).resolve() / "mlartifacts").as_uri() + "/"
    with contextlib.closing(sqlite3.connect(db)) as connection, connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return 0
        elsewhere = set()
        for (location,) in connection.execute("SELECT artifact_location FROM experiments"):
            head, found, _ = str(location or "").rpartition("/mlartifacts/")
            if found and location.startswith("file://") and head + found != here:
                elsewhere.add(head + found)
        changed = 0
        for old in sorted(elsewhere):
            for table, column in _LOCATION_COLUMNS:
                if table not in tables:
                    continue
                cursor = connection.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE substr({column}, 1, ?) = ?",
                    (here, len(old) + 1, len(old), old))
                changed += cursor.rowcount
    if changed:
        # MLflow keeps each run's artifact repository in a process-wide cache: in a process that used the
        # original folder's runs before, they would still write there.
        from mlflow.tracking._tracking_service import utils

        utils._artifact_repos_cache.clear()
    return changed


# ---------------------------------------------------------------- the MLflow UI (nas ui)
UI_START_TIMEOUT_S = 120.0


def find_parent_run(tracking_uri: str, search_name: str) -> tuple[str, str] | None:
    """(experiment id, parent run id) of a search in a tracking store, or None when it has none."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(search_name)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`nas.role` = 'search'", max_results=10)
    runs = [r for r in runs if r.data.tags.get("nas.search") == search_name]
    if not runs:
        return None
    return experiment.experiment_id, runs[0].info.run_id


def run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """Address of a run's page in the MLflow UI."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def saved_views(tracking_uri: str, experiment_id: str) -> list[str]:
    """Which of a search's saved views (``FRONT_VIEW``, ``CHART_VIEW``) its experiment holds (a search made by
    an older nas has none)."""
    from mlflow import MlflowClient

    tags = MlflowClient(tracking_uri=tracking_uri).get_experiment(experiment_id).tags
    return [view for view in (FRONT_VIEW, CHART_VIEW) if SHARED_VIEW_TAG + view in tags]


def experiment_url(base_url: str, experiment_id: str) -> str:
    """Address of an experiment's runs table in the MLflow UI, in its model-training mode (not GenAI)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


class MlflowUi(ServerHandle):
    """An ``mlflow server`` for a run folder's SQLite store, bound to 127.0.0.1 (``nas ui``).

    ``start()`` returns once the server answers; ``wait()`` blocks until it exits (SIGTERM and Ctrl-C
    raise ``KeyboardInterrupt`` there); ``stop()`` ends it and every worker it started. Job execution is
    switched off (it would start extra workers, ~2 GiB) and one worker serves the UI.
    """

    def __init__(self, root: str | Path, *, port: int = 5000, tracking_uri: str | None = None) -> None:
        self.root = Path(root)
        if not 0 < port < 65536:
            raise ValueError(f"--port must be in 1..65535, got {port}")
        self.port = port
        self.tracking_uri = tracking_uri or default_tracking_uri(self.root)
        self.url = f"http://127.0.0.1:{port}"
        self._server: LocalServer | None = None

    def command(self) -> list[str]:
        """The ``mlflow server`` command line."""
        import sys

        return [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.tracking_uri,
            "--default-artifact-root", (self.root / "mlartifacts").resolve().as_uri(),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip

    def start(self, timeout: float = UI_START_TIMEOUT_S) -> str:
        """Start the server and wait until it answers; returns its base URL."""
        db = _sqlite_path(self.tracking_uri)
        if db is not None and not db.is_file():
            raise NasError(f"{self.root}: no MLflow store here ({db.name} missing); run a search first or pass --root")
        if self.tracking_uri == default_tracking_uri(self.root):
            adopt_run_folder(self.root)  # a copied or moved run folder shows its own artifacts
        check_port_free(self.port)
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        self._server = LocalServer("mlflow server", self.command(), health_url=self.url + "/health", env=env)
        self._server.start(timeout)
        return self.url

    def __enter__(self) -> MlflowUi:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- the model registry (nas export)
def find_trial_run_id(tracking_uri: str, search_name: str, number: int) -> str | None:
    """Id of the MLflow child run of trial ``number`` of a search, or None when the store has none."""
    from mlflow import MlflowClient

    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_experiment_by_name(search_name)
        if experiment is None:
            return None
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`nas.role` = 'trial' and tags.`nas.trial_number` = '{int(number)}'",
            max_results=10,
        )
    except Exception as error:  # store back ends raise unrelated exception types
        raise NasError(f"MLflow store {mask_secrets(tracking_uri)} cannot be read: {_first_line(error)}") from None
    runs = [r for r in runs if r.data.tags.get("nas.search", search_name) == search_name]
    return runs[0].info.run_id if runs else None


def trial_model_uri(tracking_uri: str, run_id: str | None) -> str | None:
    """The model a search logged on a trial's run (tag ``nas.model_uri``), or None."""
    if not run_id:
        return None
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags.get("nas.model_uri")


@dataclass
class RegistryEntry:
    """One model to register: the trial's run, and either an already logged model or the module to log."""

    number: int
    run_id: str
    model_uri: str | None
    model: Any
    input_example: Any
    tags: dict[str, str] = field(default_factory=dict)


def register_models(
    tracking_uri: str, name: str, entries: list[RegistryEntry], aliases: Mapping[str, int]
) -> dict[int, str]:
    """Register each entry as a new version of the registered model ``name``; returns number -> version.

    An entry without ``model_uri`` is first logged on its trial's run (name ``export``). ``aliases``
    maps an alias (``best-accuracy``, ``min-energy``, ``knee``) to a trial number among the entries;
    aliases replace the deprecated stages. Version tags are the entry's tags (its metrics).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    versions: dict[int, str] = {}
    # The SQL registry resolves a "models:/<id>" source through the process-wide tracking URI.
    with _use_tracking_uri(tracking_uri):
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name, tags={"nas.search": name},
                                           description=f"Exported architectures of nas search {name}")
        for entry in entries:
            source = entry.model_uri
            if source is None:
                source = _log_pytorch_model(client, entry.run_id, entry.model, entry.input_example, name="export")
            version = client.create_model_version(name, source=source, run_id=entry.run_id or None,
                                                  tags=dict(entry.tags))
            versions[entry.number] = str(version.version)
    for alias, number in aliases.items():
        if number not in versions:
            raise ValueError(f"alias {alias!r} names trial {number}, which is not among the entries")
        client.set_registered_model_alias(name, alias, versions[number])
    return versions
