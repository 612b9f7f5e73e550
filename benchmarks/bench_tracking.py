"""How much MLflow tracking costs a search, and how fast the front views are at 1,000 trials.

    .venv/bin/python benchmarks/bench_tracking.py [--trials 1000] [--overhead-trials 40] [--repeats 5]

1. Per-trial overhead: a tracker on a fresh SQLite store logs ``--overhead-trials`` trials exactly as
   the controller does (trial_started, 4 x trial_epoch, trial_finished, update_front throttled).
2. A study of ``--trials`` synthetic trials written straight into Optuna (add_trials) and MLflow
   (one child run each through the tracker), then: reading the records, ``nas pareto`` (in process
   and as a fresh command), the first front publication (pareto tags on every run), and the
   forced artifact refresh (pareto.html/.png/.csv, hypervolume.html) with each part timed.

Everything runs in a temporary folder; numbers are medians over ``--repeats`` runs unless noted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from nas.cli import main as nas_main
from nas.dashboards import hypervolume_figure, pareto_csv, pareto_figure, pareto_png
from nas.results.records import records_from_study
from nas.search.runs import write_options
from nas.tracking import MlflowTracker

OBJECTIVES = {"val_acc": "max", "energy_uj": "min"}
REFERENCE = {"val_acc": 0.0, "energy_uj": 200.0}
EPOCHS = 4


def _metrics(rng: random.Random, width: int, depth: int, t: int, epoch: int) -> dict[str, float]:
    capacity = width * depth * t
    acc = 0.98 - 0.5 * math.exp(-capacity / 60.0) - 0.04 / epoch + rng.uniform(-0.03, 0.03)
    energy = 0.05 * capacity * (1.5 if width >= 48 else 1.0) * (1 + rng.uniform(-0.1, 0.1))
    return {"val_acc": min(max(acc, 0.0), 1.0), "energy_uj": energy, "sops": 1e5 * capacity, "macs": 2e4 * width,
            "firing_rate": 0.1 + 0.02 * depth, "params": float(width * width * depth), "time_steps": float(t)}


def _sample(rng: random.Random) -> dict[str, int]:
    return {"width": rng.choice([16, 24, 32, 48, 64]), "depth": rng.randint(1, 4), "time_steps": rng.randint(1, 4)}


def _attrs(params: dict[str, int]) -> dict[str, object]:
    return {"family": "snnmlp" if params["width"] < 48 else "mixer", "energy_profile": "45nm",
            "counting_policy": "encoding=macs,classifier=sops", "time_steps": params["time_steps"]}


def _median_ms(values: list[float]) -> float:
    return 1000.0 * statistics.median(values)


def bench_overhead(folder: Path, trials: int) -> dict[str, float]:
    """Median milliseconds per trial of each tracker call, on a warm SQLite store."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    space = folder / "space.py"
    space.write_text("# synthetic space\n")
    tracker = MlflowTracker(uri, "overhead", objectives=OBJECTIVES, refresh_seconds=1e9)
    tracker.check_reachable()
    tracker.start_search(space_file=space, search_params={"trials": trials})
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(list(OBJECTIVES))
    rng = random.Random(0)
    parts: dict[str, list[float]] = {"trial_started": [], "trial_epoch x4": [], "trial_finished": [],
                                     "update_front": [], "total": []}
    tracker.update_front([], reference=REFERENCE)  # the first refresh (artifacts) is not per-trial work
    for _ in range(trials):
        trial = study.ask()
        params = {"width": trial.suggest_categorical("width", [16, 24, 32, 48, 64]),
                  "depth": trial.suggest_int("depth", 1, 4), "time_steps": trial.suggest_int("time_steps", 1, 4)}
        t0 = time.perf_counter()
        tracker.trial_started(trial.number, params, attrs=_attrs(params))
        t1 = time.perf_counter()
        for epoch in range(1, EPOCHS + 1):
            metrics = _metrics(rng, params["width"], params["depth"], params["time_steps"], epoch)
            tracker.trial_epoch(trial.number, metrics, step=epoch)
        t2 = time.perf_counter()
        final = {k: metrics[k] for k in OBJECTIVES}
        study.tell(trial, [final[k] for k in OBJECTIVES])
        t3 = time.perf_counter()
        tracker.trial_finished(trial.number, "complete", final_metrics=final)
        t4 = time.perf_counter()
        tracker.update_front(records_from_study(study), reference=REFERENCE)
        t5 = time.perf_counter()
        parts["trial_started"].append(t1 - t0)
        parts["trial_epoch x4"].append(t2 - t1)
        parts["trial_finished"].append(t4 - t3)
        parts["update_front"].append(t5 - t4)
        parts["total"].append((t5 - t0) - (t3 - t2))  # without Optuna's tell
    tracker.finish_search()
    return {k: _median_ms(v) for k, v in parts.items()}


