"""Pareto maths against hand-computed values and an independent brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nas.results.pareto import (
    HypervolumeHistory,
    HypervolumeTracker,
    crowding_distance,
    default_reference,
    epsilon_net_order,
    front_of,
    hypervolume,
    hypervolume_history,
    knee_index,
    non_dominated_ranks,
    normalised_hypervolume,
    pareto_mask,
    ranks_of,
)
from nas.results.records import COMPLETE, DUPLICATE, FAIL, PRUNED, TrialRecord


def _hv_inclusion_exclusion(pts_min: np.ndarray, ref: np.ndarray) -> float:
    """Union of boxes [p, ref] by inclusion-exclusion: slow, but shares no code with the module."""
    pts = [p for p in pts_min if np.all(p < ref)]
    total = 0.0
    for k in range(1, len(pts) + 1):
        for subset in itertools.combinations(pts, k):
            corner = np.max(np.asarray(subset), axis=0)
            total += (-1) ** (k + 1) * float(np.prod(ref - corner))
    return total


def test_ranks_and_mask_hand_made() -> None:
    # acc (max), energy (min)
    pts = np.array([[0.9, 3.0], [0.8, 1.0], [0.7, 2.0], [0.5, 0.5], [0.6, 2.5], [0.8, 1.0]])
    ranks = non_dominated_ranks(pts, ["max", "min"])
    # (0.7, 2.0) is dominated by (0.8, 1.0); (0.6, 2.5) by (0.7, 2.0) too; duplicates share a rank.
    assert ranks.tolist() == [0, 0, 1, 0, 2, 0]
    assert pareto_mask(pts, ["max", "min"]).tolist() == [True, True, False, True, False, True]


def test_hypervolume_2d_hand_computed() -> None:
    pts = np.array([[0.9, 3.0], [0.8, 1.0], [0.5, 0.5]])
    # Rectangles to the reference (acc 0, energy 4): 0.9*1 + 0.8*2 + 0.5*0.5, worked out by hand.
    assert hypervolume(pts, ["max", "min"], [0.0, 4.0]) == pytest.approx(2.75)
    # A dominated point and a point beyond the reference change nothing.
    more = np.vstack([pts, [[0.4, 2.0], [0.95, 5.0], [0.99, 4.0]]])
    assert hypervolume(more, ["max", "min"], [0.0, 4.0]) == pytest.approx(2.75)
    assert hypervolume(np.empty((0, 2)), ["max", "min"], [0.0, 4.0]) == 0.0


def test_hypervolume_3d_hand_computed() -> None:
    pts = np.array([[1.0, 2.0, 3.0], [2.0, 1.0, 2.0], [3.0, 3.0, 1.0]])
    # Boxes 6 + 12 + 3, pairwise overlaps 4 + 1 + 2, triple overlap 1: 21 - 7 + 1 = 15.
    assert hypervolume(pts, ["min", "min", "min"], [4.0, 4.0, 4.0]) == pytest.approx(15.0)
    # The same problem with the first objective maximised (negated) gives the same volume.
    flipped = pts * np.array([-1.0, 1.0, 1.0])
    assert hypervolume(flipped, ["max", "min", "min"], [-4.0, 4.0, 4.0]) == pytest.approx(15.0)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_hypervolume_matches_inclusion_exclusion(m: int) -> None:
    rng = np.random.default_rng(m)
    for _ in range(5):
        pts = rng.random((8, m))
        ref = np.full(m, 0.9)
        expected = _hv_inclusion_exclusion(pts, ref)
        assert hypervolume(pts, ["min"] * m, ref) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_hypervolume_history_is_monotone_and_matches_prefixes() -> None:
    rng = np.random.default_rng(0)
    pts = rng.random((20, 2))
    hist = hypervolume_history(pts, ["max", "min"], [0.0, 1.0])
    assert len(hist) == 20
    assert all(b >= a for a, b in zip(hist, hist[1:], strict=False))
    for i in (0, 7, 19):
        assert hist[i] == pytest.approx(hypervolume(pts[: i + 1], ["max", "min"], [0.0, 1.0]))


def test_crowding_distance() -> None:
    pts = np.array([[0.0, 4.0], [1.0, 3.0], [3.0, 1.0], [4.0, 0.0]])
    cd = crowding_distance(pts, ["min", "min"])
    assert np.isinf(cd[0]) and np.isinf(cd[3])
    # Inner points: ((3-0)/4 + (4-1)/4) / 2 objectives = 0.75 for both here.
    assert cd[1] == pytest.approx(0.75) and cd[2] == pytest.approx(0.75)
    assert np.all(np.isinf(crowding_distance(pts[:2], ["min", "min"])))
    # A constant objective gives no weight, not even to its "ends": only the other objective counts.
    flat = np.array([[0.0, 1.0], [1.0, 1.0], [3.0, 1.0]])
    assert crowding_distance(flat, ["min", "min"]).tolist() == [np.inf, 0.5, np.inf]
    assert crowding_distance(np.ones((4, 2)), ["min", "min"]).tolist() == [0.0] * 4


def _random_fronts(seed: int, count: int):
    """Small integer-valued sets: many exact ties, repeated points and constant objectives."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        n, m = int(rng.integers(1, 10)), int(rng.integers(2, 4))
        pts = rng.integers(0, 4, size=(n, m)).astype(float)
        if rng.random() < 0.4:
            pts[:, rng.integers(m)] = 2.0
        yield pts


