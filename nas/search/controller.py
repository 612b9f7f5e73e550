"""The search controller: Optuna study in an RDB, Ray Tune running the trials, honest bookkeeping.

A search is made in three steps, each in its own module: :mod:`nas.search.options` (what is asked,
checked when made), :mod:`nas.search.prepare` (``prepare_search``: every check, then the study and
folder written) and this module's ``run_search``, which runs a Ray Tune ``Tuner`` with the Optuna
multi-objective searcher and the Pareto-aware scheduler; :mod:`nas.search.events` turns Ray's trial
events into study extras and listener calls (MLflow tracking, the live view), from this one process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.results.layout import RAY_DIR
from nas.results.records import TrialRecord, records_from_study
from nas.search.events import Bookkeeper, ray_callback
from nas.search.options import PreparedSearch, SearchResult

log = logging.getLogger(__name__)


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
    bookkeeper = Bookkeeper(prepared, searcher, listeners)
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
            callbacks=[ray_callback(bookkeeper)],
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
