"""Mixed-type records as points in one space, and the distances between them.

Every distance-based attack (DCR, NNDR, DOMIAS, the shadow generators' features) reads records through
one :class:`TableEncoder`, fitted on the real records only (members, non-members and population alike,
so neither side is favoured):

- a numeric column becomes its value minus the real records' median, divided by their standard deviation,
  a missing value becomes the median (0) and sets a missing-indicator column (1), so a missing value is one
  standard deviation from any present one;
- a categorical column becomes one-hot columns scaled by 1/√2, missing being a category of its own, so two
  records that differ in it are at distance 1 on it, as two records one standard deviation apart are. A
  category the real records never had is all zeros (distance √½ from every known one).

Distances are Euclidean in that space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import logsumexp

MISSING = "\x00missing"  # the category of a missing categorical value: no text read from a file equals it
BLOCK = 2**24  # entries of one block of a distance matrix (128 MiB of float64), whatever the table sizes
ONE_HOT_WEIGHT = 1.0 / np.sqrt(2.0)


def category(value: object) -> str:
    """A categorical value as a category: its text, or :data:`MISSING`.

    >>> category("a"), category(None) == MISSING, category(float("nan")) == MISSING
    ('a', True, True)
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return MISSING
    return str(value)


@dataclass(frozen=True)
class TableEncoder:
    """How each column of a table maps to numbers (see the module docstring)."""

    numeric: tuple[str, ...]
    centres: tuple[float, ...]
    scales: tuple[float, ...]
    categorical: tuple[str, ...]
    categories: tuple[tuple[str, ...], ...]

    @classmethod
    def fit(cls, real: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> TableEncoder:
        """The encoder of ``real`` records (numeric columns as float, categorical as text or None).

        >>> real = pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["a", None, "b"]})
        >>> enc = TableEncoder.fit(real, ["x"], ["c"])
        >>> enc.categories
        (('\\x00missing', 'a', 'b'),)
        """
        centres, scales = [], []
        for name in numeric:
            values = real[name].to_numpy(dtype=np.float64)
            present = values[np.isfinite(values)]
            centres.append(float(np.median(present)) if present.size else 0.0)
            spread = float(np.std(present)) if present.size > 1 else 0.0
            scales.append(spread if spread > 0 else 1.0)
        categories = []
        for name in categorical:
            seen = {category(v) for v in real[name]}
            categories.append(tuple(sorted(seen)))
        return cls(tuple(numeric), tuple(centres), tuple(scales), tuple(categorical), tuple(categories))

    @property
    def width(self) -> int:
        return 2 * len(self.numeric) + sum(len(c) for c in self.categories)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """``(n, width)`` float64 points of ``frame``'s records.

        >>> real = pd.DataFrame({"x": [1.0, 3.0], "c": ["a", "b"]})
        >>> enc = TableEncoder.fit(real, ["x"], ["c"])
        >>> points = enc.transform(pd.DataFrame({"x": [3.0, None], "c": ["a", "b"]}))
        >>> round(float(np.linalg.norm(points[0] - points[1])), 4)  # 1 sd, missing, other category
        1.7321
        """
        blocks = []
        for name, centre, scale in zip(self.numeric, self.centres, self.scales, strict=True):
            values = frame[name].to_numpy(dtype=np.float64)
            missing = ~np.isfinite(values)
            blocks.append(np.where(missing, 0.0, (values - centre) / scale))
            blocks.append(missing.astype(np.float64))
        for name, known in zip(self.categorical, self.categories, strict=True):
            index = {c: i for i, c in enumerate(known)}
            codes = np.array([index.get(category(v), -1) for v in frame[name]], dtype=np.int64)
            one_hot = np.zeros((len(frame), len(known)))
            rows = np.flatnonzero(codes >= 0)
            one_hot[rows, codes[rows]] = ONE_HOT_WEIGHT
            blocks.append(one_hot)
        if not blocks:
            return np.zeros((len(frame), 0))
        return np.column_stack(blocks)


def _rows_per_block(n_points: int) -> int:
    return max(1, BLOCK // max(n_points, 1))


def _squared_distances(queries: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(len(queries), len(points))`` squared Euclidean distances, never negative."""
    cross = queries @ points.T
    squared = (queries**2).sum(axis=1)[:, None] + (points**2).sum(axis=1)[None, :] - 2.0 * cross
    return np.maximum(squared, 0.0)


def nearest_distances(queries: np.ndarray, points: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """``(len(queries), k)``: each query's distances to its ``k`` nearest ``points``, nearest first.

    ``exclude[i]`` (an index into ``points``, or -1) is left out for query ``i``: a record is not its own
    neighbour. Where fewer than ``k`` points remain, the missing distances are ``inf``.

    >>> pts = np.array([[0.0], [1.0], [3.0]])
    >>> nearest_distances(np.array([[0.9]]), pts, 2).round(2).tolist()
    [[0.1, 0.9]]
    >>> nearest_distances(pts, pts, 1, exclude=np.arange(3)).tolist()
    [[1.0], [1.0], [2.0]]
    """
    out = np.full((len(queries), k), np.inf)
    if len(points) == 0:
        return out
    step = _rows_per_block(len(points))
    for start in range(0, len(queries), step):
        stop = min(start + step, len(queries))
        block = _squared_distances(queries[start:stop], points)
        if exclude is not None:
            rows = np.flatnonzero(exclude[start:stop] >= 0)
            block[rows, exclude[start:stop][rows]] = np.inf
        take = min(k, len(points))
        part = np.partition(block, take - 1, axis=1)[:, :take] if take < len(points) else block
        out[start:stop, :take] = np.sqrt(np.sort(part, axis=1)[:, :take])
    return out


def kde_log_density(
    queries: np.ndarray, points: np.ndarray, bandwidth: float, exclude: np.ndarray | None = None
) -> np.ndarray:
    """Log density at each query of an isotropic Gaussian kernel density estimate on ``points``.

    ``exclude`` as in :func:`nearest_distances` (a leave-one-out estimate for queries that are points).

    >>> pts = np.array([[0.0], [0.0]])
    >>> round(float(kde_log_density(np.array([[0.0]]), pts, 1.0)[0]), 4)  # the N(0, 1) density at 0
    -0.9189
    """
    d = points.shape[1]
    log_norm = -0.5 * d * np.log(2.0 * np.pi * bandwidth**2)
    out = np.empty(len(queries))
    step = _rows_per_block(len(points))
    for start in range(0, len(queries), step):
        stop = min(start + step, len(queries))
        block = -_squared_distances(queries[start:stop], points) / (2.0 * bandwidth**2)
        counts = np.full(stop - start, float(len(points)))
        if exclude is not None:
            rows = np.flatnonzero(exclude[start:stop] >= 0)
            block[rows, exclude[start:stop][rows]] = -np.inf
            counts[rows] -= 1.0
        out[start:stop] = logsumexp(block, axis=1) - np.log(np.maximum(counts, 1.0)) + log_norm
    return out


BANDWIDTHS = tuple(float(b) for b in np.geomspace(0.02, 4.0, 16))
SELECTION_ROWS = 2000  # the leave-one-out choice of a bandwidth reads at most this many points


def select_bandwidth(points: np.ndarray, seed: int = 0) -> float:
    """The bandwidth among :data:`BANDWIDTHS` with the highest leave-one-out log-likelihood on ``points``
    (at most :data:`SELECTION_ROWS` of them, drawn with ``seed``).

    >>> rng = np.random.default_rng(0)
    >>> wide, narrow = select_bandwidth(rng.normal(size=(400, 1))), select_bandwidth(0.01 * rng.normal(size=(400, 1)))
    >>> narrow < wide
    True
    """
    if len(points) < 2:
        return 1.0
    if len(points) > SELECTION_ROWS:
        points = points[np.random.default_rng(seed).choice(len(points), SELECTION_ROWS, replace=False)]
    self_index = np.arange(len(points))
    scores = [float(np.mean(kde_log_density(points, points, h, exclude=self_index))) for h in BANDWIDTHS]
    return BANDWIDTHS[int(np.argmax(scores))]
