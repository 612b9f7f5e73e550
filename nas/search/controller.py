"""The search controller: Optuna study in an RDB, Ray Tune running the trials, honest bookkeeping.

``prepare_search`` checks everything a user can get wrong (space file, storage, name, Ray address,
epochs, trials) before anything is written, so a bad input leaves the storage untouched.
``run_search`` then runs a Ray Tune ``Tuner`` with the Optuna multi-objective searcher and the
Pareto-aware scheduler, and tells every listener (MLflow tracking, the live view) what happens, from
this one process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import math
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nas.errors import NasError
from nas.results.layout import RAY_DIR, SPACE_FILE, default_storage_url, default_tracking_uri, trial_dir
from nas.results.metrics import METRICS, OBJECTIVE_METRICS
from nas.results.records import COMPLETE, FAIL, PRUNED, TrialRecord, records_from_study
from nas.search import store
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
from nas.search.reference import BASIS as REFERENCE_BASIS

log = logging.getLogger(__name__)


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
            store.check_name(self.name)
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
    lock: store.SearchLock | None = None  # held from creation to the end of the run

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


def _default_name(space_name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", space_name).strip("-.") or "search"
    return f"{safe[:store.NAME_MAX - 16]}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def prepare_search(options: SearchOptions,
                   before_create: Callable[[str, str, Any], None] | None = None) -> PreparedSearch:
    """Validate the options and open (or create) the study; raise ``NasError`` on bad input.

    Everything a user can get wrong is checked before anything is written; ``before_create(name,
    tracking_uri, space)`` runs after every check, holding the name's lock (the launcher uses it to
    make sure the tracking store answers). The returned search holds the lock until ``release()``.
    """
    import optuna

    from nas.space import load_space

    options.validate()
    root = store.check_root(options.root)
    if options.resume:
        if not options.name:
            raise NasError("--resume needs --name of the search to continue")
        saved = store.read_options(root / options.name) if (root / options.name).is_dir() else None
        if saved is None:
            raise NasError(f"cannot resume {options.name!r}: no such search in {root}")
        space = load_space(root / options.name / SPACE_FILE)
        options = _merge_saved(options, saved)
    else:
        space = load_space(options.space)
    _check_metrics(space)
    name = options.name or _default_name(space.name)
    search_dir = root / name
    trials = options.trials or space.trials
    epochs = options.epochs or space.epochs
    dataset = options.dataset or space.dataset
    data_info = _check_dataset(dataset, options.data_src)
    space.check_fits(data_info)  # a space that cannot fit the data: one line, before anything is written

    ray_address = _check_ray_address(options.address)
    cpus, gpus = _cluster_resources(ray_address)
    cpus_per_trial = options.cpus_per_trial or 1.0
    concurrency = options.concurrency or max(1, int(cpus // cpus_per_trial))
    if options.cpus_per_trial is None and options.concurrency:
        cpus_per_trial = max(1.0, float(cpus // options.concurrency))
    _check_resources(ray_address, cpus_per_trial, options.gpus_per_trial, cpus, gpus)
    storage_url = options.storage or default_storage_url(root)
    lock = store.SearchLock(root, name)
    if lock.held_elsewhere():
        raise _busy(name, lock, resume=options.resume)
    exists = store.study_exists_at(storage_url, name)
    _check_existence(name, storage_url, exists, resume=options.resume)
    if options.resume:
        _check_unfinished(storage_url, name, trials)
    tracking_uri = options.tracking_uri or default_tracking_uri(root)

    reference = None if exists else _space_reference(space, options.data_src)
    # Every check passed: from here on things are written, under the name's lock (the first write).
    if not lock.acquire():
        raise _busy(name, lock, resume=options.resume)
    created: Any = None  # the storage of a study created here, deleted again if the rest fails
    had_folder = search_dir.exists()
    try:
        if before_create is not None:
            before_create(name, tracking_uri, space)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = store.open_storage(storage_url)
        # The lock covers one run folder; a launch of the same name against the same server storage
        # from another run folder is caught by the storage itself.
        _check_existence(name, storage_url, store.study_exists(storage, name), resume=options.resume)
        if exists:
            study = optuna.load_study(study_name=name, storage=storage)
        else:
            study = _create_study(storage, name, space, epochs, trials, reference)
            created = storage
        search_dir.mkdir(parents=True, exist_ok=True)
        if not options.resume:
            shutil.copyfile(space.source_file, search_dir / SPACE_FILE)
        saved_options = asdict(options) | {
            "name": name,
            "space": str(Path(options.space).resolve()) if not options.resume else options.space,
            "trials": trials,
            "epochs": epochs,
            "dataset": dataset,
            "storage": store.portable_url(store.mask(storage_url), root),
            "tracking_uri": store.portable_url(store.mask(tracking_uri), root),
            "objectives": dict(space.objectives),
            "space_hash": space.source_hash,
            "resume": False,
            "time_budget": None,  # a budget is for one run: a resume takes its own
            "yes": False,
        }
        store.write_options(search_dir, saved_options)
    except BaseException:
        # A half-created search (its folder could not be written) would hold the name forever.
        if created is not None:
            with contextlib.suppress(Exception):
                optuna.delete_study(study_name=name, storage=created)
        if not had_folder:
            shutil.rmtree(search_dir, ignore_errors=True)
        lock.release()
        raise
    return PreparedSearch(
        options=options, space=space, name=name, root=root, search_dir=search_dir, storage_url=storage_url,
        tracking_uri=tracking_uri, study=study, trials=trials, epochs=epochs, dataset=dataset,
        concurrency=concurrency, cpus_per_trial=cpus_per_trial, ray_address=ray_address, data_info=data_info,
        lock=lock,
    )


def _busy(name: str, lock: store.SearchLock, *, resume: bool) -> NasError:
    """The error for a search name whose lock another process holds (it creates or runs that search)."""
    holder = f" (pid {lock.holder()})" if lock.holder() else ""
    if resume:
        return NasError(f"search {name} is running in another process{holder}; wait for it or stop it first")
    return NasError(f"search {name} is being created by another process{holder}")


def _check_existence(name: str, storage_url: str, exists: bool, *, resume: bool) -> None:
    if exists and not resume:
        raise NasError(f"search {name!r} already exists in {store.mask(storage_url)}; pass --resume to continue it "
                       "or choose another --name")
    if resume and not exists:
        raise NasError(f"cannot resume {name!r}: no study of that name in {store.mask(storage_url)}")


def _check_unfinished(storage_url: str, name: str, trials: int) -> None:
    """A resume of a search that has nothing left to run says so instead of starting Ray."""
    import optuna
    from optuna.trial import TrialState

    from nas.search.searcher import counts_toward_budget

    storage = store.open_storage(storage_url, read_only=storage_url.startswith("sqlite:"))
    try:
        frozen = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()
    done = sum(counts_toward_budget(t) for t in frozen)
    # A RUNNING trial was cut off by a killed controller and runs again; WAITING retries beyond the
    # budget never would.
    if done >= trials and not any(t.state == TrialState.RUNNING for t in frozen):
        raise NasError(f"search {name} is already complete ({done} of {trials} trials); nothing to resume "
                       f"(see nas pareto {name})")


def _create_study(storage: Any, name: str, space: Any, epochs: int, trials: int,
                  reference: dict[str, float]) -> Any:
    import optuna

    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            directions=["maximize" if mode == "max" else "minimize" for mode in space.objectives.values()],
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise NasError(f"search {name} is being created by another process") from None
    study.set_metric_names(list(space.objectives))
    study.set_user_attr("objectives", dict(space.objectives))
    study.set_user_attr("space_name", space.name)
    study.set_user_attr("space_hash", space.source_hash)
    study.set_user_attr("max_epochs", epochs)
    study.set_user_attr("trials", trials)
    study.set_user_attr("reference", reference)
    unbounded = [m for m in space.objectives if m not in reference]
    study.set_user_attr("reference_basis", REFERENCE_BASIS + (
        f"; {', '.join(unbounded)}: 1.1 x the worst of the first complete trials (not bounded by the space here)"
        if unbounded else ""))
    return study


def _space_reference(space: Any, data_src: str | None) -> dict[str, float]:
    """The hypervolume reference of the space's objectives, fixed before the first trial."""
    from nas.search.reference import space_reference

    try:
        return space_reference(space, data_src=data_src)
    except (ValueError, RuntimeError) as error:
        where = space.source_file or space.name
        raise NasError(f"{where}: cannot bound the space's objectives for the hypervolume reference "
                       f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None


def _check_metrics(space: Any) -> None:
    """Objectives and constraints must be metrics the trainer reports, or no trial could ever finish."""
    where = space.source_file or space.name
    for kind, names in (("objective", space.objectives), ("constraint", space.constraints)):
        for metric in names:
            if metric not in OBJECTIVE_METRICS:
                raise NasError(f"{where}: {kind} {metric!r} is never reported by the trainer; "
                               f"use one of {', '.join(OBJECTIVE_METRICS)}")


def _merge_saved(options: SearchOptions, saved: dict[str, Any]) -> SearchOptions:
    """On resume the saved options win, except where the user passes connection details again."""
    merged = SearchOptions(**{k: v for k, v in saved.items() if k in SearchOptions.__dataclass_fields__})
    merged.resume = True
    merged.name = options.name
    merged.verbose = options.verbose
    merged.time_budget = options.time_budget  # never the stored one: it would end every resume as it ended the run
    merged.yes = options.yes
    if options.address:
        merged.address = options.address
    merged.root = options.root  # where the run folder is now, not where it was launched
    merged.storage = options.storage or store.resolve_storage_url(saved, root=options.root)
    if options.tracking_uri:
        merged.tracking_uri = options.tracking_uri
    elif saved.get("tracking_uri") and "***" in saved["tracking_uri"]:
        raise NasError(f"search {options.name!r} logs to a password-protected MLflow server; pass --tracking-uri")
    elif merged.tracking_uri:
        merged.tracking_uri = store.located_url(merged.tracking_uri, options.root)
    merged.space = str(Path(saved.get("space", "")))
    return merged


def _check_dataset(name: str, src: str | None) -> Any:
    from nas.data import get_info
    from nas.data._registry import resolve_src

    info = get_info(name, src=src)  # raises NasError listing the known datasets
    resolve_src(name, src)  # a built-in dataset refuses --data-src, a folder dataset needs an existing one
    return info


def _check_ray_address(address: str | None) -> str | None:
    """An explicit address must have a Ray cluster behind it: fail before touching anything."""
    if not address:
        return None
    import ray

    if ray.is_initialized():
        return address
    if address != "auto":
        _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise NasError(f"--address {address!r}: no Ray cluster answers there ({str(error).splitlines()[0]})") from None
    return address


def _check_reachable(address: str) -> None:
    """A plain TCP connect first: ``ray.init`` keeps retrying an address with nothing behind it for minutes."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise NasError(f"--address {address!r} is not HOST:PORT or 'auto'")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as error:
        raise NasError(f"--address {address!r}: no Ray cluster answers there ({error.strerror or error})") from None


def _cluster_resources(address: str | None) -> tuple[float, float]:
    """(CPUs, GPUs) that trials can use: this machine's for a local search, else the cluster's."""
    if address:
        import ray

        resources = ray.cluster_resources()
        return float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    import torch

    return float(os.cpu_count() or 1), float(torch.cuda.device_count() if torch.cuda.is_available() else 0)


def _check_resources(address: str | None, cpus_per_trial: float, gpus_per_trial: float, cpus: float,
                     gpus: float) -> None:
    """A trial asking for more than the cluster has would wait forever: refuse it before launch."""
    where = f"the Ray cluster at {address}" if address else "this machine"
    if gpus_per_trial > gpus:
        have = "no GPU" if gpus == 0 else f"only {gpus:g} GPU(s)"
        raise NasError(f"--gpus-per-trial {gpus_per_trial:g}: {where} has {have}, so no trial could ever start")
    if cpus_per_trial > cpus:
        raise NasError(f"--cpus-per-trial {cpus_per_trial:g}: {where} has only {cpus:g} CPU(s), so no trial could "
                       "ever start")


def _start_ray(prepared: PreparedSearch) -> None:
    import ray

    if ray.is_initialized():
        return
    with _loopback_node():
        ray.init(
            num_cpus=int(os.cpu_count() or 1),
            num_gpus=None,
            object_store_memory=prepared.options.object_store_mb * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=prepared.options.verbose,
            logging_level=logging.INFO if prepared.options.verbose else logging.CRITICAL,
            configure_logging=True,
        )
    prepared.started_ray = True


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """Start a local Ray whose every process listens on 127.0.0.1 only.

    On Linux Ray makes the node's address the machine's outward-facing IP (even for "127.0.0.1"),
    and its GCS, raylet, driver and workers listen on all interfaces. With cluster support off
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's mode for laptops) the node address is loopback and
    every listener binds to it. Ray reads that variable once, at import, into
    ``ray_constants.ENABLE_RAY_CLUSTER``: the constant is switched too, for this start only, so that
    a later ``ray.init(address=...)`` in the same process still joins a real cluster as usual. The
    processes started here inherit the variable.
    """
    from ray._private import ray_constants

    old_env = os.environ.get(LOOPBACK_ENV)
    old_constant = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_constant
        if old_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = old_env


class _EventPump:
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
    resume ends every trial's MLflow run as the study says (``search_resumed``); only per-epoch metrics
    still queued when the process died are missing from MLflow.
    """

    HOLD_LIMIT_S = 0.5
    QUEUE_LIMIT = 10_000

    def __init__(self) -> None:
        import queue
        import threading

        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None] = queue.Queue(
            maxsize=self.QUEUE_LIMIT)
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
        while (item := self._queue.get()) is not None:
            while (wait := self._held_until - time.monotonic()) > 0:
                time.sleep(min(wait, 0.005))
            function, args, kwargs = item
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


