"""Rung 0 of a search: the proxy rung's rules, and the searcher never training what it drops."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from nas.bench import load_table, simulate
from nas.bench.proxy_scores import load_proxy_scores
from nas.bench.simulator import SimulationSettings
from nas.bench.table_space import TableSpace
from nas.errors import NasError
from nas.results.records import COMPLETE, DROPPED, records_from_study
from nas.search.proxy_rung import ProxyOutcome, ProxyRung
from nas.search.searcher import OptunaMultiObjectiveSearcher, counts_toward_budget, make_sampler

OBJECTIVES = {"val_acc": "max", "energy_uj": "min"}
SCORES_FILE = "benchmarks/results/proxy_scores.json.gz"


def _outcomes(*pairs: tuple[float, float]) -> list[ProxyOutcome]:
    return [ProxyOutcome(score, energy) for score, energy in pairs]


def test_top_keeps_the_best_score_then_the_lower_energy() -> None:
    rung = ProxyRung(lambda p, n: ProxyOutcome(0, 0), reduction_factor=3, rule="top")
    assert rung.batch == 3
    assert rung.keep(_outcomes((1.0, 5.0), (3.0, 9.0), (2.0, 1.0))) == [1]
    assert rung.keep(_outcomes((3.0, 5.0), (3.0, 2.0), (-math.inf, 1.0))) == [1]
    assert rung.keep(_outcomes((-math.inf, 5.0), (-math.inf, 2.0))) == [1]


def test_front_keeps_the_non_dominated_on_score_and_energy() -> None:
    rung = ProxyRung(lambda p, n: ProxyOutcome(0, 0), reduction_factor=4, rule="front")
    assert rung.batch == 4
    # (3, 9) best score, (2, 1) lowest energy; (1, 5) is dominated by (2, 1); an undefined score with
    # the lowest energy is still on the front, one with an unknown energy too when nothing beats its score.
    assert rung.keep(_outcomes((1.0, 5.0), (3.0, 9.0), (2.0, 1.0), (-math.inf, 0.5))) == [1, 2, 3]
    assert rung.keep(_outcomes((-math.inf, math.inf), (1.0, 2.0))) == [1]


def test_bad_rule_or_eta() -> None:
    with pytest.raises(ValueError, match="proxy rule"):
        ProxyRung(lambda p, n: ProxyOutcome(0, 0), rule="best")
    with pytest.raises(ValueError, match="reduction_factor"):
        ProxyRung(lambda p, n: ProxyOutcome(0, 0), reduction_factor=1)


def _sample(trial: optuna.Trial) -> dict:
    return {"width": trial.suggest_int("width", 1, 1000)}


def _score(params, number) -> ProxyOutcome:
    # A proxy that likes wide models and whose energy grows with width.
    return ProxyOutcome(float(params["width"]), float(params["width"]), seconds=0.25)


def _searcher(tmp_path, rule: str, max_trials: int) -> tuple[optuna.Study, OptunaMultiObjectiveSearcher]:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / f'{rule}.db'}", directions=["maximize", "minimize"],
                                sampler=make_sampler("random", seed=0))
    searcher = OptunaMultiObjectiveSearcher(
        study=study, sample=_sample, objectives=OBJECTIVES, max_epochs=1, max_trials=max_trials,
        proxy=ProxyRung(_score, reduction_factor=3, rule=rule))
    return study, searcher


@pytest.mark.parametrize("rule", ["top", "front"])
def test_the_searcher_trains_only_what_the_rung_kept_and_records_every_score(tmp_path, rule: str) -> None:
    study, searcher = _searcher(tmp_path, rule, max_trials=5)
    handed: list[int] = []
    while (config := searcher.suggest(f"t{len(handed)}")) not in (None, "FINISHED"):
        handed.append(config["optuna_number"])
        assert config["proxy"]["proxy_score"] == config["params"]["width"]
        searcher.on_trial_result(f"t{len(handed) - 1}", {"epoch": 1, "val_acc": 0.5, "energy_uj": 1.0})
        searcher.on_trial_complete(f"t{len(handed) - 1}", result={"epoch": 1, "val_acc": 0.5, "energy_uj": 1.0})
    records = records_from_study(study)
    dropped = [r for r in records if r.state == DROPPED]
    trained = [r for r in records if r.state == COMPLETE]
    assert [r.number for r in trained] == handed and len(trained) == 5  # the budget counts trained trials only
    assert dropped and all(r.number not in handed for r in dropped)
    assert all(r.user_attrs["proxy_score"] == r.params["width"] for r in records)
    assert not any(counts_toward_budget(t) for t in study.get_trials() if t.user_attrs.get("proxy_dropped"))
    assert all(t.state == TrialState.PRUNED for t in study.get_trials() if t.user_attrs.get("proxy_dropped"))
    assert searcher.proxy_seconds == pytest.approx(0.25 * len(records))
    if rule == "top":  # each batch of 3 consecutive proposals trains exactly its widest one
        for start in range(0, len(records), 3):
            batch = records[start:start + 3]
            assert [r.state for r in batch].count(COMPLETE) == 1
            widest = max(r.params["width"] for r in batch)
            assert next(r for r in batch if r.state == COMPLETE).params["width"] == widest


def test_kept_trials_waiting_when_the_run_stops_run_again_on_resume(tmp_path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", directions=["maximize", "minimize"],
                                sampler=make_sampler("random", seed=1))
    # Every candidate has the same score and energy: the front rule keeps the whole batch.
    searcher = OptunaMultiObjectiveSearcher(
        study=study, sample=_sample, objectives=OBJECTIVES, max_epochs=1, max_trials=10,
        proxy=ProxyRung(lambda p, n: ProxyOutcome(1.0, 1.0), reduction_factor=3, rule="front"))
    first = searcher.suggest("t0")
    interrupted = searcher.interrupt_open_trials()
    assert first["optuna_number"] in interrupted and len(interrupted) == 3
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert len(waiting) == 3 and not [t for t in study.get_trials() if t.state == TrialState.RUNNING]


def test_the_simulator_with_a_proxy_rung_charges_its_scoring_and_drops_candidates() -> None:
    table = load_table("snnmlp")
    space = TableSpace(table)
    scores = load_proxy_scores(SCORES_FILE, table)
    assert len(scores) == len(table.entries)
    settings = SimulationSettings(sampler="random", scheduler="none", budget=100, seed=0, proxy="sahd",
                                  proxy_rule="top")
    run = simulate(space, settings, proxy_scores=scores)
    assert run.curve and run.proposals["proxy_dropped"] >= 2 * len(run.trials)
    # Scoring is charged: a proxy that takes 50 simulated seconds per candidate leaves no time to train.
    slow = {i: ProxyOutcome(o.score, o.energy_uj, 50.0) for i, o in scores.items()}
    assert simulate(space, settings, proxy_scores=slow).curve == []
    with pytest.raises(ValueError, match="proxy scores"):
        simulate(space, SimulationSettings(proxy="sahd", budget=10))


def test_proxy_scores_of_another_space_text_are_refused(tmp_path) -> None:
    table = load_table("snnmlp")
    table.space_hash = "000000000000"
    with pytest.raises(NasError, match="rerun benchmarks/bench_proxy.py"):
        load_proxy_scores(SCORES_FILE, table)
    (tmp_path / "bad.json.gz").write_bytes(b"not gzip")
    with pytest.raises(NasError, match="not a proxy-scores file"):
        load_proxy_scores(tmp_path / "bad.json.gz", table)
