"""The study views as pure functions of trial records.

Conventions shared by every view:

- ``objectives`` maps objective names to ``"max"`` / ``"min"`` in the study's order;
  ``reference`` maps the same names to the fixed hypervolume reference point.
- Only COMPLETE trials have objective values; PRUNED trials show their last epoch's values
  (``user_attrs["last_values"]``) where a view draws them at all, always marked as pruned.
- The front and the ranks come from ``nas.results.pareto`` (complete and feasible trials only).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from nas.results.pareto import hypervolume_history, knee_index, normalised_hypervolume, ranks_of
from nas.results.records import COMPLETE, DUPLICATE, PRUNED, TrialRecord, completion_order, outcome_of

_SYMBOLS = ["circle", "square", "diamond", "triangle-up", "cross", "x", "star", "hexagon", "pentagon"]
_MPL_MARKERS = ["o", "s", "D", "^", "P", "X", "*", "h", "p"]
_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


# ---------------------------------------------------------------- shared helpers
def _check_objectives(objectives: Mapping[str, str]) -> list[str]:
    names = list(objectives)
    if not names:
        raise ValueError("objectives is empty")
    for name, direction in objectives.items():
        if direction not in ("max", "min"):
            raise ValueError(f"objective {name!r} has direction {direction!r}, expected 'max' or 'min'")
    return names


def _axes(objectives: Mapping[str, str]) -> tuple[str, str | None]:
    """(x, y) objective names of the front plot: energy-like ("min") across, accuracy-like ("max") up."""
    names = _check_objectives(objectives)
    if len(names) == 1:
        return names[0], None
    maxes = [n for n in names if objectives[n] == "max"]
    mins = [n for n in names if objectives[n] == "min"]
    if maxes and mins:
        return mins[0], maxes[0]
    return names[0], names[1]


def time_steps_of(record: TrialRecord) -> Any:
    """The number of time steps T of a trial's network, wherever the trial recorded it (None if nowhere)."""
    for source in (record.user_attrs, record.params, record.last_metrics):
        for key in ("time_steps", "T"):
            if source.get(key) is not None:
                return source[key]
    return None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _params_text(params: Mapping[str, Any], per_line: int = 4) -> str:
    items = [f"{k}={_fmt(v)}" for k, v in params.items()]
    return "<br>".join(", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line))


def trial_rows(
    records: Sequence[TrialRecord], objectives: Mapping[str, str], *, ranks: Mapping[int, int] | None = None
) -> list[dict[str, Any]]:
    """One dict per trial (ordered by number) with what every view shows; duplicates (never trained) left out.

    Keys: ``number``, ``state``, ``outcome`` (``nas.results.records.outcome_of``), ``values`` ({objective:
    value}: final values of complete trials, last-epoch values of pruned ones, empty otherwise), ``rank``
    (non-dominated rank or None), ``pareto`` (bool), ``feasible``, ``family``, ``time_steps``, ``params``,
    ``fail_reason``, ``proxy_score``
    (rung 0's training-free score, ``None`` without a proxy rung or where it is undefined).
    ``ranks``: the result of ``ranks_of(records, objectives)`` when the caller has it already.
    Every view below accepts these rows as ``rows=`` so that one refresh sorts the study once.
    """
    names = _check_objectives(objectives)
    if ranks is None:
        ranks = ranks_of(records, objectives)
    rows = []
    for r in sorted(records, key=lambda r: r.number):
        if r.state == DUPLICATE:
            continue
        if r.state == COMPLETE and r.values is not None:
            values = {n: float(r.values[n]) for n in names if n in r.values}
        elif r.state == PRUNED:
            last = r.user_attrs.get("last_values") or {}
            values = {n: float(last[n]) for n in names if n in last}
        else:
            values = {}
        rank = ranks.get(r.number)
        rows.append(
            {
                "number": r.number,
                "state": r.state,
                "outcome": outcome_of(r),
                "values": values,
                "rank": rank,
                "pareto": rank == 0,
                "feasible": r.feasible,
                "family": r.family,
                "time_steps": time_steps_of(r),
                "params": dict(r.params),
                "fail_reason": r.fail_reason,
                "proxy_score": r.user_attrs.get("proxy_score"),
            }
        )
    return rows


def _hover(row: Mapping[str, Any], names: Sequence[str]) -> str:
    head = f"<b>trial {row['number']}</b> ({row['outcome']}"
    head += ", Pareto front)" if row["pareto"] else (f", rank {row['rank']})" if row["rank"] is not None else ")")
    lines = [head]
    lines.append(f"family {row['family'] or '-'} · T={row['time_steps'] if row['time_steps'] is not None else '-'}")
    lines += [f"{n} = {_fmt(row['values'][n])}" for n in names if n in row["values"]]
    if row["params"]:
        lines.append(_params_text(row["params"]))
    return "<br>".join(lines)


def _style_maps(rows: Sequence[Mapping[str, Any]]) -> tuple[dict[Any, str], dict[Any, int]]:
    """Colour per time-step value and symbol index per family, stable across views."""
    ts = sorted({row["time_steps"] for row in rows}, key=lambda v: (v is None, str(v) if v is None else float(v)))
    families = sorted({row["family"] or "-" for row in rows})
    colours = {t: _COLOURS[i % len(_COLOURS)] for i, t in enumerate(ts)}
    symbols = {f: i % len(_SYMBOLS) for i, f in enumerate(families)}
    return colours, symbols


def _plotted(rows: Sequence[Mapping[str, Any]], x: str, y: str | None) -> list[Mapping[str, Any]]:
    return [r for r in rows if x in r["values"] and (y is None or y in r["values"])]


# ---------------------------------------------------------------- the front
def pareto_figure(
    records: Sequence[TrialRecord],
    *,
    objectives: Mapping[str, str],
    title: str | None = None,
    rows: Sequence[Mapping[str, Any]] | None = None,
) -> go.Figure:
    """Accuracy against energy: every complete trial faded, the front highlighted and joined.

    Colour encodes the number of time steps T, marker shape the model family; hovering a point
    shows the trial number, its objectives and its architecture params. Pruned trials (their
    last epoch's values) are a legend entry that is hidden until clicked.
    """
    names = _check_objectives(objectives)
    x, y = _axes(objectives)
    rows = rows if rows is not None else trial_rows(records, objectives)
    colours, symbols = _style_maps(rows)
    fig = go.Figure()

    def yvals(group: Sequence[Mapping[str, Any]]) -> list[Any]:
        return [r["values"][y] for r in group] if y else [r["number"] for r in group]

    complete = _plotted([r for r in rows if r["state"] == COMPLETE], x, y)
    for (t, family), group in _grouped(complete).items():
        fig.add_trace(
            go.Scatter(
                x=[r["values"][x] for r in group],
                y=yvals(group),
                mode="markers",
                name=f"{family}, T={t if t is not None else '-'}",
                legendgroup="trials",
                legendgrouptitle_text="all complete trials",
                marker={"color": colours[t], "symbol": _SYMBOLS[symbols[family]], "size": 8, "opacity": 0.3},
                hovertext=[_hover(r, names) for r in group],
                hoverinfo="text",
                customdata=[r["number"] for r in group],
            )
        )
    pruned = _plotted([r for r in rows if r["state"] == PRUNED], x, y)
    if pruned:
        fig.add_trace(
            go.Scatter(
                x=[r["values"][x] for r in pruned],
                y=yvals(pruned),
                mode="markers",
                name="pruned (last epoch)",
                visible="legendonly",
                marker={"color": "#999999", "symbol": "circle-open", "size": 7},
                hovertext=[_hover(r, names) for r in pruned],
                hoverinfo="text",
                customdata=[r["number"] for r in pruned],
            )
        )
    front = sorted((r for r in complete if r["pareto"]), key=lambda r: r["values"][x])
    knee = knee_row(front, objectives)  # drawn under the front, whose trace stays the last one
    if knee is not None:
        fig.add_trace(
            go.Scatter(
                x=[knee["values"][x]],
                y=yvals([knee]),
                mode="markers+text",
                name=f"knee (#{knee['number']}): the best trade-off",
                # an open symbol is outlined in the marker's colour
                marker={"color": "#d62728", "symbol": "star-open", "size": 28, "line": {"width": 2.5}},
                text=["knee"],
                textposition="bottom center",
                textfont={"color": "#d62728"},
                hovertext=[_hover(knee, names)],
                hoverinfo="text",
                customdata=[knee["number"]],
            )
        )
    if front:
        fig.add_trace(
            go.Scatter(
                x=[r["values"][x] for r in front],
                y=yvals(front),
                mode="lines+markers+text",
                name=f"Pareto front ({len(front)} trials)",
                line={"color": "#222222", "width": 2},
                marker={
                    "color": [colours[r["time_steps"]] for r in front],
                    "symbol": [_SYMBOLS[symbols[r["family"] or "-"]] for r in front],
                    "size": 13,
                    "line": {"color": "#000000", "width": 1.5},
                },
                text=[f"#{r['number']}" for r in front],
                textposition="top center",
                hovertext=[_hover(r, names) for r in front],
                hoverinfo="text",
                customdata=[r["number"] for r in front],
            )
        )
    arrow = {"max": "higher is better", "min": "lower is better"}
    fig.update_layout(
        title=title or f"Pareto front: {y or 'trial'} vs {x}",
        xaxis_title=f"{x} ({arrow[objectives[x]]})",
        yaxis_title=f"{y} ({arrow[objectives[y]]})" if y else "trial number",
        template="plotly_white",
        hoverlabel={"align": "left"},
        legend={"groupclick": "toggleitem"},
    )
    return fig


def knee_row(front: Sequence[Mapping[str, Any]], objectives: Mapping[str, str]) -> Mapping[str, Any] | None:
    """The front's knee among rows of ``trial_rows`` (``nas.results.pareto.knee_index``), or None for no front."""
    names = list(objectives)
    front = [r for r in front if all(n in r["values"] for n in names)]
    if not front:
        return None
    points = np.asarray([[float(r["values"][n]) for n in names] for r in front], dtype=float)
    return front[knee_index(points, list(objectives.values()))]


def pareto_csv(
    records: Sequence[TrialRecord], *, objectives: Mapping[str, str], rows: Sequence[Mapping[str, Any]] | None = None
) -> str:
    """The front as CSV text: one row per front member (ordered by trial number).

    Columns: ``trial``, the objectives, ``family``, ``time_steps``, then every architecture param
    that any front member has (empty where a conditional space did not sample it; a param named like
    a fixed column, such as ``time_steps``, is that column).
    """
    names = _check_objectives(objectives)
    rows = rows if rows is not None else trial_rows(records, objectives)
    front = [r for r in rows if r["pareto"]]
    fixed = ["trial", *names, "family", "time_steps"]
    param_names: list[str] = []
    for r in front:
        param_names += [p for p in r["params"] if p not in param_names and p not in fixed]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*fixed, *param_names])
    for r in front:
        writer.writerow(
            [
                r["number"],
                *(repr(r["values"][n]) for n in names),
                r["family"] or "",
                "" if r["time_steps"] is None else r["time_steps"],
                *("" if r["params"].get(p) is None else r["params"][p] for p in param_names),
            ]
        )
    return out.getvalue()


