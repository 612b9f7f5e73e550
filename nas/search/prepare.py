"""Preparing a search: every check a user's input can fail, then the study, folder and options written.

``prepare_search`` checks everything a user can get wrong (space file, storage, name, Ray address,
epochs, trials) before anything is written, so a bad input leaves the storage untouched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nas._urls import mask_url
from nas.errors import NasError
from nas.results.layout import SPACE_FILE, default_storage_url, default_tracking_uri
from nas.results.metrics import OBJECTIVE_METRICS
from nas.search import runs, store
from nas.search.options import PreparedSearch, SearchOptions
from nas.search.reference import BASIS as REFERENCE_BASIS


def _default_name(space_name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", space_name).strip("-.") or "search"
    return f"{safe[:runs.NAME_MAX - 16]}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def prepare_search(options: SearchOptions,
                   before_create: Callable[[str, str, Any], None] | None = None,
                   when_checked: Callable[[str, str, Any], None] | None = None) -> PreparedSearch:
    """Validate the options and open (or create) the study; raise ``NasError`` on bad input.

    Everything a user can get wrong is checked before anything is written; ``before_create(name,
    tracking_uri, space)`` runs after every check, holding the name's lock (the launcher uses it to
    make sure the tracking store answers). ``when_checked`` (same arguments) runs as soon as the
    options passed their checks, before the seconds of the space's energy reference: the launcher
    starts its MLflow writer there, whose imports then overlap that work. The returned search holds
    the lock until ``release()``.
    """
    import optuna

    from nas.space import load_space

    options.validate()
    root = runs.check_root(options.root)
    if options.resume:
        if not options.name:
            raise NasError("--resume needs --name of the search to continue")
        saved = runs.read_options(root / options.name) if (root / options.name).is_dir() else None
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
    lock = runs.SearchLock(root, name)
    if lock.held_elsewhere():
        raise _busy(name, lock, resume=options.resume)
    exists = store.study_exists_at(storage_url, name)
    _check_existence(name, storage_url, exists, resume=options.resume)
    if options.resume:
        _check_unfinished(storage_url, name, trials)
    tracking_uri = options.tracking_uri or default_tracking_uri(root)
    if when_checked is not None:
        when_checked(name, tracking_uri, space)

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
            study = create_study(storage, name, space, epochs, trials, reference)
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
            "storage": store.portable_url(mask_url(storage_url), root),
            "tracking_uri": store.portable_url(mask_url(tracking_uri), root),
            "objectives": dict(space.objectives),
            "space_hash": space.source_hash,
            "resume": False,
            "time_budget": None,  # a budget is for one run: a resume takes its own
            "yes": False,
        }
        runs.write_options(search_dir, saved_options)
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


def _busy(name: str, lock: runs.SearchLock, *, resume: bool) -> NasError:
    """The error for a search name whose lock another process holds (it creates or runs that search)."""
    holder = f" (pid {lock.holder()})" if lock.holder() else ""
    if resume:
        return NasError(f"search {name} is running in another process{holder}; wait for it or stop it first")
    return NasError(f"search {name} is being created by another process{holder}")


def _check_existence(name: str, storage_url: str, exists: bool, *, resume: bool) -> None:
    if exists and not resume:
        raise NasError(f"search {name!r} already exists in {mask_url(storage_url)}; pass --resume to continue it "
                       "or choose another --name")
    if resume and not exists:
        raise NasError(f"cannot resume {name!r}: no study of that name in {mask_url(storage_url)}")


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


def create_study(storage: Any, name: str, space: Any, epochs: int, trials: int,
                 reference: dict[str, float]) -> Any:
    """A new study for ``space``: its directions and metric names, and the attributes every reader expects."""
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
    # The saved values passed the checks when the search was launched (a large budget with --yes, which is
    # not saved): they are taken as they are, whatever --yes this resume passes.
    kept = {k: v for k, v in saved.items() if k in SearchOptions.__dataclass_fields__}
    merged = SearchOptions(**(kept | {"yes": True}))
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
