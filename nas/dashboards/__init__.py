"""Study views: the accuracy-energy front, hypervolume over time, parallel coordinates, layer energy.

Pure functions from ``TrialRecord`` lists (plus objectives and the hypervolume reference) to plotly
figures, CSV text, a PNG file or a self-contained HTML report. The same functions draw the MLflow
artifacts of a running search (``nas.tracking``) and ``nas report``.
"""

from __future__ import annotations

from nas.dashboards.report import load_layer_reports, write_report
from nas.dashboards.views import (
    completion_order,
    hypervolume_figure,
    layer_energy_figure,
    parallel_coordinates_figure,
    pareto_csv,
    pareto_figure,
    pareto_png,
    trial_rows,
    write_front_artifacts,
)

__all__ = [
    "completion_order",
    "hypervolume_figure",
    "layer_energy_figure",
    "load_layer_reports",
    "parallel_coordinates_figure",
    "pareto_csv",
    "pareto_figure",
    "pareto_png",
    "trial_rows",
    "write_front_artifacts",
    "write_report",
]
