"""What a finished or running search trial looks like once read back from the Optuna study.

This is the one shape that the controller writes and that ``nas pareto``, ``nas report``,
tracking and export read. Layout inside Optuna (one study per search name):

- ``study.metric_names``: the objective names, in the order of ``trial.values``;
  ``study.user_attrs["objectives"]``: {name: "max" | "min"}.
- ``trial.params``: the architecture params sampled by the space (all that travels).
- ``trial.values``: final objectives, only for COMPLETE trials (full fidelity).
- ``trial.user_attrs["history"]``: list of per-epoch metric dicts (``epoch``, ``val_acc``,
  ``energy_uj``, ``sops``, ``macs``, ``firing_rate``, ``params``, ``time_steps``, ...).
- ``trial.user_attrs["last_values"]``: {objective: value} of a PRUNED trial's last epoch.
- ``trial.user_attrs["fail_reason"]``: one line, for FAIL trials (``"interrupted"`` for trials that
  were in flight when the controller stopped).
- ``trial.user_attrs["duplicate_of"]``: a proposal that repeated an architecture already tried; it was
  told that trial's outcome so the sampler learns from it, and never trained. Its record's state is
  ``DUPLICATE`` whatever Optuna's state is: it is no trial of the search (not counted, not on the front).
- ``trial.user_attrs["proxy_score"]``, ``["proxy_energy_uj"]``: rung 0's training-free score of the
  untrained candidate and its energy estimate (searches with ``--proxy``); ``["proxy_dropped"]``: a
  proposal rung 0 dropped. It is told PRUNED so the sampler learns from it; its record's state is
  ``DROPPED``: never trained, not counted toward the budget, never on the front.
- what was built and where: ``family``, ``time_steps`` and ``params`` (the parameter count) of the
  history's rows, and the ``node_id`` of its last row; a record shows them as ``user_attrs["family"]``,
  ``["time_steps"]``, ``["model_params"]`` and ``["node_id"]``.
- constraints: ``trial.set_constraint(name, value)``; feasible when every value is <= 0.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

COMPLETE = "COMPLETE"
PRUNED = "PRUNED"
FAIL = "FAIL"
RUNNING = "RUNNING"
WAITING = "WAITING"
DUPLICATE = "DUPLICATE"
DROPPED = "DROPPED"

# The fail reason of a trial cut off by a stop (Ctrl-C, SIGTERM, the time budget, a killed controller);
# its architecture runs again, as a new trial, on resume.
INTERRUPTED = "interrupted"

# What became of a trial: the one vocabulary of ``nas status``, ``nas report``, MLflow (tag ``nas.state``),
# the live view and the summary of a search. ``complete``, ``pruned`` and ``failed`` count toward the
# trial budget; ``interrupted`` trials run again; ``duplicate`` proposals and those the proxy rung
# ``dropped`` were never trained.
OUTCOMES = ("complete", "pruned", "failed", "interrupted", "duplicate", "dropped", "running", "waiting")


@dataclass
class TrialRecord:
    """One trial of a search, independent of Optuna and MLflow objects."""

    number: int
    state: str
    params: dict[str, Any]
    values: dict[str, float] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    constraints: tuple[float, ...] | None = None  # sorted by constraint name
    started: dt.datetime | None = None
    completed: dt.datetime | None = None

    @property
    def feasible(self) -> bool:
        """True when the trial declared no constraint or satisfies all of them (<= 0)."""
        return self.constraints is None or all(c <= 0 for c in self.constraints)

    @property
    def family(self) -> str | None:
        return self.user_attrs.get("family")

    @property
    def fail_reason(self) -> str | None:
        return self.user_attrs.get("fail_reason")

    @property
    def last_metrics(self) -> dict[str, Any]:
        """The metrics of the last epoch the trial reported (empty if none)."""
        return dict(self.history[-1]) if self.history else {}


def outcome_of(record: TrialRecord) -> str:
    """What became of a trial, one of ``OUTCOMES``."""
    if record.state == FAIL:
        return "interrupted" if record.fail_reason == INTERRUPTED else "failed"
    return {COMPLETE: "complete", PRUNED: "pruned", DUPLICATE: "duplicate", DROPPED: "dropped",
            RUNNING: "running"}.get(record.state, "waiting")


@dataclass(frozen=True)
class TrialCounts:
    """How many trials of a search ended each way (``OUTCOMES``); every view reports these numbers."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    interrupted: int = 0
    duplicate: int = 0
    dropped: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def done(self) -> int:
        """Trials that used up the budget: complete, pruned or failed."""
        return self.complete + self.pruned + self.failed

    def as_dict(self) -> dict[str, int]:
        """{outcome: count} in the order of ``OUTCOMES``."""
        return {name: getattr(self, name) for name in OUTCOMES}

    def text(self) -> str:
        """``6 complete, 10 pruned, 0 failed`` plus any interrupted, duplicate, dropped, running or waiting trials."""
        always = ("complete", "pruned", "failed")
        parts = [f"{getattr(self, n)} {n}" for n in always]
        labels = {"interrupted": "interrupted (run again)", "duplicate": "duplicate (not trained)",
                  "dropped": "dropped by the proxy rung (not trained)"}
        parts += [f"{getattr(self, n)} {labels.get(n, n)}" for n in OUTCOMES if n not in always and getattr(self, n)]
        return ", ".join(parts)


