"""The Optuna study's storage: opening it (SQLite or a server), its URLs, and Optuna's private storage API.

The run folder (names, ``search.json``, locks, opening an existing search) is :mod:`nas.search.runs`;
its layout (file and folder names) is :mod:`nas.results.layout`.

Commands that only look (``nas status``, ``pareto``, ``report``, ``export``) open the storage
read-only (``open_storage(read_only=True)``): they never create, migrate or rewrite a study file.
The one process that writes a study (the controller, holding the search's ``SearchLock``) opens it
through :func:`single_writer_storage`, which reads back from the database only the trials it changed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nas._sqlite import write_ahead_log
from nas._urls import mask_url
from nas.errors import NasError

STORAGE_ENV = "NAS_STORAGE"
_OPTUNA_TABLES = ("studies", "trials", "version_info")
_SQLITE_MAGIC = b"SQLite format 3\x00"


# search.json writes a SQLite file inside the run folder with this in place of the folder's path, so a run
# folder that is copied or moved keeps working from its new place (``--root NEW``).
RUN_FOLDER = "{run_folder}"


def portable_url(url: str, root: str | Path) -> str:
    """``url`` as ``search.json`` keeps it: a SQLite file inside the run folder relative to it (``RUN_FOLDER``)."""
    if not url.startswith("sqlite:///"):
        return url
    path = Path(url.removeprefix("sqlite:///"))
    try:
        inside = path.resolve().relative_to(Path(root).resolve())
    except ValueError:
        return url
    return f"sqlite:///{RUN_FOLDER}/{inside.as_posix()}"


def located_url(url: str, root: str | Path) -> str:
    """The real URL of a ``search.json`` URL: ``RUN_FOLDER`` replaced by the run folder's absolute path."""
    if not url.startswith(f"sqlite:///{RUN_FOLDER}/"):
        return url
    return f"sqlite:///{Path(root).resolve() / url.removeprefix(f'sqlite:///{RUN_FOLDER}/')}"




def open_storage(url: str, *, read_only: bool = False) -> Any:
    """Open an Optuna ``RDBStorage`` for a SQLAlchemy URL, with one clear error if it fails.

    ``read_only`` (``nas status``, ``pareto``, ``report``, ``export``) never writes: the storage must
    already hold Optuna's tables (else "not a nas study"), a SQLite file is opened in SQLite's
    read-only mode and nothing is created, migrated or switched to WAL.
    """
    import sqlalchemy.exc

    if "://" not in url:
        raise NasError(f"--storage {mask_url(url)!r} is not a SQLAlchemy URL (e.g. sqlite:///runs/optuna.db)")
    from nas._urls import engine_kwargs_for

    engine_kwargs = engine_kwargs_for(url)
    sqlite_file = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    if sqlite_file is not None and read_only:
        _check_sqlite_file(sqlite_file)
        url = f"sqlite:///file:{sqlite_file.resolve()}?mode=ro&uri=true"
    elif sqlite_file is not None:
        _check_sqlite_file(sqlite_file, missing_ok=True)
        try:
            sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise NasError(f"--storage {mask_url(url)!r}: cannot create folder {sqlite_file.parent} "
                           f"({error.strerror or error})") from None
    try:
        if read_only:
            _check_optuna_tables(url, engine_kwargs)
        storage = _rdb_storage(url, engine_kwargs, read_only=read_only)
        if sqlite_file is not None and not read_only:
            write_ahead_log(storage.engine)
        return storage if read_only else single_writer_storage(storage)
    except NasError:
        raise
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as error:
        raise NasError(f"--storage {mask_url(url)!r} is malformed: {str(error).splitlines()[0]}") from None
    except sqlalchemy.exc.OperationalError as error:
        reason = str(error.orig).splitlines()[0]
        if sqlite_file is not None:
            raise NasError(f"study storage {sqlite_file}: {reason}; check the file and its folder") from None
        raise NasError(f"--storage {mask_url(url)!r} is unreachable: {reason}") from None
    except sqlalchemy.exc.DatabaseError as error:
        where = sqlite_file or mask_url(url)
        reason = str(getattr(error, "orig", error)).splitlines()[0]
        raise NasError(f"study storage {where} is corrupt or not a nas study ({reason})") from None
    except Exception as error:  # driver-specific connection errors have no common base class
        raise NasError(f"--storage {mask_url(url)!r} cannot be opened: {str(error).splitlines()[0]}") from None