def build_study(root: Path, name: str, trials: int) -> tuple[MlflowTracker, optuna.Study, float, float]:
    """Write ``trials`` synthetic trials into Optuna and MLflow; returns the seconds each took."""
    storage = f"sqlite:///{root / 'optuna.db'}"
    uri = f"sqlite:///{root / 'mlflow.db'}"
    (root / name).mkdir(parents=True)
    space = root / name / "space.py"
    space.write_text("# synthetic space\n")
    write_options(root / name, {"name": name, "storage": storage, "tracking_uri": uri, "objectives": OBJECTIVES})
    study = optuna.create_study(storage=storage, study_name=name, directions=["maximize", "minimize"])
    study.set_metric_names(list(OBJECTIVES))
    study.set_user_attr("objectives", OBJECTIVES)
    study.set_user_attr("reference", REFERENCE)
    rng = random.Random(1)
    distributions = {
        "width": optuna.distributions.CategoricalDistribution([16, 24, 32, 48, 64]),
        "depth": optuna.distributions.IntDistribution(1, 4),
        "time_steps": optuna.distributions.IntDistribution(1, 4),
    }
    frozen = []
    for _ in range(trials):
        params = _sample(rng)
        history = [{"epoch": e, **_metrics(rng, params["width"], params["depth"], params["time_steps"], e)}
                   for e in range(1, EPOCHS + 1)]
        frozen.append(optuna.trial.create_trial(
            params=params, distributions=distributions, values=[history[-1][k] for k in OBJECTIVES],
            user_attrs={"history": history, **_attrs(params)},
        ))
    t0 = time.perf_counter()
    study.add_trials(frozen)
    optuna_s = time.perf_counter() - t0

    tracker = MlflowTracker(uri, name, objectives=OBJECTIVES, refresh_seconds=1e9)
    tracker.check_reachable()
    tracker.start_search(space_file=space, search_params={"trials": trials})
    t0 = time.perf_counter()
    for record in records_from_study(study):
        tracker.trial_started(record.number, record.params, attrs=_attrs(record.params))
        tracker.trial_finished(record.number, "complete", final_metrics=record.values)
    mlflow_s = time.perf_counter() - t0
    return tracker, study, optuna_s, mlflow_s


def time_refresh_parts(records: list, folder: Path) -> dict[str, float]:
    """Seconds of each piece of one refresh, drawn on their own the way the tracker draws them."""
    import numpy as np

    from nas.dashboards import completion_order, trial_rows
    from nas.results.pareto import hypervolume_history, ranks_of

    parts = {}
    t0 = time.perf_counter()
    ranks = ranks_of(records, OBJECTIVES)
    parts["ranks_of (non-dominated sort)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = trial_rows(records, OBJECTIVES, ranks=ranks)
    parts["trial rows"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pareto_figure(records, objectives=OBJECTIVES, rows=rows).write_html(folder / "pareto.html", include_plotlyjs=True)
    parts["pareto.html"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pareto_png(records, objectives=OBJECTIVES, path=folder / "pareto.png", rows=rows)
    parts["pareto.png (matplotlib)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    (folder / "pareto.csv").write_text(pareto_csv(records, objectives=OBJECTIVES, rows=rows))
    parts["pareto.csv"] = time.perf_counter() - t0
    ordered = [r for r in completion_order(records) if r.number in ranks]
    points = np.asarray([[r.values[n] for n in OBJECTIVES] for r in ordered])
    t0 = time.perf_counter()
    history = hypervolume_history(points, list(OBJECTIVES.values()), list(REFERENCE.values()))
    parts["hypervolume history from scratch (not in refresh)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    hypervolume_figure(records, objectives=OBJECTIVES, reference=REFERENCE, history=history).write_html(
        folder / "hypervolume.html", include_plotlyjs=True)
    parts["hypervolume.html (history kept by the tracker)"] = time.perf_counter() - t0
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--overhead-trials", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "overhead").mkdir()
        overhead = bench_overhead(tmp_path / "overhead", args.overhead_trials)
        print(f"\nTracking overhead per trial ({args.overhead_trials} trials, {EPOCHS} epochs each, SQLite store;"
              " median ms)")
        print(f"{'call':<22}{'ms':>10}")
        for key, value in overhead.items():
            print(f"{key:<22}{value:>10.1f}")

        root = tmp_path / "runs"
        name = "bench"
        tracker, study, optuna_s, mlflow_s = build_study(root, name, args.trials)
        rows: list[tuple[str, float, str]] = [
            (f"write {args.trials} trials into Optuna (add_trials)", optuna_s, "once"),
            (f"write {args.trials} child runs into MLflow (tracker)", mlflow_s, "once"),
        ]
        reads = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            records = records_from_study(study)
            reads.append(time.perf_counter() - t0)
        rows.append(("records_from_study on the open study (cached)", statistics.median(reads),
                     f"median of {args.repeats}"))

        pareto_runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                nas_main(["pareto", name, "--root", str(root), "--json"])
            pareto_runs.append(time.perf_counter() - t0)
        rows.append(("nas pareto --json (in process)", statistics.median(pareto_runs), f"median of {args.repeats}"))
        cold = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "nas.cli", "pareto", name, "--root", str(root)], check=True,
                           stdout=subprocess.DEVNULL)
            cold.append(time.perf_counter() - t0)
        rows.append(("nas pareto (fresh command)", statistics.median(cold), "median of 3"))

        t0 = time.perf_counter()
        tracker.update_front(records, reference=REFERENCE, force=True)
        rows.append(("first update_front: tags on every run + artifacts", time.perf_counter() - t0, "once"))
        refreshes = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            tracker.update_front(records, reference=REFERENCE, force=True)
            refreshes.append(time.perf_counter() - t0)
        rows.append(("artifact refresh (update_front, force)", statistics.median(refreshes),
                     f"median of {args.repeats}"))
        parts_runs = [time_refresh_parts(records, tmp_path) for _ in range(args.repeats)]
        for key in parts_runs[0]:
            rows.append((f"  of which {key}", statistics.median(p[key] for p in parts_runs),
                         f"median of {args.repeats}"))
        tracker.finish_search()

        print(f"\nA study of {args.trials} synthetic trials (seconds)")
        print(f"{'step':<56}{'s':>9}  note")
        for label, seconds, note in rows:
            print(f"{label:<56}{seconds:>9.3f}  {note}")
        verdict = "meets" if statistics.median(refreshes) < 5.0 else "misses"
        print(f"\nartifact refresh at {args.trials} trials: median {statistics.median(refreshes):.2f} s "
              f"({verdict} the 5 s target)")


if __name__ == "__main__":
    main()
