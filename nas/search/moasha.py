"""Multi-objective asynchronous successive halving (MOASHA) for Ray Tune.

Ray's schedulers rank trials by one metric. MOASHA (Schmucker et al., 2021) keeps ASHA's
asynchronous rungs and only changes the ranking: at a rung, trials are ordered by non-dominated
rank and then, within a front, either by crowding distance (NSGA-II, ``priority="nsga2"``) or by an
epsilon-net (``priority="epsnet"``), and a trial goes on when it is in the top ``ceil(n / eta)`` of
the ``n`` trials that have reached that rung so far, itself included.

The order is a function of the points alone: ties left by rank and crowding are broken by the sum of
the objectives scaled to [0, 1] over the rung, then by the objectives in order, and only exact
repeats fall back to arrival order (earlier first). A newcomer is therefore never favoured for
arriving last, and over rungs of exchangeable points exactly ``ceil(n / eta) / n`` of arrivals
continue.

Rungs sit at ``grace_period * eta**k`` epochs for every ``k`` with a milestone below ``max_t``.
Like Ray's ASHA, decisions are asynchronous: nobody waits for a rung to fill, so the first trials
to reach a rung continue and later ones must beat what is there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from nas.results.pareto import crowding_by_rank, crowding_distance, epsilon_net_order, non_dominated_ranks
from nas.search.choices import DEFAULT_PRIORITY, PRIORITIES, SCHEDULERS

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

_STATE_VERSION = 2


def rung_order(points: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str],
               priority: str = DEFAULT_PRIORITY) -> np.ndarray:
    """Row indices of a rung's objective vectors, best first (see the module docstring)."""
    pts = np.asarray(points, dtype=float)
    if priority not in PRIORITIES:
        raise ValueError(f"priority {priority!r} is not one of {', '.join(PRIORITIES)}")
    if pts.shape[0] == 0:
        return np.zeros(0, dtype=int)
    if priority == "epsnet":
        return epsilon_net_order(pts, directions)
    ranks = non_dominated_ranks(pts, directions)
    return _ordered(pts, directions, ranks, crowding_by_rank(pts, ranks, directions), np.arange(pts.shape[0]))


def _ordered(pts: np.ndarray, directions: Sequence[str], ranks: np.ndarray, crowd: np.ndarray,
             members: np.ndarray) -> np.ndarray:
    """``members`` (row indices of ``pts``) in rung order: rank, crowding (larger first), the objectives'
    sum scaled to [0, 1] over the whole rung, each objective, arrival."""
    signs = np.where(np.asarray(directions) == "max", -1.0, 1.0)
    low = pts * signs
    span = np.ptp(low, axis=0)
    scaled = np.where(span > 0, (low[members] - low.min(axis=0)) / np.where(span > 0, span, 1.0), 0.0)
    # lexsort: the last key is the primary one. After rank, crowding and the scaled sum (the two ends
    # of a 2-D front tie on all three), the first objective decides, then the next ones.
    by_value = [low[members, j] for j in range(low.shape[1] - 1, -1, -1)]
    return members[np.lexsort((members, *by_value, scaled.sum(axis=1), -crowd[members], ranks[members]))]


def promotion_decision(
    rung_points: np.ndarray | Sequence[Sequence[float]],
    new_point: Sequence[float],
    directions: Sequence[str],
    eta: float,
    priority: str = DEFAULT_PRIORITY,
) -> bool:
    """True when ``new_point`` is in the top ``ceil(n / eta)`` of a rung (``n`` counts it too).

    ``rung_points`` are the objective vectors already recorded at the rung, in arrival order; the
    order is :func:`rung_order`, in which the newcomer, being last, loses every exact tie. With
    crowding (``nsga2``) only the newcomer's own front is ordered, and only when the cut falls inside
    it: the fronts before it all come first (a rung of 20,000 points is decided in milliseconds).
    """
    if eta <= 1:
        raise ValueError(f"eta must be > 1, got {eta}")
    new = np.asarray(new_point, dtype=float).reshape(1, -1)
    old = np.asarray(rung_points, dtype=float).reshape(-1, new.shape[1])
    pts = np.vstack([old, new])
    n = pts.shape[0]
    cut = math.ceil(n / eta)
    if priority != "nsga2":
        return int(np.flatnonzero(rung_order(pts, directions, priority) == n - 1)[0]) < cut
    ranks = non_dominated_ranks(pts, directions)
    ahead = int(np.count_nonzero(ranks < ranks[-1]))
    peers = np.flatnonzero(ranks == ranks[-1])
    if ahead >= cut or ahead + peers.size <= cut:
        return ahead < cut
    crowd = np.zeros(n)
    crowd[peers] = crowding_distance(pts[peers], directions)
    return ahead + int(np.flatnonzero(_ordered(pts, directions, ranks, crowd, peers) == n - 1)[0]) < cut