def pareto_png(
    records: Sequence[TrialRecord],
    *,
    objectives: Mapping[str, str],
    path: str | Path,
    title: str | None = None,
    rows: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Static picture of the front, drawn with matplotlib (plotly's image export needs kaleido and a browser)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and Ray nodes
    import matplotlib.pyplot as plt

    _check_objectives(objectives)
    x, y = _axes(objectives)
    rows = rows if rows is not None else trial_rows(records, objectives)
    colours, symbols = _style_maps(rows)
    complete = _plotted([r for r in rows if r["state"] == COMPLETE], x, y)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=100)
    try:

        def yv(r: Mapping[str, Any]) -> Any:
            return r["values"][y] if y else r["number"]

        for (t, family), group in _grouped(complete).items():
            ax.scatter(
                [r["values"][x] for r in group],
                [yv(r) for r in group],
                c=colours[t],
                marker=_MPL_MARKERS[symbols[family]],
                alpha=0.3,
                s=25,
                label=f"{family}, T={t if t is not None else '-'}",
            )
        front = sorted((r for r in complete if r["pareto"]), key=lambda r: r["values"][x])
        if front:
            ax.plot([r["values"][x] for r in front], [yv(r) for r in front], color="#222222", lw=1.5, zorder=3)
            for (t, family), group in _grouped(front).items():
                ax.scatter([r["values"][x] for r in group], [yv(r) for r in group], c=colours[t],
                           marker=_MPL_MARKERS[symbols[family]], s=80, edgecolors="black", zorder=4)
            for r in front[:40]:  # beyond that the labels only cover each other
                ax.annotate(f"#{r['number']}", (r["values"][x], yv(r)), textcoords="offset points", xytext=(4, 5),
                            fontsize=8)
            knee = knee_row(front, objectives)
            if knee is not None:
                ax.scatter([knee["values"][x]], [yv(knee)], marker="*", s=420, facecolors="none",
                           edgecolors="#d62728", linewidths=1.8, zorder=5, label=f"knee (#{knee['number']})")
        ax.set_xlabel(x)
        ax.set_ylabel(y or "trial number")
        ax.set_title(title or f"Pareto front ({len(front)} of {len(complete)} complete trials)")
        ax.grid(alpha=0.3)
        if complete:
            ax.legend(fontsize=8, loc="lower right")  # "best" scans every point: seconds at 1,000 trials
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _grouped(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[Any, str], list[Mapping[str, Any]]]:
    groups: dict[tuple[Any, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["time_steps"], r["family"] or "-"), []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])))


