"""Membership-inference metrics: pure functions of (scores, is_member).

Contract shared by every function here:

- ``scores``: 1-D array of finite real numbers, one per record; **higher = more likely member**.
- ``is_member``: 1-D array of the same length, converted with ``np.asarray(..., dtype=bool)``; ``True`` marks
  a member (the positive class).
- A record is flagged as a member at threshold ``t`` when ``score >= t``.

Bad arrays raise :class:`~membershield.errors.InputDataError`; an option out of range (an FPR, a
confidence level, ``delta``, ``k``) raises :class:`~membershield.errors.ConfigError`. Nothing here keeps
state, prints, or draws randomness without a ``seed``.

Rates come with the counts behind them and an exact interval, and a TPR at an FPR below
``1 / n_nonmembers`` is reported as not measurable rather than as a number (Carlini et al. 2022,
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
    "EpsilonBound",
    "Interval",
    "RocCurve",
    "TprAtFpr",
    "auc",
    "auc_with_ci",
    "clopper_pearson",
    "empirical_epsilon_lower_bound",
    "membership_advantage",
    "ppv_at_prior",
    "roc",
    "slice_metrics",
    "top_exposed",
    "tpr_at_fpr",
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
    x = np.asarray(successes, dtype=np.float64)
    half_alpha = (1.0 - confidence) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        # beta(0, .) and beta(., 0) are degenerate: the bound is exactly 0 (resp. 1) there.
        low = np.where(x > 0, beta.ppf(half_alpha, np.maximum(x, 1), trials - x + 1), 0.0)
        high = np.where(x < trials, beta.ppf(1.0 - half_alpha, x + 1, np.maximum(trials - x, 1)), 1.0)
    return low, high


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

    ``measurable`` is False when ``fpr < 1 / n_nonmembers``: no threshold other than "flag nothing" can be
    shown to keep the FPR that low, so ``tpr``, its interval, ``achieved_fpr``, ``tp`` and ``fp`` are None.
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


def _tpr_at_fpr_from_roc(curve: RocCurve, fpr: float, confidence: float) -> TprAtFpr:
    n_pos, n_neg = curve.n_members, curve.n_nonmembers
    # Compare fp / n against fpr (both correctly rounded) rather than fpr * n against an integer: a
    # requested 0.29 with 100 non-members must admit 29 false positives, and 0.29 * 100 < 29 in floats.
    if fpr < 1.0 / n_neg:
        return _unmeasurable(fpr, n_pos, n_neg)
    admissible = curve.fp / n_neg <= fpr
    # tp and fp are non-decreasing along the curve, so the last admissible point has the highest TPR;
    # the first point with that TP count reaches it at the lowest FPR.
    last = int(np.flatnonzero(admissible)[-1])
    best = int(np.flatnonzero(curve.tp == curve.tp[last])[0])
    tp, fp = int(curve.tp[best]), int(curve.fp[best])
    interval = clopper_pearson(tp, n_pos, confidence)
    return TprAtFpr(
        fpr=fpr,
        tpr=tp / n_pos,
        ci_low=interval.low,
        ci_high=interval.high,
        achieved_fpr=fp / n_neg,
        tp=tp,
        fp=fp,
        n_members=n_pos,
        n_nonmembers=n_neg,
        measurable=True,
    )


def tpr_at_fpr(scores: ArrayLike, is_member: ArrayLike, fpr: float, confidence: float = 0.95) -> TprAtFpr:
    """Highest TPR over thresholds whose empirical FPR is at most ``fpr`` (never above it).

    Non-decreasing in ``fpr``: a larger budget only admits more thresholds. The interval is
    Clopper-Pearson on ``tp / n_members``; it treats the threshold as fixed, so it does not account for
    the threshold having been chosen on the same records.
    """
    fpr = _check_rate("fpr", fpr)
    confidence = _check_confidence(confidence)
    return _tpr_at_fpr_from_roc(roc(scores, is_member), fpr, confidence)


# --------------------------------------------------------------------------------------------------
# advantage and precision


def membership_advantage(scores: ArrayLike, is_member: ArrayLike) -> float:
    """Best membership advantage ``max_t TPR(t) - FPR(t)`` over thresholds.

    Yeom et al. (2018), "Privacy Risk in Machine Learning: Analyzing the Connection to Overfitting", IEEE
    CSF, Definition 4. Flagging nothing scores 0, so the result is never negative.
    """
    curve = roc(scores, is_member)
    gaps = curve.tp / curve.n_members - curve.fp / curve.n_nonmembers
    return float(max(0.0, gaps.max()))


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