def test_crowding_distance_equals_pymoo_on_ties_duplicates_and_constant_objectives() -> None:
    from pymoo.operators.survival.rank_and_crowding.metrics import get_crowding_function

    pymoo_cd = get_crowding_function("cd")  # what pymoo's NSGA-II ranks a front by
    for pts in _random_fronts(0, 2000):
        ours = crowding_distance(pts, ["min"] * pts.shape[1])
        np.testing.assert_allclose(ours, pymoo_cd.do(pts), rtol=1e-12, err_msg=str(pts))


def test_crowding_distance_equals_optuna_nsga2_up_to_the_objective_count() -> None:
    import optuna
    from optuna.samplers.nsgaii._elite_population_selection_strategy import _calc_crowding_distance

    # Optuna re-sorts one list per objective in place, so which of two tied values counts as the end
    # depends on the previous objective's order: compare on distinct values (and constant objectives).
    rng = np.random.default_rng(1)
    for _ in range(1000):
        n, m = int(rng.integers(3, 10)), int(rng.integers(2, 4))
        pts = rng.random((n, m))
        if rng.random() < 0.4:
            pts[:, rng.integers(m)] = 0.5
        trials = [optuna.trial.create_trial(values=list(p), params={}, distributions={}) for p in pts]
        for i, t in enumerate(trials):
            t.number = i
        theirs = _calc_crowding_distance(list(trials))
        expected = np.array([theirs[i] for i in range(len(trials))]) / pts.shape[1]
        np.testing.assert_allclose(crowding_distance(pts, ["min"] * pts.shape[1]), expected, rtol=1e-12,
                                   err_msg=str(pts))


def test_ranks_equal_pymoo_non_dominated_sorting() -> None:
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    for pts in _random_fronts(2, 500):
        fronts = NonDominatedSorting().do(pts)
        expected = np.empty(pts.shape[0], dtype=int)
        for rank, members in enumerate(fronts):
            expected[members] = rank
        assert non_dominated_ranks(pts, ["min"] * pts.shape[1]).tolist() == expected.tolist(), pts


@pytest.mark.parametrize("m", [2, 3, 4])
def test_hypervolume_and_its_incremental_history_equal_optuna_and_pymoo(m: int) -> None:
    from optuna._hypervolume import compute_hypervolume
    from pymoo.indicators.hv import HV

    rng = np.random.default_rng(10 + m)
    for trial in range(20):
        n = int(rng.integers(1, 40))
        pts = rng.random((n, m))
        if trial % 3 == 0:
            pts = np.round(pts, 1)  # ties and repeated points
        ref = np.full(m, 1.1)
        history = hypervolume_history(pts, ["min"] * m, ref)
        prefix_optuna = [compute_hypervolume(pts[: i + 1], ref) for i in range(n)]
        np.testing.assert_allclose(history, prefix_optuna, rtol=1e-9, atol=1e-12)
        assert hypervolume(pts, ["min"] * m, ref) == pytest.approx(HV(ref_point=ref)(pts), rel=1e-9)


def test_tracker_ignores_points_outside_the_box_and_dominated_ones() -> None:
    tracker = HypervolumeTracker(["max", "min"], [0.0, 4.0])
    assert tracker.add([0.5, 5.0]) == 0.0  # beyond the energy reference
    assert tracker.add([-0.1, 1.0]) == 0.0  # below the accuracy reference
    assert tracker.add([0.8, 1.0]) == pytest.approx(0.8 * 3.0)
    assert tracker.add([0.7, 2.0]) == pytest.approx(2.4)  # dominated
    assert tracker.add([0.8, 1.0]) == pytest.approx(2.4)  # repeated
    assert tracker.add([0.9, 3.0]) == pytest.approx(2.4 + 0.1 * 1.0)
    assert tracker.front_size == 2
    with pytest.raises(ValueError, match="finite"):
        tracker.add([np.nan, 1.0])


