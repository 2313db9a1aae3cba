"""Membership-inference metrics: pure functions of (scores, is_member).

Contract shared by every function here:

- ``scores``: 1-D array of finite real numbers, one per record; **higher = more likely member**.
- ``is_member``: 1-D array of the same length, converted with ``np.asarray(..., dtype=bool)``; ``True`` marks
  a member (the positive class).
- A record is flagged as a member at threshold ``t`` when ``score >= t``.

Bad arrays raise :class:`~membershield.errors.InputDataError`; an option out of range (an FPR, a
confidence level, ``delta``, ``k``) raises :class:`~membershield.errors.ConfigError`. Nothing here keeps
state, prints, or draws randomness without a ``seed``.

Rates come with the counts behind them and an exact interval, and a TPR at an FPR that the non-members
cannot certify (:func:`nonmembers_needed`) is reported as not measurable rather than as a number (Carlini et al. 2022,
"Membership Inference Attacks From First Principles", argue for TPR at low FPR as the headline metric).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtri
from scipy.stats import beta, rankdata
from sklearn.metrics import roc_curve

from membershield.errors import ConfigError, InputDataError

__all__ = [
    "Advantage",
    "EpsilonBound",
    "Interval",
    "RocCurve",
    "TprAtFpr",
    "auc",
    "auc_with_ci",
    "clopper_pearson",
    "empirical_epsilon_lower_bound",
    "headline_ppv",
    "membership_advantage",
    "nonmembers_needed",
    "ppv_at_prior",
    "rate_difference_interval",
    "roc",
    "slice_metrics",
    "top_exposed",
    "tpr_at_fpr",
    "unresolved_fprs",
]


# --------------------------------------------------------------------------------------------------
# validation


def _check(
    scores: ArrayLike, is_member: ArrayLike, *, need_members: bool = True, need_nonmembers: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert the two per-record arrays; returns (float64 scores, bool membership)."""
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputDataError(f"scores must be real numbers: {exc}") from exc
    m = np.asarray(is_member, dtype=bool)
    if s.ndim != 1:
        raise InputDataError(f"scores must be a 1-D array (one score per record), got shape {s.shape}")
    if m.ndim != 1:
        raise InputDataError(f"is_member must be a 1-D array (one flag per record), got shape {m.shape}")
    if s.shape[0] != m.shape[0]:
        raise InputDataError(
            f"scores and is_member differ in length ({s.shape[0]} vs {m.shape[0]}); pass one of each per record"
        )
    bad = ~np.isfinite(s)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        n_nan = int(np.isnan(s).sum())
        n_inf = int(bad.sum()) - n_nan
        raise InputDataError(
            f"scores contain {n_nan} NaN and {n_inf} infinite value(s) (first at index {first}); "
            "every score must be a finite number"
        )
    if need_members and not m.any():
        raise InputDataError(f"no members among the {m.size} records; this metric needs at least one member")
    if need_nonmembers and m.all():
        raise InputDataError(f"no non-members among the {m.size} records; this metric needs at least one non-member")
    return s, m


def _check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    return float(confidence)


def _check_rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must lie in [0, 1], got {value}")
    return float(value)


# --------------------------------------------------------------------------------------------------
# Clopper-Pearson


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


# --------------------------------------------------------------------------------------------------
# ROC and AUC


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


