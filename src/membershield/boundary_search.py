"""Distance from each record to the target's decision boundary, found from labels alone: a decision-based
search in the manner of HopSkipJump (Chen, Jordan, Wainwright, "HopSkipJumpAttack: A Query-Efficient
Decision-Based Attack", IEEE S&P 2020), run for every record at once.

Each record starts from a point the target labels otherwise (the nearest other record it predicts
differently, else large random noise), bisects the segment to the boundary, then repeats: estimate the
boundary's normal from the signs of probes around the boundary point, step along it, and bisect back
towards the record. Every stage sends one batch holding the probes of all records still searching, so
the number of round trips to the target grows with the budget per record, not with the number of records.

Points live in a standardised space (each perturbed feature divided by its spread), so distances are
comparable across features; the caller maps points back to records (:mod:`membershield.queries`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

# (m, d) points and the (m,) record each belongs to -> (m,) bool: labelled otherwise than that record.
Oracle = Callable[[np.ndarray, np.ndarray], np.ndarray]

START_CANDIDATES = 3  # nearest differently-predicted records tried as starting points
NOISE_SCALES = (4.0, 16.0)  # then Gaussian noise of these standard deviations (standardised units)
FIRST_PROBES = 12  # sign probes of the first gradient estimate; HopSkipJump grows it as sqrt(round)
HALVINGS = 3  # step-size halvings tried before a round gives up on a record
NEAREST_CELLS = 4_000_000  # pairwise distances held at once (32 MB): rows per block = this / candidates
MAX_START_ROWS = 4096  # rows (at random) that can be another row's start: bounds the pairwise cost on big tables


@dataclass
class _Search:
    """The records, the target's oracle, and the queries each record has spent."""

    points: np.ndarray  # (n, d)
    oracle: Oracle
    budget: int
    low: np.ndarray  # (d,) box the probes are clipped to
    high: np.ndarray

    def __post_init__(self) -> None:
        self.used = np.zeros(len(self.points), dtype=np.int64)

    def ask(self, probes: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:  # no record left at this stage: nothing to send (a model may refuse an empty batch)
            return np.zeros(0, dtype=bool)
        np.add.at(self.used, rows, 1)
        return np.asarray(self.oracle(np.clip(probes, self.low, self.high), rows), dtype=bool)

    def clip(self, probes: np.ndarray) -> np.ndarray:
        return np.clip(probes, self.low, self.high)


def nearest_others(
    points: np.ndarray, predicted: np.ndarray, labels: np.ndarray, k: int, candidates: np.ndarray | None = None
) -> np.ndarray:
    """For each row, the ``k`` nearest rows (Euclidean) among ``candidates`` (default: all) whose predicted
    label is not that row's label, nearest first; -1 where there are fewer.

    >>> points = np.array([[0.0], [1.0], [5.0], [6.0]])
    >>> nearest_others(points, np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), 2).tolist()
    [[2, 3], [2, 3], [1, 0], [1, 0]]
    """
    n = len(points)
    pool = np.arange(n) if candidates is None else np.asarray(candidates, dtype=np.int64)
    out = np.full((n, k), -1, dtype=np.int64)
    squared = np.einsum("ij,ij->i", points, points)
    chunk = max(1, NEAREST_CELLS // max(len(pool), 1))
    for begin in range(0, n, chunk):
        block = slice(begin, min(begin + chunk, n))
        distance = squared[block, None] - 2.0 * points[block] @ points[pool].T + squared[None, pool]
        distance[predicted[None, pool] == labels[block, None]] = np.inf
        order = np.argsort(distance, axis=1, kind="stable")[:, :k]
        finite = np.isfinite(np.take_along_axis(distance, order, axis=1))
        out[block] = np.where(finite, pool[order], -1)
    return out


def _bisect(search: _Search, rows: np.ndarray, far: np.ndarray, steps: int) -> np.ndarray:
    """Points on each segment record -> ``far`` (labelled otherwise) within 2^-steps of the boundary, on
    the far side, so that every point returned is labelled otherwise."""
    near = search.points[rows]
    low, high = np.zeros(len(rows)), np.ones(len(rows))
    for _ in range(steps):
        middle = (low + high) / 2
        other = search.ask(near + middle[:, None] * (far - near), rows)
        high = np.where(other, middle, high)
        low = np.where(other, low, middle)
    return search.clip(near + high[:, None] * (far - near))


def _starts(search: _Search, neighbours: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A point labelled otherwise for each record (the rows found, and their points): the nearest
    differently-predicted records first, then noise. Records with other features than the perturbed
    ones can make a neighbour's point keep the record's label, so every start is checked."""
    n, d = search.points.shape
    start = np.full((n, d), np.nan)
    found = np.zeros(n, dtype=bool)
    candidates = [search.points[np.maximum(neighbours[:, t], 0)] for t in range(neighbours.shape[1])]
    available = [neighbours[:, t] >= 0 for t in range(neighbours.shape[1])]
    noise = [search.points + rng.normal(0.0, scale, (n, d)) for scale in NOISE_SCALES]
    for probe, usable in [*zip(candidates, available, strict=True), *((p, np.ones(n, bool)) for p in noise)]:
        rows = np.flatnonzero(~found & usable & (search.used < search.budget))
        if rows.size == 0:
            continue
        other = search.ask(probe[rows], rows)
        start[rows[other]] = search.clip(probe[rows[other]])
        found[rows[other]] = True
    rows = np.flatnonzero(found)
    return rows, start[rows]


def _direction(
    search: _Search, rows: np.ndarray, boundary: np.ndarray, delta: np.ndarray, probes: int, rng: np.random.Generator
) -> np.ndarray:
    """Unit estimate of the boundary's normal at each boundary point, pointing to the other label: the
    sign-weighted mean of random unit probes, less the mean sign (HopSkipJump's baseline)."""
    m, d = boundary.shape
    units = rng.normal(size=(m, probes, d))
    units /= np.linalg.norm(units, axis=2, keepdims=True)
    points = boundary[:, None, :] + delta[:, None, None] * units
    signs = np.where(search.ask(points.reshape(-1, d), np.repeat(rows, probes)), 1.0, -1.0).reshape(m, probes)
    mean = signs.mean(axis=1, keepdims=True)
    weights = np.where(np.abs(mean) == 1.0, signs, signs - mean)
    direction = np.einsum("mp,mpd->md", weights, units)
    norm = np.linalg.norm(direction, axis=1, keepdims=True)
    return np.divide(direction, norm, out=np.zeros_like(direction), where=norm > 0)


def _step(
    search: _Search, rows: np.ndarray, boundary: np.ndarray, direction: np.ndarray, size: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Step from each boundary point along its direction, halving the step until the point is labelled
    otherwise; the rows (positions in ``rows``) that found one and their points."""
    moved = np.full_like(boundary, np.nan)
    done = np.zeros(len(rows), dtype=bool)
    for _ in range(HALVINGS + 1):
        todo = np.flatnonzero(~done)
        if todo.size == 0:
            break
        probe = search.clip(boundary[todo] + size[todo, None] * direction[todo])
        other = search.ask(probe, rows[todo])
        moved[todo[other]] = probe[other]
        done[todo[other]] = True
        size = size / 2
    kept = np.flatnonzero(done)
    return kept, moved[kept]


def _bisect_steps(dimensions: int) -> int:
    # HopSkipJump's L2 tolerance is 1/d of the distance (theta * sqrt(d), theta = d^-1.5): finer bisection
    # than that is lost in the gradient estimate's own noise.
    return max(6, math.ceil(math.log2(max(dimensions, 2))) + 1)


def boundary_distances(
    points: np.ndarray,
    oracle: Oracle,
    predicted: np.ndarray,
    labels: np.ndarray,
    *,
    budget: int,
    seed: int,
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
) -> np.ndarray:
    """Per row, the distance from ``points[row]`` to the nearest point found that ``oracle`` labels
    otherwise than ``labels[row]``, with at most ``budget`` oracle queries per row.

    ``predicted`` is the target's label of every row (already known): a row predicted otherwise than its
    label is 0 away and asks nothing, and the other rows start from the nearest rows predicted otherwise
    than their label. A row for which nothing labelled otherwise was found gets ``inf``. Probes are
    clipped to the box ``[low, high]`` when given.

    A linear boundary at x0 = 1, met at distances 1, 2 and 3:

    >>> points = np.array([[0.0, 0.0], [3.0, 0.0], [-2.0, 1.0]])
    >>> oracle = lambda probes, rows: (probes[:, 0] > 1.0) != (rows == 1)
    >>> found = boundary_distances(points, oracle, np.array([0, 1, 0]), np.array([0, 1, 0]), budget=60, seed=0)
    >>> np.round(found, 1).tolist()
    [1.0, 2.0, 3.0]
    """
    n, d = points.shape
    search = _Search(
        points,
        oracle,
        budget,
        np.full(d, -np.inf) if low is None else low,
        np.full(d, np.inf) if high is None else high,
    )
    distance = np.where(predicted != labels, 0.0, np.inf)
    search.used[predicted != labels] = budget  # nothing to search for
    rng = np.random.default_rng(seed)
    candidates = np.sort(rng.permutation(n)[:MAX_START_ROWS]) if n > MAX_START_ROWS else None
    rows, start = _starts(search, nearest_others(points, predicted, labels, START_CANDIDATES, candidates), rng)
    # a start is labelled otherwise, so its distance bounds the boundary's, also where no bisection fits
    distance[rows] = np.linalg.norm(start - points[rows], axis=1)
    steps = _bisect_steps(d)
    fits = search.used[rows] + steps + 3 <= budget
    rows, start = rows[fits], start[fits]
    boundary = _bisect(search, rows, start, steps + 3)
    distance[rows] = np.linalg.norm(boundary - points[rows], axis=1)
    _refine(search, rows, boundary, distance, steps, rng)
    return distance


def _refine(
    search: _Search, rows: np.ndarray, boundary: np.ndarray, distance: np.ndarray, steps: int, rng: np.random.Generator
) -> None:
    """HopSkipJump's rounds, while the records' budgets allow one: each brings ``distance`` (updated in
    place) to a boundary point nearer the record, where one is found."""
    d = search.points.shape[1]
    for round_ in range(1, search.budget + 1):
        probes = int(FIRST_PROBES * math.sqrt(round_))
        spare = search.budget - search.used[rows] - steps - HALVINGS - 1
        probes_left = int(spare.max(initial=0))
        if probes_left < 2:
            return
        probes = min(probes, probes_left)
        live = spare >= probes
        rows, boundary = rows[live], boundary[live]
        current = distance[rows]
        # Probe radius: HopSkipJump's dist/d is about the bisection's precision, so on the far side of the
        # boundary most probes come back one way; dist/sqrt(d) found nearer points on the same budget.
        delta = np.maximum(current / math.sqrt(d), 1e-12)
        direction = _direction(search, rows, boundary, delta, probes, rng)
        kept, moved = _step(search, rows, boundary, direction, current / math.sqrt(round_))
        closer = _bisect(search, rows[kept], moved, steps)
        found = np.linalg.norm(closer - search.points[rows[kept]], axis=1)
        better = found < current[kept]
        boundary[kept[better]] = closer[better]
        distance[rows[kept[better]]] = found[better]


class _Labeller(Protocol):
    def logits(self, features: pd.DataFrame) -> np.ndarray: ...


def frame_boundary_distances(
    target: _Labeller, features: pd.DataFrame, labels: np.ndarray, *, max_queries: int, seed: int
) -> np.ndarray:
    """:func:`boundary_distances` of every row of ``features`` to the target's boundary, with at most
    ``max_queries`` records sent to the target per row (the first: the row itself).

    Numeric columns that vary are perturbed, in units of their standard deviation over all rows and
    within the range they take there (a point outside it is no record the target would meet); other
    columns keep each record's own values. The distance is the L2 norm in those units.

    >>> from types import SimpleNamespace
    >>> frame = pd.DataFrame({"x": [0.0, 2.0, 4.0, 6.0], "kind": ["a", "b", "a", "b"], "same": 1.0})
    >>> above = SimpleNamespace(logits=lambda f: np.c_[3.0 - f["x"], f["x"] - 3.0])  # label 1 beyond x = 3
    >>> found = frame_boundary_distances(above, frame, np.array([0, 0, 1, 1]), max_queries=30, seed=0)
    >>> np.round(found * frame["x"].std(ddof=0), 1).tolist()  # back in units of x
    [3.0, 1.0, 1.0, 3.0]
    """
    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    values = features[numeric].to_numpy(dtype=np.float64)
    centre, spread = values.mean(axis=0), values.std(axis=0)
    moving = spread > 0
    columns = [c for c, m in zip(numeric, moving, strict=True) if m]
    centre, spread = centre[moving], spread[moving]
    points = (values[:, moving] - centre) / spread
    base = features.copy()
    base[columns] = base[columns].astype(np.float64)  # perturbed values are not whole numbers

    def oracle(probes: np.ndarray, rows: np.ndarray) -> np.ndarray:
        asked = base.iloc[rows].reset_index(drop=True)
        asked[columns] = centre + probes * spread
        return np.argmax(target.logits(asked), axis=1) != labels[rows]

    predicted = np.argmax(target.logits(features), axis=1)
    return boundary_distances(
        points,
        oracle,
        predicted,
        labels,
        budget=max_queries - 1,
        seed=seed,
        low=points.min(axis=0),
        high=points.max(axis=0),
    )
