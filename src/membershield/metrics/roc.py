"""The ROC curve with exact counts, and the AUC with its DeLong interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtri
from scipy.stats import rankdata
from sklearn.metrics import roc_curve

from membershield.metrics._checks import _check, _check_confidence
from membershield.metrics._thresholds import _count_at_or_above
from membershield.metrics.intervals import Interval


@dataclass(frozen=True)
class RocCurve:
    """ROC curve with the exact counts behind every point.

    Point ``i`` flags records with ``score >= thresholds[i]``; ``thresholds[0]`` is ``inf`` (nothing
    flagged) as in scikit-learn. ``fp`` and ``tp`` are integer counts, ``fpr = fp / n_nonmembers`` and
    ``tpr = tp / n_members``.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    fp: np.ndarray
    tp: np.ndarray
    n_members: int
    n_nonmembers: int


def roc(scores: ArrayLike, is_member: ArrayLike) -> RocCurve:
    """ROC curve at every distinct score (``sklearn.metrics.roc_curve`` with ``drop_intermediate=False``).

    Counts are recomputed exactly from the sorted scores rather than recovered from the rates, so later
    interval computations get true integers.

    >>> scores = [0.9, 0.8, 0.6, 0.3, 0.7, 0.6, 0.2, 0.1]
    >>> is_member = [True] * 4 + [False] * 4
    >>> curve = roc(scores, is_member)
    >>> curve.fp.tolist(), curve.tp.tolist()
    ([0, 0, 0, 1, 2, 2, 3, 4], [0, 1, 2, 2, 3, 4, 4, 4])
    """
    s, m = _check(scores, is_member)
    fpr, tpr, thresholds = roc_curve(m, s, drop_intermediate=False)
    tp = _count_at_or_above(np.sort(s[m]), thresholds)
    fp = _count_at_or_above(np.sort(s[~m]), thresholds)
    return RocCurve(
        fpr=np.asarray(fpr, dtype=np.float64),
        tpr=np.asarray(tpr, dtype=np.float64),
        thresholds=np.asarray(thresholds, dtype=np.float64),
        fp=fp,
        tp=tp,
        n_members=int(m.sum()),
        n_nonmembers=int((~m).sum()),
    )


def _delong(s: np.ndarray, m: np.ndarray) -> tuple[float, float]:
    """AUC and its DeLong variance by the midrank algorithm of Sun & Xu (2014).

    DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more correlated receiver
    operating characteristic curves: a nonparametric approach", Biometrics 44(3). Sun & Xu (2014), "Fast
    implementation of DeLong's algorithm for comparing the areas under correlated receiver operating
    characteristic curves", IEEE Signal Processing Letters 21(11): the structural components
    ``V10``/``V01`` come from midranks within each class and in the pooled sample, in O(n log n) instead
    of the O(m n) pairwise kernel. Midranks make ties count one half, as in the Mann-Whitney statistic.
    Returns ``nan`` variance when a class has fewer than two records (its sample variance is undefined).
    """
    pos, neg = s[m], s[~m]
    n_pos, n_neg = pos.size, neg.size
    t_pos = rankdata(pos)
    t_neg = rankdata(neg)
    t_all = rankdata(np.concatenate([pos, neg]))
    auc_value = (t_all[:n_pos].sum() / n_pos - (n_pos + 1) / 2.0) / n_neg
    if n_pos < 2 or n_neg < 2:
        return float(auc_value), math.nan
    v10 = (t_all[:n_pos] - t_pos) / n_neg
    v01 = 1.0 - (t_all[n_pos:] - t_neg) / n_pos
    variance = np.var(v10, ddof=1) / n_pos + np.var(v01, ddof=1) / n_neg
    return float(auc_value), float(variance)


def auc(scores: ArrayLike, is_member: ArrayLike) -> float:
    """Area under the ROC curve: P(member score > non-member score) + 0.5 P(tie).

    Equals ``sklearn.metrics.roc_auc_score(is_member, scores)``.

    >>> scores = [0.9, 0.8, 0.6, 0.3, 0.7, 0.6, 0.2, 0.1]
    >>> is_member = [True] * 4 + [False] * 4
    >>> auc(scores, is_member)  # 12.5 of the 16 member/non-member pairs in order (a tie counts half)
    0.78125
    """
    s, m = _check(scores, is_member)
    return _delong(s, m)[0]


def auc_with_ci(scores: ArrayLike, is_member: ArrayLike, confidence: float = 0.95) -> tuple[float, Interval]:
    """AUC with a normal-approximation interval from the DeLong et al. (1988) variance.

    Variance by the fast midrank algorithm of Sun & Xu (2014); the interval is clipped to ``[0, 1]``.
    With fewer than two members or two non-members the variance cannot be estimated and the interval is
    the uninformative ``[0, 1]``.

    >>> scores = [0.9, 0.8, 0.6, 0.3, 0.7, 0.6, 0.2, 0.1]
    >>> is_member = [True] * 4 + [False] * 4
    >>> value, interval = auc_with_ci(scores, is_member)
    >>> value, round(interval.low, 3), interval.high
    (0.78125, 0.424, 1.0)
    """
    confidence = _check_confidence(confidence)
    s, m = _check(scores, is_member)
    value, variance = _delong(s, m)
    if not math.isfinite(variance):
        return value, Interval(0.0, 1.0)
    half_width = float(ndtri(0.5 + confidence / 2.0)) * math.sqrt(max(variance, 0.0))
    return value, Interval(max(0.0, value - half_width), min(1.0, value + half_width))
