"""Study views: the accuracy-energy front, hypervolume over time, parallel coordinates, layer energy.

Pure functions from ``TrialRecord`` lists (plus objectives and the hypervolume reference) to plotly
figures, CSV text, a PNG file or a self-contained HTML report. The same functions draw the MLflow
artifacts of a running search (``nas.tracking``, through the helper process of
``nas.dashboards.renderer``) and ``nas report``. Names are loaded on first use, so the controller can
import the renderer without paying for plotly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from nas.dashboards.report import load_layer_reports, write_report
    from nas.dashboards.views import (
        hypervolume_figure,
        layer_energy_figure,
        parallel_coordinates_figure,
        pareto_csv,
        pareto_figure,
        pareto_png,
        trial_rows,
        write_front_artifacts,
    )
    from nas.results.records import completion_order

_HOMES = {
    "completion_order": "nas.results.records",
    "hypervolume_figure": "nas.dashboards.views",
    "layer_energy_figure": "nas.dashboards.views",
    "load_layer_reports": "nas.dashboards.report",
    "parallel_coordinates_figure": "nas.dashboards.views",
    "pareto_csv": "nas.dashboards.views",
    "pareto_figure": "nas.dashboards.views",
    "pareto_png": "nas.dashboards.views",
    "trial_rows": "nas.dashboards.views",
    "write_front_artifacts": "nas.dashboards.views",
    "write_report": "nas.dashboards.report",
}

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


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'nas.dashboards' has no attribute {name!r}")
