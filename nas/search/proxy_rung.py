"""Rung 0 of a search: a training-free proxy decides which proposals are trained at all.

The searcher asks the sampler for a batch of ``round(eta)`` untried architectures, scores each
untrained candidate (:class:`ProxyOutcome`: a score, higher is better, and an energy estimate at
initialisation), and trains only those the rule keeps; the others are told to the study as PRUNED,
marked ``proxy_dropped`` (never trained, not counted toward the trial budget). Rules:

- ``top``: the best score of the batch (ties: the lower energy, then the first asked), so 1/eta of
  the proposals are trained, as in a successive-halving rung;
- ``front``: every proposal of the batch that is non-dominated on (score, energy).

Scoring runs in the controller, before a trial is handed to a worker: SAHD takes a fraction of a
second per candidate on a CPU for the shipped spaces (``benchmarks/bench_proxy.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.search.choices import DEFAULT_PROXY_RULE, PROXY_RULES

# What a search scores each candidate on: the settings of benchmarks/bench_proxy.py (LightSNN uses 2 x 64).
PROXY_BATCHES = 2
PROXY_BATCH_SIZE = 32


@dataclass(frozen=True)
class ProxyOutcome:
    """What rung 0 knows of an untrained candidate.

    ``score`` is higher-is-better (``-inf`` where the proxy is undefined, e.g. a singular SAHD kernel
    or a model without spiking layers); ``energy_uj`` is the estimate at initialisation (``inf`` when
    unknown); ``seconds`` is what computing it cost.
    """

    score: float
    energy_uj: float
    seconds: float = 0.0

    def attrs(self) -> dict[str, float | None]:
        """The outcome as JSON-safe trial attributes (non-finite values become ``None``)."""
        return {"proxy_score": self.score if math.isfinite(self.score) else None,
                "proxy_energy_uj": self.energy_uj if math.isfinite(self.energy_uj) else None}


Scorer = Callable[[Mapping[str, Any], int], ProxyOutcome]


class ProxyRung:
    """Rung 0: scores a batch of proposals with ``score(params, trial_number)`` and keeps some of them."""

    def __init__(self, score: Scorer, *, name: str = "sahd", reduction_factor: float = 3,
                 rule: str = DEFAULT_PROXY_RULE) -> None:
        if rule not in PROXY_RULES:
            raise ValueError(f"proxy rule must be one of {', '.join(PROXY_RULES)}, got {rule!r}")
        if not reduction_factor > 1:
            raise ValueError(f"reduction_factor must be greater than 1, got {reduction_factor!r}")
        self.score = score
        self.name = name
        self.rule = rule
        self.batch = max(2, round(reduction_factor))

    def keep(self, outcomes: Sequence[ProxyOutcome]) -> list[int]:
        """Indices of ``outcomes`` to train, in the order they were asked."""
        if not outcomes:
            return []
        if self.rule == "top":
            best = min(range(len(outcomes)), key=lambda i: (-outcomes[i].score, outcomes[i].energy_uj, i))
            return [best]
        from nas.results.pareto import pareto_mask

        points = np.array([[o.score, o.energy_uj] for o in outcomes], dtype=float)
        # The Pareto routines compare finite numbers: an undefined score ranks below every defined one.
        finite = points[np.isfinite(points)]
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
        points[:, 0] = np.where(np.isfinite(points[:, 0]), points[:, 0], low - 1.0)
        points[:, 1] = np.where(np.isfinite(points[:, 1]), points[:, 1], high + 1.0)
        return [int(i) for i in np.flatnonzero(pareto_mask(points, ["max", "min"]))]


def sahd_scorer(space: Any, data_info: Any, batches: Sequence[Any], *, seed: int = 0) -> Scorer:
    """A scorer that builds a candidate as its trial will (weights seeded by ``seed + number``) and scores SAHD."""

    def score(params: Mapping[str, Any], number: int) -> ProxyOutcome:
        import time

        from nas.errors import NasError
        from nas.proxy import score_candidate

        started = time.perf_counter()
        try:
            scores = score_candidate(space, params, data_info, batches, seed=seed + number)
        except NasError:  # no spiking layer: SAHD is undefined for this candidate
            return ProxyOutcome(-math.inf, math.inf, time.perf_counter() - started)
        sahd = scores.sahd if not math.isnan(scores.sahd) else -math.inf
        return ProxyOutcome(sahd, scores.energy_uj_init, scores.seconds)

    return score
