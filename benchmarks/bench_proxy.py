"""Training-free proxies (``nas.proxy``) against learning-curve tables: do they rank architectures?

For each table given: every fully trained entry is rebuilt from the table's own space source, its
weights seeded by ``--seed`` (``nas.proxy.score_candidate``), and scored on ``--batches`` fixed MNIST
training batches of ``--batch-size`` images (``nas.data.make_loaders``, unaugmented, shuffled by
``--seed``: the same images for every entry). Printed per table, Kendall's tau-b (scipy) over the
entries against the final ``val_acc``:

- ``sahd``: the SAHD score at initialisation (higher should be better);
- baselines: ``val_acc`` after epoch 1 (the cheapest real fidelity) and the parameter count;
- diagnostics: SAHD over the entries whose kernel is not singular only, and SAHD against the parameter
  count (does it only measure size?);

and against the final ``energy_uj``: the proxy's energy at initialisation, its dense MACs, and epoch-1
``energy_uj`` as the baseline. Also the proxy's cost per candidate (median and max, wall and CPU seconds
on ``--threads`` threads). ``--stability N`` scores the first N entries again on other images (loader
seed + 1) and gives tau between the two scorings: how much the ranking depends on the batches drawn.

The per-entry scores go to ``--out`` (gzip JSON, one section per table; sections of other tables already
in the file are kept), for the search simulator to use as a rung-0 fidelity. Regenerate it with:

    PYTHONPATH=. .venv/bin/python benchmarks/bench_proxy.py nas/bench/tables/snnmlp.json.gz \\
        nas/bench/tables/spiking_resformer.json.gz nas/bench/tables/mixer_snn.json.gz \\
        --batch-size 32 --batches 2 --seed 0 --threads 1 --out benchmarks/results/proxy_scores.json.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from nas.bench.table import LearningCurveTable, load_table
from nas.errors import NasError
from nas.proxy import ProxyScores, score_candidate, take_batches
from nas.space import SearchSpace, load_space_source

RESULTS_FORMAT = 1


def mnist_batches(batch_size: int, count: int, seed: int) -> tuple[list[torch.Tensor], Any]:
    """``count`` unaugmented MNIST training batches (seeded order) and the dataset's ``DataInfo``."""
    from nas.data import make_loaders

    train, _, info = make_loaders("mnist", batch_size=batch_size, augment=False, seed=seed, num_workers=1)
    return take_batches(train, count, batch_size), info


def kendall(x: list[float], y: list[float]) -> tuple[float, float, int]:
    """Kendall's tau-b and its p-value over the pairs where both values are known (-inf ranks lowest)."""
    from scipy.stats import kendalltau

    pairs = [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None and not math.isnan(a)]
    if len(pairs) < 3:
        return float("nan"), float("nan"), len(pairs)
    # scipy ranks -inf fine, but replace it by a finite value below everything to keep the arithmetic clean
    low = min((a for a, _ in pairs if math.isfinite(a)), default=0.0) - 1.0
    xs = [a if math.isfinite(a) else low for a, _ in pairs]
    result = kendalltau(xs, [b for _, b in pairs])
    return float(result.statistic), float(result.pvalue), len(pairs)


def score_entries(space: SearchSpace, entries: list[Any], batches: list[torch.Tensor], info: Any,
                  seed: int) -> list[dict[str, Any]]:
    """Proxy scores of each entry (``sahd`` None with a reason where SAHD is not defined)."""
    out = []
    for entry in entries:
        # the table's shape: "params" are the architecture's params, the numbers go under "scores"
        row: dict[str, Any] = {"index": entry.index, "params": entry.params, "scores": None}
        try:
            scores: ProxyScores = score_candidate(space, entry.params, info, batches, seed=seed)
        except NasError as error:
            row["not_applicable"] = str(error)
        else:
            row["scores"] = scores.metrics()
            row["sahd_finite"] = math.isfinite(scores.sahd)
            row["_sahd"] = scores.sahd  # -inf kept for ranking, dropped before writing
        out.append(row)
    return out


def _score(row: dict[str, Any], name: str) -> float | None:
    return None if row["scores"] is None else row["scores"][name]


