"""The TPR at a fixed FPR, with an interval that accounts for the threshold being chosen on the same
records, and the sample sizes that make it measurable."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from membershield.errors import ConfigError
from membershield.metrics._checks import _check_confidence, _check_rate
from membershield.metrics.intervals import _one_sided_lower, _one_sided_upper
from membershield.metrics.roc import RocCurve, roc


@dataclass(frozen=True)
class TprAtFpr:
    """TPR at the best threshold whose FPR does not exceed ``fpr``, with its counts and interval.

    ``tpr``, ``tp``, ``fp`` and ``achieved_fpr`` describe the threshold chosen on these records (the
    point estimate). ``[ci_low, ci_high]`` covers the true TPR at a true FPR of ``fpr`` (see
    :func:`tpr_at_fpr`), which accounts for the threshold having been chosen on the same non-members.
    ``measurable`` is False when there are fewer than :func:`nonmembers_needed` non-members: then not
    even flagging a single record can be shown to keep the FPR that low, and every value but the counts
    of records is None.
    """

    fpr: float
    tpr: float | None
    ci_low: float | None
    ci_high: float | None
    achieved_fpr: float | None
    tp: int | None
    fp: int | None
    n_members: int
    n_nonmembers: int
    measurable: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (plain Python numbers, ``None`` for unmeasurable values)."""
        return {
            "fpr": self.fpr,
            "tpr": self.tpr,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "achieved_fpr": self.achieved_fpr,
            "tp": self.tp,
            "fp": self.fp,
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
            "measurable": self.measurable,
        }


def _unmeasurable(fpr: float, n_members: int, n_nonmembers: int) -> TprAtFpr:
    return TprAtFpr(
        fpr=fpr,
        tpr=None,
        ci_low=None,
        ci_high=None,
        achieved_fpr=None,
        tp=None,
        fp=None,
        n_members=n_members,
        n_nonmembers=n_nonmembers,
        measurable=False,
    )


def _tpr_tail(confidence: float) -> float:
    # Each side of the interval can fail in two ways (the threshold's FPR or its TPR): a quarter each.
    return (1.0 - confidence) / 4.0


def nonmembers_needed(fpr: float, confidence: float = 0.95) -> int:
    """The fewest non-members with which a TPR at ``fpr`` is measurable by :func:`tpr_at_fpr`.

    With ``n`` non-members and none flagged, the FPR is only known to be below ``1 - tail ** (1 / n)``
    (``tail = (1 - confidence) / 4``); a TPR "at FPR ``fpr``" needs that limit to be at most ``fpr``:
    about ``4.4 / fpr`` at 95% (4,380 for 0.1%, 436 for 1%, 42 for 10%).

    >>> nonmembers_needed(0.01), nonmembers_needed(0.001)
    (437, 4380)
    """
    fpr = _check_rate("fpr", fpr)
    confidence = _check_confidence(confidence)
    if fpr <= 0.0:
        raise ConfigError("fpr must be above 0 for a TPR at it to be measurable")
    tail = _tpr_tail(confidence)
    estimate = math.log(tail) / math.log1p(-fpr) if fpr < 1.0 else 1.0
    if not estimate < 1e15:
        raise ConfigError(f"fpr {fpr:g} is too small to measure with any realistic number of non-members")
    n = max(1, math.ceil(estimate))
    # The closed form can be off by one in floating point; settle it on the rule itself.
    while not _enough_nonmembers(n, fpr, tail):
        n += 1
    while n > 1 and _enough_nonmembers(n - 1, fpr, tail):
        n -= 1
    return n


def smallest_resolvable_tpr(n_members: int, confidence: float = 0.95) -> float:
    """The TPR below which ``n_members`` members cannot tell a rate from 0: the upper end of the
    interval of a TPR with no member flagged (the interval :func:`tpr_at_fpr` reports has the same tail).

    >>> round(smallest_resolvable_tpr(10), 3)
    0.355
    >>> round(smallest_resolvable_tpr(1000), 4)
    0.0044
    """
    if n_members < 1:
        raise ConfigError(f"n_members must be 1 or more, got {n_members}")
    tail = _tpr_tail(_check_confidence(confidence))
    return float(-math.expm1(math.log(tail) / n_members))


def _enough_nonmembers(n: int, fpr: float, tail: float) -> bool:
    """Whether ``n`` non-members, none flagged, show the FPR to be at most ``fpr``: ``1 - tail ** (1 / n)``."""
    return -math.expm1(math.log(tail) / n) <= fpr


def unresolved_fprs(fprs: Sequence[float], n_nonmembers: int, confidence: float = 0.95) -> list[float]:
    """The FPRs in ``fprs`` at which ``n_nonmembers`` non-members leave a TPR not measurable.

    >>> unresolved_fprs([0.1, 0.01, 0.001], n_nonmembers=1000)
    [0.001]
    """
    tail = _tpr_tail(_check_confidence(confidence))
    return [f for f in fprs if f <= 0.0 or not _enough_nonmembers(max(n_nonmembers, 1), f, tail)]


