"""Tables of a search for the terminal: the Pareto front and the searches of a run folder."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.results.records import COMPLETE, TrialCounts, TrialRecord, count_trials

FRONT_COLUMNS = ("trial", "family", "val_acc", "energy_uj", "sops", "time_steps", "params")


def knee_of(front: list[TrialRecord], objectives: dict[str, str]) -> TrialRecord | None:
    """The knee of a front (``nas.results.pareto.knee_index``), or None for an empty front."""
    import numpy as np

    from nas.results.pareto import knee_index

    if not front:
        return None
    points = np.asarray([[float(r.values[m]) for m in objectives] for r in front], dtype=float)
    return front[knee_index(points, list(objectives.values()))]


def front_rows(records: list[TrialRecord], objectives: dict[str, str],
               shared: Mapping[int, int] | None = None) -> list[dict[str, Any]]:
    """One row per distinct point of the front, sorted by the first objective (best first); ``knee`` is
    True for the knee. Trials with the same objective values are one row, its lowest-numbered trial, and
    when any point is shared a ``trials`` column counts them (``shared``: counts already known, by trial).
    """
    from nas.results.pareto import front_of

    front = front_of(records, objectives)
    counts = shared_points((r.number, [r.values[m] for m in objectives]) for r in front)
    front = [r for r in front if r.number in counts]
    if shared:
        counts = {n: c - 1 + shared.get(n, 1) for n, c in counts.items()}
    first, mode = next(iter(objectives.items()))
    front.sort(key=lambda r: r.values[first], reverse=(mode == "max"))
    knee = knee_of(front, objectives)
    rows = []
    for record in front:
        last = record.last_metrics
        row: dict[str, Any] = {
            "trial": record.number,
            "family": record.family or record.params.get("family", "-"),
            "val_acc": record.values.get("val_acc", last.get("val_acc")),
            "energy_uj": record.values.get("energy_uj", last.get("energy_uj")),
            "sops": last.get("sops"),
            "time_steps": last.get("time_steps"),
            "params": last.get("params"),
        }
        for name, value in record.values.items():
            row.setdefault(name, value)
        if any(c > 1 for c in counts.values()):
            row["trials"] = counts[record.number]
        row["knee"] = record is knee
        row["architecture"] = dict(record.params)
        rows.append(row)
    return rows


def shared_points(points: Iterable[tuple[int, Sequence[float]]]) -> dict[int, int]:
    """For ``(trial number, objective values)`` pairs: by the lowest-numbered trial of each distinct
    vector of values, how many trials have that vector."""
    first: dict[tuple[float, ...], int] = {}
    counts: dict[int, int] = {}
    for number, point in sorted((n, tuple(float(v) for v in p)) for n, p in points):
        kept = first.setdefault(point, number)
        counts[kept] = counts.get(kept, 0) + 1
    return counts


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
    return "-" if value is None else str(value)


def render_front(rows: list[dict[str, Any]], title: str = "Pareto front") -> str:
    """The front as a text table (rich), key architecture params in the last column."""
    from rich.table import Table

    table = Table(title=title, caption="knee: the front's best trade-off (nas export --knee)" if rows else None)
    extra = [k for k in (rows[0] if rows else {}) if k not in FRONT_COLUMNS and k not in ("architecture", "knee")]
    for column in (*FRONT_COLUMNS, *extra, "architecture"):
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = [_cell(row.get(c)) for c in (*FRONT_COLUMNS, *extra, "architecture")]
        if row.get("knee"):
            cells[0] += " knee"
        table.add_row(*cells)
    return _printed(table)


SUMMARY_ATTR = "summary"  # study user attr: the controller's search_summary, refreshed with the front


def search_summary(records: list[TrialRecord], objectives: dict[str, str], states: Mapping[str, int]
                   ) -> dict[str, Any]:
    """What ``nas status`` and ``nas pareto`` need, computed once from every record of a study.

    ``states``: the number of trials per Optuna state in the same snapshot (``{"COMPLETE": 12, ...}``);
    a reader compares them with the study's to know whether the summary is current. ``counts`` are
    the trials by outcome (``count_trials``).
    """
    from nas.results.pareto import front_of

    front = front_of(records, objectives)
    complete = [r for r in records if r.state == COMPLETE and r.values]
    accs = [r.values.get("val_acc") for r in complete if r.values.get("val_acc") is not None]
    energies = [r.values.get("energy_uj") for r in complete if r.values.get("energy_uj") is not None]
    return {
        "states": dict(states),
        "counts": count_trials(records).as_dict(),
        "best_val_acc": max(accs) if accs else None,
        "min_energy_uj": min(energies) if energies else None,
        "front": [r.number for r in front],
        "front_values": [[float(r.values[m]) for m in objectives] for r in front],
    }


def status_row(name: str, summary: Mapping[str, Any], options: dict[str, Any],
               hypervolume: float | None = None) -> dict[str, Any]:
    """One line of ``nas status`` from a :func:`search_summary`: trials done of the budget, counts by outcome
    (``count_trials``), the best values and the normalised hypervolume."""
    counts = TrialCounts(**summary["counts"])
    return {
        "search": name,
        "space": Path(str(options.get("space", "-"))).name,
        "done": f"{counts.done}/{options.get('trials', '?')}",
        **{k: v for k, v in counts.as_dict().items() if k != "waiting"},
        "best_val_acc": summary["best_val_acc"],
        "min_energy_uj": summary["min_energy_uj"],
        "hypervolume": hypervolume,
        "storage": options.get("storage", "-"),
    }


def render_rows(rows: list[dict[str, Any]], title: str) -> str:
    """Any list of flat dicts as a text table; one ``field | value`` block per row when the table would not fit
    the terminal's width without cutting its cells."""
    from rich.table import Table

    columns = list(rows[0]) if rows else []
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    natural = 1 + sum(3 + max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns))
    if natural <= table_width() or not rows:
        table = Table(title=title)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in cells:
            table.add_row(*row)
        return _printed(table)
    blocks = []
    for row in cells:
        table = Table(title=title if not blocks else None, show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for column, value in zip(columns, row, strict=True):
            table.add_row(column, value)
        blocks.append(_printed(table))
    return "".join(blocks)


def table_width() -> int:
    """Columns for the CLI's tables: the terminal's width, ``$COLUMNS``, or 160 when output is not a terminal."""
    import os
    import shutil
    import sys

    if os.environ.get("COLUMNS", "").isdigit():
        return max(40, int(os.environ["COLUMNS"]))
    if sys.stdout.isatty():
        return max(40, shutil.get_terminal_size().columns)
    return 160


def _printed(table: Any) -> str:
    from io import StringIO

    from rich.console import Console

    buffer = StringIO()
    Console(file=buffer, width=table_width()).print(table)
    return buffer.getvalue()
