"""Replay a search on a learning-curve table in simulated time, driving nas's real search code.

What runs is what ``nas launch`` runs, minus Ray and training: the Optuna sampler (``make_sampler``),
the searcher's bookkeeping (``OptunaMultiObjectiveSearcher``: COMPLETE only at full fidelity, PRUNED
when the scheduler stopped a trial, FAIL with a reason, duplicates told their known outcome, an
exhausted space ending the search), the scheduler (``make_scheduler``: MOASHA, Ray's ASHA, FIFO) and
the incremental hypervolume. Each hook is called in the order Ray Tune's controller calls it:
per result the scheduler decides first; on CONTINUE the searcher records the epoch; a trial that
stops or ends is completed in the scheduler, then in the searcher; a trial that raises is completed
as an error, then its reason is recorded.

Time: ``workers`` slots; a trial's epoch ``e`` of table entry ``i`` ends ``rows[e - 1][cost]`` seconds
after the previous one, plus ``start_seconds`` when a trial starts. The cost column is
``epoch_cpu_seconds`` where the table has it (the process CPU time of the epoch: training plus
validation with the energy meter, on one thread), else ``epoch_seconds`` (wall time). CPU time is the
default because the tables were built on a shared 2-core machine, where an epoch's wall time was
2.4x its CPU time in the median and up to 5.6x, depending on what else ran. A free slot is
filled at once. Nothing that the controller itself spends (sampler ``ask``, bookkeeping) is counted:
the simulation measures search quality per unit of training time. The one exception is a proxy rung
(``proxy="sahd"``): its scoring is work a search would not do otherwise, so what scoring a batch cost
(the entries' recorded proxy seconds, in the clock's kind) delays the start of the trial it chose.

Hooks for measuring the controller itself (``benchmarks/bench_scale.py``), none of which changes what
is simulated: ``study`` runs the search in a study the caller made (an RDB storage, its sampler set
by the caller) instead of a fresh in-memory one; ``callbacks`` hear every trial event right after
the searcher, in the order Ray Tune calls its callbacks (:class:`SimulationCallbacks`); ``timer``
wraps each step of the controller's work in a context manager named after it (``suggest``,
``scheduler``, ``record``, ``tell``, ``callbacks``).
"""

from __future__ import annotations

import contextlib
import heapq
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from nas.bench.table import DIVERGED, FAILED, TableEntry
from nas.bench.table_space import TableSpace
from nas.search.choices import (
    DEFAULT_PROXY,
    DEFAULT_PROXY_RULE,
    DEFAULT_SAMPLER,
    DEFAULT_SCHEDULER,
    PROXIES,
    PROXY_RULES,
)
from nas.search.proxy_rung import ProxyOutcome


