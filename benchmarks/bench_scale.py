"""One controller at scale: K simulated workers, thousands of trials, the real stores (issue 19).

Regenerate ``benchmarks/results/scale.json.gz`` (each command appends one run to it; the "before" runs
were made with the first command on the code of commit 33cb5d6, ``--limit 1500`` for K = 100 and
``--limit 600`` for K = 10 and 1,000):

    PYTHONPATH=. nice -n 15 .venv/bin/python benchmarks/bench_scale.py --points sqlite:10:1000 \
        sqlite:100:1000 sqlite:1000:1000 postgres:100:1000 sqlite:100:5000:200 --limit 900 \
        --out benchmarks/results/scale.json.gz
    PYTHONPATH=. nice -n 15 .venv/bin/python benchmarks/bench_scale.py --points sqlite:1000:20000:200 \
        --limit 4200 --out benchmarks/results/scale.json.gz
    PYTHONPATH=. nice -n 15 .venv/bin/python benchmarks/bench_scale.py --asks 1000 5000 20000 \
        --ask-histories 0 1000 200 --out benchmarks/results/scale.json.gz
    PYTHONPATH=. .venv/bin/python benchmarks/bench_scale.py --show benchmarks/results/scale.json.gz

The figures and what they mean are in ``cluster/README.md`` ("How far one controller goes").

Each point ``STORE:K:TRIALS[:HISTORY]`` runs in its own process (memory is that process's peak) with a
wall-clock ``--limit``: the simulator (``nas.bench.scale``) replays the snnmlp learning-curve table with
K simulated workers through the controller's own bookkeeping (``Bookkeeper``, the MLflow tracker in its
writer process as ``nas launch`` runs it, front and hypervolume updates), so the controller is the only
thing that takes real time; ``HISTORY`` bounds what the sampler models (``make_sampler(history=...)``).
Stores: ``sqlite`` = Optuna SQLite file + MLflow SQLite store (the defaults of a run folder); ``postgres`` = Optuna on
PostgreSQL + an MLflow server backed by PostgreSQL, both started on 127.0.0.1 by the benchmark
(``tests/servers.py``). Per point: median milliseconds per step (and the median over the last tenth of
the run, where the study is largest; ``queue.*`` is what queuing an event for the MLflow writer costs
the controller, ``mlflow.per_event`` the writer's time per event written, ``mlflow.batch`` per batch),
trial events per second (starts + epoch results + ends, the bookkeeping thread and the MLflow writer
drained), peak memory, whether every event is in the study and in MLflow exactly
once, and the wall time of ``nas status``, ``nas pareto``, ``nas report`` (fresh processes) and of the
MLflow UI's front page of the search (the REST calls its runs table makes, against an ``mlflow server``
on the store). A point that does not finish within ``--limit`` reports how far it got. ``--out`` writes
every point as gzipped JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from servers import create_database, running_mlflow, running_postgres  # noqa: E402

NAME = "scale"
TABLE = "snnmlp"


@contextlib.contextmanager
def _stores(kind: str, folder: Path) -> Iterator[tuple[str, str, str | None]]:
    """(Optuna storage URL, MLflow tracking URI, MLflow UI URL if a server already runs) for a store kind."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'optuna.db'}", f"sqlite:///{folder / 'mlflow.db'}", None
        return
    if kind != "postgres":
        raise ValueError(f"store {kind!r} is not sqlite or postgres")
    with running_postgres() as server:
        optuna_url = create_database(server, "optuna")
        mlflow_url = create_database(server, "mlflow")
        with running_mlflow(mlflow_url, folder / "mlartifacts") as tracking:
            yield optuna_url, tracking, tracking


