"""Orchestration overhead of a nas search: how much wall time is not spent inside trials.

Trials of known length (a trainable that sleeps ``--epoch-seconds`` per epoch and reports fake
metrics) run through the real controller: Optuna searcher in a SQLite study, MOASHA (or no
scheduler), Ray Tune with reuse_actors, the bookkeeping callback and MLflow tracking. Peer in the
same run: the ideal wall time, total trial time / concurrency. Overhead = 1 - ideal / measured.

    .venv/bin/python benchmarks/bench_orchestration.py --trials 20 --concurrency 2 --repeats 3
"""

from __future__ import annotations

import argparse
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


space = SearchSpace(name="sleepy", sample=sample, build=SNNMLP, epochs=2, trials=20)
'''


def make_sleeping_trial(epoch_seconds: float) -> Any:
    """A trainable whose trials have a known length: sleep per epoch, report plausible metrics."""

    def sleeping_trial(config: dict[str, Any], setup: Any) -> None:
        from ray import tune

        params = config["params"]
        for epoch in range(1, setup.epochs + 1):
            time.sleep(epoch_seconds)
            tune.report({"epoch": epoch, "val_acc": 1.0 - 1.0 / (params["width"] + epoch),
                         "energy_uj": float(params["width"] * params["ratio"]),
                         "optuna_number": config["optuna_number"], "family": "snnmlp", "time_steps": 1,
                         "params": params["width"]})

    return sleeping_trial


def one_run(trials: int, concurrency: int, epoch_seconds: float, scheduler: str, epochs: int) -> dict[str, float]:
    """Run one search of sleeping trials; return wall times and the trial time actually slept."""
    import ray

    from nas.search.controller import SearchOptions, prepare_search, run_search
    from nas.search.records import COMPLETE, PRUNED
    from nas.tracking import MlflowTracker

    folder = Path(tempfile.mkdtemp(prefix="nas-bench-orch-"))
    space = folder / "sleepy.py"
    space.write_text(SPACE)
    options = SearchOptions(space=str(space), name="bench", root=str(folder / "runs"), trials=trials,
                            epochs=epochs, concurrency=concurrency, scheduler=scheduler, seed=0)
    started = time.monotonic()
    prepared = prepare_search(options)
    setup_seconds = time.monotonic() - started
    tracker = MlflowTracker(prepared.tracking_uri, prepared.name, objectives=prepared.objectives)
    tracker.start_search(space_file=prepared.search_dir / "space.py", search_params={"bench": True})
    ray.init(num_cpus=concurrency, object_store_memory=100 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False)
    try:
        fit_started = time.monotonic()
        result = run_search(prepared, listeners=[tracker], trainable=make_sleeping_trial(epoch_seconds))
        fit_seconds = time.monotonic() - fit_started
    finally:
        tracker.finish_search()
        ray.shutdown()
    epochs_run = sum(len(r.history) for r in result.records if r.state in (COMPLETE, PRUNED))
    slept = epochs_run * epoch_seconds
    ideal = slept / concurrency
    return {"setup_s": setup_seconds, "search_s": fit_seconds, "ideal_s": ideal,
            "overhead": 1.0 - ideal / fit_seconds, "epochs": epochs_run,
            "trials": sum(r.state in (COMPLETE, PRUNED) for r in result.records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--epoch-seconds", type=float, default=2.0)
    parser.add_argument("--scheduler", default="none", choices=["none", "moasha", "asha"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = [one_run(args.trials, args.concurrency, args.epoch_seconds, args.scheduler, args.epochs)
            for _ in range(args.repeats)]
    print(f"{args.trials} trials x {args.epochs} epochs x {args.epoch_seconds} s, concurrency {args.concurrency}, "
          f"scheduler {args.scheduler}, {args.repeats} runs")
    print(f"{'run':>4} {'trials':>6} {'epochs':>6} {'ideal s':>8} {'search s':>9} {'overhead':>9} {'setup s':>8}")
    for i, row in enumerate(rows):
        print(f"{i:>4} {row['trials']:>6} {row['epochs']:>6} {row['ideal_s']:>8.1f} {row['search_s']:>9.1f} "
              f"{row['overhead']:>8.1%} {row['setup_s']:>8.1f}")
    median = statistics.median(r["overhead"] for r in rows)
    print(f"median overhead (search wall time not spent in trials): {median:.1%}  [target < 10%]")


if __name__ == "__main__":
    main()