# ---------------------------------------------------------------- progress
def hypervolume_figure(
    records: Sequence[TrialRecord],
    *,
    objectives: Mapping[str, str],
    reference: Mapping[str, float],
    title: str | None = None,
    history: Sequence[float] | None = None,
) -> go.Figure:
    """Hypervolume of the complete, feasible trials against the number of them, in completion order.

    ``history``: the values of ``hypervolume_history`` for those trials in that order, when the
    caller keeps them up to date itself (the tracker does, incrementally); computed otherwise.
    """
    names = _check_objectives(objectives)
    missing = [n for n in names if n not in reference]
    if missing:
        raise ValueError(f"reference has no value for objective(s) {missing}")
    kept = [
        r
        for r in completion_order(records)
        if r.state == COMPLETE and r.feasible and r.values is not None and all(n in r.values for n in names)
    ]
    if history is None:
        points = np.asarray([[float(r.values[n]) for n in names] for r in kept], dtype=float)
        points = points.reshape(len(kept), len(names))
        history = hypervolume_history(points, list(objectives.values()), [reference[n] for n in names])
    elif len(history) != len(kept):
        raise ValueError(f"history has {len(history)} values for {len(kept)} complete feasible trials")
    raw = list(history)
    box = normalised_hypervolume(1.0, objectives, reference)
    # Normalised to the reference box (0..1) where every objective has a known ideal value; raw otherwise.
    history = [h * box for h in raw] if box is not None else raw
    xs = list(range(1, len(history) + 1))
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=history,
            mode="lines",
            line_shape="hv",
            name="hypervolume",
            hovertext=[f"after trial {r.number} ({i} complete): {h:.4f} (raw {v:.6g})"
                       for i, r, h, v in zip(xs, kept, history, raw, strict=True)],
            hoverinfo="text",
        )
    )
    gains = [i for i in range(len(history)) if (history[i] > history[i - 1] if i else history[i] > 0)]
    fig.add_trace(
        go.Scatter(
            x=[xs[i] for i in gains],
            y=[history[i] for i in gains],
            mode="markers",
            name="trial improved the front",
            hovertext=[f"trial {kept[i].number}" for i in gains],
            hoverinfo="text",
        )
    )
    ref_text = ", ".join(f"{n}={_fmt(reference[n])}" for n in names)
    fig.update_layout(
        title=title or f"Hypervolume over completed trials (reference {ref_text})",
        xaxis_title="completed trials",
        yaxis_title="hypervolume (fraction of the reference box)" if box is not None else "hypervolume",
        template="plotly_white",
    )
    return fig


