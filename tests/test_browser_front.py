"""The front as a browser shows it: MLflow's experiment page, its front filter and chart view, and optuna-dashboard.

Headless Chromium over the DevTools protocol (``DevTools`` of tests/test_browser.py) on `nas ui` and
`nas dashboard`, each started on a free 127.0.0.1 port and stopped by the test. Screenshots go to
test-output/browser/:

- ``experiment_runs.png``: the experiment opens on its runs table (not MLflow 3's GenAI traces page);
- ``front_runs.png``: the saved view "nas-front" (linked from the experiment's description and printed by
  `nas ui`): the runs table filtered to the front members, best val_acc first, objectives and params as columns;
- ``front_chart.png``: the saved view "nas-chart": MLflow's chart view with one scatter chart of val_acc
  against energy_uj over every complete trial;
- ``optuna_dashboard_study.png``: optuna-dashboard's page of the search, with the objective names;
- ``optuna_dashboard_trial.png``: a trial's page there, its per-epoch ``history`` user attribute.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from servers import free_port, stop_served
from test_browser import CHROMIUM, OUTPUT, DevTools, _read_until, headless_chromium
from test_tracking_support import OBJECTIVES, SyntheticSearch, run_synthetic_search

from nas.results.pareto import front_of

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)"
)


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSearch:
    return run_synthetic_search(tmp_path_factory.mktemp("runs"), "browsed", trials=8, refresh_seconds=3600)


def _serve(command: list[str]) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Run a nas command that serves until signalled; yield it and what it printed up to "stops it"."""
    process = subprocess.Popen([sys.executable, "-m", "nas.cli", *command], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        seen: list[str] = []
        _read_until(process.stdout, r"stops it", 180, seen)
        yield process, "\n".join(seen)
    finally:
        stop_served(process, signal.SIGTERM, 60)


def _printed(output: str, label: str) -> str:
    return re.search(rf"{label}: (http://127\.0\.0\.1:\S+)", output).group(1)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with headless_chromium(Path(tempfile.mkdtemp(dir=tmp_path_factory.mktemp("chromium")))) as ws_url:
        yield ws_url


async def _visit(ws_url: str, pages: list[tuple[str, str, str]], extra: dict[str, str] | None = None) -> dict[str, Any]:
    """Open each (url, JavaScript condition, screenshot name) in turn; returns each page's text and address by
    screenshot name, or (that text, the value of ``extra[name]``) where an extra expression is given."""
    import aiohttp

    texts = {}
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as ws:
        dt = DevTools(ws)
        page = await dt.new_page()
        for url, ready, name in pages:
            await dt.call("Page.navigate", {"url": url}, session=page)
            await dt.wait_for(f"document.body && ({ready})", page, 90)
            await asyncio.sleep(1.5)  # let the page finish drawing before the picture
            texts[name] = await dt.evaluate("document.body.innerText + '\\n' + location.href", page)
            if extra and name in extra:
                texts[name] = (texts[name], await dt.evaluate(extra[name], page))
            await dt.screenshot(page, OUTPUT / name)
        dt.reader.cancel()
    return texts


# the run names of the runs table, top to bottom (ag-grid renders each row once per pinned column group)
ROW_NAMES = ("[...new Set(Array.from(document.querySelectorAll('[row-index]'))"
             ".sort((a, b) => a.getAttribute('row-index') - b.getAttribute('row-index'))"
             ".map(r => (r.innerText.match(/trial-\\d+/) || [''])[0]).filter(n => n))].join(',')")


def _has(*words: str) -> str:
    return " && ".join(f"document.body.innerText.includes({json.dumps(w)})" for w in words)


def test_mlflow_opens_on_the_runs_and_the_front_is_one_click_away(search: SyntheticSearch, browser: str) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    front = sorted(front_of(search.records, OBJECTIVES), key=lambda r: -r.values["val_acc"])
    others = [r for r in search.records if r.number not in {f.number for f in front} and r.state != "DUPLICATE"]
    complete = [r for r in search.records if r.state == "COMPLETE"]
    port = free_port()
    for _, output in _serve(["ui", "--root", str(search.root), "--port", str(port)]):
        runs, front_view, chart_view = (_printed(output, label) for label in
                                        ("its runs", "its Pareto front", "its objectives chart"))
        headers = "Array.from(document.querySelectorAll('[role=columnheader]')).map(e => e.innerText).join('|')"
        texts = asyncio.run(_visit(browser, [
            (runs, _has("browsed", "Model training"), "experiment_runs.png"),
            (front_view, f"{headers}.includes('val_acc') && " + _has(f"trial-{front[0].number}"), "front_runs.png"),
            (chart_view, "document.querySelectorAll('.js-plotly-plot .scatterlayer .point').length > 0",
             "front_chart.png"),
        ], extra={"front_runs.png": f"{headers} + '#' + {ROW_NAMES}",
                  "front_chart.png": "Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => "
                                     "p.querySelectorAll('.scatterlayer .point').length + ':' + "
                                     "Array.from(p.querySelectorAll('.xtitle, .ytitle')).map(t => t.textContent)"
                                     ".join(',')).join('|')"}))
    runs_page, url = texts["experiment_runs.png"].rsplit("\n", 1)
    assert "/runs" in url and "traces" not in url and "overview" not in url, url
    assert "Traces\n0" not in runs_page  # not MLflow 3's GenAI overview
    columns, rows = texts["front_runs.png"][1].split("#")
    assert "val_acc" in columns and "energy_uj" in columns and "width" in columns
    # the front's members only, best val_acc first
    assert rows.split(",") == [f"trial-{r.number}" for r in front], (rows, [r.number for r in others])
    charts = texts["front_chart.png"][1].split("|")
    assert f"{len(complete)}:energy_uj,val_acc" in charts, charts  # one point per complete trial
    print(f"screenshots: {OUTPUT / 'experiment_runs.png'} {OUTPUT / 'front_runs.png'} {OUTPUT / 'front_chart.png'}")


def test_optuna_dashboard_shows_the_study_and_the_per_epoch_history(search: SyntheticSearch, browser: str) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    for process, output in _serve(["dashboard", "browsed", "--root", str(search.root), "--port", str(port)]):
        study_page = _printed(output, "search browsed")
        texts = asyncio.run(_visit(browser, [
            (study_page, _has("browsed", "val_acc", "energy_uj"), "optuna_dashboard_study.png"),
            (f"{study_page}/trials", _has("history"), "optuna_dashboard_trial.png"),
        ]))
        started = psutil.Process(process.pid).children(recursive=True)
    assert "Pareto" in texts["optuna_dashboard_study.png"]
    assert "epoch" in texts["optuna_dashboard_trial.png"]
    gone, alive = psutil.wait_procs(started, timeout=15)
    assert not alive, "optuna-dashboard still runs after nas dashboard was stopped"
    print(f"screenshots: {OUTPUT / 'optuna_dashboard_study.png'} {OUTPUT / 'optuna_dashboard_trial.png'}")