def _rdb_storage(url: str, engine_kwargs: dict[str, Any], *, read_only: bool) -> Any:
    """Optuna's RDBStorage; a second process creating the same fresh schema at once is waited for once.

    Two launches on a new SQLite file both create Optuna's tables; the slower one then fails on the
    alembic version row the faster one wrote ("UNIQUE constraint failed: alembic_version"). The
    schema exists by then, so opening again succeeds.
    """
    import optuna
    import sqlalchemy.exc

    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=read_only)
    except sqlalchemy.exc.IntegrityError:
        if read_only:
            raise
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def single_writer_storage(backend: Any) -> Any:
    """Optuna's caching storage over ``backend`` (an ``RDBStorage``), for the one process that writes the study.

    Optuna's own cache keeps finished trials but reads every unfinished trial back from the database
    whenever it is asked for, in case another process changed it: TPE's constant liar asks for all of
    them two or three times per ask, and each ``tell`` and ``suggest`` reads its trial back again
    (``benchmarks/bench_scale.py``: three quarters of the controller's time at K = 100). A search's study
    has one writer (``SearchLock``), so here

    - every write of params, intermediate values and attributes also updates the cached trial (a
      changed copy: lists handed out earlier keep what they held), which is then served from memory;
    - a trial whose state changed is read back once (the database sets its timestamps);
    - the params a trial is given while it is sampled are written together, in one transaction, when
      the trial is next written or read from the database or on ``flush_params`` (the searcher calls
      it before handing the trial to Ray); the first value of each parameter name is written at once,
      so that the database checks it against the distributions other trials used.

    Readers in other processes are unaffected.
    """
    import copy
    import json

    from optuna.distributions import check_distribution_compatibility, distribution_to_json
    from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    class SingleWriterStorage(_CachedStorage):
        """``_CachedStorage`` that writes through to its cache and reads back only state changes (see above)."""

        def __init__(self, rdb: Any) -> None:
            super().__init__(rdb)
            self._written: set[int] = set()  # trial ids whose state changed since the last read
            self._newest: dict[int, int] = {}  # study id -> largest trial id read so far
            self._held_params: dict[int, list[tuple[str, float, Any]]] = {}  # trial id -> params not written yet
            self._in_order: set[int] = set()  # studies whose cached trials were added in number order

        @property
        def engine(self) -> Any:
            """The SQLAlchemy engine of the database."""
            return self._backend.engine

        def _change_cached(self, trial_id: int, change: Any) -> None:
            """Replace the cached trial by a copy that ``change`` updated (under the lock)."""
            where = self._trial_id_to_study_id_and_number.get(trial_id)
            if where is None:
                return
            trials = self._studies[where[0]].trials
            updated = copy.copy(trials[where[1]])
            change(updated)
            trials[where[1]] = updated

        def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                            distribution: Any) -> None:
            with self._lock:
                study_id, number = self._trial_id_to_study_id_and_number[trial_id]
                study = self._studies[study_id]
                known = study.param_distribution.get(param_name)
                if known is None:  # first use of the name here: the database compares it with other trials'
                    self._backend._set_trial_param(trial_id, param_name, param_value_internal, distribution, None)
                    study.param_distribution[param_name] = distribution
                else:
                    check_distribution_compatibility(known, distribution)
                    self.check_trial_is_updatable(trial_id, study.trials[number].state)
                    self._held_params.setdefault(trial_id, []).append((param_name, param_value_internal, distribution))

                def change(trial: Any) -> None:
                    trial.params = {**trial.params, param_name: distribution.to_external_repr(param_value_internal)}
                    trial.distributions = {**trial.distributions, param_name: distribution}

                self._change_cached(trial_id, change)

        def flush_params(self, trial_id: int | None = None) -> None:
            """Write the held-back params of ``trial_id`` (every trial's when ``None``) in one transaction."""
            with self._lock:
                self._flush_params_locked(trial_id)

        def _flush_params_locked(self, trial_id: int | None) -> None:
            held = self._held_params if trial_id is None else {trial_id: self._held_params.get(trial_id, [])}
            held = {t: items for t, items in held.items() if items}
            if not held:
                return
            with _create_scoped_session(self._backend.scoped_session) as session:
                for held_id, items in held.items():
                    trial = models.TrialModel.find_or_raise_by_id(held_id, session)
                    self.check_trial_is_updatable(held_id, trial.state)
                    session.add_all([models.TrialParamModel(trial_id=held_id, param_name=name, param_value=value,
                                                            distribution_json=distribution_to_json(distribution))
                                     for name, value, distribution in items])
            for held_id in held:
                self._held_params.pop(held_id, None)

        def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
            self.flush_params(trial_id)
            try:
                return super().set_trial_state_values(trial_id, state=state, values=values)
            finally:
                self._written.add(trial_id)

        def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
            self.flush_params(trial_id)
            super().set_trial_intermediate_value(trial_id, step, intermediate_value)

            def change(trial: Any) -> None:
                trial.intermediate_values = {**trial.intermediate_values, step: float(intermediate_value)}

            with self._lock:
                self._change_cached(trial_id, change)

        def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
            self.flush_params(trial_id)
            super().set_trial_user_attr(trial_id, key, value)
            stored = json.loads(json.dumps(value))  # what a read from the database gives back

            def change(trial: Any) -> None:
                trial.user_attrs = {**trial.user_attrs, key: stored}

            with self._lock:
                self._change_cached(trial_id, change)

        def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
            self.flush_params(trial_id)
            super().set_trial_system_attr(trial_id, key, value)
            stored = json.loads(json.dumps(value))

            def change(trial: Any) -> None:
                trial.system_attrs = {**trial.system_attrs, key: stored}

            with self._lock:
                self._change_cached(trial_id, change)

        def get_trial(self, trial_id: int) -> Any:
            with self._lock:
                where = self._trial_id_to_study_id_and_number.get(trial_id)
                stale = trial_id in self._written
            if where is None:
                return self._backend.get_trial(trial_id)
            if stale:
                self._read_trials_from_remote_storage(where[0])
            with self._lock:
                return self._studies[where[0]].trials[where[1]]

        def _read_trials_from_remote_storage(self, study_id: int) -> None:
            with self._lock:
                self._flush_params_locked(None)
                study = self._studies.setdefault(study_id, _StudyInfo())
                written, self._written = self._written, set()
                if study_id in self._newest:
                    changed = study.unfinished_trial_ids & written
                    if not changed:  # no other process writes the study: nothing can have changed
                        return
                    newer_than = self._newest[study_id]
                else:  # the first read: everything Optuna's cache does not hold yet
                    changed = set(study.unfinished_trial_ids)
                    newer_than = study.last_finished_trial_id
                trials = self._backend._get_trials(study_id, states=None, included_trial_ids=changed,
                                                   trial_id_greater_than=newer_than)
                self._newest[study_id] = max([newer_than, *(t._trial_id for t in trials)])
                self._add_trials_to_cache(study_id, trials)
                for trial in trials:
                    if trial.state.is_finished():
                        study.unfinished_trial_ids.discard(trial._trial_id)
                        study.last_finished_trial_id = max(study.last_finished_trial_id, trial._trial_id)
                    else:
                        study.unfinished_trial_ids.add(trial._trial_id)

        def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Any = None) -> list[Any]:
            self._read_trials_from_remote_storage(study_id)
            with self._lock:
                trials = self._studies[study_id].trials
                # Kept in number order (see _add_trials_to_cache): no sort of the whole study per call.
                listed = list(trials.values()) if study_id in self._in_order else sorted(
                    trials.values(), key=lambda t: t.number)
                if states is not None:
                    listed = [t for t in listed if t.state in states]
                return copy.deepcopy(listed) if deepcopy else listed

        def _add_trials_to_cache(self, study_id: int, trials: list[Any]) -> None:
            study = self._studies[study_id]
            in_order = study_id in self._in_order or not study.trials
            newest = next(reversed(study.trials), None)
            for trial in trials:
                if trial.number in study.trials:
                    continue  # replaced in place
                if newest is not None and trial.number < newest:
                    in_order = False  # a trial older than the newest one cached, added after it
                newest = trial.number if newest is None else max(newest, trial.number)
            super()._add_trials_to_cache(study_id, trials)
            if in_order:
                self._in_order.add(study_id)
            else:
                self._in_order.discard(study_id)

        def create_new_trial(self, study_id: int, template_trial: Any = None) -> int:
            # The new trial comes back from the database complete: it need not be read again.
            trial_id = super().create_new_trial(study_id, template_trial)
            with self._lock:
                self._studies[study_id].unfinished_trial_ids.add(trial_id)
                if study_id in self._newest:
                    self._newest[study_id] = max(self._newest[study_id], trial_id)
            return trial_id

    return SingleWriterStorage(backend)


