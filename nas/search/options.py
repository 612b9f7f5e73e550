"""What a search is asked to do (``SearchOptions``), what it is once prepared, and what it produced.

``SearchOptions`` checks its values when it is made, so a bad flag is one clear error before anything
is read or written; nothing here imports Ray, Optuna or torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nas.errors import NasError
from nas.results.records import TrialRecord
from nas.search import runs
from nas.search.choices import (
    DEFAULT_PROXY,
    DEFAULT_PROXY_RULE,
    DEFAULT_SAMPLER,
    DEFAULT_SCHEDULER,
    PROXIES,
    PROXY_RULES,
    SAMPLERS,
    SCHEDULERS,
)

SEED_MAX = 2**32 - 1  # numpy's seed range, which Optuna's samplers pass the seed to
# Budgets above these need --yes: an extra zero typed by mistake should not start a search of weeks.
LARGE_BUDGETS = {"trials": 1000, "epochs": 200, "concurrency": 64}
EXIT_TIME_BUDGET = 3  # `nas launch` / `nas resume` exit status when the time budget ended the search early


@dataclass
class SearchOptions:
    """Everything ``nas launch`` accepts; ``None`` means "the space's default"."""

    space: str
    name: str | None = None
    trials: int | None = None
    epochs: int | None = None
    concurrency: int | None = None
    sampler: str = DEFAULT_SAMPLER
    sampler_history: int | None = None  # model only the N most recent finished trials + the front (large searches)
    scheduler: str = DEFAULT_SCHEDULER
    proxy: str = DEFAULT_PROXY
    proxy_rule: str = DEFAULT_PROXY_RULE
    dataset: str | None = None
    data_src: str | None = None
    seed: int = 0
    root: str = "nas-runs"
    storage: str | None = None
    tracking_uri: str | None = None
    address: str | None = None
    storage_path: str | None = None
    gpus_per_trial: float = 0.0
    cpus_per_trial: float | None = None
    time_budget: float | None = None
    max_failures: int = 1
    reduction_factor: int = 3
    grace_period: int = 1
    verbose: bool = False
    resume: bool = False
    object_store_mb: int = 200
    yes: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """One clear error for values that cannot work; nothing is read or written here."""
        for flag, value in (("--trials", self.trials), ("--epochs", self.epochs), ("--concurrency", self.concurrency),
                            ("--sampler-history", self.sampler_history)):
            if value is not None and value < 1:
                raise NasError(f"{flag} must be at least 1, got {value}")
        for flag, number in (("--cpus-per-trial", self.cpus_per_trial), ("--gpus-per-trial", self.gpus_per_trial),
                             ("--time-budget", self.time_budget)):
            if number is not None and not math.isfinite(number):
                raise NasError(f"{flag} must be a finite number, got {number}")
        if self.cpus_per_trial is not None and self.cpus_per_trial <= 0:
            raise NasError(f"--cpus-per-trial must be positive, got {self.cpus_per_trial}")
        if self.gpus_per_trial < 0:
            raise NasError(f"--gpus-per-trial must be >= 0, got {self.gpus_per_trial}")
        if self.max_failures < 0:
            raise NasError(f"--max-failures must be >= 0, got {self.max_failures}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise NasError(f"--time-budget must be positive seconds, got {self.time_budget}")
        if not 0 <= self.seed <= SEED_MAX:
            raise NasError(f"--seed must be in 0..{SEED_MAX}, got {self.seed}")
        if self.sampler not in SAMPLERS:
            raise NasError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.scheduler not in SCHEDULERS:
            raise NasError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.reduction_factor < 2:
            raise NasError(f"--reduction-factor must be at least 2, got {self.reduction_factor}")
        if self.proxy not in PROXIES:
            raise NasError(f"--proxy must be one of {', '.join(PROXIES)}, got {self.proxy!r}")
        if self.proxy_rule not in PROXY_RULES:
            raise NasError(f"--proxy-rule must be one of {', '.join(PROXY_RULES)}, got {self.proxy_rule!r}")
        if self.name is not None:
            runs.check_name(self.name)
        for key, limit in LARGE_BUDGETS.items():
            value = getattr(self, key)
            if value is not None and value > limit and not self.yes:
                raise NasError(f"--{key} {value} is a very large budget (more than {limit}); pass --yes if you mean it")


class SearchListener(Protocol):
    """What the controller tells observers (MLflow tracking, the live view). All optional."""

    def trial_started(self, number: int, params: dict[str, Any], *, attrs: dict[str, Any]) -> Any: ...
    def trial_epoch(self, number: int, metrics: dict[str, float], step: int) -> None: ...
    def trial_finished(self, number: int, state: str, *, reason: str | None = None,
                       final_metrics: dict | None = None) -> None: ...
    def search_resumed(self, records: list[TrialRecord], *, attrs: dict[str, Any]) -> None: ...
    def update_front(self, records: list[TrialRecord], *, reference: dict[str, float], history: list[float],
                     force: bool = False) -> None: ...


@dataclass
class PreparedSearch:
    """A validated search, ready to run: study opened, folders made, nothing trained yet."""

    options: SearchOptions
    space: Any
    name: str
    root: Path
    search_dir: Path
    storage_url: str
    tracking_uri: str
    study: Any
    trials: int
    epochs: int
    dataset: str
    concurrency: int
    cpus_per_trial: float
    ray_address: str | None
    data_info: Any = None  # nas.data.DataInfo of the searched dataset: every config is sized for it
    started_ray: bool = False
    counting_policy: dict[str, Any] = field(default_factory=dict)
    lock: runs.SearchLock | None = None  # held from creation to the end of the run

    @property
    def objectives(self) -> dict[str, str]:
        return dict(self.space.objectives)

    def release(self) -> None:
        """Give up the search's lock (the search may then be resumed by another process)."""
        if self.lock is not None:
            self.lock.release()


@dataclass
class SearchResult:
    """What a finished (or interrupted) search produced."""

    name: str
    records: list[TrialRecord]
    objectives: dict[str, str]
    front: list[TrialRecord]
    hypervolume: float | None
    seconds: float
    interrupted: bool = False  # stopped by a signal (Ctrl-C, SIGTERM)
    trial_nodes: dict[int, str] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)
    space_exhausted: bool = False
    proposals: dict[str, int] = field(default_factory=dict)
    stop_signal: int | None = None  # the signal that stopped it
    time_budget_reached: bool = False  # the time budget ended it before every trial was done
    trials: int = 0  # the search's budget of trials
    trials_done: int = 0  # trials that count toward it: complete, pruned and failed ones
    error: str | None = None  # why the search stopped on its own (e.g. a space whose sample keeps failing)

    @property
    def finished(self) -> bool:
        """True when the search ended by itself: every trial done or the space exhausted."""
        return not (self.interrupted or self.time_budget_reached or self.error)

    @property
    def normalised_hypervolume(self) -> float | None:
        """The hypervolume as a fraction of the reference box (0..1); ``None`` before any complete trial."""
        from nas.results.pareto import normalised_hypervolume

        if self.hypervolume is None:
            return None
        return normalised_hypervolume(self.hypervolume, self.objectives, self.reference)