@dataclass(frozen=True)
class SimulationSettings:
    """One search configuration to replay: sampler, scheduler, eta, workers, budget and seed."""

    sampler: str = DEFAULT_SAMPLER
    scheduler: str = DEFAULT_SCHEDULER
    reduction_factor: float = 3
    grace_period: int = 1
    workers: int = 4
    budget: float = 3600.0
    seed: int = 0
    cost: str = "auto"
    start_seconds: float = 0.0
    max_trials: int | None = None
    proxy: str = DEFAULT_PROXY  # "sahd": rung 0 scores proposals untrained (needs the table's proxy scores)
    proxy_rule: str = DEFAULT_PROXY_RULE

    def __post_init__(self) -> None:
        if self.proxy not in PROXIES:
            raise ValueError(f"proxy must be one of {', '.join(PROXIES)}, got {self.proxy!r}")
        if self.proxy_rule not in PROXY_RULES:
            raise ValueError(f"proxy_rule must be one of {', '.join(PROXY_RULES)}, got {self.proxy_rule!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if not self.budget > 0:
            raise ValueError(f"budget must be positive simulated seconds, got {self.budget}")
        if self.start_seconds < 0:
            raise ValueError(f"start_seconds must be >= 0, got {self.start_seconds}")

    @property
    def label(self) -> str:
        """``sampler/scheduler`` with eta where the scheduler has one."""
        eta = "" if self.scheduler == "none" else f"(eta={self.reduction_factor:g})"
        proxy = "" if self.proxy == "none" else f"+{self.proxy}-{self.proxy_rule}(1/{round(self.reduction_factor)})"
        return f"{self.sampler}/{self.scheduler}{eta}{proxy}"


@dataclass
class SimulatedTrial:
    """One trial of a simulated search, as it ended."""

    number: int
    entry: int
    state: str  # COMPLETE | PRUNED | FAIL
    started: float
    ended: float
    epochs: int


@dataclass
class SimulationRun:
    """What one simulated search did and found."""

    settings: SimulationSettings
    table: str
    trials: list[SimulatedTrial]
    curve: list[tuple[float, float]]  # (simulated seconds, normalised hypervolume) after each COMPLETE trial
    true_hypervolume: float  # normalised hypervolume of the whole table's front
    proposals: dict[str, int] = field(default_factory=dict)
    exhausted: bool = False
    ended: float = 0.0  # simulated time when the search stopped (budget, or nothing left to run)

    def hypervolume_at(self, seconds: float) -> float:
        """Normalised hypervolume of the trials completed by ``seconds``."""
        value = 0.0
        for t, hv in self.curve:
            if t > seconds:
                break
            value = hv
        return value

    def time_to_reach(self, target: float) -> float:
        """First simulated time at which the hypervolume reached ``target`` (``inf`` if never)."""
        return next((t for t, hv in self.curve if hv >= target - 1e-12), math.inf)

    @property
    def final_hypervolume(self) -> float:
        """Normalised hypervolume at the end of the budget."""
        return self.hypervolume_at(self.settings.budget)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no study)."""
        from dataclasses import asdict

        return {"settings": asdict(self.settings), "table": self.table, "curve": self.curve,
                "true_hypervolume": self.true_hypervolume, "proposals": dict(self.proposals),
                "exhausted": self.exhausted, "ended": self.ended, "trials": [asdict(t) for t in self.trials]}


class _SimTrial:
    """The part of a Ray Tune ``Trial`` the schedulers and the controller's callbacks read."""

    def __init__(self, trial_id: str, config: dict[str, Any] | None = None) -> None:
        self.trial_id = trial_id
        self.config: dict[str, Any] = dict(config or {})
        self.last_result: dict[str, Any] = {}
        self.checkpoint = None


class SimulationCallbacks(Protocol):
    """What ``simulate(callbacks=...)`` tells, in Ray Tune's order (after the searcher and scheduler)."""

    def on_search_start(self, searcher: Any) -> None: ...
    def on_trial_start(self, trial: Any) -> None: ...
    def on_trial_result(self, trial: Any, result: dict[str, Any]) -> None: ...
    def on_trial_complete(self, trial: Any) -> None: ...
    def on_trial_error(self, trial: Any) -> None: ...


def _no_timer(_step: str) -> AbstractContextManager[None]:
    return contextlib.nullcontext()


@dataclass
class _Running:
    trial: _SimTrial
    number: int
    entry: TableEntry
    index: int
    started: float
    epoch: int = 0


def true_front_hypervolume(space: TableSpace) -> float:
    """Normalised hypervolume of the front of every fully trained entry of the table."""
    from nas.results.pareto import HypervolumeTracker, normalised_hypervolume

    table = space.table
    names = list(table.objectives)
    tracker = HypervolumeTracker(list(table.objectives.values()), [table.reference[n] for n in names])
    for point in table.final_points(names):
        tracker.add(point)
    return normalised_hypervolume(tracker.volume, table.objectives, table.reference) or 0.0


