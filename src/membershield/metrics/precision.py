"""An attack's precision when members are rare among the queried records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from membershield.metrics._checks import _check_rate
from membershield.metrics.rates import TprAtFpr


def ppv_at_prior(tpr: float, fpr: float, prior: float) -> float | None:
    """Precision of an attack when a fraction ``prior`` of the queried records are members.

    ``prior * tpr / (prior * tpr + (1 - prior) * fpr)`` by Bayes' rule. A balanced evaluation hides that
    with rare members even a small FPR swamps the true positives (Jayaraman et al. 2021, "Revisiting
    Membership Inference Under Realistic Assumptions", PETS). None when nothing is flagged (denominator 0).

    >>> round(ppv_at_prior(tpr=0.5, fpr=0.01, prior=0.5), 3)
    0.98
    >>> round(ppv_at_prior(tpr=0.5, fpr=0.01, prior=0.01), 3)  # one member in a hundred queries
    0.336
    >>> ppv_at_prior(0.0, 0.0, 0.5) is None
    True
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

    >>> from membershield.metrics.rates import TprAtFpr
    >>> rate = TprAtFpr(0.01, 0.5, 0.4, 0.6, 0.008, 50, 4, 100, 500, True)
    >>> {k: round(v, 3) for k, v in headline_ppv([rate], prior=0.5).items()}
    {'prior': 0.5, 'fpr': 0.01, 'value': 0.98, 'ci_low': 0.976, 'ci_high': 0.984}
    """
    headline = next((r for r in rates if r.fpr == 0.01), rates[0])
    ppv: dict[str, Any] = {"prior": prior, "fpr": headline.fpr, "value": None, "ci_low": None, "ci_high": None}
    if headline.measurable and headline.tpr is not None:
        ppv["value"] = ppv_at_prior(headline.tpr, headline.fpr, prior)
        ppv["ci_low"] = ppv_at_prior(headline.ci_low or 0.0, headline.fpr, prior)
        ppv["ci_high"] = ppv_at_prior(headline.ci_high or 0.0, headline.fpr, prior)
    return ppv
