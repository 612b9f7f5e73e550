"""The Optuna searcher behind real Ray Tune runs, with a real SQLite study in tmp_path."""

from __future__ import annotations

import math
import sys
import warnings

import optuna
import pytest
import ray
from optuna.trial import TrialState
from ray import tune

from nas.results.pareto import front_of
from nas.results.records import COMPLETE, DUPLICATE, FAIL, PRUNED, records_from_study
from nas.search.events import error_reason
from nas.search.moasha import make_scheduler
from nas.search.searcher import (
    OptunaMultiObjectiveSearcher,
    make_sampler,
    recover_interrupted,
)

OBJECTIVES = {"val_acc": "max", "energy_uj": "min"}
MAX_EPOCHS = 3
# Per kind: (val_acc, energy_uj) reported every epoch.
OUTCOME = {"good": (0.9, 1.0), "bad": (0.1, 2.0), "nan": (math.nan, 1.0), "boom": (0.5, 0.5)}


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    # Workers cannot import this test module by name: ship its functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, object_store_memory=100_000_000, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def sample(trial: optuna.Trial) -> dict:
    return {
        "kind": trial.suggest_categorical("kind", sorted(OUTCOME)),
        "width": trial.suggest_int("width", 1, 1000),
    }


def trainable(config: dict) -> None:
    kind = config["params"]["kind"]
    acc, energy = OUTCOME[kind]
    for epoch in range(1, MAX_EPOCHS + 1):
        if kind == "boom":
            raise RuntimeError("boom in the first epoch")
        tune.report({"epoch": epoch, "val_acc": acc * epoch / MAX_EPOCHS, "energy_uj": energy, "sops": 10 * epoch})


def _study(tmp_path, name: str = "s") -> optuna.Study:
    return optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        study_name=name,
        directions=["maximize", "minimize"],
        sampler=make_sampler("random", seed=0),
        load_if_exists=True,
    )


def _searcher(study: optuna.Study, max_trials: int, **kwargs) -> OptunaMultiObjectiveSearcher:
    return OptunaMultiObjectiveSearcher(
        study=study, sample=sample, objectives=OBJECTIVES, max_epochs=MAX_EPOCHS, max_trials=max_trials, **kwargs
    )


class FailureReasons(tune.Callback):
    """What the controller's Ray callback does for a trial that raised (``nas.search.events.Bookkeeper``):
    the line of Ray's error text that names the exception goes to the searcher; at the end, any error still
    waiting for a reason is told FAIL."""

    def __init__(self, searcher: OptunaMultiObjectiveSearcher) -> None:
        self._searcher = searcher

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._searcher.record_failure_reason(trial.trial_id, error_reason(trial))

    def on_experiment_end(self, trials: list, **info) -> None:
        self._searcher.flush()


def _fit(tmp_path, searcher: OptunaMultiObjectiveSearcher, scheduler_kind: str, name: str) -> tune.ResultGrid:
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=make_scheduler(scheduler_kind, objectives=OBJECTIVES, max_t=MAX_EPOCHS),
            num_samples=-1,
            max_concurrent_trials=1,  # one at a time: the rung order below is then fixed
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(tmp_path / "ray"),
            verbose=0,
            callbacks=[FailureReasons(searcher)],
        ),
    )
    return tuner.fit()


