"""User-level results of a model audit (``--user-column``): every attack's record scores become one
score per user by each aggregation of :mod:`membershield.metrics.user_level`, measured as an attack's
scores are (:func:`~membershield.audit.measure.measure_scores`), with users as the unit.

The audit.json entry ``user_level`` holds the column, the counts of users, what each aggregation is,
and per attack, per aggregation, an entry shaped like an attack entry: AUC with its interval, TPR at
each FPR (and at 1%, the slice FPR) with its interval, "not measurable" where the non-member users
cannot resolve the FPR, the ε bound, the most exposed users.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from membershield.audit.measure import SLICE_FPRS, MeasureSettings, measure_scores
from membershield.data.pool import Pool
from membershield.metrics.user_level import AGGREGATION_DOCS, AGGREGATIONS, aggregate_user_scores, group_users


def measure_user_level(
    column: str,
    users: np.ndarray,
    is_member: np.ndarray,
    scores_by_attack: dict[str, np.ndarray],
    settings: MeasureSettings,
) -> dict[str, Any]:
    """The ``user_level`` entry of audit.json for the records' ``users`` (one id per audit record)."""
    grouped = group_users(users, is_member)
    # The slice FPR joins the audit's FPRs so that the worst slice can weigh users with records.
    fprs = tuple(sorted(set(settings.fprs) | set(SLICE_FPRS)))
    user_settings = replace(settings, fprs=fprs)

    def origin(i: int) -> dict[str, Any]:
        return {"user": str(grouped.ids[i]), "n_records": int(grouped.n_records[i])}

    attacks: dict[str, dict[str, Any]] = {}
    for name, scores in scores_by_attack.items():
        attacks[name] = {}
        for how in AGGREGATIONS:
            per_user = aggregate_user_scores(scores, grouped, how, is_member)
            measured = measure_scores(per_user, grouped.is_member, user_settings, {}, origin)
            attacks[name][how] = {
                "name": name,
                "aggregation": how,
                "n_users": int(grouped.ids.size),
                "n_member_users": grouped.n_members,
                "n_nonmember_users": grouped.n_nonmembers,
                **measured,
            }
    sizes = grouped.n_records
    return {
        "column": column,
        "n_users": int(grouped.ids.size),
        "n_member_users": grouped.n_members,
        "n_nonmember_users": grouped.n_nonmembers,
        "records_per_user": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max())},
        "aggregations": dict(AGGREGATION_DOCS),
        "attacks": attacks,
    }


def pool_user_level(pool: Pool, scores_by_attack: dict[str, np.ndarray], settings: MeasureSettings) -> dict | None:
    """The ``user_level`` entry of a model audit's pool, or None when the audit has no user column."""
    if pool.user_column is None or pool.user_values is None:
        return None
    return measure_user_level(pool.user_column, pool.user_values, pool.is_member, scores_by_attack, settings)