def _tpr_at_fpr_from_roc(curve: RocCurve, fpr: float, confidence: float) -> TprAtFpr:
    n_pos, n_neg = curve.n_members, curve.n_nonmembers
    if fpr <= 0.0 or not _enough_nonmembers(n_neg, fpr, _tpr_tail(confidence)):
        return _unmeasurable(fpr, n_pos, n_neg)
    # Compare fp / n against fpr (both correctly rounded) rather than fpr * n against an integer: a
    # requested 0.29 with 100 non-members must admit 29 false positives, and 0.29 * 100 < 29 in floats.
    admissible = curve.fp / n_neg <= fpr
    # tp and fp are non-decreasing along the curve, so the last admissible point has the highest TPR;
    # the first point with that TP count reaches it at the lowest FPR.
    last = int(np.flatnonzero(admissible)[-1])
    best = int(np.flatnonzero(curve.tp == curve.tp[last])[0])
    tp, fp = int(curve.tp[best]), int(curve.fp[best])
    # The interval brackets the threshold whose true FPR is exactly ``fpr`` between two thresholds that
    # the non-members certify: one whose FPR is surely at most ``fpr`` (its TPR's lower limit is a lower
    # limit for the TPR at ``fpr``, the ROC curve being non-decreasing) and one whose FPR is surely at
    # least ``fpr`` (its upper limit, an upper limit).
    tail = _tpr_tail(confidence)
    surely_below = _one_sided_upper(curve.fp, n_neg, tail) <= fpr  # holds at fp = 0, as n_neg is enough
    conservative = int(np.flatnonzero(surely_below)[-1])
    surely_above = np.flatnonzero(_one_sided_lower(curve.fp, n_neg, tail) >= fpr)
    liberal = int(surely_above[0]) if surely_above.size else len(curve.fp) - 1
    ci_low = float(_one_sided_lower(curve.tp[conservative : conservative + 1], n_pos, tail)[0])
    ci_high = float(_one_sided_upper(curve.tp[liberal : liberal + 1], n_pos, tail)[0])
    if not surely_above.size:
        ci_high = 1.0  # no threshold is surely at or above the FPR: nothing bounds the TPR from above
    return TprAtFpr(
        fpr=fpr,
        tpr=tp / n_pos,
        ci_low=ci_low,
        ci_high=ci_high,
        achieved_fpr=fp / n_neg,
        tp=tp,
        fp=fp,
        n_members=n_pos,
        n_nonmembers=n_neg,
        measurable=True,
    )


def tpr_at_fpr(scores: ArrayLike, is_member: ArrayLike, fpr: float, confidence: float = 0.95) -> TprAtFpr:
    """Highest TPR over thresholds whose empirical FPR is at most ``fpr`` (never above it), with an
    interval for the TPR at a true FPR of ``fpr``.

    The point estimate picks its threshold on these non-members, so its own FPR is uncertain (typically
    near ``fpr`` when ``fp`` is small, sometimes well above it); an interval on ``tp / n_members`` alone
    would ignore that and claim leakage on a model that has none. Instead, with ``tail = (1 -
    confidence) / 4`` and one-sided Clopper-Pearson limits:

    - lower limit: the TPR lower limit of the most liberal threshold whose FPR upper limit is at most
      ``fpr``; since that threshold's true FPR is at most ``fpr`` (failing with probability <= ``tail``),
      the TPR at ``fpr`` is at least its TPR;
    - upper limit: the TPR upper limit of the most conservative threshold whose FPR lower limit is at
      least ``fpr``.

    By the union bound each side fails with probability at most ``(1 - confidence) / 2``. Members and
    non-members are independent samples; the binomial model treats records as independent trials.
    Non-decreasing in ``fpr``.

    >>> scores = [0.9, 0.8, 0.6, 0.3, 0.7, 0.6, 0.2, 0.1]
    >>> tpr_at_fpr(scores, [True] * 4 + [False] * 4, 0.01).measurable  # 4 non-members cannot show 1%
    False
    >>> import numpy as np
    >>> scores = np.r_[np.full(100, 2.0), np.zeros(100), np.full(500, 1.0)]  # half the members stand out
    >>> rate = tpr_at_fpr(scores, np.r_[np.ones(200), np.zeros(500)], 0.01)
    >>> rate.tpr, rate.fp, round(rate.ci_low, 3), round(rate.ci_high, 3)
    (0.5, 0, 0.419, 0.581)
    """
    fpr = _check_rate("fpr", fpr)
    confidence = _check_confidence(confidence)
    return _tpr_at_fpr_from_roc(roc(scores, is_member), fpr, confidence)