def test_complete_pruned_fail_through_ray_tune(tmp_path) -> None:
    study = _study(tmp_path)
    for kind in ("good", "bad", "boom", "nan"):
        study.enqueue_trial({"kind": kind})
    searcher = _searcher(study, max_trials=4)
    grid = _fit(tmp_path, searcher, "moasha", "run1")
    assert len(grid) == 4  # the searcher said FINISHED after 4, and the Tuner finished despite the error

    records = {r.params["kind"]: r for r in records_from_study(study)}
    assert len(records) == 4
    good, bad, boom, nan = records["good"], records["bad"], records["boom"], records["nan"]

    assert good.state == COMPLETE
    assert good.values == {"val_acc": pytest.approx(0.9), "energy_uj": 1.0}
    assert [h["epoch"] for h in good.history] == [1, 2, 3]
    assert good.history[-1]["sops"] == 30
    # Only the trainable's metrics (and Ray's time_total_s) are kept, not Ray's bookkeeping keys.
    assert set(good.history[-1]) == {"epoch", "val_acc", "energy_uj", "sops", "time_total_s"}

    # MOASHA: dominated by "good" at the epoch-1 rung (n = 2, keep 1) -> stopped -> PRUNED.
    assert bad.state == PRUNED
    assert bad.values is None
    assert bad.user_attrs["last_values"] == {"val_acc": pytest.approx(0.1 / 3), "energy_uj": 2.0}
    assert [h["epoch"] for h in bad.history] == [1]

    assert boom.state == FAIL
    assert "RuntimeError: boom in the first epoch" in boom.fail_reason
    assert nan.state == FAIL and nan.fail_reason == "diverged"

    assert [r.params["kind"] for r in front_of(list(records.values()), OBJECTIVES)] == ["good"]


def test_plain_fifo_completes_everything_and_resume_adds_up(tmp_path) -> None:
    study = _study(tmp_path, "resume")
    # A first run finished two trials (told directly here, to keep the test short) ...
    first = _searcher(study, max_trials=2)
    for tid in ("a", "b"):
        first.suggest(tid)
        first.on_trial_complete(tid, {"epoch": MAX_EPOCHS, "val_acc": 0.5, "energy_uj": 1.0})
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]

    # A controller killed mid-trial leaves one RUNNING trial behind.
    orphan = study.ask()
    sample(orphan)
    orphan_params = dict(orphan.params)
    assert recover_interrupted(study) == [2]
    assert study.trials[2].state == TrialState.FAIL
    assert study.trials[2].user_attrs["fail_reason"] == "interrupted"

    searcher = _searcher(study, max_trials=4)
    assert searcher.trials_used() == 2
    for kind in ("good", "bad"):  # after the retry: one that runs to the end under FIFO, one more
        study.enqueue_trial({"kind": kind})
    _fit(tmp_path, searcher, "none", "second")
    trials = study.trials
    retry = [t for t in trials if t.user_attrs.get("retry_of") == 2]
    assert len(retry) == 1 and retry[0].params == orphan_params and retry[0].state != TrialState.RUNNING
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    counted = [t for t in finished if t.user_attrs.get("fail_reason") not in ("interrupted", "duplicate")]
    assert len(counted) == 4
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # Without a scheduler nothing stops early: the new "good" trial is COMPLETE at full fidelity.
    new_good = [t for t in trials if t.params.get("kind") == "good" and t.number > 2 and "retry_of" not in t.user_attrs]
    assert [t.state for t in new_good] == [TrialState.COMPLETE]


def test_recover_interrupted_reenqueues_first(tmp_path) -> None:
    study = _study(tmp_path, "recover")
    t = study.ask()
    sample(t)
    params = dict(t.params)
    assert recover_interrupted(study) == [0]
    assert recover_interrupted(study) == []  # nothing RUNNING any more
    searcher = _searcher(study, max_trials=5)
    config = searcher.suggest("ray-1")
    assert config == {"params": params, "optuna_number": 1}
    assert study.trials[1].user_attrs["retry_of"] == 0


