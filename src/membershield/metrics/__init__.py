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

One module per question: :mod:`.intervals` (binomial intervals), :mod:`.roc` (curve and AUC),
:mod:`.rates` (TPR at a fixed FPR and when it is measurable), :mod:`.precision` (precision at a prior),
:mod:`.advantage`, :mod:`.epsilon` (empirical ε), :mod:`.slices` (per-record exposure, per-group
metrics), :mod:`.user_level` (one decision per data subject from their records' scores), and for the
pooled trials of a recipe audit :mod:`.clustered` (two-way clustered bootstrap intervals) and
:mod:`.exposure` (per-record exposure across models). Every public name is importable from
``membershield.metrics``.
"""

from membershield.metrics.advantage import Advantage, membership_advantage
from membershield.metrics.clustered import (
    ClusteredEpsilon,
    ClusteredRoc,
    TwoWayBootstrap,
    clustered_advantage,
    clustered_epsilon_lower_bound,
    clustered_roc,
)
from membershield.metrics.epsilon import EpsilonBound, empirical_epsilon_lower_bound
from membershield.metrics.exposure import RecordExposure, record_exposure
from membershield.metrics.intervals import Interval, clopper_pearson, rate_difference_interval
from membershield.metrics.precision import headline_ppv, ppv_at_prior
from membershield.metrics.rates import (
    TprAtFpr,
    nonmembers_needed,
    smallest_resolvable_tpr,
    tpr_at_fpr,
    unresolved_fprs,
)
from membershield.metrics.roc import RocCurve, auc, auc_with_ci, roc
from membershield.metrics.slices import slice_metrics, top_exposed
from membershield.metrics.user_level import (
    Users,
    aggregate_user_scores,
    group_users,
    nonmember_log_odds,
    users_on_both_sides,
)

__all__ = [
    "Advantage",
    "ClusteredEpsilon",
    "ClusteredRoc",
    "EpsilonBound",
    "Interval",
    "RecordExposure",
    "RocCurve",
    "TprAtFpr",
    "TwoWayBootstrap",
    "Users",
    "aggregate_user_scores",
    "auc",
    "auc_with_ci",
    "clopper_pearson",
    "clustered_advantage",
    "clustered_epsilon_lower_bound",
    "clustered_roc",
    "empirical_epsilon_lower_bound",
    "group_users",
    "headline_ppv",
    "membership_advantage",
    "nonmember_log_odds",
    "nonmembers_needed",
    "ppv_at_prior",
    "rate_difference_interval",
    "record_exposure",
    "roc",
    "slice_metrics",
    "smallest_resolvable_tpr",
    "top_exposed",
    "tpr_at_fpr",
    "unresolved_fprs",
    "users_on_both_sides",
]
