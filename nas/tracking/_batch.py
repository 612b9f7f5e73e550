"""Run writes gathered and sent to MLflow with as few calls as it allows (``RunWrites``).

Every MLflow write is a request to a server or a few commits to a SQLite store, whatever it carries:
a trial's start, its epochs and its end queued together cost one ``log_batch`` (and one status update)
instead of four or five calls. ``MlflowTracker.batched`` collects into a ``RunWrites`` and flushes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nas.tracking._common import masked_first_line

# MLflow's log_batch limits: 1000 metrics, 100 params, 100 tags, 1000 entities in all per call.
MAX_METRICS = 1000
MAX_PARAMS = 100
MAX_TAGS = 100
MAX_ENTITIES = 1000


@dataclass
class _Pending:
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[tuple[str, int, int, float], Any] = field(default_factory=dict)
    status: str | None = None


class RunWrites:
    """Params, tags, metrics and end states of runs, kept until :meth:`flush` writes them.

    A param keeps its first value (MLflow refuses a changed one), a tag its last, a metric is written
    once per (key, step, timestamp, value); a run's end state is set after its other writes.
    """

    def __init__(self) -> None:
        self._runs: dict[str, _Pending] = {}

    def __bool__(self) -> bool:
        return bool(self._runs)

    def log(self, run_id: str, *, params: Iterable[Any] = (), tags: Iterable[Any] = (),
            metrics: Iterable[Any] = ()) -> None:
        """Keep ``Param``, ``RunTag`` and ``Metric`` entities for ``run_id``."""
        pending = self._runs.setdefault(run_id, _Pending())
        for param in params:
            pending.params.setdefault(param.key, param.value)
        for tag in tags:
            pending.tags[tag.key] = tag.value
        for metric in metrics:
            pending.metrics[(metric.key, metric.step, metric.timestamp, metric.value)] = metric

    def end(self, run_id: str, status: str) -> None:
        """End ``run_id`` with ``status`` (FINISHED, FAILED, KILLED) after its other writes."""
        self._runs.setdefault(run_id, _Pending()).status = status

    def flush(self, client: Any) -> None:
        """Write everything kept, run by run; a run whose write fails does not stop the others.

        Raises ``RuntimeError`` naming every run that failed, after all runs were tried.
        """
        from mlflow.entities import Param, RunTag

        runs, self._runs = self._runs, {}
        failed: list[str] = []
        for run_id, pending in runs.items():
            try:
                params = [Param(k, v) for k, v in pending.params.items()]
                tags = [RunTag(k, v) for k, v in pending.tags.items()]
                for chunk in batch_chunks(params, tags, list(pending.metrics.values())):
                    client.log_batch(run_id, params=chunk[0], tags=chunk[1], metrics=chunk[2])
                if pending.status is not None:
                    client.set_terminated(run_id, status=pending.status)
            except Exception as error:  # the store's exception types differ; every run is tried
                failed.append(f"run {run_id}: {type(error).__name__}: {masked_first_line(error)}")
        if failed:
            raise RuntimeError(f"{len(failed)} MLflow run write(s) failed; first: {failed[0]}")


def batch_chunks(params: list[Any], tags: list[Any], metrics: list[Any]) -> Iterable[tuple[list, list, list]]:
    """Split one run's entities into ``log_batch`` calls within MLflow's limits (none when there are none)."""
    while params or tags or metrics:
        p, params = params[:MAX_PARAMS], params[MAX_PARAMS:]
        t, tags = tags[:MAX_TAGS], tags[MAX_TAGS:]
        room = MAX_ENTITIES - len(p) - len(t)
        m, metrics = metrics[:min(MAX_METRICS, room)], metrics[min(MAX_METRICS, room):]
        yield p, t, m
