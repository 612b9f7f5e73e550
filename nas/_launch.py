"""Launching a search: the controller, MLflow tracking and the live view put together.

This is the composition root that ``nas launch`` / ``nas resume`` call; tests call it the same way.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from nas._urls import mask_url
from nas.results.layout import SPACE_FILE, default_artifact_location, default_tracking_uri
from nas.results.records import records_from_study
from nas.search.controller import run_search
from nas.search.options import SearchOptions, SearchResult
from nas.search.prepare import prepare_search
from nas.search.progress import LiveView


def launch(options: SearchOptions, *, stream: TextIO | None = None, live: bool | None = None) -> SearchResult:
    """Run a search end to end; returns when it finishes, is interrupted or runs out of budget.

    The MLflow parent run always ends with the search's true state: FINISHED, KILLED (a signal or the
    time budget stopped it) or FAILED (an error, the space's sample failing over and over).
    """
    if not options.verbose:
        _quiet_libraries()
    from nas.tracking import TrackerProcess, adopt_run_folder

    trackers: list[TrackerProcess] = []

    def start_tracker(name: str, tracking_uri: str, space: Any) -> None:
        # The writer process opens nothing until asked: started here, its imports overlap the
        # controller's remaining preparation (the space's energy reference).
        artifact_location = default_artifact_location(options.root, name) \
            if tracking_uri == default_tracking_uri(options.root) else None
        trackers.append(TrackerProcess(tracking_uri, name, objectives=dict(space.objectives),
                                       artifact_location=artifact_location))

    def check_tracking(name: str, tracking_uri: str, space: Any) -> None:
        if tracking_uri == default_tracking_uri(options.root):
            adopt_run_folder(options.root)  # a copied or moved run folder logs to its own artifacts
        trackers[0].check_reachable()

    try:
        prepared = prepare_search(options, before_create=check_tracking, when_checked=start_tracker)
    except BaseException:
        for unused in trackers:
            unused.close()
        raise
    tracker = trackers[0]
    status = "FAILED"
    try:
        tracker.start_search(
            space_file=prepared.search_dir / SPACE_FILE,
            search_params=_search_params(prepared),
            resume=prepared.options.resume,
        )
        view = LiveView(prepared.name, total_trials=prepared.trials, objectives=prepared.objectives,
                        stream=stream or sys.stdout, live=live, root=str(prepared.root), epochs=prepared.epochs,
                        records=records_from_study(prepared.study))
        try:
            result = run_search(prepared, listeners=[tracker, view])
            status = "FINISHED" if result.finished else "FAILED" if result.error else "KILLED"
            if not result.interrupted:  # after a Ctrl-C the user wants the prompt back, not model uploads
                _log_front_models(prepared, tracker, result)
        finally:
            view.close()
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            status = "KILLED"
        try:
            tracker.finish_search(status)
        except Exception as close_error:  # the error already under way is the one to report
            print(f"nas: warning: could not close the MLflow run: {close_error}", file=sys.stderr)
        raise
    else:
        tracker.finish_search(status)
    finally:
        prepared.release()
    return result


def _quiet_libraries() -> None:
    """Keep the terminal to nas's own view: library chatter goes to ``--verbose`` only."""
    import warnings

    import optuna

    from nas._quiet import quiet_libraries

    quiet_libraries()
    # raised on behalf of nas's own calls (set_metric_names, ...), so the filter by module keeps them
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _search_params(prepared: Any) -> dict[str, Any]:
    options = prepared.options
    return {
        "space": prepared.space.name,
        "space_file": str(options.space),
        "space_hash": prepared.space.source_hash,
        "dataset": prepared.dataset,
        "trials": prepared.trials,
        "epochs": prepared.epochs,
        "concurrency": prepared.concurrency,
        "cpus_per_trial": prepared.cpus_per_trial,
        "sampler": options.sampler,
        "scheduler": options.scheduler,
        "seed": options.seed,
        "storage": mask_url(prepared.storage_url),
        "address": options.address or "local",
        "energy_profile": prepared.space.recipe.energy_profile,
        "objectives": ",".join(f"{k}:{v}" for k, v in prepared.objectives.items()),
        **{f"recipe.{k}": v for k, v in prepared.space.recipe.to_dict().items() if k != "extra"},
    }


def _log_front_models(prepared: Any, tracker: Any, result: SearchResult) -> None:
    """Log the trained model of every front member to its MLflow child run (export picks it up)."""
    import numpy as np

    from nas.data import get_info
    from nas.results.layout import trial_weights_path
    from nas.train import load_trial_model

    info = get_info(prepared.dataset, src=prepared.options.data_src)
    steps = (info.time_steps,) if info.time_steps else ()  # event frames: [1, T, C, H, W]
    example = np.zeros((1, *steps, info.in_chans, info.img_size, info.img_size), dtype=np.float32)
    for record in result.front:
        weights = trial_weights_path(prepared.search_dir, record.number)
        if weights.is_file():
            model = load_trial_model(prepared.space, record.params, info, weights)
            tracker.log_trial_model(record.number, model, example)