# ---------------------------------------------------------------- params
def parallel_coordinates_figure(
    records: Sequence[TrialRecord],
    *,
    objectives: Mapping[str, str],
    title: str | None = None,
    rows: Sequence[Mapping[str, Any]] | None = None,
) -> go.Figure:
    """Searched params and objectives of every complete trial, one line per trial, coloured by rank.

    Numeric params present in every trial get a numeric axis; categorical ones (and params a
    conditional space did not always sample, shown as ``-``) get one tick per value.
    """
    names = _check_objectives(objectives)
    rows = [
        r
        for r in (rows if rows is not None else trial_rows(records, objectives))
        if r["state"] == COMPLETE and all(n in r["values"] for n in names)
    ]
    param_names: list[str] = []
    for r in rows:
        param_names += [p for p in r["params"] if p not in param_names]
    dims = []
    for p in param_names:
        vals = [r["params"].get(p) for r in rows]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals)
        if numeric:
            dims.append({"label": p, "values": [float(v) for v in vals]})
        else:
            labels = ["-" if v is None else str(v) for v in vals]
            ticks = sorted(set(labels), key=_natural_key)
            index = {t: i for i, t in enumerate(ticks)}
            dims.append({"label": p, "values": [index[v] for v in labels], "tickvals": list(range(len(ticks))),
                         "ticktext": ticks})
    for n in names:
        dims.append({"label": f"{n} ({objectives[n]})", "values": [r["values"][n] for r in rows]})
    ranks = [r["rank"] for r in rows]
    worst = max([k for k in ranks if k is not None], default=0) + 1
    colour = [worst if k is None else k for k in ranks]  # infeasible trials: worse than every rank
    fig = go.Figure(
        go.Parcoords(
            line={
                "color": colour,
                "colorscale": "Viridis",
                "reversescale": True,
                "cmin": 0,
                "cmax": max(max(colour, default=0), 1),
                "showscale": True,
                "colorbar": {"title": {"text": "Pareto rank"}},
            },
            dimensions=dims,
        )
    )
    fig.update_layout(title=title or "Searched params of complete trials (colour: Pareto rank, 0 = front)",
                      template="plotly_white")
    return fig