def test_direct_hooks_pruned_complete_and_constraints(tmp_path) -> None:
    study = _study(tmp_path, "hooks")
    searcher = _searcher(study, max_trials=2, constraints=lambda m: {"energy_budget": m["energy_uj"] - 1.5})
    a = searcher.suggest("a")
    b = searcher.suggest("b")
    assert searcher.suggest("c") == "FINISHED"
    for tid, energy in (("a", 1.0), ("b", 2.0)):
        for epoch in (1, 2, 3):
            searcher.on_trial_result(
                tid, {"epoch": epoch, "val_acc": 0.5, "energy_uj": energy, "training_iteration": 1}
            )
    searcher.on_trial_complete("a", {"epoch": 3, "val_acc": 0.5, "energy_uj": 1.0})
    searcher.on_trial_complete("b", {"epoch": 3, "val_acc": 0.5, "energy_uj": 2.0})
    recs = records_from_study(study)
    assert [r.number for r in recs] == [a["optuna_number"], b["optuna_number"]]
    assert recs[0].state == COMPLETE and recs[0].feasible and recs[0].constraints == (-0.5,)
    assert recs[1].state == COMPLETE and not recs[1].feasible
    assert len(recs[0].history) == 3 and "training_iteration" not in recs[0].history[0]
    assert [r.number for r in front_of(recs, OBJECTIVES)] == [recs[0].number]


def test_error_without_reason_is_flushed_as_error(tmp_path) -> None:
    study = _study(tmp_path, "flush")
    searcher = _searcher(study, max_trials=3)
    searcher.suggest("a")
    searcher.on_trial_complete("a", error=True)
    assert study.trials[0].state == TrialState.RUNNING  # held for the error callback
    searcher.suggest("b")  # any later event tells it
    assert study.trials[0].state == TrialState.FAIL and study.trials[0].user_attrs["fail_reason"] == "error"
    searcher.record_failure_reason("b", "Traceback ...\nValueError: bad width")
    searcher.on_trial_complete("b", error=True)
    assert study.trials[1].user_attrs["fail_reason"] == "ValueError: bad width"
    # Late or repeated events for finished trials change nothing (and do not raise).
    searcher.record_failure_reason("b", "something else")
    searcher.on_trial_complete("b", {"epoch": 3, "val_acc": 0.5, "energy_uj": 1.0})
    assert study.trials[1].state == TrialState.FAIL
    assert study.trials[1].user_attrs["fail_reason"] == "ValueError: bad width"


def _tiny(trial: optuna.Trial) -> None:
    trial.suggest_categorical("x", [0, 1, 2])


def test_duplicates_are_told_the_known_outcome_never_trained_and_an_exhausted_space_ends(tmp_path) -> None:
    study = _study(tmp_path, "dups")
    searcher = OptunaMultiObjectiveSearcher(study=study, sample=_tiny, objectives=OBJECTIVES, max_epochs=1,
                                            max_trials=10)
    trained = []
    while (config := searcher.suggest(f"t{len(trained)}")) != "FINISHED":
        x = config["params"]["x"]
        trained.append(x)
        searcher.on_trial_complete(f"t{len(trained) - 1}", {"epoch": 1, "val_acc": 0.1 * (x + 1), "energy_uj": 1.0})
    # Every architecture trained once, then the search ends: the space has nothing untried left.
    assert sorted(trained) == [0, 1, 2] and searcher.space_exhausted
    assert searcher.trials_used() == 3
    values = {t.params["x"]: t.values for t in study.trials if "duplicate_of" not in t.user_attrs}
    duplicates = [t for t in study.trials if "duplicate_of" in t.user_attrs]
    assert duplicates, "the random sampler repeats itself in a 3-architecture space"
    for t in duplicates:
        # Told what the repeated architecture scored, so the sampler learns; recorded as DUPLICATE.
        original = study.trials[t.user_attrs["duplicate_of"]]
        assert t.state == TrialState.COMPLETE and t.values == values[t.params["x"]] == original.values
    records = records_from_study(study)
    assert sorted(r.number for r in records if r.state == DUPLICATE) == sorted(t.number for t in duplicates)
    assert len(front_of(records, OBJECTIVES)) == 1
    assert searcher.proposals["duplicates_told"] == len(duplicates)