def table_section(path: str, table: LearningCurveTable, args: argparse.Namespace, batches: list[torch.Tensor],
                  info: Any) -> dict[str, Any]:
    """Score one table and compute its correlations."""
    space = load_space_source(table.space_source, f"<table {table.space}>", check_samples=0)
    trained = table.trained[: args.limit] if args.limit else table.trained
    started = time.perf_counter()
    rows = score_entries(space, trained, batches, info, args.seed)
    elapsed = time.perf_counter() - started
    final_acc = [e.rows[-1]["val_acc"] for e in trained]
    final_energy = [e.rows[-1]["energy_uj"] for e in trained]
    sahd = [r.get("_sahd") for r in rows]
    scored = [r for r in rows if r.get("_sahd") is not None]
    taus = {
        "sahd vs final val_acc": kendall(sahd, final_acc),
        "sahd (finite only) vs final val_acc": kendall(
            [x if x is not None and math.isfinite(x) else None for x in sahd], final_acc),
        "sahd vs params": kendall(sahd, [float(e.rows[-1]["params"]) for e in trained]),
        "epoch-1 val_acc vs final val_acc": kendall([e.rows[0]["val_acc"] for e in trained], final_acc),
        "params vs final val_acc": kendall([float(e.rows[-1]["params"]) for e in trained], final_acc),
        "energy_uj_init vs final energy_uj": kendall([_score(r, "energy_uj_init") for r in rows], final_energy),
        "dense_macs vs final energy_uj": kendall([_score(r, "dense_macs") for r in rows], final_energy),
        "epoch-1 energy_uj vs final energy_uj": kendall([e.rows[0]["energy_uj"] for e in trained], final_energy),
    }
    stability = None
    if args.stability:
        other, _ = mnist_batches(args.batch_size, args.batches, args.seed + 1)
        again = score_entries(space, trained[: args.stability], other, info, args.seed)
        stability = kendall([r.get("_sahd") for r in rows[: args.stability]], [r.get("_sahd") for r in again])
    for row in rows:
        row.pop("_sahd", None)
    seconds = [r["scores"]["seconds"] for r in scored]
    cpu = [r["scores"]["cpu_seconds"] for r in scored]
    return {
        "table": path,
        "space": table.space,
        "space_hash": table.space_hash,
        "epochs": table.epochs,
        "entries_in_table": len(table.entries),
        "trained": len(table.trained),
        "compared": len(trained),
        "scored": len(scored),
        "not_applicable": len(rows) - len(scored),
        "singular": sum(1 for r in scored if not r["sahd_finite"]),
        "kendall_tau": {name: {"tau": t, "p": p, "n": n} for name, (t, p, n) in taus.items()},
        "stability": None if stability is None else {"tau": stability[0], "p": stability[1], "n": stability[2]},
        "seconds_median": statistics.median(seconds) if seconds else None,
        "seconds_max": max(seconds) if seconds else None,
        "cpu_seconds_median": statistics.median(cpu) if cpu else None,
        "cpu_seconds_max": max(cpu) if cpu else None,
        "total_seconds": elapsed,
        "entries": rows,
    }


def render(section: dict[str, Any]) -> str:
    """A few lines per table."""
    lines = [
        f"{section['space']}: {section['table']} ({section['entries_in_table']} entries, {section['trained']} "
        f"trained to {section['epochs']} epochs, {section['compared']} compared; SAHD defined for {section['scored']}, "
        f"{section['singular']} singular kernels (-inf), {section['not_applicable']} without spiking layers)",
    ]
    for name, value in section["kendall_tau"].items():
        lines.append(f"  Kendall tau  {name:<38} {value['tau']:+.3f}  (p = {value['p']:.2g}, n = {value['n']})")
    if section["stability"] is not None:
        s = section["stability"]
        lines.append(f"  Kendall tau  {'sahd, other batches vs these':<38} {s['tau']:+.3f}  (n = {s['n']})")
    if section["seconds_median"] is not None:
        lines.append(
            f"  proxy cost per candidate: median {section['seconds_median']:.3f} s wall / "
            f"{section['cpu_seconds_median']:.3f} s CPU, max {section['seconds_max']:.3f} s / "
            f"{section['cpu_seconds_max']:.3f} s; whole table {section['total_seconds']:.0f} s"
        )
    return "\n".join(lines)


def write_results(path: Path, sections: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    """Merge the sections into ``path`` (other tables' sections are kept) with mtime-free gzip."""
    data: dict[str, Any] = {"format": RESULTS_FORMAT, "tables": {}}
    if path.exists():
        with gzip.open(path, "rb") as f:
            data = json.loads(f.read().decode())
    for section in sections:
        data["tables"][section["space"]] = {**section, "settings": settings}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
        f.write(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+", help="learning-curve table files (or shipped table names)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stability", type=int, default=0, metavar="N",
                        help="score the first N entries again on other batches")
    parser.add_argument("--limit", type=int, default=0, metavar="N", help="only the first N trained entries")
    parser.add_argument("--out", type=Path, default=None, help="write per-entry scores here (gzip JSON)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches, info = mnist_batches(args.batch_size, args.batches, args.seed)
    settings = {"batch_size": args.batch_size, "batches": args.batches, "seed": args.seed, "threads": args.threads,
                "dataset": "mnist", "images": "train loader, unaugmented, shuffled by seed",
                "command": "PYTHONPATH=. .venv/bin/python benchmarks/" + " ".join([Path(sys.argv[0]).name]
                                                                                  + sys.argv[1:])}
    sections = []
    for path in args.tables:
        section = table_section(path, load_table(path), args, batches, info)
        print(render(section), flush=True)
        sections.append(section)
    if args.out is not None:
        write_results(args.out, sections, settings)
        print(f"per-entry scores: {args.out}")


if __name__ == "__main__":
    main()