def _ui_front_page(base_url: str, name: str) -> float:
    """Seconds for what the MLflow UI fetches to show a search's runs: the page, the experiment, the first
    page of runs (100, newest first) and the parent run's first 100 children."""
    def get(path: str) -> bytes:
        with urllib.request.urlopen(base_url + path, timeout=120) as response:
            return response.read()

    def post(path: str, body: dict) -> dict:
        request = urllib.request.Request(base_url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    start = time.perf_counter()
    get("/")
    experiment = json.loads(get(f"/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name={name}"))
    experiment_id = experiment["experiment"]["experiment_id"]
    search = {"experiment_ids": [experiment_id], "max_results": 100, "order_by": ["attributes.start_time DESC"],
              "run_view_type": "ACTIVE_ONLY"}
    post("/ajax-api/2.0/mlflow/runs/search", search)
    parents = post("/ajax-api/2.0/mlflow/runs/search", {**search, "filter": "tags.`nas.role` = 'search'"})
    parent = parents["runs"][0]["info"]["run_id"]
    post("/ajax-api/2.0/mlflow/runs/search", {**search, "filter": f"tags.`mlflow.parentRunId` = '{parent}'"})
    return time.perf_counter() - start


def _views(root: Path, tracking_uri: str, ui_url: str | None, repeats: int) -> dict[str, float]:
    """Median seconds of ``nas status``, ``nas pareto``, ``nas report`` and the MLflow UI front page."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out: dict[str, float] = {}
    for command in ("status", "pareto", "report"):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "nas.cli", command, NAME, "--root", str(root)], check=True,
                           stdout=subprocess.DEVNULL, env=env)
            times.append(time.perf_counter() - start)
        out[f"nas_{command}_s"] = statistics.median(times)
    # What status and pareto cost before the stored summary: every trial read back (in process, no imports).
    from nas.search.runs import open_search

    start = time.perf_counter()
    records = open_search(root, NAME).records
    out["read_every_trial_s"] = time.perf_counter() - start
    out["trials_read"] = len(records)
    with contextlib.ExitStack() as stack:
        if ui_url is None:
            ui_url = stack.enter_context(running_mlflow(tracking_uri, root / "ui-artifacts"))
        _ui_front_page(ui_url, NAME)  # the server's first answer loads its code; not what a user waits for twice
        out["mlflow_ui_front_page_s"] = statistics.median(_ui_front_page(ui_url, NAME) for _ in range(repeats))
    return out


def run_point(kind: str, workers: int, trials: int, history: int | None, progress: Path, repeats: int) -> dict:
    """One point, in this process: the run, the store check and the views."""
    from nas.bench import SimulationSettings, TableSpace, load_table, resolve_table
    from nas.bench.scale import StepTimer, TimedListener, check_stores, prepare_scale_search, run_scale
    from nas.tracking import TrackerProcess

    space = TableSpace(load_table(resolve_table(TABLE)))
    with tempfile.TemporaryDirectory(prefix="nas-scale-") as tmp, _stores(kind, Path(tmp)) as stores:
        storage_url, tracking_uri, ui_url = stores
        root = Path(tmp) / "runs"
        prepared = prepare_scale_search(space, root=root, name=NAME, storage_url=storage_url,
                                        tracking_uri=tracking_uri, trials=trials, workers=workers)
        tracker = TrackerProcess(tracking_uri, NAME, objectives=dict(space.table.objectives),
                                 artifact_location=(root / "mlartifacts").resolve().as_uri() if ui_url else None)
        tracker.start_search(space_file=prepared.search_dir / "space.py",
                             search_params={"trials": trials, "workers": workers, "store": kind})
        timer = StepTimer()
        started = time.perf_counter()
        stop = threading.Event()

        def report_progress() -> None:  # how far it got, for a point that runs out of time
            while not stop.wait(10.0):
                summary = timer.summary()
                done = summary.get("tell", {}).get("calls", 0)
                progress.write_text(json.dumps({"trials_done": done, "seconds": time.perf_counter() - started,
                                                "steps": summary}))

        threading.Thread(target=report_progress, daemon=True).start()
        settings = SimulationSettings(workers=workers, budget=float("inf"), max_trials=trials, seed=0)
        run = run_scale(space, prepared, settings, listeners=[TimedListener(tracker, timer, "queue")], timer=timer,
                        history=history)
        stop.set()
        writer = tracker.timings()  # the writer process's batches: seconds and events each
        for seconds, events in zip(writer["batch"], writer["batch_events"], strict=True):
            timer.add("mlflow.batch", seconds)
            timer.add("mlflow.per_event", seconds / events)
        tracker.finish_search()
        run.steps = timer.summary()
        check_start = time.perf_counter()
        problems = check_stores(prepared.study, tracking_uri, NAME, run.simulation,
                                metric_sample=None if trials <= 2000 else 500)
        check_seconds = time.perf_counter() - check_start
        views = _views(root, tracking_uri, ui_url, repeats)
        states: dict[str, int] = {}
        for trial in run.simulation.trials:
            states[trial.state] = states.get(trial.state, 0) + 1
        return {"store": kind, "workers": workers, "trials": trials, "history": history, "finished": True,
                "trials_done": len(run.simulation.trials), "states": states, "seconds": run.seconds,
                "controller_seconds": run.controller_seconds, "events": run.events,
                "events_per_second": run.events_per_second, "peak_rss_mb": run.peak_rss_mb, "steps": run.steps,
                "problems": problems[:50], "problem_count": len(problems), "check_seconds": check_seconds,
                "bookkeeping_errors": run.errors, "views": views}


def _parse(point: str) -> tuple[str, int, int, int | None]:
    kind, workers, trials, *history = point.split(":")
    return kind, int(workers), int(trials), int(history[0]) if history else None


def sampler_asks(sizes: list[int], histories: list[int | None], running: int = 100, repeats: int = 7) -> list[dict]:
    """Median seconds of one TPE ask + sample on an in-memory study of each size (the sampler's own work).

    The study holds ``size`` finished trials of the snnmlp table (each proposal's nearest entry, its final
    objectives) and ``running`` RUNNING ones, as a search with that many workers does; the stores are left
    out, so this is what the sampler costs when the storage serves trials from memory.
    """
    import random

    import optuna

    from nas.bench import TableSpace, load_table, resolve_table
    from nas.bench.scale import DistinctSpace
    from nas.search.searcher import make_sampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = DistinctSpace(TableSpace(load_table(resolve_table(TABLE))))
    names = list(space.table.objectives)
    directions = ["maximize" if d == "max" else "minimize" for d in space.table.objectives.values()]
    rng = random.Random(0)
    out = []
    for size in sizes:
        study = optuna.create_study(directions=directions, sampler=optuna.samplers.RandomSampler(seed=0))
        for number in range(size + running):
            trial = study.ask()
            space.space.suggest(trial)
            if number < size:
                entry = space.entries[space.nearest(trial.params)]
                study.tell(trial, [float(entry.rows[-1][n]) for n in names])
        for history in histories:
            study.sampler = make_sampler("tpe", seed=rng.randrange(2**31), history=history)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                trial = study.ask()
                space.space.suggest(trial)
                times.append(time.perf_counter() - start)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)  # the study keeps its size
            out.append({"trials": size, "running": running, "history": history,
                        "ask_ms": 1000 * statistics.median(times)})
            print(f"{size} trials, history {history or 'all'}: {out[-1]['ask_ms']:.0f} ms", flush=True)
    return out


def _run_child(point: str, limit: float, repeats: int) -> dict:
    kind, workers, trials, history = _parse(point)
    with tempfile.TemporaryDirectory(prefix="nas-scale-point-") as tmp:
        result_file, progress = Path(tmp) / "result.json", Path(tmp) / "progress.json"
        command = [sys.executable, __file__, "--child", point, "--result", str(result_file), "--progress",
                   str(progress), "--repeats", str(repeats)]
        child = subprocess.Popen(command, env=dict(os.environ, PYTHONPATH=str(REPO)), start_new_session=True)
        try:
            child.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGINT)  # KeyboardInterrupt: its servers are stopped on the way out
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            partial = json.loads(progress.read_text()) if progress.exists() else {}
            return {"store": kind, "workers": workers, "trials": trials, "history": history, "finished": False,
                    "limit_s": limit, **partial}
        if child.returncode != 0 or not result_file.exists():
            return {"store": kind, "workers": workers, "trials": trials, "history": history, "finished": False,
                    "error": f"exit status {child.returncode}"}
        return json.loads(result_file.read_text())


def render(points: list[dict]) -> str:
    """The figures as a Markdown table."""
    steps = ("sampler.ask", "suggest", "record", "tell", "mlflow.trial_epoch", "mlflow.trial_finished",
             "mlflow.per_event", "front")
    head = ["store", "K", "trials", "history", "events/s", *[f"{s} ms" for s in steps], "peak MiB", "exact", "status s",
            "pareto s", "report s", "UI s", "read all s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in points:
        cells = [p["store"], str(p["workers"]), str(p["trials"]), str(p.get("history") or "all")]
        if not p.get("finished"):
            stepped = p.get("steps", {})
            asked = stepped.get("suggest", {}).get("calls", 0)
            cells += [f"not within {p.get('limit_s', 0):.0f} s: {asked} asked, {p.get('trials_done', 0)} ended"]
            cells += [_ms(stepped.get(s)) for s in steps] + ["-"] * 7
        else:
            cells += [f"{p['events_per_second']:.0f}"] + [_ms(p["steps"].get(s)) for s in steps]
            views = p["views"]
            cells += [f"{p['peak_rss_mb']:.0f}", "yes" if p["problem_count"] == 0 else f"NO ({p['problem_count']})",
                      f"{views['nas_status_s']:.1f}", f"{views['nas_pareto_s']:.1f}", f"{views['nas_report_s']:.1f}",
                      f"{views['mlflow_ui_front_page_s']:.2f}",
                      f"{views['read_every_trial_s']:.1f}" if "read_every_trial_s" in views else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nms: median per call (median over the last tenth of the run in brackets)."


def _ms(step: dict | None) -> str:
    if not step:
        return "-"
    return f"{step['median_ms']:.1f} ({step['last_tenth_median_ms']:.1f})"


def main() -> None:
    """Run the points (each in its own process) and print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", nargs="+", default=["sqlite:10:1000", "sqlite:100:1000", "sqlite:1000:1000"])
    parser.add_argument("--limit", type=float, default=1500.0, help="wall-clock seconds per point")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each view timing (median)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--show", type=Path, help="print the tables of a saved --out file and exit")
    parser.add_argument("--asks", type=int, nargs="+", help="instead: time TPE asks at these study sizes")
    parser.add_argument("--ask-histories", type=int, nargs="+", default=[0, 1000],
                        help="sampler histories of the --asks timings (0: every trial)")
    parser.add_argument("--ask-running", type=int, default=100, help="running trials in the --asks studies")
    parser.add_argument("--label", default="", help="stored with the figures (e.g. before / after)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--progress", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = run_point(*_parse(args.child), args.progress, args.repeats)
        args.result.write_text(json.dumps(result))
        return
    if args.show:
        with gzip.open(args.show, "rt") as f:
            for saved in json.load(f)["runs"]:
                if "asks" in saved:
                    print(f"{saved['label']} ({saved['time']}): TPE ask + sample, median ms")
                    for a in saved["asks"]:
                        print(f"  {a['trials']} trials, {a['running']} running, history {a['history'] or 'all'}: "
                              f"{a['ask_ms']:.0f}")
                    continue
                print(f"{saved['label']} ({saved['time']})\n{render(saved['points'])}\n")
        return
    if args.asks:
        asks = sampler_asks(args.asks, [h or None for h in args.ask_histories], running=args.ask_running)
        if args.out:
            _append(args.out, {"label": args.label, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "asks": asks})
        return
    points = []
    for point in args.points:
        print(f"{point} ...", flush=True)
        points.append(_run_child(point, args.limit, args.repeats))
        print(render(points[-1:]), flush=True)
    print(render(points))
    if args.out:
        _append(args.out, {"label": args.label, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "points": points})


def _append(path: Path, run: dict) -> None:
    """Add one run to the gzipped JSON results file."""
    previous = []
    if path.exists():
        with gzip.open(path, "rt") as f:
            previous = json.load(f)["runs"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        json.dump({"runs": [*previous, run]}, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