def _check_sqlite_file(path: Path, *, missing_ok: bool = False) -> None:
    """One line for a SQLite study path that is a folder, missing, empty or not SQLite at all."""
    if path.is_dir():
        raise NasError(f"study storage {path} is a folder, not a SQLite file")
    if not path.exists():
        if missing_ok:
            return
        raise NasError(f"study storage {path} does not exist (no search was run with it)")
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
    except OSError as error:
        raise NasError(f"study storage {path}: cannot read it ({error.strerror or error})") from None
    if not head and missing_ok:
        return  # an empty file is what SQLite itself leaves for a new database
    if not head:
        raise NasError(f"study storage {path} is an empty file, not a nas study")
    if head != _SQLITE_MAGIC:
        raise NasError(f"study storage {path} is corrupt or not a SQLite database")


def _check_optuna_tables(url: str, engine_kwargs: dict[str, Any]) -> None:
    """Refuse a storage without Optuna's tables before Optuna would create them."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, **engine_kwargs)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    missing = [t for t in _OPTUNA_TABLES if t not in tables]
    if missing:
        where = url.removeprefix("sqlite:///file:").split("?")[0] if url.startswith("sqlite:") else mask_url(url)
        raise NasError(f"study storage {where} is not a nas study (no Optuna tables)")


def study_exists(storage: Any, name: str) -> bool:
    """True when the storage holds a study of that name."""
    import optuna

    return any(s.study_name == name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))


def resolve_storage_url(options: dict[str, Any], override: str | None = None, root: str | Path | None = None) -> str:
    """The real storage URL of a search: the override, ``$NAS_STORAGE`` or the stored one (a SQLite file of
    the run folder found in ``root``, where the folder is now).

    A URL with a password is stored masked, so reopening such a search needs the URL again.
    """
    url = override or options.get("storage")
    if url and root is not None:
        url = located_url(url, root)
    if url and "***" in url:
        url = os.environ.get(STORAGE_ENV)
        if not url:
            raise NasError(
                f"search {options.get('name')!r} uses a password-protected storage; pass --storage or set {STORAGE_ENV}"
            )
    if not url:
        raise NasError(f"search {options.get('name')!r} has no storage URL recorded")
    return url


# Optuna's private storage ------------------------------------------------------------------------
# Optuna has no public lookup of a trial by number (``study.tell`` does it internally), no public study
# id and no query by trial ids: everything in nas that needs ``study._storage`` / ``study._study_id``
# goes through the helpers below, so an Optuna upgrade that moves them is fixed here alone.


def study_id(study: Any) -> int:
    """The study's id in its storage (what optuna-dashboard's URLs name)."""
    return int(study._study_id)


def _backend(study: Any) -> Any:
    """The RDB storage under a study's (possibly cached) storage."""
    return getattr(study._storage, "_backend", study._storage)