def simulate(space: TableSpace, settings: SimulationSettings, *, true_hypervolume: float | None = None,
             proxy_scores: dict[int, ProxyOutcome] | None = None, study: Any = None,
             callbacks: SimulationCallbacks | None = None,
             timer: Callable[[str], AbstractContextManager[None]] = _no_timer) -> SimulationRun:
    """Replay one search on ``space``'s table (see the module docstring); deterministic for a seed.

    ``proxy_scores`` (table entry index -> outcome, see ``nas.bench.proxy_scores``) is needed when
    ``settings.proxy`` is not ``"none"``. ``study``, ``callbacks`` and ``timer`` are the measuring
    hooks of the module docstring.
    """
    import optuna
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import Searcher

    from nas.results.pareto import HypervolumeTracker, normalised_hypervolume
    from nas.search.moasha import make_scheduler
    from nas.search.proxy_rung import ProxyRung
    from nas.search.searcher import OptunaMultiObjectiveSearcher, make_sampler

    table = space.table
    proxy = None
    if settings.proxy != "none":
        if proxy_scores is None:
            raise ValueError(f"proxy {settings.proxy!r} needs the table's proxy scores (proxy_scores=)")
        unknown = ProxyOutcome(-math.inf, math.inf, 0.0)
        proxy = ProxyRung(lambda params, number: proxy_scores.get(space.nearest(params), unknown),
                          name=settings.proxy, reduction_factor=settings.reduction_factor, rule=settings.proxy_rule)
    settings = replace(settings, cost=cost_column(table, settings.cost))
    objectives = dict(table.objectives)
    names = list(objectives)
    missing = [n for n in names if n not in table.reference]
    if missing:
        raise ValueError(f"table {table.space!r} has no hypervolume reference for {missing}")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if study is None:
        study = optuna.create_study(directions=["maximize" if d == "max" else "minimize" for d in objectives.values()],
                                    sampler=make_sampler(settings.sampler, seed=settings.seed))
    scheduler = make_scheduler(settings.scheduler, objectives=objectives, max_t=table.epochs,
                               grace_period=settings.grace_period, reduction_factor=settings.reduction_factor)
    searcher = OptunaMultiObjectiveSearcher(
        study=study, sample=space.space.suggest, objectives=objectives, max_epochs=table.epochs,
        max_trials=settings.max_trials, stopped_by_scheduler=scheduler.stopped_trials.__contains__,
        identity=space.identity, untried=space.untried, proxy=proxy,
    )
    if callbacks is not None:
        callbacks.on_search_start(searcher)
    tracker = HypervolumeTracker(list(objectives.values()), [table.reference[n] for n in names])
    events: list[tuple[float, int, str]] = []
    running: dict[str, _Running] = {}
    trials: list[SimulatedTrial] = []
    curve: list[tuple[float, float]] = []
    sequence = 0
    now = 0.0
    finished = False

    def schedule(trial_id: str, at: float) -> None:
        nonlocal sequence
        sequence += 1
        heapq.heappush(events, (at, sequence, trial_id))

    def fill() -> None:
        nonlocal finished
        while not finished and len(running) < settings.workers:
            trial_id = f"t{sequence:06d}"
            scored = searcher.proxy_seconds
            with timer("suggest"):
                config = searcher.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                finished = True
                return
            index = space.nearest(config["params"])
            trial = _SimTrial(trial_id, config)
            scheduler.on_trial_add(None, trial)
            run = _Running(trial, int(config["optuna_number"]), space.entries[index], index, now)
            running[trial_id] = run
            if callbacks is not None:
                with timer("callbacks"):
                    callbacks.on_trial_start(trial)
            delay = settings.start_seconds + (searcher.proxy_seconds - scored)
            schedule(trial_id, now + delay + _epoch_cost(run.entry, 1, settings.cost))

    def end(run: _Running, state: str) -> None:
        del running[run.trial.trial_id]
        trials.append(SimulatedTrial(run.number, run.index, state, run.started, now, run.epoch))

    fill()
    while events:
        at, _, trial_id = heapq.heappop(events)
        if at > settings.budget:
            break
        now = at
        run = running[trial_id]
        run.epoch += 1
        result = _result(run.entry, run.epoch, names)
        if result is None:  # the entry raised while building or training: Ray's error path
            with timer("tell"):
                searcher.on_trial_complete(trial_id, error=True)
            scheduler.on_trial_error(None, run.trial)
            with timer("tell"):
                searcher.record_failure_reason(trial_id, run.entry.reason or "error")
            if callbacks is not None:
                with timer("callbacks"):
                    callbacks.on_trial_error(run.trial)
            end(run, "FAIL")
        else:
            with timer("scheduler"):
                decision = scheduler.on_trial_result(None, run.trial, result)
            if decision != TrialScheduler.STOP:
                with timer("record"):
                    searcher.on_trial_result(trial_id, result)
            if callbacks is not None:  # Ray tells its callbacks every result, a stopping one too
                with timer("callbacks"):
                    callbacks.on_trial_result(run.trial, result)
            run.trial.last_result = result
            last = run.epoch >= table.epochs or result.get("diverged")
            if decision == TrialScheduler.STOP or last:
                with timer("scheduler"):
                    scheduler.on_trial_complete(None, run.trial, result)
                with timer("tell"):
                    searcher.on_trial_complete(trial_id, result=result)
                if callbacks is not None:
                    with timer("callbacks"):
                        callbacks.on_trial_complete(run.trial)
                state = _state(study, run.number)
                if state == "COMPLETE":
                    tracker.add([float(result[n]) for n in names])
                    curve.append((now, normalised_hypervolume(tracker.volume, objectives, table.reference) or 0.0))
                end(run, state)
            else:
                schedule(trial_id, now + _epoch_cost(run.entry, run.epoch + 1, settings.cost))
        fill()
    truth = true_front_hypervolume(space) if true_hypervolume is None else true_hypervolume
    return SimulationRun(settings=settings, table=table.space, trials=trials, curve=curve, true_hypervolume=truth,
                         proposals=dict(searcher.proposals), exhausted=searcher.space_exhausted,
                         ended=min(now if not events else settings.budget, settings.budget))


