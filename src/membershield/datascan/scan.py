"""One scan of one table: columns (personal data, tier, cardinality, missing share), low-k records,
duplicates, retention, and the policy's checks; the document written as ``scan.json``.

Every value goes through the validators (they read each distinct value once); Presidio, where installed
with a spaCy model, reads a sample of each text column's distinct values, and the document says so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from membershield.datascan.detect import PRESIDIO_SAMPLE, column_pii, merge_counts, presidio_pii
from membershield.datascan.duplicates import find_duplicates
from membershield.datascan.lowk import low_k
from membershield.datascan.policy import DEFAULT_K, DataPolicy, check_columns
from membershield.datascan.retention import RetentionResult, check_retention
from membershield.datascan.table import ScanTable, read_scan_table
from membershield.datascan.tiers import infer_tier, suggested_quasi_identifiers

FORMAT = "membershield.scan/1"


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    line: str
    value: float | None = None
    limit: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "passed": self.passed, "value": self.value, "limit": self.limit, "line": self.line}


def _columns(table: ScanTable, policy: DataPolicy, analyzer: Any, today: date) -> list[dict[str, Any]]:
    out = []
    n = len(table.frame)
    for name in table.frame.columns:
        typed = table.frame[name]
        pii = column_pii(table.text[name], name, today)
        if analyzer is not None and not pd.api.types.is_numeric_dtype(typed):
            pii = merge_counts(pii, presidio_pii(table.text[name], analyzer))
        rule = policy.columns.get(name)
        tier = rule.tier if rule is not None and rule.tier is not None else infer_tier(name, pii)
        out.append(
            {
                "name": name,
                "tier": tier,
                "pii": pii,
                "cardinality": int(typed.nunique(dropna=True)),
                "missing_share": float(typed.isna().mean()) if n else 0.0,
            }
        )
    return out


def choose_quasi_identifiers(
    columns: list[dict[str, Any]], policy: DataPolicy, listed: Sequence[str] | None, n_rows: int
) -> tuple[list[str], bool]:
    """The quasi-identifiers and whether membershield chose them: ``--quasi-identifiers``, else the policy's
    list, else the personal columns that describe a person, with the policy's ``quasi_identifier`` flags."""
    if listed:
        return list(listed), False
    if policy.quasi_identifiers:
        return list(policy.quasi_identifiers), False
    described = {
        c["name"]: (c["tier"], c["pii"], c["cardinality"] / max(n_rows * (1 - c["missing_share"]), 1)) for c in columns
    }
    chosen = suggested_quasi_identifiers(described)
    for name, rule in policy.columns.items():
        if rule.quasi_identifier is True and name not in chosen:
            chosen.append(name)
        elif rule.quasi_identifier is False and name in chosen:
            chosen.remove(name)
    order = [c["name"] for c in columns]
    return sorted(chosen, key=order.index), True


def _share_check(name: str, what: str, count: int, n: int, limit: float | None) -> Check | None:
    if limit is None:
        return None
    share = count / n if n else 0.0
    verdict = "exceeds" if share > limit else "within"
    line = f"{what}: {count} of {n} records ({100 * share:.2f}%) {verdict} the limit of {100 * limit:g}%"
    return Check(name, share <= limit, line, share, limit)


def policy_checks(
    doc: dict[str, Any], policy: DataPolicy, retention: RetentionResult | None, owners: dict[str, str]
) -> list[Check]:
    """The policy's limits judged on a scan document."""
    n = doc["n_rows"]
    lowk, duplicates = doc["low_k"], doc["duplicates"]
    rare = f"records in combinations seen fewer than {lowk['k']} times"
    checks = [
        _share_check("max_low_k_share", rare, lowk["records"], n, policy.max_low_k_share),
        _share_check(
            "max_duplicate_share", "exact copies", duplicates["exact"]["records"], n, policy.max_duplicate_share
        ),
        _share_check(
            "max_near_duplicate_share", "near copies", duplicates["near"]["records"], n, policy.max_near_duplicate_share
        ),
    ]
    checks = [c for c in checks if c is not None]
    for tier in policy.require_owner:
        missing = [c["name"] for c in doc["columns"] if c["tier"] == tier and c["name"] not in owners]
        if missing:
            named = ", ".join(missing)
            line = f"{len(missing)} column(s) of tier {tier} without an owner: {named} (set [columns.NAME] owner)"
        else:
            line = f"every column of tier {tier} has an owner"
        checks.append(Check("require_owner", not missing, line, float(len(missing)), 0.0))
    if retention is not None:
        checks.append(_retention_check(retention))
    return checks


