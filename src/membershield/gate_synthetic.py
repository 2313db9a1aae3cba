"""The gate's limits on a synthetic-data audit (``membershield audit-synthetic``) beyond its attacks:

- ``max_dcr_risk``: the DCR risk (``synthetic.dcr_risk``: 0 when synthetic records are no closer to the
  training records than to the holdout, 1 when every one is closest to a training record);
- ``max_anonymeter_risk``: each of anonymeter's singling-out, linkability and inference risks.

Both are judged like every limit: the upper end of the 95% interval under ``bound = "upper"`` (the
default), else the point estimate. A risk the audit did not measure (not a synthetic-data audit, run
without anonymeter, or inference without a secret column) fails, unless ``allow_unmeasurable = true``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from membershield.gate import Check, Policy, _limit_check

ANONYMETER_RISKS = ("singling_out", "linkability", "inference")


def _unmeasured(metric: str, limit: float, reason: str, policy: Policy) -> Check:
    if policy.allow_unmeasurable:
        return Check(None, metric, True, limit=limit, reason=f"{reason}; allowed by policy")
    return Check(None, metric, False, limit=limit, reason=reason)


def _dcr_check(audit: Mapping[str, Any], policy: Policy) -> Check:
    assert policy.max_dcr_risk is not None
    risk = (audit.get("synthetic") or {}).get("dcr_risk")
    if not isinstance(risk, Mapping):
        reason = "the audit has no DCR risk: it is not a synthetic-data audit (run membershield audit-synthetic)"
        return _unmeasured("DCR risk", policy.max_dcr_risk, reason, policy)
    aside = (
        f" ({risk.get('closer_to_train')} of {risk.get('n_synthetic')} synthetic records closest to a training record)"
    )
    value, low, high = risk.get("risk"), risk.get("ci_low"), risk.get("ci_high")
    return _limit_check(None, "DCR risk", policy.max_dcr_risk, policy.bound, value, low, high, aside=aside)


def _anonymeter_checks(audit: Mapping[str, Any], policy: Policy) -> list[Check]:
    limit = policy.max_anonymeter_risk
    assert limit is not None
    section = audit.get("anonymeter")
    if not isinstance(section, Mapping):
        reason = "the audit has no anonymeter risks: run membershield audit-synthetic with anonymeter on"
        return [_unmeasured("anonymeter risks", limit, reason, policy)]
    checks = []
    for name in ANONYMETER_RISKS:
        metric = f"anonymeter {name.replace('_', '-')} risk"
        entry = section.get(name)
        if not isinstance(entry, Mapping) or entry.get("risk") is None:
            why = (entry or {}).get("error") if isinstance(entry, Mapping) else None
            fix = "pass --secret-columns" if name == "inference" and entry is None else "see the audit's warnings"
            checks.append(_unmeasured(metric, limit, f"not measured ({why or fix})", policy))
            continue
        aside = f" (secret '{entry['secret']}')" if entry.get("secret") else ""
        value, low, high = entry["risk"], entry.get("ci_low"), entry.get("ci_high")
        checks.append(_limit_check(None, metric, limit, policy.bound, value, low, high, aside=aside))
    return checks


def synthetic_checks(audit: Mapping[str, Any], policy: Policy) -> list[Check]:
    """The checks of ``max_dcr_risk`` and ``max_anonymeter_risk`` that the policy sets."""
    checks = []
    if policy.max_dcr_risk is not None:
        checks.append(_dcr_check(audit, policy))
    if policy.max_anonymeter_risk is not None:
        checks += _anonymeter_checks(audit, policy)
    return checks