def _natural_key(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


# ---------------------------------------------------------------- energy meter
_NAME_KEYS = ("layer", "name")
_ENERGY_KEYS = ("energy_uj", "energy_pj", "energy")


def _first(row: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if row.get(k) is not None:
            return row[k]
    return None


LAYERS_SHOWN = 12  # layers per trial in the energy-share panel; the rest are summed as "other"


def layer_energy_figure(layer_reports: Mapping[int, Sequence[Mapping[str, Any]]], *, title: str | None = None
                        ) -> go.Figure:
    """Per-layer firing rates and energy shares of some trials (usually the front's members).

    ``layer_reports`` maps a trial number to the energy meter's per-layer rows. A row needs a
    layer name (``layer`` or ``name``) and may carry ``firing_rate`` (spiking layers) and an
    energy (``energy_share`` or ``share`` in 0..1, or ``energy_uj`` / ``energy_pj`` / ``energy``, turned into a
    share of the trial's total). Layers without a firing rate (MAC-counted) are left out of the
    firing-rate panel only; when no layer has one, the panel says so. The share panel lists each trial's
    ``LAYERS_SHOWN`` costliest layers, costliest first, and sums the rest as "other". The legend names
    the trials. The rows of ``nas.energy.EnergyReport.to_dict()["per_layer"]`` fit as they are.
    """
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("firing rate per layer", "share of the energy per layer"),
                        horizontal_spacing=0.12)
    any_rate = False
    shown_layers = 0
    for i, number in enumerate(sorted(layer_reports)):
        colour = _COLOURS[i % len(_COLOURS)]  # one colour per trial in both panels
        rows = list(layer_reports[number])
        names = [str(_first(r, _NAME_KEYS)) for r in rows]
        if any(n == "None" for n in names):
            raise ValueError(f"layer report of trial {number}: every row needs a 'layer' or 'name' key")
        fr = [(n, float(r["firing_rate"])) for n, r in zip(names, rows, strict=True) if r.get("firing_rate") is not None
              ]
        any_rate = any_rate or bool(fr)
        fig.add_trace(
            go.Bar(x=[n for n, _ in fr], y=[v for _, v in fr], name=f"trial {number}", legendgroup=str(number),
                   marker_color=colour, showlegend=False),
            row=1,
            col=1,
        )
        share_key = next((k for k in ("energy_share", "share") if all(r.get(k) is not None for r in rows)), None)
        if share_key is not None:
            shares = [float(r[share_key]) for r in rows]
        else:
            energies = [float(_first(r, _ENERGY_KEYS) or 0.0) for r in rows]
            total = sum(energies)
            shares = [e / total if total > 0 else 0.0 for e in energies]
        ranked = sorted(zip(names, shares, strict=True), key=lambda item: -item[1])
        top, rest = ranked[:LAYERS_SHOWN], ranked[LAYERS_SHOWN:]
        if rest:
            top.append((f"other ({len(rest)} layers)", sum(share for _, share in rest)))
        shown_layers = max(shown_layers, len(top))
        fig.add_trace(
            go.Bar(x=[share for _, share in top], y=[name for name, _ in top], orientation="h", name=f"trial {number}",
                   legendgroup=str(number), marker_color=colour),
            row=1,
            col=2,
        )
    if layer_reports and not any_rate:
        fig.add_annotation(text="no layer of these trials reports a firing rate:<br>every layer is MAC-counted "
                                "(real-valued inputs),<br>so there are no spikes to count",
                           xref="x domain", yref="y domain", x=0.5, y=0.5, showarrow=False, row=1, col=1)
    fig.update_layout(title=title or "Firing rates and energy shares of the front's members", barmode="group",
                      template="plotly_white", height=450 + 14 * shown_layers * max(1, len(layer_reports)),
                      legend_title_text="trial")
    fig.update_xaxes(tickformat=".0%", row=1, col=2)
    fig.update_yaxes(autorange="reversed", row=1, col=2)  # costliest layer on top
    return fig


def write_front_artifacts(
    records: Sequence[TrialRecord],
    *,
    objectives: Mapping[str, str],
    reference: Mapping[str, float],
    folder: str | Path,
    title: str,
    ranks: Mapping[int, int] | None = None,
    history: Sequence[float] | None = None,
    interactive: bool = True,
) -> list[Path]:
    """Write the front's files of a search into ``folder``: ``pareto.png``, ``pareto.csv`` and, when
    ``interactive``, ``pareto.html`` and ``hypervolume.html`` (plotly inlined); returns their paths.

    The study is ranked once for all (``ranks`` if the caller has them); ``history`` as in
    ``hypervolume_figure``.
    """
    folder = Path(folder)
    rows = trial_rows(records, objectives, ranks=ranks)
    out = [folder / "pareto.png", folder / "pareto.csv"]
    pareto_png(records, objectives=objectives, path=out[0], title=title, rows=rows)
    out[1].write_text(pareto_csv(records, objectives=objectives, rows=rows))
    if interactive:
        out += [folder / "pareto.html", folder / "hypervolume.html"]
        pareto_figure(records, objectives=objectives, title=title, rows=rows).write_html(
            out[2], include_plotlyjs=True, full_html=True
        )
        hypervolume_figure(records, objectives=objectives, reference=reference, history=history).write_html(
            out[3], include_plotlyjs=True, full_html=True
        )
    return out
