"""An empirical lower bound on ε from an attack's scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from membershield.errors import ConfigError, InputDataError
from membershield.metrics._checks import _check, _check_confidence
from membershield.metrics._thresholds import _candidate_thresholds, _count_at_or_above, _stratified_halves
from membershield.metrics.intervals import _cp_bounds


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


def _best_rule(s: np.ndarray, m: np.ndarray, delta: float, confidence: float) -> tuple[float, int] | None:
    """The (threshold, orientation) whose conservative ε on these records is largest; None if none is positive."""
    best: tuple[float, float, int] | None = None  # (ε, threshold in oriented units, orientation)
    for sign in (1, -1):
        oriented = sign * s
        candidates = _candidate_thresholds(oriented)
        if candidates.size == 0:
            continue
        tp = _count_at_or_above(np.sort(oriented[m]), candidates)
        fp = _count_at_or_above(np.sort(oriented[~m]), candidates)
        tpr_low, _ = _cp_bounds(tp, int(m.sum()), confidence)
        _, fpr_high = _cp_bounds(fp, int((~m).sum()), confidence)
        eps = _implied_epsilon(tpr_low, fpr_high, delta)
        i = int(np.argmax(eps))
        if eps[i] > 0 and (best is None or eps[i] > best[0]):
            best = (float(eps[i]), float(candidates[i]), sign)
    return None if best is None else (best[1], best[2])


def _rule_bound(
    s: np.ndarray, m: np.ndarray, threshold: float, sign: int, delta: float, confidence: float
) -> EpsilonBound:
    """The ε bound of one flagging rule (``sign * score >= threshold``) measured on these records."""
    oriented = sign * s
    tp = int(np.sum(oriented[m] >= threshold))
    fp = int(np.sum(oriented[~m] >= threshold))
    tpr_low, _ = _cp_bounds(np.array([tp]), int(m.sum()), confidence)
    _, fpr_high = _cp_bounds(np.array([fp]), int((~m).sum()), confidence)
    eps = float(_implied_epsilon(tpr_low, fpr_high, delta)[0])
    if eps <= 0.0:
        return EpsilonBound(0.0, delta, None, None, None, confidence)
    return EpsilonBound(eps, delta, sign * threshold, float(tpr_low[0]), float(fpr_high[0]), confidence)


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

    Perfect separation of 100 + 100 evaluation records: ln(0.964 / 0.036), the limits of 100 out of 100.

    >>> scores = [0.9] * 200 + [0.1] * 200
    >>> round(empirical_epsilon_lower_bound(scores, [True] * 200 + [False] * 200).epsilon, 2)
    3.28
    >>> empirical_epsilon_lower_bound([0.5] * 400, [True] * 200 + [False] * 200).epsilon  # no signal
    0.0
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
    rule = _best_rule(s[select], m[select], delta, confidence)
    if rule is None:
        return EpsilonBound(0.0, delta, None, None, None, confidence)
    return _rule_bound(s[evaluate], m[evaluate], *rule, delta, confidence)
