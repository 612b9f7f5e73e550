"""nas.bench: learning-curve tables of search spaces and the simulator that replays searches on them.

A table (``nas bench build``) holds every epoch of a seeded random sample of a space's architectures,
trained by the real trainer. The simulator (``nas bench run``) drives the real Optuna samplers, the
searcher's bookkeeping and the real schedulers over a table in simulated time, so search settings can
be compared over many seeds in minutes instead of days.
"""

from __future__ import annotations

from nas.bench.build import build_table, sample_architectures
from nas.bench.compare import Comparison, compare, default_budget, render, settings_grid, to_dict
from nas.bench.simulator import SimulationRun, SimulationSettings, simulate
from nas.bench.table import LearningCurveTable, TableEntry, list_tables, load_table, resolve_table
from nas.bench.table_space import TableSpace

__all__ = [
    "Comparison",
    "LearningCurveTable",
    "SimulationRun",
    "SimulationSettings",
    "TableSpace",
    "TableEntry",
    "build_table",
    "compare",
    "default_budget",
    "list_tables",
    "load_table",
    "resolve_table",
    "render",
    "sample_architectures",
    "settings_grid",
    "simulate",
    "to_dict",
]
