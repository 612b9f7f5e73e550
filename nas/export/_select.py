"""Choosing the trials of a search to export: ``--pareto``, ``--knee`` or ``--trial N ...``."""

from __future__ import annotations

from collections.abc import Sequence

from nas.errors import NasError
from nas.results.records import COMPLETE, TrialRecord


def select_trials(
    records: Sequence[TrialRecord],
    objectives: dict[str, str],
    *,
    search: str,
    pareto: bool = False,
    knee: bool = False,
    trials: Sequence[int] = (),
) -> list[TrialRecord]:
    """The records that ``--pareto``, ``--knee`` or ``--trial N ...`` name, in trial order.

    A ``--trial`` must exist and be COMPLETE: pruned and failed trials are low-fidelity or have no
    weights, so they are refused with their state (and reason, when one was recorded).
    """
    import numpy as np

    from nas.results.pareto import front_of, knee_index

    if trials:
        by_number = {r.number: r for r in records}
        chosen = []
        for number in dict.fromkeys(trials):
            record = by_number.get(number)
            if record is None:
                known = f"0..{max(by_number)}" if by_number else "none"
                raise NasError(f"search {search!r} has no trial {number} (trials: {known})")
            if record.state != COMPLETE:
                reason = f": {record.fail_reason}" if record.fail_reason else ""
                raise NasError(f"trial {number} of search {search!r} is {record.state}{reason}; "
                               "only COMPLETE trials can be exported")
            chosen.append(record)
        return sorted(chosen, key=lambda r: r.number)
    front = front_of(records, objectives)
    if not front:
        raise NasError(f"search {search!r} has no complete feasible trial yet, so no Pareto front to export")
    if pareto:
        return front
    if not knee:
        raise NasError("choose the trials with exactly one of --pareto, --knee or --trial N")
    points = np.asarray([[float(r.values[m]) for m in objectives] for r in front], dtype=float)
    return [front[knee_index(points, list(objectives.values()))]]
