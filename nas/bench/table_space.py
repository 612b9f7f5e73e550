"""A search space restricted to the architectures of a learning-curve table.

The simulator lets the real samplers propose in the space's full, define-by-run search space (so TPE,
NSGA-II and GP model the same parameters as in a real search), and restricts what a proposal *is* to
the table: each proposal stands for the table entry nearest to it. Distance is Gower's: per
parameter, numeric values (ints, floats, and numeric categorical choices such as widths) add
``|a - b| / range`` of the parameter's distribution, other values add 0 when equal and 1 when not,
and a parameter present on one side only (another branch of a conditional space) adds 1. Ties are
broken by a fixed, seeded order of the entries, so no part of the table is favoured. An exact match
is always its own entry.

The searcher uses :meth:`TableSpace.identity` as the architecture's identity (a repeated entry is a
duplicate, told its known outcome) and :meth:`TableSpace.untried` as its fallback (a random entry not
tried yet), so the space is exhausted exactly when every entry has been tried.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping
from typing import Any

from nas.bench.table import LearningCurveTable
from nas.errors import NasError


class TableSpace:
    """The table's entries, their params and distributions, and nearest-entry lookup."""

    def __init__(self, table: LearningCurveTable, *, seed: int = 0) -> None:
        from nas.space import load_space_source

        if not table.space_source:
            raise NasError(f"table {table.space!r} does not carry the space it was built from (space_source)")
        self.table = table
        self.space = load_space_source(table.space_source, f"<table {table.space}>", check_samples=0)
        self.entries = list(table.entries)
        self._params = [dict(e.params) for e in self.entries]
        self._exact = {_key(p): i for i, p in enumerate(self._params)}
        self._ranges, self._numeric = self._distributions()
        order = list(range(len(self.entries)))
        random.Random(seed).shuffle(order)
        self._tie_rank = {index: rank for rank, index in enumerate(order)}
        self._nearest: dict[Hashable, int] = {}

    def _distributions(self) -> tuple[dict[str, float], set[str]]:
        """Per parameter, the range of its values and whether they are numeric (from the space itself)."""
        import optuna
        from optuna.distributions import CategoricalDistribution

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(directions=["maximize"] * len(self.table.objectives),
                                    sampler=optuna.samplers.RandomSampler(seed=0))
        ranges: dict[str, float] = {}
        numeric: set[str] = set()
        seen: set[str] = set()
        quiet = 0
        for params in self._params:
            if quiet >= 200:  # every branch of the space has shown up long ago (a large table, NAS-Bench-201)
                break
            quiet += 1
            study.enqueue_trial(params)
            trial = study.ask()
            self.space.suggest(trial)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            for name, dist in trial.distributions.items():
                if name in seen:
                    continue
                seen.add(name)
                quiet = 0
                if isinstance(dist, CategoricalDistribution):
                    values = [c for c in dist.choices if _is_number(c)]
                    if len(values) == len(dist.choices):
                        numeric.add(name)
                        ranges[name] = float(max(values) - min(values)) or 1.0
                else:
                    numeric.add(name)
                    ranges[name] = float(dist.high - dist.low) or 1.0
        return ranges, numeric

    def distance(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
        """Gower distance between two architectures' params (see the module docstring)."""
        total = 0.0
        for name in a.keys() | b.keys():
            if name not in a or name not in b:
                total += 1.0
            elif name in self._numeric and _is_number(a[name]) and _is_number(b[name]):
                total += abs(float(a[name]) - float(b[name])) / self._ranges[name]
            else:
                total += 0.0 if a[name] == b[name] else 1.0
        return total

    def nearest(self, params: Mapping[str, Any]) -> int:
        """Index of the table entry a proposal stands for."""
        key = _key(params)
        found = self._exact.get(key)
        if found is not None:
            return found
        if key not in self._nearest:
            self._nearest[key] = min(range(len(self._params)),
                                     key=lambda i: (self.distance(params, self._params[i]), self._tie_rank[i]))
        return self._nearest[key]

    def identity(self, params: Mapping[str, Any]) -> Hashable:
        """The searcher's architecture identity: the nearest entry's index."""
        return self.nearest(params)

    def untried(self, tried: set[Hashable], rng: random.Random) -> dict[str, Any] | None:
        """Params of a random entry not tried yet (``None`` when every entry has been tried)."""
        left = [i for i in range(len(self.entries)) if i not in tried]
        return dict(self._params[rng.choice(left)]) if left else None


def _key(params: Mapping[str, Any]) -> Hashable:
    return tuple(sorted(params.items()))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
