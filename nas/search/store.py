"""Where a search lives: the run folder, the Optuna study and the options it was started with.

The run-folder layout (file and folder names) is :mod:`nas.results.layout`.

Commands that only look (``nas status``, ``pareto``, ``report``, ``export``) open the storage
read-only (``open_storage(read_only=True)``): they never create, migrate or rewrite a study file.
The one process that writes a study (the controller, holding the search's ``SearchLock``) opens it
through :func:`single_writer_storage`, which reads back from the database only the trials it changed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.results.layout import (
    ARTIFACTS_DIR,
    LOCKS_DIR,
    OPTIONS_FILE,
    SPACE_FILE,
    default_tracking_uri,
    trial_dir,
)
from nas.results.records import TrialRecord, records_from_study

STORAGE_ENV = "NAS_STORAGE"
NAME_MAX = 100
# One rule for every search name (launch, resume, status, ...): it names a study, a folder and an
# MLflow experiment at once, so it must be a safe file name and a safe MLflow filter value.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_OPTUNA_TABLES = ("studies", "trials", "version_info")
_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_name(name: str, what: str = "--name") -> str:
    """Return ``name`` when it is a valid search name, else raise ``NasError`` saying why.

    Letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit, at most ``NAME_MAX``
    characters.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise NasError(f"{what} {name!r} is not a valid search name: use letters, digits, '.', '_' and '-', "
                       "starting with a letter or digit")
    if len(name) > NAME_MAX:
        raise NasError(f"{what} is {len(name)} characters long; a search name has at most {NAME_MAX}")
    return name


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




def default_artifact_location(root: Path, name: str) -> str:
    """Artifact folder of a search's MLflow experiment inside the run folder."""
    return (Path(root) / ARTIFACTS_DIR / name).resolve().as_uri()


def mask(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to print and log)."""
    from nas._urls import mask_url

    return mask_url(url)


def open_storage(url: str, *, read_only: bool = False) -> Any:
    """Open an Optuna ``RDBStorage`` for a SQLAlchemy URL, with one clear error if it fails.

    ``read_only`` (``nas status``, ``pareto``, ``report``, ``export``) never writes: the storage must
    already hold Optuna's tables (else "not a nas study"), a SQLite file is opened in SQLite's
    read-only mode and nothing is created, migrated or switched to WAL.
    """
    import sqlalchemy.exc

    if "://" not in url:
        raise NasError(f"--storage {mask(url)!r} is not a SQLAlchemy URL (e.g. sqlite:///runs/optuna.db)")
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
            raise NasError(f"--storage {mask(url)!r}: cannot create folder {sqlite_file.parent} "
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
        raise NasError(f"--storage {mask(url)!r} is malformed: {str(error).splitlines()[0]}") from None
    except sqlalchemy.exc.OperationalError as error:
        reason = str(error.orig).splitlines()[0]
        if sqlite_file is not None:
            raise NasError(f"study storage {sqlite_file}: {reason}; check the file and its folder") from None
        raise NasError(f"--storage {mask(url)!r} is unreachable: {reason}") from None
    except sqlalchemy.exc.DatabaseError as error:
        where = sqlite_file or mask(url)
        reason = str(getattr(error, "orig", error)).splitlines()[0]
        raise NasError(f"study storage {where} is corrupt or not a nas study ({reason})") from None
    except Exception as error:  # driver-specific connection errors have no common base class
        raise NasError(f"--storage {mask(url)!r} cannot be opened: {str(error).splitlines()[0]}") from None


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
    on each ``get_all_trials``, in case another process changed it. TPE calls that two or three times
    per ask (constant liar: running trials count), so with K trials running an ask read K trials with
    all their params and attributes: 0.23 s per read at K = 100 on SQLite (``benchmarks/bench_scale.py``),
    three quarters of the controller's time. Here only the trials written through this storage since
    the last read (and trials created since) are read back; the others cannot have changed, because
    a search's study has one writer (``SearchLock``). Readers in other processes are unaffected.
    """
    from optuna.storages._cached_storage import _CachedStorage, _StudyInfo

    class SingleWriterStorage(_CachedStorage):
        """``_CachedStorage`` that re-reads only the unfinished trials this process wrote (see above)."""

        def __init__(self, rdb: Any) -> None:
            super().__init__(rdb)
            self._written: set[int] = set()  # trial ids written since the last read
            self._newest: dict[int, int] = {}  # study id -> largest trial id read so far

        @property
        def engine(self) -> Any:
            """The SQLAlchemy engine of the database."""
            return self._backend.engine

        def create_new_trial(self, study_id: int, template_trial: Any = None) -> int:
            trial_id = super().create_new_trial(study_id, template_trial)
            self._written.add(trial_id)
            return trial_id

        def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                            distribution: Any) -> None:
            super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
            self._written.add(trial_id)

        def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
            try:
                return super().set_trial_state_values(trial_id, state=state, values=values)
            finally:
                self._written.add(trial_id)

        def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
            super().set_trial_intermediate_value(trial_id, step, intermediate_value)
            self._written.add(trial_id)

        def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
            super().set_trial_user_attr(trial_id, key, value)
            self._written.add(trial_id)

        def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
            super().set_trial_system_attr(trial_id, key, value)
            self._written.add(trial_id)

        def _read_trials_from_remote_storage(self, study_id: int) -> None:
            with self._lock:
                study = self._studies.setdefault(study_id, _StudyInfo())
                written, self._written = self._written, set()
                if study_id in self._newest:
                    changed = study.unfinished_trial_ids & written
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
        where = url.removeprefix("sqlite:///file:").split("?")[0] if url.startswith("sqlite:") else mask(url)
        raise NasError(f"study storage {where} is not a nas study (no Optuna tables)")


