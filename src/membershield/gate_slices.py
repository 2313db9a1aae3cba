"""The gate's worst-slice limit, ``max_worst_slice_tpr_at_fpr = {"0.01" = 0.05}``: no slice of the audit
(per class, ``--slice-column``, rarity, user-level) may let an attack reach more than that TPR at that FPR.

Judged as the gate judges every TPR (:mod:`membershield.gate`): with ``bound = "upper"`` on the upper end
of each slice's 95% interval, so the slice judged is the one whose upper end is highest (the slice most
able to break the limit, not only the highest estimate); with ``bound = "point"`` on the estimates. A
slice too small to resolve the FPR is not measurable and fails the check, unless the policy says
``allow_unmeasurable = true``; the worst measurable slice is judged either way. Only the judged attacks
(the policy's ``attacks``) count. Works on audits written before ``worst_slice`` existed: the slices are
read from the attacks' entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from membershield.gate import Check, Policy, _limit_check
from membershield.worst_slice import worst_slice

SHOWN = 3


def _judged_parts(audit: Mapping[str, Any], names: list[str]) -> tuple[list[Mapping[str, Any]], dict | None]:
    attacks = [a for a in audit["attacks"] if a["name"] in names]
    user_level = audit.get("user_level")
    if isinstance(user_level, Mapping) and isinstance(user_level.get("attacks"), Mapping):
        user_level = {**user_level, "attacks": {k: v for k, v in user_level["attacks"].items() if k in names}}
    else:
        user_level = None
    return attacks, user_level


def _listed(entries: list[tuple[str, Mapping[str, Any]]]) -> str:
    shown = "; ".join(f"{by} = {entry['slice']}: {entry['reason']}" for by, entry in entries[:SHOWN])
    return shown + (f"; and {len(entries) - SHOWN} more" if len(entries) > SHOWN else "")


def _unmeasurable_checks(result: Mapping[str, Any], metric: str, limit: float, policy: Policy) -> list[Check]:
    """Slices without a TPR at this FPR: too small to resolve it (failing unless ``allow_unmeasurable``), or
    never measured at it (failing always, as a TPR limit at an FPR the audit did not compute does)."""
    listed = [(s["by"], entry) for s in result["slicings"] for entry in s["not_measurable"]]
    unmeasured = [(by, entry) for by, entry in listed if not entry.get("fpr_measured", True)]
    small = [(by, entry) for by, entry in listed if entry.get("fpr_measured", True)]
    checks = []
    if unmeasured:
        reason = (
            f"{len(unmeasured)} slices have no TPR at this FPR ({_listed(unmeasured)}); slices are measured at 1%"
            " FPR: use the key 0.01"
        )
        checks.append(Check(None, metric, False, limit=limit, reason=reason))
    if small:
        reason = (
            f"not measurable: {len(small)} of {result['n_slices']} slices cannot resolve this FPR ({_listed(small)})"
        )
        if policy.allow_unmeasurable:
            checks.append(Check(None, metric, True, limit=limit, reason=reason + "; allowed by policy"))
        else:
            fix = "; set allow_unmeasurable = true to judge the rest"
            checks.append(Check(None, metric, False, limit=limit, reason=reason + fix))
    return checks


def worst_slice_checks(audit: Mapping[str, Any], policy: Policy, names: list[str]) -> list[Check]:
    """The checks of ``max_worst_slice_tpr_at_fpr``: per FPR, the worst measurable slice against the limit,
    and a check of the slices that cannot be measured (failing unless ``allow_unmeasurable``)."""
    attacks, user_level = _judged_parts(audit, names)
    unit = "trials" if audit.get("mode") == "recipe" else "records"
    judge = "upper" if policy.bound == "upper" else "point"
    checks = []
    for fpr, limit in sorted(policy.max_worst_slice_tpr_at_fpr.items()):
        metric = f"worst slice TPR@{100 * fpr:g}%FPR"
        result = worst_slice(attacks, user_level, fpr, judge=judge, unit=unit)
        if not result["n_slices"]:
            checks.append(Check(None, metric, False, limit=limit, reason="the audit recorded no slices to judge"))
            continue
        worst = result["worst"]
        if worst is not None:
            counts = f"{worst['n_members']} member and {worst['n_nonmembers']} non-member {worst['unit']}"
            where = f"{metric} ({worst['by']} = {worst['slice']}; {counts})"
            checks.append(
                _limit_check(
                    worst["attack"], where, limit, policy.bound, worst["tpr"], worst["ci_low"], worst["ci_high"]
                )
            )
        checks += _unmeasurable_checks(result, metric, limit, policy)
    return checks