def test_history_follows_completion_order_and_skips_duplicates() -> None:
    import datetime as dt

    objectives = {"val_acc": "max", "energy_uj": "min"}
    t0 = dt.datetime(2026, 1, 1)

    def done(number: int, minute: int, acc: float, energy: float, state: str = COMPLETE) -> TrialRecord:
        return TrialRecord(number, state, {}, values={"val_acc": acc, "energy_uj": energy},
                           completed=t0 + dt.timedelta(minutes=minute))

    history = HypervolumeHistory(objectives)
    reference = {"val_acc": 0.0, "energy_uj": 10.0}
    records = [done(0, 5, 0.5, 5.0), done(1, 1, 0.9, 8.0)]
    assert history.update(records, reference) == pytest.approx([0.9 * 2.0, 0.9 * 2.0 + 0.5 * 3.0])
    assert history.numbers == [1, 0]
    records.append(done(2, 9, 0.99, 1.0, state=DUPLICATE))
    records.append(done(3, 9, 0.6, 4.0))
    assert history.update(records, reference)[-1] == pytest.approx(hypervolume(
        np.array([[0.9, 8.0], [0.5, 5.0], [0.6, 4.0]]), ["max", "min"], [0.0, 10.0]))
    assert history.numbers == [1, 0, 3]


def test_normalised_hypervolume() -> None:
    objectives = {"val_acc": "max", "energy_uj": "min"}
    reference = {"val_acc": 0.0, "energy_uj": 50.0}
    # A single model at accuracy 0.9 and 5 uJ covers 0.9 * 45 of a 1 * 50 box.
    volume = hypervolume(np.array([[0.9, 5.0]]), ["max", "min"], [0.0, 50.0])
    assert normalised_hypervolume(volume, objectives, reference) == pytest.approx(0.9 * 0.9)
    assert normalised_hypervolume(1.0, {"val_acc": "max", "custom": "min"}, {"val_acc": 0, "custom": 1}) is None


def test_epsilon_net_order() -> None:
    # One front of three: start at the best first objective (2, 4), then the farthest, (4, 2),
    # then (3, 3). A dominated point comes last.
    pts = np.array([[3.0, 3.0], [2.0, 4.0], [4.0, 2.0], [5.0, 5.0]])
    assert epsilon_net_order(pts, ["min", "min"]).tolist() == [1, 2, 0, 3]
    # Scaled distances: the second objective's large numbers do not decide alone.
    pts = np.array([[0.0, 100.0], [0.5, 60.0], [0.9, 50.0], [1.0, 0.0]])
    assert epsilon_net_order(pts, ["min", "min"]).tolist() == [0, 3, 1, 2]


def test_knee_index() -> None:
    # acc max, energy min; (0.85, 1.0) bulges toward the ideal corner.
    pts = np.array([[0.5, 0.2], [0.85, 1.0], [0.9, 3.0], [0.95, 10.0], [0.6, 5.0]])
    assert knee_index(pts, ["max", "min"]) == 1


def test_default_reference() -> None:
    objectives = {"val_acc": "max", "energy_uj": "min"}
    pts = np.array([[0.9, 3.0], [0.5, 10.0]])
    assert default_reference(objectives, pts) == {"val_acc": 0.0, "energy_uj": pytest.approx(11.0)}
    assert default_reference(objectives, pts, given={"energy_uj": 50.0})["energy_uj"] == 50.0
    with pytest.raises(ValueError, match="energy_uj"):
        default_reference(objectives)


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="direction"):
        pareto_mask(np.zeros((2, 2)), ["max", "up"])
    with pytest.raises(ValueError, match="NaN"):
        hypervolume(np.array([[np.nan, 1.0]]), ["max", "min"], [0.0, 2.0])
    with pytest.raises(ValueError, match="reference"):
        hypervolume(np.array([[0.5, 1.0]]), ["max", "min"], [0.0])


def test_front_of_and_ranks_of_keep_only_complete_feasible() -> None:
    objectives = {"val_acc": "max", "energy_uj": "min"}
    records = [
        TrialRecord(0, COMPLETE, {}, values={"val_acc": 0.9, "energy_uj": 3.0}),
        TrialRecord(1, COMPLETE, {}, values={"val_acc": 0.8, "energy_uj": 1.0}),
        TrialRecord(2, COMPLETE, {}, values={"val_acc": 0.7, "energy_uj": 2.0}),
        # Would dominate everything, but it is infeasible / pruned / failed.
        TrialRecord(3, COMPLETE, {}, values={"val_acc": 0.99, "energy_uj": 0.1}, constraints=(1.0,)),
        TrialRecord(4, PRUNED, {}, user_attrs={"last_values": {"val_acc": 0.99, "energy_uj": 0.1}}),
        TrialRecord(5, FAIL, {}),
        TrialRecord(6, DUPLICATE, {}, values=None),
    ]
    assert [r.number for r in front_of(records, objectives)] == [0, 1]
    assert ranks_of(records, objectives) == {0: 0, 1: 0, 2: 1}
    assert front_of([], objectives) == []
