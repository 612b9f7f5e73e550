"""The saved views of a search's MLflow runs table (the front, and one objective against another)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

FRONT_FILTER = "tags.pareto = 'true'"  # the MLflow search filter of a search's front members
COMPLETE_FILTER = "tags.`nas.state` = 'complete'"
# Saved views of the runs table (shared views of MLflow's UI), linked from the experiment's description.
FRONT_VIEW = "nas-front"
CHART_VIEW = "nas-chart"
SHARED_VIEW_TAG = "mlflow.sharedViewState."


def view_link(experiment_id: str, view: str) -> str:
    """Address, relative to the MLflow UI, of one of a search's saved views (``FRONT_VIEW`` or ``CHART_VIEW``).

    ``workflowType=machine_learning`` switches MLflow 3's UI from GenAI to model training, where an
    experiment opens on its runs; ``compareRunsMode=CHART`` opens the chart view.
    """
    query = {"viewStateShareKey": view, "workflowType": "machine_learning"}
    if view == CHART_VIEW:
        query["compareRunsMode"] = "CHART"
    return f"#/experiments/{experiment_id}/runs?{urllib.parse.urlencode(query)}"


def runs_views(objectives: Mapping[str, str], param_names: list[str]) -> dict[str, dict[str, Any]]:
    """The saved views of a search's runs table, as MLflow's UI stores a shared view (experiment tag
    ``mlflow.sharedViewState.<key>``, JSON of its search facets and UI state).

    ``FRONT_VIEW``: the front's members (``tags.pareto = 'true'``), best first objective first, with the
    objectives and the architecture params as columns. ``CHART_VIEW``: every complete trial in the chart
    view, one scatter chart of the first objective against the second (val_acc against energy_uj).
    """
    names = list(objectives)
    first, direction = names[0], objectives[names[0]]
    columns = [f"metrics.`{n}`" for n in names] + [f"params.`{p}`" for p in param_names]
    sort = {"orderByKey": f"metrics.`{first}`", "orderByAsc": direction == "min"}
    views: dict[str, dict[str, Any]] = {FRONT_VIEW: {"searchFilter": FRONT_FILTER, **sort, "selectedColumns": columns}}
    if len(names) >= 2:
        section = "nas-front"
        chart = {"uuid": "nas-objectives", "type": "SCATTER", "xaxis": {"key": names[1], "type": "METRIC"},
                 "yaxis": {"key": first, "type": "METRIC"}, "runsCountToCompare": 1000, "metricSectionId": section,
                 "deleted": False, "isGenerated": False}
        views[CHART_VIEW] = {
            "searchFilter": COMPLETE_FILTER, **sort, "selectedColumns": columns, "compareRunCharts": [chart],
            # one chart, as wide as the section (MLflow's default is 3 columns of 360 px high cards)
            "compareRunSections": [{"uuid": section, "name": f"{first} against {names[1]}", "display": True,
                                    "isReordered": False, "deleted": False, "isGenerated": False,
                                    "columns": 1, "cardHeight": 480}],
        }
    return views
