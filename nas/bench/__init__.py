"""nas.bench: learning-curve tables of search spaces and the simulator that replays searches on them.

A table (``nas bench build``) holds every epoch of a seeded random sample of a space's architectures,
trained by the real trainer. The simulator (``nas bench run``) drives the real Optuna samplers, the
searcher's bookkeeping and the real schedulers over a table in simulated time, so search settings can
be compared over many seeds in minutes instead of days.
"""

from __future__ import annotations

from nas.bench.build import build_table, sample_architectures
from nas.bench.table import LearningCurveTable, TableEntry, list_tables, load_table, resolve_table

__all__ = [
    "LearningCurveTable",
    "TableEntry",
    "build_table",
    "list_tables",
    "load_table",
    "resolve_table",
    "sample_architectures",
]
