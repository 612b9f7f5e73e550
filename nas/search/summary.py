"""Tables of a search for the terminal: the Pareto front and the searches of a run folder."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas.search.records import COMPLETE, TrialRecord

FRONT_COLUMNS = ("trial", "family", "val_acc", "energy_uj", "sops", "time_steps", "params")


def front_rows(records: list[TrialRecord], objectives: dict[str, str]) -> list[dict[str, Any]]:
    """One row per front member, sorted by the first objective (best first)."""
    from nas.search.pareto import front_of

    front = front_of(records, objectives)
    first, mode = next(iter(objectives.items()))
    front.sort(key=lambda r: r.values[first], reverse=(mode == "max"))
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
        row["architecture"] = dict(record.params)
        rows.append(row)
    return rows


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
    return "-" if value is None else str(value)


def render_front(rows: list[dict[str, Any]], title: str = "Pareto front") -> str:
    """The front as a text table (rich), key architecture params in the last column."""
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    extra = [k for k in (rows[0] if rows else {}) if k not in FRONT_COLUMNS and k != "architecture"]
    for column in (*FRONT_COLUMNS, *extra, "architecture"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in (*FRONT_COLUMNS, *extra, "architecture")))
    buffer = StringIO()
    Console(file=buffer, width=160).print(table)
    return buffer.getvalue()


SUMMARY_ATTR = "summary"  # study user attr: the controller's search_summary, refreshed with the front


def search_summary(records: list[TrialRecord], objectives: dict[str, str], states: Mapping[str, int]
                   ) -> dict[str, Any]:
    """What ``nas status`` and ``nas pareto`` need, computed once from every record of a study.

    ``states``: the number of trials per Optuna state in the same snapshot (``{"COMPLETE": 12, ...}``);
    a reader compares them with the study's to know whether the summary is current.
    """
    from nas.search.pareto import front_of

    complete = [r for r in records if r.state == COMPLETE and r.values]
    accs = [r.values.get("val_acc") for r in complete if r.values.get("val_acc") is not None]
    energies = [r.values.get("energy_uj") for r in complete if r.values.get("energy_uj") is not None]
    return {
        "states": dict(states),
        "complete": len(complete),
        "pruned": sum(r.state == "PRUNED" for r in records),
        "failed": sum(r.state == "FAIL" and r.fail_reason != "interrupted" for r in records),
        "running": sum(r.state == "RUNNING" for r in records),
        "best_val_acc": max(accs) if accs else None,
        "min_energy_uj": min(energies) if energies else None,
        "front": [r.number for r in front_of(records, objectives)],
    }


def status_row(name: str, summary: Mapping[str, Any], options: dict[str, Any],
               hypervolume: float | None = None) -> dict[str, Any]:
    """One line of ``nas status`` from a :func:`search_summary`: counts by state, best values, hypervolume."""
    return {
        "search": name,
        "space": options.get("space", "-"),
        "trials": f"{summary['complete']}/{options.get('trials', '?')}",
        "pruned": summary["pruned"],
        "failed": summary["failed"],
        "running": summary["running"],
        "best_val_acc": summary["best_val_acc"],
        "min_energy_uj": summary["min_energy_uj"],
        "hypervolume": hypervolume,
        "storage": options.get("storage", "-"),
    }


def render_rows(rows: list[dict[str, Any]], title: str) -> str:
    """Any list of flat dicts as a text table."""
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    columns = list(rows[0]) if rows else []
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    buffer = StringIO()
    Console(file=buffer, width=160).print(table)
    return buffer.getvalue()
