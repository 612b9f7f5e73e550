"""Optuna behind Ray Tune with honest multi-objective bookkeeping.

Ray's ``OptunaSearch`` with a list metric tells Optuna an early-stopped trial's last values as
COMPLETE, so low-fidelity points land on the Pareto front. This searcher instead tells Optuna:

- COMPLETE, with the final objectives, only for a trial whose last result reached ``max_epochs``;
- PRUNED for a trial that ended earlier (a scheduler stopped it); its last objective values are kept
  in ``user_attrs["last_values"]`` and never in ``trial.values``;
- FAIL for a trial that raised (``fail_reason`` from :meth:`record_failure_reason`, else ``"error"``),
  diverged (NaN/inf objectives or ``diverged=True`` in the result: ``"diverged"``, followed by the
  result's own ``fail_reason`` when it gives one), or was cut off
  by a stopped controller (``"interrupted"``, see :func:`recover_interrupted`).

A ``sample`` that raises fails that trial only (FAIL ``"sample: <error> (<file>:<line>)"``, counted as
tried); when ``max_sample_failures`` samples in a row fail, the search ends (``sample_error`` says why).

Every per-epoch result is appended to ``user_attrs["history"]``; constraints computed from the final
metrics are stored with ``trial.set_constraint`` (feasible when <= 0). The layout follows
``nas.results.records``.

Duplicates teach the sampler and cost nothing: a proposal whose architecture was already trained is
told the known outcome (as Optuna's FAQ suggests: the same values for a COMPLETE one, PRUNED with the
same last values for a pruned one), marked ``user_attrs["duplicate_of"]``, never trained and never
counted; the sampler is asked again. After a few repeats a fallback proposes an untried architecture
(an exhaustive sampler where the space is finite); when none is left the search ends, saying so.

With a proxy rung (``nas.search.proxy_rung``), proposals are asked in batches and scored untrained;
those the rung drops are told PRUNED, marked ``user_attrs["proxy_dropped"]``, never trained and never
counted; every scored trial keeps its ``proxy_score`` and ``proxy_energy_uj``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import warnings
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS, DONE, TIME_TOTAL_S
from ray.tune.search import Searcher

from nas.errors import last_line
from nas.search import store
from nas.search.choices import SAMPLERS
from nas.search.proxy_rung import ProxyRung

logger = logging.getLogger(__name__)

# Ray bookkeeping keys that are not metrics of the candidate; time_total_s is kept (useful for plots).
_RAY_KEYS = (
    set(AUTO_RESULT_KEYS) | set(DEBUG_METRICS) | {DONE, "should_checkpoint", "__duplicate__", "experiment_tag"}
) - {TIME_TOTAL_S}
_INTERRUPTED = "interrupted"
_DUPLICATE = "duplicate"
DUPLICATE_OF = "duplicate_of"  # user attr of a proposal told the outcome of the trial it repeats
PROXY_DROPPED = "proxy_dropped"  # user attr of a proposal the proxy rung dropped (never trained)
PROPOSAL = "proposal"  # user attr "fallback" on a trial proposed by the fallback, not the sampler


@dataclass
class _Known:
    """What the study knows of one architecture: the trial that ran it and its outcome so far."""

    number: int
    state: TrialState
    values: list[float] | None = None
    constraints: dict[str, float] | None = None
    last_values: dict[str, float] | None = None


def _params_key(params: Mapping[str, Any]) -> Hashable:
    """The identity of an architecture: its params (values are Optuna's hashable choice types)."""
    return tuple(sorted(params.items()))


def _trial_by_number(study: optuna.Study, number: int) -> optuna.Trial:
    """A live ``optuna.Trial`` handle for a trial known only by number (after a restore)."""
    return store.live_trial(study, number)


def _scalar_metrics(result: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-able scalar metrics of a Ray result, without Ray's own bookkeeping keys.

    NaN and infinities are stored as ``None``: strict JSON has no spelling for them.
    """
    out: dict[str, Any] = {}
    for key, value in result.items():
        if key in _RAY_KEYS or key.startswith("config/"):
            continue
        if isinstance(value, bool) or isinstance(value, str):
            out[key] = value
        elif isinstance(value, int | float):
            value = float(value) if isinstance(value, float) else int(value)
            out[key] = value if not isinstance(value, float) or math.isfinite(value) else None
        elif hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
            item = value.item()
            if isinstance(item, float) and not math.isfinite(item):
                item = None
            out[key] = item
    return out


def _direction_name(direction: optuna.study.StudyDirection) -> str:
    return "max" if direction == optuna.study.StudyDirection.MAXIMIZE else "min"


class OptunaMultiObjectiveSearcher(Searcher):
    """Ray Tune searcher that asks an Optuna study for params and tells it honest outcomes.

    Args:
        study: the Optuna study (RDB storage), created with one direction per objective.
        sample: the search space's define-by-run function; it is called on the asked trial.
        objectives: {name: "max" | "min"}, the study's objectives.
        max_epochs: full fidelity; a final result with ``time_attr >= max_epochs`` is COMPLETE.
        time_attr: the progress key in results.
        constraints: maps the final metrics to {name: value}, feasible when every value <= 0.
        max_trials: total number of trials of the search, resumes included; ``None`` for no limit.
        stopped_by_scheduler: when given, a trial that ends before ``max_epochs`` is PRUNED only if this
            returns True for its Ray trial id; otherwise it was cut off (Ctrl-C, time budget) and is
            recorded as interrupted and enqueued again, like a trial of a killed controller.
        max_duplicate_retries: how many repeated proposals the sampler may make in a row before the
            fallback proposes instead.
        identity: maps params to the identity of an architecture (default: the params themselves);
            the simulator maps them to the table entry they stand for.
        untried: optional fallback that returns the params of an architecture not yet tried (given
            a set of tried identities and a seeded ``random.Random``), or ``None`` when none is left.
            Without it the fallback is Optuna's exhaustive ``BruteForceSampler`` where every parameter
            of the space is discrete, else a random sampler.
        fallback_draws: how many fallback proposals may repeat before the space counts as exhausted.
        max_sample_failures: how many trials in a row may fail in ``sample`` before the search ends.
        proxy: an optional rung 0 that scores proposals untrained and drops some (see the module
            docstring); ``proxy_seconds`` adds up what its scoring cost.

    ``stop_requested`` (settable) tells whether the run is being stopped (Ctrl-C, time budget): a
    trial that errors from then on was cut off and is recorded as interrupted, not failed.

    Duplicates: a proposal whose architecture is that of a COMPLETE or PRUNED trial is told that
    trial's outcome and marked ``duplicate_of`` (the sampler learns from it; nothing is trained); one
    that repeats a RUNNING trial (outcome not known yet) or a trial that failed (it would fail again)
    is told FAIL ``"duplicate"``. An interrupted trial's architecture is free to run again. Enqueued
    trials (retries of interrupted ones) are never rejected. Duplicates and interrupted trials do not
    count toward ``max_trials``, so COMPLETE + PRUNED + other FAIL trials add up to it.
    """

    def __init__(
        self,
        *,
        study: optuna.Study,
        sample: Callable[[optuna.Trial], Any],
        objectives: Mapping[str, str],
        max_epochs: int,
        time_attr: str = "epoch",
        constraints: Callable[[dict[str, float]], Mapping[str, float]] | None = None,
        max_trials: int | None = None,
        max_duplicate_retries: int = 3,
        stopped_by_scheduler: Callable[[str], bool] | None = None,
        identity: Callable[[Mapping[str, Any]], Hashable] = _params_key,
        untried: Callable[[set[Hashable], random.Random], dict[str, Any] | None] | None = None,
        fallback_draws: int = 32,
        max_sample_failures: int = 5,
        proxy: ProxyRung | None = None,
    ) -> None:
        objectives = dict(objectives)
        if not objectives:
            raise ValueError("objectives is empty")
        for name, d in objectives.items():
            if d not in ("max", "min"):
                raise ValueError(f"objective {name!r} has direction {d!r}, expected 'max' or 'min'")
        if int(max_epochs) != max_epochs or max_epochs < 1:
            raise ValueError(f"max_epochs must be a positive integer, got {max_epochs!r}")
        if max_trials is not None and max_trials < 1:
            raise ValueError(f"max_trials must be >= 1 or None, got {max_trials!r}")
        if max_duplicate_retries < 0:
            raise ValueError(f"max_duplicate_retries must be >= 0, got {max_duplicate_retries!r}")
        if fallback_draws < 1:
            raise ValueError(f"fallback_draws must be >= 1, got {fallback_draws!r}")
        if max_sample_failures < 1:
            raise ValueError(f"max_sample_failures must be >= 1, got {max_sample_failures!r}")
        names = list(study.metric_names or [])
        if not names:
            if len(study.directions) != len(objectives):
                raise ValueError(f"study has {len(study.directions)} directions but {len(objectives)} objectives")
            with warnings.catch_warnings():
                # set_metric_names is still marked experimental; records.py relies on it.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(objectives))
            names = list(objectives)
        if sorted(names) != sorted(objectives):
            raise ValueError(f"study metric names {names} do not match objectives {list(objectives)}")
        for name, direction in zip(names, study.directions, strict=True):
            if _direction_name(direction) != objectives[name]:
                raise ValueError(
                    f"study direction of {name!r} is {direction.name}, objectives say {objectives[name]!r}"
                )
        super().__init__(metric=list(objectives), mode=list(objectives.values()))
        self._study = study
        self._sample = sample
        self._objectives = objectives
        self._names = names  # the order of trial.values
        self._max_epochs = int(max_epochs)
        self._time_attr = time_attr
        self._constraints = constraints
        self._max_trials = max_trials
        self._max_duplicate_retries = max_duplicate_retries
        self._stopped_by_scheduler = stopped_by_scheduler
        self._identity = identity
        self._untried = untried
        self._fallback_draws = fallback_draws
        self._max_sample_failures = max_sample_failures
        self._sample_failures = 0  # in a row
        self.sample_error: str | None = None  # set when the search ends because sample keeps failing
        self.stop_requested: Callable[[], bool] = _never
        self.space_exhausted = False  # set when no untried architecture is left
        self.proposals = {"sampler": 0, "fallback": 0, "enqueued": 0, "duplicates_told": 0}
        self._proxy = proxy
        self._kept: list[optuna.Trial] = []  # scored and kept by the proxy rung, not yet handed to Ray
        self.proxy_seconds = 0.0
        if proxy is not None:
            self.proposals["proxy_dropped"] = 0
        self._numbers: dict[str, int] = {}  # Ray trial_id -> Optuna trial number
        self._trials: dict[str, optuna.Trial] = {}  # live handles of trials asked here
        self._histories: dict[str, list[dict[str, Any]]] = {}
        self._reasons: dict[str, str] = {}
        self._pending_errors: set[str] = set()
        self._done: set[str] = set()  # trials already told, so late or repeated events are ignored
        # Read from the study once, then kept up to date here: re-reading every trial on each suggest
        # held up Ray's event loop (and every waiting worker) for tens of milliseconds per trial.
        self._used: int | None = None
        self._known: dict[Hashable, _Known] = {}  # architectures tried: COMPLETE, PRUNED, FAIL and RUNNING trials

    # Ray Tune hooks -------------------------------------------------------------------------------

    def set_search_properties(self, metric: Any, mode: Any, config: dict, **spec: Any) -> bool:
        """Accept Tune's properties only when they agree with the objectives given at construction."""
        if metric is not None and metric != self._metric:
            return False
        if mode is not None and mode != self._mode:
            return False
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """Ask Optuna for an untried architecture; return ``{"params": ..., "optuna_number": ...}`` for Ray."""
        self.flush()
        if self._used is None:
            self._load_counts()
        if self._max_trials is not None and self._used >= self._max_trials:
            return Searcher.FINISHED
        if self._kept:
            trial = self._kept.pop(0)
        else:
            if self.space_exhausted or self.sample_error is not None:
                return Searcher.FINISHED
            trial = self._next_proposal()
            if trial is None:
                return Searcher.FINISHED
            if self._proxy is not None and not _enqueued(trial):
                trial = self._through_proxy(trial)
        store.write_held_params(self._study)  # in the database before the trial runs anywhere
        self._numbers[trial_id] = trial.number
        self._trials[trial_id] = trial
        self._histories[trial_id] = []
        self._used += 1
        config: dict[str, Any] = {"params": dict(trial.params), "optuna_number": trial.number}
        if self._proxy is not None:
            config["proxy"] = {k: trial.user_attrs.get(k) for k in ("proxy_score", "proxy_energy_uj")}
        return config

    def _next_proposal(self) -> optuna.Trial | None:
        """An untried proposal, reserved as running; ``None`` when the search must end (reason set)."""
        while True:
            try:
                trial = self._propose()
                break
            except _SampleFailed as failed:
                # That trial failed (and counts as tried); the search goes on unless sample keeps failing.
                self._used += 1
                self._sample_failures += 1
                if self._sample_failures >= self._max_sample_failures:
                    self.sample_error = (f"the space's sample failed on {self._sample_failures} trials in a row; "
                                         f"last: {failed}")
                    return None
                if self._max_trials is not None and self._used >= self._max_trials:
                    return None
        self._sample_failures = 0
        if trial is None:
            self.space_exhausted = True
            logger.info("no untried architecture is left in the space after %d distinct ones", len(self._known))
            return None
        self._known[self._identity(trial.params)] = _Known(trial.number, TrialState.RUNNING)
        return trial

    def _through_proxy(self, first: optuna.Trial) -> optuna.Trial:
        """Rung 0: score a batch of proposals starting with ``first``; drop what the rule drops.

        Returns the first kept trial; the other kept ones wait in ``_kept`` for the next suggestions.
        At most as many are kept as the trial budget has room for.
        """
        assert self._proxy is not None
        batch = [first]
        while len(batch) < self._proxy.batch:
            trial = self._next_proposal()
            if trial is None:
                break
            if _enqueued(trial):  # a retry was scored before: it runs as it is
                self._kept.append(trial)
                continue
            batch.append(trial)
        outcomes = [self._proxy.score(dict(t.params), t.number) for t in batch]
        self.proxy_seconds += sum(o.seconds for o in outcomes)
        kept = self._proxy.keep(outcomes)
        if self._max_trials is not None:
            room = max(1, self._max_trials - self._used - len(self._kept))
            kept = sorted(sorted(kept, key=lambda i: (-outcomes[i].score, outcomes[i].energy_uj))[:room])
        for i, (trial, outcome) in enumerate(zip(batch, outcomes, strict=True)):
            for key, value in outcome.attrs().items():
                trial.set_user_attr(key, value)
            if i not in kept:
                trial.set_user_attr(PROXY_DROPPED, True)
                self._study.tell(trial, state=TrialState.PRUNED)
                self._known[self._identity(trial.params)] = _Known(trial.number, TrialState.PRUNED)
                self.proposals["proxy_dropped"] += 1
        chosen = [batch[i] for i in kept]
        self._kept.extend(chosen[1:])
        return chosen[0]

    def _propose(self) -> optuna.Trial | None:
        """The sampler's proposal; after repeats, the fallback's; ``None`` when the space is exhausted."""
        sampler = self._study.sampler
        distributions: dict[str, Any] = {}
        try:
            for attempt in range(self._max_duplicate_retries + 1 + self._fallback_draws):
                fallback = attempt > self._max_duplicate_retries
                if fallback and not self._fallback(distributions):
                    return None
                trial = self._ask_and_sample()
                distributions = trial.distributions
                if _enqueued(trial) and not fallback:
                    # enqueued: the retry of an interrupted trial (the frozen copy Optuna read on ask)
                    self.proposals["enqueued"] += 1
                    return trial
                known = self._known.get(self._identity(trial.params))
                if known is None:
                    if fallback:
                        trial.set_user_attr(PROPOSAL, "fallback")
                    self.proposals["fallback" if fallback else "sampler"] += 1
                    return trial
                # Told through the search's own sampler: a fallback sampler's after_trial hook is not
                # for this study (BruteForceSampler calls study.stop(), which ask/tell refuses).
                fallback_sampler, self._study.sampler = self._study.sampler, sampler
                self._tell_duplicate(trial, known)
                self._study.sampler = fallback_sampler
        finally:
            self._study.sampler = sampler
        return None

    def _fallback(self, distributions: Mapping[str, Any]) -> bool:
        """Prepare the next proposal from outside the model; False when nothing untried is left.

        ``distributions`` are those of the last proposal: a space whose parameters are all discrete is
        finite, so an exhaustive sampler can always find an untried architecture while one is left.
        """
        seed = sum(self.proposals.values())  # grows with every proposal: reproducible and never repeated
        if self._untried is not None:
            params = self._untried(set(self._known), random.Random(seed))
            if params is None:
                return False
            self._study.enqueue_trial(params)
            return True
        discrete = bool(distributions) and all(_is_discrete(d) for d in distributions.values())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._study.sampler = (optuna.samplers.BruteForceSampler(seed=seed) if discrete
                                   else optuna.samplers.RandomSampler(seed=seed))
        return True

    def _tell_duplicate(self, trial: optuna.Trial, known: _Known) -> None:
        """Tell a repeated proposal what the study already knows of its architecture (never trained)."""
        trial.set_user_attr(DUPLICATE_OF, known.number)
        self.proposals["duplicates_told"] += 1
        if known.state == TrialState.COMPLETE and known.values is not None:
            for key, value in sorted((known.constraints or {}).items()):
                trial.set_constraint(key, value)
            self._study.tell(trial, known.values)
        elif known.state == TrialState.PRUNED:
            if known.last_values is not None:
                trial.set_user_attr("last_values", known.last_values)
            self._study.tell(trial, state=TrialState.PRUNED)
        else:  # still running (nothing known yet) or failed: the sampler ignores FAIL trials
            self._tell_fail(trial, _DUPLICATE)

    def _ask_and_sample(self) -> optuna.Trial:
        trial = self._study.ask()
        try:
            self._sample(trial)
        except Exception as exc:  # a user function: that trial fails, not the search
            where = _user_frame(exc)
            error = f"{type(exc).__name__}: {last_line(str(exc))}"
            self._tell_fail(trial, f"sample: {error}" + (f" ({where})" if where else ""))
            raise _SampleFailed(f"{where}: {error}" if where else error) from exc
        return trial

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Append the result's scalar metrics to the trial's ``history`` user attr."""
        self.flush()
        if trial_id not in self._numbers or trial_id in self._done:
            return
        self._append_history(trial_id, result)

    def record_failure_reason(self, trial_id: str, reason: str) -> None:
        """Give the one-line reason of a trial that raised (Ray passes the searcher only ``error=True``).

        Called before or after ``on_trial_complete(error=True)``: in the second case the FAIL that was
        held back for it is told now. The controller's Ray callback calls it from Ray's
        ``on_trial_error`` (``nas.search.events``), which Ray runs right after the searcher's ``on_trial_complete``.
        """
        if trial_id not in self._numbers or trial_id in self._done:
            return
        self._reasons[trial_id] = last_line(reason)
        if trial_id in self._pending_errors:
            self._pending_errors.discard(trial_id)
            self._finish_fail(trial_id, self._reasons.pop(trial_id))

    def flush(self) -> None:
        """Tell FAIL ``"error"`` for trials that raised and got no reason (called on every later event)."""
        for trial_id in sorted(self._pending_errors):
            self._finish_fail(trial_id, "error")
        self._pending_errors.clear()

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """Tell Optuna the trial's outcome: COMPLETE, PRUNED or FAIL (see the module docstring)."""
        if trial_id not in self._numbers or trial_id in self._done or trial_id in self._pending_errors:
            return
        if error and self.stop_requested():
            # Its worker was stopped with the run (a Ctrl-C reaches every process): re-run it on resume.
            self._finish_interrupted(trial_id)
            return
        if error:
            if trial_id in self._reasons:
                self._finish_fail(trial_id, self._reasons.pop(trial_id))
            else:
                # Ray calls the error callbacks right after this hook: give them one chance to name it.
                self.flush()
                self._pending_errors.add(trial_id)
            return
        self.flush()
        if not result:
            # Removed while pending or paused: it never ran to an end; re-run it on a later resume.
            self._finish_interrupted(trial_id)
            return
        self._append_history(trial_id, result)
        missing = [n for n in self._names if n not in result]
        if missing:
            self._finish_fail(trial_id, f"missing objective(s) {missing}")
            return
        values = [float(result[n]) for n in self._names]
        if result.get("diverged") or not all(math.isfinite(v) for v in values):
            detail = result.get("fail_reason")
            self._finish_fail(trial_id, f"diverged: {last_line(detail)}" if detail else "diverged")
            return
        trial = self._trial(trial_id)
        t = result.get(self._time_attr)
        if t is not None and float(t) >= self._max_epochs:
            if self._constraints is not None:
                try:
                    cons = dict(self._constraints(_scalar_metrics(result)))
                    for key, value in cons.items():
                        if not math.isfinite(float(value)):
                            raise ValueError(f"constraint {key!r} is {value}")
                except Exception as exc:  # a user function: record and keep the search going
                    self._finish_fail(trial_id, f"constraints: {type(exc).__name__}: {last_line(str(exc))}")
                    return
                for key in sorted(cons):
                    trial.set_constraint(key, float(cons[key]))
            self._study.tell(trial, values)
            self._learned(trial, TrialState.COMPLETE, values=values,
                          constraints={k: float(v) for k, v in cons.items()} if self._constraints else None)
        elif self._stopped_by_scheduler is not None and not self._stopped_by_scheduler(trial_id):
            # Cut off by Ctrl-C or the time budget, not judged by the scheduler: re-run it on resume.
            self._finish_interrupted(trial_id)
            return
        else:
            last_values = dict(zip(self._names, values, strict=True))
            trial.set_user_attr("last_values", last_values)
            self._study.tell(trial, state=TrialState.PRUNED)
            self._learned(trial, TrialState.PRUNED, last_values=last_values)
        self._forget(trial_id)

    def interrupt_open_trials(self) -> list[int]:
        """Record every trial asked here and not yet told as interrupted (the run stopped under it).

        Ray Tune ends a stopped run (Ctrl-C, time budget) without telling the searcher about the
        trials it was running or had pending; each is told FAIL ``"interrupted"`` and enqueued again,
        as :func:`recover_interrupted` does for a killed controller. Returns their trial numbers.
        """
        self.flush()
        open_ids = [trial_id for trial_id in self._numbers if trial_id not in self._done]
        numbers = [self._numbers[trial_id] for trial_id in open_ids]
        for trial_id in open_ids:
            self._finish_interrupted(trial_id)
        for trial in self._kept:  # kept by the proxy rung, never handed to Ray: they run on resume
            numbers.append(trial.number)
            self._tell_fail(trial, _INTERRUPTED)
            self._unknown(trial)
            self._study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
        self._kept = []
        return numbers

    def save(self, checkpoint_path: str) -> None:
        """Save the Ray trial id -> Optuna number map of open trials (the rest lives in the study's storage)."""
        numbers = {k: v for k, v in self._numbers.items() if k not in self._done}
        state = {"study_name": self._study.study_name, "numbers": numbers}
        with open(checkpoint_path, "w", encoding="utf-8") as f:
            json.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        """Load the map written by :meth:`save`; histories are read back from the study."""
        with open(checkpoint_path, encoding="utf-8") as f:
            state = json.load(f)
        if state.get("study_name") != self._study.study_name:
            raise ValueError(f"searcher state is for study {state.get('study_name')!r}, not {self._study.study_name!r}")
        self._numbers = {str(k): int(v) for k, v in state["numbers"].items()}
        self._trials = {}
        self._histories = {}
        self._reasons = {}
        self._pending_errors = set()
        self._done = set()
        self._used = None
        self._known = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the study: Ray Tune writes the searcher into ``tuner.pkl`` on the storage path.

        The study's storage holds the database URL, password included, and live trial handles hold the
        study; neither may land in trial storage that every node (or an object store) can read. Such a
        copy is only good for Ray's ``Tuner.restore``, which nas never uses: it resumes from the study.
        """
        state = self.__dict__.copy()
        state["_study"] = None
        state["_trials"] = {}
        state["_kept"] = []
        state["_proxy"] = None  # holds the space and image batches; a restored copy would not score
        return state

    # Counting ------------------------------------------------------------------------------------

    @property
    def exhausted(self) -> bool:
        """True when no further trial will be suggested (``max_trials`` reached by counted trials)."""
        return self._max_trials is not None and self._used is not None and self._used >= self._max_trials

    def trials_used(self) -> int:
        """Trials that count toward ``max_trials``: asked ones, minus rejected duplicates and interrupted ones.

        Read from the study, so it is the truth even when another searcher worked on it before.
        """
        return sum(counts_toward_budget(t) for t in self._study.get_trials(deepcopy=False))

    def _load_counts(self) -> None:
        trials = self._study.get_trials(deepcopy=False)
        self._used = sum(counts_toward_budget(t) for t in trials)
        self._known = {}
        for t in trials:
            if t.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.FAIL):
                continue
            if DUPLICATE_OF in t.user_attrs or t.user_attrs.get("fail_reason") in (_INTERRUPTED, _DUPLICATE):
                continue
            constraints = {k.removeprefix("constraints:"): float(v) for k, v in t.system_attrs.items()
                           if k.startswith("constraints:")}
            self._known.setdefault(self._identity(t.params), _Known(
                t.number, t.state, values=list(t.values) if t.values is not None else None,
                constraints=constraints or None, last_values=t.user_attrs.get("last_values")))

    def _learned(self, trial: optuna.Trial, state: TrialState, **outcome: Any) -> None:
        key = self._identity(trial.params)
        if key in self._known and self._known[key].number == trial.number:
            self._known[key] = _Known(trial.number, state, **outcome)

    # Internals -----------------------------------------------------------------------------------

    def _trial(self, trial_id: str) -> optuna.Trial:
        if trial_id not in self._trials:
            self._trials[trial_id] = _trial_by_number(self._study, self._numbers[trial_id])
        return self._trials[trial_id]

    def _append_history(self, trial_id: str, result: Mapping[str, Any]) -> None:
        if trial_id not in self._histories:
            frozen = store.frozen_of(self._trial(trial_id))
            self._histories[trial_id] = list(frozen.user_attrs.get("history", []))
        history = self._histories[trial_id]
        row = _scalar_metrics(result)
        # Ray hands the final result to on_trial_complete as well: do not store an epoch twice.
        if history and self._time_attr in row and history[-1].get(self._time_attr) == row[self._time_attr]:
            return
        history.append(row)
        self._trial(trial_id).set_user_attr("history", history)

    def _tell_fail(self, trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr("fail_reason", reason)
        self._study.tell(trial, state=TrialState.FAIL)

    def _finish_fail(self, trial_id: str, reason: str) -> None:
        trial = self._trial(trial_id)
        self._tell_fail(trial, reason)
        # An architecture that raised or diverged (after Ray's own retries) fails again: never re-run it.
        self._learned(trial, TrialState.FAIL)
        self._forget(trial_id)

    def _finish_interrupted(self, trial_id: str) -> None:
        trial = self._trial(trial_id)
        params = dict(trial.params)
        self._tell_fail(trial, _INTERRUPTED)
        self._unknown(trial)
        if self._used is not None:
            self._used -= 1
        if params:
            self._study.enqueue_trial(params, user_attrs={"retry_of": trial.number})
        self._forget(trial_id)

    def _unknown(self, trial: optuna.Trial) -> None:
        """A trial that failed or was cut off: its architecture may be proposed and trained again."""
        key = self._identity(trial.params)
        if key in self._known and self._known[key].number == trial.number:
            del self._known[key]

    def _forget(self, trial_id: str) -> None:
        self._done.add(trial_id)
        self._trials.pop(trial_id, None)
        self._histories.pop(trial_id, None)
        self._reasons.pop(trial_id, None)
        self._pending_errors.discard(trial_id)


def _enqueued(trial: optuna.Trial) -> bool:
    """A trial enqueued by the search itself (the retry of an interrupted one), not proposed by a sampler."""
    return "fixed_params" in trial._cached_frozen_trial.system_attrs


class _SampleFailed(Exception):
    """The space's ``sample`` raised on one trial (already told FAIL); the message names where."""


def _never() -> bool:
    return False


def _user_frame(error: BaseException) -> str:
    """``file:line`` of the innermost frame of ``error`` in the user's code (not Optuna, nas or Python's own)."""
    import os
    import sysconfig
    import traceback

    import nas

    library = tuple(os.path.dirname(m.__file__) + os.sep for m in (optuna, nas))
    stdlib = sysconfig.get_paths()["stdlib"] + os.sep
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        name = frame.filename
        if not name.startswith(("<", stdlib, *library)) and "site-packages" not in name:
            return f"{name}:{frame.lineno}"
    return ""


def _is_discrete(distribution: Any) -> bool:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution | IntDistribution):
        return True
    return isinstance(distribution, FloatDistribution) and distribution.step is not None


def counts_toward_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial counts toward ``max_trials`` (see :meth:`OptunaMultiObjectiveSearcher.trials_used`)."""
    if trial.state == TrialState.WAITING or DUPLICATE_OF in trial.user_attrs or PROXY_DROPPED in trial.user_attrs:
        return False
    return not (trial.state == TrialState.FAIL and trial.user_attrs.get("fail_reason") in (_INTERRUPTED, _DUPLICATE))


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Fail the trials a killed controller left RUNNING and enqueue their params again.

    Each RUNNING trial is told FAIL with ``fail_reason="interrupted"``; its params are enqueued with
    ``user_attrs={"retry_of": number}``, so the next ``study.ask()`` returns them first (WAITING trials
    come before new samples) and the define-by-run ``sample`` reproduces them. Call it only when no
    other controller is working on the study. A trial killed between ``ask()`` and sampling has no
    params and never reached Ray: it is failed as interrupted but there is nothing to enqueue.
    Returns the numbers of the interrupted trials.
    """
    numbers: list[int] = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial = _trial_by_number(study, frozen.number)
        trial.set_user_attr("fail_reason", _INTERRUPTED)
        study.tell(frozen.number, state=TrialState.FAIL)
        if frozen.params:
            study.enqueue_trial(dict(frozen.params), user_attrs={"retry_of": frozen.number})
        numbers.append(frozen.number)
    return numbers




def make_sampler(
    name: str, *, seed: int | None, constrained: bool = False, population_size: int | None = None,
    history: int | None = None,
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for a search: ``"tpe"``, ``"nsga2"``, ``"gp"`` or ``"random"``.

    In Optuna 5 every constraint-aware sampler (TPE, NSGA-II, GP) reads the values stored with
    ``trial.set_constraint`` by itself; the old ``constraints_func`` argument is deprecated and would
    store each value a second time under the legacy ``constraints`` key. ``constrained`` is therefore
    accepted for clarity and needs no extra wiring. ``population_size`` applies to NSGA-II only
    (Optuna's default is 50).

    TPE is multivariate, grouped by the parameters that occur together (the shipped spaces are
    conditional). Optuna 5's multi-objective default, one density per parameter, keeps proposing the
    same architecture: on NAS-Bench-201 (200 trials, 3 seeds) 30-44% of its proposals had to come
    from the fallback, against 0-1% for the multivariate TPE.

    ``history``: model only the most recent ``history`` finished trials plus the current front
    (:class:`nas.search.history.BoundedHistorySampler`), so an ask stops growing with the study;
    ``None`` models every trial.
    """
    if not isinstance(constrained, bool):
        raise ValueError(f"constrained must be True or False, got {constrained!r}")
    if history is not None:
        from nas.search.history import BoundedHistorySampler

        return BoundedHistorySampler(make_sampler(name, seed=seed, constrained=constrained,
                                                  population_size=population_size), recent=history)
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if name == "nsga2":
        kwargs = {} if population_size is None else {"population_size": population_size}
        return optuna.samplers.NSGAIISampler(seed=seed, **kwargs)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"sampler {name!r} is not one of {', '.join(SAMPLERS)}")
