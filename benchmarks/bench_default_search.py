"""The default search (``nas launch search_spaces/snnmlp.py``) of an earlier commit against this tree.

Issue 14's end-to-end target: the default search, same seed and defaults, in at most half the time
of the code before the work, at an equal or better normalised hypervolume. The peer is that earlier
commit, checked out into a temporary git worktree and run with this checkout's virtual environment
(its own ``nas`` first on ``PYTHONPATH``). Runs alternate (before, now, before, now, ...) so a
shared machine's drift hits both alike.

Reported per run: the search's own clock (``finished in``: Ray Tune's run, Ray already up), the wall
time of the whole command, and the normalised hypervolume of its complete trials, recomputed here
for every run on one reference (this tree's, from the space: val_acc 0 and its energy bound), since
older commits normalised differently.

    .venv/bin/python benchmarks/bench_default_search.py --before 694dadf --rounds 3
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPACE = "search_spaces/snnmlp.py"
OBJECTIVES = {"val_acc": "max", "energy_uj": "min"}


def run_once(checkout: Path, root: Path) -> tuple[float, float]:
    """(search seconds as the launch reports them, wall seconds of the command) of one default search."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    started = time.perf_counter()
    done = subprocess.run([str(REPO / ".venv" / "bin" / "nas"), "launch", SPACE, "--root", str(root)], cwd=checkout,
                          env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: nas launch failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    found = re.search(r"finished in (\d+) s", done.stdout)
    if found is None:
        raise SystemExit(f"{checkout}: no 'finished in' line in the launch's output")
    return float(found.group(1)), wall


def run_hypervolume(root: Path, reference: dict[str, float]) -> tuple[float, int]:
    """The normalised hypervolume of the run's complete trials on ``reference``, and their count."""
    import numpy as np
    import optuna

    from nas.results.pareto import hypervolume, normalised_hypervolume

    url = f"sqlite:///{root / 'optuna.db'}"
    (name,) = optuna.study.get_all_study_names(url)
    study = optuna.load_study(study_name=name, storage=url)
    points = np.array([t.values for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE])
    volume = hypervolume(points, list(OBJECTIVES.values()), [reference[m] for m in OBJECTIVES]) if len(points) else 0.0
    return float(normalised_hypervolume(volume, OBJECTIVES, reference)), len(points)


def this_reference() -> dict[str, float]:
    """This tree's hypervolume reference of the default space (val_acc 0, the energy of every neuron
    firing at every step)."""
    from nas.search.reference import space_reference
    from nas.space import load_space

    return {m: float(v) for m, v in space_reference(load_space(REPO / SPACE)).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the commit to compare against (e.g. 694dadf)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side, alternating")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reference = this_reference()
    scratch = Path(tempfile.mkdtemp(prefix="nas-bench-default-"))
    before = scratch / "before"
    added = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before],
                           capture_output=True, text=True)
    if added.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise SystemExit(f"--before {args.before}: cannot check it out ({added.stderr.strip().splitlines()[-1]})")
    rows: dict[str, list[tuple[float, float, float, int]]] = {"before": [], "now": []}
    try:
        for round_number in range(args.rounds):
            for who, checkout in (("before", before), ("now", REPO)):
                root = scratch / f"{who}-{round_number}"
                search_s, wall_s = run_once(checkout, root)
                hv, complete = run_hypervolume(root, reference)
                rows[who].append((search_s, wall_s, hv, complete))
                print(f"{who:>6} round {round_number}: search {search_s:.0f} s, wall {wall_s:.1f} s, "
                      f"normalised hypervolume {hv:.4f} ({complete} complete trials)", flush=True)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{SPACE} with its defaults, {args.rounds} runs each, alternating; reference {reference}; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    medians = {who: [statistics.median(r[i] for r in runs) for i in range(3)] for who, runs in rows.items()}
    for who, (search_s, wall_s, hv) in medians.items():
        print(f"{who:>6}: median search {search_s:.0f} s, wall {wall_s:.1f} s, normalised hypervolume {hv:.4f}")
    speedup = medians["before"][0] / medians["now"][0]
    print(f"search {speedup:.2f}x faster (target 2x) at a hypervolume {medians['now'][2] - medians['before'][2]:+.4f} "
          "against before (target >= 0)")


if __name__ == "__main__":
    sys.exit(main())
