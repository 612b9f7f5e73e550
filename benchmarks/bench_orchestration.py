"""Orchestration overhead of a nas search: how much wall time is not spent inside trials.

Trials of known length (a trainable that sleeps ``--epoch-seconds`` per epoch and reports fake
metrics) run through the real controller: Optuna searcher in a SQLite study, MOASHA (or no
scheduler), Ray Tune with reuse_actors, the bookkeeping callback and MLflow tracking.
Overhead = 1 - ideal / measured, where ideal = total trial time / concurrency.

Peer in the same run, interleaved: bare Ray Tune (``Tuner`` with its default random search, FIFO,
reuse_actors, no tracking) running the same sleeping function. Its overhead is the floor that Ray
Tune itself sets; the difference is what nas adds. Both sides import Ray Tune and nas before the
first timed run, so no run pays the one-time imports (about a second) inside its window.

    .venv/bin/python benchmarks/bench_orchestration.py --trials 20 --concurrency 2 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

SPACE = '''
from nas import SearchSpace
from nas.snn import SNNMLP, SNNMLPConfig


def sample(trial):
    return SNNMLPConfig(img_size=28, in_chans=1, num_classes=10, patch_size=2, depths=(1, 1),
                        width=trial.suggest_int("width", 4, 64), mlp_ratio=trial.suggest_int("ratio", 1, 4))


space = SearchSpace(name="sleepy", sample=sample, build=SNNMLP, epochs={epochs}, trials={trials})
'''


def _sleep_and_report(params: dict[str, Any], epochs: int, epoch_seconds: float, number: int) -> None:
    from ray import tune

    started_at = time.time()
    for epoch in range(1, epochs + 1):
        time.sleep(epoch_seconds)
        tune.report({"started_at": started_at, "reported_at": time.time(),
                     "epoch": epoch, "val_acc": 1.0 - 1.0 / (params["width"] + epoch),
                     "energy_uj": float(params["width"] * params["ratio"]),
                     "optuna_number": number, "family": "snnmlp", "time_steps": 1, "params": params["width"]})


def make_sleeping_trial(epoch_seconds: float) -> Any:
    """A nas trainable whose trials have a known length: sleep per epoch, report plausible metrics."""

    def sleeping_trial(config: dict[str, Any], setup: Any) -> None:
        _sleep_and_report(config["params"], setup.epochs, epoch_seconds, config["optuna_number"])

    return sleeping_trial


def _start_ray(concurrency: int) -> None:
    import ray

    ray.init(num_cpus=concurrency, object_store_memory=100 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False)


def _timings(spans: list[tuple[float, float]], started_at: float, ended_at: float, concurrency: int,
             epochs_run: int, epoch_seconds: float) -> dict[str, float]:
    seconds = ended_at - started_at
    ideal = epochs_run * epoch_seconds / concurrency
    spans = sorted(spans)
    return {"search_s": seconds, "ideal_s": ideal, "overhead": 1.0 - ideal / seconds, "trials": len(spans),
            "first_start_s": spans[0][0] - started_at, "tail_s": ended_at - max(end for _, end in spans),
            "between_s": _median_gap(spans, concurrency)}


def _median_gap(spans: list[tuple[float, float]], slots: int) -> float:
    """Median time from a trial's end to the start of the next trial that took its slot."""
    free: list[float] = []  # end times of running trials, one per busy slot
    gaps = []
    for start, end in spans:
        if len(free) == slots:
            earliest = min(free)
            free.remove(earliest)
            gaps.append(start - earliest)
        free.append(end)
    return statistics.median(gaps) if gaps else 0.0


