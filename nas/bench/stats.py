"""What a learning-curve table says about early stopping: rank correlations and the true front."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nas.bench.table import DIVERGED, FAILED, LearningCurveTable


@dataclass
class TableStatistics:
    """Counts, cost and the rank agreement of each epoch's accuracy with the final one."""

    space: str
    entries: int
    trained: int
    diverged: int
    failed: int
    epochs: int
    train_seconds: float  # sum of every recorded epoch's cost (the simulator's cost column)
    cost: str
    front_size: int
    true_hypervolume: float | None
    kendall_tau: dict[int, float] = field(default_factory=dict)  # epoch -> tau(val_acc at epoch, final val_acc)
    meta: dict[str, Any] = field(default_factory=dict)


def table_statistics(table: LearningCurveTable) -> TableStatistics:
    """Statistics of ``table`` (Kendall's tau-b over the fully trained entries)."""
    from scipy.stats import kendalltau

    from nas.bench.simulator import cost_column, true_front_hypervolume
    from nas.bench.table_space import TableSpace
    from nas.results.pareto import pareto_mask

    trained = table.trained
    finals = [e.rows[-1]["val_acc"] for e in trained]
    taus: dict[int, float] = {}
    for epoch in range(1, table.epochs):
        tau = kendalltau([e.rows[epoch - 1]["val_acc"] for e in trained], finals).statistic
        taus[epoch] = float(tau)
    points = table.final_points()
    truth = true_front_hypervolume(TableSpace(table)) if table.reference and table.space_source else None
    return TableStatistics(
        space=table.space,
        entries=len(table.entries),
        trained=len(trained),
        diverged=sum(e.status == DIVERGED for e in table.entries),
        failed=sum(e.status == FAILED for e in table.entries),
        epochs=table.epochs,
        train_seconds=sum(float(r.get(cost_column(table)) or 0.0) for e in table.entries for r in e.rows),
        cost=cost_column(table),
        front_size=int(pareto_mask(points, list(table.objectives.values())).sum()) if points else 0,
        true_hypervolume=truth,
        kendall_tau=taus,
        meta=dict(table.meta),
    )


def render_statistics(stats: TableStatistics) -> str:
    """A few lines for ``nas bench info``."""
    machine = stats.meta.get("machine", {})
    lines = [
        f"table {stats.space}: {stats.entries} architectures ({stats.trained} trained to {stats.epochs} epochs, "
        f"{stats.diverged} diverged, {stats.failed} failed); {stats.train_seconds / 3600:.2f} h of recorded epochs "
        f"({stats.cost})",
        f"true front: {stats.front_size} architectures"
        + (f", normalised hypervolume {stats.true_hypervolume:.4f}" if stats.true_hypervolume is not None else ""),
    ]
    for epoch, tau in stats.kendall_tau.items():
        lines.append(f"Kendall tau, val_acc after epoch {epoch} vs final: {tau:.3f}")
    if machine:
        lines.append(f"built on {machine.get('cpu', '?')} ({machine.get('cores', '?')} cores), "
                     f"{stats.meta.get('workers', '?')} workers x {stats.meta.get('threads_per_worker', '?')} "
                     f"thread(s), torch {machine.get('torch', '?')}, commit {stats.meta.get('commit', '?')}")
    if stats.meta.get("command"):
        lines.append(f"made by: {stats.meta['command']}")
    return "\n".join(lines)
