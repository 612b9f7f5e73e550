"""Training-free proxy scores of a table's entries, for the simulator's rung 0.

The file is written by ``benchmarks/bench_proxy.py`` (gzip JSON): ``{"format": 1, "tables": {space:
{"space_hash": ..., "entries": [{"index", "params", "scores": {"sahd", "energy_uj_init", "seconds",
"cpu_seconds", ...}}]}}}``. ``sahd`` is ``null`` where the kernel was singular or the model had no
spiking layer (the entry is then listed with ``scores: null``).
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

from nas.bench.table import LearningCurveTable
from nas.errors import NasError
from nas.search.proxy_rung import ProxyOutcome

PROXY_SCORES_FORMAT = 1


def load_proxy_scores(path: str | Path, table: LearningCurveTable, *, clock: str = "epoch_cpu_seconds"
                      ) -> dict[int, ProxyOutcome]:
    """Each table entry's proxy outcome; its cost in CPU seconds when the simulator's clock is CPU time."""
    path = Path(path)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, EOFError, json.JSONDecodeError) as error:
        raise NasError(f"{path}: not a proxy-scores file ({error})") from error
    if not isinstance(data, dict) or data.get("format") != PROXY_SCORES_FORMAT:
        raise NasError(f"{path}: not a proxy-scores file of format {PROXY_SCORES_FORMAT}")
    section = data.get("tables", {}).get(table.space)
    if section is None:
        raise NasError(f"{path}: no proxy scores for table {table.space!r} (has: {', '.join(data.get('tables', {}))})")
    if section.get("space_hash") != table.space_hash:
        raise NasError(f"{path}: proxy scores of table {table.space!r} were computed for space text "
                       f"{section.get('space_hash')}, the table is {table.space_hash}; rerun benchmarks/bench_proxy.py")
    cost = "cpu_seconds" if clock == "epoch_cpu_seconds" else "seconds"
    return {int(e["index"]): _outcome(e.get("scores"), cost) for e in section.get("entries", [])}


def _outcome(scores: dict[str, Any] | None, cost: str) -> ProxyOutcome:
    if not scores:
        return ProxyOutcome(-math.inf, math.inf, 0.0)
    sahd = scores.get("sahd")
    energy = scores.get("energy_uj_init")
    return ProxyOutcome(-math.inf if sahd is None else float(sahd), math.inf if energy is None else float(energy),
                        float(scores.get(cost) or 0.0))