def nas_run(trials: int, concurrency: int, epoch_seconds: float, scheduler: str, epochs: int) -> dict[str, float]:
    """One nas search of sleeping trials (controller, Optuna in SQLite, MLflow tracking)."""
    import ray

    from nas.results.records import COMPLETE, PRUNED
    from nas.search.controller import run_search
    from nas.search.options import SearchOptions
    from nas.search.prepare import prepare_search
    from nas.tracking import TrackerProcess

    folder = Path(tempfile.mkdtemp(prefix="nas-bench-orch-"))
    space = folder / "sleepy.py"
    space.write_text(SPACE.format(epochs=epochs, trials=trials))
    options = SearchOptions(space=str(space), name="bench", root=str(folder / "runs"), trials=trials,
                            epochs=epochs, concurrency=concurrency, scheduler=scheduler, seed=0)
    prepared = prepare_search(options)
    tracker = TrackerProcess(prepared.tracking_uri, prepared.name, objectives=prepared.objectives)
    tracker.start_search(space_file=prepared.search_dir / "space.py", search_params={"bench": True})
    _start_ray(concurrency)
    try:
        started_at = time.time()
        result = run_search(prepared, listeners=[tracker], trainable=make_sleeping_trial(epoch_seconds))
        ended_at = time.time()
    finally:
        tracker.finish_search()
        ray.shutdown()
    ran = [r for r in result.records if r.state in (COMPLETE, PRUNED)]
    spans = [(r.history[0]["started_at"], r.history[-1]["reported_at"]) for r in ran]
    return _timings(spans, started_at, ended_at, concurrency, sum(len(r.history) for r in ran), epoch_seconds)


def ray_tune_run(trials: int, concurrency: int, epoch_seconds: float, epochs: int) -> dict[str, float]:
    """The peer: bare Ray Tune runs the same sleeping function (random search, FIFO, reuse_actors)."""
    import ray
    from ray import tune

    def sleeping_function(config: dict[str, Any]) -> None:
        _sleep_and_report(config, epochs, epoch_seconds, 0)

    _start_ray(concurrency)
    try:
        started_at = time.time()
        tuner = tune.Tuner(
            sleeping_function,
            param_space={"width": tune.randint(4, 65), "ratio": tune.randint(1, 5)},
            tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=concurrency, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(prefix="ray-bench-orch-"), verbose=0),
        )
        grid = tuner.fit()
        ended_at = time.time()
        frames = [result.metrics_dataframe for result in grid]
    finally:
        ray.shutdown()
    spans = [(float(frame["started_at"].iloc[0]), float(frame["reported_at"].iloc[-1])) for frame in frames]
    return _timings(spans, started_at, ended_at, concurrency, sum(len(frame) for frame in frames), epoch_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--epoch-seconds", type=float, default=2.0)
    parser.add_argument("--scheduler", default="none", choices=["none", "moasha", "asha"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # quiet bare Ray Tune like the controller does
    import ray.tune  # noqa: F401 - the one-time imports, outside every timed window

    import nas.search.controller  # noqa: F401
    import nas.search.searcher  # noqa: F401
    import nas.tracking  # noqa: F401

    rows: dict[str, list[dict[str, float]]] = {"nas": [], "ray tune": []}
    for _ in range(args.repeats):  # interleaved, so drifts of a shared machine hit both alike
        rows["nas"].append(nas_run(args.trials, args.concurrency, args.epoch_seconds, args.scheduler, args.epochs))
        rows["ray tune"].append(ray_tune_run(args.trials, args.concurrency, args.epoch_seconds, args.epochs))
    print(f"{args.trials} trials x {args.epochs} epochs x {args.epoch_seconds} s, concurrency {args.concurrency}, "
          f"nas scheduler {args.scheduler}, {args.repeats} runs each, interleaved")
    print(f"{'':>9} {'run':>4} {'trials':>6} {'ideal s':>8} {'search s':>9} {'overhead':>9} {'to 1st trial s':>15} "
          f"{'between trials ms':>18} {'tail s':>7}")
    for who, runs in rows.items():
        for i, row in enumerate(runs):
            print(f"{who:>9} {i:>4} {row['trials']:>6} {row['ideal_s']:>8.1f} {row['search_s']:>9.1f} "
                  f"{row['overhead']:>8.1%} {row['first_start_s']:>15.2f} {row['between_s'] * 1000:>18.0f} "
                  f"{row['tail_s']:>7.2f}")
    medians = {who: statistics.median(r["overhead"] for r in runs) for who, runs in rows.items()}
    print(f"median overhead (search wall time not spent in trials): nas {medians['nas']:.1%}, "
          f"bare Ray Tune {medians['ray tune']:.1%}  [target for nas < 5%]")


if __name__ == "__main__":
    main()