def _count_at_or_above(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return (sorted_values.size - np.searchsorted(sorted_values, thresholds, side="left")).astype(np.int64)


def roc(scores: ArrayLike, is_member: ArrayLike) -> RocCurve:
    """ROC curve at every distinct score (``sklearn.metrics.roc_curve`` with ``drop_intermediate=False``).

    Counts are recomputed exactly from the sorted scores rather than recovered from the rates, so later
    interval computations get true integers.
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
    """
    s, m = _check(scores, is_member)
    return _delong(s, m)[0]


def auc_with_ci(scores: ArrayLike, is_member: ArrayLike, confidence: float = 0.95) -> tuple[float, Interval]:
    """AUC with a normal-approximation interval from the DeLong et al. (1988) variance.

    Variance by the fast midrank algorithm of Sun & Xu (2014); the interval is clipped to ``[0, 1]``.
    With fewer than two members or two non-members the variance cannot be estimated and the interval is
    the uninformative ``[0, 1]``.
    """
    confidence = _check_confidence(confidence)
    s, m = _check(scores, is_member)
    value, variance = _delong(s, m)
    if not math.isfinite(variance):
        return value, Interval(0.0, 1.0)
    half_width = float(ndtri(0.5 + confidence / 2.0)) * math.sqrt(max(variance, 0.0))
    return value, Interval(max(0.0, value - half_width), min(1.0, value + half_width))


# --------------------------------------------------------------------------------------------------
# TPR at a fixed FPR


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
    """The FPRs in ``fprs`` at which ``n_nonmembers`` non-members leave a TPR not measurable."""
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
    """
    fpr = _check_rate("fpr", fpr)
    confidence = _check_confidence(confidence)
    return _tpr_at_fpr_from_roc(roc(scores, is_member), fpr, confidence)


# --------------------------------------------------------------------------------------------------
# advantage and precision


@dataclass(frozen=True)
class Advantage:
    """Membership advantage ``TPR - FPR`` of a threshold chosen on other records, with its interval."""

    value: float
    ci_low: float
    ci_high: float
    tp: int
    fp: int
    n_members: int
    n_nonmembers: int


def _best_gap_threshold(s: np.ndarray, m: np.ndarray) -> float:
    """The threshold with the largest ``TPR - FPR`` on these records; ``inf`` (flag nothing) if none is positive."""
    candidates = _candidate_thresholds(s)
    if candidates.size == 0:
        return math.inf
    tpr = _count_at_or_above(np.sort(s[m]), candidates) / max(int(m.sum()), 1)
    fpr = _count_at_or_above(np.sort(s[~m]), candidates) / max(int((~m).sum()), 1)
    gaps = tpr - fpr
    i = int(np.argmax(gaps))
    return float(candidates[i]) if gaps[i] > 0 else math.inf


def membership_advantage(
    scores: ArrayLike, is_member: ArrayLike, confidence: float = 0.95, seed: int = 0
) -> Advantage:
    """Membership advantage ``TPR - FPR`` of the attack (Yeom et al. 2018, "Privacy Risk in Machine
    Learning: Analyzing the Connection to Overfitting", IEEE CSF, Definition 4), measured honestly.

    The best of all thresholds on the same records is biased upwards (about 0.06 on 200 + 200 records of
    pure noise). So the records are split in two halves (stratified by membership, ``seed``); the
    threshold that maximises ``TPR - FPR`` on each half is applied to the other, and the flagged members
    and non-members of both are pooled. The interval is Newcombe's method for a difference of two
    independent rates (Newcombe 1998, "Interval estimation for the difference between independent
    proportions", Statistics in Medicine 17), with Clopper-Pearson limits for each. The value estimates
    the advantage of a threshold chosen from data: near 0 (possibly just below) for a model that leaks
    nothing, and at most the best threshold's true advantage.
    """
    confidence = _check_confidence(confidence)
    s, m = _check(scores, is_member)
    n_pos, n_neg = int(m.sum()), int((~m).sum())
    if n_pos < 2 or n_neg < 2:
        raise InputDataError(
            "the advantage splits records in two and needs at least 2 members and 2 non-members,"
            f" got {n_pos} and {n_neg}"
        )
    first, second = _stratified_halves(m, seed)
    tp = fp = 0
    for select, evaluate in ((first, second), (second, first)):
        threshold = _best_gap_threshold(s[select], m[select])
        flagged = s[evaluate] >= threshold
        tp += int(np.sum(flagged & m[evaluate]))
        fp += int(np.sum(flagged & ~m[evaluate]))
    interval = rate_difference_interval(tp, n_pos, fp, n_neg, confidence)
    return Advantage(tp / n_pos - fp / n_neg, interval.low, interval.high, tp, fp, n_pos, n_neg)


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
    """
    confidence = _check_confidence(confidence)
    if trials_1 <= 0 or trials_2 <= 0:
        raise InputDataError(f"need trials in both samples, got {trials_1} and {trials_2}")
    p1, p2 = successes_1 / trials_1, successes_2 / trials_2
    l1, u1 = _wilson(successes_1, trials_1, confidence)
    l2, u2 = _wilson(successes_2, trials_2, confidence)
    return Interval(p1 - p2 - math.hypot(p1 - l1, u2 - p2), p1 - p2 + math.hypot(u1 - p1, p2 - l2))


def ppv_at_prior(tpr: float, fpr: float, prior: float) -> float | None:
    """Precision of an attack when a fraction ``prior`` of the queried records are members.

    ``prior * tpr / (prior * tpr + (1 - prior) * fpr)`` by Bayes' rule. A balanced evaluation hides that
    with rare members even a small FPR swamps the true positives (Jayaraman et al. 2021, "Revisiting
    Membership Inference Under Realistic Assumptions", PETS). None when nothing is flagged (denominator 0).
    """
    tpr = _check_rate("tpr", tpr)
    fpr = _check_rate("fpr", fpr)
    prior = _check_rate("prior", prior)
    flagged = prior * tpr + (1.0 - prior) * fpr
    if flagged == 0.0:
        return None
    return prior * tpr / flagged


def headline_ppv(rates: Sequence[TprAtFpr], prior: float) -> dict[str, Any]:
    """Precision at the 1% FPR operating point (else the first one) when members are a ``prior`` fraction.

    Taken at the nominal FPR, not the chosen threshold's empirical one: that is selected to be at most
    the nominal value and is often 0, which would make any single true positive look certain. The
    interval carries the TPR's.
    """
    headline = next((r for r in rates if r.fpr == 0.01), rates[0])
    ppv: dict[str, Any] = {"prior": prior, "fpr": headline.fpr, "value": None, "ci_low": None, "ci_high": None}
    if headline.measurable and headline.tpr is not None:
        ppv["value"] = ppv_at_prior(headline.tpr, headline.fpr, prior)
        ppv["ci_low"] = ppv_at_prior(headline.ci_low or 0.0, headline.fpr, prior)
        ppv["ci_high"] = ppv_at_prior(headline.ci_high or 0.0, headline.fpr, prior)
    return ppv


# --------------------------------------------------------------------------------------------------
# empirical epsilon


@dataclass(frozen=True)
class EpsilonBound:
    """A lower bound on the ε of any (ε, δ)-DP guarantee the scores are consistent with.

    The bound holds with probability at least ``confidence``. ``threshold`` (in the units of the given
    scores), ``tpr_low`` and ``fpr_high`` describe the flagging rule that produced it and its
    Clopper-Pearson bounds on the held-out half; they are None when no positive ε could be claimed.
    When the rule came from the swapped roles, it flags ``score <= threshold`` instead of
    ``score >= threshold``, and ``tpr_low``/``fpr_high`` refer to that rule.
    """

    epsilon: float
    delta: float
    threshold: float | None
    tpr_low: float | None
    fpr_high: float | None
    confidence: float


def _implied_epsilon(tpr_low: np.ndarray, fpr_high: np.ndarray, delta: float) -> np.ndarray:
    """Largest ε that the two DP inequalities force, given a lower TPR and an upper FPR bound; >= 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        # TPR <= e^ε FPR + δ
        first = np.log((tpr_low - delta) / fpr_high)
        # 1 - FPR <= e^ε (1 - TPR) + δ
        second = np.log((1.0 - fpr_high - delta) / (1.0 - tpr_low))
    first = np.where((tpr_low - delta > 0) & (fpr_high > 0), first, 0.0)
    second = np.where((1.0 - fpr_high - delta > 0) & (1.0 - tpr_low > 0), second, 0.0)
    return np.maximum(np.maximum(first, second), 0.0)


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


def empirical_epsilon_lower_bound(
    scores: ArrayLike,
    is_member: ArrayLike,
    delta: float = 1e-5,
    confidence: float = 0.95,
    seed: int = 0,
) -> EpsilonBound:
    """Empirical lower bound on ε from an attack's scores (Jagielski et al. 2020; Nasr et al. 2021).

    (ε, δ)-DP bounds every attack: ``TPR <= e^ε FPR + δ`` and ``1 - FPR <= e^ε (1 - TPR) + δ`` (Kairouz,
    Oh & Viswanath 2015, "The composition theorem for differential privacy"). Inverting them with a
    lower confidence bound on TPR and an upper one on FPR gives ε that the true guarantee must exceed.
    Jagielski, Ullman & Oprea (2020), "Auditing Differentially Private Machine Learning: How Private is
    Private SGD?", NeurIPS; Nasr et al. (2021), "Adversary Instantiation: Lower Bounds for Differentially
    Private Machine Learning", IEEE S&P.

    Procedure, kept honest by never measuring on the records used to choose:

    1. Split the records at random (``seed``), stratified by membership, into a selection half and an
       evaluation half.
    2. On the selection half, pick the flagging rule (a threshold, in either orientation: since DP is
       symmetric, ``score <= t`` is tried as well as ``score >= t``) that maximises the bound computed
       with Clopper-Pearson limits on that half. Conservative limits rather than raw rates are used for
       the choice because raw rates give ε = ∞ to any rule with no false positives, however few records
       it flags.
    3. On the evaluation half, take the Clopper-Pearson lower limit on TPR and upper limit on FPR of that
       one rule and return the larger ε implied by the two inequalities (0 if neither is positive).

    Each limit is one side of a two-sided ``confidence`` interval, so both hold together with probability
    at least ``confidence`` (union bound). The binomial model treats each evaluation record as an
    independent trial; that is exact in the DP auditing game (one training run per trial) and an
    approximation when all records come from one trained model.
    """
    delta = float(delta)
    if not 0.0 <= delta < 1.0:
        raise ConfigError(f"delta must lie in [0, 1), got {delta}")
    confidence = _check_confidence(confidence)
    s, m = _check(scores, is_member)
    n_pos, n_neg = int(m.sum()), int((~m).sum())
    if n_pos < 2 or n_neg < 2:
        raise InputDataError(
            f"the ε bound splits records in two and needs at least 2 members and 2 non-members, got {n_pos} and {n_neg}"
        )
    select, evaluate = _stratified_halves(m, seed)
    s_sel, m_sel = s[select], m[select]
    s_eval, m_eval = s[evaluate], m[evaluate]

    best: tuple[float, float, int] | None = None  # (selection ε, threshold in oriented units, orientation)
    for sign in (1, -1):
        oriented = sign * s_sel
        candidates = _candidate_thresholds(oriented)
        if candidates.size == 0:
            continue
        tp = _count_at_or_above(np.sort(oriented[m_sel]), candidates)
        fp = _count_at_or_above(np.sort(oriented[~m_sel]), candidates)
        tpr_low, _ = _cp_bounds(tp, int(m_sel.sum()), confidence)
        _, fpr_high = _cp_bounds(fp, int((~m_sel).sum()), confidence)
        eps = _implied_epsilon(tpr_low, fpr_high, delta)
        i = int(np.argmax(eps))
        if eps[i] > 0 and (best is None or eps[i] > best[0]):
            best = (float(eps[i]), float(candidates[i]), sign)

    if best is None:
        return EpsilonBound(0.0, delta, None, None, None, confidence)
    _, threshold, sign = best
    oriented = sign * s_eval
    tp_eval = int(np.sum(oriented[m_eval] >= threshold))
    fp_eval = int(np.sum(oriented[~m_eval] >= threshold))
    tpr_low_arr, _ = _cp_bounds(np.array([tp_eval]), int(m_eval.sum()), confidence)
    _, fpr_high_arr = _cp_bounds(np.array([fp_eval]), int((~m_eval).sum()), confidence)
    eps = float(_implied_epsilon(tpr_low_arr, fpr_high_arr, delta)[0])
    if eps <= 0.0:
        return EpsilonBound(0.0, delta, None, None, None, confidence)
    return EpsilonBound(
        epsilon=eps,
        delta=delta,
        threshold=sign * threshold,
        tpr_low=float(tpr_low_arr[0]),
        fpr_high=float(fpr_high_arr[0]),
        confidence=confidence,
    )


# --------------------------------------------------------------------------------------------------
# per-record exposure and slices


def top_exposed(scores: ArrayLike, is_member: ArrayLike, k: int = 10) -> list[dict[str, Any]]:
    """The ``k`` highest-scoring records, highest first (ties by position).

    ``nonmember_percentile`` is the fraction of non-member scores strictly below the record's score: how
    far the record stands out from records the model never saw.
    """
    if int(k) != k or k < 0:
        raise ConfigError(f"k must be a non-negative whole number, got {k}")
    s, m = _check(scores, is_member, need_members=False)
    order = np.argsort(-s, kind="stable")[: int(k)]
    non = np.sort(s[~m])
    below = np.searchsorted(non, s[order], side="left")
    return [
        {
            "index": int(i),
            "score": float(s[i]),
            "is_member": bool(m[i]),
            "nonmember_percentile": float(b) / non.size,
        }
        for i, b in zip(order, below, strict=True)
    ]


def slice_metrics(
    scores: ArrayLike,
    is_member: ArrayLike,
    slice_values: ArrayLike,
    fprs: Sequence[float] = (0.01,),
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """AUC (with DeLong interval) and TPR at each FPR in ``fprs``, per distinct value of ``slice_values``.

    Slices are keyed and sorted by ``str(value)``. A slice without members or without non-members gets
    ``auc`` None and unmeasurable TPR entries rather than an error, so one thin group does not sink the
    whole report.
    """
    confidence = _check_confidence(confidence)
    fprs = [_check_rate("fpr", f) for f in fprs]
    s, m = _check(scores, is_member, need_members=False, need_nonmembers=False)
    raw = np.asarray(slice_values, dtype=object)
    if raw.ndim != 1 or raw.shape[0] != s.shape[0]:
        raise InputDataError(
            f"slice_values must be a 1-D array with one value per record ({s.shape[0]}), got shape {raw.shape}"
        )
    labels = np.array([str(v) for v in raw], dtype=str) if raw.size else np.array([], dtype=str)
    out: list[dict[str, Any]] = []
    for label in np.unique(labels):
        mask = labels == label
        s_slice, m_slice = s[mask], m[mask]
        n_pos, n_neg = int(m_slice.sum()), int((~m_slice).sum())
        entry: dict[str, Any] = {"slice": str(label), "n_members": n_pos, "n_nonmembers": n_neg}
        if n_pos and n_neg:
            value, interval = auc_with_ci(s_slice, m_slice, confidence)
            curve = roc(s_slice, m_slice)
            entry.update(auc=value, auc_ci_low=interval.low, auc_ci_high=interval.high)
            entry["tpr_at_fpr"] = [_tpr_at_fpr_from_roc(curve, f, confidence).to_dict() for f in fprs]
        else:
            entry.update(auc=None, auc_ci_low=None, auc_ci_high=None)
            entry["tpr_at_fpr"] = [_unmeasurable(f, n_pos, n_neg).to_dict() for f in fprs]
        out.append(entry)
    return out