class _Bookkeeper:
    """Ray Tune callback: the single place where trial events reach the study's extras and listeners."""

    def __init__(self, prepared: PreparedSearch, searcher: Any, listeners: Sequence[Any]) -> None:
        self.prepared = prepared
        self.searcher = searcher
        self.listeners = list(listeners)
        self.numbers: dict[str, int] = {}
        self.nodes: dict[int, str] = {}
        self.started: set[int] = set()  # trials listeners heard start
        self.started_at = time.monotonic()
        self._pump = _EventPump()
        self._front_pending = False
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
            "space_file": Path(self.prepared.space.source_file or "space.py").name,
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
        frozen = study._storage.get_trial(study._storage.get_trial_id_from_study_id_trial_number(
            study._study_id, number))
        self._set_attr(number, "ray_restarts", int(frozen.user_attrs.get("ray_restarts", 0)) + 1)
        # Wall-clock time, comparable with the kill time of a node in another process (benchmarks).
        self._set_attr(number, "ray_restarted_at", [*frozen.user_attrs.get("ray_restarted_at", []), time.time()])

    def _set_attr(self, number: int, key: str, value: Any) -> None:
        study = self.prepared.study
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        if not study._storage.get_trial(trial_id).state.is_finished():
            study._storage.set_trial_user_attr(trial_id, key, value)

    def on_trial_error(self, trial: Any) -> None:
        if not self.searcher.exhausted:  # another trial will take the slot
            self._pump.hold()
        number = self.number_of(trial)
        reason = _error_reason(trial)
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
        study = self.prepared.study
        frozen = study._storage.get_trial(study._storage.get_trial_id_from_study_id_trial_number(
            study._study_id, number))
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
        self._front_pending = True
        self._pump.submit(self._update_front_now, force=force)

    def close(self) -> list[str]:
        """Finish all queued bookkeeping; returns the errors it met."""
        self._pump.close()
        return self._pump.errors

    def _update_front_now(self, *, force: bool) -> None:
        from collections import Counter

        from nas.search.summary import SUMMARY_ATTR, search_summary

        self._front_pending = False
        frozen = self.prepared.study.get_trials(deepcopy=False)
        records = records_from_study(self.prepared.study, frozen)
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