def rung_milestones(max_t: int, grace_period: int, reduction_factor: float) -> list[int]:
    """Epoch counts of the rungs: ``grace_period * eta**k`` for every value below ``max_t``."""
    out: list[int] = []
    k = 0
    while True:
        milestone = int(round(grace_period * reduction_factor**k))
        if milestone >= max_t:
            return out
        if not out or milestone > out[-1]:
            out.append(milestone)
        k += 1


class StopRecorder:
    """What the searcher needs from any scheduler: the trials it decided to stop.

    A trial that ends before full fidelity is PRUNED only when its scheduler stopped it; anything else
    that cut it short (Ctrl-C, the time budget) leaves it to be re-run on resume.
    """

    stopped_trials: set[str]

    def _recorded(self, trial: Trial, decision: str) -> str:
        if decision == TrialScheduler.STOP:
            self.stopped_trials.add(trial.trial_id)
        return decision


class FIFOWithStops(StopRecorder, FIFOScheduler):
    """Ray's FIFO scheduler (every trial runs to the end); it never stops a trial."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped_trials = set()


class ASHAWithStops(StopRecorder, AsyncHyperBandScheduler):
    """Ray's single-metric ASHA, remembering the trials it stopped."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stopped_trials = set()

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        """Ray's ASHA decision, recorded."""
        return self._recorded(trial, super().on_trial_result(tune_controller, trial, result))


class MOASHAScheduler(StopRecorder, FIFOScheduler):
    """Asynchronous successive halving that ranks trials by Pareto dominance, then crowding or an epsilon-net.

    Args:
        metrics: the objectives every result reports, e.g. ``["val_acc", "energy_uj"]``.
        modes: ``"max"`` or ``"min"`` for each metric.
        time_attr: the monotonically increasing progress key in results (epochs in nas).
        max_t: the full fidelity; a trial reaching it is stopped (it is done).
        grace_period: the first rung; no trial is stopped before it.
        reduction_factor: eta; about one trial in eta goes on at each rung.
        priority: how trials of one front are ordered: ``"nsga2"`` (crowding distance) or ``"epsnet"``.

    A result whose objectives are NaN or infinite, or that carries ``diverged=True``, stops the trial
    at once: such a vector cannot be ranked, and the searcher records the trial as FAIL.
    """

    def __init__(
        self,
        *,
        metrics: Sequence[str],
        modes: Sequence[str],
        time_attr: str = "epoch",
        max_t: int,
        grace_period: int = 1,
        reduction_factor: float = 3,
        priority: str = DEFAULT_PRIORITY,
    ) -> None:
        super().__init__()
        metrics = list(metrics)
        modes = list(modes)
        if not metrics:
            raise ValueError("metrics is empty")
        if len(modes) != len(metrics):
            raise ValueError(f"modes has {len(modes)} entries but metrics has {len(metrics)}")
        for mode in modes:
            if mode not in ("max", "min"):
                raise ValueError(f"mode {mode!r} is not one of 'max', 'min'")
        if int(max_t) != max_t or max_t < 1:
            raise ValueError(f"max_t must be a positive integer, got {max_t!r}")
        if grace_period < 1 or grace_period > max_t:
            raise ValueError(f"grace_period must be between 1 and max_t={max_t}, got {grace_period!r}")
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor!r}")
        if priority not in PRIORITIES:
            raise ValueError(f"priority {priority!r} is not one of {', '.join(PRIORITIES)}")
        self._priority = priority
        self.stopped_trials = set()
        self._metrics = metrics
        self._modes = modes
        # Ray's controller checks that results contain ``scheduler.metric`` (a single string).
        self._metric = metrics[0]
        self._time_attr = time_attr
        self._max_t = int(max_t)
        self._grace_period = grace_period
        self._eta = reduction_factor
        self._milestones = rung_milestones(self._max_t, grace_period, reduction_factor)
        # milestone -> {trial_id: objective vector recorded when the trial reached it}
        self._rungs: dict[int, dict[str, list[float]]] = {m: {} for m in self._milestones}
        self._live: set[str] = set()
        self._num_stopped = 0

    @property
    def milestones(self) -> list[int]:
        """The rung epochs, ascending."""
        return list(self._milestones)

    def rung_table(self, milestone: int) -> dict[str, list[float]]:
        """A copy of the objective vectors recorded at one rung, by trial id."""
        return {k: list(v) for k, v in self._rungs[milestone].items()}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Refuse a metric or mode from ``TuneConfig``: MOASHA is built with its own objectives."""
        return metric is None and mode is None

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        """Start tracking a trial."""
        self._live.add(trial.trial_id)

    def _vector(self, result: Mapping[str, Any]) -> list[float] | None:
        if any(m not in result for m in self._metrics):
            return None
        return [float(result[m]) for m in self._metrics]

    def _record(self, trial_id: str, t: float, vector: list[float], decide: bool) -> str:
        """Record ``vector`` at the highest rung that ``t`` reached and the trial has not passed yet."""
        for milestone in reversed(self._milestones):
            if t < milestone:
                continue
            table = self._rungs[milestone]
            if trial_id in table:
                # The decision at this rung (and so at every lower one) was already made.
                return TrialScheduler.CONTINUE
            action = TrialScheduler.CONTINUE
            if decide and not promotion_decision(list(table.values()), vector, self._modes, self._eta,
                                                 self._priority):
                action = TrialScheduler.STOP
            table[trial_id] = vector
            return action
        return TrialScheduler.CONTINUE

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        """Record the trial at a rung it has just reached and decide CONTINUE or STOP."""
        if self._time_attr not in result:
            return TrialScheduler.CONTINUE
        vector = self._vector(result)
        if vector is None:
            return TrialScheduler.CONTINUE
        action = TrialScheduler.CONTINUE
        t = float(result[self._time_attr])
        if result.get("diverged") or not all(math.isfinite(v) for v in vector):
            action = TrialScheduler.STOP
        elif t >= self._max_t:
            action = TrialScheduler.STOP
        else:
            action = self._record(trial.trial_id, t, vector, decide=True)
        if action == TrialScheduler.STOP:
            self._num_stopped += 1
        return self._recorded(trial, action)

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        """Record a trial that ended on its own at a rung, so later trials are compared with it."""
        self._live.discard(trial.trial_id)
        if not result or self._time_attr not in result:
            return
        vector = self._vector(result)
        if vector is None or result.get("diverged") or not all(math.isfinite(v) for v in vector):
            return
        t = float(result[self._time_attr])
        if t < self._max_t:
            self._record(trial.trial_id, t, vector, decide=False)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        """Forget a trial that raised; what it recorded at rungs stays as evidence."""
        self._live.discard(trial.trial_id)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        """Forget a trial removed while pending or paused."""
        self._live.discard(trial.trial_id)

    def debug_string(self) -> str:
        """One line for Ray's status table: stopped count and how full each rung is."""
        rungs = ", ".join(f"{self._time_attr} {m}: {len(self._rungs[m])}" for m in self._milestones)
        return (f"Using MOASHA-{self._priority} (eta={self._eta}, max_t={self._max_t}): "
                f"num_stopped={self._num_stopped}; rungs {rungs}")

    def _state(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "metrics": self._metrics,
            "modes": self._modes,
            "time_attr": self._time_attr,
            "max_t": self._max_t,
            "grace_period": self._grace_period,
            "reduction_factor": self._eta,
            "priority": self._priority,
            "milestones": self._milestones,
            "rungs": {str(m): table for m, table in self._rungs.items()},
            "num_stopped": self._num_stopped,
        }

    def save(self, checkpoint_path: str) -> None:
        """Write the settings and rung tables as JSON (no pickled internals)."""
        with open(checkpoint_path, "w", encoding="utf-8") as f:
            json.dump(self._state(), f)

    def restore(self, checkpoint_path: str) -> None:
        """Read rung tables written by ``save``; the settings must match this scheduler's."""
        with open(checkpoint_path, encoding="utf-8") as f:
            state = json.load(f)
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"MOASHA state version {state.get('version')!r} is not {_STATE_VERSION}")
        mine = self._state()
        for key in ("metrics", "modes", "time_attr", "max_t", "milestones", "priority"):
            if state[key] != mine[key]:
                raise ValueError(f"MOASHA state has {key}={state[key]!r}, this scheduler has {mine[key]!r}")
        self._rungs = {m: {} for m in self._milestones}
        for m, table in state["rungs"].items():
            self._rungs[int(m)] = {tid: [float(v) for v in vec] for tid, vec in table.items()}
        self._num_stopped = int(state["num_stopped"])