def write_ahead_log(engine: Any) -> None:
    """Put a SQLite database (the study; the MLflow store too) in WAL mode with ``synchronous=NORMAL``.

    The controller writes after every epoch of every trial from inside Ray Tune's event loop; with
    SQLite's default rollback journal each write waits for two fsyncs, which workers feel as idle
    time. WAL also lets ``nas status`` read while a search writes. A committed write survives a
    crash of the process; only a power loss may drop the last few (SQLite's documented trade-off).
    """
    from sqlalchemy import event

    def on_connect(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened while Optuna created its tables get the pragmas too


def study_exists(storage: Any, name: str) -> bool:
    """True when the storage holds a study of that name."""
    import optuna

    return any(s.study_name == name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))


def write_options(search_dir: Path, options: dict[str, Any]) -> None:
    """Write ``search.json`` atomically."""
    search_dir.mkdir(parents=True, exist_ok=True)
    tmp = search_dir / (OPTIONS_FILE + ".tmp")
    tmp.write_text(json.dumps(options, indent=2, sort_keys=True, default=str))
    tmp.replace(search_dir / OPTIONS_FILE)


def read_options(search_dir: Path) -> dict[str, Any]:
    """Read ``search.json`` of a search folder."""
    path = search_dir / OPTIONS_FILE
    if not path.is_file():
        raise NasError(f"{search_dir}: no search here ({OPTIONS_FILE} missing)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise NasError(f"{path}: corrupt ({error})") from None


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


@dataclass
class SearchHandle:
    """An existing search, opened for reading (``nas status``, ``pareto``, ``report``, ``export``)."""

    name: str
    root: Path
    search_dir: Path
    options: dict[str, Any]
    study: Any
    storage_url: str
    objectives: dict[str, str] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)
    tracking_override: str | None = None

    @property
    def records(self) -> list[TrialRecord]:
        """Every trial of the study, freshly read."""
        return records_from_study(self.study)

    @property
    def space_file(self) -> Path:
        """The copy of the space file kept with the search."""
        return self.search_dir / SPACE_FILE

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI the search logged to (``--tracking-uri`` when given to the command)."""
        if self.tracking_override:
            return self.tracking_override
        stored = self.options.get("tracking_uri")
        if stored and "***" in stored:
            raise NasError(f"search {self.name!r} logs to a password-protected MLflow server; pass --tracking-uri")
        return located_url(stored, self.root) if stored else default_tracking_uri(self.root)

    @property
    def hypervolume(self) -> float | None:
        """The search's latest hypervolume, raw (``None`` before the first complete trial)."""
        history = self.study.user_attrs.get("hypervolume_history") or []
        return float(history[-1][1]) if history else None

    @property
    def normalised_hypervolume(self) -> float | None:
        """The latest hypervolume as a fraction of the reference box (0..1)."""
        from nas.results.pareto import normalised_hypervolume

        raw = self.hypervolume
        return None if raw is None else normalised_hypervolume(raw, self.objectives, self.reference)

    @property
    def summary(self) -> dict[str, Any]:
        """Counts by state, best values and front numbers (``nas.search.summary.search_summary``).

        The controller stores one with every front update. It is used as it is when it is current (the
        study's trial counts per state, one SQL query, are those it was computed from) or when the search
        is running (its lock is held: the summary is at most one front update old); otherwise, e.g. for a
        killed controller's study, it is computed from every trial, which takes seconds per thousand.
        """
        from collections import Counter

        from nas.search.summary import SUMMARY_ATTR, search_summary

        stored = self.study.user_attrs.get(SUMMARY_ATTR)
        if stored is not None and "counts" in stored and (stored.get("states") == _state_counts(self.study)
                                   or SearchLock(self.root, self.name).held_elsewhere()):
            return stored
        frozen = self.study.get_trials(deepcopy=False)
        return search_summary(records_from_study(self.study, frozen), self.objectives,
                              Counter(t.state.name for t in frozen))

    @property
    def front_records(self) -> list[TrialRecord]:
        """The records of the Pareto front only, read in one query (see :attr:`summary`)."""
        from nas.results.records import record_of

        names = list(self.study.metric_names or [])
        return sorted((record_of(t, names) for t in _trials_by_number(self.study, self.summary["front"])),
                      key=lambda r: r.number)

    def trial_dir(self, number: int) -> Path:
        """Folder holding a finished trial's weights and metrics."""
        return trial_dir(self.search_dir, number)