def test_a_duplicate_of_a_pruned_or_running_trial(tmp_path) -> None:
    study = _study(tmp_path, "dups2")
    searcher = OptunaMultiObjectiveSearcher(study=study, sample=_tiny, objectives=OBJECTIVES, max_epochs=3,
                                            max_duplicate_retries=0)
    a = searcher.suggest("a")
    searcher.on_trial_complete("a", {"epoch": 1, "val_acc": 0.3, "energy_uj": 2.0})  # pruned at epoch 1
    running = searcher.suggest("b")
    third = searcher.suggest("c")
    assert third["params"]["x"] not in (a["params"]["x"], running["params"]["x"])
    assert searcher.suggest("d") == "FINISHED" and searcher.space_exhausted  # nothing untried is left
    told = {t.user_attrs["duplicate_of"]: t for t in study.trials if "duplicate_of" in t.user_attrs}
    if a["optuna_number"] in told:  # a repeat of the pruned one: PRUNED with its last values
        t = told[a["optuna_number"]]
        assert t.state == TrialState.PRUNED and t.user_attrs["last_values"] == {"val_acc": 0.3, "energy_uj": 2.0}
    if running["optuna_number"] in told:  # a repeat of a running one: nothing is known yet
        t = told[running["optuna_number"]]
        assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == "duplicate"
    assert searcher.trials_used() == 3


def test_the_fallback_can_come_from_the_caller(tmp_path) -> None:
    # The simulator knows its table: its fallback names an untried entry, so exhaustion is exact.
    study = _study(tmp_path, "untried")
    entries = [{"x": 0}, {"x": 1}, {"x": 2}]

    def untried(tried, rng):
        left = [e for e in entries if (("x", e["x"]),) not in tried]
        return rng.choice(left) if left else None

    searcher = OptunaMultiObjectiveSearcher(study=study, sample=_tiny, objectives=OBJECTIVES, max_epochs=1,
                                            untried=untried, max_duplicate_retries=0)
    seen = []
    while (config := searcher.suggest(str(len(seen)))) != "FINISHED":
        seen.append(config["params"]["x"])
        searcher.on_trial_complete(str(len(seen) - 1), {"epoch": 1, "val_acc": 0.5, "energy_uj": 1.0})
    assert sorted(seen) == [0, 1, 2] and searcher.space_exhausted
    fallbacks = [t for t in study.trials if t.user_attrs.get("proposal") == "fallback"]
    assert len(fallbacks) == searcher.proposals["fallback"]


def test_trial_budget_counts_retries_failures_and_interruptions_like_the_study(tmp_path) -> None:
    # The searcher keeps its trial count in memory (re-reading the study on every suggest held up
    # Ray's event loop); it must stop exactly where a count read from the study would.
    study = _study(tmp_path, "budget")
    searcher = _searcher(study, max_trials=3)
    first = searcher.suggest("a")
    searcher.on_trial_complete("a")  # removed before it ran: interrupted, enqueued again, not counted
    assert searcher.trials_used() == 0
    retry = searcher.suggest("b")
    assert retry["params"] == first["params"] and study.trials[1].user_attrs["retry_of"] == first["optuna_number"]
    searcher.record_failure_reason("b", "RuntimeError: out of memory")
    searcher.on_trial_complete("b", error=True)  # a failure counts
    for tid in ("c", "d"):
        searcher.suggest(tid)
        searcher.on_trial_complete(tid, {"epoch": MAX_EPOCHS, "val_acc": 0.5, "energy_uj": 1.0})
    assert searcher.suggest("e") == "FINISHED"
    assert searcher.trials_used() == 3
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE,
                                               TrialState.COMPLETE]


