"""Where a search lives: the run folder, the Optuna study and the options it was started with.

Run-folder layout (``--root``, default ``./nas-runs``)::

    <root>/optuna.db          Optuna RDB storage (SQLite default; one study per search name)
    <root>/mlflow.db          MLflow tracking store (SQLite default), artifacts in <root>/mlartifacts/
    <root>/<name>/search.json the options the search was launched with (secrets masked)
    <root>/<name>/space.py    a copy of the search-space file
    <root>/<name>/trials/<n>/ final weights and metrics of finished trials
    <root>/<name>/ray/        Ray Tune's experiment folders (unless --storage-path)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.search.records import TrialRecord, records_from_study

OPTIONS_FILE = "search.json"
STORAGE_ENV = "NAS_STORAGE"


def default_storage_url(root: Path) -> str:
    """SQLite Optuna storage inside the run folder."""
    return f"sqlite:///{(Path(root) / 'optuna.db').resolve()}"


def default_tracking_uri(root: Path) -> str:
    """SQLite MLflow store inside the run folder."""
    return f"sqlite:///{(Path(root) / 'mlflow.db').resolve()}"


def default_artifact_location(root: Path, name: str) -> str:
    """Artifact folder of a search's MLflow experiment inside the run folder."""
    return (Path(root) / "mlartifacts" / name).resolve().as_uri()


def mask(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to print and log)."""
    from nas._urls import mask_url

    return mask_url(url)


def open_storage(url: str) -> Any:
    """Open an Optuna ``RDBStorage`` for a SQLAlchemy URL, with one clear error if it fails."""
    import optuna
    import sqlalchemy.exc

    if "://" not in url:
        raise NasError(f"--storage {mask(url)!r} is not a SQLAlchemy URL (e.g. sqlite:///runs/optuna.db)")
    from nas._urls import engine_kwargs_for

    engine_kwargs = engine_kwargs_for(url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        if url.startswith("sqlite:"):
            _write_ahead_log(storage.engine)
        return storage
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as error:
        raise NasError(f"--storage {mask(url)!r} is malformed: {str(error).splitlines()[0]}") from None
    except sqlalchemy.exc.OperationalError as error:
        raise NasError(f"--storage {mask(url)!r} is unreachable: {str(error.orig).splitlines()[0]}") from None
    except Exception as error:  # driver-specific connection errors have no common base class
        raise NasError(f"--storage {mask(url)!r} cannot be opened: {str(error).splitlines()[0]}") from None


def _write_ahead_log(engine: Any) -> None:
    """Put a SQLite study in WAL mode with ``synchronous=NORMAL``.

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


def resolve_storage_url(options: dict[str, Any], override: str | None = None) -> str:
    """The real storage URL of a search: the override, ``$NAS_STORAGE`` or the stored one.

    A URL with a password is stored masked, so reopening such a search needs the URL again.
    """
    url = override or options.get("storage")
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

    @property
    def records(self) -> list[TrialRecord]:
        """Every trial of the study, freshly read."""
        return records_from_study(self.study)

    @property
    def space_file(self) -> Path:
        """The copy of the space file kept with the search."""
        return self.search_dir / "space.py"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI the search logged to."""
        return self.options.get("tracking_uri") or default_tracking_uri(self.root)

    @property
    def hypervolume(self) -> float | None:
        """The search's latest hypervolume, raw (``None`` before the first complete trial)."""
        history = self.study.user_attrs.get("hypervolume_history") or []
        return float(history[-1][1]) if history else None

    @property
    def normalised_hypervolume(self) -> float | None:
        """The latest hypervolume as a fraction of the reference box (0..1)."""
        from nas.search.pareto import normalised_hypervolume

        raw = self.hypervolume
        return None if raw is None else normalised_hypervolume(raw, self.objectives, self.reference)

    def trial_dir(self, number: int) -> Path:
        """Folder holding a finished trial's weights and metrics."""
        return self.search_dir / "trials" / str(number)


def open_search(root: str | Path, name: str, *, storage: str | None = None) -> SearchHandle:
    """Open the search ``name`` of a run folder (one clear error when it does not exist)."""
    import optuna

    root = Path(root)
    search_dir = root / name
    if not (search_dir / OPTIONS_FILE).is_file():
        known = list_search_names(root)
        hint = f"; searches in {root}: {', '.join(known)}" if known else f"; {root} holds no search"
        raise NasError(f"unknown search {name!r}{hint}")
    options = read_options(search_dir)
    url = resolve_storage_url(options, storage)
    store = open_storage(url)
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
    )


def list_search_names(root: str | Path) -> list[str]:
    """Names of the searches in a run folder, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if (p / OPTIONS_FILE).is_file()]
    return [p.name for p in sorted(dirs, key=lambda p: (p / OPTIONS_FILE).stat().st_mtime)]
