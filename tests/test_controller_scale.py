"""What keeps one controller fast on a large study: the single-writer storage and the bounded sampler history."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.search.history import BoundedHistorySampler
from nas.search.searcher import make_sampler
from nas.search.store import open_storage


def _same(a: list, b: list) -> None:
    assert [(t.number, t.state, t.params, t.distributions, t.values, t.user_attrs, t.system_attrs,
             t.intermediate_values) for t in a] == \
        [(t.number, t.state, t.params, t.distributions, t.values, t.user_attrs, t.system_attrs,
          t.intermediate_values) for t in b]


def test_single_writer_storage_reads_back_only_state_changes_and_stays_exact(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = open_storage(url)
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize", "minimize"])
    reads: list[set[int]] = []
    backend_get_trials = storage._backend._get_trials

    def counting(study_id, states, included_trial_ids, trial_id_greater_than):
        trials = backend_get_trials(study_id, states, included_trial_ids, trial_id_greater_than)
        reads.append({t._trial_id for t in trials})
        return trials

    def fresh() -> list:
        return optuna.load_study(study_name="s", storage=open_storage(url, read_only=True)).get_trials(deepcopy=False)

    storage._backend._get_trials = counting
    running = [study.ask() for _ in range(5)]
    for i, trial in enumerate(running):
        trial.suggest_int("x", 0, 10)
        trial.suggest_float("y", 0.0, 1.0)
        trial.set_user_attr("history", [{"epoch": 1, "i": i}])
    study.get_trials(deepcopy=False)
    before = study.get_trials(deepcopy=False)
    reads.clear()
    # Attributes and intermediate values are written through to the cache: nothing is read back.
    running[1].set_user_attr("history", [{"epoch": 1}, {"epoch": 2}])
    storage.set_trial_intermediate_value(running[1]._trial_id, 1, 0.5)
    assert study.get_trials(deepcopy=False)[1].user_attrs["history"] == [{"epoch": 1}, {"epoch": 2}]
    assert before[1].user_attrs["history"] == [{"epoch": 1, "i": 1}]  # a list handed out earlier is unchanged
    assert reads == []
    _same(study.get_trials(deepcopy=False), fresh())
    # A state change is read back once (the database sets the timestamps), then served from memory.
    reads.clear()
    study.tell(running[2], [0.5, 1.0])
    study.get_trials(deepcopy=False)
    assert reads == [{running[2]._trial_id}]
    _same(study.get_trials(deepcopy=False), fresh())
    assert study.get_trials(deepcopy=False)[2].datetime_complete == fresh()[2].datetime_complete
    storage.engine.dispose()


def test_single_writer_storage_writes_a_trials_params_together(tmp_path: Path) -> None:
    from nas.search.store import write_held_params

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url), directions=["maximize"])
    first = study.ask()
    first.suggest_int("x", 0, 10)  # the first use of a name is written at once (the database checks it)
    study.tell(first, 1.0)
    trial = study.ask()
    trial.suggest_int("x", 0, 10)
    trial.suggest_categorical("z", ["a", "b"])

    def stored_params() -> dict:
        reader = optuna.load_study(study_name="s", storage=open_storage(url, read_only=True))
        return reader.get_trials(deepcopy=False)[1].params

    assert stored_params() == {"z": trial.params["z"]}  # x is held back, z (a new name) is not
    assert study.get_trials(deepcopy=False)[1].params == trial.params  # the writer sees both
    write_held_params(study)
    assert stored_params() == trial.params
    with pytest.raises(ValueError):  # a held-back param is still checked against the distribution in use
        study.ask().suggest_float("x", 0.0, 1.0)


def _spied_study(seen: list[list[int]], *, recent: int) -> optuna.Study:
    """A study whose bounded-history sampler appends the trial numbers it is shown to ``seen``."""

    class Spy(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, name, distribution):
            seen.append([t.number for t in study._get_trials(deepcopy=False, states=None, use_cache=False)])
            return super().sample_independent(study, trial, name, distribution)

    return optuna.create_study(directions=["maximize", "minimize"],
                               sampler=BoundedHistorySampler(Spy(seed=0), recent=recent))


def test_bounded_history_sees_recent_trials_front_and_running_ones() -> None:
    seen: list[list[int]] = []
    study = _spied_study(seen, recent=3)
    values = [(0.9, 1.0), (0.1, 9.0), (0.2, 8.0), (0.3, 7.0), (0.4, 6.0), (0.5, 5.0)]
    for v in values:  # trial 0 dominates every later one: it is the front
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, list(v))
    running = study.ask()
    running.suggest_float("x", 0, 1)
    seen.clear()
    nxt = study.ask()
    nxt.suggest_float("x", 0, 1)
    # front (0), the three most recent finished (3, 4, 5), the running ones (6, 7).
    assert seen == [[0, 3, 4, 5, 6, 7]]


def test_make_sampler_history_wraps_and_rejects_bad_values() -> None:
    sampler = make_sampler("tpe", seed=0, history=100)
    assert isinstance(sampler, BoundedHistorySampler) and sampler.recent == 100
    with pytest.raises(ValueError, match="recent"):
        make_sampler("tpe", seed=0, history=0)
    study = optuna.create_study(directions=["maximize"], sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=15)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_bookkeeping_queue_is_bounded_and_runs_everything_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from nas.search.events import EventPump

    monkeypatch.setattr(EventPump, "QUEUE_LIMIT", 2)
    pump = EventPump()
    gate = threading.Event()
    done: list[int] = []
    pump.submit(gate.wait)  # the writer is busy until the gate opens
    while pump._queue.qsize():
        time.sleep(0.01)
    pump.submit(done.append, 0)
    pump.submit(done.append, 1)
    blocked = threading.Thread(target=pump.submit, args=(done.append, 2))
    blocked.start()
    time.sleep(0.2)
    assert blocked.is_alive()  # the queue is full: the producer waits instead of growing it
    gate.set()
    blocked.join(timeout=5)
    pump.close()
    assert done == [0, 1, 2] and not pump.errors


def test_status_and_pareto_read_the_stored_summary_while_it_is_current(tmp_path: Path, monkeypatch) -> None:
    from collections import Counter

    from nas.results.records import records_from_study
    from nas.search import runs
    from nas.search.summary import SUMMARY_ATTR, search_summary

    objectives = {"val_acc": "max", "energy_uj": "min"}
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url), directions=["maximize", "minimize"])
    study.set_metric_names(list(objectives))
    study.set_user_attr("objectives", objectives)
    for values in ([0.9, 5.0], [0.5, 1.0], [0.4, 6.0]):
        trial = study.ask()
        trial.suggest_int("w", 1, 9)
        study.tell(trial, values)
    study.tell(study.ask(), state=TrialState.PRUNED)
    frozen = study.get_trials(deepcopy=False)
    exact = search_summary(records_from_study(study, frozen), objectives, Counter(t.state.name for t in frozen))
    study.set_user_attr(SUMMARY_ATTR, exact)
    runs.write_options(tmp_path / "s", {"name": "s", "storage": url, "trials": 4, "objectives": objectives})
    assert exact["front"] == [0, 1] and exact["counts"]["complete"] == 3 and exact["counts"]["pruned"] == 1

    def no_full_read(*args, **kwargs):
        raise AssertionError("read every trial although the summary is current")

    with monkeypatch.context() as patch:
        patch.setattr(runs, "records_from_study", no_full_read)
        handle = runs.open_search(tmp_path, "s")
        assert handle.summary == exact
        assert [r.number for r in handle.front_points()[0]] == [0, 1]
    # A trial the summary does not know of, and no controller running: computed from every trial.
    trial = study.ask()
    trial.suggest_int("w", 1, 9)
    study.tell(trial, [0.95, 0.5])
    handle = runs.open_search(tmp_path, "s")
    assert handle.summary["front"] == [4] and handle.summary["counts"]["complete"] == 4
    assert [r.number for r in handle.front_points()[0]] == [4]


def test_pareto_reads_and_shows_one_trial_per_distinct_point(tmp_path: Path, monkeypatch, capsys) -> None:
    from collections import Counter

    from nas.cli import main
    from nas.results.records import records_from_study
    from nas.search import runs, store
    from nas.search.summary import SUMMARY_ATTR, search_summary

    objectives = {"val_acc": "max", "energy_uj": "min"}
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url), directions=["maximize", "minimize"])
    study.set_metric_names(list(objectives))
    study.set_user_attr("objectives", objectives)
    for values in ([0.9, 5.0], [0.5, 1.0], [0.9, 5.0], [0.4, 6.0], [0.9, 5.0]):  # trials 2 and 4 repeat trial 0
        trial = study.ask()
        trial.suggest_int("w", 1, 9)
        study.tell(trial, values)
    frozen = study.get_trials(deepcopy=False)
    study.set_user_attr(SUMMARY_ATTR, search_summary(records_from_study(study, frozen), objectives,
                                                     Counter(t.state.name for t in frozen)))
    runs.write_options(tmp_path / "s", {"name": "s", "storage": url, "trials": 5, "objectives": objectives})
    read: list[list[int]] = []
    original = store.trials_by_number

    def spy(study: object, numbers: list[int]) -> list:
        read.append(sorted(numbers))
        return original(study, numbers)

    monkeypatch.setattr(runs, "trials_by_number", spy)
    records, shared = runs.open_search(tmp_path, "s").front_points()
    assert [r.number for r in records] == [0, 1] and shared == {0: 3, 1: 1} and read == [[0, 1]]
    assert main(["pareto", "s", "--root", str(tmp_path), "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    assert [(r["trial"], r["trials"]) for r in rows] == [(0, 3), (1, 1)]


def test_sampler_history_option_is_checked_before_anything_runs() -> None:
    from nas.errors import NasError
    from nas.search.options import SearchOptions

    SearchOptions(space="s.py", sampler_history=2000).validate()
    with pytest.raises(NasError, match="--sampler-history must be at least 1"):
        SearchOptions(space="s.py", sampler_history=0).validate()


def test_bounded_history_keeps_only_the_newest_running_trials() -> None:
    seen: list[list[int]] = []
    study = _spied_study(seen, recent=2)
    for v in [(0.9, 1.0), (0.1, 9.0), (0.2, 8.0)]:
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, list(v))
    for _ in range(4):  # trials 3..6 stay running
        study.ask().suggest_float("x", 0, 1)
    seen.clear()
    study.ask().suggest_float("x", 0, 1)
    # front (0), the two most recent finished (1, 2), and of the running 3..7 the two newest (6, 7).
    assert seen == [[0, 1, 2, 6, 7]]
