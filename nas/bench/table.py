"""Learning-curve tables: every epoch of many architectures of one search space, trained for real.

A table is the offline benchmark that the simulator replays: for each architecture (its params, as the
space's ``sample`` draws them) the metrics of every epoch the real trainer ran (``val_acc``,
``energy_uj``, ``sops``, ``macs``, ``firing_rate``, ``params``, ``time_steps``, ``epoch_seconds``,
``epoch_cpu_seconds``, ...), how the training ended, and how the table was made (machine, command,
seed, commit). Stored as gzip-compressed JSON (one object; a few hundred kB for hundreds of
architectures).
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import NasError

TABLE_FORMAT = 1
TABLES_DIR = Path(__file__).parent / "tables"
TABLE_SUFFIX = ".json.gz"

# How a table entry's training ended.
TRAINED = "trained"  # every epoch ran
DIVERGED = "diverged"  # the loss became NaN/inf; rows hold the epochs before it
FAILED = "failed"  # building or training raised; rows may be empty
ENTRY_STATUSES = (TRAINED, DIVERGED, FAILED)


@dataclass
class TableEntry:
    """One architecture of a table: its params and one metrics row per epoch that ran."""

    index: int
    params: dict[str, Any]
    rows: list[dict[str, Any]]
    status: str = TRAINED
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.status not in ENTRY_STATUSES:
            raise ValueError(f"entry {self.index}: status {self.status!r} is not one of {', '.join(ENTRY_STATUSES)}")

    @property
    def final(self) -> dict[str, Any] | None:
        """The last epoch's metrics of a fully trained entry (``None`` for diverged or failed ones)."""
        return self.rows[-1] if self.status == TRAINED and self.rows else None

    def row_at(self, epoch: int) -> dict[str, Any]:
        """The metrics after ``epoch`` epochs (1-based)."""
        return self.rows[epoch - 1]


@dataclass
class LearningCurveTable:
    """All entries of one space, with the facts needed to replay and to trust them."""

    space: str
    space_hash: str
    objectives: dict[str, str]
    epochs: int
    entries: list[TableEntry]
    meta: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)
    space_source: str = ""  # the space file the table was built from, so replays use exactly that space

    def __post_init__(self) -> None:
        for entry in self.entries:
            if entry.status == TRAINED and len(entry.rows) != self.epochs:
                raise ValueError(f"entry {entry.index} is marked trained but has {len(entry.rows)} of "
                                 f"{self.epochs} epochs")

    @property
    def trained(self) -> list[TableEntry]:
        """Entries that reached the full number of epochs."""
        return [e for e in self.entries if e.status == TRAINED]

    def final_points(self, objectives: Sequence[str] | None = None) -> list[list[float]]:
        """Final objective vectors of the trained entries, in entry order."""
        names = list(objectives or self.objectives)
        return [[float(e.rows[-1][n]) for n in names] for e in self.trained]

    def to_dict(self) -> dict[str, Any]:
        """The table as plain JSON-able data."""
        return {
            "format": TABLE_FORMAT,
            "space": self.space,
            "space_hash": self.space_hash,
            # pairs, not an object: the order is the study's order of objectives (saved with sorted keys)
            "objectives": [[name, direction] for name, direction in self.objectives.items()],
            "epochs": self.epochs,
            "reference": dict(self.reference),
            "space_source": self.space_source,
            "meta": dict(self.meta),
            "entries": [asdict(e) for e in self.entries],
        }

    def save(self, path: str | Path) -> Path:
        """Write the table (gzip JSON) atomically; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        # No name and mtime 0 in the header: the same table gives the same bytes wherever it is written.
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
            f.write(json.dumps(_finite_json(self.to_dict()), separators=(",", ":"), sort_keys=True).encode())
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "table") -> LearningCurveTable:
        """Rebuild a table from :meth:`to_dict` data; one clear error naming ``where`` and the field."""
        if not isinstance(data, Mapping):
            raise NasError(f"{where}: not a learning-curve table (expected a JSON object)")
        if data.get("format") != TABLE_FORMAT:
            raise NasError(f"{where}: table format {data.get('format')!r} is not {TABLE_FORMAT}")
        missing = [k for k in ("space", "objectives", "epochs", "entries") if k not in data]
        if missing:
            raise NasError(f"{where}: missing field(s) {', '.join(missing)}")
        try:
            entries = [TableEntry(**e) for e in data["entries"]]
            return cls(
                space=str(data["space"]),
                space_hash=str(data.get("space_hash", "")),
                objectives={str(k): str(v) for k, v in (data["objectives"].items() if isinstance(
                    data["objectives"], Mapping) else data["objectives"])},
                epochs=int(data["epochs"]),
                entries=entries,
                meta=dict(data.get("meta") or {}),
                reference={k: float(v) for k, v in (data.get("reference") or {}).items()},
                space_source=str(data.get("space_source") or ""),
            )
        except (TypeError, ValueError) as error:
            raise NasError(f"{where}: {error}") from None

    @classmethod
    def load(cls, path: str | Path) -> LearningCurveTable:
        """Read a table written by :meth:`save`."""
        path = Path(path)
        try:
            with gzip.open(path, "rb") as f:
                data = json.loads(f.read().decode())
        except FileNotFoundError:
            raise NasError(f"{path}: no such table") from None
        except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise NasError(f"{path}: not a readable learning-curve table ({error})") from None
        return cls.from_dict(data, str(path))


def _finite_json(value: Any) -> Any:
    """NaN and infinities as ``None``: strict JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(v) for v in value]
    return value


def list_tables() -> list[str]:
    """Names of the tables that ship with nas (``nas bench run --table NAME``)."""
    return sorted(p.name.removesuffix(TABLE_SUFFIX) for p in TABLES_DIR.glob(f"*{TABLE_SUFFIX}"))


def resolve_table(name_or_path: str | Path) -> Path:
    """A shipped table's name (``snnmlp``) or a path to a table file -> the file's path."""
    candidate = Path(name_or_path)
    if candidate.suffix and candidate.exists():
        return candidate
    shipped = TABLES_DIR / f"{name_or_path}{TABLE_SUFFIX}"
    if shipped.is_file():
        return shipped
    if candidate.exists():
        return candidate
    known = ", ".join(list_tables()) or "none"
    raise NasError(f"no learning-curve table {str(name_or_path)!r} (shipped tables: {known}; or give a file path)")


def load_table(name_or_path: str | Path) -> LearningCurveTable:
    """Load a shipped table by name, NAS-Bench-201 (``nasbench201[-DATASET[-COST]]``), or a table file by path."""
    from nas.bench.nasbench201 import PREFIX, nasbench201_table

    if str(name_or_path).startswith(PREFIX) and not Path(name_or_path).exists():
        return nasbench201_table(str(name_or_path))
    return LearningCurveTable.load(resolve_table(name_or_path))
