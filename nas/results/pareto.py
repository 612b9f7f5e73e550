"""Pareto maths for multi-objective search: non-dominated sorting, crowding, hypervolume, knee.

Every function takes ``points`` of shape ``(n, m)`` (one row per trial, one column per objective)
and ``directions``, a sequence of ``"max"`` / ``"min"`` per column. Internally everything is turned
into minimisation by negating the ``"max"`` columns, so "better" always means "smaller" below.

numpy only: this module is imported by tracking, the CLI and the dashboards, which must not pull
Ray or Optuna.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from nas.results.records import TrialRecord

_DIRECTIONS = ("max", "min")
# The best value each reported metric can take: the corner of the box, opposite the reference point,
# that normalises a hypervolume to 0..1.
IDEAL = {"val_acc": 1.0, "energy_uj": 0.0, "sops": 0.0, "macs": 0.0, "params": 0.0, "time_steps": 0.0,
         "firing_rate": 0.0, "epoch_seconds": 0.0, "train_loss": 0.0, "latency": 0.0, "model_size": 0.0}


def _check_directions(directions: Sequence[str], m: int) -> np.ndarray:
    """Return +1 for "min" columns and -1 for "max" columns (the factor that turns them into minimisation)."""
    if len(directions) != m:
        raise ValueError(f"directions has {len(directions)} entries but points have {m} columns")
    signs = []
    for d in directions:
        if d not in _DIRECTIONS:
            raise ValueError(f"direction {d!r} is not one of 'max', 'min'")
        signs.append(-1.0 if d == "max" else 1.0)
    return np.asarray(signs, dtype=float)


def _as_points(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    arr = np.asarray(points, dtype=float)
    if arr.ndim == 1 and arr.size == 0:
        return arr.reshape(0, 0)
    if arr.ndim != 2:
        raise ValueError(f"points must be a 2-D array (n, m), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("points contain NaN or infinite values")
    return arr


def _to_min(points: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    arr = _as_points(points)
    if arr.shape[0] == 0:
        return arr.reshape(0, len(directions))
    return arr * _check_directions(directions, arr.shape[1])


def _nondominated_min(pts: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of a minimisation problem (duplicates all kept)."""
    n, m = pts.shape
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    # Lexicographic sort: a point can only be dominated by points that come before it.
    order = np.lexsort(pts.T[::-1])
    if m == 2:
        # Sorted by x then y, a point is dominated exactly when an earlier point has a smaller y, or the
        # same y and a smaller x (an equal point does not dominate it).
        xs, ys = pts[order, 0], pts[order, 1]
        prev_min = np.minimum.accumulate(np.concatenate([[np.inf], ys[:-1]]))
        dominated = prev_min < ys
        tie = (prev_min == ys) & ~_same_as_first_with_that_y(xs, ys)
        mask[order] = ~(dominated | tie)
        return mask
    # One pass against the front found so far (O(n * |front|)), into a preallocated buffer.
    front = np.empty_like(pts)
    size = 0
    for i in order:
        p = pts[i]
        if size:
            kept = front[:size]
            if np.any(np.all(kept <= p, axis=1) & np.any(kept < p, axis=1)):
                continue
        mask[i] = True
        front[size] = p
        size += 1
    return mask