def cost_column(table: Any, cost: str = "auto") -> str:
    """The column that times an epoch: ``epoch_cpu_seconds`` when every row has it, else ``epoch_seconds``."""
    if cost != "auto":
        return cost
    rows = [row for entry in table.entries for row in entry.rows]
    return "epoch_cpu_seconds" if rows and all(row.get("epoch_cpu_seconds") is not None for row in rows) \
        else "epoch_seconds"


def _state(study: Any, number: int) -> str:
    from nas.search.store import frozen_trial

    return frozen_trial(study, number).state.name


def _epoch_cost(entry: TableEntry, epoch: int, column: str) -> float:
    """Simulated seconds of an entry's epoch; a failing or diverging epoch costs what the last one did."""
    rows = entry.rows
    if not rows:
        return 1.0
    row = rows[min(epoch, len(rows)) - 1]
    value = row.get(column)
    if value is None:
        raise ValueError(f"table entry {entry.index} has no {column!r} at epoch {epoch}")
    return max(float(value), 1e-3)


def _result(entry: TableEntry, epoch: int, names: list[str]) -> dict[str, Any] | None:
    """What the trainable reports after ``epoch`` of an entry; ``None`` where it raised instead."""
    if epoch <= len(entry.rows) and all(entry.rows[epoch - 1].get(n) is not None for n in names):
        return {**entry.rows[epoch - 1], "epoch": epoch}
    if entry.status == DIVERGED:
        return {**dict.fromkeys(names, math.nan), "epoch": epoch, "diverged": True,
                "fail_reason": entry.reason or "diverged"}
    if entry.status == FAILED or epoch > len(entry.rows):
        return None
    return {**dict.fromkeys(names, math.nan), "epoch": epoch, "diverged": True, "fail_reason": "non-finite metrics"}
