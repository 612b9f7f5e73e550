"""``nas report``: one self-contained HTML file that explains a search at a glance."""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from nas.dashboards.views import (
    _fmt,
    hypervolume_figure,
    layer_energy_figure,
    parallel_coordinates_figure,
    pareto_figure,
    trial_rows,
)
from nas.results.layout import trial_energy_path
from nas.results.pareto import default_reference, hypervolume, normalised_hypervolume
from nas.results.records import TrialRecord, count_trials

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem 2rem; color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
.meta { color: #555; } .note { color: #666; font-style: italic; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } tr.front td { background: #fff6d5; font-weight: 600; }
td.params { font-family: ui-monospace, monospace; font-size: 0.8rem; max-width: 40rem; }
"""


def _resolve_reference(
    rows: Sequence[Mapping[str, Any]], objectives: Mapping[str, str], reference: Mapping[str, float] | None
) -> dict[str, float]:
    names = list(objectives)
    if reference is not None:
        missing = [n for n in names if n not in reference]
        if missing:
            raise ValueError(f"reference has no value for objective(s) {missing}")
        return {n: float(reference[n]) for n in names}
    ranked = [r for r in rows if r["rank"] is not None]
    if not ranked:
        return {n: 0.0 for n in names}  # nothing complete: every hypervolume is 0 whatever the reference
    points = np.asarray([[r["values"][n] for n in names] for r in ranked], dtype=float)
    return default_reference(objectives, points)


def load_layer_reports(
    search_dir: str | Path, records: Sequence[TrialRecord], numbers: Sequence[int]
) -> dict[int, list[dict[str, Any]]]:
    """Per-layer energy rows of some trials, where the search kept them.

    Looked up per trial: ``<search_dir>/trials/<n>/energy.json`` (an ``EnergyReport.to_dict()``,
    rows under ``per_layer``), then the trial's ``energy_per_layer`` user attribute. Trials with
    neither are left out.
    """
    by_number = {r.number: r for r in records}
    out: dict[int, list[dict[str, Any]]] = {}
    for n in numbers:
        path = trial_energy_path(search_dir, n)
        rows = None
        if path.is_file():
            try:
                rows = json.loads(path.read_text()).get("per_layer")
            except (json.JSONDecodeError, AttributeError):
                raise ValueError(f"{path}: not an energy report (JSON object with per_layer)") from None
        if not rows and n in by_number:
            rows = by_number[n].user_attrs.get("energy_per_layer")
        if rows:
            out[n] = list(rows)
    return out


def _figure_div(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"responsive": True})


def _table(rows: Sequence[Mapping[str, Any]], names: Sequence[str], *, table_id: str) -> str:
    proxy = any(r.get("proxy_score") is not None for r in rows)
    head = ["trial", "state", *names, "rank", "family", "T", *(["proxy"] if proxy else []), "params", "note"]
    out = [f'<table id="{table_id}"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in head)]
    out.append("</tr></thead><tbody>")
    for r in rows:
        note = r["fail_reason"] or ("" if r["feasible"] else "infeasible")
        if r["state"] == "PRUNED" and r["values"]:
            note = note or "values of the last epoch"
        if r["state"] == "DROPPED":
            note = "dropped by the proxy rung: never trained"
        cells = [
            str(r["number"]),
            r["outcome"],
            *(_fmt(r["values"][n]) if n in r["values"] else "" for n in names),
            "" if r["rank"] is None else str(r["rank"]),
            r["family"] or "",
            "" if r["time_steps"] is None else str(r["time_steps"]),
            *([_fmt(r["proxy_score"]) if r.get("proxy_score") is not None else ""] if proxy else []),
        ]
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in r["params"].items())
        row_class = ' class="front"' if r["pareto"] else ""
        out.append(
            f'<tr{row_class} data-trial="{r["number"]}">'
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
            + f'<td class="params">{html.escape(params)}</td><td>{html.escape(note)}</td></tr>'
        )
    out.append("</tbody></table>")
    return "".join(out)


def write_report(
    records: Sequence[TrialRecord],
    *,
    objectives: Mapping[str, str],
    reference: Mapping[str, float] | None,
    out_dir: str | Path,
    title: str,
    layer_reports: Mapping[int, Sequence[Mapping[str, Any]]] | None = None,
    filename: str = "report.html",
) -> Path:
    """Write a self-contained HTML report of a search and return its path.

    Sections: summary, the front (plot and table), hypervolume over time, parallel coordinates of
    the searched params coloured by Pareto rank, per-layer firing rates and energy shares of the
    front's members (``layer_reports``: trial number -> the energy meter's per-layer rows), and the
    table of every trial. plotly's JavaScript is inlined once, so the file opens offline.
    ``reference`` is the study's fixed hypervolume reference; None derives one from the complete
    trials with ``nas.results.pareto.default_reference``.
    """
    names = list(objectives)
    rows = trial_rows(records, objectives)
    reference = _resolve_reference(rows, objectives, reference)
    front = [r for r in rows if r["pareto"]]
    counts = count_trials(records)
    ranked = [r for r in rows if r["rank"] is not None]
    points = np.asarray([[r["values"][n] for n in names] for r in ranked], dtype=float).reshape(len(ranked), len(names))
    volume = hypervolume(points, list(objectives.values()), [reference[n] for n in names])
    normalised = normalised_hypervolume(volume, objectives, reference)
    volume_text = (f"hypervolume {normalised:.4f} of the reference box (raw {volume:.6g})" if normalised is not None
                   else f"hypervolume {volume:.6g}")

    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>{_STYLE}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta" id="counts">{counts.done} trials done ({esc(counts.text())}); '
        f"objectives: {esc(', '.join(f'{n} ({d})' for n, d in objectives.items()))}; "
        f"{volume_text} against reference "
        f"{esc(', '.join(f'{n}={_fmt(reference[n])}' for n in names))}; "
        f"written {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}.</p>",
        "<h2>Pareto front</h2>",
        f'<p id="front-trials">Front ({len(front)} trials): '
        + (", ".join(f"#{r['number']}" for r in front) or "none yet")
        + "</p>",
        _figure_div(pareto_figure(records, objectives=objectives, rows=rows), "pareto"),
        _table(front, names, table_id="front-table"),
        "<h2>Hypervolume over time</h2>",
        _figure_div(hypervolume_figure(records, objectives=objectives, reference=reference), "hypervolume"),
        "<h2>Searched params</h2>",
        _figure_div(parallel_coordinates_figure(records, objectives=objectives, rows=rows), "parallel"),
        "<h2>Firing rates and energy of the front</h2>",
    ]
    reports = {k: v for k, v in (layer_reports or {}).items() if v}
    if reports:
        parts.append(_figure_div(layer_energy_figure(reports), "layers"))
    else:
        parts.append('<p class="note">No per-layer energy report was recorded for the front\'s members: the report '
                     'reads trials/&lt;n&gt;/energy.json, which a search keeps for each complete trial; '
                     '<code>nas energy MODEL --checkpoint</code> measures one by hand.</p>')
    parts += ["<h2>All trials</h2>", _table(rows, names, table_id="trial-table"), "</body></html>"]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / filename
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text("\n".join(parts), encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # a full disk leaves a partial file: never keep it
    return path
