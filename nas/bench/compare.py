"""Compare search settings on a table: many seeds each, medians and quartiles in simulated time.

For every setting (sampler x scheduler x eta) and seed, :func:`nas.bench.simulator.simulate` replays
one search; the runs of a setting are summarised by the normalised hypervolume at fractions of the
budget (median and quartiles over seeds) and by the simulated time to reach a target (the given
fraction of the table's true-front hypervolume; the final hypervolume of plain random search
without early stopping when that setting is part of the comparison; and the best median final
hypervolume of the settings without a proxy rung, "best@B"). Runs are spread over worker
processes (with ``PYTHONHASHSEED`` fixed, without which TPE samples differently in every interpreter);
every run is then deterministic for its seed, so the figures do not depend on how many.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from nas.bench._pool import worker_pool
from nas.bench.simulator import SimulationRun, SimulationSettings, cost_column, simulate, true_front_hypervolume
from nas.bench.table import LearningCurveTable
from nas.bench.table_space import TableSpace
from nas.search.choices import DEFAULT_PROXY_RULE
from nas.search.proxy_rung import ProxyOutcome

CHECKPOINTS = (0.1, 0.25, 0.5, 1.0)
SIMULATION_HASH_SEED = "0"
BASELINE = ("random", "none")


@dataclass
class SettingSummary:
    """The runs of one setting over all seeds."""

    settings: SimulationSettings
    runs: list[SimulationRun]
    checkpoints: dict[float, tuple[float, float, float]] = field(default_factory=dict)  # q1, median, q3
    time_to_fraction: tuple[float, float, float] = (math.inf, math.inf, math.inf)
    reached_fraction: int = 0
    time_to_baseline: tuple[float, float, float] | None = None
    time_to_best: tuple[float, float, float] = (math.inf, math.inf, math.inf)
    fallback_share: float = 0.0

    @property
    def label(self) -> str:
        """``sampler/scheduler(eta)``."""
        return self.settings.label


@dataclass
class Comparison:
    """All settings compared on one table."""

    table: str
    budget: float
    workers: int
    seeds: int
    fraction: float
    true_hypervolume: float
    baseline_final: float | None
    summaries: list[SettingSummary]
    best_final: float = 0.0  # the best median final hypervolume of the settings without a proxy rung

    def best(self) -> SettingSummary:
        """The setting with the highest median final hypervolume (then the fastest to the target)."""
        return max(self.summaries, key=lambda s: (s.checkpoints[1.0][1], -s.time_to_fraction[1]))


def settings_grid(samplers: Sequence[str], schedulers: Sequence[str], etas: Sequence[float], *, workers: int,
                  budget: float, proxies: Sequence[str] = ("none",), proxy_rules: Sequence[str] = (DEFAULT_PROXY_RULE,)
                  ) -> list[SimulationSettings]:
    """Every sampler x scheduler x eta x proxy (x rule), random/none without a proxy first when present.

    ``none`` has no eta of its own: it gets the first one, unless a proxy rung uses every eta.
    """
    grid = []
    for sampler in samplers:
        for scheduler in schedulers:
            for proxy in proxies:
                for rule in (proxy_rules if proxy != "none" else proxy_rules[:1]):
                    for eta in ([etas[0]] if scheduler == "none" and proxy == "none" else etas):
                        grid.append(SimulationSettings(sampler=sampler, scheduler=scheduler, reduction_factor=eta,
                                                       workers=workers, budget=budget, proxy=proxy,
                                                       proxy_rule=rule))
    return sorted(grid, key=lambda s: (s.sampler, s.scheduler, s.proxy) != (*BASELINE, "none"))


def default_budget(table: LearningCurveTable, workers: int, share: float | None = None, cost: str = "auto") -> float:
    """Simulated seconds in which ``workers`` could train ``share`` of the table's epochs.

    The share defaults to the table's own ``meta["budget_share"]``, else a quarter: enough for a search
    to find most of a sampled table's front, not enough to train it all. (A table that is a whole space,
    NAS-Bench-201, asks for a few hundred evaluations instead.)
    """
    if share is None:
        share = float(table.meta.get("budget_share", 0.25))
    cost = cost_column(table, cost)
    total = sum(float(row.get(cost) or 0.0) for entry in table.entries for row in entry.rows)
    return share * total / workers


_WORKER: dict[str, Any] = {}


def _load(table: LearningCurveTable, truth: float, proxy_scores: dict[int, ProxyOutcome] | None) -> None:
    """Once per process: the table's space (its nearest-entry cache then serves every run)."""
    _WORKER["space"] = TableSpace(table)
    _WORKER["truth"] = truth
    _WORKER["proxy_scores"] = proxy_scores


def _run(settings: SimulationSettings) -> SimulationRun:
    return simulate(_WORKER["space"], settings, true_hypervolume=_WORKER["truth"],
                    proxy_scores=_WORKER["proxy_scores"])


