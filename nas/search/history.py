"""A sampler that models a bounded part of a large study: the most recent trials and the current front.

Optuna's TPE reads every finished trial of the study on each ask and builds its densities from all of
them, so an ask costs time in proportion to the study (measured by ``benchmarks/bench_scale.py``: about
0.1 s at 300 trials and growing). :class:`BoundedHistorySampler` hands the wrapped sampler a view of the
study that holds only

- the ``recent`` most recently numbered finished trials (COMPLETE, PRUNED, FAIL),
- the COMPLETE trials on the Pareto front of the whole study so far, one per point (kept up to date
  incrementally from ``after_trial``, seeded once from the study), so the "good" density never forgets
  the best architectures, and
- the ``recent`` most recently numbered unfinished trials (RUNNING ones are what TPE's constant liar
  spreads workers around; with a thousand workers, modelling every one of them made an ask cost
  ~100 ms, so only the newest proposals are kept apart).

The joint search space (TPE's parameter groups, which it accumulates) is inferred from the same view.
Picking the view costs O(recent + running + front) per call, but Optuna's own ``ask`` still filters
the whole trial list a few times, so an ask keeps a small cost that grows with the study (measured in
``benchmarks/bench_scale.py --asks``). Nothing is removed from the study: only what the sampler models
is bounded.
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState


class _Front:
    """Trial numbers of the non-dominated points seen so far (minimisation form), updated one point at a time."""

    def __init__(self, signs: Sequence[float]) -> None:
        self._signs = list(signs)
        self.points: dict[int, tuple[float, ...]] = {}

    def add(self, number: int, values: Sequence[float]) -> None:
        """Add a COMPLETE trial's values; drops the members it dominates, ignores it if it is dominated or
        repeats a member's values (one trial per point: a table replay repeats points by the hundred)."""
        q = tuple(s * float(v) for s, v in zip(self._signs, values, strict=True))
        for p in self.points.values():
            if all(a <= b for a, b in zip(p, q, strict=True)):
                return
        self.points = {n: p for n, p in self.points.items() if not all(a <= b for a, b in zip(q, p, strict=True))}
        self.points[number] = q


class _BoundedStudy:
    """The study as the wrapped sampler sees it: trial lists bounded (see the module docstring)."""

    def __init__(self, study: optuna.Study, keep: Any) -> None:
        self._study = study
        self._keep = keep

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        # Bounded first, filtered by state after: Optuna's state filter is a pass over the whole study.
        kept = self._keep(self._study._get_trials(deepcopy=False, states=None, use_cache=use_cache))
        if states is not None:
            kept = [t for t in kept if t.state in states]
        return copy.deepcopy(kept) if deepcopy else kept

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)


class BoundedHistorySampler(BaseSampler):
    """Wraps a sampler so that it models at most ``recent`` finished trials plus the current front.

    Args:
        sampler: the sampler that proposes (TPE in nas's default).
        recent: how many of the most recent finished trials it sees (>= 1), and of the unfinished ones.
    """

    def __init__(self, sampler: BaseSampler, *, recent: int) -> None:
        if int(recent) != recent or recent < 1:
            raise ValueError(f"recent must be a positive integer, got {recent!r}")
        self.sampler = sampler
        self.recent = int(recent)
        self._front: _Front | None = None
        self._unfinished: set[int] = set()  # numbers of the trials asked and not yet told

    def _front_of(self, study: optuna.Study) -> _Front:
        if self._front is None:
            signs = [-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0 for d in study.directions]
            self._front = _Front(signs)
            for t in study.get_trials(deepcopy=False):
                if t.state == TrialState.COMPLETE and t.values is not None:
                    self._front.add(t.number, t.values)
                elif not t.state.is_finished():
                    self._unfinished.add(t.number)
        return self._front

    def _view(self, study: optuna.Study) -> Any:
        front = self._front_of(study)

        def keep(trials: list[FrozenTrial]) -> list[FrozenTrial]:
            # Trials come sorted by number: walk back to the recent-th finished one, then pick the older
            # front members and unfinished trials by binary search, so a call costs O(recent + K + front).
            start, finished = len(trials), 0
            while start > 0 and finished < self.recent:
                start -= 1
                finished += trials[start].state.is_finished()
            if start == 0:
                return self._newest_unfinished(trials)
            cutoff = trials[start].number
            older = []
            for number in sorted(n for n in front.points.keys() | self._unfinished if n < cutoff):
                at = bisect.bisect_left(trials, number, hi=start, key=_number)
                if at < start and trials[at].number == number:
                    older.append(trials[at])
            return self._newest_unfinished(older + trials[start:])

        return _BoundedStudy(study, keep)

    def _newest_unfinished(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        """``trials`` without their unfinished ones beyond the ``recent`` newest (order kept)."""
        unfinished = [i for i, t in enumerate(trials) if not t.state.is_finished()]
        if len(unfinished) <= self.recent:
            return trials
        dropped = set(unfinished[: len(unfinished) - self.recent])
        return [t for i, t in enumerate(trials) if i not in dropped]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        """The wrapped sampler's joint search space, from the bounded view (TPE accumulates its groups)."""
        return self.sampler.infer_relative_search_space(self._view(study), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        """The wrapped sampler's joint sample, modelled on the bounded view."""
        return self.sampler.sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        """The wrapped sampler's sample of one parameter, modelled on the bounded view."""
        return self.sampler.sample_independent(self._view(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Forwarded; the trial is unfinished until ``after_trial``."""
        self.sampler.before_trial(study, trial)
        self._unfinished.add(trial.number)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        """Forwarded; a COMPLETE trial also updates the front kept in view."""
        self.sampler.after_trial(study, trial, state, values)
        self._unfinished.discard(trial.number)
        if state == TrialState.COMPLETE and values is not None and self._front is not None:
            self._front.add(trial.number, values)

    def reseed_rng(self) -> None:
        """Forwarded."""
        self.sampler.reseed_rng()


def _number(trial: FrozenTrial) -> int:
    return trial.number