def _same_as_first_with_that_y(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """For points sorted by (x, y): whether each equals the first earlier point with the same y (a duplicate)."""
    out = np.zeros(xs.shape[0], dtype=bool)
    first: dict[float, float] = {}
    for i, (x, y) in enumerate(zip(xs.tolist(), ys.tolist(), strict=True)):
        if y in first:
            out[i] = first[y] == x
        else:
            first[y] = x
            out[i] = True
    return out


def pareto_mask(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of the points that no other point dominates (the first front).

    Identical points do not dominate each other, so duplicates of a front point are all on the front.
    """
    return _nondominated_min(_to_min(points, directions))


def non_dominated_ranks(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Non-dominated rank of every point: 0 for the front, 1 for the front once 0 is removed, and so on.

    Two objectives take one sweep in O(n log n) (``_ranks_2d``: a MOASHA rung of 20,000 points in
    milliseconds instead of a second); more objectives peel one front at a time.
    """
    pts = _to_min(points, directions)
    if pts.ndim == 2 and pts.shape[1] == 2:
        return _ranks_2d(pts)
    ranks = np.full(pts.shape[0], -1, dtype=int)
    remaining = np.arange(pts.shape[0])
    rank = 0
    while remaining.size:
        mask = _nondominated_min(pts[remaining])
        ranks[remaining[mask]] = rank
        remaining = remaining[~mask]
        rank += 1
    return ranks


def _ranks_2d(pts: np.ndarray) -> np.ndarray:
    """Non-dominated ranks of 2-D points to minimise, in one sweep.

    Points go by increasing first objective (then second). Each front keeps its latest member, the one
    with the smallest second objective so far; a point joins the first front whose latest member does
    not dominate it, and becomes that member. A member ``(x', y')`` met earlier (``x' <= x``) dominates
    ``(x, y)`` exactly when ``(y', x') < (y, x)``, and the fronts' latest members stay in that order, so
    the front is found by binary search on ``y'`` (ties on ``y'`` decided by ``x'``).
    """
    import bisect

    n = pts.shape[0]
    order = np.lexsort((pts[:, 1], pts[:, 0]))
    xs, ys = pts[order, 0].tolist(), pts[order, 1].tolist()
    front_y: list[float] = []
    front_x: list[float] = []
    sorted_ranks = [0] * n
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        k = bisect.bisect_left(front_y, y)
        while k < len(front_y) and front_y[k] == y and front_x[k] < x:
            k += 1
        if k == len(front_y):
            front_y.append(y)
            front_x.append(x)
        else:
            front_y[k], front_x[k] = y, x
        sorted_ranks[i] = k
    ranks = np.empty(n, dtype=int)
    ranks[order] = sorted_ranks
    return ranks


def crowding_by_rank(points: np.ndarray, ranks: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """``crowding_distance`` of every point within its own front (the points of equal rank), all fronts at once."""
    pts = _to_min(points, directions)
    n, m = pts.shape
    ranks = np.asarray(ranks)
    dist = np.zeros(n, dtype=float)
    if n == 0:
        return dist
    sizes = np.bincount(ranks)
    for j in range(m):
        order = np.lexsort((np.arange(n), pts[:, j], ranks))  # by front, then value (stable)
        col, front = pts[order, j], ranks[order]
        starts = np.flatnonzero(np.r_[True, front[1:] != front[:-1]])
        ends = np.r_[starts[1:], n] - 1
        span = np.repeat(col[ends] - col[starts], ends - starts + 1)
        gaps = np.zeros(n, dtype=float)
        inner = np.ones(n, dtype=bool)
        inner[starts] = inner[ends] = False
        inside = np.flatnonzero(inner)
        gaps[inside] = (col[inside + 1] - col[inside - 1]) / np.where(span[inside] > 0, span[inside], 1.0)
        gaps[starts] = gaps[ends] = np.inf
        gaps[span <= 0] = 0.0  # a constant objective in a front adds nothing, not even to its ends
        dist[order] += gaps
    dist /= m
    dist[sizes[ranks] <= 2] = np.inf  # fronts of one or two points
    return dist


def crowding_distance(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """NSGA-II crowding distance of every point within the given set (pass one front at a time).

    Per objective, the points are sorted (stably); the two extremes get ``inf`` and an inner point
    adds the gap between its neighbours divided by the objective's range; the sum is divided by the
    number of objectives. An objective whose values are all equal adds nothing, not even to the
    extremes, so being at the end of a constant objective earns no priority. Repeated points sit next
    to each other in every sort and share the gap around them. Sets of one or two points are all
    ``inf``. These are the rules of pymoo's NSGA-II crowding ("cd"), and Optuna's up to the division
    by the number of objectives; the tests check both.
    """
    pts = _to_min(points, directions)
    n, m = pts.shape
    if n <= 2:
        return np.full(n, np.inf)
    dist = np.zeros(n, dtype=float)
    for j in range(m):
        order = np.argsort(pts[:, j], kind="stable")
        col = pts[order, j]
        span = col[-1] - col[0]
        if span <= 0:
            continue
        gaps = np.empty(n, dtype=float)
        gaps[0] = gaps[-1] = np.inf
        gaps[1:-1] = (col[2:] - col[:-2]) / span
        dist[order] += gaps
    return dist / m


def epsilon_net_order(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Row indices from best to worst by non-dominated rank, then an epsilon-net within each front.

    The epsilon-net is MOASHA's alternative to crowding (Schmucker et al., 2021): within a front, start
    from the point best in the first objective, then repeatedly take the point farthest (Euclidean,
    smallest distance to any point taken so far) from those already taken, so the order covers the
    front evenly before it fills in. Distances use objectives scaled to [0, 1] over ``points`` (raw
    units would let the objective with the largest numbers decide alone). Ties go to the earlier row.
    """
    pts = _to_min(points, directions)
    n = pts.shape[0]
    if n == 0:
        return np.zeros(0, dtype=int)
    lo, span = pts.min(axis=0), np.ptp(pts, axis=0)
    scaled = np.where(span > 0, (pts - lo) / np.where(span > 0, span, 1.0), 0.0)
    ranks = non_dominated_ranks(points, directions)
    order: list[int] = []
    for rank in range(int(ranks.max()) + 1):
        members = list(np.flatnonzero(ranks == rank))
        # lexsort's last key is the primary one: objective 0, then the others, then the row index
        keys = [np.asarray(members)] + [pts[members, j] for j in range(pts.shape[1] - 1, -1, -1)]
        start = members[int(np.lexsort(keys)[0])]
        taken = [start]
        members.remove(start)
        nearest = np.linalg.norm(scaled[members] - scaled[start], axis=1) if members else np.zeros(0)
        while members:
            pick = int(np.argmax(nearest))  # argmax returns the first of equal values: the earlier row
            chosen = members.pop(pick)
            taken.append(chosen)
            nearest = np.delete(nearest, pick)
            if members:
                nearest = np.minimum(nearest, np.linalg.norm(scaled[members] - scaled[chosen], axis=1))
        order.extend(taken)
    return np.asarray(order, dtype=int)


def _hv2d(pts: np.ndarray, ref: np.ndarray) -> float:
    """Exact 2-D hypervolume of minimisation points that all strictly dominate ``ref``.

    Sorted by x, the covered height at each x is ``ref_y - (lowest y so far)``: a sum of strips.
    """
    order = np.argsort(pts[:, 0], kind="stable")
    xs = pts[order, 0]
    lowest = np.minimum.accumulate(pts[order, 1])
    widths = np.diff(np.append(xs, ref[0]))
    return float(np.sum(widths * (ref[1] - lowest)))


class _Staircase:
    """The 2-D front of minimisation points inside a reference box, and the area it dominates.

    Points are kept sorted by x (so y falls); inserting one finds its place by bisection and updates
    the area by what it adds, removing the points it dominates: O(log n + removed) comparisons.
    """

    def __init__(self, ref_x: float, ref_y: float) -> None:
        self.ref_x, self.ref_y = ref_x, ref_y
        self.xs: list[float] = []
        self.ys: list[float] = []
        self.area = 0.0

    def insert(self, x: float, y: float) -> None:
        """Add the point ``(x, y)`` (strictly inside the box)."""
        import bisect

        xs, ys = self.xs, self.ys
        i = bisect.bisect_right(xs, x)
        if i and ys[i - 1] <= y:
            return  # a point at the left (or the same x) is at least as low: dominated
        j = i
        while j < len(xs) and ys[j] >= y:
            j += 1  # points to the right that are no lower: dominated by the new one
        # Before, the lowest y over [x, next x) stepped through the left neighbour (possibly at this
        # very x) and the dominated points; now it is y all along: the area grows by each step's
        # height above y.
        lowest = ys[i - 1] if i else self.ref_y
        end = xs[j] if j < len(xs) else self.ref_x
        steps = [(x, lowest)] + [(xs[k], ys[k]) for k in range(i, j)]
        for k, (start, height) in enumerate(steps):
            stop = steps[k + 1][0] if k + 1 < len(steps) else end
            lowest = min(lowest, height)
            self.area += (stop - start) * (lowest - y)
        if i and xs[i - 1] == x:
            i -= 1  # the left neighbour at the same x is higher: dominated too
        xs[i:j] = [x]
        ys[i:j] = [y]


def _hv3d(pts: np.ndarray, ref: np.ndarray) -> float:
    """Exact 3-D hypervolume by a sweep along the last objective over an incremental 2-D front."""
    order = np.argsort(pts[:, 2], kind="stable")
    pts = pts[order]
    stairs = _Staircase(float(ref[0]), float(ref[1]))
    volume = 0.0
    for i in range(pts.shape[0]):
        stairs.insert(float(pts[i, 0]), float(pts[i, 1]))
        upper = pts[i + 1, 2] if i + 1 < pts.shape[0] else ref[2]
        volume += (upper - pts[i, 2]) * stairs.area
    return float(volume)


def _hv_recursive(pts: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume by slicing along the last objective (HSO-style), down to the 3-D sweep."""
    n, m = pts.shape
    if n == 0:
        return 0.0
    if m == 1:
        return float(ref[0] - pts[:, 0].min())
    if m == 2:
        return _hv2d(pts, ref)
    if m == 3:
        return _hv3d(pts, ref)
    pts = pts[_nondominated_min(pts)]
    order = np.argsort(pts[:, -1], kind="stable")
    pts = pts[order]
    volume = 0.0
    for i in range(pts.shape[0]):
        upper = pts[i + 1, -1] if i + 1 < pts.shape[0] else ref[-1]
        depth = upper - pts[i, -1]
        if depth <= 0:
            continue
        # Between this slice's bottom and the next point's last coordinate, the dominated region is
        # the (m-1)-D hypervolume of every point seen so far.
        volume += depth * _hv_recursive(pts[: i + 1, :-1], ref[:-1])
    return float(volume)


def hypervolume(points: np.ndarray, directions: Sequence[str], reference: Sequence[float]) -> float:
    """Exact hypervolume dominated by ``points`` and bounded by ``reference``.

    2 objectives: a sort-and-sweep (O(n log n)). 3 or more: exact slicing along the last objective
    down to the 2-D sweep (HSO), fine for the few hundred points of a search. Points that do not
    strictly dominate the reference in every objective contribute nothing. An empty set has volume 0.
    """
    pts = _to_min(points, directions)
    signs = _check_directions(directions, len(directions))
    ref = np.asarray(reference, dtype=float)
    if ref.shape != (len(directions),):
        raise ValueError(f"reference has {ref.size} values but there are {len(directions)} objectives")
    if not np.all(np.isfinite(ref)):
        raise ValueError("reference contains NaN or infinite values")
    ref = ref * signs
    if pts.shape[0] == 0:
        return 0.0
    pts = pts[np.all(pts < ref, axis=1)]
    return _hv_recursive(pts, ref)


class HypervolumeTracker:
    """Hypervolume of a growing set of points, updated by each new point's exclusive contribution.

    Adding ``q`` costs one hypervolume of at most |front| points (the front clipped to ``q``'s box):
    ``HV(front + q) = HV(front) + prod(r - q) - HV({max(q, p) : p in front})``, instead of recomputing
    the whole front. Points outside the reference box, or weakly dominated by the front, add nothing.
    """

    def __init__(self, directions: Sequence[str], reference: Sequence[float]) -> None:
        self._signs = _check_directions(directions, len(directions))
        ref = np.asarray(reference, dtype=float)
        if ref.shape != (len(directions),):
            raise ValueError(f"reference has {ref.size} values but there are {len(directions)} objectives")
        if not np.all(np.isfinite(ref)):
            raise ValueError("reference contains NaN or infinite values")
        self._ref = ref * self._signs
        self._front = np.empty((0, len(directions)))
        self.volume = 0.0

    @property
    def front_size(self) -> int:
        """Number of points on the current front (inside the reference box)."""
        return int(self._front.shape[0])

    def add(self, point: Sequence[float]) -> float:
        """Add one point (in the objectives' own directions); returns the new hypervolume."""
        q = np.asarray(point, dtype=float) * self._signs
        if q.shape != self._ref.shape or not np.all(np.isfinite(q)):
            raise ValueError(f"point {list(point)} does not have {self._ref.size} finite values")
        if not np.all(q < self._ref):
            return self.volume
        front = self._front
        if front.shape[0] and np.any(np.all(front <= q, axis=1)):
            return self.volume
        clipped = np.maximum(front, q)
        shared = _hv_recursive(clipped, self._ref) if front.shape[0] else 0.0
        self.volume += float(np.prod(self._ref - q)) - shared
        self._front = np.vstack([front[~np.all(q <= front, axis=1)], q])
        return self.volume


def hypervolume_history(
    points_in_completion_order: np.ndarray, directions: Sequence[str], reference: Sequence[float]
) -> list[float]:
    """Hypervolume of the first 1, 2, ..., n points: one value per completed trial, for progress plots."""
    pts = _as_points(points_in_completion_order)
    if pts.shape[0] == 0:
        return []
    _check_directions(directions, pts.shape[1])
    tracker = HypervolumeTracker(directions, reference)
    return [tracker.add(p) for p in pts]


def normalised_hypervolume(volume: float, objectives: Mapping[str, str],
                           reference: Mapping[str, float]) -> float | None:
    """``volume`` as a fraction of the box between the ideal point (:data:`IDEAL`) and the reference.

    1 would be a model at the ideal (accuracy 1 at zero energy); 0 a front that adds nothing inside the
    box. ``None`` when an objective has no known ideal value or the box is empty.
    """
    box = 1.0
    for metric in objectives:
        if metric not in IDEAL or metric not in reference:
            return None
        box *= abs(float(reference[metric]) - IDEAL[metric])
    return float(volume) / box if box > 0 and math.isfinite(box) else None


class HypervolumeHistory:
    """The hypervolume after each complete, feasible trial of a search, in completion order.

    Kept up to date incrementally: :meth:`update` adds only the trials completed since the last call
    (a :class:`HypervolumeTracker` step each), and starts over only when the reference changes or a
    trial turns up before ones already counted (a resumed study).
    """

    def __init__(self, objectives: Mapping[str, str]) -> None:
        self.objectives = dict(objectives)
        self._reference: list[float] | None = None
        self._tracker: HypervolumeTracker | None = None
        self.numbers: list[int] = []
        self.values: list[float] = []

    def update(self, records: Sequence[TrialRecord], reference: Mapping[str, float]) -> list[float]:
        """Bring the history up to date with ``records`` (every trial of the study); returns the values."""
        from nas.results.records import completion_order

        names = list(self.objectives)
        ref = [float(reference[n]) for n in names]
        kept, _ = _complete_feasible(records, self.objectives)
        ordered = completion_order(kept)
        known = len(self.numbers)
        if ref != self._reference or [r.number for r in ordered[:known]] != self.numbers:
            self._reference = ref
            self._tracker = HypervolumeTracker(list(self.objectives.values()), ref)
            self.numbers, self.values = [], []
        for record in ordered[len(self.numbers):]:
            self.values.append(self._tracker.add([float(record.values[n]) for n in names]))
            self.numbers.append(record.number)
        return list(self.values)

    @property
    def latest(self) -> float | None:
        """The hypervolume now (``None`` before the first complete trial)."""
        return self.values[-1] if self.values else None


def knee_index(points: np.ndarray, directions: Sequence[str]) -> int:
    """Index (into ``points``) of the knee of the front.

    Definition: take the non-dominated points, normalise each objective to [0, 1] over them with 0
    the best value, and pick the point with the smallest sum of normalised objectives. With two
    objectives this is the point farthest from the line joining the two extremes (that line is
    ``f1 + f2 = 1`` after normalisation), on the side of the ideal point; with more objectives it is
    the point farthest from the hyperplane ``sum f = 1`` through the unit extremes. An objective that
    is constant over the front is ignored. Ties go to the lowest index.
    """
    pts = _to_min(points, directions)
    if pts.shape[0] == 0:
        raise ValueError("knee_index needs at least one point")
    idx = np.flatnonzero(_nondominated_min(pts))
    front = pts[idx]
    lo = front.min(axis=0)
    span = front.max(axis=0) - lo
    span_safe = np.where(span > 0, span, 1.0)
    norm = np.where(span > 0, (front - lo) / span_safe, 0.0)
    return int(idx[int(np.argmin(norm.sum(axis=1)))])


def default_reference(
    objectives: Mapping[str, str],
    points: np.ndarray | None = None,
    *,
    given: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """The fixed hypervolume reference point of a study, one value per objective.

    Rules, per objective, in order:

    - a value in ``given`` wins (a user who knows the worst acceptable energy can state it);
    - ``"max"`` objectives (``val_acc`` on a 0..1 scale and similar non-negative scores): 0.0; if the
      observed worst value is negative, 1.1 x that value (further from the front);
    - ``"min"`` objectives (``energy_uj``, ``sops``, ``params``): 1.1 x the worst (largest) value in
      ``points``, which should be the first completed trials; if that worst is 0 or negative, worst + 1.0
      or worst x 0.9 so the reference stays strictly worse than every seen point.

    The controller computes this once, stores it in the study's user attrs and reuses it, so the
    hypervolume of a study is comparable over its whole life. ``points`` columns follow
    ``objectives``' order.
    """
    names = list(objectives)
    if not names:
        raise ValueError("objectives is empty")
    for name, d in objectives.items():
        if d not in _DIRECTIONS:
            raise ValueError(f"objective {name!r} has direction {d!r}, expected 'max' or 'min'")
    given = dict(given or {})
    unknown = set(given) - set(names)
    if unknown:
        raise ValueError(f"reference given for unknown objective(s) {sorted(unknown)}")
    pts = None
    if points is not None:
        pts = _as_points(points)
        if pts.shape[0] and pts.shape[1] != len(names):
            raise ValueError(f"points have {pts.shape[1]} columns but there are {len(names)} objectives")
        if pts.shape[0] == 0:
            pts = None
    ref: dict[str, float] = {}
    for j, name in enumerate(names):
        if name in given:
            value = float(given[name])
            if not math.isfinite(value):
                raise ValueError(f"reference for {name!r} is not finite: {value}")
            ref[name] = value
        elif objectives[name] == "max":
            worst = float(pts[:, j].min()) if pts is not None else 0.0
            ref[name] = 0.0 if worst >= 0 else 1.1 * worst
        else:
            if pts is None:
                raise ValueError(f"objective {name!r} is minimised: default_reference needs points or a given value")
            worst = float(pts[:, j].max())
            if worst > 0:
                ref[name] = 1.1 * worst
            elif worst == 0:
                ref[name] = 1.0
            else:
                ref[name] = 0.9 * worst
    return ref


def _complete_feasible(records: Sequence[TrialRecord], objectives: Mapping[str, str]) -> tuple[list, np.ndarray]:
    from nas.results.records import COMPLETE

    names = list(objectives)
    kept = [
        r
        for r in records
        if r.state == COMPLETE and r.feasible and r.values is not None and all(n in r.values for n in names)
    ]
    pts = np.asarray([[float(r.values[n]) for n in names] for r in kept], dtype=float).reshape(len(kept), len(names))
    return kept, pts


def front_of(records: Sequence[TrialRecord], objectives: Mapping[str, str]) -> list[TrialRecord]:
    """The Pareto-optimal records among the COMPLETE and feasible ones (ordered by trial number).

    PRUNED and FAIL trials never enter: their values are low-fidelity or missing.
    """
    kept, pts = _complete_feasible(records, objectives)
    if not kept:
        return []
    mask = pareto_mask(pts, list(objectives.values()))
    return sorted((r for r, on in zip(kept, mask, strict=True) if on), key=lambda r: r.number)


def ranks_of(records: Sequence[TrialRecord], objectives: Mapping[str, str]) -> dict[int, int]:
    """Trial number -> non-dominated rank (0 = front), for COMPLETE and feasible records only."""
    kept, pts = _complete_feasible(records, objectives)
    if not kept:
        return {}
    ranks = non_dominated_ranks(pts, list(objectives.values()))
    return {r.number: int(k) for r, k in zip(kept, ranks, strict=True)}