def open_search(root: str | Path, name: str, *, storage: str | None = None, tracking_uri: str | None = None,
                read_only: bool = True) -> SearchHandle:
    """Open the search ``name`` of a run folder (one clear error when it does not exist).

    ``storage`` and ``tracking_uri`` replace what ``search.json`` recorded. Read-only by default: looking
    at a search never writes to its storage.
    """
    import optuna

    root = check_root(root)
    if not name or Path(name).name != name or name in (".", ".."):
        raise NasError(f"search name {name!r} is not a name in {root}")
    search_dir = root / name
    if not (search_dir / OPTIONS_FILE).is_file():
        known = list_search_names(root)
        hint = f"; searches in {root}: {', '.join(known)}" if known else f"; {root} holds no search"
        raise NasError(f"unknown search {name!r}{hint}")
    options = read_options(search_dir)
    url = resolve_storage_url(options, storage, root)
    store = open_storage(url, read_only=read_only)
    try:
        study = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        raise NasError(f"search {name!r}: no study of that name in {mask(url)}") from None
    attrs = study.user_attrs
    return SearchHandle(
        name=name,
        root=root,
        search_dir=search_dir,
        options=options,
        study=study,
        storage_url=url,
        objectives=dict(attrs.get("objectives") or options.get("objectives") or {}),
        reference={k: float(v) for k, v in (attrs.get("reference") or {}).items()},
        tracking_override=tracking_uri,
    )


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


def live_trial(study: Any, number: int) -> Any:
    """A writable ``optuna.Trial`` handle for a trial known only by number (after a restore)."""
    import optuna

    return optuna.trial.Trial(study, trial_id_of(study, number))


def set_open_trial_attr(study: Any, number: int, key: str, value: Any) -> None:
    """Set a user attribute of trial ``number`` unless it has finished (Optuna refuses writes to those)."""
    trial_id = trial_id_of(study, number)
    if not study._storage.get_trial(trial_id).state.is_finished():
        study._storage.set_trial_user_attr(trial_id, key, value)


def _trials_by_number(study: Any, numbers: list[int]) -> list[Any]:
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


def _state_counts(study: Any) -> dict[str, int]:
    """The study's number of trials per Optuna state, counted by the database (Optuna's ``trials`` table)."""
    import sqlalchemy

    engine = _backend(study).engine
    query = sqlalchemy.text("select state, count(*) from trials where study_id = :study group by state")
    with engine.connect() as connection:
        rows = connection.execute(query, {"study": study._study_id}).all()
    return {str(getattr(state, "name", state)): int(count) for state, count in rows}


def check_root(root: str | Path) -> Path:
    """The run folder as a ``Path``; ``NasError`` when something that is not a folder is in its place."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise NasError(f"--root {root} is a file, not a run folder")
    return root


def list_search_names(root: str | Path) -> list[str]:
    """Names of the searches in a run folder, oldest first."""
    root = check_root(root)
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if (p / OPTIONS_FILE).is_file()]
    return [p.name for p in sorted(dirs, key=lambda p: (p / OPTIONS_FILE).stat().st_mtime)]


def newest_search_name(root: str | Path) -> str:
    """The name of the newest search of a run folder (what a command does when no name is given)."""
    names = list_search_names(root)
    if not names:
        raise NasError(f"no search in {root}; run nas launch first, or pass --root or a search name")
    return names[-1]


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


class SearchLock:
    """An exclusive lock on one search name of a run folder, held by the process that creates or runs it.

    ``<root>/.locks/<name>.lock`` (``flock``; the kernel drops it when the process dies, so a killed
    controller never leaves a stale lock). Two launches of one name cannot both create it, and two
    controllers never work on one study (a resume fails the trials it finds RUNNING).
    """

    def __init__(self, root: Path, name: str) -> None:
        self.path = Path(root) / LOCKS_DIR / f"{name}.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False when another process holds it."""
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            root = self.path.parent.parent
            raise NasError(f"--root {root}: cannot write there ({error.strerror or error})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:  # the holder's pid, for messages; also the first real write, so a full disk fails here
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as error:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            root = self.path.parent.parent
            raise NasError(f"--root {root}: cannot write there ({error.strerror or error})") from None
        self._fd = fd
        return True

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock now (looked up without creating anything)."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also drops the lock if it was just taken here
        return False

    def holder(self) -> str:
        """The process id written by the holder, for messages ("" when unknown)."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        """Give the lock back (closing the file drops it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
