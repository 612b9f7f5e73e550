"""The study views (nas.dashboards) on hand-made trial records: no MLflow, no Optuna storage."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pytest

from nas.dashboards import (
    hypervolume_figure,
    layer_energy_figure,
    load_layer_reports,
    parallel_coordinates_figure,
    pareto_csv,
    pareto_figure,
    pareto_png,
    write_report,
)
from nas.results.pareto import front_of, hypervolume
from nas.results.records import TrialRecord

OBJECTIVES = {"val_acc": "max", "energy_uj": "min"}
REFERENCE = {"val_acc": 0.0, "energy_uj": 10.0}
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _record(number: int, state: str, acc: float | None, energy: float | None, *, family: str = "snnmlp",
            t: int = 1, params: dict | None = None, completed_after: int | None = None, **attrs: object) -> TrialRecord:
    values = {"val_acc": acc, "energy_uj": energy} if state == "COMPLETE" else None
    user_attrs = {"family": family, "time_steps": t, **attrs}
    return TrialRecord(
        number=number,
        state=state,
        params=params if params is not None else {"width": 16 + 8 * number, "norm": "bn" if number % 2 else "gn"},
        values=values,
        user_attrs=user_attrs,
        completed=T0 + dt.timedelta(seconds=completed_after if completed_after is not None else number),
    )


@pytest.fixture
def records() -> list[TrialRecord]:
    # front: 0 (cheap), 3 (knee), 4 (accurate); 1 and 6 dominated; 2 pruned; 5 failed;
    # 7 complete but infeasible (would be on the front otherwise)
    recs = [
        _record(0, "COMPLETE", 0.70, 1.0),
        _record(1, "COMPLETE", 0.80, 5.0, family="mixer", t=2),
        _record(2, "PRUNED", None, None, last_values={"val_acc": 0.5, "energy_uj": 0.5}),
        _record(3, "COMPLETE", 0.90, 3.0, family="mixer", t=2, params={"width": 40, "norm": "bn", "extra": 3}),
        _record(4, "COMPLETE", 0.95, 8.0, t=4),
        _record(5, "FAIL", None, None, fail_reason="OOM"),
        _record(6, "COMPLETE", 0.85, 4.0, completed_after=100),
        _record(7, "COMPLETE", 0.99, 0.5),
    ]
    recs[7].constraints = (1.0,)
    return recs


def _front_numbers(records: list[TrialRecord]) -> list[int]:
    return [r.number for r in front_of(records, OBJECTIVES)]


def test_fixture_front(records: list[TrialRecord]) -> None:
    assert _front_numbers(records) == [0, 3, 4]


def test_pareto_csv_is_the_front(records: list[TrialRecord]) -> None:
    rows = list(csv.DictReader(io.StringIO(pareto_csv(records, objectives=OBJECTIVES))))
    assert [int(r["trial"]) for r in rows] == [0, 3, 4]
    assert [float(r["val_acc"]) for r in rows] == [0.70, 0.90, 0.95]
    assert [float(r["energy_uj"]) for r in rows] == [1.0, 3.0, 8.0]
    assert [r["family"] for r in rows] == ["snnmlp", "mixer", "snnmlp"]
    assert [r["time_steps"] for r in rows] == ["1", "2", "4"]
    assert [r["extra"] for r in rows] == ["", "3", ""]  # a param only one member sampled
    assert list(rows[0])[:5] == ["trial", "val_acc", "energy_uj", "family", "time_steps"]


def test_pareto_figure_highlights_the_front(records: list[TrialRecord]) -> None:
    fig = pareto_figure(records, objectives=OBJECTIVES)
    front = [t for t in fig.data if t.name.startswith("Pareto front")]
    assert len(front) == 1
    assert list(front[0].customdata) == [0, 3, 4]  # joined in energy order
    assert list(front[0].x) == [1.0, 3.0, 8.0]  # energy across, accuracy up
    assert list(front[0].y) == [0.70, 0.90, 0.95]
    assert "width=40" in front[0].hovertext[1] and "family mixer · T=2" in front[0].hovertext[1]
    faded = [t for t in fig.data if t.legendgroup == "trials"]
    assert sorted(n for t in faded for n in t.customdata) == [0, 1, 3, 4, 6, 7]
    assert all(t.marker.opacity < 0.5 for t in faded)
    assert {t.marker.symbol for t in faded} == {"circle", "square"}  # one shape per family
    pruned = [t for t in fig.data if t.name.startswith("pruned")]
    assert pruned[0].visible == "legendonly" and list(pruned[0].customdata) == [2]
    assert fig.layout.xaxis.title.text.startswith("energy_uj")


def test_hypervolume_figure_follows_completion_order(records: list[TrialRecord]) -> None:
    fig = hypervolume_figure(records, objectives=OBJECTIVES, reference=REFERENCE)
    ys = list(fig.data[0].y)
    assert ys == sorted(ys) and len(ys) == 5  # complete and feasible: 0, 1, 3, 4 then 6 (completed last)
    feasible = [r for r in records if r.state == "COMPLETE" and r.feasible]
    points = [[r.values["val_acc"], r.values["energy_uj"]] for r in feasible]
    # Plotted as the fraction of the reference box (accuracy 0..1 x energy 0..10), the raw value in the hover.
    raw = hypervolume(points, ["max", "min"], [0.0, 10.0])
    assert ys[-1] == pytest.approx(raw / 10.0)
    assert f"raw {raw:.6g}" in fig.data[0].hovertext[-1]
    assert ys[-1] == ys[-2]  # trial 6 is dominated: no gain
    with pytest.raises(ValueError, match="reference"):
        hypervolume_figure(records, objectives=OBJECTIVES, reference={"val_acc": 0.0})


def test_parallel_coordinates_colours_by_rank(records: list[TrialRecord]) -> None:
    fig = parallel_coordinates_figure(records, objectives=OBJECTIVES)
    par = fig.data[0]
    labels = [d.label for d in par.dimensions]
    assert labels == ["width", "norm", "extra", "val_acc (max)", "energy_uj (min)"]
    norm = par.dimensions[1]
    assert list(norm.ticktext) == ["bn", "gn"]
    extra = par.dimensions[2]
    assert "-" in list(extra.ticktext)  # trials that did not sample it
    colours = list(par.line.color)
    # rows are complete trials 0, 1, 3, 4, 6, 7; ranks 0 for the front, 7 infeasible gets the worst colour
    assert colours[0] == colours[2] == colours[3] == 0
    assert colours[5] == max(colours) and colours[1] > 0


def test_layer_energy_figure_takes_energy_meter_rows() -> None:
    rows = [
        {"name": "stem.conv", "firing_rate": None, "energy_uj": 3.0, "share": 0.6},
        {"name": "block1.fc", "firing_rate": 0.12, "energy_uj": 1.5, "share": 0.3},
        {"name": "head", "firing_rate": 0.2, "energy_uj": 0.5, "share": 0.1},
    ]
    fig = layer_energy_figure({3: rows, 0: [{"layer": "fc", "firing_rate": 0.3, "energy_pj": 2.0}]})
    bars = {(t.xaxis, t.name): t for t in fig.data}
    firing3 = bars[("x", "trial 3")]
    assert list(firing3.x) == ["block1.fc", "head"]  # the MAC-counted stem has no firing rate
    share3 = bars[("x2", "trial 3")]
    assert list(share3.x) == [0.6, 0.3, 0.1]
    assert list(bars[("x2", "trial 0")].x) == [1.0]  # energies turned into shares
    with pytest.raises(ValueError, match="'layer' or 'name'"):
        layer_energy_figure({1: [{"firing_rate": 0.1}]})


def test_pareto_png_is_written(records: list[TrialRecord], tmp_path: Path) -> None:
    path = pareto_png(records, objectives=OBJECTIVES, path=tmp_path / "front.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_report_is_self_contained(records: list[TrialRecord], tmp_path: Path) -> None:
    search_dir = tmp_path / "search"
    (search_dir / "trials" / "3").mkdir(parents=True)
    (search_dir / "trials" / "3" / "energy.json").write_text(
        json.dumps({"energy_uj": 3.0, "per_layer": [{"name": "fc1", "firing_rate": 0.1, "share": 1.0}]})
    )
    layers = load_layer_reports(search_dir, records, [0, 3, 4])
    assert list(layers) == [3]
    path = write_report(records, objectives=OBJECTIVES, reference=REFERENCE, out_dir=tmp_path / "out",
                        title="nas search demo <1>", layer_reports=layers)
    html = path.read_text()
    assert path.name == "report.html"
    assert "<title>nas search demo &lt;1&gt;</title>" in html
    assert '<p id="front-trials">Front (3 trials): #0, #3, #4</p>' in html
    assert html.count('<tr class="front"') == 6  # front table + all-trials table
    assert html.count("<script") == 1 + 4  # plotly once, then one per figure (front, hv, parcoords, layers)
    assert "<script src=" not in html and 'src="http' not in html  # nothing fetched from the network
    assert 'id="layers"' in html and "OOM" in html and "infeasible" in html
    assert "values of the last epoch" in html  # the pruned trial's row


def test_report_without_reference_or_complete_trials(tmp_path: Path) -> None:
    only_failed = [_record(0, "FAIL", None, None, fail_reason="boom")]
    path = write_report(only_failed, objectives=OBJECTIVES, reference=None, out_dir=tmp_path, title="empty")
    html = path.read_text()
    assert "Front (0 trials): none yet" in html and "No per-layer energy report" in html


def test_views_reject_bad_objectives(records: list[TrialRecord]) -> None:
    with pytest.raises(ValueError, match="direction"):
        pareto_figure(records, objectives={"val_acc": "up"})
    with pytest.raises(ValueError, match="empty"):
        pareto_csv(records, objectives={})


def test_single_trial_front_and_numpy_values() -> None:
    recs = [_record(0, "COMPLETE", np.float64(0.5), np.float32(2.0))]
    assert pareto_csv(recs, objectives=OBJECTIVES).splitlines()[1].startswith("0,0.5,2.0,")


def test_grafana_board_uses_metrics_that_ray_exports() -> None:
    import re

    import ray.dashboard.modules.metrics.dashboards.default_dashboard_panels as ray_panels

    board = json.loads((Path(__file__).resolve().parents[1] / "dashboards" / "nas-ray-search.json").read_text())
    assert board["uid"] == "nas-ray-search" and board["panels"]
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "SessionName", "Instance", "Trainable"} <= variables
    # Ray's own Grafana panels, shipped with the installed Ray, are the reference for metric names
    known = set(re.findall(r"\b(ray_[a-z_]+)\{", Path(ray_panels.__file__).read_text()))
    titles = set()
    for panel in board["panels"]:
        titles.add(panel["title"])
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\b(ray_[a-z_]+)\{", target["expr"]))
            assert used and used <= known, (panel["title"], used - known)
            assert target["expr"].count("(") == target["expr"].count(")")
            for variable in re.findall(r"\$(\w+)", target["expr"]):
                assert variable in variables
    assert {"Trials running", "CPU use per node", "GPU use per node"} <= titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_front_renderer_writes_what_the_views_write_and_survives_a_killed_helper(
    records: list[TrialRecord], tmp_path: Path
) -> None:
    import os
    import signal

    from nas.dashboards import write_front_artifacts
    from nas.dashboards.renderer import FrontRenderer

    kwargs = {"objectives": OBJECTIVES, "reference": REFERENCE, "title": "front"}
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    expected = write_front_artifacts(records, folder=here, **kwargs)
    renderer = FrontRenderer()
    try:
        written = renderer.write(records, folder=there, **kwargs)
        assert [p.name for p in written] == [p.name for p in expected]
        assert (there / "pareto.csv").read_text() == (here / "pareto.csv").read_text()
        for name in ("pareto.html", "hypervolume.html", "pareto.png"):
            assert (there / name).stat().st_size > 0.9 * (here / name).stat().st_size
        first = renderer.pid
        assert first is not None and first != os.getpid()

        os.kill(first, signal.SIGKILL)
        (there / "pareto.csv").unlink()
        renderer.write(records, folder=there, **kwargs)
        assert (there / "pareto.csv").is_file()
        assert renderer.pid not in (None, first)

        failure = r"^drawing the front failed: ValueError: reference has no value for objective\(s\) \[.nope.\]$"
        with pytest.raises(RuntimeError, match=failure) as error:
            renderer.write(records, folder=there, **{**kwargs, "objectives": {"nope": "max"}})
        assert "\n" not in str(error.value)
        renderer.write(records, folder=there, **kwargs)  # the helper stays up after a failed job
    finally:
        renderer.close()
    assert renderer.pid is None


def test_the_knee_is_marked_on_the_front_and_in_the_table(records: list[TrialRecord]) -> None:
    from nas.search.summary import front_rows, render_front

    fig = pareto_figure(records, objectives=OBJECTIVES)
    knee = [t for t in fig.data if t.name.startswith("knee")]
    # front (energy, val_acc): #0 (1, 0.70), #3 (3, 0.90), #4 (8, 0.95); normalised sums 1, 0.49, 1
    assert len(knee) == 1 and list(knee[0].customdata) == [3] and list(knee[0].x) == [3.0]
    rows = front_rows(records, OBJECTIVES)
    assert [r["trial"] for r in rows if r["knee"]] == [3]
    table = render_front(rows)
    assert "3 knee" in table and "best trade-off" in table


def test_layer_panels_say_what_they_cannot_show_and_rank_the_costliest_layers() -> None:
    rows = [{"name": f"layer{i}", "firing_rate": None, "energy_uj": float(i + 1)} for i in range(40)]
    fig = layer_energy_figure({5: rows})
    shares = next(t for t in fig.data if t.xaxis == "x2")
    assert list(shares.y[:3]) == ["layer39", "layer38", "layer37"]  # costliest first
    assert len(shares.y) == 13 and shares.y[-1] == "other (28 layers)"
    assert sum(shares.x) == pytest.approx(1.0)
    assert shares.showlegend is not False and shares.name == "trial 5"  # the legend names the trial
    notes = [a.text for a in fig.layout.annotations]
    assert any("no layer of these trials reports a firing rate" in n for n in notes)
