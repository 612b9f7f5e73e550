"""MOASHA: the promotion rule on hand-made rung tables, then the scheduler hooks with real Trial objects."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from nas.search.choices import SCHEDULERS
from nas.search.moasha import MOASHAScheduler, make_scheduler, promotion_decision, rung_milestones, rung_order

ACC_ENERGY = ["max", "min"]


def test_first_trial_at_a_rung_continues() -> None:
    assert promotion_decision([], [0.1, 100.0], ACC_ENERGY, 3)


def test_dominated_point_is_stopped() -> None:
    rung = [[0.9, 2.0], [0.8, 1.0]]
    # n = 3, keep 1; the new point is dominated by both -> rank 1, two points ahead.
    assert not promotion_decision(rung, [0.7, 3.0], ACC_ENERGY, 3)
    # A point dominating both is alone on the front.
    assert promotion_decision(rung, [0.95, 0.5], ACC_ENERGY, 3)


def test_ties_are_broken_by_the_points_not_for_the_newcomer() -> None:
    # n = 2, keep 1: both are ends of one front (infinite crowding, equal scaled sums); the first
    # objective decides, whichever arrived last.
    assert not promotion_decision([[0.9, 9.0]], [0.5, 1.0], ACC_ENERGY, 3)
    assert promotion_decision([[0.5, 1.0]], [0.9, 9.0], ACC_ENERGY, 3)
    # An exact repeat of the recorded point arrived later: it waits behind it.
    assert not promotion_decision([[0.7, 3.0]], [0.7, 3.0], ACC_ENERGY, 3)
    assert not promotion_decision([[0.7, 3.0]], [0.7, 3.0], ACC_ENERGY, 3, "epsnet")


def test_a_new_end_of_a_front_with_a_constant_objective_does_not_always_win() -> None:
    # Every point has the same energy: the front is decided by accuracy alone; a newcomer at the
    # low end of accuracy is not promoted for being an "extreme" of the constant objective.
    rung = [[0.9, 2.0], [0.8, 2.0]]
    assert not promotion_decision(rung, [0.7, 2.0], ACC_ENERGY, 3)
    assert promotion_decision(rung, [0.95, 2.0], ACC_ENERGY, 3)


def test_crowding_distance_breaks_ties_within_a_front() -> None:
    # All four points are mutually non-dominated. eta 1.5 -> keep ceil(4 / 1.5) = 3.
    # By hand: extremes (0.9, 9) and (0.5, 1) are infinite; (0.7, 5) has crowding
    # 0.875 + 0.9375 = 1.8125, (0.85, 8.5) has 0.5 + 0.5 = 1.0.
    a, b, c, d = [0.9, 9.0], [0.5, 1.0], [0.7, 5.0], [0.85, 8.5]
    assert not promotion_decision([a, b, c], d, ACC_ENERGY, 1.5)
    assert promotion_decision([a, b, d], c, ACC_ENERGY, 1.5)
    # With eta 2 only two survive: the extremes.
    assert not promotion_decision([a, b, d], c, ACC_ENERGY, 2)


def test_rank_beats_crowding_three_objectives() -> None:
    rung = [[0.9, 1.0, 1.0], [0.8, 2.0, 2.0], [0.7, 3.0, 3.0]]  # a chain: ranks 0, 1, 2
    dirs = ["max", "min", "min"]
    # n = 4, eta 2 -> keep 2: a rank-1 point (dominated only by the first) is second -> continue.
    assert promotion_decision(rung, [0.85, 1.5, 1.5], dirs, 2)
    # Rank 3 (dominated by the whole chain) -> stop.
    assert not promotion_decision(rung, [0.6, 4.0, 4.0], dirs, 2)


@pytest.mark.parametrize("priority", ["nsga2", "epsnet"])
def test_the_order_depends_on_the_points_not_their_arrival(priority: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        n, m = int(rng.integers(1, 12)), int(rng.integers(2, 4))
        pts = rng.random((n, m))
        directions = ["max"] + ["min"] * (m - 1)
        order = rung_order(pts, directions, priority)
        perm = rng.permutation(n)
        again = rung_order(pts[perm], directions, priority)
        assert perm[again].tolist() == order.tolist()


@pytest.mark.parametrize("priority", ["nsga2", "epsnet"])
@pytest.mark.parametrize(("m", "eta", "n"), [(2, 3, 3), (3, 4, 3), (2, 3, 27), (2, 2, 5), (3, 3, 10), (2, 4, 7),
                                              (2, 3, 1), (2, 3, 2)])
def test_continued_fraction_is_ceil_n_over_eta_over_n(priority: str, m: int, eta: int, n: int) -> None:
    # Random rungs of n exchangeable points, the last one new: it continues with probability
    # ceil(n / eta) / n (-> 1 / eta); the bound 4 standard errors wide fails a biased rule at once
    # (the old rule continued 55.6% at m=2, eta=3, n=3 and 76.8% at m=3, eta=4, n=3).
    rng = np.random.default_rng(1000 * m + 10 * eta + n)
    draws = 3000
    directions = ["max"] + ["min"] * (m - 1)
    kept = sum(promotion_decision(rng.random((n - 1, m)), rng.random(m), directions, eta, priority)
               for _ in range(draws))
    expected = math.ceil(n / eta) / n
    assert abs(kept / draws - expected) <= 4 * math.sqrt(expected * (1 - expected) / draws) + 1e-9


def test_bad_eta_is_rejected() -> None:
    with pytest.raises(ValueError, match="eta"):
        promotion_decision([], [1.0, 1.0], ACC_ENERGY, 1)


def test_rung_milestones() -> None:
    assert rung_milestones(9, 1, 3) == [1, 3]
    assert rung_milestones(27, 1, 3) == [1, 3, 9]
    assert rung_milestones(16, 2, 2) == [2, 4, 8]
    assert rung_milestones(1, 1, 3) == []


def _trials(n: int) -> list[Trial]:
    return [Trial("__fake", stub=True) for _ in range(n)]


def _result(epoch: int, acc: float, energy: float) -> dict:
    return {"epoch": epoch, "val_acc": acc, "energy_uj": energy}


def test_scheduler_hooks_drive_the_rungs() -> None:
    sched = MOASHAScheduler(metrics=["val_acc", "energy_uj"], modes=["max", "min"], max_t=9, reduction_factor=3)
    assert sched.milestones == [1, 3]
    t1, t2, t3, t4 = _trials(4)
    for t in (t1, t2, t3, t4):
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, t1, _result(1, 0.5, 5.0)) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, t2, _result(1, 0.6, 4.0)) == TrialScheduler.CONTINUE
    # Dominated by both recorded trials, n = 3 -> keep 1.
    assert sched.on_trial_result(None, t3, _result(1, 0.4, 6.0)) == TrialScheduler.STOP
    assert set(sched.rung_table(1)) == {t1.trial_id, t2.trial_id, t3.trial_id}
    # Between rungs nothing is decided; a result already decided at a rung is not re-recorded.
    assert sched.on_trial_result(None, t1, _result(2, 0.1, 50.0)) == TrialScheduler.CONTINUE
    assert sched.rung_table(1)[t1.trial_id] == [0.5, 5.0]
    assert sched.on_trial_result(None, t1, _result(3, 0.7, 3.0)) == TrialScheduler.CONTINUE
    assert sched.rung_table(3) == {t1.trial_id: [0.7, 3.0]}
    # Full fidelity: done.
    assert sched.on_trial_result(None, t1, _result(9, 0.8, 3.0)) == TrialScheduler.STOP
    # Missing objective: no decision. NaN or diverged: stop at once.
    assert sched.on_trial_result(None, t4, {"epoch": 1, "val_acc": 0.9}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, t4, _result(1, math.nan, 1.0)) == TrialScheduler.STOP
    assert sched.on_trial_result(None, t2, {**_result(2, 0.6, 4.0), "diverged": True}) == TrialScheduler.STOP
    assert t4.trial_id not in sched.rung_table(1)
    sched.on_trial_complete(None, t1, _result(9, 0.8, 3.0))
    sched.on_trial_remove(None, t3)
    assert "num_stopped=4" in sched.debug_string()
    # The searcher asks the scheduler which trials it stopped (PRUNED) instead of patching it.
    assert sched.stopped_trials == {t1.trial_id, t2.trial_id, t3.trial_id, t4.trial_id}


def test_trial_that_ends_itself_at_a_rung_is_recorded() -> None:
    sched = MOASHAScheduler(metrics=["val_acc", "energy_uj"], modes=["max", "min"], max_t=9)
    (t1,) = _trials(1)
    sched.on_trial_add(None, t1)
    sched.on_trial_complete(None, t1, _result(3, 0.9, 1.0))
    assert sched.rung_table(3) == {t1.trial_id: [0.9, 1.0]}


def test_save_and_restore_round_trip(tmp_path) -> None:
    kwargs = dict(metrics=["val_acc", "energy_uj"], modes=["max", "min"], max_t=9)
    sched = MOASHAScheduler(**kwargs)
    t1, t2, t3 = _trials(3)
    sched.on_trial_result(None, t1, _result(1, 0.5, 5.0))
    sched.on_trial_result(None, t2, _result(1, 0.6, 4.0))
    path = tmp_path / "moasha.json"
    sched.save(str(path))
    again = MOASHAScheduler(**kwargs)
    again.restore(str(path))
    assert again.rung_table(1) == sched.rung_table(1)
    # The restored tables drive the same decision.
    assert again.on_trial_result(None, t3, _result(1, 0.4, 6.0)) == TrialScheduler.STOP
    other = MOASHAScheduler(metrics=["val_acc", "energy_uj"], modes=["max", "min"], max_t=27)
    with pytest.raises(ValueError, match="max_t"):
        other.restore(str(path))


def test_constructor_and_search_properties() -> None:
    with pytest.raises(ValueError, match="modes"):
        MOASHAScheduler(metrics=["val_acc"], modes=["max", "min"], max_t=3)
    with pytest.raises(ValueError, match="grace_period"):
        MOASHAScheduler(metrics=["val_acc"], modes=["max"], max_t=3, grace_period=5)
    sched = MOASHAScheduler(metrics=["val_acc"], modes=["max"], max_t=3)
    assert sched.set_search_properties(None, None)
    assert not sched.set_search_properties("val_acc", "max")


def test_make_scheduler() -> None:
    objectives = {"val_acc": "max", "energy_uj": "min"}
    for kind in SCHEDULERS:
        assert make_scheduler(kind, objectives=objectives, max_t=9).stopped_trials == set()
    assert "MOASHA-epsnet" in make_scheduler("moasha-epsnet", objectives=objectives, max_t=9).debug_string()
    assert isinstance(make_scheduler("moasha", objectives=objectives, max_t=9), MOASHAScheduler)
    asha = make_scheduler("asha", objectives=objectives, max_t=9)
    assert isinstance(asha, AsyncHyperBandScheduler) and asha.metric == "val_acc"
    assert isinstance(make_scheduler("none", objectives=objectives, max_t=9), FIFOScheduler)
    with pytest.raises(ValueError, match="hyperband"):
        make_scheduler("hyperband", objectives=objectives, max_t=9)


def test_ray_asha_records_what_it_stops() -> None:
    asha = make_scheduler("asha", objectives={"val_acc": "max", "energy_uj": "min"}, max_t=9)
    trials = _trials(4)
    for t in trials:
        asha.on_trial_add(None, t)
    decisions = [asha.on_trial_result(None, t, _result(1, acc, 1.0)) for t, acc in zip(trials, [0.9, 0.8, 0.1, 0.2],
                                                                                          strict=True)]
    stopped = {t.trial_id for t, d in zip(trials, decisions, strict=True) if d == TrialScheduler.STOP}
    assert stopped and asha.stopped_trials == stopped


def test_two_objective_ranks_and_crowding_match_front_by_front_peeling() -> None:
    """The O(n log n) 2-D ranks and the all-fronts crowding give what peeling one front at a time gives."""
    from nas.results import pareto

    rng = np.random.default_rng(7)
    for case in range(200):
        n = int(rng.integers(0, 80))
        pts = rng.integers(0, 5, size=(n, 2)).astype(float) if case % 2 else rng.normal(size=(n, 2))
        directions = ["max", "min"] if case % 3 else ["min", "min"]
        low = pareto._to_min(pts, directions)
        expected = np.full(n, -1)
        remaining, rank = np.arange(n), 0
        while remaining.size:
            mask = pareto._nondominated_min(low[remaining])
            expected[remaining[mask]] = rank
            remaining, rank = remaining[~mask], rank + 1
        ranks = pareto.non_dominated_ranks(pts, directions)
        assert np.array_equal(ranks, expected)
        crowd = np.zeros(n)
        for r in np.unique(ranks):
            members = np.flatnonzero(ranks == r)
            crowd[members] = pareto.crowding_distance(pts[members], directions)
        assert np.array_equal(pareto.crowding_by_rank(pts, ranks, directions), crowd)


def test_promotion_decision_is_the_newcomers_place_in_the_rung_order() -> None:
    """The shortcut (only the newcomer's front ordered, when the cut falls in it) decides as the full order."""
    rng = np.random.default_rng(11)
    for case in range(400):
        n = int(rng.integers(0, 40))
        old = rng.integers(0, 4, size=(n, 2)).astype(float) if case % 2 else rng.normal(size=(n, 2))
        new = old[int(rng.integers(0, n))] if n and case % 5 == 0 else rng.normal(size=2)
        eta = float(rng.choice([2, 3, 4]))
        pts = np.vstack([old.reshape(-1, 2), new])
        expected = int(np.flatnonzero(rung_order(pts, ["max", "min"]) == n)[0]) < math.ceil((n + 1) / eta)
        assert promotion_decision(old, new, ["max", "min"], eta) == expected
