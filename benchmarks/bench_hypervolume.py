"""Hypervolume: nas's exact hypervolume and its incremental history against Optuna's ``compute_hypervolume``.

Random fronts (points on the unit simplex, so every point is non-dominated: the worst case for an
incremental front) of n points in m objectives, reference 1.1 in every objective. Timed, medians of
``--repeats`` runs, interleaved:

- one hypervolume of the whole set: nas ``hypervolume`` vs Optuna ``compute_hypervolume``;
- the history after each of the n points (what a search shows): nas ``hypervolume_history``
  (one exclusive contribution per point) vs recomputing every prefix with Optuna.

Both give the same values (checked every run).

    .venv/bin/python benchmarks/bench_hypervolume.py --points 200 --objectives 2 3 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from optuna._hypervolume import compute_hypervolume

from nas.results.pareto import hypervolume, hypervolume_history


def _front(n: int, m: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.random((n, m))
    return x / x.sum(axis=1, keepdims=True)


def _timed(fn, *args) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - started, value


def _prefix_volumes(pts: np.ndarray, ref: np.ndarray) -> list[float]:
    return [compute_hypervolume(pts[: i + 1], ref) for i in range(len(pts))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--objectives", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n = args.points
    print(f"{n} mutually non-dominated points, reference 1.1; median seconds of {args.repeats} runs")
    print(f"{'m':>2} | {'HV nas':>9} {'HV optuna':>10} {'ratio':>6} | {'history nas':>12} {'history optuna':>15} "
          f"{'ratio':>7}")
    for m in args.objectives:
        ref = np.full(m, 1.1)
        one_nas, one_opt, hist_nas, hist_opt = [], [], [], []
        for repeat in range(args.repeats):
            pts = _front(n, m, repeat)
            t, ours = _timed(hypervolume, pts, ["min"] * m, ref)
            one_nas.append(t)
            t, theirs = _timed(compute_hypervolume, pts, ref)
            one_opt.append(t)
            assert abs(ours - theirs) <= 1e-9 * max(1.0, abs(theirs))
            t, history = _timed(hypervolume_history, pts, ["min"] * m, ref)
            hist_nas.append(t)
            t, prefixes = _timed(_prefix_volumes, pts, ref)
            hist_opt.append(t)
            assert np.allclose(history, prefixes, rtol=1e-9)
        a, b = statistics.median(one_nas), statistics.median(one_opt)
        c, d = statistics.median(hist_nas), statistics.median(hist_opt)
        print(f"{m:>2} | {a:>9.4f} {b:>10.4f} {a / b:>6.2f} | {c:>12.4f} {d:>15.4f} {c / d:>7.3f}")


if __name__ == "__main__":
    main()