def trial_id_of(study: Any, number: int) -> int:
    """The storage id of trial ``number`` of ``study``."""
    return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)


def frozen_trial(study: Any, number: int) -> Any:
    """Trial ``number`` as the storage has it now (one trial read, not the whole study)."""
    return study._storage.get_trial(trial_id_of(study, number))


def frozen_of(trial: Any) -> Any:
    """A live ``optuna.Trial`` as the storage has it now."""
    return trial.study._storage.get_trial(trial._trial_id)


def write_held_params(study: Any) -> None:
    """Write the params the controller's storage holds back while trials are sampled (``single_writer_storage``)."""
    flush = getattr(study._storage, "flush_params", None)
    if flush is not None:
        flush()


def live_trial(study: Any, number: int) -> Any:
    """A writable ``optuna.Trial`` handle for a trial known only by number (after a restore)."""
    import optuna

    return optuna.trial.Trial(study, trial_id_of(study, number))


def set_open_trial_attr(study: Any, number: int, key: str, value: Any) -> None:
    """Set a user attribute of trial ``number`` unless it has finished (Optuna refuses writes to those)."""
    trial_id = trial_id_of(study, number)
    if not study._storage.get_trial(trial_id).state.is_finished():
        study._storage.set_trial_user_attr(trial_id, key, value)