def _error_reason(trial: Any) -> str:
    """One line from the trial's error: the exception's last line, not the whole traceback."""
    text = ""
    error_file = getattr(trial, "error_file", None)
    if error_file and os.path.isfile(error_file):
        with open(error_file) as handle:
            text = handle.read()
    if not text and getattr(trial, "error_msg", None):
        text = trial.error_msg
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if not lines:
        return "error"
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return line[:300]
    return lines[-1][:300]


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


def run_search(prepared: PreparedSearch, listeners: Sequence[Any] = (), *,
               trainable: Callable[[dict[str, Any], Any], None] | None = None) -> SearchResult:
    """Run the prepared search to the end (or to Ctrl-C, SIGTERM or the time budget) and return its result.

    However it ends, no trial is left RUNNING: trials still open when it stops are recorded as
    interrupted (FAIL ``"interrupted"``, enqueued again for a resume), in the study and for every
    listener alike. ``trainable(config, setup)`` replaces the real candidate training; benchmarks use
    it to time the orchestration alone with trials of known length.
    """
    import ray
    from ray import tune
    from ray.tune.error import TuneError

    from nas.search.moasha import make_scheduler
    from nas.search.searcher import OptunaMultiObjectiveSearcher, make_sampler, recover_interrupted
    from nas.search.stopping import StopControl
    from nas.search.trainable import TrialSetup, run_trial

    space = prepared.space
    options = prepared.options
    study = prepared.study
    if options.resume:
        recover_interrupted(study)
    study.sampler = make_sampler(options.sampler, seed=options.seed, constrained=bool(space.constraints),
                                 history=options.sampler_history)
    scheduler = make_scheduler(options.scheduler, objectives=dict(space.objectives), max_t=prepared.epochs,
                               grace_period=options.grace_period, reduction_factor=options.reduction_factor)
    searcher = OptunaMultiObjectiveSearcher(
        study=study,
        sample=functools.partial(space.suggest, data_info=prepared.data_info),
        objectives=dict(space.objectives),
        max_epochs=prepared.epochs,
        constraints=space.constraint_values if space.constraints else None,
        max_trials=prepared.trials,
        stopped_by_scheduler=scheduler.stopped_trials.__contains__,
        proxy=_proxy_rung(prepared),
    )
    if not options.verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the legacy reporter at verbose=0 prints nothing
    if prepared.ray_address is None:
        _start_ray(prepared)
    recipe = space.recipe.to_dict()
    setup = TrialSetup(
        space_source=space.source_text or "",
        space_path=str(space.source_file),
        dataset=prepared.dataset,
        epochs=prepared.epochs,
        recipe=recipe,
        data_src=options.data_src,
        cpus_per_trial=prepared.cpus_per_trial,
        seed=options.seed,
        objectives=tuple(space.objectives),
    )
    bookkeeper = _Bookkeeper(prepared, searcher, listeners)
    if options.resume:
        bookkeeper.search_resumed()
    trainable = tune.with_resources(
        tune.with_parameters(trainable or run_trial, setup=setup),
        {"cpu": prepared.cpus_per_trial, "gpu": options.gpus_per_trial},
    )
    stop = StopControl(options.time_budget)
    storage_path = options.storage_path or str((prepared.search_dir / RAY_DIR).resolve())
    attempt = len([p for p in Path(storage_path).glob("attempt-*")]) if Path(storage_path).is_dir() else 0
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=-1,
            max_concurrent_trials=prepared.concurrency,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"attempt-{attempt}",
            storage_path=storage_path,
            stop=stop.stopper(),
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[_RayCallback(bookkeeper)],
            verbose=1 if options.verbose else 0,
        ),
    )
    started = time.monotonic()
    ray_error: BaseException | None = None
    try:
        with stop.handling_signals():
            searcher.stop_requested = stop.stop_all  # a trial failing after a stop request was cut off, not broken
            stop.start()
            try:
                tuner.fit()
            except KeyboardInterrupt:  # a second signal: stop at once
                stop.request("signal", stop.signal or signal.SIGINT)
            except (TuneError, ray.exceptions.RayError) as error:
                ray_error = error
    finally:
        # Ray Tune ends a stopped run without telling the searcher about the trials still running.
        bookkeeper.trials_interrupted(searcher.interrupt_open_trials())
        bookkeeper.update_front(force=True)
        for error in bookkeeper.close():
            print(f"nas: warning: bookkeeping error during the search: {error}", file=sys.stderr)
        if prepared.started_ray:
            ray.shutdown()
    if ray_error is not None:
        raise NasError(f"the Ray Tune run failed: {_first_line(ray_error)}; rerun with --verbose for the "
                       "traceback (the study keeps every finished trial: nas resume continues it)") from ray_error
    records = records_from_study(study)
    result = _result(prepared, records, time.monotonic() - started, bookkeeper.nodes)
    result.space_exhausted = searcher.space_exhausted
    result.proposals = dict(searcher.proposals)
    result.error = searcher.sample_error
    result.interrupted = stop.reason == "signal"
    result.stop_signal = stop.signal if result.interrupted else None
    result.time_budget_reached = stop.reason == "time_budget" and result.trials_done < result.trials
    return result


