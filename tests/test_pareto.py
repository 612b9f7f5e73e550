"""Pareto maths against hand-computed values and an independent brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nas.search.pareto import (
    crowding_distance,
    default_reference,
    front_of,
    hypervolume,
    hypervolume_history,
    knee_index,
    non_dominated_ranks,
    pareto_mask,
    ranks_of,
)
from nas.search.records import COMPLETE, FAIL, PRUNED, TrialRecord


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
    # Inner points: (3-0)/4 + (4-1)/4 = 1.5 for both here.
    assert cd[1] == pytest.approx(1.5) and cd[2] == pytest.approx(1.5)
    assert np.all(np.isinf(crowding_distance(pts[:2], ["min", "min"])))


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
    ]
    assert [r.number for r in front_of(records, objectives)] == [0, 1]
    assert ranks_of(records, objectives) == {0: 0, 1: 0, 2: 1}
    assert front_of([], objectives) == []
