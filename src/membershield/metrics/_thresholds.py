"""Counting records over thresholds, and the stratified split that keeps choosing and measuring apart."""

from __future__ import annotations

import numpy as np


def _count_at_or_above(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return (sorted_values.size - np.searchsorted(sorted_values, thresholds, side="left")).astype(np.int64)


def _stratified_halves(m: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    first, second = [], []
    for group in (np.flatnonzero(m), np.flatnonzero(~m)):
        shuffled = rng.permutation(group)
        half = shuffled.size // 2
        first.append(shuffled[:half])
        second.append(shuffled[half:])
    return np.concatenate(first), np.concatenate(second)


def _candidate_thresholds(s: np.ndarray) -> np.ndarray:
    # Midpoints between adjacent distinct scores: every split of the selection half is represented, and
    # the cut sits away from the selection half's own scores, which generalises better to the other half.
    distinct = np.unique(s)
    return distinct[:-1] / 2.0 + distinct[1:] / 2.0
