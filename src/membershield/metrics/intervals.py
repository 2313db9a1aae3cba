"""Binomial intervals: exact Clopper-Pearson limits for one rate, Newcombe's for a difference of two."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri
from scipy.stats import beta

from membershield.errors import InputDataError
from membershield.metrics._checks import _check_confidence


@dataclass(frozen=True)
class Interval:
    """A closed interval ``[low, high]``."""

    low: float
    high: float


def _cp_bounds(successes: np.ndarray, trials: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised two-sided Clopper-Pearson bounds; each one-sided tail has mass ``(1 - confidence) / 2``."""
    half_alpha = (1.0 - confidence) / 2.0
    return _one_sided_lower(successes, trials, half_alpha), _one_sided_upper(successes, trials, half_alpha)


def _one_sided_upper(successes: np.ndarray, trials: int, tail: float) -> np.ndarray:
    """Clopper-Pearson upper limits that each exceed their true rate with probability at most ``tail``."""
    x = np.asarray(successes, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        # beta(., 0) is degenerate: the limit is exactly 1 there.
        return np.where(x < trials, beta.ppf(1.0 - tail, x + 1, np.maximum(trials - x, 1)), 1.0)


def _one_sided_lower(successes: np.ndarray, trials: int, tail: float) -> np.ndarray:
    """Clopper-Pearson lower limits that each fall below their true rate with probability at most ``tail``."""
    x = np.asarray(successes, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        # beta(0, .) is degenerate: the limit is exactly 0 there.
        return np.where(x > 0, beta.ppf(tail, np.maximum(x, 1), trials - x + 1), 0.0)


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """Exact two-sided binomial interval for a rate ``successes / trials``.

    Clopper & Pearson (1934), "The use of confidence or fiducial limits illustrated in the case of the
    binomial", Biometrika 26(4). Built from beta quantiles, so it never undercovers; with no trials
    nothing is known and the interval is ``[0, 1]``.

    >>> clopper_pearson(5, 10)
    Interval(low=0.187..., high=0.812...)
    >>> round(clopper_pearson(0, 100).high, 4)  # none seen in 100: the rate may still be 3.6%
    0.0362
    """
    confidence = _check_confidence(confidence)
    if int(trials) != trials or int(successes) != successes:
        raise InputDataError(f"successes and trials must be whole numbers, got {successes} and {trials}")
    successes, trials = int(successes), int(trials)
    if trials < 0 or not 0 <= successes <= trials:
        raise InputDataError(f"need 0 <= successes <= trials, got successes={successes}, trials={trials}")
    if trials == 0:
        return Interval(0.0, 1.0)
    low, high = _cp_bounds(np.array([successes]), trials, confidence)
    return Interval(float(low[0]), float(high[0]))


def _wilson(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    z = float(ndtri(0.5 + confidence / 2.0))
    p = successes / trials
    denominator = 1 + z**2 / trials
    centre = (p + z**2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z**2 / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_difference_interval(
    successes_1: int, trials_1: int, successes_2: int, trials_2: int, confidence: float = 0.95
) -> Interval:
    """Interval for ``successes_1 / trials_1 - successes_2 / trials_2`` from two independent samples.

    Newcombe (1998), "Interval estimation for the difference between independent proportions: comparison
    of eleven methods", Statistics in Medicine 17(8), method 10: built from the two Wilson score
    intervals, so it stays sensible at rates of exactly 0 or 1.

    >>> interval = rate_difference_interval(30, 100, 10, 100)  # 30% against 10%
    >>> round(interval.low, 3), round(interval.high, 3)
    (0.09, 0.306)
    """
    confidence = _check_confidence(confidence)
    if trials_1 <= 0 or trials_2 <= 0:
        raise InputDataError(f"need trials in both samples, got {trials_1} and {trials_2}")
    p1, p2 = successes_1 / trials_1, successes_2 / trials_2
    l1, u1 = _wilson(successes_1, trials_1, confidence)
    l2, u2 = _wilson(successes_2, trials_2, confidence)
    return Interval(p1 - p2 - math.hypot(p1 - l1, u2 - p2), p1 - p2 + math.hypot(u1 - p1, p2 - l2))