def _proxy_rung(prepared: PreparedSearch) -> Any:
    """The search's rung 0 (``--proxy``): SAHD on a few fixed training batches, scored in this process."""
    options = prepared.options
    if options.proxy == "none":
        return None
    from nas.data import make_loaders
    from nas.proxy import take_batches
    from nas.search.proxy_rung import PROXY_BATCH_SIZE, PROXY_BATCHES, ProxyRung, sahd_scorer

    train, _, _ = make_loaders(prepared.dataset, batch_size=PROXY_BATCH_SIZE, src=options.data_src, augment=False,
                               seed=options.seed, num_workers=1)
    batches = take_batches(train, PROXY_BATCHES, PROXY_BATCH_SIZE)
    return ProxyRung(sahd_scorer(prepared.space, prepared.data_info, batches, seed=options.seed), name=options.proxy,
                     reduction_factor=options.reduction_factor, rule=options.proxy_rule)


def _first_line(error: BaseException) -> str:
    """The innermost cause's first line: Ray wraps the error that matters in its own."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0].strip()}" if lines else type(error).__name__


def _result(prepared: PreparedSearch, records: list[TrialRecord], seconds: float,
            nodes: dict[int, str]) -> SearchResult:
    from nas.results.pareto import front_of
    from nas.search.searcher import counts_toward_budget

    front = front_of(records, prepared.objectives)
    history = prepared.study.user_attrs.get("hypervolume_history") or []
    reference = {k: float(v) for k, v in (prepared.study.user_attrs.get("reference") or {}).items()}
    done = sum(counts_toward_budget(t) for t in prepared.study.get_trials(deepcopy=False))
    return SearchResult(
        name=prepared.name, records=records, objectives=prepared.objectives, front=front,
        hypervolume=float(history[-1][1]) if history else None, seconds=seconds,
        trial_nodes=nodes, reference=reference, trials=prepared.trials, trials_done=done,
    )


def _make_ray_callback_class() -> type:
    from ray import tune

    class RayCallback(tune.Callback):
        """Forwards Ray Tune's events to the bookkeeper, in the controller process."""

        def __init__(self, bookkeeper: _Bookkeeper) -> None:
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


def _RayCallback(bookkeeper: _Bookkeeper) -> Any:  # noqa: N802 - reads like the class it builds
    return _make_ray_callback_class()(bookkeeper)
