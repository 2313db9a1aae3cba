"""The gate's unlearning check: an audit run with ``--forgotten`` passes only when no attack tells the
forgotten records from the holdout, i.e. when every attack's 95% AUC interval reaches down to 0.5.

It needs no policy key: an audit that asked whether records were forgotten is judged on the answer.
Audits without an ``unlearning`` entry get no such check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from membershield.gate import Check

METRIC = "forgotten records AUC"


def unlearning_checks(unlearning: Mapping[str, Any]) -> list[Check]:
    """One check per attack of the unlearning check: fails when its AUC interval lies above 0.5."""
    n_forgotten, n_holdout = unlearning.get("n_forgotten"), unlearning.get("n_holdout")
    counts = f"{n_forgotten} forgotten vs {n_holdout} holdout records"
    checks = []
    for entry in unlearning.get("attacks") or []:
        low = entry.get("auc_ci_low")
        passed = not (low is not None and low > 0.5)
        reason = (
            f"at chance on {counts}"
            if passed
            else f"forgotten records are still distinguishable ({counts}): the model still carries them"
        )
        checks.append(
            Check(entry.get("name"), METRIC, passed, entry.get("auc"), low, entry.get("auc_ci_high"), 0.5, reason)
        )
    return checks