def compare(
    table: LearningCurveTable,
    settings: Sequence[SimulationSettings],
    *,
    seeds: int,
    fraction: float = 0.98,
    processes: int = 1,
    progress: Callable[[str], None] | None = None,
    proxy_scores: dict[int, ProxyOutcome] | None = None,
) -> Comparison:
    """Simulate every setting for seeds ``0..seeds-1`` and summarise (see the module docstring).

    ``proxy_scores`` serve the settings with a proxy rung (see ``nas.bench.proxy_scores``).
    """
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    say = progress or (lambda line: None)
    space = TableSpace(table)
    truth = true_front_hypervolume(space)
    jobs = [replace(s, seed=seed) for s in settings for seed in range(seeds)]
    # Always in worker processes with a fixed hash seed: a run is then the same for its seed in any
    # interpreter and with any number of processes (see worker_pool).
    with worker_pool(processes, _load, (table, truth, proxy_scores), hash_seed=SIMULATION_HASH_SEED) as pool:
        runs = list(pool.map(_run, jobs, chunksize=max(1, seeds // 4)))
    by_setting = [runs[i * seeds:(i + 1) * seeds] for i in range(len(settings))]
    baseline = next((r for s, r in zip(settings, by_setting, strict=True)
                     if (s.sampler, s.scheduler, s.proxy) == (*BASELINE, "none")), None)
    baseline_final = float(np.median([r.final_hypervolume for r in baseline])) if baseline else None
    summaries = [_summarise(s, r, fraction * truth, baseline_final) for s, r in zip(settings, by_setting, strict=True)]
    plain = [s for s in summaries if s.settings.proxy == "none"] or summaries
    best_final = max(s.checkpoints[1.0][1] for s in plain)
    for summary in summaries:
        summary.time_to_best = _quartiles([r.time_to_reach(best_final) for r in summary.runs])
    for summary in summaries:
        say(f"{table.space}: {summary.label} median final {summary.checkpoints[1.0][1]:.4f}")
    first = settings[0]
    return Comparison(table=table.space, budget=first.budget, workers=first.workers, seeds=seeds, fraction=fraction,
                      true_hypervolume=truth, baseline_final=baseline_final, summaries=summaries,
                      best_final=best_final)


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    # Where some runs never reached a target (inf), interpolating is undefined (inf - inf): take the
    # order statistics themselves ("inverted_cdf", the lower of two middle values).
    method = "linear" if all(math.isfinite(v) for v in values) else "inverted_cdf"
    q1, median, q3 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75], method=method)
    return float(q1), float(median), float(q3)


def _summarise(settings: SimulationSettings, runs: list[SimulationRun], target: float,
               baseline_final: float | None) -> SettingSummary:
    budget = settings.budget
    checkpoints = {c: _quartiles([r.hypervolume_at(c * budget) for r in runs]) for c in CHECKPOINTS}
    times = [r.time_to_reach(target) for r in runs]
    proposals = [sum(r.proposals.get(k, 0) for k in ("sampler", "fallback")) for r in runs]
    fallbacks = [r.proposals.get("fallback", 0) for r in runs]
    return SettingSummary(
        settings=settings,
        runs=runs,
        checkpoints=checkpoints,
        time_to_fraction=_quartiles(times),
        reached_fraction=sum(math.isfinite(t) for t in times),
        time_to_baseline=_quartiles([r.time_to_reach(baseline_final) for r in runs])
        if baseline_final is not None else None,
        fallback_share=sum(fallbacks) / max(1, sum(proposals)),
    )


def render(comparison: Comparison, *, markdown: bool = False) -> str:
    """The comparison as a table (text, or Markdown): hypervolume at budget fractions, times to the targets."""
    budget = comparison.budget

    def cell(q: tuple[float, float, float]) -> str:
        return f"{q[1]:.4f} [{q[0]:.4f}-{q[2]:.4f}]"

    def seconds(q: tuple[float, float, float] | None) -> str:
        if q is None:
            return "-"
        if not math.isfinite(q[1]):
            return "not reached"
        return f"{q[1]:.0f} s ({q[1] / budget:.2f} B)"

    title = (
        f"table {comparison.table}: {comparison.workers} workers, budget B = {budget:.0f} simulated s, "
        f"{comparison.seeds} seeds; normalised hypervolume, median [quartiles]; true front "
        f"{comparison.true_hypervolume:.4f}, target {comparison.fraction:g} x true = "
        f"{comparison.fraction * comparison.true_hypervolume:.4f}"
        + (f"; random/none final median {comparison.baseline_final:.4f}" if comparison.baseline_final else "")
        + f"; best@B (best median final without a proxy) {comparison.best_final:.4f}"
    )
    columns = ["setting", *(f"HV @ {c:g} B" for c in CHECKPOINTS), "reached target", "time to target",
               "time to random@B", "time to best@B", "fallback"]
    rows = [[s.label, *(cell(s.checkpoints[c]) for c in CHECKPOINTS), f"{s.reached_fraction}/{len(s.runs)}",
             seconds(s.time_to_fraction), seconds(s.time_to_baseline), seconds(s.time_to_best),
             f"{s.fallback_share:.1%}"]
            for s in comparison.summaries]
    if markdown:
        lines = [f"**{title}**", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(str(x)) for x in col) for col in zip(columns, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [title, fmt.format(*columns), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    return "\n".join(lines + [fmt.format(*row) for row in rows])


def to_dict(comparison: Comparison) -> dict[str, Any]:
    """JSON-able figures of a comparison (medians, quartiles, per-run finals)."""
    return {
        "table": comparison.table, "budget": comparison.budget, "workers": comparison.workers,
        "seeds": comparison.seeds, "fraction": comparison.fraction, "true_hypervolume": comparison.true_hypervolume,
        "baseline_final": comparison.baseline_final, "best_final": comparison.best_final,
        "settings": [{
            "label": s.label, "sampler": s.settings.sampler, "scheduler": s.settings.scheduler,
            "eta": s.settings.reduction_factor, "proxy": s.settings.proxy, "proxy_rule": s.settings.proxy_rule,
            "checkpoints": {str(c): list(q) for c, q in s.checkpoints.items()},
            "time_to_fraction": list(s.time_to_fraction), "reached_fraction": s.reached_fraction,
            "time_to_baseline": list(s.time_to_baseline) if s.time_to_baseline else None,
            "time_to_best": list(s.time_to_best),
            "fallback_share": s.fallback_share,
            "finals": [r.final_hypervolume for r in s.runs],
        } for s in comparison.summaries],
    }