def make_scheduler(
    kind: str,
    *,
    objectives: Mapping[str, str],
    max_t: int,
    grace_period: int = 1,
    reduction_factor: float = 3,
) -> StopRecorder:
    """The scheduler for a search, one of :data:`SCHEDULERS`.

    ``"moasha"`` is MOASHA with the default priority, ``"moasha-nsga2"`` / ``"moasha-epsnet"`` name the
    priority; ``"asha"`` is Ray's single-metric ASHA on ``val_acc``; ``"none"`` runs every trial to the end.
    """
    if kind in ("moasha", "moasha-nsga2", "moasha-epsnet"):
        return MOASHAScheduler(
            metrics=list(objectives),
            modes=list(objectives.values()),
            time_attr="epoch",
            max_t=max_t,
            grace_period=grace_period,
            reduction_factor=reduction_factor,
            priority=DEFAULT_PRIORITY if kind == "moasha" else kind.removeprefix("moasha-"),
        )
    if kind == "asha":
        if objectives.get("val_acc") != "max":
            raise ValueError("scheduler 'asha' ranks by val_acc (max), which the objectives do not contain")
        return ASHAWithStops(
            time_attr="epoch",
            metric="val_acc",
            mode="max",
            max_t=max_t,
            grace_period=grace_period,
            reduction_factor=reduction_factor,
        )
    if kind == "none":
        return FIFOWithStops()
    raise ValueError(f"scheduler kind {kind!r} is not one of {', '.join(SCHEDULERS)}")
