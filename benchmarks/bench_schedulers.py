"""MOASHA against no scheduler on the real ``snnmlp`` space: hypervolume over wall-clock time.

Both searches get the same time budget, sampler and seed, and really train (Ray, FFCV, MLflow). Both
studies fix the same hypervolume reference from the space before their first trial, so their
normalised hypervolumes compare directly. One seed of real training is a spot check; the claims
about schedulers come from ``nas bench run`` over the learning-curve tables (many seeds; see
``benchmarks/README.md``).

    .venv/bin/python benchmarks/bench_schedulers.py --budget 300
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "snnmlp.py"


def run(scheduler: str, budget: float, trials: int, seed: int, root: Path) -> tuple[list, float]:
    """One search; returns its records and the wall-clock start of the search."""
    from nas import launch
    from nas.search.options import SearchOptions

    started = time.time()
    result = launch(SearchOptions(space=str(SPACE), name=f"bench-{scheduler}", root=str(root), trials=trials,
                                  scheduler=scheduler, seed=seed, time_budget=budget), live=False)
    return result.records, started


def curve(records: list, started: float, reference: dict[str, float], checkpoints: list[float]) -> list[float]:
    """Normalised hypervolume of the complete trials finished by each checkpoint (seconds after start)."""
    from nas.results.pareto import hypervolume, normalised_hypervolume

    objectives = {"val_acc": "max", "energy_uj": "min"}
    done = [(r.completed.timestamp() - started, r.values["val_acc"], r.values["energy_uj"])
            for r in records if r.state == "COMPLETE" and r.values and r.completed]
    out = []
    for t in checkpoints:
        points = np.array([[a, e] for s, a, e in done if s <= t]).reshape(-1, 2)
        box = [reference["val_acc"], reference["energy_uj"]]
        raw = hypervolume(points, ["max", "min"], box) if len(points) else 0.0
        out.append(normalised_hypervolume(raw, objectives, reference))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per search")
    parser.add_argument("--trials", type=int, default=64, help="upper bound; the budget ends the search")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from nas.search.reference import space_reference
    from nas.space import load_space

    root = Path(tempfile.mkdtemp(prefix="nas-bench-sched-"))
    runs = {name: run(name, args.budget, args.trials, args.seed, root) for name in ("moasha", "none")}
    reference = space_reference(load_space(SPACE))  # what each study fixed before its first trial
    checkpoints = [args.budget * f for f in (0.25, 0.5, 0.75, 1.0)]
    print(f"snnmlp space, budget {args.budget:.0f} s per search, seed {args.seed}, normalised hypervolume "
          f"(reference val_acc=0, energy_uj={reference['energy_uj']:.4g})")
    header = "".join(f"{f'HV@{t:.0f}s':>11}" for t in checkpoints)
    print(f"{'scheduler':>10}{'complete':>9}{'pruned':>7}{'best acc':>9}{header}")
    for name, (records, started) in runs.items():
        complete = [r for r in records if r.state == "COMPLETE"]
        pruned = sum(r.state == "PRUNED" for r in records)
        best = max((r.values["val_acc"] for r in complete), default=float("nan"))
        values = "".join(f"{v:>11.4f}" for v in curve(records, started, reference, checkpoints))
        print(f"{name:>10}{len(complete):>9}{pruned:>7}{best:>9.4f}{values}")


if __name__ == "__main__":
    main()