def trials_by_number(study: Any, numbers: list[int]) -> list[Any]:
    """The frozen trials of ``numbers``, read with two queries whatever their count (a server storage
    answers each query in milliseconds, so one query per trial made ``nas pareto`` take seconds)."""
    import sqlalchemy

    if not numbers:
        return []
    backend = _backend(study)
    query = sqlalchemy.text("select trial_id from trials where study_id = :study and number in :numbers"
                            ).bindparams(sqlalchemy.bindparam("numbers", expanding=True))
    with backend.engine.connect() as connection:
        ids = {int(row[0]) for row in connection.execute(query, {"study": study._study_id,
                                                                  "numbers": [int(n) for n in numbers]})}
    # Optuna's reader of "these trial ids, or any id above a bound": no trial id lies above a 32-bit integer.
    return backend._get_trials(study._study_id, states=None, included_trial_ids=ids, trial_id_greater_than=2**31 - 1)


def state_counts(study: Any) -> dict[str, int]:
    """The study's number of trials per Optuna state, counted by the database (Optuna's ``trials`` table)."""
    import sqlalchemy

    engine = _backend(study).engine
    query = sqlalchemy.text("select state, count(*) from trials where study_id = :study group by state")
    with engine.connect() as connection:
        rows = connection.execute(query, {"study": study._study_id}).all()
    return {str(getattr(state, "name", state)): int(count) for state, count in rows}


def study_exists_at(url: str, name: str) -> bool:
    """Whether the storage at ``url`` holds a study ``name``, looked up without writing anything.

    A SQLite file that does not exist yet (or is empty, as SQLite leaves a new database) holds no
    study; a SQLite file that is not an Optuna storage is refused. Server storages are opened as
    usual: a new database on a server gets Optuna's tables, which a launch creates anyway.
    """
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        _check_sqlite_file(path, missing_ok=True)
        if not path.exists() or path.stat().st_size == 0:
            return False
        storage = open_storage(url, read_only=True)
    else:
        storage = open_storage(url)
    try:
        return study_exists(storage, name)
    finally:
        storage.engine.dispose()