def count_trials(records: Sequence[TrialRecord]) -> TrialCounts:
    """Count a search's trials by outcome (``outcome_of``)."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for record in records:
        counts[outcome_of(record)] += 1
    return TrialCounts(**counts)


def records_from_study(study: Any, trials: Sequence[Any] | None = None) -> list[TrialRecord]:
    """Convert every trial of an ``optuna.Study`` into a ``TrialRecord`` (ordered by number).

    ``trials``: the study's frozen trials when the caller has just read them (one snapshot for both).
    """
    names = list(study.metric_names or [])
    frozen = study.get_trials(deepcopy=False) if trials is None else trials
    return sorted((record_of(t, names) for t in frozen), key=lambda r: r.number)


def record_of(t: Any, names: Sequence[str]) -> TrialRecord:
    """One frozen Optuna trial as a ``TrialRecord``; ``names`` are the study's metric names."""
    values = None
    state = t.state.name
    if "duplicate_of" in t.user_attrs or (state == FAIL and t.user_attrs.get("fail_reason") == "duplicate"):
        state = DUPLICATE
    elif "proxy_dropped" in t.user_attrs:
        state = DROPPED
    if t.values is not None and state == COMPLETE:
        values = dict(zip(names, t.values, strict=True)) if names else dict(enumerate(t.values))
    # Optuna 5 keeps trial.set_constraint(key, value) as system attr "constraints:<key>".
    constraint_items = sorted((k, v) for k, v in t.system_attrs.items() if k.startswith("constraints:"))
    constraints = tuple(float(v) for _, v in constraint_items) if constraint_items else None
    history = list(t.user_attrs.get("history", []))
    return TrialRecord(
        number=t.number,
        state=state,
        params=dict(t.params),
        values=values,
        history=history,
        user_attrs=_described(dict(t.user_attrs), history),
        constraints=constraints,
        started=t.datetime_start,
        completed=t.datetime_complete,
    )


_DESCRIBED = (("family", "family"), ("time_steps", "time_steps"), ("params", "model_params"))


def _described(attrs: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """The user attrs plus what was built (from the first row that says) and the node it ended on."""
    for key, attr in _DESCRIBED:
        value = next((row[key] for row in history if row.get(key) is not None), None)
        if value is not None:
            attrs.setdefault(attr, value)
    node = next((row["node_id"] for row in reversed(history) if row.get("node_id")), None)
    if node is not None:
        attrs.setdefault("node_id", node)
    return attrs


def completion_order(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Records sorted by completion time (then number); records without one go last."""

    def key(r: TrialRecord) -> tuple[float, int]:
        return (r.completed.timestamp() if r.completed is not None else math.inf, r.number)

    return sorted(records, key=key)
