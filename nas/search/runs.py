"""The run folder: a search's name, folder, options file (``search.json``) and lock; opening an existing search.

Commands that only look (``nas status``, ``pareto``, ``report``, ``export``) open a search with
:func:`open_search`, read-only: they never create, migrate or rewrite a study file. The layout itself
(file and folder names) is :mod:`nas.results.layout`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas._urls import mask_url
from nas.errors import NasError
from nas.results.layout import LOCKS_DIR, OPTIONS_FILE, SPACE_FILE, default_tracking_uri, trial_dir
from nas.results.records import TrialRecord, records_from_study
from nas.search.store import located_url, open_storage, resolve_storage_url, state_counts, trials_by_number

NAME_MAX = 100
# One rule for every search name (launch, resume, status, ...): it names a study, a folder and an
# MLflow experiment at once, so it must be a safe file name and a safe MLflow filter value.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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
        if stored is not None and "counts" in stored and (stored.get("states") == state_counts(self.study)
                                   or SearchLock(self.root, self.name).held_elsewhere()):
            return stored
        frozen = self.study.get_trials(deepcopy=False)
        return search_summary(records_from_study(self.study, frozen), self.objectives,
                              Counter(t.state.name for t in frozen))

    def front_points(self) -> tuple[list[TrialRecord], dict[int, int]]:
        """The Pareto front, one record per distinct point (its lowest-numbered trial), and by that trial
        how many front members share the point; only those records are read, in one query (see
        :attr:`summary`: a front of thousands of trials at a handful of points is read in milliseconds)."""
        from nas.results.records import record_of
        from nas.search.summary import shared_points

        summary = self.summary
        names = list(self.study.metric_names or [])
        numbers, values = summary["front"], summary.get("front_values")
        if values is None:  # a summary stored before front_values: read every member
            members = [record_of(t, names) for t in trials_by_number(self.study, numbers)]
            numbers, values = [r.number for r in members], [[r.values[m] for m in self.objectives] for r in members]
        counts = shared_points(zip(numbers, values, strict=True))
        records = sorted((record_of(t, names) for t in trials_by_number(self.study, sorted(counts))),
                         key=lambda r: r.number)
        return records, counts

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
        raise NasError(f"search {name!r}: no study of that name in {mask_url(url)}") from None
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