def _retention_check(r: RetentionResult) -> Check:
    rows = ", ".join(str(x) for x in r.expired[:5]) + (", ..." if r.expired.size > 5 else "")
    parts = [
        f"{r.expired.size} record(s) dated more than {r.max_age_days:g} days before {r.as_of.isoformat()}"
        f" in '{r.column}'" + (f" (rows {rows}, counted from 0; oldest {r.oldest})" if r.expired.size else "")
    ]
    if r.undated.size:
        parts.append(f"{r.undated.size} without a date" + (" (allowed)" if r.allow_undated else ""))
    line = "retention: " + "; ".join(parts) + ("" if r.passed else ": delete them before training")
    return Check("retention", r.passed, line, float(r.expired.size), 0.0)


def scan(
    path: str | Path,
    policy: DataPolicy | None = None,
    *,
    quasi_identifiers: Sequence[str] | None = None,
    k: int | None = None,
    today: date | None = None,
    analyzer: Any = "installed",
) -> dict[str, Any]:
    """Scan a table file and return the ``scan.json`` document (see the README's ``data scan`` section).

    ``analyzer`` is a Presidio ``AnalyzerEngine``, None for none, or "installed" to use Presidio when it
    and a spaCy English model are installed (never downloading one).
    """
    started = time.perf_counter()
    policy = policy or DataPolicy()
    table = read_scan_table(path)
    check_columns(policy, table.frame.columns, quasi_identifiers or ())
    if analyzer == "installed":
        from membershield.guard.pii import presidio_analyzer

        analyzer = presidio_analyzer()
    today = today or datetime.now(UTC).date()
    n = len(table.frame)
    columns = _columns(table, policy, analyzer, today)
    chosen, auto = choose_quasi_identifiers(columns, policy, quasi_identifiers, n)
    bins = {name: rule.bins for name, rule in policy.columns.items() if rule.bins is not None and name in chosen}
    lowk = low_k(table.frame, chosen, k or policy.k or DEFAULT_K, auto=auto, bins=bins, text=table.text)
    lowk_doc = lowk.to_dict() | {
        "chosen_by": "membershield" if auto else ("--quasi-identifiers" if quasi_identifiers else "policy")
    }
    rule = policy.retention
    retention = check_retention(table.text[rule.column], rule, today) if rule is not None else None
    owners = {name: r.owner for name, r in policy.columns.items() if r.owner}
    doc: dict[str, Any] = {
        "format": FORMAT,
        "file": str(table.path),
        "scanned_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "membershield_version": _version(),
        "n_rows": n,
        "n_columns": table.frame.shape[1],
        "columns": columns,
        "low_k": lowk_doc,
        "duplicates": find_duplicates(table.frame).to_dict(),
        "retention": retention.to_dict() if retention is not None else None,
        "owners": owners,
        "tiers_from_policy": sorted(name for name, r in policy.columns.items() if r.tier is not None),
        "detection": {
            "validators": "every value",
            "presidio": None if analyzer is None else {"sampled_distinct_values_per_column": PRESIDIO_SAMPLE},
        },
        "policy": policy.source.removeprefix("policy file ") or None,
    }
    checks = policy_checks(doc, policy, retention, owners)
    doc["checks"] = [c.to_dict() for c in checks]
    doc["passed"] = all(c.passed for c in checks)
    doc["seconds"] = round(time.perf_counter() - started, 3)
    return doc


def _version() -> str:
    try:
        return metadata.version("membershield")
    except metadata.PackageNotFoundError:
        return "unknown"