def test_a_sample_that_raises_fails_that_trial_and_the_search_goes_on(tmp_path) -> None:
    study = _study(tmp_path, "flaky")
    calls = {"n": 0}

    def flaky(trial: optuna.Trial) -> None:
        calls["n"] += 1
        width = trial.suggest_int("w", 1, 64)
        if calls["n"] == 2:
            raise RuntimeError(f"width {width} is not supported")

    searcher = OptunaMultiObjectiveSearcher(study=study, sample=flaky, objectives=OBJECTIVES, max_epochs=1,
                                            max_trials=3)
    assert isinstance(searcher.suggest("a"), dict)
    assert isinstance(searcher.suggest("b"), dict)  # the second sample raised: its trial failed, the next one runs
    assert searcher.suggest("c") == "FINISHED"  # two asked + one failed sample = the budget of 3
    failed = study.trials[1]
    assert failed.state == TrialState.FAIL
    reason = failed.user_attrs["fail_reason"]
    assert reason.startswith("sample: RuntimeError: width") and f"{__file__}:" in reason
    assert searcher.sample_error is None and searcher.trials_used() == 3


def test_a_sample_that_keeps_raising_ends_the_search_naming_the_line(tmp_path) -> None:
    study = _study(tmp_path, "badsample")

    def broken(trial: optuna.Trial) -> None:
        trial.suggest_int("w", 1, 3)
        raise ValueError("width must be even")

    searcher = OptunaMultiObjectiveSearcher(study=study, sample=broken, objectives=OBJECTIVES, max_epochs=2)
    assert searcher.suggest("a") == "FINISHED"
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 5
    assert study.trials[0].user_attrs["fail_reason"].startswith("sample: ValueError: width must be even (")
    assert searcher.sample_error.startswith("the space's sample failed on 5 trials in a row; last: ")
    assert f"{__file__}:" in searcher.sample_error and searcher.sample_error.endswith("ValueError: width must be even")
    assert searcher.suggest("b") == "FINISHED"


def test_trials_open_when_the_run_stops_are_recorded_as_interrupted(tmp_path) -> None:
    study = _study(tmp_path, "stopped")
    searcher = _searcher(study, max_trials=4)
    first, second = searcher.suggest("a"), searcher.suggest("b")
    searcher.on_trial_result("a", {"epoch": 1, "val_acc": 0.4, "energy_uj": 1.0})
    searcher.stop_requested = lambda: True
    searcher.on_trial_complete("b", error=True)  # its worker died with the run: not a broken architecture
    assert searcher.interrupt_open_trials() == [first["optuna_number"]]
    states = {t.number: (t.state, t.user_attrs.get("fail_reason")) for t in study.trials}
    assert states[first["optuna_number"]] == (TrialState.FAIL, "interrupted")
    assert states[second["optuna_number"]] == (TrialState.FAIL, "interrupted")
    retries = [t for t in study.trials if t.state == TrialState.WAITING]
    assert sorted(t.user_attrs["retry_of"] for t in retries) == [first["optuna_number"], second["optuna_number"]]
    assert searcher.interrupt_open_trials() == []


def test_save_restore_and_validation(tmp_path) -> None:
    study = _study(tmp_path, "saved")
    searcher = _searcher(study, max_trials=3)
    searcher.suggest("a")
    searcher.on_trial_result("a", {"epoch": 1, "val_acc": 0.4, "energy_uj": 1.0})
    path = tmp_path / "searcher.json"
    searcher.save(str(path))
    again = _searcher(study, max_trials=3)
    again.restore(str(path))
    again.on_trial_complete("a", {"epoch": 2, "val_acc": 0.6, "energy_uj": 1.0})
    rec = records_from_study(study)[0]
    assert rec.state == PRUNED and [h["epoch"] for h in rec.history] == [1, 2]
    with pytest.raises(ValueError, match="direction"):
        OptunaMultiObjectiveSearcher(
            study=study, sample=sample, objectives={"val_acc": "min", "energy_uj": "min"}, max_epochs=3
        )


@pytest.mark.parametrize("name", ["tpe", "nsga2", "gp", "random"])
def test_make_sampler(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated constraints_func
        sampler = make_sampler(name, seed=1, constrained=True)
    assert isinstance(sampler, optuna.samplers.BaseSampler)


def test_make_sampler_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="cmaes"):
        make_sampler("cmaes", seed=0)
